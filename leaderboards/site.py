"""The published leaderboard as a static site: `build_site(run_dirs, out)` (`arbench leaderboard`).

    <out>/
      index.html                        one section per board: the ranking, what it can and cannot conclude, the
                                        figures, every session (flagged ones marked, unfinished ones marked)
      style.css                         the one stylesheet, pygments' colours appended
      leaderboard.md                    leaderboards/markdown.py's leaderboard of the pooled runs, for READMEs
      tables/<name>.parquet, .csv       the pooled tables, for download
      figures/<board>/<name>.svg        leaderboards/figures.py's
      sessions/<board>/<session>.html   leaderboards/session_page.py's

A board is one profile (profile_hash): runs of different profiles are never ranked together, runs of one profile are
pooled (a session id found in several runs is prefixed with its run's label). The numbers are harness/analyze.py's and
the sentences leaderboards/markdown.py's. No JavaScript and relative links only, so the site reads from file:// and
any static host. A run in progress renders with what exists and says so.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pygments.formatters import HtmlFormatter

from harness.analyze import AgentSummary, Tables, analyze, with_columns
from harness.session import FINAL_STATUSES
from harness.store import TABLES, build_tables, read_json
from leaderboards import markdown
from leaderboards.figures import all_figures
from leaderboards.session_page import markdown_html, write_session_page

TEMPLATES = Path(__file__).parent / "templates"
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class Run:
    folder: Path
    label: str                 # its run id, made unique among the runs shown
    profile: str
    profile_hash: str
    planned: int | None        # sessions of its config (agents × repeats); None without run.json


@dataclass(frozen=True)
class SessionLink:
    key: str                   # its id on the site: the session id, prefixed with the run's label where runs collide
    agent: str
    run: str
    folder: Path
    status: str
    finished: bool
    awaiting_verification: bool   # finished with a final commit, verification.json not written yet
    flagged: bool
    experiments: int
    page: str                  # relative to index.html


@dataclass(frozen=True)
class RankingRow:
    """One agent's row of a board's ranking, every cell written out."""
    agent: str
    rank: str
    verified_test: str         # mean [95% CI]
    p_test: str
    beats_next: str            # P(this agent's test gain > the next ranked agent's)
    claimed: str
    verified_val: str
    null: str                  # mean [95th percentile]
    failed_finals: str
    agent_failures: str
    infra_failures: str
    dollars: str
    tokens: str
    sessions: int
    flagged: int


@dataclass(frozen=True)
class NodeRow:
    """One node's calibration runs (the nodes table, harness/calibration.py): its speed and its noise."""
    node: str
    runs: str                  # ok of all
    steps: str                 # in the time budget, mean over its ok runs
    tokens_per_second: str
    val_bpb: str               # mean ± σ over its ok runs


@dataclass(frozen=True)
class FigureLink:
    title: str
    caption: str
    src: str


@dataclass(frozen=True)
class Board:
    slug: str
    profile: str
    profile_hash: str
    runs: list[str]
    planned: int | None
    finished: int
    awaiting_verification: int
    ranking: list[RankingRow]
    metered: bool              # some session spent dollars or tokens: those columns are shown
    conclusion: list[str]
    analysis_html: str         # the board's section of leaderboard.md, rendered
    nodes: list[NodeRow]
    figures: list[FigureLink]
    figures_note: str          # why there are none, "" when there are
    sessions: list[SessionLink]

    @property
    def in_progress(self) -> bool:
        return (self.planned is not None and self.finished < self.planned) or self.awaiting_verification > 0


def build_site(run_dirs: list[Path], out: Path) -> Path:
    """Render the site of the runs into out (rebuilding each run's tables from its session folders); returns the path
    of index.html."""
    runs = _runs(run_dirs)
    tables, folders = _pooled(runs)
    out.mkdir(parents=True, exist_ok=True)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    _write_downloads(tables, out)
    (out / "style.css").write_text((TEMPLATES / "style.css").read_text() + HtmlFormatter().get_style_defs(".highlight"))
    boards = [_board(profile_hash, tables, folders, runs, out, env) for profile_hash in _profile_hashes(tables, runs)]
    index = out / "index.html"
    index.write_text(env.get_template("index.html").render(
        root="", boards=boards, runs=runs, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        planned=sum(b.planned or 0 for b in boards), finished=sum(b.finished for b in boards),
        awaiting_verification=sum(b.awaiting_verification for b in boards),
        in_progress=any(b.in_progress for b in boards), tables=TABLES))
    return index


# ---------------------------------------------------------------------------
# Runs and their tables
# ---------------------------------------------------------------------------

