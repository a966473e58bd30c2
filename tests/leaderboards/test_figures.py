"""leaderboards/figures.py on tables the store builds from synthetic session folders (tests/support.py) and on empty
tables: every figure is valid SVG with labelled axes (units on numeric ones) and every drawn agent in its legend, the
numbers drawn are the tables' (best so far, claims, noise per node, Pareto front), figures return None where the
data cannot draw them, and the agent styles survive greyscale. Draws nothing but matplotlib: no training."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from harness.analyze import Tables
from harness.store import build_tables, write_json
from leaderboards import figures
from leaderboards.figures import (NOISE_AGENT, Spend, agent_styles, all_figures, best_so_far_curves,
                                  claimed_and_verified, node_noise, pareto_front)
from support import write_session_folders

SVG = "{http://www.w3.org/2000/svg}"
NAMES = ["best_so_far", "claimed_vs_verified", "rank_intervals", "gain_vs_dollars", "noise_floor_per_node",
         "throughput"]
SEEDS = (1000, 1001, 1002)
BASELINE = {"val": (2.00, 2.10, 1.90), "test": (2.20, 2.30, 2.10)}
NODE_OFFSET = {"node-a": (0.0, 0.0, 0.0), "node-b": (0.01, -0.02, 0.015)}   # the baseline re-run on node-b
GAIN = {"noop": 0.0, "greedy": 0.05, "llm": 0.02}
DOLLARS = {"llm-r0": 1.5, "llm-r1": 2.5}
EXPERIMENTS = {   # (claimed val_bpb, status, train.py hash, run seconds)
    "noop-r0": [(2.00, "keep", "B", 70), (2.01, "discard", "B", 70), (1.99, "keep", "B", 70)],
    "noop-r1": [(2.10, "keep", "B", 70), (2.08, "keep", "B", 70), (2.11, "discard", "B", 70)],
    "greedy-r0": [(2.00, "keep", "B", 80), (1.95, "keep", "X", 75), (0.0, "crash", "Y", 5), (1.93, "keep", "W", 78)],
    "greedy-r1": [(2.10, "keep", "B", 80), (2.05, "keep", "X", 75), (2.07, "discard", "Z", 76)],
    "llm-r0": [(2.00, "keep", "B", 70), (1.97, "keep", "L1", 71), (1.96, "keep", "L2", 72)],
    "llm-r1": [(2.10, "keep", "B", 70), (2.12, "discard", "L3", 71), (2.04, "keep", "L4", 72)],
}
FLAGGED = "llm-r1"


def node_of(sid: str) -> str:
    return "node-a" if sid.endswith("r0") else "node-b"


def session(sid: str) -> dict:
    agent = sid.split("-")[0]
    return dict(session_id=sid, run_id="r", agent=agent, repeat=int(sid[-1]), seed=int(sid[-1]), profile="p",
                profile_hash="h1", status="done", stage="done", message="", started_at=1000.0,
                wall_seconds=900.0 if agent == "noop" else 1800.0, n_experiments=len(EXPERIMENTS[sid]) - 1,
                requests=10 if sid in DOLLARS else 0, dollars=DOLLARS.get(sid, 0.0), input_tokens=0,
                output_tokens=0, cache_read_tokens=0, cache_write_tokens=0)


def experiments(sid: str) -> list[dict]:
    return [dict(session_id=sid, agent=sid.split("-")[0], idx=i, commit=f"{sid}-{i}", description="d",
                 claimed_val_bpb=bpb, run_val_bpb=bpb, status=status, run_status="crash" if status == "crash" else "ok",
                 train_py_sha256=code, seed=None, run_dirty=False, total_seconds=float(seconds),
                 training_seconds=float(seconds - 10))
            for i, (bpb, status, code, seconds) in enumerate(EXPERIMENTS[sid])]


def verifications(sid: str) -> list[dict]:
    agent, node = sid.split("-")[0], node_of(sid)
    rows = []
    for split, values in BASELINE.items():
        for k, seed in enumerate(SEEDS):
            base = values[k] + NODE_OFFSET[node][k]
            gain = GAIN[agent] + 0.004 * ((k + int(sid[-1])) % 3) if GAIN[agent] else 0.0
            common = dict(session_id=sid, agent=agent, seed=seed, split=split, status="ok", pair_status="ok",
                          message="", node=node, untrained_bpb=8.0)
            rows.append(common | dict(role="baseline", train_py_hash="B", bpb=base))
            rows.append(common | dict(role="final", train_py_hash=f"F-{sid}" if gain else "B", bpb=base - gain))
    return rows


def world(dollars: bool = True) -> Tables:
    sessions = [session(sid) | ({} if dollars else {"requests": 0, "dollars": 0.0}) for sid in EXPERIMENTS]
    return Tables(pd.DataFrame(sessions), pd.DataFrame([r for sid in EXPERIMENTS for r in experiments(sid)]),
                  pd.DataFrame([r for sid in EXPERIMENTS for r in verifications(sid)]),
                  pd.DataFrame([dict(session_id=FLAGGED, agent="llm", kind="prepare_modified", severity="error",
                                     message="prepare.py changed", commit="c")]))


def stored(folder, data: Tables) -> Tables:
    write_session_folders(folder, data)
    return Tables(**build_tables(folder))


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Tables:
    return stored(tmp_path_factory.mktemp("run"), world())


@pytest.fixture(scope="module")
def drawn(board) -> dict[str, figures.Figure]:
    return {f.name: f for f in all_figures(board)}


# ---------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------

def texts(element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def axes_of(root) -> list[tuple[list[str], list[str]]]:
    """(tick labels, axis label) of every axis in the SVG."""
    out = []
    for axis in root.iter(f"{SVG}g"):
        if axis.get("id", "").startswith("matplotlib.axis"):
            ticks = [t for tick in axis if re.match(r"[xy]tick_", tick.get("id", "")) for t in texts(tick)]
            label = [t for child in axis if not re.match(r"[xy]tick_", child.get("id", "")) for t in texts(child)]
            out.append((ticks, label))
    return out


def legend_of(root) -> list[str]:
    return [t for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("legend") for t in texts(g)]


def numeric(label: str) -> bool:
    return re.fullmatch(r"[−-]?[\d.]+(e[−+-]?\d+)?", label.strip()) is not None


def test_every_figure_is_svg_with_labelled_axes_and_its_agents_in_the_legend(drawn):
    assert list(drawn) == NAMES
    for figure in drawn.values():
        root = ET.fromstring(figure.svg)
        assert root.tag == f"{SVG}svg" and figure.title and figure.caption
        for ticks, label in axes_of(root):
            if ticks and any(t.strip() for t in ticks):   # a shared axis without tick labels needs no label
                assert label, (figure.name, ticks)
                if all(numeric(t) for t in ticks if t.strip()):
                    assert "(" in label[0] and ")" in label[0], (figure.name, label)   # units
    agents = set(GAIN)
    for name in ("best_so_far", "claimed_vs_verified", "rank_intervals", "throughput"):
        assert agents <= set(legend_of(ET.fromstring(drawn[name].svg))), name
    # only the metered agent is drawn against dollars
    assert {"llm"} == agents & set(legend_of(ET.fromstring(drawn["gain_vs_dollars"].svg)))


def test_each_agent_keeps_its_style_in_every_figure(board, drawn):
    styles = agent_styles(GAIN)
    for name in ("best_so_far", "claimed_vs_verified", "rank_intervals", "throughput"):
        for agent, style in styles.items():
            assert style.color.lower() in drawn[name].svg, (name, agent)
    assert figures.fig_best_so_far(board).svg == drawn["best_so_far"].svg   # deterministic, same styles unasked


def test_empty_tables_draw_nothing():
    empty = Tables(*(pd.DataFrame() for _ in range(5)))
    assert all_figures(empty) == []
    for name in NAMES:
        assert getattr(figures, f"fig_{name}")(empty) is None


def test_a_run_before_verification_draws_only_what_its_loops_show(tmp_path):
    data = world()
    none = pd.DataFrame(columns=["session_id", "agent"])
    unverified = stored(tmp_path, Tables(data.sessions, data.experiments, none, none))
    assert [f.name for f in all_figures(unverified)] == ["best_so_far", "throughput"]


def test_gain_vs_dollars_needs_metered_dollars(tmp_path):
    unmetered = stored(tmp_path, world(dollars=False))
    assert figures.fig_gain_vs_dollars(unmetered) is None
    assert figures.fig_rank_intervals(unmetered) is not None


# ---------------------------------------------------------------------------
# Styles
# ---------------------------------------------------------------------------

def grey(color: str) -> float:
    r, g, b = to_rgb(color)
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_agent_styles_differ_in_greyscale_or_marker_and_ignore_order():
    names = [f"agent{i}" for i in range(11)] + [NOISE_AGENT]
    styles = agent_styles(names)
    assert styles == agent_styles(reversed(names))
    assert styles[NOISE_AGENT].color == "#000000"
    for a, b in itertools.combinations(names, 2):
        sa, sb = styles[a], styles[b]
        assert sa.marker != sb.marker or abs(grey(sa.color) - grey(sb.color)) > 0.1, (a, b)
    assert [a for a, s in styles.items() if s.color == "#000000"] == [NOISE_AGENT]   # black is the control's
    assert len({s.color for s in styles.values()}) == len(figures.OKABE_ITO)


# ---------------------------------------------------------------------------
# What is drawn
# ---------------------------------------------------------------------------

def test_best_so_far_ends_at_the_median_best_kept_claim_and_the_null_falls(board):
    curves = best_so_far_curves(board)
    for agent in GAIN:
        finals = [min(bpb for i, (bpb, status, _, _) in enumerate(rows) if status == "keep" or i == 0)
                  for sid, rows in EXPERIMENTS.items() if sid.startswith(agent)]
        assert curves.median[agent][-1] == pytest.approx(np.median(finals))
        assert np.all(np.diff(curves.median[agent][np.isfinite(curves.median[agent])]) <= 1e-12)
    assert not curves.wall_clock
    longest = max(sum(r[3] for r in rows) for rows in EXPERIMENTS.values())
    assert curves.minutes[-1] == pytest.approx(longest / 60)
    assert np.isfinite(curves.sigma) and curves.sigma > 0
    null = curves.null[np.isfinite(curves.null)]
    assert np.all(np.diff(null) <= 1e-12) and null[-1] < null[0]


def test_best_so_far_uses_wall_clock_when_runs_have_start_times(board):
    started = board.experiments.assign(started_at=1000.0 + 100.0 * board.experiments["idx"])
    curves = best_so_far_curves(Tables(board.sessions, started, board.verifications, board.findings))
    assert curves.wall_clock
    last = max(100.0 * (len(rows) - 1) + rows[-1][3] for rows in EXPERIMENTS.values())
    assert curves.minutes[-1] == pytest.approx(last / 60)


def test_claimed_and_verified_per_session(board, drawn):
    points = claimed_and_verified(board)
    assert set(points.index) == set(EXPERIMENTS)
    greedy = points.loc["greedy-r0"]
    assert greedy["claimed"] == pytest.approx(2.00 - 1.93)
    assert greedy["verified"] == pytest.approx(np.mean([0.05 + 0.004 * (k % 3) for k in range(3)]))
    assert list(points.index[points["flagged"]]) == [FLAGGED]
    assert "integrity-flagged session" in legend_of(ET.fromstring(drawn["claimed_vs_verified"].svg))


def test_pareto_front_keeps_only_undominated_agents():
    points = [Spend("a", 1.0, 0.01, np.nan, np.nan), Spend("b", 2.0, 0.005, np.nan, np.nan),
              Spend("c", 3.0, 0.02, np.nan, np.nan), Spend("d", 3.0, 0.015, np.nan, np.nan)]
    assert [p.agent for p in pareto_front(points)] == ["a", "c"]


def test_noise_floor_from_verification_baselines_per_node(board, drawn):
    nodes, calibrated = node_noise(board)
    assert not calibrated
    assert [n.node for n in nodes] == ["node-a", "node-b"]
    for n in nodes:
        values = np.add(BASELINE["val"], NODE_OFFSET[n.node])
        assert n.sigma == pytest.approx(np.std(values, ddof=1)) and n.low < n.sigma < n.high
    assert "verification runs" in drawn["noise_floor_per_node"].caption


def test_noise_floor_prefers_calibration_runs(tmp_path):
    runs = {"gpu-1": (3.01, 3.03, 3.02), "gpu-2": (3.05, 3.00, 3.10)}
    for host, values in runs.items():
        write_json(tmp_path / "nodes" / f"{host}.json", {
            "node": host, "profile_hash": "h1", "infra_failures": [],
            "runs": [dict(seed=s, status="ok", steps=100, tokens_per_second=5000.0 + s, trusted={"val": v},
                          training_seconds=60.0, message="") for s, v in enumerate(values)]})
    tables = stored(tmp_path, world())
    nodes, calibrated = node_noise(tables)
    assert calibrated
    assert {n.node: n.sigma for n in nodes} == pytest.approx({h: np.std(v, ddof=1) for h, v in runs.items()})
    figure = figures.fig_noise_floor_per_node(tables)
    assert "calibration runs" in figure.caption
    assert {"gpu-1", "gpu-2"} <= {t.strip() for t in texts(ET.fromstring(figure.svg))}
