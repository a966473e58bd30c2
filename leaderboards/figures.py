"""The figures of one board (one profile's tables, harness/analyze.py Tables), each an SVG string with a title and a
caption that says how to read it; leaderboards/site.py writes them next to index.html.

  best_so_far           best-so-far claimed val_bpb over time per agent: median and interquartile band over sessions,
                        noop's band, and the null expectation of a keep/revert loop on pure noise
  claimed_vs_verified   per session: claimed gain (results.tsv) against verified gain (held-out seeds), identity line
  rank_intervals        each agent's rank interval from the leaderboard's model (harness/analyze.py rank_profile)
  gain_vs_dollars       verified gain against LLM spend per agent with the Pareto front (None when nothing is metered)
  noise_floor_per_node  run-to-run σ of the baseline's val_bpb per node: calibration runs, else verification baselines
  throughput            experiments per hour and GPU duty cycle per agent (harness/loop_quality.py)

A figure function returns None when the data cannot draw it. Every agent keeps one style (Okabe–Ito colour, marker,
line style; agent_styles) in every figure of a board, so a figure reads in greyscale and with colour blindness.
Figures are built on matplotlib's Figure object, never pyplot: no GUI backend, no global registry to close, and the
figure is freed with its last reference. The SVG keeps text as text (searchable, smaller) and is byte-for-byte
deterministic (fixed hash salt, no date). Does not compute statistics of its own beyond medians and quantiles for
drawing: gains, ranks, the null and loop quality come from harness/.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D

from harness import loop_quality
from harness.analyze import (FLAG_SEVERITY, NOISE_AGENT, Tables, analyze, scored_pairs, session_claims,
                             with_columns)
from harness.null_model import LoopNoise, c4, loop_noise, null_gain, pooled_sigma
from harness.stats import null_spurious_gain

# Okabe & Ito (2008), black first (the noise agent), yellow last (faint on white).
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
LINESTYLES = ("-", "--", "-.", ":")
NULL_STYLE = dict(color="#777777", linestyle=(0, (1, 1.5)), linewidth=2.0)
GRID_POINTS = 121          # time points the best-so-far curves are sampled at
RC = {"svg.fonttype": "none", "svg.hashsalt": "arbench-figures", "font.size": 9, "axes.grid": True,
      "grid.color": "#dddddd", "grid.linewidth": 0.6, "axes.spines.top": False, "axes.spines.right": False,
      "legend.fontsize": 8, "legend.frameon": False}
WIDE, TALL = 7.5, 4.2      # inches


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class AgentStyle:
    color: str
    marker: str
    linestyle: str


def agent_styles(agents: Iterable[str]) -> dict[str, AgentStyle]:
    """One style per agent, independent of the order given and of which other agents a board has before it: the
    noise agent black, solid, round markers; the others by name in the other colours, markers and line styles. Up to
    len(MARKERS) agents every marker differs, so agents that greyscale alike still differ by marker."""
    names = set(agents)
    others = sorted(names - {NOISE_AGENT})
    colors = OKABE_ITO[1:]
    styles = {a: AgentStyle(colors[j % len(colors)], MARKERS[(j + 1) % len(MARKERS)],
                            LINESTYLES[(j + 1) % len(LINESTYLES)]) for j, a in enumerate(others)}
    noise = {NOISE_AGENT: AgentStyle(OKABE_ITO[0], MARKERS[0], LINESTYLES[0])} if NOISE_AGENT in names else {}
    return noise | styles


def _styled(draw: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """Run a figure function under the module's rc settings (they are read both when drawing and when saving)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)
    return wrapper


def all_figures(tables: Tables) -> list[Figure]:
    """Every figure the board's tables can draw, in the order of the module docstring."""
    tables = with_columns(tables)
    styles = agent_styles(_agents(tables))
    drawn = (fig(tables, styles) for fig in (fig_best_so_far, fig_claimed_vs_verified, fig_rank_intervals,
                                              fig_gain_vs_dollars, fig_noise_floor_per_node, fig_throughput))
    return [f for f in drawn if f is not None]


