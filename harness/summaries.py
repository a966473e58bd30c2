"""rliable-style summaries for many sessions: IQM with stratified bootstrap intervals, probability of improvement,
performance profiles (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice").

A session's score is its verified gain on one split (baseline − final bpb, mean over the held-out seeds, a failed final
scored as the untrained model: harness/analyze.py). Strata are rliable's tasks: the budgets (seconds, experiments,
dollars) of one profile. Profiles are never pooled (their bpb scales differ): each gets its own summaries. Every
statistic is bootstrapped by resampling each agent's sessions within each stratum (rliable's StratifiedBootstrap and
StratifiedIndependentBootstrap), percentile intervals.

One thing rliable's runs do not have: the sessions of a profile are scored on the same held-out seeds, so the
baseline's own seed noise is in every changed session's score alike (a session whose final is the baseline scores
exactly 0 and carries none of it). Resampling sessions cannot see that shared term, and it does not shrink with more
sessions: without it a 95% interval of the IQM covers 0.56–0.79 of the time on data shaped like ours (10–40 sessions,
3 seeds), with it 0.965–0.977 (tests/harness/test_summaries.py). So every replicate also adds a draw of it, se·t_{K−1},
to each changed session of the stratum (the same draw for every agent, so it cancels between two changed sessions in
P(X > Y)); se² = the variance over seeds of the row-centred seed means / K, from the changed sessions whose every final
run ran ok (slightly conservative). `rliable` itself is not used: it pins arch < 8 (which pulls statsmodels), seaborn
and absl-py, and runs its replicates in Python loops; these are a few vectorized numpy functions. Below MIN_SESSIONS
per agent the summaries print n/a: the crossed model's intervals (harness/model.py) are the ones to read there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.null_model import LoopNoise, loop_noise
from harness.stats import scalar_or_array

LEVEL = 0.95
REPS = 2000                 # bootstrap replicates (rliable uses 2,000 for profiles)
SEED = 0
TRIM = 0.25                 # IQM: the mean of the middle 50%
MIN_SESSIONS = 10           # fewer sessions per agent: the summaries print n/a (see the calibration test)
_CHUNK_VALUES = 4_000_000   # floats materialised per block of replicates
BUDGET_COLUMNS = ("budget_seconds", "budget_experiments", "budget_dollars")


# ---------------------------------------------------------------------------
# Statistics on arrays (last axis: sessions; leading axes: replicates or data sets)
# ---------------------------------------------------------------------------

def iqm(x: np.ndarray) -> np.ndarray | float:
    """Interquartile mean along the last axis, as scipy.stats.trim_mean(x, 0.25): the mean of the sorted values
    from index ⌊n/4⌋ to n − ⌊n/4⌋ (exclusive)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    cut = int(TRIM * n)
    if n - 2 * cut <= 0:
        return np.full(x.shape[:-1], np.nan)
    middle = np.partition(x, (cut, n - cut - 1), axis=-1)[..., cut:n - cut] if cut else x
    return middle.mean(axis=-1)


def prob_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + ½ P(X = Y) for one draw from each sample (the Mann–Whitney U / (n_x n_y)), along the last axes of
    x (..., n_x) and y (..., n_y); exact with ties (sessions that kept nothing tie at 0)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    x, y = np.broadcast_to(x, lead + x.shape[-1:]), np.broadcast_to(y, lead + y.shape[-1:])
    n_x, n_y = x.shape[-1], y.shape[-1]
    z = np.concatenate([x, y], axis=-1).reshape(-1, n_x + n_y)
    order = np.argsort(z, axis=1, kind="stable")
    zs = np.take_along_axis(z, order, axis=1)
    is_y = order >= n_x
    start = np.ones_like(zs, dtype=bool)
    start[:, 1:] = zs[:, 1:] != zs[:, :-1]
    group = np.cumsum(start.ravel()) - 1                      # tie groups, numbered across rows
    y_in_group = np.bincount(group, weights=is_y.ravel())
    y_before = (np.cumsum(is_y, axis=1) - is_y).ravel()       # y's earlier in the row, at each position
    y_below = y_before[start.ravel()][group]                  # ... at the start of each position's group
    wins = np.where(is_y.ravel(), 0.0, y_below + 0.5 * y_in_group[group])
    return (wins.reshape(z.shape).sum(axis=1) / (n_x * n_y)).reshape(lead)


