"""`arbench status`: a run's progress, read from its folder while it runs (nothing here writes).

Planned sessions are run.json's agents × repeats; each one's state comes from harness/lease.py (done, running under
a live lease, stale, failed_infra, queued). A running session shows what its folder holds so far: the run ledger's
records (experiments, and the best val_bpb the runs reported of themselves: their word, verified later) and the LLM
gateway's usage.json (dollars). The time left is an estimate: what the sessions still have of their budget, spread
over the run's slots, plus VERIFY_RUN_FACTOR × the profile's training budget per verification run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.collect import backing_runs, read_ledger
from harness.lease import SessionState, read_lease, session_state
from harness.store import read_json, session_dirs

REFRESH_S = 2.0           # the live view's refresh
VERIFY_RUN_FACTOR = 1.5   # a verification run's wall time over the training budget (startup, eval): a rough figure


@dataclass(frozen=True)
class SessionProgress:
    session_id: str
    agent: str
    state: SessionState
    record: dict           # session.json ({} before it is written)
    elapsed_s: float | None
    experiments: int       # ledger records of real training runs so far
    best_val_bpb: float | None
    dollars: float
    verified: bool


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    sessions: list[SessionProgress]
    slots: int
    seconds_left: float | None   # an estimate (module docstring); None: run.json lacks the budgets
    verification_runs_left: int

    def count(self, state: SessionState) -> int:
        return sum(s.state == state for s in self.sessions)

    @property
    def failed(self) -> int:
        return sum(s.record.get("status") == "agent_error" for s in self.sessions)


def planned_sessions(run: dict) -> dict[str, str]:
    """session id -> agent name, in plan order (harness/run.py plan)."""
    config = run["config"]
    return {f"{agent['name']}-r{r}": agent["name"] for agent in config["agents"] for r in range(config["repeats"])}


def read_progress(run_dir: Path, now: float | None = None) -> RunProgress:
    now = time.time() if now is None else now
    run = read_json(run_dir / "run.json")
    config = run["config"]
    agents = planned_sessions(run)
    for folder in session_dirs(run_dir):   # sessions of an earlier config of this folder, if any
        agents.setdefault(folder.name, read_json(folder / "session.json").get("agent", ""))
    sessions = [_session(run_dir / "sessions" / sid, agent, now) for sid, agent in agents.items()]
    slots = len(config.get("gpus") or ()) or config.get("parallel") or 1
    runs_left = 2 * len(config.get("verify_seeds", ())) * sum(not s.verified for s in sessions)
    return RunProgress(run["run_id"], sessions, slots, _seconds_left(config, sessions, runs_left, slots), runs_left)


def _seconds_left(config: dict, sessions: list[SessionProgress], runs_left: int, slots: int) -> float | None:
    """The module docstring's estimate; None when run.json lacks the budgets it needs."""
    budget = config.get("budget", {}).get("seconds")
    run_s = config.get("profile", {}).get("task", {}).get("time_budget")
    if budget is None or run_s is None:
        return None
    session_s = sum(max(budget - (s.elapsed_s or 0), 0) if s.state == "running" else budget
                    for s in sessions if s.state != "done")
    return (session_s + runs_left * VERIFY_RUN_FACTOR * run_s) / slots


def _session(folder: Path, agent: str, now: float) -> SessionProgress:
    record = read_json(folder / "session.json", {})
    state = session_state(folder, now)
    lease = read_lease(folder)
    started = record.get("started_at") or (lease.started_at if lease else None)
    elapsed = record.get("wall_seconds") or (now - started if started else None)
    runs = backing_runs(read_ledger(folder / "ledger")) if state == "running" else []
    bpbs = [e.bpb for r in runs for e in r.client.evaluations if e.split == "val"]
    dollars = record.get("dollars") or read_json(folder / "usage.json", {}).get("dollars") or 0.0
    return SessionProgress(folder.name, record.get("agent", agent), state, record, elapsed,
                           len(runs) if state == "running" else record.get("n_experiments", 0),
                           min(bpbs, default=None), dollars, (folder / "verification.json").exists())


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def render(progress: RunProgress, plain: bool = False) -> RenderableType:
    """plain: tables without borders (output for scripts and logs)."""
    style = {"box": None, "show_edge": False} if plain else {}
    return Group(_summary(progress), _running_table(progress, style), _sessions_table(progress, style))


def _summary(p: RunProgress) -> Text:
    verified = sum(s.verified for s in p.sessions)
    line = (f"{p.run_id}: {len(p.sessions)} sessions: {p.count('done')} done ({p.failed} failed), "
            f"{p.count('running')} running, {p.count('queued')} queued")
    if p.count("stale"):
        line += f", {p.count('stale')} stale (their job is gone; `arbench run` redoes them)"
    if p.count("failed_infra"):
        line += f", {p.count('failed_infra')} ended by an infrastructure failure (redone on resume)"
    line += f"; {verified} verified\n"
    if p.seconds_left is None:
        line += "time left unknown (run.json has no session or training budget)"
    elif p.seconds_left:
        line += (f"time left ≈ {_duration(p.seconds_left)} (an estimate: the sessions' remaining budgets and "
                 f"{p.verification_runs_left} verification runs over {p.slots} slot{'s' * (p.slots > 1)})")
    else:
        line += "nothing left to run"
    return Text(line)


def _running_table(p: RunProgress, style: dict) -> RenderableType:
    running = [s for s in p.sessions if s.state == "running"]
    if not running:
        return Text("")
    table = Table("running", "agent", "elapsed", "experiments", "best val_bpb (reported)", "$", title="running now",
                  title_justify="left", **style)
    for s in running:
        best = "" if s.best_val_bpb is None else f"{s.best_val_bpb:.4f}"
        table.add_row(s.session_id, s.agent, _duration(s.elapsed_s or 0), str(s.experiments), best,
                      f"{s.dollars:.2f}")
    return table


def _sessions_table(p: RunProgress, style: dict) -> Table:
    table = Table("session", "state", "status", "ended by", "stage", "experiments", "$", "resumes", "verified",
                  "message", title="sessions", title_justify="left", **style)
    for s in p.sessions:
        r = s.record
        table.add_row(s.session_id, s.state, r.get("status", ""), r.get("end_reason") or "", r.get("stage", ""),
                      str(s.experiments), f"{s.dollars:.2f}", str(r.get("resumes", 0)), "yes" if s.verified else "no",
                      r.get("message", "")[:60])
    return table


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def show(run_dir: Path, console: Console, once: bool, refresh_s: float = REFRESH_S) -> None:
    """Print the progress once (also when the output is not a terminal: a log or a pipe cannot be redrawn), or
    refresh it in place until Ctrl-C."""
    if once or not console.is_terminal:
        console.print(render(read_progress(run_dir), plain=not console.is_terminal))
        return
    with Live(render(read_progress(run_dir)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(refresh_s)
                live.update(render(read_progress(run_dir)), refresh=True)
        except KeyboardInterrupt:
            pass