# ---------------------------------------------------------------------------
# Best so far over time
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Curves:
    """Best-so-far curves on one time grid: per agent the median and quartiles over its sessions; the null."""
    minutes: np.ndarray
    wall_clock: bool                              # minutes since the session started; else cumulative run time
    median: dict[str, np.ndarray]
    low: dict[str, np.ndarray]                    # 25th percentile over sessions
    high: dict[str, np.ndarray]                   # 75th
    null: np.ndarray | None                       # median over sessions of what a pure-noise loop has by then
    sigma: float                                  # the loop noise σ̂/c4 used by the null (NaN without one)


def best_so_far_curves(tables: Tables) -> Curves | None:
    """The curves, or None when no session has a timed row with a val_bpb. A session's best stays after it ends."""
    tables = with_columns(tables)
    rows, wall_clock = _progress(tables)
    rows = rows[np.isfinite(rows["minutes"]) & np.isfinite(rows["best"])]
    if rows.empty:
        return None
    grid = np.linspace(0.0, max(float(rows["minutes"].max()), 1e-9), GRID_POINTS)
    sessions = {sid: g for sid, g in rows.groupby("session_id", sort=True)}
    best = {sid: _step(g["minutes"], g["best"], grid) for sid, g in sessions.items()}
    agent = {sid: g["agent"].iloc[0] for sid, g in sessions.items()}
    median, low, high = {}, {}, {}
    for a in dict.fromkeys(agent.values()):
        stack = np.vstack([best[sid] for sid in best if agent[sid] == a])
        low[a], median[a], high[a] = _nanquantiles(stack, (0.25, 0.5, 0.75))
    noise = _board_noise(tables)
    # σ̂/c4, unbiased for σ, as the null's mean uses it
    sigma = float(noise.sigma.value) / float(c4(noise.sigma.df)) if noise else math.nan
    null = None
    if np.isfinite(sigma):
        draws = {sid: _step(g["minutes"], g["draws"], grid) for sid, g in sessions.items()}
        baseline = {sid: float(g["baseline"].iloc[0]) for sid, g in sessions.items()}
        stack = np.vstack([baseline[sid] - _null_gain(draws[sid], sigma) for sid in sessions])
        null = _nanquantiles(stack, (0.5,))[0]
    return Curves(grid, wall_clock, median, low, high, null, sigma)


def _progress(tables: Tables) -> tuple[pd.DataFrame, bool]:
    """Per results.tsv row: its session, agent, when its run ended (minutes), the best kept claimed val_bpb so far
    (the baseline row counts as kept), runs with a val_bpb after the baseline so far, and the session's baseline."""
    e = tables.experiments.reindex(columns=["session_id", "agent", "idx", "claimed_val_bpb", "status",
                                            "total_seconds", "training_seconds", "started_at"])
    e = e.sort_values(["session_id", "idx"], kind="stable")
    session = e["session_id"]
    first = ~session.duplicated()
    bpb = pd.to_numeric(e["claimed_val_bpb"], errors="coerce")
    scored = (e["status"] != "crash") & (bpb > 0) & np.isfinite(bpb)
    kept = bpb.where(scored & ((e["status"] == "keep") | first), np.inf)
    seconds = pd.to_numeric(e["total_seconds"], errors="coerce").fillna(
        pd.to_numeric(e["training_seconds"], errors="coerce")).fillna(0.0)
    started = pd.to_numeric(e["started_at"], errors="coerce")
    wall_clock = bool(started.notna().any())
    if wall_clock:
        start = tables.sessions.drop_duplicates("session_id").set_index("session_id")["started_at"]
        minutes = (started + seconds - pd.to_numeric(session.map(start), errors="coerce")) / 60.0
    else:
        minutes = seconds.groupby(session).cumsum() / 60.0
    return pd.DataFrame({
        "session_id": session, "agent": e["agent"], "minutes": minutes,
        "best": kept.groupby(session).cummin().replace(np.inf, np.nan),
        "draws": (scored & ~first).astype(int).groupby(session).cumsum(),
        "baseline": bpb.where(first & scored).groupby(session).transform("first"),
    }), wall_clock


def _step(times: pd.Series, values: pd.Series, grid: np.ndarray) -> np.ndarray:
    """The value of the last row at or before each grid time (NaN before the first row)."""
    at = np.searchsorted(times.to_numpy(float), grid, side="right") - 1
    out = values.to_numpy(float)[np.maximum(at, 0)]
    return np.where(at >= 0, out, np.nan)


