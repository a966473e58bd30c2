"""The null a keep/revert loop faces: how much gain, and how many keeps, a loop claims when no change has any effect.

A session trains every run at its own seed, so what a loop can mine is the noise between runs of one train.py at one
seed in one session (steps done within the time budget, nondeterminism): the within-session σ. The session's seed
(and node) effect is in all its runs alike and cancels. It is estimated from every run that repeats a train.py at a
seed in a session: the noise agent's loop (noop re-runs the baseline) and every agent's re-runs of an unchanged
train.py, its baseline among them, pooled over those cells with a χ² interval. Runs of one train.py at one seed in
DIFFERENT sessions are not pooled: they also differ by node and load, which a loop does not face. An edit that changes
the trajectory the way a new seed does would face more noise, so the σ of one run across held-out seeds is shown as
the upper bound (trusted verification runs of every train.py that ran ok on every seed, each (train.py, seed) once;
a seed's effect is shared by the versions run on it, see seed_sigma), and is the null's σ only where no session re-ran
anything.

On pure noise the baseline Z₀ and the n runs after it are iid N(μ, σ²); the claimed gain is baseline − best kept =
σ·max(0, Z₀ − min Z_i), with mean σ·E[max of n+1 normals] and SD ≈ 1.08σ at n = 100 (the baseline's own draw
dominates it), so one session's claim says little: the 95th percentile is printed beside the mean. Both carry σ's
uncertainty: the mean uses σ̂/c4 (unbiased), the 95th percentile is predictive (σ̂/σ ~ √(χ²_df/df) mixed in), so a
loop on pure noise exceeds it 5% of the time however few runs estimated σ (tests/harness/test_null_model.py). Does not
cover the verified side (harness/model.py, harness/analyze.py) or loop quality (harness/loop_quality.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, signal, special, stats

from harness import stats as arstats
from harness.stats import scalar_or_array

NOISE_AGENT = "noop"
LEVEL = 0.95
QUANTILE = 0.95
GRID_STEP = 0.01            # σ units: the null gain's distribution is tabulated on this grid
_GRID_LOW, _GRID_HIGH = -9.0, 16.0   # support of one normal and of the max of up to ~1e20 normals, in σ
_CHI_NODES = 400            # equal-probability nodes of √(χ²_df/df) for the predictive quantile
_NORMAL_ABOVE = 64          # sessions beyond which the agent's mean null gain is taken as normal (exact moments)
_TAIL = 1e-13               # probability mass dropped off a tabulated distribution's ends


# ---------------------------------------------------------------------------
# σ from replicates
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SigmaEstimate:
    """A run-to-run SD with its interval. Fields are arrays when estimated over a stack of data sets (calibration)."""
    value: np.ndarray | float   # NaN when there are no degrees of freedom
    low: np.ndarray | float
    high: np.ndarray | float
    df: np.ndarray | float      # degrees of freedom (Satterthwaite's where σ̂² combines mean squares)
    n_runs: int                 # runs that entered
    n_cells: int                # cells of replicates (within), train.py versions (seed)


def pooled_sigma(values: np.ndarray, cells: np.ndarray, level: float = LEVEL) -> SigmaEstimate:
    """The within-session σ: σ̂² = Σ_cells Σ (x − x̄_cell)² / Σ (n_cell − 1) over the last axis (a stack of data sets
    shares `cells`). Cell means are removed, so what is constant in a cell (its session's seed and node) stays out.

    Under normal noise SS/σ² ~ χ²_df, so [√(SS/χ²_{df,(1+level)/2}), √(SS/χ²_{df,(1−level)/2})] covers σ at exactly
    `level`. Runs alone in their cell carry no information and are not counted.
    """
    x = np.asarray(values, dtype=float)
    _, cell = np.unique(np.asarray(cells), return_inverse=True)
    counts = np.bincount(cell)
    order = np.argsort(cell, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    xs = x[..., order]
    means = np.add.reduceat(xs, starts, axis=-1) / counts if x.shape[-1] else xs
    ss = ((xs - np.repeat(means, counts, axis=-1)) ** 2).sum(axis=-1)
    df = int(np.sum(np.maximum(counts - 1, 0)))
    repeated = counts >= 2
    if df == 0:
        nan = scalar_or_array(np.full(np.shape(ss), np.nan))
        return SigmaEstimate(nan, nan, nan, 0.0, 0, 0)
    tail = (1.0 - level) / 2.0
    low, high = np.sqrt(ss / stats.chi2.isf(tail, df)), np.sqrt(ss / stats.chi2.ppf(tail, df))
    return SigmaEstimate(*map(scalar_or_array, (np.sqrt(ss / df), low, high)), float(df),
                         int(counts[repeated].sum()), int(repeated.sum()))


def seed_sigma(table: np.ndarray, level: float = LEVEL) -> SigmaEstimate:
    """The held-out seed σ of one run, from a complete train.py × seed table (last two axes; C versions, K seeds).

    A seed's effect is largely shared by every train.py run on it (same initialisation, same data order: that is why
    verification pairs by seed), so the table's C(K−1) deviations are not independent: with x_ck = a_c + s_k + r_ck,
    σ² = σ_s² + σ_r² = MS_seeds/C + (1 − 1/C) MS_residual (E MS_seeds = σ_r² + Cσ_s², E MS_residual = σ_r²), with
    Satterthwaite's df, and the Graybill–Wang (modified large-sample) interval for a positive sum of mean squares,
    close to exact where a χ² interval on Satterthwaite's df under-covers (0.85 at 20 versions × 3 seeds). One
    version: the plain SD over its seeds, K − 1 df, exact χ² interval.
    """
    t = np.asarray(table, dtype=float)
    n_c, n_k = t.shape[-2], t.shape[-1]
    if n_c == 0 or n_k < 2:
        nan = scalar_or_array(np.full(t.shape[:-2], np.nan))
        return SigmaEstimate(nan, nan, nan, 0.0, n_c * n_k, n_c)
    mean = t.mean(axis=(-2, -1), keepdims=True)
    rows, cols = t.mean(axis=-1, keepdims=True), t.mean(axis=-2, keepdims=True)
    terms = [(((cols - mean) ** 2).sum(axis=(-2, -1)) / (n_k - 1), n_k - 1)]   # MS_seeds / C
    if n_c > 1:
        df_e = (n_c - 1) * (n_k - 1)
        terms.append(((1.0 - 1.0 / n_c) * ((t - rows - cols + mean) ** 2).sum(axis=(-2, -1)) / df_e, df_e))
    tail = (1.0 - level) / 2.0
    var = sum(term for term, _ in terms)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = var ** 2 / sum(term ** 2 / f for term, f in terms)
    low = var - np.sqrt(sum(((1.0 - f / stats.chi2.isf(tail, f)) * term) ** 2 for term, f in terms))
    high = var + np.sqrt(sum(((f / stats.chi2.ppf(tail, f) - 1.0) * term) ** 2 for term, f in terms))
    return SigmaEstimate(*map(scalar_or_array, (np.sqrt(var), np.sqrt(low), np.sqrt(high), df)), n_c * n_k, n_c)


def c4(df: np.ndarray | float) -> np.ndarray | float:
    """E[σ̂]/σ for an SD with df degrees of freedom, √(2/df) Γ((df+1)/2) / Γ(df/2); NaN at df ≤ 0."""
    d = np.asarray(df, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.exp(0.5 * np.log(2.0 / d) + special.gammaln((d + 1) / 2.0) - special.gammaln(d / 2.0))
    return scalar_or_array(np.where(np.isinf(d), 1.0, np.where(d > 0, value, np.nan)))


# ---------------------------------------------------------------------------
# The noise a profile's loops face
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LoopNoise:
    """One profile's loop noise: the within-session σ (what a loop mines) and the held-out seed σ (its upper bound)."""
    profile: str
    profile_hash: str
    within: SigmaEstimate
    seed: SigmaEstimate

    @property
    def bound(self) -> bool:
        """True when no session re-ran anything, so the null falls back on the seed σ, an upper bound."""
        return self.within.df == 0

    @property
    def sigma(self) -> SigmaEstimate:
        return self.seed if self.bound else self.within


