"""A whole run: plan the sessions, run them, verify them, build the tables, write the leaderboard.

Sessions and verification pairs are jobs (harness/jobs.py) run by the config's executor (harness/executors/: this
host's slots, or Slurm), dispatched so that a harness restart loses and duplicates nothing: re-running the same
config on the same run directory resumes (finished sessions and cached pairs are kept, a session another job holds
is waited for, interrupted ones are set aside and redone), and with Slurm re-attaches to the jobs it submitted
(<run_dir>/jobs.json). Agents are interleaved in the queue (every agent's repeat 0, then every agent's repeat 1, ...)
so that a failure or an outage does not fall on one agent.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from agents.base import get_agent
from harness.config import ConfigError, RunConfig
from harness.data import require_prepared
from harness.executors import make_executor
from harness.executors.base import Executor
from harness.executors.dispatch import Dispatch, Journal
from harness.jobs import GatewaySetup, Job, JobResult, PairFailed, PairJob, Placement, SessionJob
from harness.lease import folder_lock
from harness.provenance import project_revision
from harness.runtime import RUNTIMES, get_runtime
from harness.schedule import host_slots
from harness.session import SessionRecord, SessionSpec
from harness.store import build_tables, read_json, session_dirs, write_json
from harness.verify import (PairResult, session_sources, verification, verification_done, write_verification,
                            write_verification_error)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    sessions: list[SessionRecord]
    leaderboard: str


def plan(config: RunConfig) -> list[SessionSpec]:
    """One session per agent × repeat, interleaved: every agent's repeat 0, then every agent's repeat 1, ...;
    repeat r trains with session seed r (its held-out seeds differ)."""
    source = config.source or config.profile.source
    return [SessionSpec(run_id=config.run_id, agent=agent, repeat=r, seed=seed, profile=config.profile,
                        source=source, budget=config.budget)
            for r, seed in enumerate(config.session_seeds()) for agent in config.agents]


def run_benchmark(config: RunConfig, run_dir: Path, runtime_name: str | None = None,
                  console: Console | None = None, upstreams: dict[str, str] | None = None,
                  keys_file: Path | None = None, wait: bool = True) -> RunResult | None:
    """upstreams: {"anthropic": URL, "openai": URL} in place of the providers' APIs behind each session's gateway (a
    dry run against the scripted model server); keys_file: the provider keys (NAME=value lines) for the gateways,
    else the environment of the process running the session. wait=False: submit what is not running yet and
    return None unless everything had finished (a later call waits, verifies and publishes)."""
    console = console or Console(stderr=True, soft_wrap=True)
    run_dir = run_dir.resolve()   # sandboxes and Slurm nodes run elsewhere: every path handed to them is absolute
    slots = host_slots(config.gpus, config.parallel) if config.executor == "local" else [None]
    if config.executor == "local" and config.profile.needs_gpu and slots[0] is None:
        raise ConfigError(f"profile {config.profile.name} needs a GPU and this host reports none (nvidia-smi -L); "
                          "run it on a GPU host (or through Slurm: --executor slurm), or use a CPU profile such as "
                          "cpu-tiny")
    require_prepared(config.profile, config.source)   # where the nodes find it too: a shared filesystem
    placement = Placement(run_dir, _runtime_name(runtime_name or config.runtime, config.executor), config.executor,
                          cpus=max(1, (os.cpu_count() or 1) // len(slots)) if config.executor == "local"
                          else config.slurm.cpus_per_job)
    executor = make_executor(config, run_dir, slots)
    _claim_run_dir(config, run_dir, placement.runtime)
    specs = plan(config)
    budget = config.budget
    console.print(f"[bold]{config.run_id}[/]: {len(specs)} sessions ({', '.join(a.name for a in config.agents)} × "
                  f"{config.repeats}) on {config.profile.name}, runtime {placement.runtime}, executor "
                  f"{config.executor}" + (f", GPUs {list(config.gpus)}" if config.gpus else "")
                  + f", budget {budget.seconds:.0f} s"
                  + (f" / {budget.experiments} experiments" if budget.experiments else "")
                  + (f" / ${budget.dollars:g}" if budget.dollars else "")
                  + (f" / {budget.tokens} tokens" if budget.tokens else ""))
    console.print(cost_ceiling(config, specs))
    try:
        gateway = GatewaySetup(keys_file, upstreams or {})
        jobs = [SessionJob(spec, placement, gateway, calibration_runs=config.calibration_runs) for spec in specs]
        done = _dispatch(executor, run_dir, config, jobs, wait, _session_report(console, len(specs)), console)
        if len(done) < len(jobs) or not verify_all(config, run_dir, executor, placement, console, wait):
            console.print(f"jobs submitted ({run_dir / 'jobs.json'}); `arbench run` again with the same config and "
                          "--out waits for them, verifies and publishes")
            return None
    finally:
        executor.close()
    return RunResult(run_dir=run_dir, sessions=[done[spec.session_id] for spec in specs],
                     leaderboard=publish(run_dir))


def _runtime_name(name: str, executor: str) -> str:
    """The runtime the jobs use, decided here once. Local: the runtime starts here first, so that an engine that is
    down is one clear error ("auto": docker when its engine answers, else process). Slurm: the nodes start it
    ("auto": docker)."""
    if executor == "local":
        return get_runtime(name).name
    if name != "auto" and name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; known: auto, {', '.join(RUNTIMES)}")
    return "docker" if name == "auto" else name


def _dispatch(executor: Executor, run_dir: Path, config: RunConfig, jobs: list[Job], wait: bool, report,
              console: Console) -> dict[str, JobResult]:
    return Dispatch(executor, Journal(run_dir), config.max_resubmits, report,
                    lambda line: console.print(line, soft_wrap=True, highlight=False)).run(jobs, wait)


def _session_report(console: Console, total: int):
    done = [0]

    def report(job: SessionJob, record: SessionRecord) -> None:
        done[0] += 1
        console.print(f"  [{done[0]}/{total}] {job.key}: {record.status} ({record.end_reason}), "
                      f"{record.n_experiments} experiments, {record.wall_seconds or 0:.0f} s  {record.message}")
    return report


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


def verify_all(config: RunConfig, run_dir: Path, executor: Executor, placement: Placement, console: Console,
               wait: bool = True) -> bool:
    """Verify every session that got past its agent and has no verification yet: the distinct (baseline, final,
    seed) pairs as jobs, each pair back to back on one slot; then each session's record from its pairs, or, when
    the infrastructure failed one of its pairs, that failure (an infra failure, retried by the next run). False when
    pairs are still running (wait=False)."""
    folders = [f for f in session_dirs(run_dir)
               if read_json(f / "session.json")["final_commit"] and not verification_done(f)]
    sources = {folder: session_sources(folder) for folder in folders}
    pairs = {folder: [PairJob(config.profile, config.source, config.verify_seeds, config.verify_splits, baseline[1],
                              final[1], seed, placement) for seed in config.verify_seeds]
             for folder, (baseline, final) in sources.items()}
    unique = list({job.key: job for jobs in pairs.values() for job in jobs}.values())
    console.print(f"verifying {len(folders)} sessions: {len(unique)} distinct (baseline, final, seed) pairs "
                  f"on held-out seeds {list(config.verify_seeds)}")
    done = _dispatch(executor, run_dir, config, unique, wait, _pair_report(console, len(unique)), console)
    if len(done) < len(unique):
        return False
    for folder, (baseline, final) in sources.items():
        results = [done[job.key] for job in pairs[folder]]
        failed = [r.message for r in results if isinstance(r, PairFailed)]
        if failed:
            write_verification_error(folder, "; ".join(failed), config.verify_seeds, config.verify_splits)
            console.print(f"  {folder.name}: not verified ({failed[0]}); recorded as an infrastructure failure, "
                          "`arbench run` again retries it", soft_wrap=True)
        else:
            write_verification(folder, verification(results, baseline[0], final[0], config.verify_splits),
                               config.verify_seeds, config.verify_splits)
    return True


def _pair_report(console: Console, total: int):
    done = [0]

    def report(job: PairJob, pair: PairResult | PairFailed) -> None:
        done[0] += 1
        if isinstance(pair, PairFailed):
            console.print(f"  [{done[0]}/{total}] seed {job.seed}: [red]not verified[/], {pair.message}",
                          soft_wrap=True)
            return
        run = pair.run("final")
        scores = ", ".join(f"{k} {v:.4f}" for k, v in (run.trusted or {}).items() if v is not None)
        console.print(f"  [{done[0]}/{total}] seed {job.seed}: pair {pair.status} after "
                      f"{len(pair.attempts)} attempt(s), final {run.status} {scores}")
    return report


def publish(run_dir: Path) -> str:
    """Rebuild the tables from the session folders, write leaderboard.md and the run's site (<run_dir>/site/). One
    publisher at a time (a lock beside tables/): two harnesses that finish one run together publish in turn."""
    from harness.analyze import Tables
    from leaderboards.markdown import leaderboard_markdown
    from leaderboards.site import build_site

    with folder_lock(run_dir / "tables"):
        markdown = leaderboard_markdown(Tables(**build_tables(run_dir)))
        tmp = run_dir / ".leaderboard.md.tmp"
        tmp.write_text(markdown)
        os.replace(tmp, run_dir / "leaderboard.md")
        build_site([run_dir], run_dir / "site")
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
    fields = {k: v for k, v in config.__dict__.items()
              if k not in ("profile", "parallel", "runtime", "gpus", "executor", "max_resubmits", "slurm")}
    fields["profile_hash"] = config.profile.hash
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