def _nanquantiles(stack: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # grid times before any session's first row: all NaN
        return list(np.nanquantile(stack, qs, axis=0))


def _board_noise(tables: Tables) -> LoopNoise | None:
    """The board's loop noise (harness/null_model.py), None without an estimate (or with several profiles)."""
    noise = [n for n in loop_noise(tables).values() if np.isfinite(n.sigma.value)]
    return noise[0] if len(noise) == 1 else None


def _null_gain(draws: np.ndarray, sigma: float) -> np.ndarray:
    known = np.isfinite(draws)
    out = np.full(draws.shape, np.nan)
    out[known] = null_spurious_gain(draws[known].astype(int), sigma)
    return out


@_styled
def fig_best_so_far(tables: Tables, styles: dict[str, AgentStyle] | None = None) -> Figure | None:
    tables = with_columns(tables)
    curves = best_so_far_curves(tables)
    if curves is None:
        return None
    styles = styles or agent_styles(_agents(tables))
    fig, ax = _canvas()
    for a in sorted(curves.median, key=list(styles).index):
        s = styles[a]
        noise = a == NOISE_AGENT
        ax.fill_between(curves.minutes, curves.low[a], curves.high[a], step="post", linewidth=0,
                        color="#bbbbbb" if noise else s.color, alpha=0.45 if noise else 0.15,
                        hatch="///" if noise else None)
        ax.step(curves.minutes, curves.median[a], where="post", color=s.color, linestyle=s.linestyle,
                marker=s.marker, markevery=GRID_POINTS // 8, markersize=5, linewidth=1.6)
    if curves.null is not None:
        ax.step(curves.minutes, curves.null, where="post", **NULL_STYLE)
    ax.set_xlabel("time since the session started (min, wall clock)" if curves.wall_clock
                  else "cumulative training-run time (min)")
    ax.set_ylabel("best-so-far val_bpb (claimed, bits per byte)")
    extra = ((Line2D([], [], **NULL_STYLE), f"null: pure-noise loop (σ = {curves.sigma:.4f} bpb)"),) \
        if curves.null is not None else ()
    _legend(ax, [a for a in styles if a in curves.median], styles, extra)
    when = ("x: minutes since the session started, at the end of each run" if curves.wall_clock else
            "x: the sum of the session's training-run durations so far (minutes); the tables have no wall-clock "
            "start per run, so time the agent spent between runs is not on this axis")
    null = ("Dotted grey: the null expectation, what a keep/revert loop on pure noise would have found by then at "
            "these sessions' own pace (baseline − σ·E[max of d+1 normals] after d runs, median over sessions; "
            "σ the loop noise of harness/null_model.py). A curve below it found more than noise-mining explains."
            if curves.null is not None else
            "No null curve: the run has no estimate of the loop noise yet (no session re-ran a train.py).")
    noop = (f" {NOISE_AGENT} (it re-runs the baseline unchanged) is the hatched grey band: what run-to-run noise "
            "alone gives." if NOISE_AGENT in curves.median else "")
    return _figure("best_so_far", "Best-so-far val_bpb over time", fig, (
        "Lower is better. Each line is an agent's median over its sessions of the best val_bpb it had kept so far "
        "(as claimed in results.tsv, the baseline row included); the shaded band is the interquartile range over "
        f"sessions.{noop} {null} {when}."))


# ---------------------------------------------------------------------------
# Claimed against verified
# ---------------------------------------------------------------------------

def claimed_and_verified(tables: Tables) -> pd.DataFrame:
    """Per session with both: agent, claimed gain (results.tsv baseline row − best kept), verified val gain (mean
    over held-out seeds of baseline − final, harness/analyze.py scored_pairs), flagged (an integrity error)."""
    tables = with_columns(tables)
    claims = session_claims(tables.experiments)["claimed_gain"]
    pairs = scored_pairs(tables)
    verified = pairs[pairs["split"] == "val"].groupby("session_id")["diff"].mean()
    both = pd.DataFrame({"claimed": claims, "verified": verified}).dropna()
    agent = _session_agents(tables)
    flagged = set(tables.findings.loc[tables.findings["severity"] == FLAG_SEVERITY, "session_id"])
    return both.assign(agent=agent.reindex(both.index).to_numpy(), flagged=both.index.isin(flagged))


@_styled
def fig_claimed_vs_verified(tables: Tables, styles: dict[str, AgentStyle] | None = None) -> Figure | None:
    tables = with_columns(tables)
    points = claimed_and_verified(tables)
    if points.empty:
        return None
    styles = styles or agent_styles(_agents(tables))
    fig, ax = _canvas()
    for a, g in points.groupby("agent", sort=False):
        s = styles[a]
        ax.scatter(g["claimed"], g["verified"], color=s.color, marker=s.marker, s=42, zorder=3,
                   edgecolors="white", linewidths=0.5)
    flagged = points[points["flagged"]]
    ax.scatter(flagged["claimed"], flagged["verified"], s=160, facecolors="none", edgecolors="#D55E00",
               linewidths=1.5, zorder=2)
    low, high = _span(points[["claimed", "verified"]].to_numpy(), include=0.0)
    ax.plot([low, high], [low, high], color="#555555", linewidth=1.0, zorder=1)
    ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=1)
    q95 = _claim_q95(tables)
    if np.isfinite(q95):
        ax.axvline(q95, **NULL_STYLE)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("claimed gain (bpb, results.tsv: baseline − best kept)")
    ax.set_ylabel("verified gain (bpb, held-out seeds, val split)")
    extra = [(Line2D([], [], color="#555555", linewidth=1.0), "identity: verified = claimed")]
    if len(flagged):
        extra.append((Line2D([], [], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                             markeredgecolor="#D55E00"), "integrity-flagged session"))
    if np.isfinite(q95):
        extra.append((Line2D([], [], **NULL_STYLE), "95% of a pure-noise loop's claims lie left of this"))
    _legend(ax, [a for a in styles if a in set(points["agent"])], styles, tuple(extra))
    return _figure("claimed_vs_verified", "Claimed against verified gain, per session", fig, (
        "One point per session. x: the gain the agent claimed (its results.tsv baseline row minus its best kept "
        "val_bpb); y: the gain verification measured for its final train.py on held-out seeds (mean over seeds of "
        "baseline − final val_bpb, failed finals scored as the untrained model). Points on the solid identity line "
        "replicated exactly; points below it claimed more than held up (noise mining, or a seed-specific gain). "
        "Gains are in bits per byte; positive is better than the baseline. Ringed points are sessions with an "
        "integrity error (shown, never dropped)."
        + (" The dotted line is the 95th percentile of one session's claim on pure noise at the median number of "
           "runs (harness/null_model.py): a claim left of it is within what noise alone gives."
           if np.isfinite(q95) else "")))


def _claim_q95(tables: Tables) -> float:
    """The 95th percentile of one session's claimed gain on pure noise, at the board's median runs; NaN without."""
    noise = _board_noise(tables)
    draws = session_claims(tables.experiments)["n_draws"].to_numpy(int)
    return float(null_gain(draws, noise).session_q95) if noise and draws.size else math.nan


# ---------------------------------------------------------------------------
# Rank intervals
# ---------------------------------------------------------------------------

@_styled
def fig_rank_intervals(tables: Tables, styles: dict[str, AgentStyle] | None = None) -> Figure | None:
    tables = with_columns(tables)
    ranked = [r for r in analyze(tables) if r.rank is not None] if len(tables.sessions) else []
    if not ranked:
        return None
    styles = styles or agent_styles(_agents(tables))
    fig, ax = _canvas(height=0.9 + 0.45 * len(ranked))
    for y, r in enumerate(ranked):
        s = styles[r.agent]
        low, high = r.rank
        point = sum(o.profile_hash == r.profile_hash for o in ranked[:y]) + 1   # rows come best first per profile
        ax.plot([low, high], [y, y], color=s.color, linewidth=7, alpha=0.35, solid_capstyle="round")
        ax.plot([point], [y], color=s.color, marker=s.marker, markersize=8, linestyle="")
    ax.set_yticks(range(len(ranked)), [r.agent for r in ranked])
    ax.set_ylim(len(ranked) - 0.5, -0.5)
    ax.set_xticks(range(1, len(ranked) + 1))
    ax.set_xlim(0.5, len(ranked) + 0.5)
    ax.set_xlabel("rank by verified test gain (1 = best)")
    ax.set_ylabel("agent (best first)")
    ax.grid(axis="y", visible=False)
    _legend(ax, [r.agent for r in ranked], styles)
    return _figure("rank_intervals", "Rank intervals", fig, (
        "One row per verified agent, best first. The marker is the agent's rank by its mean verified gain on the "
        "test split; the bar spans every rank it could hold given the leaderboard's tests: agents whose bars "
        "overlap are not significantly different (Holm-adjusted over the leaderboard's family at α = 0.05); "
        "disjoint bars mean a significant difference."))


# ---------------------------------------------------------------------------
# Gain against dollars
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Spend:
    agent: str
    dollars: float         # mean LLM spend per metered session
    gain: float            # verified test gain (bpb)
    low: float             # its 95% interval (NaN when it has none)
    high: float


def spend_and_gain(tables: Tables) -> list[Spend]:
    """Agents with metered dollars and a verified test gain, by their mean spend per metered session."""
    tables = with_columns(tables)
    sessions = tables.sessions.reindex(columns=["session_id", "agent", "dollars", "requests"])
    dollars = pd.to_numeric(sessions["dollars"], errors="coerce")
    metered = (dollars > 0) | (pd.to_numeric(sessions["requests"], errors="coerce") > 0)
    spend = dollars[metered].groupby(sessions.loc[metered, "agent"]).mean()
    if spend.empty:
        return []
    gains = {r.agent: r.verified_test for r in analyze(tables)}
    points = [Spend(a, float(d), gains[a].mean, gains[a].ci_low, gains[a].ci_high) for a, d in spend.items()
              if a in gains and math.isfinite(gains[a].mean)]
    return sorted(points, key=lambda p: (p.dollars, -p.gain))


def pareto_front(points: list[Spend]) -> list[Spend]:
    """The points no other point beats with at most its dollars and at least its gain, by dollars."""
    front: list[Spend] = []
    for p in sorted(points, key=lambda s: (s.dollars, -s.gain)):
        if not front or p.gain > front[-1].gain:
            front.append(p)
    return front


@_styled
def fig_gain_vs_dollars(tables: Tables, styles: dict[str, AgentStyle] | None = None) -> Figure | None:
    tables = with_columns(tables)
    points = spend_and_gain(tables)
    if not points:
        return None
    styles = styles or agent_styles(_agents(tables))
    fig, ax = _canvas()
    for p in points:
        s = styles[p.agent]
        errors = [[p.gain - p.low], [p.high - p.gain]] if math.isfinite(p.low) else None
        ax.errorbar([p.dollars], [p.gain], yerr=errors, color=s.color, marker=s.marker, markersize=8,
                    capsize=3, linestyle="")
    front = pareto_front(points)
    ax.step([p.dollars for p in front], [p.gain for p in front], where="post", color="#555555",
            linestyle="--", linewidth=1.0, zorder=1)
    ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=1)
    ax.set_xlabel("LLM spend per session (US$, mean over metered sessions)")
    ax.set_ylabel("verified test gain (bpb, 95% interval)")
    ax.set_xlim(left=0.0)
    _legend(ax, [p.agent for p in points], styles,
            ((Line2D([], [], color="#555555", linestyle="--", linewidth=1.0), "Pareto front"),))
    return _figure("gain_vs_dollars", "Verified gain against dollars", fig, (
        "One point per agent whose LLM use was metered (agents that spent nothing through the gateway, such as the "
        "controls, are left out). x: mean dollars per session; y: verified gain on the test split (bits per byte, "
        "baseline − final; higher is better) with its 95% interval. The dashed staircase is the Pareto front: no "
        "agent gains more for less. An agent below the front is beaten at its price."))


