"""The one model of the verified differences: every interval, p-value, pairwise comparison and rank interval.

Data of one profile and split: per session s and held-out seed k the verified difference d = baseline − final bpb
(positive = better), the final scored as the untrained model where its run failed. The model:

    d_sk = δ_s + z_s · (β_{a,k} + ε_sk)

δ_s is the session's true gain, drawn within its agent a (agent fixed, session random: E δ = G_a, Var δ = τ_a²);
β_{a,k} = b_k + c_{a,k} is the seed term: b_k the baseline's own deviation at seed k, shared by every session of every
agent, c_{a,k} the agent × seed interaction; ε_sk is the rest (the final's run noise, σ_e²). z_s = 0 for a session
whose final train.py is the baseline (noop, and any session that kept nothing): its d is exactly 0 on every seed, with
no noise at all, since baseline and final are one run. Welch tests on session means assume the shared b_k cancels
between agents; it does not when agents keep nothing at different rates (noop: never), which is why the seed term is
modelled, not assumed away. Each distinct training counts once: sessions whose finals are the same train.py are one
unit with a weight (their sessions), so a cached run is one observation however many sessions share it.

Estimator (moments, REML's answer on balanced tables; incomplete tables are used whole, missing cells left out): for a
contrast C = Σ c_a M_a of agent means M_a (one agent against the baseline: c = e_a; two agents: e_a − e_b),

    Var C = Σ c_a² τ_a²/S_a + W/K + (the ε part),

estimated by Σ c_a² s_a²/S_a + Q/K − σ̂_e² Σ c_a² κ_a: s_a² is the variance of agent a's session means (S_a − 1 df), Q
the variance over seeds of the per-seed contrast C_k = Σ c_a P_{a,k} (P: agent a's mean at seed k; K − 1 df: it holds
b, c and ε in exactly the mix this contrast sees), σ̂_e² the residual of the agents' changed-units × seeds tables
(least squares, missing cells allowed), κ_a the share of ε that s_a² double counts. A small O(1/S) correction for the
seed term inside s_a² (sessions that keep nothing part of the time) is left out, which errs on the wide side.

Node: a pair's two runs train back to back on one slot, so a node's speed cancels in d to first order; what remains
is a difference that depends on the node (a final whose gain grows with throughput), which an agent whose pairs
happened to land on a fast node would be credited with. Where the changed units' pairs ran on two nodes or more
and agents, seeds and nodes identify additive node effects on d (node_adjusted: least squares jointly with seed effects
and each unit's effect, or each agent's where nodes do not vary within units; centred over nodes, i.e. gains on the
average node), they are subtracted before the fit; otherwise d
is left alone. The estimated effects' own error is not propagated (calibration: tests/harness/test_calibration.py).

Inference: Satterthwaite's t on that combination rejects a true null up to 7% at 3 seeds, because the seed term comes
from K − 1 = 2 df and is underestimated exactly when the test is too bold. Intervals and p-values therefore come
from generalized pivotal quantities (Weerahandi 1993; Krishnamoorthy & Mathew 2009): each mean square is replaced by
its pivot MS/X, X ~ χ²_df/df, each variance component truncated at 0, and p = E[erfc(|C − c₀| / √(2 V_R))] over
PIVOT_DRAWS fixed draws (common random numbers, so a result never changes between runs). The interval is the set of
c₀ with p > α, and P(C > 0) = E[Φ(C/√V_R)] is the "probability that A beats B". Calibration:
tests/harness/test_stats_calibration.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from harness.stats import holm, rank_intervals, scalar_or_array

PIVOT_DRAWS = 1000          # Latin-hypercube draws: rejection rates agree with 20,000 draws to 1e-4
PIVOT_SEED = 20240612
_BLOCK = 2_000_000          # floats per block of (data sets × draws) while averaging over the draws
_NEWTON_ROUNDS = 14         # safeguarded Newton steps of a critical value (≈6 needed, the rest bisect)
_BACKFIT_ROUNDS = 8         # rounds of row/column means: the least-squares additive fit of an incomplete table
_SLOTS = 4                  # pivots per contrast: up to two agents, the seeds, the residual


@dataclass(frozen=True)
class Fit:
    """The model's sufficient statistics, per agent (last axis) with any leading axes of a stack of data sets."""
    sessions: np.ndarray       # S_a: sessions with a verified difference
    mean: np.ndarray           # M_a: mean over sessions of the session's mean difference (the agent's gain)
    session_var: np.ndarray    # s_a²: variance of the session means (ddof 1), noise included
    changed: np.ndarray        # m_a: share of sessions whose final is not the baseline
    kappa: np.ndarray          # κ_a: coefficient of σ_e² that s_a²/S_a holds beyond τ_a²/S_a
    lam: np.ndarray            # λ_a: coefficient of σ_e² in E[Q] per unit c_a²
    by_seed: np.ndarray        # P_{a,k}: mean difference over the agent's sessions at seed k (NaN: none), (..., A, K)
    sigma_e2: np.ndarray       # pooled residual variance of one difference (0 where there are no residual df)
    df_e: np.ndarray           # its degrees of freedom