def _runs(run_dirs: list[Path]) -> list[Run]:
    runs, labels = [], Counter()
    for folder in run_dirs:
        info = read_json(folder / "run.json", {})
        label = info.get("run_id") or folder.name
        labels[label] += 1
        config = info.get("config", {})
        planned = len(config["agents"]) * int(config["repeats"]) if "agents" in config else None
        runs.append(Run(folder, label if labels[label] == 1 else f"{label}-{labels[label]}", info.get("profile", "?"),
                        info.get("profile_hash", ""), planned))
    return runs


def _pooled(runs: list[Run]) -> tuple[Tables, dict[str, tuple[Run, Path]]]:
    """Every run's tables rebuilt from its folders and concatenated; session ids found in more than one run get their
    run's label as prefix. Also: site session id → (run, session folder)."""
    built = [(run, build_tables(run.folder)) for run in runs]
    seen = Counter(sid for _, tables in built for sid in tables["sessions"].get("session_id", []))
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    folders = {}
    for run, tables in built:
        keys = {sid: f"{run.label}:{sid}" if seen[sid] > 1 else sid for sid in tables["sessions"].get("session_id", [])}
        for name, frame in tables.items():
            if "session_id" in frame:
                frames[name].append(frame.assign(session_id=frame["session_id"].map(lambda s: keys.get(s, s))))
            elif len(frame.columns):   # the nodes table: per node, not per session
                frames[name].append(frame)
        folders |= {key: (run, run.folder / "sessions" / sid) for sid, key in keys.items()}
    return Tables(**{name: pd.concat(f, ignore_index=True) if f else pd.DataFrame() for name, f in frames.items()}), \
        folders


def _profile_hashes(tables: Tables, runs: list[Run]) -> list[str]:
    """The boards: the profiles of the sessions, then those of runs without sessions yet."""
    found = with_columns(tables).sessions["profile_hash"].astype(object).fillna("?")
    return list(dict.fromkeys([*found, *(run.profile_hash for run in runs if run.profile_hash)]))


def _of_board(tables: Tables, profile_hash: str) -> Tables:
    sessions = with_columns(tables).sessions
    ids = set(sessions.loc[sessions["profile_hash"].astype(object).fillna("?") == profile_hash, "session_id"])
    return Tables(**{name: frame[frame["session_id"].isin(ids)] if "session_id" in frame
                     else frame[frame["profile_hash"] == profile_hash] if "profile_hash" in frame else frame
                     for name, frame in ((n, getattr(tables, n)) for n in TABLES)})


def _write_downloads(tables: Tables, out: Path) -> None:
    (out / "tables").mkdir(exist_ok=True)
    for name in TABLES:
        frame = getattr(tables, name)
        frame.to_parquet(out / "tables" / f"{name}.parquet", index=False)
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    (out / "leaderboard.md").write_text(markdown.leaderboard_markdown(tables))


# ---------------------------------------------------------------------------
# A board
# ---------------------------------------------------------------------------

def _board(profile_hash: str, pooled: Tables, folders: dict[str, tuple[Run, Path]], runs: list[Run], out: Path,
           env: Environment) -> Board:
    tables = _of_board(pooled, profile_hash)
    rows = analyze(tables) if len(tables.sessions) else []
    slug = _slug(profile_hash)
    flagged = {sid for r in rows for sid in r.flagged}
    mine = [run for run in runs if run.profile_hash == profile_hash]
    sessions = [_session_link(record, folders, flagged, slug) for record in tables.sessions.to_dict("records")]
    for link in sessions:
        write_session_page(env, link.folder, link.key, out / link.page)
    metered = _metered(tables.sessions)
    figures, note = _figures(tables, out, slug) if sessions else ([], "No figures yet: no session has started.")
    profile = str(tables.sessions["profile"].iloc[0]) if len(tables.sessions) else (mine[0].profile if mine else "?")
    return Board(
        slug=slug, profile=profile, profile_hash=profile_hash,
        runs=list(dict.fromkeys([run.label for run in mine] + [folders[s.key][0].label for s in sessions])),
        planned=sum(run.planned for run in mine) if mine and all(r.planned is not None for r in mine) else None,
        finished=sum(s.finished for s in sessions),
        awaiting_verification=sum(s.awaiting_verification for s in sessions),
        ranking=_ranking(rows, tables.sessions, metered), metered=metered,
        conclusion=markdown.conclusion(rows) if rows else [],
        analysis_html=markdown_html(markdown.leaderboard_markdown(tables)) if rows else "",
        nodes=_nodes(tables.nodes), figures=figures, figures_note=note, sessions=sessions)


