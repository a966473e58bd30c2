"""`arbench`: run a benchmark, verify a claimed gain, analyze and publish results."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(help="autoresearch-bench: which AI agent is the better autonomous scientist?",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)   # never wrapped at 80 columns in a log: lines stay greppable



@app.callback()
def _stop_on_sigterm() -> None:
    """SIGTERM (kill, a scheduler's cancel) stops a command as Ctrl-C does, so that every context manager on the
    way out stops what it started: the gateway, a scripted model server, sandboxes."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


RuntimeOpt = Annotated[Optional[str], typer.Option(help="auto | docker | process (default: the config's)")]
RunDir = Annotated[Path, typer.Argument(help="a run directory written by `arbench run`")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _user_errors():
    from agents.base import UnknownAgent
    from bench.profile import ProfileError
    from harness.config import ConfigError
    from harness.data import DataMissing
    from harness.runtime.base import RuntimeError_
    from harness.gateway.client import GatewayError
    from harness.verify import InfraError
    return (ConfigError, DataMissing, ProfileError, UnknownAgent, RuntimeError_, InfraError, GatewayError,
            FileNotFoundError)


def _require_run_dir(run_dir: Path) -> None:
    if not (run_dir / "run.json").exists():
        _fail(f"{run_dir} is not a run directory (no run.json); make one with `arbench run CONFIG --out {run_dir}`")


def _check_script(path: Path) -> None:
    """A scripted model server's script that cannot be played fails here, in one line."""
    from harness.gateway.script import load_script
    try:
        load_script(path)
    except (OSError, ValueError) as e:
        _fail(f"script {path}: {e}")


@app.command()
def run(config: Annotated[Path, typer.Argument(help="run config TOML (see harness/configs/demo.toml)")],
        out: Annotated[Optional[Path], typer.Option(help="run directory (default runs/<run_id>)")] = None,
        runtime: RuntimeOpt = None,
        parallel: Annotated[Optional[int], typer.Option(help="sessions at once (default: the config's)")] = None,
        gpus: Annotated[Optional[str], typer.Option(help="GPU indices to use, e.g. 0,1: one session per GPU")] = None,
        keys: Annotated[Optional[Path], typer.Option(help="provider keys for the LLM gateway, NAME=value lines "
                                                    "(default: ANTHROPIC_API_KEY / OPENAI_API_KEY of this environment)")] = None,
        scripted: Annotated[Optional[Path], typer.Option(help="a dry run: the scripted model server plays this "
                                                        "script in place of the providers")] = None,
        executor: Annotated[Optional[str], typer.Option(help="local | slurm: where sessions run (default: the "
                                                        "config's executor)")] = None,
        no_wait: Annotated[bool, typer.Option("--no-wait", help="Slurm: submit the jobs and exit; `arbench run` "
                                              "again waits for them, verifies and publishes")] = False):
    """Run every session of CONFIG, verify them on held-out seeds, write tables and leaderboard.md.
    Re-running resumes: finished sessions are kept, running ones waited for, interrupted ones redone."""
    from contextlib import ExitStack
    from dataclasses import replace

    from harness.config import ConfigError, load_config, parse_executor, parse_gpus
    from harness.gateway.scripted import ScriptedServer
    from harness.run import run_benchmark
    try:
        cfg = load_config(config)
        for warning in cfg.warnings():
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if parallel:
            cfg = replace(cfg, parallel=parallel)
        if gpus is not None:
            cfg = replace(cfg, gpus=parse_gpus(gpus))
        if executor is not None:
            cfg = replace(cfg, executor=parse_executor(executor))
        if no_wait and cfg.executor != "slurm":
            raise ConfigError("--no-wait needs the slurm executor: local sessions run inside `arbench run`")
        run_dir = out or Path("runs") / cfg.run_id
        with ExitStack() as stack:
            upstreams = None
            if scripted:
                _check_script(scripted)
                run_dir.mkdir(parents=True, exist_ok=True)
                server = stack.enter_context(ScriptedServer.start(scripted, log=run_dir / "scripted.log"))
                upstreams = {"anthropic": server.url, "openai": server.url}
            result = run_benchmark(cfg, run_dir, runtime, console, upstreams, keys, wait=not no_wait)
    except _user_errors() as e:
        _fail(str(e))
    if result is None:   # --no-wait: jobs still queued or running
        return
    print(result.leaderboard)
    console.print(f"results in {result.run_dir}/ (leaderboard.md, tables/*.parquet)")


@app.command()
def verify(path: Annotated[Path, typer.Argument(help="an autoresearch-style git repo with results.tsv")],
           branch: Annotated[Optional[str], typer.Option(help="branch holding the experiments: local, origin/..., "
                                                              "or its autoresearch/ name (default: current)")] = None,
           profile: Annotated[Optional[str], typer.Option(help="profile (default: the repo's profile.toml, else h100)")] = None,
           seeds: Annotated[str, typer.Option(help="held-out seeds, comma-separated")] = "1000,1001,1002",
           runtime: RuntimeOpt = None,
           out: Annotated[Optional[Path], typer.Option(help="where to keep the runs (default runs/verify-<repo>)")] = None,
           claim_only: Annotated[bool, typer.Option("--claim-only", help="show the claim and how the fork differs "
                                                    "from the task; train nothing")] = False,
           sigma: Annotated[Optional[float], typer.Option(help="run-to-run sd of val_bpb for the null model "
                                                          "(default: the profile's noise floor)")] = None):
    """Re-verify a claimed val_bpb gain: baseline vs best kept train.py on fresh seeds, val and test splits.
    Exits 0 when every verification run produced a score (--claim-only: when the fork kept the task), 1 when not,
    2 on bad input or a host that cannot verify (no GPU, data not prepared)."""
    from rich.markup import escape

    from harness.claim import read_fork_claim, render_claim, verify_claim
    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
        _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    if sigma is not None and not sigma > 0:
        _fail(f"--sigma must be positive, got {sigma}")
    try:
        fork = read_fork_claim(path, branch=branch, profile_name=profile)
        for warning in fork.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        print(render_claim(fork, sigma), flush=True)
        if claim_only:
            raise typer.Exit(0 if fork.comparable else 1)
        report = verify_claim(fork, seeds=seed_list, runtime_name=runtime or "auto", out=out, console=console)
    except _user_errors() as e:
        _fail(str(e))
    print(report.text)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def plan(sigma: Annotated[float, typer.Option(help="run-to-run σ of val_bpb (e.g. the leaderboard's seed σ)")],
         effect: Annotated[float, typer.Option(help="difference in verified bpb to find")],
         agents: Annotated[int, typer.Option(help="agents to rank (noop not counted)")],
         session_hours: Annotated[float, typer.Option(help="wall-clock hours of one session")] = 8.0,
         run_minutes: Annotated[float, typer.Option(help="minutes of one verification training run")] = 6.0,
         session_sd: Annotated[Optional[float], typer.Option(
             help="spread of true gains between an agent's sessions (default: σ)")] = None):
    """Sessions per agent and held-out seeds for power 0.8 after Holm over the leaderboard's tests, and the
    GPU-hours that costs."""
    from harness.power import plan as make_plan, render_plan
    if sigma <= 0 or effect <= 0 or agents < 1 or session_hours < 0 or run_minutes < 0:
        _fail("--sigma and --effect must be > 0, --agents >= 1, hours and minutes >= 0")
    tau = sigma if session_sd is None else session_sd
    print(render_plan(make_plan(sigma, effect, agents, session_hours, run_minutes, tau), sigma, effect, agents,
                      session_hours, tau), end="")


@app.command()
def analyze(run_dir: RunDir):
    """Rebuild the tables from the session folders and print the analysis."""
    from harness.run import publish
    _require_run_dir(run_dir)
    print(publish(run_dir))


@app.command()
def leaderboard(run_dirs: Annotated[list[Path], typer.Argument(help="run directories written by `arbench run`; "
                                                                "runs of one profile are pooled into one board")],
                out: Annotated[Optional[Path], typer.Option(help="the site's folder (default: <first run>/site)")]
                = None):
    """Render the static site of one or more runs (index.html, a page per session, figures, leaderboard.md, the
    tables as parquet and CSV) and print the path of its front page."""
    from leaderboards.site import build_site
    for run_dir in run_dirs:
        _require_run_dir(run_dir)
    print(build_site(run_dirs, out or run_dirs[0] / "site"))


@app.command()
def status(run_dir: RunDir,
           once: Annotated[bool, typer.Option("--once", help="print once and exit (for scripts)")] = False):
    """Show the run's progress, refreshing until Ctrl-C (once when the output is not a terminal): sessions done,
    running and queued, each running session's experiments, best val_bpb and spend so far, an estimate of the time
    left, and every session's state."""
    from harness.status import show
    _require_run_dir(run_dir)
    show(run_dir, Console(width=None if sys.stdout.isatty() else 200), once)


@app.command()
def check(run_dir: RunDir):
    """Check the store's consistency: complete session folders (or explicitly unfinished ones), tables equal to what
    the folders rebuild, no orphan or duplicate rows, leases, the verification cache. Prints one line per problem;
    exits 0 when consistent, 1 when not, 2 on bad input."""
    from harness.check import check_store
    _require_run_dir(run_dir)
    problems = check_store(run_dir)
    for problem in problems:
        print(problem)
    console.print(f"{len(problems)} problem{'s' * (len(problems) != 1)} in {run_dir}" if problems
                  else f"{run_dir}: consistent")
    raise typer.Exit(1 if problems else 0)


@app.command()
def gateway(scripted: Annotated[Optional[Path], typer.Option(
                help="script (JSON or TOML) of a scripted model server to serve upstream: a dry run")] = None,
            state_dir: Annotated[Path, typer.Option(help="the gateway's log and the session's files")] = Path("gateway"),
            port: Annotated[int, typer.Option(help="loopback TCP port (0: a free one)")] = 0,
            keys: Annotated[Optional[Path], typer.Option(
                help="key file of ANTHROPIC_API_KEY=... / OPENAI_API_KEY=... lines (default: this environment's)")] = None,
            dollars: Annotated[Optional[float], typer.Option(help="the session's dollar cap")] = None,
            tokens: Annotated[Optional[int], typer.Option(help="the session's token cap")] = None):
    """Run the LLM gateway in the foreground with one session open, for manual tries; Ctrl-C stops it and prints
    the session's usage (its transcript is in STATE_DIR/manual/)."""
    import time
    from contextlib import ExitStack

    from harness.gateway.client import Gateway, GatewayError
    from harness.gateway.scripted import ScriptedServer
    from harness.gateway.usage import GatewayBudget
    state_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        try:
            upstreams = None
            if scripted:
                _check_script(scripted)
                server = stack.enter_context(ScriptedServer.start(scripted, log=state_dir / "scripted.log"))
                upstreams = {"anthropic": server.url, "openai": server.url}
            gw = stack.enter_context(Gateway.start(state_dir, upstreams, keys, port=port))
            grant = gw.open_session("manual", state_dir / "manual", GatewayBudget(dollars, tokens))
        except (GatewayError, RuntimeError, ValueError, OSError) as e:
            _fail(str(e))
        upstream = f"the scripted server at {server.url}" if scripted else "the providers"
        print(f"gateway {grant.tcp_url} (socket {grant.socket_path}) in front of {upstream}")
        print("\n".join(f"export {name}={value}" for name, value in grant.env().items()))
        print(f"curl {grant.tcp_url}/v1/models -H 'x-api-key: {grant.token}' -H 'anthropic-version: 2023-06-01'",
              flush=True)
        try:
            while gw.process.poll() is None:
                time.sleep(1)
            _fail(f"the gateway exited: {gw.log_tail()}")
        except KeyboardInterrupt:
            console.print(f"usage: {gw.close_session('manual')}")


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