@dataclass(frozen=True)
class ContrastResult:
    """Σ c_a G_a with its generalized-pivot interval and p-value (H0: 0), and P(Σ c_a G_a > 0)."""
    estimate: np.ndarray | float
    se: np.ndarray | float          # the moment estimate of its SD
    low: np.ndarray | float
    high: np.ndarray | float
    p_value: np.ndarray | float
    p_positive: np.ndarray | float
    n_seeds: np.ndarray | float     # seeds the per-seed contrast used


def fit(d: np.ndarray, changed: np.ndarray, agent: np.ndarray, weight: np.ndarray | None = None) -> Fit:
    """The model's statistics from units × seeds differences.

    d: (..., U, K) differences, NaN where a unit has no verified pair at a seed; a unit is one distinct training (an
    agent's final train.py), `weight` (U,) the sessions that share it (1 by default). changed: (..., U), False where
    the unit's final is the baseline (its d must be 0 where observed). agent: (U,) agent index 0..A−1.
    """
    d = np.asarray(d, dtype=float)
    z = np.broadcast_to(np.asarray(changed, dtype=bool), d.shape[:-1])
    agent = np.asarray(agent, dtype=int)
    w = np.ones(agent.shape) if weight is None else np.asarray(weight, dtype=float)
    onehot = (agent[:, None] == np.arange(agent.max() + 1 if agent.size else 0)).astype(float)
    obs = ~np.isnan(d)
    d0 = np.where(obs, d, 0.0)
    k_u = obs.sum(axis=-1)
    unit_mean = d0.sum(axis=-1) / np.maximum(k_u, 1)
    wu = w * (k_u > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sessions = wu @ onehot
        mean = (wu * unit_mean) @ onehot / sessions
        dev = unit_mean - mean[..., agent]
        session_var = (wu * dev ** 2) @ onehot / (sessions - 1)
        changed_share = (wu * z) @ onehot / sessions
        per_seed = np.where(z & (k_u > 0), 1.0 / np.maximum(k_u, 1), 0.0)
        kappa = ((wu * per_seed) @ onehot - (wu ** 2 * per_seed) @ onehot / sessions) / ((sessions - 1) * sessions)
        lam = (wu ** 2 * z) @ onehot / sessions ** 2
        by_seed = _by_agent(w[:, None] * d0, onehot) / _by_agent(w[:, None] * obs, onehot)
    sigma_e2, df_e = _residual(d, obs & z[..., None], onehot)
    return Fit(sessions, mean, session_var, changed_share, kappa, lam, by_seed, sigma_e2, df_e)


def node_adjusted(d: np.ndarray, changed: np.ndarray, agent: np.ndarray, node: np.ndarray) -> np.ndarray:
    """d (U, K) less additive node effects on the changed units' cells, where the data identify them (see the module
    docstring); node (U, K): each cell's node code, −1 unknown (then, or below two nodes, d comes back as it is)."""
    cells = ~np.isnan(d) & np.asarray(changed, dtype=bool)[:, None]
    unit, seed = np.nonzero(cells)
    codes = node[cells]
    nodes = np.unique(codes)
    if nodes.size < 2 or nodes[0] < 0:
        return d
    # seed and node effects (all levels but the first) jointly with each unit's own effect when nodes vary within
    # units (its session's gain then stays out of the node effects), else each agent's; the unit or agent effects are
    # taken out by centring within them (Frisch–Waugh), so the design stays seeds + nodes wide at any size
    covariates = np.hstack([(f[:, None] == np.unique(f)[None, 1:]).astype(float) for f in (seed, codes)])
    for group in (unit, np.asarray(agent)[unit]):
        levels, index = np.unique(group, return_inverse=True)
        x, y = _centred(covariates, index, levels.size), _centred(d[cells][:, None], index, levels.size)
        if x.shape[0] > x.shape[1] + levels.size and np.linalg.matrix_rank(x) == x.shape[1]:
            break
    else:
        return d
    coef = np.linalg.lstsq(x, y[:, 0], rcond=None)[0]
    effect = np.concatenate([[0.0], coef[-(nodes.size - 1):]])
    out = d.copy()
    out[cells] -= (effect - effect.mean())[np.searchsorted(nodes, codes)]
    return out


def _centred(x: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Each column of x less its mean within each group (rows of group index 0..n_groups − 1)."""
    sums = np.zeros((n_groups, x.shape[1]))
    np.add.at(sums, group, x)
    return x - (sums / np.bincount(group, minlength=n_groups)[:, None])[group]


def _residual(d: np.ndarray, cells: np.ndarray, onehot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """σ̂_e² and its df from each agent's changed-units × seeds table, additive fit by backfitting (one round is the
    exact least-squares fit of a complete table; more rounds converge to it when cells are missing), pooled over
    agents."""
    x = np.where(cells, d, 0.0)
    n_cells = cells.sum(axis=-1)
    counts = _by_agent(cells.astype(float), onehot)
    rows = (n_cells > 0)[..., None] & ~cells
    rounds = _BACKFIT_ROUNDS if np.any(rows) else 1
    col_u = np.zeros(d.shape)
    for _ in range(rounds):
        row = ((x - col_u) * cells).sum(axis=-1) / np.maximum(n_cells, 1)
        col = _by_agent((x - row[..., None]) * cells, onehot) / np.maximum(counts, 1)
        col_u = onehot @ col
    resid = (x - row[..., None] - col_u) * cells
    units = (n_cells > 0).astype(float) @ onehot
    seeds = (counts > 0).sum(axis=-1)
    n_obs = n_cells @ onehot
    df = np.where(units >= 2, np.maximum(n_obs - units - seeds + 1, 0), 0.0).sum(axis=-1)
    ss = (resid ** 2).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(df > 0, ss / df, 0.0), df


def _by_agent(x: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Sum over each agent's units: (..., U, K) → (..., A, K)."""
    return np.swapaxes(np.swapaxes(x, -1, -2) @ onehot, -1, -2)


# ---------------------------------------------------------------------------
# Contrasts by generalized pivots
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pivot:
    """What a contrast's generalized pivot needs: its estimate, the mean squares with their df and coefficients."""
    estimate: np.ndarray       # (...)
    ms: np.ndarray             # (..., n) session variances s_a² of the agents in the contrast
    ms_df: np.ndarray          # (..., n)
    ms_coef: np.ndarray        # (..., n) c_a²/S_a
    kappa: np.ndarray          # (..., n) c_a² κ_a
    mix: np.ndarray            # (..., n) c_a² floor of τ_a²/S_a from the share that keeps nothing (see pivot)
    q: np.ndarray              # (...) variance over seeds of the per-seed contrast
    q_df: np.ndarray
    q_coef: np.ndarray         # 1/K
    lam: np.ndarray            # Σ c_a² λ_a
    sigma_e2: np.ndarray
    df_e: np.ndarray

    def moment_variance(self) -> np.ndarray:
        sigma_e2 = np.asarray(self.sigma_e2)[..., None]   # one per data set, against each agent's κ
        session = np.maximum(self.ms_coef * self.ms - sigma_e2 * self.kappa, self.mix).sum(axis=-1)
        return np.maximum(session + self.q_coef * self.q, 0.0)


def pivot(f: Fit, c: np.ndarray) -> Pivot:
    """The pivot of C = Σ c_a G_a; NaN where an agent in it has fewer than two sessions or fewer than two seeds are
    shared by its agents."""
    c = np.asarray(c, dtype=float)
    used = np.flatnonzero(c)
    if used.size > _SLOTS - 2:
        raise ValueError(f"a contrast of at most {_SLOTS - 2} agents, got {used.size}")
    cu = c[used]
    s = f.sessions[..., used]
    estimate = (f.mean[..., used] * cu).sum(axis=-1)
    per_seed = (f.by_seed[..., used, :] * cu[:, None]).sum(axis=-2)
    valid = ~np.isnan(per_seed)
    n_seeds = valid.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        centred = np.where(valid, per_seed - np.nansum(per_seed, axis=-1, keepdims=True) / n_seeds[..., None], 0.0)
        q = (centred ** 2).sum(axis=-1) / (n_seeds - 1)
        bad = (s < 2).any(axis=-1) | (n_seeds < 2)
    nan = np.where(bad, np.nan, 1.0)
    return Pivot(estimate=estimate * nan, ms=f.session_var[..., used], ms_df=s - 1.0, ms_coef=cu ** 2 / s,
                 kappa=cu ** 2 * f.kappa[..., used], mix=cu ** 2 * _keep_nothing_floor(f, used), q=q * nan,
                 q_df=n_seeds - 1.0, q_coef=1.0 / np.maximum(n_seeds, 1), lam=(cu ** 2 * f.lam[..., used]).sum(axis=-1),
                 sigma_e2=f.sigma_e2, df_e=f.df_e)


def _keep_nothing_floor(f: Fit, used: np.ndarray) -> np.ndarray:
    """Var(δ)/S_a ≥ D̄₁² m̃(1 − m̃)/S_a: the part of the session variance that comes from keeping nothing (δ = 0) a
    share 1 − m of the time, D̄₁ = M_a/m_a the changed sessions' mean. A few sessions that all changed train.py show
    none of it, so m is taken as m̃ = (n₁ + ½)/(S + 1) (Jeffreys), never 0 or 1."""
    s, m = f.sessions[..., used], f.changed[..., used]
    with np.errstate(divide="ignore", invalid="ignore"):
        changed_mean = np.where(m > 0, f.mean[..., used] / m, 0.0)
        shrunk = (m * s + 0.5) / (s + 1.0)
        return np.nan_to_num(changed_mean ** 2 * shrunk * (1.0 - shrunk) / s)


def contrast(f: Fit, c: np.ndarray, level: float = 0.95) -> ContrastResult:
    """Estimate, generalized-pivot interval, p-value of H0 Σ c_a G_a = 0 and P(Σ c_a G_a > 0)."""
    pv = pivot(f, c)
    draws = pivot_variances(pv)
    half = critical_value(draws, 1.0 - level)
    est = pv.estimate
    se = np.where(np.isnan(est), np.nan, np.sqrt(pv.moment_variance()))
    return ContrastResult(*map(scalar_or_array, (est, se, est - half, est + half, p_value(pv, draws),
                                                 p_positive(pv, draws), pv.q_df + 1)))


def p_value(pv: Pivot, draws: np.ndarray | None = None, null: np.ndarray | float = 0.0) -> np.ndarray:
    """Generalized p-value of H0 Σ c_a G_a = null: E[erfc(|C − null| / √(2 V_R))] over the fixed draws."""
    draws = pivot_variances(pv) if draws is None else draws
    return _mean_over_draws(_tail, draws, np.abs(pv.estimate - null))


def p_positive(pv: Pivot, draws: np.ndarray | None = None) -> np.ndarray:
    """P(Σ c_a G_a > 0) from the pivot: E[Φ(C/√V_R)] (for c = e_a − e_b: the probability that A beats B)."""
    draws = pivot_variances(pv) if draws is None else draws
    return _mean_over_draws(_positive, draws, pv.estimate)


def pivot_variances(pv: Pivot) -> np.ndarray:
    """V_R: the contrast's variance with every mean square replaced by its pivot, shape (..., PIVOT_DRAWS).

    V_R = Σ c_a² max(0, s_a²/(S_a X_a) − σ_e,R² κ_a) + max(Q/X_Q, σ_e,R² λ)/K, σ_e,R² = σ̂_e²/X_e: the session
    components τ_a²/S_a and the per-seed variance of the contrast are each kept ≥ what the residual alone implies."""
    x_e = _chi_over_df(_SLOTS - 1, pv.df_e)
    sigma_e2 = np.where(pv.df_e[..., None] > 0, pv.sigma_e2[..., None] / x_e, 0.0)
    total = np.maximum(pv.q[..., None] / _chi_over_df(_SLOTS - 2, pv.q_df), sigma_e2 * pv.lam[..., None])
    total = total * pv.q_coef[..., None]
    for j in range(pv.ms.shape[-1]):
        x = _chi_over_df(j, pv.ms_df[..., j])
        session = pv.ms_coef[..., j, None] * pv.ms[..., j, None] / x - sigma_e2 * pv.kappa[..., j, None]
        total = total + np.maximum(session, pv.mix[..., j, None])
    return total


def critical_value(draws: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """h with E[erfc(h / √(2 V_R))] = alpha (the interval's half-width) per data set: Newton's method on log p against
    log h, kept inside a bisection bracket of e^±12 times the median pivot SD; to a relative 1e-10."""
    scale = np.sqrt(np.median(draws, axis=-1))
    scale = np.where(scale > 0, scale, np.sqrt(np.max(draws, axis=-1)))
    low, high = np.full(scale.shape, -12.0), np.full(scale.shape, 12.0)
    t = np.full(scale.shape, np.log(special.ndtri(1.0 - np.asarray(alpha) / 2.0)))
    target = np.log(alpha)
    for _ in range(_NEWTON_ROUNDS):
        h = np.exp(t) * scale
        p = _mean_over_draws(_tail, draws, h)
        slope = -_mean_over_draws(_density, draws, h) * h   # d p / d log h
        above = p > alpha
        low, high = np.where(above, t, low), np.where(above, high, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            miss = np.log(p) - target
            step = t - miss * p / slope
        done = np.abs(miss) < 1e-10
        if np.all(done | np.isnan(miss)):
            break
        newton = np.isfinite(step) & (step > low) & (step < high)
        t = np.where(done, t, np.where(newton, step, 0.5 * (low + high)))
    return np.where(scale > 0, np.exp(t) * scale, scale)


def _density(v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """−d/dh of _tail: the density of |N(0, v)| at h per draw."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(v > 0, np.sqrt(2.0 / (np.pi * v)) * np.exp(-h[..., None] ** 2 / (2.0 * v)), 0.0)


def _tail(v: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """P(|N(0, v)| ≥ dist) per draw, with v = 0 giving 1 at dist 0 and 0 beyond."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = special.erfc(dist[..., None] / np.sqrt(2.0 * v))
    return np.where(np.isnan(v), np.nan, np.where(v > 0, t, (dist[..., None] == 0).astype(float)))


def _positive(v: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """P(C − W > 0) per draw for W ~ N(0, v): the fiducial probability that the contrast is positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = special.ndtr(estimate[..., None] / np.sqrt(v))
    return np.where(np.isnan(v), np.nan, np.where(v > 0, t, 0.5 + 0.5 * np.sign(estimate[..., None])))


def _mean_over_draws(func, draws: np.ndarray, x: np.ndarray) -> np.ndarray:
    """func(draws, x) averaged over the draws (last axis), x one value per data set; in blocks of data sets so that
    memory stays bounded. NaN draws give NaN."""
    lead = draws.shape[:-1]
    flat = draws.reshape(-1, draws.shape[-1])
    ext = np.broadcast_to(np.asarray(x, dtype=float), lead).reshape(-1)
    rows = max(1, _BLOCK // draws.shape[-1])
    out = np.empty(flat.shape[0])
    for i in range(0, flat.shape[0], rows):
        out[i:i + rows] = func(flat[i:i + rows], ext[i:i + rows]).mean(axis=-1)
    return out.reshape(lead)


@functools.lru_cache(maxsize=512)
def _uniforms() -> np.ndarray:
    """Fixed uniforms, one row of PIVOT_DRAWS per pivot slot: a Latin hypercube (each row the midpoints of PIVOT_DRAWS
    equal-probability strata in its own fixed random order), so that every pivot's tails are represented evenly."""
    rng = np.random.default_rng(PIVOT_SEED)
    return np.stack([(rng.permutation(PIVOT_DRAWS) + 0.5) / PIVOT_DRAWS for _ in range(_SLOTS)])


@functools.lru_cache(maxsize=4096)
def _chi_row(slot: int, df: float) -> np.ndarray:
    return stats.chi2.ppf(_uniforms()[slot], df) / df


def _chi_over_df(slot: int, df: np.ndarray) -> np.ndarray:
    """χ²_df/df at the slot's fixed uniforms, shape (..., PIVOT_DRAWS); df may differ between data sets."""
    df = np.asarray(df, dtype=float)
    values, index = np.unique(df, return_inverse=True)
    table = np.stack([_chi_row(slot, float(v)) if v > 0 else np.full(PIVOT_DRAWS, np.nan) for v in values])
    return table[index.reshape(df.shape)]


# ---------------------------------------------------------------------------
# The leaderboard's family of tests: gains against the baseline, pairs, rank intervals
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """Every agent against the baseline and every pair of agents, from one fit (leading axes: data sets)."""
    p_gain: np.ndarray          # (..., A) raw p of G_a = 0; NaN for an agent whose every session is the baseline
    adjusted_gain: np.ndarray   # (..., A) Holm-adjusted within the family
    adjusted_extra: np.ndarray  # (..., E) the extra tests' adjusted p (e.g. the other split's gains)
    p_pair: np.ndarray          # (..., A, A) raw p of G_a = G_b (NaN on the diagonal and with a baseline-only agent)
    beats: np.ndarray           # (..., A, A) P(G_row > G_col)
    different: np.ndarray       # (..., A, A) significant after Holm
    ranks: np.ndarray           # (..., A, 2) rank intervals by mean gain (rank 1 = best)
    rejected: np.ndarray        # (...) tests of the family that reject
    tests: np.ndarray           # (...) tests in the family


def compare(f: Fit, alpha: float = 0.05, extra_p: np.ndarray | None = None, beats: bool = True) -> Comparison:
    """Holm over one family: each agent against the baseline, each pair of agents, and `extra_p` (..., E) (the other
    split's gains). An agent whose every session is the baseline (noop; an agent that kept nothing anywhere) has gain 0
    by construction and is no test; a pair with it is the other agent's own test against the baseline, so a rank
    interval apart from the baseline always goes with a significant adjusted p-value of that agent. beats=False
    leaves P(A beats B) NaN (calibration runs, which only need the tests)."""
    with_beats = beats
    n = f.mean.shape[-1]
    eye = np.eye(n)
    baseline_only = (f.changed == 0) & (f.mean == 0)
    gain_pv = [pivot(f, eye[i]) for i in range(n)]
    gain_draws = [pivot_variances(pv) for pv in gain_pv]
    p_gain = np.stack([p_value(pv, dr) for pv, dr in zip(gain_pv, gain_draws)], axis=-1)
    p_gain = np.where(baseline_only, np.nan, p_gain)
    positive = np.stack([p_positive(pv, dr) if with_beats else np.full(pv.estimate.shape, np.nan)
                         for pv, dr in zip(gain_pv, gain_draws)], axis=-1)
    lead = f.mean.shape[:-1]
    p_pair = np.full(lead + (n, n), np.nan)
    beats = np.full(lead + (n, n), np.nan)
    upper = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for i, j in upper:
        pv = pivot(f, eye[i] - eye[j])
        draws = pivot_variances(pv)
        p_pair[..., i, j] = p_pair[..., j, i] = p_value(pv, draws)
        if with_beats:
            beats[..., i, j] = p_positive(pv, draws)
            beats[..., j, i] = 1.0 - beats[..., i, j]
    either = baseline_only[..., :, None] | baseline_only[..., None, :]
    # a pair with a baseline-only agent is the other agent's gain: P(beats) and significance come from that test
    beats = np.where(baseline_only[..., None, :] & ~baseline_only[..., :, None], positive[..., :, None], beats)
    beats = np.where(baseline_only[..., :, None] & ~baseline_only[..., None, :], 1.0 - positive[..., None, :], beats)
    p_pair = np.where(either, np.nan, p_pair)
    extra = np.zeros(lead + (0,)) if extra_p is None else np.broadcast_to(extra_p, lead + np.shape(extra_p)[-1:])
    pair_p = np.stack([p_pair[..., i, j] for i, j in upper], axis=-1) if upper else np.zeros(lead + (0,))
    family = np.concatenate([extra, p_gain, pair_p], axis=-1)
    adjusted = holm(family)
    n_extra = extra.shape[-1]
    adjusted_gain = adjusted[..., n_extra:n_extra + n]
    different = np.zeros(lead + (n, n), dtype=bool)
    for k, (i, j) in enumerate(upper):
        sig = adjusted[..., n_extra + n + k] <= alpha
        sig = sig | (baseline_only[..., j] & (adjusted_gain[..., i] <= alpha)) | \
            (baseline_only[..., i] & (adjusted_gain[..., j] <= alpha))
        different[..., i, j] = different[..., j, i] = sig
    ranks = rank_intervals(np.where(baseline_only, 0.0, f.mean), different)
    tests = (~np.isnan(family)).sum(axis=-1)
    return Comparison(p_gain, adjusted_gain, adjusted[..., :n_extra], p_pair, beats, different, ranks,
                      (adjusted <= alpha).sum(axis=-1), tests)