@dataclass(frozen=True)
class Stratum:
    """One stratum's sessions (one task in rliable's terms): scores, and which of them carry the shared seed term."""
    label: str
    agents: np.ndarray      # agent per session
    scores: np.ndarray      # (..., n) session scores; leading axes are data sets (calibration)
    changed: np.ndarray     # (..., n) bool: the final differs from the baseline (its score carries the shared term)
    shared_se: np.ndarray | float   # SE of the shared seed term (0: none; NaN: unknown, taken as 0 and said)
    shared_df: int                  # K − 1


@dataclass(frozen=True)
class Estimate:
    point: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float


def bootstrap(strata: list[Stratum], agents: list[str], thresholds: np.ndarray, *, reps: int = REPS,
              seed: int = SEED, level: float = LEVEL) -> tuple[dict, dict, dict]:
    """Point estimates and percentile intervals of every agent's IQM, every ordered pair's P(X > Y) (averaged over
    the strata both have) and every agent's performance profile (share of its sessions scoring above each threshold),
    from `reps` stratified bootstrap replicates, each with a draw of every stratum's shared seed term.

    Returns (iqm, improvement, profile): dicts agent → Estimate, (x, y) → Estimate, agent → Estimate (arrays over
    thresholds, last axis)."""
    rng = np.random.default_rng(seed)
    lead = np.shape(strata[0].scores)[:-1] if strata else ()
    thresholds = np.asarray(thresholds, dtype=float)
    pairs = [(x, y) for i, x in enumerate(agents) for y in agents[i + 1:]]
    draws: dict[str, list] = {"iqm": [], "profile": [], "pairs": []}
    n_total = sum(np.shape(s.scores)[-1] for s in strata) * int(np.prod(lead))
    block = max(1, _CHUNK_VALUES // max(1, n_total * max(1, thresholds.size)))
    for start in range(0, reps, block):
        b = min(block, reps - start)
        shifts = [_shift(s, lead, b, rng) for s in strata]
        idx = {a: [rng.integers(0, _select(s, a)[0].shape[-1] or 1, size=lead + (b, _select(s, a)[0].shape[-1]))
                   for s in strata] for a in agents}
        values = {a: np.concatenate([_values(s, a, i, shift) for s, i, shift in zip(strata, idx[a], shifts)], axis=-1)
                  for a in agents}
        draws["iqm"].append([iqm(values[a]) for a in agents])
        draws["profile"].append([_above(values[a], thresholds) for a in agents])
        draws["pairs"].append([_mean_over_strata([_resampled_prob(s, x, idx[x][p], y, idx[y][p], shifts[p])
                                                  for p, s in enumerate(strata)]) for x, y in pairs])
    point = {a: [_select(s, a)[0] for s in strata] for a in agents}
    pooled = {a: np.concatenate(point[a], axis=-1) for a in agents}
    tail = (1.0 - level) / 2.0

    def interval(key: str, i: int, estimate: np.ndarray, flip: bool = False) -> Estimate:
        replicates = np.concatenate([d[i] for d in draws[key]], axis=len(lead))
        replicates = 1.0 - replicates if flip else replicates
        with np.errstate(invalid="ignore"):
            low, high = np.nanquantile(replicates, [tail, 1.0 - tail], axis=len(lead))
        return Estimate(scalar_or_array(estimate), scalar_or_array(low), scalar_or_array(high))

    improvement = {}
    for i, (x, y) in enumerate(pairs):
        p_xy = _mean_over_strata([prob_greater(px, py) if px.shape[-1] and py.shape[-1] else None
                                  for px, py in zip(point[x], point[y])])
        improvement[x, y] = interval("pairs", i, p_xy)
        improvement[y, x] = interval("pairs", i, 1.0 - p_xy, flip=True)   # P(Y > X) = 1 − P(X > Y), ties halved
    return ({a: interval("iqm", i, iqm(pooled[a])) for i, a in enumerate(agents)}, improvement,
            {a: interval("profile", i, _above(pooled[a], thresholds)) for i, a in enumerate(agents)})


def _select(stratum: Stratum, agent: str) -> tuple[np.ndarray, np.ndarray]:
    """The agent's scores and changed flags in the stratum, (..., n) each."""
    mask = np.asarray(stratum.agents) == agent
    scores = np.asarray(stratum.scores, dtype=float)
    return scores[..., mask], np.broadcast_to(np.asarray(stratum.changed, dtype=bool), scores.shape)[..., mask]


def _shift(stratum: Stratum, lead: tuple[int, ...], b: int, rng: np.random.Generator) -> np.ndarray:
    """b draws of the stratum's shared seed term, se·t_df, shape (..., b); zeros without one."""
    se = np.nan_to_num(np.broadcast_to(np.asarray(stratum.shared_se, dtype=float), lead))
    if stratum.shared_df < 1:
        return np.zeros(lead + (b,))
    return se[..., None] * rng.standard_t(stratum.shared_df, size=lead + (b,))


def _values(stratum: Stratum, agent: str, idx: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The resampled sessions' scores, the changed ones moved by the replicate's shared term: (..., b, n)."""
    scores, changed = _select(stratum, agent)
    values = np.take_along_axis(scores[..., None, :], idx, axis=-1)
    return values + shift[..., None] * np.take_along_axis(changed[..., None, :], idx, axis=-1)


def _above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of sessions above each threshold: (..., T) from (..., n); NaN without sessions."""
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1] + thresholds.shape, np.nan)
    return (values[..., None, :] > thresholds[:, None]).mean(axis=-1)