# ---------------------------------------------------------------------------
# Noise floor per node
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeNoise:
    node: str
    sigma: float                 # run-to-run SD of the baseline's val_bpb (bpb)
    low: float                   # its 95% χ² interval
    high: float
    runs: int
    tokens_per_second: tuple[float, ...]   # per calibration run (empty for verification baselines)


def node_noise(tables: Tables) -> tuple[list[NodeNoise], bool]:
    """Per node with at least two runs, and whether they are calibration runs (the nodes table: the baseline at
    several seeds on each node before its first session) rather than the verification baselines across seeds."""
    tables = with_columns(tables)
    calibrated = _calibration_noise(tables.nodes)
    return (calibrated, True) if calibrated else (_verification_noise(tables), False)


def _calibration_noise(nodes: pd.DataFrame) -> list[NodeNoise]:
    ok = nodes[(nodes["status"] == "ok") & np.isfinite(pd.to_numeric(nodes["val_bpb"], errors="coerce"))]
    return [_node(str(node), runs["val_bpb"].to_numpy(float), np.zeros(len(runs)),
                  tuple(pd.to_numeric(runs["tokens_per_second"], errors="coerce").dropna()))
            for node, runs in ok.groupby("node", sort=True) if len(runs) >= 2]


def _verification_noise(tables: Tables) -> list[NodeNoise]:
    """The baseline's trusted val runs that ran ok, each (node, train.py, seed) once (the verifier's cache shares
    them between sessions); the node is the verification row's, else the session's host."""
    v = tables.verifications
    v = v[(v["role"] == "baseline") & (v["split"] == "val") & (v["status"] == "ok")
          & (v["pair_status"].astype(object).fillna("ok") == "ok") & np.isfinite(pd.to_numeric(v["bpb"],
                                                                                                errors="coerce"))]
    host = tables.sessions.drop_duplicates("session_id").set_index("session_id").reindex(columns=["host"])["host"]
    node = v.get("node", pd.Series("", index=v.index)).astype(object).replace("", None).fillna(v["session_id"].map(host).astype(object))
    node = node.replace("", None).fillna("this run's node")
    runs = v.assign(node=node.astype(str)).drop_duplicates(["node", "train_py_hash", "seed"])
    return [_node(n, g["bpb"].to_numpy(float), g["train_py_hash"].astype(str).to_numpy(), ())
            for n, g in runs.groupby("node", sort=True) if len(g) >= 2]