def loop_noise(tables, noise_agent: str = NOISE_AGENT, level: float = LEVEL) -> dict[str, LoopNoise]:
    """LoopNoise per profile_hash from the tables (harness/analyze.py Tables)."""
    profiles = _profiles(tables.sessions)
    loop, trusted = _loop_runs(tables.experiments, profiles, noise_agent), _trusted_runs(tables.verifications, profiles)
    out = {}
    keys = pd.concat([loop[["profile_hash", "profile"]], trusted[["profile_hash", "profile"]]]).drop_duplicates()
    for profile_hash, profile in keys.itertuples(index=False):
        runs, seeds = loop[loop["profile_hash"] == profile_hash], trusted[trusted["profile_hash"] == profile_hash]
        out[profile_hash] = LoopNoise(profile, profile_hash,
                                      pooled_sigma(runs["bpb"].to_numpy(float), runs["cell"].to_numpy(), level),
                                      seed_sigma(_complete(seeds.pivot(index="train_py_hash", columns="seed",
                                                                       values="bpb")), level))
    return out


def _profiles(sessions: pd.DataFrame) -> pd.DataFrame:
    """session_id → profile, profile_hash ("?" when unknown), session seed (NaN when unknown)."""
    frame = sessions.reindex(columns=["session_id", "profile", "profile_hash", "seed"]).drop_duplicates("session_id")
    frame = frame.assign(profile=frame["profile"].astype(object).fillna("?"),
                         profile_hash=frame["profile_hash"].astype(object).fillna("?"),
                         session_seed=pd.to_numeric(frame["seed"], errors="coerce"))
    return frame.set_index("session_id")[["profile", "profile_hash", "session_seed"]]


