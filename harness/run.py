"""A whole run: plan the sessions, run them, verify them, build the tables, write the leaderboard.

Re-running the same config on the same run directory resumes: finished sessions and cached
verification runs are kept, interrupted sessions are set aside and redone. When an agent uses the LLM gateway, one
gateway (harness/gateway) serves the run's sessions: started before them, stopped after them (also on error), its
log in <run_dir>/gateway/.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from agents.base import get_agent
from harness.config import ConfigError, RunConfig
from harness.data import require_prepared
from harness.gateway.client import Gateway
from harness.provenance import project_revision
from harness.runtime import get_runtime
from harness.runtime.base import Runtime
from harness.schedule import host_slots, run_pool
from harness.session import SessionRecord, SessionSpec, run_session
from harness.store import build_tables, read_json, session_dirs, write_json
from harness.verify import InfraError, PairResult, Verifier, verify_session
from harness.workspace import file_at


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    sessions: list[SessionRecord]
    leaderboard: str


def plan(config: RunConfig) -> list[SessionSpec]:
    """One session per agent × repeat; repeat r trains with session seed r (its held-out seeds differ)."""
    source = config.source or config.profile.source
    return [SessionSpec(run_id=config.run_id, agent=agent, repeat=r, seed=seed, profile=config.profile,
                        source=source, budget=config.budget)
            for agent in config.agents for r, seed in enumerate(config.session_seeds())]


def run_benchmark(config: RunConfig, run_dir: Path, runtime_name: str | None = None,
                  console: Console | None = None, upstreams: dict[str, str] | None = None,
                  keys_file: Path | None = None) -> RunResult:
    """upstreams: {"anthropic": URL, "openai": URL} in place of the providers' APIs behind the gateway (a dry run
    against the scripted model server); keys_file: the provider keys (NAME=value lines) for the gateway, else
    this process's environment."""
    console = console or Console(stderr=True, soft_wrap=True)
    run_dir = run_dir.resolve()   # sandboxes run elsewhere: every path handed to them is absolute
    slots = host_slots(config.gpus, config.parallel)
    if config.profile.needs_gpu and slots[0] is None:
        raise ConfigError(f"profile {config.profile.name} needs a GPU and this host reports none (nvidia-smi -L); "
                          "run it on a GPU host, or use a CPU profile such as cpu-tiny")
    data = require_prepared(config.profile, config.source)
    runtime = get_runtime(runtime_name or config.runtime, cpus=max(1, (os.cpu_count() or 1) // len(slots)))
    _claim_run_dir(config, run_dir, runtime.name)
    specs = plan(config)
    budget = config.budget
    console.print(f"[bold]{config.run_id}[/]: {len(specs)} sessions ({', '.join(a.name for a in config.agents)} × "
                  f"{config.repeats}) on {config.profile.name}, runtime {runtime.name}"
                  + (f", GPUs {list(config.gpus)}" if config.gpus else "") + f", budget {budget.seconds:.0f} s"
                  + (f" / {budget.experiments} experiments" if budget.experiments else "")
                  + (f" / ${budget.dollars:g}" if budget.dollars else "")
                  + (f" / {budget.tokens} tokens" if budget.tokens else ""))
    console.print(cost_ceiling(config, specs))
    done = [0]

    def report(spec: SessionSpec, record: SessionRecord) -> None:
        done[0] += 1
        console.print(f"  [{done[0]}/{len(specs)}] {spec.session_id}: {record.status} ({record.end_reason}), "
                      f"{record.n_experiments} experiments, {record.wall_seconds or 0:.0f} s  {record.message}")

    with run_gateway(config, run_dir, upstreams, keys_file) as gateway:
        sessions = run_pool(specs, lambda s, gpu: run_session(s, run_dir, runtime, data, gpu, gateway), slots, report)
    verify_all(config, run_dir, runtime, data, console, slots)
    return RunResult(run_dir=run_dir, sessions=sessions, leaderboard=publish(run_dir))


def cost_ceiling(config: RunConfig, specs: list[SessionSpec]) -> str:
    """The most the run can spend on models: its LLM sessions × the dollar cap (the gateway refuses past it)."""
    llm = sum(get_agent(spec.agent).uses_gateway for spec in specs)
    if not llm:
        return "cost ceiling: $0 (no agent talks to a model)"
    if config.budget.dollars is None:
        return (f"cost ceiling: none: {llm} LLM sessions and no [budget] dollars cap, so their spend is not bounded "
                "(set budget.dollars)")
    return (f"cost ceiling: ${llm * config.budget.dollars:,.2f} = {llm} LLM sessions × ${config.budget.dollars:g} "
            "cap each (the gateway refuses requests past a session's cap)")


@contextmanager
def run_gateway(config: RunConfig, run_dir: Path, upstreams: dict[str, str] | None = None,
                keys_file: Path | None = None) -> Iterator[Gateway | None]:
    """The run's LLM gateway when one of its agents uses it (else None); the provider keys reach it from keys_file
    or this process's environment, and only it."""
    if not any(get_agent(agent).uses_gateway for agent in config.agents):
        yield None
        return
    with Gateway.start(run_dir / "gateway", upstreams, keys_file) as gateway:
        yield gateway


def verify_all(config: RunConfig, run_dir: Path, runtime: Runtime, data, console: Console, slots) -> None:
    """Verify every session that got past its agent: the distinct (baseline, final, seed) pairs first, in
    parallel, each pair back to back on one slot; then each session's record from the cached pairs."""
    verifier = Verifier(run_dir / "cache", config.profile, data, runtime, config.verify_seeds, config.verify_splits)
    folders = [f for f in session_dirs(run_dir) if read_json(f / "session.json")["final_commit"]]
    unique: dict[tuple[bytes, bytes, int], None] = {}
    for folder in folders:
        session = read_json(folder / "session.json")
        baseline, final = (file_at(folder / "workspace", session[key], "train.py")
                           for key in ("baseline_commit", "final_commit"))
        for seed in config.verify_seeds:
            unique[(baseline, final, seed)] = None
    console.print(f"verifying {len(folders)} sessions: {len(unique)} distinct (baseline, final, seed) pairs "
                  f"on held-out seeds {list(config.verify_seeds)}")
    done = [0]

    def pair(key, gpu) -> PairResult | InfraError:
        try:
            return verifier.pair(*key, gpu=gpu)
        except InfraError as e:   # recorded nowhere, so a resumed run retries it
            return e

    def report(key, pair: PairResult | InfraError) -> None:
        done[0] += 1
        if isinstance(pair, InfraError):
            console.print(f"  [{done[0]}/{len(unique)}] seed {key[2]}: [red]not verified[/], {pair}", soft_wrap=True)
            return
        run = pair.run("final")
        scores = ", ".join(f"{k} {v:.4f}" for k, v in (run.trusted or {}).items() if v is not None)
        console.print(f"  [{done[0]}/{len(unique)}] seed {key[2]}: pair {pair.status} after "
                      f"{len(pair.attempts)} attempt(s), final {run.status} {scores}")

    run_pool(list(unique), pair, slots, report)
    for folder in folders:
        try:
            verify_session(folder, verifier, gpu=slots[0])
        except InfraError as e:
            console.print(f"  {folder.name}: not verified ({e}); re-run to retry", soft_wrap=True)


def publish(run_dir: Path) -> str:
    """Rebuild the tables from the session folders and write leaderboard.md."""
    from harness.analyze import Tables, leaderboard_markdown

    markdown = leaderboard_markdown(Tables(**build_tables(run_dir)))
    tmp = run_dir / ".leaderboard.md.tmp"
    tmp.write_text(markdown)
    os.replace(tmp, run_dir / "leaderboard.md")
    return markdown


def _claim_run_dir(config: RunConfig, run_dir: Path, runtime: str) -> None:
    """run.json pins a run directory to one config and one runtime: resuming with another is refused, so one
    run folder never mixes sessions made under different conditions. It keeps the config as it was run."""
    fingerprint = _config_fingerprint(config)
    existing = read_json(run_dir / "run.json")
    if existing and existing["config_hash"] != fingerprint:
        raise ConfigError(f"{run_dir} holds run {existing['run_id']!r} made with another config; "
                          "use a new --out directory")
    if existing and existing.get("runtime", runtime) != runtime:
        raise ConfigError(f"{run_dir} holds sessions run in the {existing['runtime']} runtime; resuming them in the "
                          f"{runtime} runtime would mix containerized and uncontainerized results in one run. "
                          f"Pass --runtime {existing['runtime']}, or use a new --out directory")
    if not existing:
        write_json(run_dir / "run.json", {"run_id": config.run_id, "config_hash": fingerprint, "runtime": runtime,
                                          "config": config_as_run(config), "profile": config.profile.name,
                                          "profile_hash": config.profile.hash, "project": project_revision()})


def config_as_run(config: RunConfig) -> dict:
    """The config with CLI overrides applied and the profile spelled out in full."""
    fields = asdict(config)
    fields["profile"] = {"name": config.profile.name, "hash": config.profile.hash} | \
        {table: getattr(config.profile, table) for table in ("task", "data", "train")}
    return fields


def _config_fingerprint(config: RunConfig) -> str:
    fields = {k: v for k, v in config.__dict__.items() if k not in ("profile", "parallel", "runtime", "gpus")}
    fields["profile_hash"] = config.profile.hash
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