def _node(node: str, values: np.ndarray, cells: np.ndarray, tokens: tuple[float, ...]) -> NodeNoise:
    sigma = pooled_sigma(values, cells)
    return NodeNoise(node, float(sigma.value), float(sigma.low), float(sigma.high), len(values), tokens)


@_styled
def fig_noise_floor_per_node(tables: Tables, styles: dict[str, AgentStyle] | None = None) -> Figure | None:
    """styles: unused (no agents here); taken so that every figure function is called alike."""
    tables = with_columns(tables)
    nodes, calibrated = node_noise(tables)
    nodes = [n for n in nodes if math.isfinite(n.sigma)]
    if not nodes:
        return None
    with_tokens = calibrated and any(n.tokens_per_second for n in nodes)
    fig, axes = _canvas(ncols=2 if with_tokens else 1)
    ax = axes[0] if with_tokens else axes
    x = np.arange(len(nodes))
    ax.errorbar(x, [n.sigma for n in nodes], yerr=[[n.sigma - n.low for n in nodes], [n.high - n.sigma for n in nodes]],
                color=OKABE_ITO[4], marker="o", linestyle="", capsize=4)
    ax.set_xticks(x, [f"{n.node}\n({n.runs} runs)" for n in nodes])
    ax.set_xlim(-0.6, len(nodes) - 0.4)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("node")
    ax.set_ylabel("σ of the baseline's val_bpb (bpb, 95% interval)")
    if with_tokens:
        for i, n in enumerate(nodes):
            axes[1].plot(np.full(len(n.tokens_per_second), i), n.tokens_per_second, color=OKABE_ITO[5],
                         marker="D", linestyle="", alpha=0.8)
        axes[1].set_xticks(x, [n.node for n in nodes])
        axes[1].set_xlim(-0.6, len(nodes) - 0.4)
        axes[1].set_xlabel("node")
        axes[1].set_ylabel("training throughput (tokens/s, one point per run)")
    what = ("the calibration runs: the baseline train.py trained on each node before its first session, one run per "
            "seed, so σ includes the seed's effect as well as run-to-run noise" if calibrated else
            "the verification runs: the baseline train.py's val_bpb across the held-out seeds on that node (each "
            "train.py and seed once), so σ includes the seed's effect as well as run-to-run noise; an upper bound on "
            "the noise a loop at one seed faces")
    return _figure("noise_floor_per_node", "Noise floor per node", fig, (
        f"The run-to-run standard deviation of the baseline's val_bpb on each node (bits per byte, with its 95% χ² "
        f"interval), from {what}. A gain smaller than this is within the noise of one run."
        + (" Right: the tokens per second of each calibration run; a slower node does fewer steps in the time "
           "budget, which shows up as a worse val_bpb, not as noise." if with_tokens else "")))