def _resampled_prob(stratum: Stratum, x: str, ix: np.ndarray, y: str, iy: np.ndarray,
                    shift: np.ndarray) -> np.ndarray | None:
    """P(X > Y) + ½ P(X = Y) in each replicate (…, b), without materialising the n_x × n_y comparisons: the
    resamples as counts over the original sessions, compared through sorted originals. Changed sessions move
    together, so changed-vs-changed and unchanged-vs-unchanged comparisons ignore the shift; the mixed ones add it."""
    (sx, cx), (sy, cy) = _select(stratum, x), _select(stratum, y)
    if sx.shape[-1] == 0 or sy.shape[-1] == 0:
        return None
    out = np.empty(shift.shape)
    for at in np.ndindex(*shift.shape[:-1]):
        counts_x, counts_y = _counts(ix[at], sx.shape[-1]), _counts(iy[at], sy.shape[-1])
        wins = sum(_wins(sx[at][mx], counts_x[:, mx], sy[at][my], counts_y[:, my], sign * shift[at])
                   for mx, my, sign in ((cx[at], cy[at], 0), (~cx[at], ~cy[at], 0),
                                        (cx[at], ~cy[at], 1), (~cx[at], cy[at], -1)))
        out[at] = wins / (sx.shape[-1] * sy.shape[-1])
    return out


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(b, n) times each original session appears in each replicate's resample idx (b, n)."""
    b = idx.shape[0]
    return np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(float)