def _session_link(record: dict, folders: dict[str, tuple[Run, Path]], flagged: set[str], slug: str) -> SessionLink:
    key = record["session_id"]
    run, folder = folders[key]
    experiments = record.get("n_experiments")
    finished = record["status"] in FINAL_STATUSES
    return SessionLink(key=key, agent=record["agent"], run=run.label, folder=folder, status=record["status"],
                       finished=finished, flagged=key in flagged,
                       awaiting_verification=finished and isinstance(record.get("final_commit"), str)
                       and bool(record["final_commit"]) and not (folder / "verification.json").exists(),
                       experiments=int(experiments) if pd.notna(experiments) else 0,
                       page=f"sessions/{slug}/{_slug(key)}.html")


def _ranking(rows: list[AgentSummary], sessions: pd.DataFrame, metered: bool) -> list[RankingRow]:
    ranked = [r for r in rows if r.rank is not None]
    following = {a.agent: b.agent for a, b in zip(ranked, ranked[1:])}
    out = []
    for r in rows:
        mine = sessions[sessions["agent"] == r.agent]
        beats = {other: (p, sig) for other, p, sig in r.beats}
        nxt = following.get(r.agent)
        p_next = markdown.prob(*beats.get(nxt, (math.nan, False)))
        agent_failed, infra_failed, retries = _failures(mine)
        out.append(RankingRow(
            agent=r.agent, rank=markdown.rank_text(r), verified_test=markdown.interval(r.verified_test),
            p_test=markdown.p_text(r.verified_test),
            beats_next="—" if nxt is None else p_next if p_next == "n/a" else f"{p_next} over {nxt}",
            claimed=markdown.signed(r.claimed_gain), verified_val=markdown.interval(r.verified_val),
            null=markdown.null_text(r), failed_finals=markdown.failed_text(r),
            agent_failures=f"{agent_failed}/{len(mine)}",
            infra_failures=f"{infra_failed}" + (f" ({retries} redone)" if retries else ""),
            dollars=_mean_text(mine, ("dollars",), "${:.2f}") if metered else "",
            tokens=_mean_text(mine, TOKEN_COLUMNS, "{:,.0f}") if metered else "",
            sessions=r.n_sessions, flagged=len(r.flagged)))
    return out


def _nodes(nodes: pd.DataFrame) -> list[NodeRow]:
    rows = []
    for node, runs in nodes.groupby("node", sort=True) if len(nodes) else ():
        ok = runs[runs["status"] == "ok"]
        bpb = ok["val_bpb"].astype(float)
        rows.append(NodeRow(node=str(node), runs=f"{len(ok)}/{len(runs)}",
                            steps=f"{ok['steps'].astype(float).mean():.0f}" if len(ok) else "n/a",
                            tokens_per_second=f"{ok['tokens_per_second'].astype(float).mean():,.0f}" if len(ok)
                            else "n/a",
                            val_bpb=(f"{bpb.mean():.4f} ± {bpb.std():.4f}" if len(bpb) > 1 else
                                     f"{bpb.mean():.4f}" if len(bpb) else "n/a")))
    return rows


def _failures(sessions: pd.DataFrame) -> tuple[int, int, int]:
    """Sessions that failed by the agent's fault, by the infrastructure's, and infra redos (the sessions table's
    failure_kind and infra_retries; from the status where a run predates them)."""
    kind = sessions["failure_kind"] if "failure_kind" in sessions else sessions["status"].map(
        {"agent_error": "agent", "infra_error": "infra"})
    retries = sessions["infra_retries"].fillna(0).sum() if "infra_retries" in sessions else 0
    return int((kind == "agent").sum()), int((kind == "infra").sum()), int(retries)


def _metered(sessions: pd.DataFrame) -> bool:
    columns = [c for c in ("dollars", *TOKEN_COLUMNS) if c in sessions]
    return bool(columns) and bool(sessions[columns].fillna(0).to_numpy().sum() > 0)


def _mean_text(sessions: pd.DataFrame, columns: tuple[str, ...], fmt: str) -> str:
    """Mean per session of the columns' sum; n/a where this agent spent nothing (not metered)."""
    present = [c for c in columns if c in sessions]
    total = sessions[present].fillna(0).sum(axis=1) if present else pd.Series(dtype=float)
    return fmt.format(total.mean()) if len(total) and total.sum() > 0 else "n/a"


def _figures(tables: Tables, out: Path, slug: str) -> tuple[list[FigureLink], str]:
    folder = out / "figures" / slug
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for figure in all_figures(tables):
        (folder / f"{figure.name}.svg").write_text(figure.svg)
        links.append(FigureLink(figure.title, figure.caption, f"figures/{slug}/{figure.name}.svg"))
    return links, "" if links else "No figures yet: the data cannot draw any."


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"