# ---------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------

@_styled
def fig_throughput(tables: Tables, styles: dict[str, AgentStyle] | None = None) -> Figure | None:
    tables = with_columns(tables)
    noise: dict[str, LoopNoise] = loop_noise(tables)
    sessions = loop_quality.session_frame(tables, noise)
    sessions = sessions[np.isfinite(sessions["experiments_per_hour"])]
    if sessions.empty:
        return None
    styles = styles or agent_styles(_agents(tables))
    agents = [a for a in styles if a in set(sessions["agent"])]
    per_agent = {q.agent: q for q in loop_quality.by_agent(loop_quality.loop_quality(tables, noise))}
    fig, (rate, duty) = _canvas(ncols=2, height=1.2 + 0.4 * len(agents))
    for y, a in enumerate(agents):
        s, mine = styles[a], sessions[sessions["agent"] == a]
        for ax, column, scale in ((rate, "experiments_per_hour", 1.0), (duty, "duty_cycle", 100.0)):
            ax.plot(mine[column] * scale, np.full(len(mine), y), color=s.color, marker=s.marker, linestyle="",
                    markerfacecolor="none", markersize=6, alpha=0.7)
            ax.plot([getattr(per_agent[a], column) * scale], [y], color=s.color, marker=s.marker, linestyle="",
                    markersize=10)
    rate.set_yticks(range(len(agents)), agents)
    duty.set_yticks(range(len(agents)), [])
    for ax in (rate, duty):
        ax.set_ylim(len(agents) - 0.5, -0.5)
        ax.set_xlim(left=0.0)
        ax.grid(axis="y", visible=False)
    duty.set_xlim(0.0, 100.0)
    rate.set_ylabel("agent")
    rate.set_xlabel("experiments / hour (runs per wall h)")
    duty.set_xlabel("GPU duty cycle (% of wall time)")
    _legend(duty, agents, styles)
    return _figure("throughput", "Experiments per hour and GPU duty cycle", fig, (
        "Hollow markers: one session each; filled: the agent over all its sessions (total runs over total wall "
        "hours, total training seconds over total wall seconds). Left: training runs per wall-clock hour, the "
        "baseline run included (results.tsv rows). Right: the share of the session's wall time spent training, as "
        "each run's train.py reported it; the rest is the agent thinking, editing, and runs it never logged. A low "
        "duty cycle wastes the accelerator (harness/loop_quality.py)."))