def _wins(x: np.ndarray, counts_x: np.ndarray, y: np.ndarray, counts_y: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Σ_ij counts_x[r,i] counts_y[r,j] (1[x_i + shift_r > y_j] + ½ 1[x_i + shift_r = y_j]) for each replicate r."""
    if x.size == 0 or y.size == 0:
        return np.zeros(counts_x.shape[0])
    order = np.argsort(y, kind="stable")
    ys = y[order]
    cum = np.concatenate([np.zeros((counts_y.shape[0], 1)), np.cumsum(counts_y[:, order], axis=1)], axis=1)
    v = x if not np.any(shift) else x[None, :] + shift[:, None]
    lo, hi = np.searchsorted(ys, v, side="left"), np.searchsorted(ys, v, side="right")
    lo, hi = np.broadcast_to(lo, counts_x.shape), np.broadcast_to(hi, counts_x.shape)
    below, upto = np.take_along_axis(cum, lo, axis=1), np.take_along_axis(cum, hi, axis=1)
    return (counts_x * (below + 0.5 * (upto - below))).sum(axis=1)


def _mean_over_strata(per: list[np.ndarray | None]) -> np.ndarray | float:
    """P(X > Y) averaged over the strata where both have sessions (NaN where none)."""
    present = [p for p in per if p is not None]
    return np.mean(present, axis=0) if present else math.nan


def shared_term(diffs: np.ndarray) -> tuple[float, int]:
    """SE of the seed term shared by a stratum's changed sessions and its df, from their sessions × seeds table of
    paired differences (complete rows): the row-centred column means vary over seeds by σ_v² + σ_w²/S (the second
    part slightly conservative), so se² = their variance / K, K − 1 df."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] < 2:
        return math.nan, 0
    columns = (d - d.mean(axis=1, keepdims=True)).mean(axis=0)
    return float(np.sqrt(columns.var(ddof=1) / d.shape[1])), d.shape[1] - 1


# ---------------------------------------------------------------------------
# From the tables
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Summaries:
    """One profile's rliable-style summaries of the agents' verified gains on one split."""
    profile: str
    profile_hash: str
    split: str
    reps: int
    strata: tuple[str, ...]                 # budget labels
    n_sessions: dict[str, int]              # agent → verified sessions
    iqm: dict[str, Estimate]
    improvement: dict[tuple[str, str], Estimate]   # (x, y) → P(a session of x beats one of y)
    thresholds: np.ndarray
    profiles: dict[str, Estimate]           # agent → share of sessions above each threshold
    shared_se: dict[str, float] = field(default_factory=dict)   # stratum → SE of the shared seed term


def summaries(tables, profile_hash: str, split: str = "test", sigma: float = math.nan, *, reps: int = REPS,
              seed: int = SEED) -> Summaries | None:
    """One profile's summaries from the tables (harness/analyze.py Tables); None without verified sessions.
    Performance-profile thresholds: 0, 1, 2 and 4 σ when σ > 0 is given, else 0 and the scores' quartiles."""
    found = {key: strata for key, strata in session_strata(tables, split).items() if key[0] == profile_hash}
    if not found:
        return None
    (_, profile), strata = next(iter(found.items()))
    agents = sorted({a for s in strata for a in s.agents})
    scores = np.concatenate([s.scores for s in strata])
    thresholds = (np.array([0.0, 1.0, 2.0, 4.0]) * sigma if sigma > 0
                  else np.unique(np.concatenate([[0.0], np.quantile(scores, [0.25, 0.5, 0.75])])))
    iqms, improvement, curves = bootstrap(strata, agents, thresholds, reps=reps, seed=seed)
    return Summaries(profile, profile_hash, split, reps, tuple(st.label for st in strata),
                     {a: int(sum(np.sum(st.agents == a) for st in strata)) for a in agents},
                     iqms, improvement, thresholds, curves, {st.label: float(st.shared_se) for st in strata})


def session_strata(tables, split: str = "test") -> dict[tuple[str, str], list[Stratum]]:
    """Per (profile_hash, profile), one Stratum per budget: each verified session's score on `split` (mean over its
    held-out seeds of baseline − final, analyze's scoring), whether its final changed, and the shared seed term
    estimated from the changed sessions whose every final run on the split ran ok."""
    from harness.analyze import scored_pairs   # here: analyze imports this module
    pairs = scored_pairs(tables)
    pairs = pairs[pairs["split"] == split]
    if pairs.empty:
        return {}
    table = pairs.set_index(["session_id", "seed"])["diff"].unstack("seed")
    info = _session_info(tables.sessions).reindex(table.index)
    failed = set(pairs.loc[pairs["failed"], "session_id"])
    out: dict[tuple[str, str], list[Stratum]] = {}
    for (profile_hash, profile, budget), group in info.groupby(["profile_hash", "profile", "budget"], sort=True):
        rows = table.loc[group.index]
        changed = ~(rows.fillna(0.0) == 0.0).all(axis=1).to_numpy()
        ok = changed & ~rows.index.isin(failed)
        se, df = shared_term(rows[ok].dropna(axis=1, how="any").to_numpy())
        out.setdefault((profile_hash, profile), []).append(
            Stratum(budget, group["agent"].to_numpy(), rows.mean(axis=1).to_numpy(), changed, se, df))
    return out


def _session_info(sessions: pd.DataFrame) -> pd.DataFrame:
    """session_id → agent, profile, profile_hash, budget label."""
    frame = sessions.reindex(columns=["session_id", "agent", "profile", "profile_hash", *BUDGET_COLUMNS])
    frame = frame.drop_duplicates("session_id").set_index("session_id")
    parts = [frame[c].map(lambda v, unit=unit: "" if pd.isna(v) else f"{unit[0]}{v:g}{unit[1]}")
             for c, unit in zip(BUDGET_COLUMNS, (("", " s"), ("", " experiments"), ("$", "")))]
    budget = pd.concat(parts, axis=1).apply(lambda r: ", ".join(v for v in r if v) or "budget n/a", axis=1) \
        if len(frame) else pd.Series(dtype=object)
    return pd.DataFrame({"agent": frame["agent"].astype(object).fillna("?"),
                         "profile": frame["profile"].astype(object).fillna("?"),
                         "profile_hash": frame["profile_hash"].astype(object).fillna("?"), "budget": budget})


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

def markdown(tables, profile_hash: str, noise: dict[str, LoopNoise] | None = None, split: str = "test",
             reps: int = REPS) -> list[str]:
    """One profile's summaries from the tables, thresholds in units of its held-out seed σ (noise: null_model's
    loop_noise(tables) when the caller has it)."""
    noise = (loop_noise(tables) if noise is None else noise).get(profile_hash)
    s = summaries(tables, profile_hash, split, float(noise.seed.value) if noise else math.nan, reps=reps)
    return render(s) if s else []


def render(s: Summaries) -> list[str]:
    """One profile's summaries: IQM per agent, P(row beats column), performance profile."""
    enough = [a for a, n in s.n_sessions.items() if n >= MIN_SESSIONS]
    head = (f"Over sessions ({s.split} split, verified gain in bpb; {s.reps} bootstrap replicates stratified by "
            f"budget: {'; '.join(s.strata)}; shared seed term of the baseline included): agents with at least "
            f"{MIN_SESSIONS} sessions.")
    if not enough:
        return [head, "", f"n/a: no agent has {MIN_SESSIONS} verified sessions (the crossed model's intervals above "
                          "are the ones to read).", ""]
    lines = [head, "", "| agent | sessions | IQM [95% CI] |", "|---|---|---|"]
    lines += [f"| {a} | {s.n_sessions[a]} | {_estimate(s.iqm[a], signed=True)} |" for a in enough]
    lines += ["", "P(a session of the row agent beats one of the column agent) [95% CI], ties count ½:", "",
              "| | " + " | ".join(enough) + " |", "|---|" + "---|" * len(enough)]
    lines += [f"| {x} | " + " | ".join("—" if x == y else _estimate(s.improvement[x, y]) for y in enough) + " |"
              for x in enough]
    lines += ["", "Performance profile: share of sessions whose verified gain exceeds τ [95% CI]:", "",
              "| agent | " + " | ".join(f"τ = {t:+.4f}" for t in s.thresholds) + " |",
              "|---|" + "---|" * len(s.thresholds)]
    lines += [f"| {a} | " + " | ".join(_estimate(Estimate(p, lo, hi)) for p, lo, hi in
                                      zip(*(np.atleast_1d(v) for v in (s.profiles[a].point, s.profiles[a].low,
                                                                       s.profiles[a].high)))) + " |" for a in enough]
    return lines + [""]


def _estimate(e: Estimate, signed: bool = False) -> str:
    if math.isnan(float(e.point)):
        return "n/a"
    fmt = (lambda v: f"{round(float(v), 4) + 0.0:+.4f}") if signed else (lambda v: f"{float(v):.2f}")
    return f"{fmt(e.point)} [{fmt(e.low)}, {fmt(e.high)}]"