def _loop_runs(experiments: pd.DataFrame, profiles: pd.DataFrame, noise_agent: str) -> pd.DataFrame:
    """Runs of the loops that produced a val_bpb, backed by a real run of the commit's own train.py: bpb (what
    evaluate_bpb returned to the run, else the claim), code (train.py sha256; a noise agent's row without one is its
    baseline, which it only re-runs), seed (the run's, else its session's) and cell (one train.py at one seed in one
    session)."""
    e = experiments.reindex(columns=["session_id", "agent", "claimed_val_bpb", "run_val_bpb", "status", "run_status",
                                     "train_py_sha256", "seed", "run_dirty"])
    bpb = pd.to_numeric(e["run_val_bpb"], errors="coerce").fillna(pd.to_numeric(e["claimed_val_bpb"], errors="coerce"))
    ran = e["run_status"].astype(object).fillna("ok") == "ok"
    ok = (e["status"] != "crash") & ran & (bpb > 0) & np.isfinite(bpb) \
        & (e["run_dirty"].astype(object).fillna(False) != True)  # noqa: E712  (NaN, None and False all pass)
    code = e["train_py_sha256"].astype(object).where(e["train_py_sha256"].notna(),
                                                     np.where(e["agent"] == noise_agent, "baseline", None))
    runs = pd.DataFrame({"session_id": e["session_id"], "bpb": bpb, "code": code,
                         "seed": pd.to_numeric(e["seed"], errors="coerce")})[ok & code.notna()]
    runs = runs.join(profiles, on="session_id")
    runs["seed"] = runs["seed"].fillna(runs["session_seed"])
    runs[["profile", "profile_hash"]] = runs[["profile", "profile_hash"]].fillna("?")
    runs["cell"] = runs.groupby(["session_id", "code", "seed"], dropna=False, sort=False).ngroup()
    return runs