# ---------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------

def _agents(tables: Tables) -> list[str]:
    return [str(a) for a in pd.concat([tables.sessions["agent"], tables.experiments["agent"],
                                       tables.verifications["agent"]]).dropna().unique()]


def _session_agents(tables: Tables) -> pd.Series:
    frames = [f[["session_id", "agent"]] for f in (tables.sessions, tables.experiments, tables.verifications)]
    return pd.concat(frames).dropna().drop_duplicates("session_id").set_index("session_id")["agent"]


def _span(values: np.ndarray, include: float) -> tuple[float, float]:
    """Limits around values and `include`, with a margin (a single point still gets a visible range)."""
    low, high = min(float(np.nanmin(values)), include), max(float(np.nanmax(values)), include)
    margin = 0.08 * (high - low) or 0.01
    return low - margin, high + margin


def _canvas(ncols: int = 1, height: float = TALL):
    fig = MplFigure(figsize=(WIDE, max(height, 2.2)), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _legend(ax, agents: list[str], styles: dict[str, AgentStyle],
            extra: tuple[tuple[Line2D, str], ...] = ()) -> None:
    """The agents' styles (and extra entries) in a legend right of the axes."""
    handles = [Line2D([], [], color=styles[a].color, marker=styles[a].marker, linestyle=styles[a].linestyle)
               for a in agents] + [handle for handle, _ in extra]
    ax.legend(handles, [*agents, *(label for _, label in extra)], loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0)


def _figure(name: str, title: str, fig: MplFigure, caption: str) -> Figure:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return Figure(name, title, caption, buffer.getvalue())
