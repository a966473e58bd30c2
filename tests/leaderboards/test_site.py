"""leaderboards/site.py on synthetic session folders (tests/support.py): an empty run, a run in progress, flagged
sessions, two profiles on two boards, two runs of one profile pooled; every relative link of the site resolves. And
the front page's plain-language conclusion (leaderboards/markdown.py)."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from harness.analyze import Resolution, Tables, analyze
from harness.store import write_json
from leaderboards.markdown import conclusion, sessions_to_separate
from leaderboards.site import build_site
from support import write_session_folders

SEEDS = (101, 102, 103)
BASELINE = {"val": (2.00, 2.02, 1.98), "test": (2.10, 2.12, 2.08)}


def session(sid: str, agent: str, profile_hash: str, status: str = "done") -> dict:
    return dict(session_id=sid, run_id="r", agent=agent, repeat=0, profile=f"p-{profile_hash}",
                profile_hash=profile_hash, status=status, stage="verify", message="", n_experiments=2,
                budget_seconds=60.0, started_at=0.0, wall_seconds=1.0, baseline_commit="", final_commit="")


def runs_of(sid: str, agent: str, gain: float) -> list[dict]:
    """Verification rows: the final is better than the baseline by about `gain` on every seed and split."""
    rows = []
    for split, base in BASELINE.items():
        for k, seed in enumerate(SEEDS):
            common = dict(session_id=sid, agent=agent, seed=seed, split=split, message="", status="ok")
            rows.append(dict(common, role="baseline", train_py_hash="base", bpb=base[k]))
            rows.append(dict(common, role="final", train_py_hash=f"f-{sid}" if gain else "base",
                             bpb=base[k] - gain - 0.002 * ((k + len(sid)) % 3) if gain else base[k]))
    return rows


def tables(profile_hash: str = "h1", running: bool = False, flagged: bool = True) -> Tables:
    """noop ×2, greedy ×2 (a gain), cheater ×2 (one flagged), and, when running, a greedy session without records."""
    agents = {"noop": 0.0, "greedy": 0.03, "cheater": 0.01}
    ids = [(f"{a}-r{r}", a) for a in agents for r in (0, 1)]
    sessions = [session(sid, a, profile_hash) for sid, a in ids]
    if running:
        sessions.append(session("greedy-r2", "greedy", profile_hash, status="running"))
    experiments = [dict(session_id=sid, agent=a, idx=i, commit=f"c{i}", description="d", claimed_val_bpb=2.0 - 0.01 * i,
                        status="keep", run_status="ok", run_val_bpb=2.0 - 0.01 * i, total_seconds=1.5)
                   for sid, a in ids for i in range(2)]
    findings = [dict(session_id="cheater-r0", agent="cheater", kind="prepare_modified", severity="error",
                     message="prepare.py changed", commit="c1")] if flagged else []
    return Tables(pd.DataFrame(sessions), pd.DataFrame(experiments),
                  pd.DataFrame([row for sid, a in ids for row in runs_of(sid, a, agents[a])]),
                  pd.DataFrame(findings, columns=["session_id", "agent", "kind", "severity", "message", "commit"]))


def make_run(folder: Path, data: Tables | None, profile_hash: str = "h1", planned: tuple[int, int] = (3, 2)) -> Path:
    agents, repeats = planned
    write_json(folder / "run.json", {"run_id": "r", "profile": f"p-{profile_hash}", "profile_hash": profile_hash,
                                     "config": {"agents": [{"name": f"a{i}"} for i in range(agents)],
                                                "repeats": repeats}})
    if data is not None:
        write_session_folders(folder, data)
    return folder


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]


def links_of(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.links


def assert_links_resolve(index: Path) -> None:
    """Every link is relative (for file:// and any static host) and points at a file of the site, from every page."""
    pages = [index] + [index.parent / link for link in links_of(index) if link.endswith(".html")]
    for page in pages:
        for link in links_of(page):
            assert not re.match(r"^[a-z]+:|^/", link), (page, link)
            assert (page.parent / link).resolve().is_file(), (page, link)


def test_empty_run(tmp_path):
    index = build_site([make_run(tmp_path / "run", None)], tmp_path / "site")
    html = index.read_text()
    assert "Nothing yet" in html and "In progress: 0 of 6 sessions finished" in html
    assert (tmp_path / "site" / "leaderboard.md").read_text() == "No sessions to analyze.\n"
    assert {p.name for p in (tmp_path / "site" / "tables").iterdir()} >= {"sessions.parquet", "sessions.csv"}
    assert_links_resolve(index)
    bare = build_site([tmp_path / "nothing"], tmp_path / "bare")   # not even run.json: still a page
    assert "Nothing yet: no session has started" in bare.read_text()


def test_run_in_progress_with_flagged_sessions(tmp_path):
    data = tables(running=True)
    data.sessions.loc[data.sessions["session_id"] == "greedy-r1", "final_commit"] = "f" * 40
    run = make_run(tmp_path / "run", data, planned=(3, 3))
    (run / "sessions" / "greedy-r1" / "verification.json").unlink()   # finished, its verification under way
    transcript = "## Turn 1\n\n**edit** train.py <script>x()</script>\n"
    (run / "sessions" / "cheater-r0" / "transcript.md").write_text(transcript)
    calibration = [dict(seed=s, status="ok", steps=100 + s, tokens_per_second=5000.0, trusted={"val": bpb},
                        training_seconds=1.0, message="") for s, bpb in ((0, 2.0), (1, 2.02))]
    write_json(run / "nodes" / "node-a.json", {"node": "node-a", "profile_hash": "h1", "runs": calibration,
                                               "infra_failures": []})
    index = build_site([run], tmp_path / "site")
    html = index.read_text()
    assert "In progress: 6 of 9 sessions finished, 1 awaiting verification" in html   # 7 started, 6 finished
    assert "done (awaiting verification)" in html
    assert "<td>node-a</td><td>2/2</td>" in html and "2.0100 ± 0.0141" in html   # the node's calibration
    assert "greedy-r2" in html and "running (not finished)" in html
    assert html.count("⚑ flagged") == 1 and 'class="flagged"' in html   # marked, never dropped
    for agent in ("noop", "greedy", "cheater"):
        assert f'<td class="agent">{agent}</td>' in html
    assert "What can and cannot be concluded" in html
    assert html.count("<figure>") == html.count("<figcaption><strong>") >= 3   # each figure with title and caption
    page = (tmp_path / "site" / "sessions" / "h1" / "cheater-r0.html").read_text()
    assert "prepare_modified" in page and "⚑ error" in page and "Verification on held-out seeds" in page
    assert "<h2>Turn 1</h2>" in page and "<strong>edit</strong>" in page and "&lt;script&gt;x()" in page   # escaped
    running = (tmp_path / "site" / "sessions" / "h1" / "greedy-r2.html").read_text()
    assert "has not finished" in running and "Not verified yet." in running
    assert_links_resolve(index)


def test_two_profiles_are_two_boards_and_one_profile_is_pooled(tmp_path):
    runs = [make_run(tmp_path / "a", tables("h1")), make_run(tmp_path / "b", tables("h2", flagged=False), "h2"),
            make_run(tmp_path / "c", tables("h1"))]
    index = build_site(runs, tmp_path / "site")
    html = index.read_text()
    boards = html.split('<section class="board"')[1:]
    assert len(boards) == 2 and "p-h1" in boards[0] and "p-h2" in boards[1]
    # the runs share session ids (and run ids): each is prefixed with its run's label; the h1 runs are pooled
    assert "r:noop-r0" in boards[0] and "r-3:noop-r0" in boards[0] and "r-2:noop-r0" in boards[1]
    assert boards[0].count('class="session-link"') == 12
    assert boards[1].count('class="session-link"') == 6
    sessions = pd.read_parquet(tmp_path / "site" / "tables" / "sessions.parquet")
    assert len(sessions) == 18 and sessions["session_id"].is_unique
    assert "## Profile p-h1 (h1)" in (tmp_path / "site" / "leaderboard.md").read_text()
    assert_links_resolve(index)


def test_conclusion_names_the_closest_agents_and_the_sessions_that_would_separate_them():
    data = tables()
    close = data.verifications.assign(bpb=data.verifications["bpb"].where(
        (data.verifications["agent"] != "cheater") | (data.verifications["role"] != "final"),
        data.verifications["bpb"] - 0.015))   # cheater's gain: 0.025 against greedy's 0.03
    text = " ".join(conclusion(analyze(Tables(data.sessions, data.experiments, close, data.findings))))
    assert "The closest agents, greedy and cheater" in text and "cannot be told apart" in text
    # here the agents' sessions agree exactly: only the seed term, which sessions do not shrink, separates them
    assert "no number of sessions up to" in text
    spread = Resolution(n_sessions=2, n_seeds=5, family=5, session_sd=0.01, seed_sd=0.002, pair_seed_sd=0.001,
                        run_sd=0.003, vs_baseline=math.nan, between_agents=math.nan, separated=0, tests=5)
    needed = sessions_to_separate(spread, 3, 0.01)
    assert needed > 2 and sessions_to_separate(spread, 3, 0.02) < needed
