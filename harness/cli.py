"""`arbench`: run a benchmark, verify a claimed gain, analyze and publish results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(help="autoresearch-bench: which AI agent is the better autonomous scientist?",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)

RuntimeOpt = Annotated[Optional[str], typer.Option(help="auto | docker | process (default: the config's)")]
RunDir = Annotated[Path, typer.Argument(help="a run directory written by `arbench run`")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors():
    from agents.registry import UnknownAgent
    from bench.profile import ProfileError
    from harness.config import ConfigError
    from harness.data import DataMissing
    from harness.runtime.base import RuntimeError_
    return (ConfigError, DataMissing, ProfileError, UnknownAgent, RuntimeError_, FileNotFoundError)


def _require_run_dir(run_dir: Path) -> None:
    if not (run_dir / "run.json").exists():
        _fail(f"{run_dir} is not a run directory (no run.json); make one with `arbench run CONFIG --out {run_dir}`")


@app.command()
def run(config: Annotated[Path, typer.Argument(help="run config TOML (see harness/configs/demo.toml)")],
        out: Annotated[Optional[Path], typer.Option(help="run directory (default runs/<run_id>)")] = None,
        runtime: RuntimeOpt = None,
        parallel: Annotated[Optional[int], typer.Option(help="sessions at once (default: the config's)")] = None,
        gpus: Annotated[Optional[str], typer.Option(help="GPU indices to use, e.g. 0,1: one session per GPU")] = None):
    """Run every session of CONFIG, verify them on held-out seeds, write tables and leaderboard.md.
    Re-running resumes: finished sessions are kept, interrupted ones are redone."""
    from dataclasses import replace

    from harness.config import load_config, parse_gpus
    from harness.run import run_benchmark
    try:
        cfg = load_config(config)
        if parallel:
            cfg = replace(cfg, parallel=parallel)
        if gpus is not None:
            cfg = replace(cfg, gpus=parse_gpus(gpus))
        result = run_benchmark(cfg, out or Path("runs") / cfg.run_id, runtime, console)
    except _user_errors() as e:
        _fail(str(e))
    print(result.leaderboard)
    console.print(f"results in {result.run_dir}/ (leaderboard.md, tables/*.parquet)")


@app.command()
def verify(path: Annotated[Path, typer.Argument(help="an autoresearch-style git repo with results.tsv")],
           branch: Annotated[Optional[str], typer.Option(help="branch holding the experiments (default: current)")] = None,
           profile: Annotated[Optional[str], typer.Option(help="profile (default: the repo's profile.toml, else h100)")] = None,
           seeds: Annotated[str, typer.Option(help="held-out seeds, comma-separated")] = "1000,1001,1002",
           runtime: RuntimeOpt = None,
           out: Annotated[Optional[Path], typer.Option(help="where to keep the runs (default runs/verify-<repo>)")] = None):
    """Re-verify a claimed val_bpb gain: baseline vs best kept train.py on fresh seeds, val and test splits.
    Exits 1 when a final run failed or a finding is an error."""
    from harness.claim import verify_claim
    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
        _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    try:
        report = verify_claim(path, branch=branch, profile_name=profile, seeds=seed_list,
                              runtime_name=runtime or "auto", out=out, console=console)
    except _user_errors() as e:
        _fail(str(e))
    print(report.text)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def analyze(run_dir: RunDir):
    """Rebuild the tables from the session folders and print the analysis."""
    from harness.run import publish
    _require_run_dir(run_dir)
    print(publish(run_dir))


@app.command()
def leaderboard(run_dir: RunDir,
                out: Annotated[Optional[Path], typer.Option(help="also copy leaderboard.md here")] = None):
    """Write leaderboard.md (and the parquet tables) for a run directory."""
    from harness.run import publish
    _require_run_dir(run_dir)
    markdown = publish(run_dir)
    if out:
        out.write_text(markdown)
    print(markdown)
    console.print(f"wrote {run_dir / 'leaderboard.md'}")


@app.command()
def status(run_dir: RunDir):
    """Show each session's state: finished, running or interrupted, and what is verified."""
    from rich.table import Table

    from harness.store import read_json, session_dirs
    _require_run_dir(run_dir)
    table = Table("session", "status", "stage", "experiments", "verified", "message")
    for folder in session_dirs(run_dir):
        s = read_json(folder / "session.json")
        verified = "yes" if (folder / "verification.json").exists() else "no"
        table.add_row(s["session_id"], s["status"], s["stage"], str(s["n_experiments"]), verified, s["message"][:60])
    Console().print(table)


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
