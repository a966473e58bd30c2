"""A run's configuration: one small TOML file (agents × repeats × profile × budget × seeds).

    run_id = "demo"
    profile = "cpu-tiny"          # bench/profiles/NAME.toml or a path
    agents = ["noop", "random"]
    repeats = 3
    runtime = "auto"              # auto | docker | process
    parallel = 1                  # sessions run at once on this host (CPU)
    gpus = [0, 1]                 # GPU indices to use: one session per GPU at a time (overrides parallel)

    [budget]                      # the harness stops an agent at whichever comes first
    seconds = 600                 # wall clock per session
    experiments = 10              # training runs per session (0 = no limit)

    [seeds]
    session = 0                   # repeat r trains with seed session + r
    verify = [1000, 1001, 1002]   # held-out seeds, disjoint from the session seeds

    [verify]
    splits = ["val", "test"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.profile import Profile, ProfileError, load_profile


class ConfigError(ValueError):
    """A run configuration that cannot be run; the message says what to fix."""


@dataclass(frozen=True)
class Budget:
    seconds: float
    experiments: int  # 0 = no limit


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    profile: Profile
    agents: tuple[str, ...]
    repeats: int
    budget: Budget
    session_seed: int
    verify_seeds: tuple[int, ...]
    verify_splits: tuple[str, ...]
    runtime: str = "auto"
    parallel: int = 1
    gpus: tuple[int, ...] = ()
    source: str | None = None

    def session_seeds(self) -> list[int]:
        return [self.session_seed + r for r in range(self.repeats)]


KNOWN_KEYS = {"run_id", "profile", "agents", "repeats", "runtime", "parallel", "gpus", "source", "budget", "seeds",
              "verify"}
TABLE_KEYS = {"budget": {"seconds", "experiments"}, "seeds": {"session", "verify"}, "verify": {"splits"}}
SPLITS = ("val", "test")


def load_config(path: Path) -> RunConfig:
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None
    return parse_config(raw, where=str(path))


def parse_config(raw: dict, where: str = "config") -> RunConfig:
    from agents.registry import known_agents

    _check_keys(raw, where)
    for key in ("run_id", "profile", "agents"):
        if key not in raw:
            raise ConfigError(f"{where}: missing {key!r}")
    try:
        profile = load_profile(raw["profile"])
    except ProfileError as e:
        raise ConfigError(f"{where}: {e}") from None
    agents = raw["agents"]
    if not isinstance(agents, list) or not agents or not all(isinstance(a, str) for a in agents):
        raise ConfigError(f"{where}: 'agents' must be a non-empty list of agent names")
    bad = [a for a in agents if a not in known_agents()]
    if bad:
        raise ConfigError(f"{where}: unknown agent(s) {', '.join(bad)}; known: {', '.join(known_agents())}")
    budget_raw = raw.get("budget", {})
    budget = Budget(seconds=_positive(budget_raw.get("seconds", 3600), "budget.seconds", where),
                    experiments=int(budget_raw.get("experiments", 0)))
    seeds = raw.get("seeds", {})
    repeats = int(_positive(raw.get("repeats", 1), "repeats", where))
    config = RunConfig(
        run_id=_run_id(raw["run_id"], where),
        profile=profile,
        agents=tuple(agents),
        repeats=repeats,
        budget=budget,
        session_seed=int(seeds.get("session", 0)),
        verify_seeds=tuple(int(s) for s in seeds.get("verify", [1000, 1001, 1002])),
        verify_splits=tuple(raw.get("verify", {}).get("splits", list(SPLITS))),
        runtime=raw.get("runtime", "auto"),
        parallel=int(_positive(raw.get("parallel", 1), "parallel", where)),
        gpus=parse_gpus(raw.get("gpus", []), where),
        source=raw.get("source"),
    )
    _check_seeds_and_splits(config, where)
    return config


def _check_keys(raw: dict, where: str) -> None:
    """Every key known, in nested tables too: a typo is an error, never silently a default."""
    unknown = set(raw) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN_KEYS))}")
    for table, known in TABLE_KEYS.items():
        value = raw.get(table, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{table}] must be a table with keys {', '.join(sorted(known))}")
        unknown = set(value) - known
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) in [{table}]: {', '.join(f'{table}.{k}' for k in sorted(unknown))}; "
                              f"known: {', '.join(sorted(known))}")


def _check_seeds_and_splits(config: RunConfig, where: str) -> None:
    if not config.verify_seeds:
        raise ConfigError(f"{where}: seeds.verify must list at least one held-out seed")
    overlap = set(config.verify_seeds) & set(config.session_seeds())
    if overlap:
        raise ConfigError(f"{where}: held-out seeds {sorted(overlap)} are also session seeds; "
                          "verification seeds must be fresh")
    bad = [s for s in config.verify_splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"{where}: unknown split(s) {bad}; known: {', '.join(SPLITS)}")


def parse_gpus(value, where: str = "--gpus") -> tuple[int, ...]:
    """GPU indices from a list or a comma-separated string ("0,1"); distinct non-negative integers."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        gpus = tuple(int(str(g).strip()) for g in items if str(g).strip())
    except ValueError:
        raise ConfigError(f"{where}: gpus must be GPU indices like 0,1, got {value!r}") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise ConfigError(f"{where}: gpus must be distinct non-negative indices, got {value!r}")
    return gpus


def _positive(value, name: str, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
    return value


def _run_id(value, where: str) -> str:
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "-_." for c in value):
        raise ConfigError(f"{where}: run_id must be a non-empty name of letters, digits, '-', '_' or '.'")
    return value