def _trusted_runs(verifications: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Trusted val runs that ran ok in a counted pair, each (profile, train.py, seed) once (the verifier's cache
    repeats them across sessions; a baseline re-run at the same seed for another pair is not a new seed)."""
    v = verifications.reindex(columns=["session_id", "train_py_hash", "seed", "split", "bpb", "status", "pair_status"])
    bpb = pd.to_numeric(v["bpb"], errors="coerce")
    ok = (v["split"] == "val") & (v["status"] == "ok") & (v["pair_status"].astype(object).fillna("ok") == "ok") \
        & np.isfinite(bpb) & v["train_py_hash"].notna()
    runs = v.assign(bpb=bpb)[ok].join(profiles, on="session_id")
    runs[["profile", "profile_hash"]] = runs[["profile", "profile_hash"]].fillna("?")
    return runs.drop_duplicates(["profile_hash", "train_py_hash", "seed"])


def _complete(table: pd.DataFrame) -> np.ndarray:
    """The train.py versions that ran ok on every seed; when none did, the seeds every version ran ok on."""
    rows = table.dropna(axis=0, how="any")
    return (rows if len(rows) else table.dropna(axis=1, how="any")).to_numpy(float)


# ---------------------------------------------------------------------------
# Null distribution of the claimed gain
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NullGain:
    """What an agent's loops claim on pure noise, for its sessions' numbers of runs (arrays over a stack of σ's)."""
    n_sessions: int
    median_draws: float            # runs with a val_bpb after the baseline, median over sessions
    sigma: np.ndarray | float      # the σ used (LoopNoise.sigma)
    bound: bool                    # σ is the seed σ (an upper bound): no session re-ran anything
    mean: np.ndarray | float       # expected claimed gain (mean over sessions), σ̂/c4
    q95: np.ndarray | float        # 95th percentile of the agent's mean claimed gain, σ's uncertainty included
    session_q95: np.ndarray | float   # 95th percentile of one session's claim at median_draws
    upper_mean: np.ndarray | float    # expected claimed gain at the seed σ (edits that redraw the trajectory)
    keeps: float                   # expected keeps per session, H(n+1) − 1


def null_gain(n_draws: np.ndarray, noise: LoopNoise, quantile: float = QUANTILE) -> NullGain:
    """The null for an agent whose sessions made n_draws runs each (after the baseline) at the profile's noise."""
    n = np.asarray(n_draws, dtype=int)
    sigma, upper = noise.sigma, noise.seed
    if n.size == 0:
        nan = math.nan
        return NullGain(0, nan, sigma.value, noise.bound, nan, nan, nan, nan, nan)
    median = int(np.median(n))
    return NullGain(
        n_sessions=int(n.size), median_draws=float(np.median(n)), sigma=sigma.value, bound=noise.bound,
        mean=scalar_or_array(mean_factor(n) * np.asarray(sigma.value) / c4(sigma.df)),
        q95=scalar_or_array(_quantile(tuple(sorted(n.tolist())), sigma.df, quantile) * np.asarray(sigma.value)),
        session_q95=scalar_or_array(_quantile((median,), sigma.df, quantile) * np.asarray(sigma.value)),
        upper_mean=scalar_or_array(mean_factor(n) * np.asarray(upper.value) / c4(upper.df)),
        keeps=float(np.mean(arstats.null_expected_keeps(n))))


def _quantile(n_draws: tuple[int, ...], df: np.ndarray | float, quantile: float) -> np.ndarray:
    """quantile_factor for one df or for a stack of them (Satterthwaite's df of a seed σ: rounded to 0.1)."""
    d = np.round(np.asarray(df, dtype=float), 1)
    values, where = np.unique(d, return_inverse=True)
    return np.array([quantile_factor(n_draws, float(v), quantile) for v in values])[where].reshape(d.shape)


def mean_factor(n_draws: np.ndarray) -> float:
    """E[mean claimed gain]/σ over sessions of n_draws runs each: mean of E[max of n+1 normals]."""
    return float(np.mean(arstats.null_spurious_gain(np.asarray(n_draws, dtype=int), 1.0)))


@functools.lru_cache(maxsize=1024)
def quantile_factor(n_draws: tuple[int, ...], df: float, quantile: float = QUANTILE) -> float:
    """q/σ̂ such that P(mean claimed gain > q) = 1 − quantile for sessions of n_draws runs when σ is estimated with
    df degrees of freedom (inf or 0: σ taken as known): P(Ḡ/σ > (q/σ̂)·w) = 1 − quantile, w = σ̂/σ ~ √(χ²_df/df)."""
    values, cdf = _mean_distribution(n_draws)
    known = not 0 < df < math.inf
    w = np.ones(1) if known else np.sqrt(stats.chi2.ppf((np.arange(_CHI_NODES) + 0.5) / _CHI_NODES, df) / df)

    def excess(q: float) -> float:
        return float(np.mean(1.0 - np.interp(q * w, values, cdf, left=cdf[0], right=1.0))) - (1.0 - quantile)

    if excess(0.0) <= 0:   # more mass at 0 (the baseline stays best) than 1 − quantile: nothing above 0 is needed
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 2.0
    return float(optimize.brentq(excess, 0.0, high, xtol=1e-9))


def _mean_distribution(n_draws: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Grid and CDF of the mean over sessions of G/σ = max(0, Z₀ − min Z_i): the sessions' distributions convolved
    (exact on the grid) up to _NORMAL_ABOVE sessions, a normal with their exact mean and variance beyond."""
    pmfs = [_gain_pmf(n) for n in n_draws]
    grid = np.arange(max(p.size for p in pmfs)) * GRID_STEP
    if len(pmfs) > _NORMAL_ABOVE:
        means = [float(p @ grid[:p.size]) for p in pmfs]
        variances = [float(p @ grid[:p.size] ** 2) - m * m for p, m in zip(pmfs, means)]
        loc, scale = np.mean(means), math.sqrt(sum(variances)) / len(pmfs)
        values = loc + scale * np.linspace(-9.0, 9.0, 4001)
        return values, stats.norm.cdf(values, loc, scale)
    total = functools.reduce(lambda a, b: _trim(signal.fftconvolve(a, b)), pmfs)
    # Mass k stands for (k ∓ ½) steps, so the CDF through mass k is the CDF at k + ½ steps.
    return (np.arange(total.size) + 0.5) * GRID_STEP / len(pmfs), np.minimum(np.cumsum(total), 1.0)


@functools.lru_cache(maxsize=4096)
def _gain_pmf(n: int) -> np.ndarray:
    """G/σ = max(0, Z₀ + X), X the max of n standard normals, as masses on the grid k·GRID_STEP (k ≥ 0): the densities
    of Z₀ and X sampled on one grid and convolved; what falls at or below half a step is the mass at 0 (the baseline
    stays best, probability 1/(n+1))."""
    if n <= 0:
        return np.ones(1)
    h = GRID_STEP
    z = np.arange(round(_GRID_LOW / h), round(-_GRID_LOW / h) + 1) * h
    x = np.arange(round(_GRID_LOW / h), round(_GRID_HIGH / h) + 1) * h
    f_x = np.exp(np.log(n) + stats.norm.logpdf(x) + (n - 1) * special.log_ndtr(x))
    f_d = np.clip(signal.fftconvolve(stats.norm.pdf(z), f_x), 0.0, None) * h * h   # masses at z[0] + x[0] + k h
    start = round(-(z[0] + x[0]) / h)                                               # index of D = 0
    pmf = np.concatenate([[f_d[:start + 1].sum()], f_d[start + 1:]])
    return _trim(pmf / pmf.sum())


def _trim(pmf: np.ndarray) -> np.ndarray:
    """The pmf without its upper tail beyond _TAIL (keeps convolutions short)."""
    tail = np.cumsum(pmf[::-1])[::-1]
    return pmf[:max(1, int(np.searchsorted(-tail, -_TAIL)))]


# ---------------------------------------------------------------------------
# Markdown (harness/analyze.py puts these lines in each profile's leaderboard section)
# ---------------------------------------------------------------------------

NULL_LEGEND = (
    "*null gain* [95th pct] / *keeps (null)*: what a keep/revert loop claims when no change has any effect, "
    "σ·E[max of n+1 normals] and H(n+1) − 1 for n runs with a val_bpb after the baseline row, σ the loop noise "
    "above, mean over the agent's sessions; a loop on pure noise claims more than the 95th percentile 5% of the time "
    "(for the agent's mean over its sessions, σ's uncertainty included)")


def noise_line(noise: LoopNoise | None) -> str:
    """One profile's loop noise: the within-session σ with its interval, the seed σ (its upper bound) with its."""
    if noise is None:
        return "Loop noise: n/a (no loop run and no verified run in this profile)."
    w, s = noise.within, noise.seed
    cells = f"{w.n_cells} cell{'' if w.n_cells == 1 else 's'}"
    within = (f"σ within a session = {_num(w.value)} [{_num(w.low)}, {_num(w.high)}] ({float(w.df):.3g} df from "
              f"{w.n_runs} re-runs of one train.py at one seed in {cells})" if w.df
              else "σ within a session: n/a (no session re-ran a train.py)")
    seed = (f"seed σ (upper bound) = {_num(s.value)} [{_num(s.low)}, {_num(s.high)}] ({float(s.df):.3g} df, trusted "
            f"runs of {s.n_cells} train.py on held-out seeds)" if s.df
            else "seed σ: n/a (fewer than two held-out seeds ran ok)")
    used = "the seed σ, an upper bound" if noise.bound else "the within-session σ"
    return f"Loop noise: {within}; {seed}; 95% intervals. The null model uses {used}."


def spread_line(gains: dict[str, NullGain]) -> str:
    """What the agents' means hide: one session's 95th percentile at the median runs, and the null gain at the seed
    σ (if every edit redrew the training trajectory as a new seed does); "" without a null."""
    known = {a: g for a, g in gains.items() if g.n_sessions and not math.isnan(float(g.mean))}
    if not known:
        return ""
    one = ", ".join(f"{a} {_num(g.session_q95)} ({g.median_draws:.0f} run{'' if g.median_draws == 1 else 's'})"
                    for a, g in known.items())
    upper = ", ".join(f"{a} {_num(g.upper_mean)}" for a, g in known.items())
    return (f"Null for one session (its claim spreads more: SD ≈ 1.08σ at 100 runs): 95th percentile {one}. "
            f"Null gain at the seed σ, were every edit to redraw the trajectory as a new seed does: {upper}.")


def _num(x: np.ndarray | float) -> str:
    x = float(x)
    return "n/a" if math.isnan(x) else f"{x:.4f}"
