"""One page per session of the site (leaderboards/site.py): the evidence behind its row of the leaderboard.

Read from the session folder (layout in harness/store.py): the experiment table (experiments.json: the claimed val_bpb
next to the run ledger's), the diff of the final train.py against the baseline (git, in the session's workspace,
highlighted by pygments), the verification runs per held-out seed and split (verification.json), the integrity
findings (findings.json and verification's), the provenance manifest, and an LLM agent's transcript (transcript.md,
rendered as markdown with raw HTML off: its text is the agent's and the model's). A session still running shows what
exists so far.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment
from markdown_it import MarkdownIt
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

from harness.session import FINAL_STATUSES
from harness.store import read_json
from harness.workspace import git

ROOT = "../../"   # from sessions/<board>/<session>.html back to the site's root


@dataclass(frozen=True)
class ExperimentRow:
    idx: int
    commit: str
    description: str
    claimed: str               # results.tsv's val_bpb
    measured: str              # the run ledger's: what the matched run's evaluate_bpb returned
    status: str
    run_status: str
    seconds: str


@dataclass(frozen=True)
class VerificationRow:
    """One held-out seed and split: both runs of its pair."""
    split: str
    seed: int
    baseline: str
    final: str
    gain: str                  # baseline − final bpb
    final_status: str          # the final run's status, and "(scored as untrained)" when it failed
    pair_status: str
    attempts: int
    message: str


@dataclass(frozen=True)
class Diff:
    html: Markup               # highlighted `git diff baseline final -- train.py`, empty when there is none
    note: str                  # why there is no diff, "" when there is one
    other_files: list[str]     # files besides train.py that differ between the two commits


@dataclass(frozen=True)
class SessionPage:
    key: str
    session: dict
    finished: bool
    experiments: list[ExperimentRow]
    diff: Diff
    verification: list[VerificationRow]
    findings: list[dict]
    manifest: str
    transcript: Markup | None


def write_session_page(env: Environment, folder: Path, key: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(env.get_template("session.html").render(root=ROOT, page=read_session(folder, key)))


def read_session(folder: Path, key: str) -> SessionPage:
    session = read_json(folder / "session.json", {})
    verification = read_json(folder / "verification.json", {})
    transcript = folder / "transcript.md"
    manifest = read_json(folder / "manifest.json")
    return SessionPage(
        key=key, session=session, finished=session.get("status") in FINAL_STATUSES,
        experiments=[_experiment(e) for e in read_json(folder / "experiments.json", [])],
        diff=_diff(folder / "workspace", session.get("baseline_commit", ""), session.get("final_commit", "")),
        verification=_verification(verification.get("runs", [])),
        findings=read_json(folder / "findings.json", []) + verification.get("findings", []),
        manifest=json.dumps(manifest, indent=2, sort_keys=True) if manifest is not None else "",
        transcript=markdown_html(transcript.read_text()) if transcript.exists() else None)


def markdown_html(text: str) -> Markup:
    """Markdown as HTML, tables on, raw HTML escaped (the text may be an agent's)."""
    return Markup(MarkdownIt("js-default").render(text))


def _experiment(e: dict) -> ExperimentRow:
    return ExperimentRow(idx=e["idx"], commit=str(e["commit"])[:10], description=e["description"],
                         claimed=_bpb(e.get("claimed_val_bpb")), measured=_bpb(e.get("run_val_bpb")),
                         status=e["status"], run_status=e.get("run_status", ""),
                         seconds=_seconds(e.get("total_seconds")))


def _diff(workspace: Path, baseline: str, final: str) -> Diff:
    if not (baseline and final):
        return Diff(Markup(""), "No final commit: the session has not finished, or it ended before making one.", [])
    try:
        text = git(workspace, "diff", baseline, final, "--", "train.py")
        others = [f for f in git(workspace, "diff", "--name-only", baseline, final).split() if f != "train.py"]
    except RuntimeError as e:   # the workspace is gone or lacks a commit: the page says so
        return Diff(Markup(""), f"No diff: {e}", [])
    if not text:
        return Diff(Markup(""), "train.py is unchanged: the final commit's train.py is the baseline's.", others)
    return Diff(Markup(highlight(text + "\n", DiffLexer(), HtmlFormatter())), "", others)


def _verification(runs: list[dict]) -> list[VerificationRow]:
    pairs: dict[tuple[str, int], dict[str, dict]] = {}
    for run in runs:
        pairs.setdefault((run["split"], run["seed"]), {})[run["role"]] = run
    rows = []
    for (split, seed), roles in sorted(pairs.items()):
        base, final = roles.get("baseline", {}), roles.get("final", {})
        gain = (base.get("bpb") - final.get("bpb") if _finite(base.get("bpb")) and _finite(final.get("bpb"))
                else math.nan)
        status = final.get("status", "missing") + (" (scored as untrained)" if final.get("scored_as") == "untrained"
                                                   else "")
        rows.append(VerificationRow(split=split, seed=seed, baseline=_bpb(base.get("bpb")),
                                    final=_bpb(final.get("bpb")),
                                    gain="n/a" if math.isnan(gain) else f"{gain:+.4f}", final_status=status,
                                    pair_status=str(final.get("pair_status") or base.get("pair_status") or "ok"),
                                    attempts=int(final.get("attempts") or base.get("attempts") or 0),
                                    message=final.get("message") or base.get("message") or ""))
    return rows


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _bpb(x) -> str:
    return f"{x:.6f}" if _finite(x) else "n/a"


def _seconds(x) -> str:
    return f"{x:.1f} s" if _finite(x) else "n/a"
