"""A run's configuration: one small TOML file (agents × repeats × profile × budget × seeds).

    run_id = "demo"
    profile = "cpu-tiny"          # bench/profiles/NAME.toml or a path
    agents = ["noop", "random"]   # agent kinds (agents/base.py AGENTS), each its own row; or named rows, as below
    repeats = 3
    runtime = "auto"              # auto | docker | process
    parallel = 1                  # sessions run at once on this host (CPU)
    gpus = [0, 1]                 # GPU indices to use: one session per GPU at a time (overrides parallel)
    executor = "local"            # local (this host's slots) | slurm (one job per session, harness/executors/)
    max_resubmits = 2             # a job lost to the infrastructure is redone at most this often per `arbench run`

    [slurm]                       # executor = "slurm" only
    partition = "gpu"             # default: the cluster's
    account = "lab"               # default: none
    time_limit = 90               # minutes per job (default: the session's budget + SLURM_MARGIN_MIN)
    gpus_per_job = 1              # --gres=gpu:N, for profiles that need a GPU
    cpus_per_job = 8              # --cpus-per-task (default: the cluster's)

    [budget]                      # per session; the harness stops an agent at whichever comes first
    seconds = 600                 # wall clock
    experiments = 10              # training runs (0 = no limit): the run past it is refused
    dollars = 5.0                 # LLM gateway spend (agents that use the gateway; optional)
    tokens = 2_000_000            # LLM gateway tokens, cache reads and writes included (optional)

    [seeds]
    session = 0                   # repeat r trains with seed session + r
    verify = [1000, 1001, 1002, 1003, 1004]   # held-out seeds (default these 5), disjoint from the session seeds

    [verify]
    splits = ["val", "test"]

    [calibration]                 # per-node calibration (harness/calibration.py)
    runs = 2                      # baseline trainings each node runs before its first session (0 = none)

Named rows, instead of the list: a table per row, its kind and its adapter's parameters (agents/), so that two
models under one CLI are two rows. A model must be priced in the gateway's table (harness/gateway/prices.toml).

    [agents.noop]                 # kind defaults to the row's name
    [agents.probe-gpt]
    kind = "gateway-probe"
    model = "gpt-5-mini"
    api = "responses"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from agents.base import AGENTS, AgentSpec, UnknownAgent, get_agent
from bench.profile import Profile, ProfileError, load_profile
from harness.gateway.prices import UnknownModel, price_of


class ConfigError(ValueError):
    """A run configuration that cannot be run; the message says what to fix."""


@dataclass(frozen=True)
class Budget:
    """Per session; the harness enforces each (harness/budget.py)."""
    seconds: float                 # wall clock
    experiments: int               # training runs, 0 = no limit
    dollars: float | None = None   # LLM gateway spend, for the agents that use it; None = no cap
    tokens: int | None = None      # likewise: input, output, cache-read and cache-write tokens together


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    account: str | None = None
    time_limit: int | None = None   # minutes per job; None: the session's budget + SLURM_MARGIN_MIN
    gpus_per_job: int = 1
    cpus_per_job: int | None = None   # --cpus-per-task; None: the cluster's default


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    profile: Profile
    agents: tuple[AgentSpec, ...]
    repeats: int
    budget: Budget
    session_seed: int
    verify_seeds: tuple[int, ...]
    verify_splits: tuple[str, ...]
    runtime: str = "auto"
    parallel: int = 1
    gpus: tuple[int, ...] = ()
    source: str | None = None
    executor: str = "local"         # where sessions run (harness/executors/); not part of the run's fingerprint
    max_resubmits: int = 2
    slurm: SlurmSettings = SlurmSettings()
    calibration_runs: int = 2       # baseline trainings per node before its first session (harness/calibration.py)

    def session_seeds(self) -> list[int]:
        return [self.session_seed + r for r in range(self.repeats)]

    def warnings(self) -> list[str]:
        """What this config gives up; `arbench run` prints each line."""
        k, default = len(self.verify_seeds), len(DEFAULT_VERIFY_SEEDS)
        if k >= default:
            return []
        from harness.power import asymptotic_detectable   # scipy: only when there is something to say
        lost = ("a verified gain over the baseline is out of reach at any number of sessions (one held-out seed "
                "gives no seed term)" if k < 2 else
                f"with unlimited sessions a verified gain over the baseline needs {asymptotic_detectable(k):.1f} σ for "
                f"power 0.8, against {asymptotic_detectable(default):.1f} σ with {default} seeds (σ: run-to-run noise "
                f"of val_bpb; the baseline's seed term does not shrink with more sessions)")
        return [f"seeds.verify lists {k} held-out seed{'s' if k > 1 else ''}, fewer than the default {default}: {lost}. "
                f"`arbench plan` sizes a run."]


KNOWN_KEYS = {"run_id", "profile", "agents", "repeats", "runtime", "parallel", "gpus", "source", "budget", "seeds",
              "verify", "executor", "max_resubmits", "slurm", "calibration"}
TABLE_KEYS = {"budget": {"seconds", "experiments", "dollars", "tokens"}, "seeds": {"session", "verify"},
              "verify": {"splits"}, "slurm": {"partition", "account", "time_limit", "gpus_per_job",
                                                                          "cpus_per_job"},
              "calibration": {"runs"}}   # [agents.NAME] tables: "kind" and the adapter's parameters (agents.get_agent)
SPLITS = ("val", "test")
EXECUTORS = ("local", "slurm")
DEFAULT_VERIFY_SEEDS = (1000, 1001, 1002, 1003, 1004)   # fewer only with a warning: see RunConfig.warnings
CALIBRATION_SEED = 9000   # calibration run i trains with seed 9000 + i: never a session or held-out seed


def load_config(path: Path) -> RunConfig:
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None
    return parse_config(raw, where=str(path))


def parse_config(raw: dict, where: str = "config") -> RunConfig:
    _check_keys(raw, where)
    for key in ("run_id", "profile", "agents"):
        if key not in raw:
            raise ConfigError(f"{where}: missing {key!r}")
    try:
        profile = load_profile(raw["profile"])
    except ProfileError as e:
        raise ConfigError(f"{where}: {e}") from None
    budget_raw = raw.get("budget", {})
    budget = Budget(seconds=_positive(budget_raw.get("seconds", 3600), "budget.seconds", where),
                    experiments=int(budget_raw.get("experiments", 0)),
                    dollars=_optional(budget_raw.get("dollars"), "budget.dollars", where),
                    tokens=_optional(budget_raw.get("tokens"), "budget.tokens", where, integer=True))
    seeds = raw.get("seeds", {})
    repeats = int(_positive(raw.get("repeats", 1), "repeats", where))
    config = RunConfig(
        run_id=_run_id(raw["run_id"], where),
        profile=profile,
        agents=parse_agents(raw["agents"], where),
        repeats=repeats,
        budget=budget,
        session_seed=int(seeds.get("session", 0)),
        verify_seeds=tuple(int(s) for s in seeds.get("verify", DEFAULT_VERIFY_SEEDS)),
        verify_splits=tuple(raw.get("verify", {}).get("splits", list(SPLITS))),
        runtime=raw.get("runtime", "auto"),
        parallel=int(_positive(raw.get("parallel", 1), "parallel", where)),
        gpus=parse_gpus(raw.get("gpus", []), where),
        source=raw.get("source"),
        executor=parse_executor(raw.get("executor", "local"), where),
        max_resubmits=_count(raw.get("max_resubmits", 2), "max_resubmits", where),
        slurm=_slurm(raw.get("slurm", {}), where),
        calibration_runs=_count(raw.get("calibration", {}).get("runs", 2), "calibration.runs", where),
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


def parse_agents(value, where: str) -> tuple[AgentSpec, ...]:
    """The rows: a list of kinds, or [agents.NAME] tables; each one an adapter the registry makes with its parameters,
    and a model the gateway prices for an agent that uses the gateway."""
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        specs = [AgentSpec(name) for name in value]
    elif isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values()):
        specs = [AgentSpec(name, row.get("kind", name), {k: v for k, v in row.items() if k != "kind"})
                 for name, row in value.items()]
    else:
        raise ConfigError(f"{where}: 'agents' must be a non-empty list of agent kinds, or [agents.NAME] tables")
    repeated = sorted({s.name for s in specs if [t.name for t in specs].count(s.name) > 1})
    if repeated:
        raise ConfigError(f"{where}: agent(s) {', '.join(repeated)} listed more than once; name each row "
                          "([agents.NAME] tables) to run one kind twice")
    for spec in specs:
        if not isinstance(spec.kind, str) or not _is_name(spec.name):
            raise ConfigError(f"{where}: agent row {spec.name!r}: its name must be letters, digits, '-', '_' or '.', "
                              f"and its kind a string")
    unknown = [s.name if s.name == s.kind else f"{s.name} (kind {s.kind})" for s in specs if s.kind not in AGENTS]
    if unknown:
        raise ConfigError(f"{where}: unknown agent(s) {', '.join(unknown)}; known: {', '.join(sorted(AGENTS))}")
    for spec in specs:
        try:
            agent = get_agent(spec)
        except UnknownAgent as e:
            raise ConfigError(f"{where}: {e}") from None
        try:
            if agent.uses_gateway:
                price_of(agent.model_id() or "")
        except UnknownModel as e:
            raise ConfigError(f"{where}: agent {spec.name!r}: {e}") from None
    return tuple(specs)


def _check_seeds_and_splits(config: RunConfig, where: str) -> None:
    if not config.verify_seeds:
        raise ConfigError(f"{where}: seeds.verify must list at least one held-out seed")
    overlap = set(config.verify_seeds) & set(config.session_seeds())
    if overlap:
        raise ConfigError(f"{where}: held-out seeds {sorted(overlap)} are also session seeds; "
                          "verification seeds must be fresh")
    calibration = set(range(CALIBRATION_SEED, CALIBRATION_SEED + config.calibration_runs))
    taken = calibration & (set(config.verify_seeds) | set(config.session_seeds()))
    if taken:
        raise ConfigError(f"{where}: seeds {sorted(taken)} are the per-node calibration's "
                          f"({CALIBRATION_SEED} + run); choose other session or held-out seeds")
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


def parse_executor(value, where: str = "--executor") -> str:
    if value not in EXECUTORS:
        raise ConfigError(f"{where}: executor must be one of {', '.join(EXECUTORS)}, got {value!r}")
    return value


def _slurm(raw: dict, where: str) -> SlurmSettings:
    time_limit, cpus = raw.get("time_limit"), raw.get("cpus_per_job")
    return SlurmSettings(partition=raw.get("partition"), account=raw.get("account"),
                         time_limit=None if time_limit is None else int(_positive(time_limit, "slurm.time_limit",
                                                                                  where)),
                         gpus_per_job=int(_positive(raw.get("gpus_per_job", 1), "slurm.gpus_per_job", where)),
                         cpus_per_job=None if cpus is None else int(_positive(cpus, "slurm.cpus_per_job", where)))


def _count(value, name: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: {name} must be a whole number >= 0, got {value!r}")
    return value


def _positive(value, name: str, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
    return value


def _optional(value, name: str, where: str, integer: bool = False) -> float | None:
    if value is None:
        return None
    if integer and not isinstance(value, int):
        raise ConfigError(f"{where}: {name} must be a whole number, got {value!r}")
    return _positive(value, name, where)


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value) and all(c.isalnum() or c in "-_." for c in value)


def _run_id(value, where: str) -> str:
    if not _is_name(value):
        raise ConfigError(f"{where}: run_id must be a non-empty name of letters, digits, '-', '_' or '.'")
    return value
