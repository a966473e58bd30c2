"""Statistical methods of the analysis: small pure functions on numpy arrays.

Covers the null model's primitives (expected maximum of normals, expected keeps), the
verified gain of one session (paired t-interval over seeds, exact sign-flip permutation test),
Holm's correction and rank intervals. Functions taking a sample along the last axis also take a stack
of samples (shape (..., n)), so calibration checks over thousands of simulated data sets stay
vectorized. The model of an agent's verified gain over sessions × seeds (every interval, p-value and
pairwise comparison of the leaderboard) is harness/model.py; the σ a keep/revert loop faces and the
null distribution of its claims are harness/null_model.py; power and `arbench plan` are
harness/power.py; IQM, performance profiles and loop quality are harness/summaries.py and
harness/loop_quality.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special, stats

# Above this many paired differences the sign-flip test samples sign patterns instead of listing them.
EXACT_SIGN_FLIP_MAX_N = 16
SIGN_FLIP_RESAMPLES = 10_000
SIGN_FLIP_SEED = 0
# Memory cap (number of floats) for one block of sign patterns or of flipped sums.
_SIGN_FLIP_BLOCK = 4_000_000
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)
# Bit k of byte value v, shape (256, 8).
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float64)


# ---------------------------------------------------------------------------
# Null model of the keep/revert loop
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def expected_max_normal(n: int) -> float:
    """E[max of n iid standard normals] = ∫ x · n φ(x) Φ(x)^(n−1) dx, by adaptive quadrature.

    The density is formed in log space (log n + log φ + (n−1) log Φ) so large n does not underflow;
    outside [−12, 12] the integrand is below 1e-30 for any n up to 1e12.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return 0.0

    def integrand(x: float) -> float:
        log_density = np.log(n) - 0.5 * x * x - _LOG_SQRT_2PI + (n - 1) * special.log_ndtr(x)
        return x * np.exp(log_density)

    # The mode of the max sits near Φ⁻¹(1 − 1/n); giving it to quad keeps the peak from being missed.
    peak = float(stats.norm.isf(1.0 / n))
    value, _ = integrate.quad(integrand, -12.0, 12.0, points=[peak], limit=200, epsabs=1e-12, epsrel=1e-10)
    return float(value)


def null_spurious_gain(n_experiments: np.ndarray | int, sigma: float) -> np.ndarray:
    """Expected best-so-far gain of the keep/revert loop when no change has any effect.

    The baseline and the N experiments are N+1 iid draws N(μ, σ²); the loop keeps a run when it
    beats the best so far, so its final best is the minimum of the N+1 draws and its claimed gain
    (baseline − best) has expectation μ − E[min] = σ · E[max of N+1 standard normals].
    """
    n = np.asarray(n_experiments, dtype=int)
    table = {int(v): expected_max_normal(int(v) + 1) for v in np.unique(n)}
    return sigma * np.vectorize(table.__getitem__, otypes=[float])(n)


def null_expected_keeps(n_experiments: np.ndarray | int) -> np.ndarray:
    """Expected number of keeps among N experiments on pure noise: H(N+1) − 1 = Σ_{k=2}^{N+1} 1/k.

    Draw k (k = 2..N+1, the baseline being draw 1) is a new minimum with probability 1/k for iid
    continuous draws. Computed exactly as ψ(N+2) + γ − 1 (H(m) = ψ(m+1) + γ).
    """
    n = np.asarray(n_experiments, dtype=float)
    return special.digamma(n + 2.0) + np.euler_gamma - 1.0


# ---------------------------------------------------------------------------
# Paired verified gain
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TInterval:
    """Mean of paired differences with its Student-t interval and two-sided p-value (H0: mean 0)."""
    n: int
    mean: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float
    p_value: np.ndarray | float


def paired_t(diffs: np.ndarray, level: float = 0.95) -> TInterval:
    """One-sample t-interval and t-test on paired differences along the last axis.

    mean ± t_{n−1, (1+level)/2} · s / √n, p = 2 P(T_{n−1} > |mean| / (s/√n)). Exact under
    normal differences; with 3–10 seeds it keeps its coverage where a bootstrap interval does not.
    n < 2 gives NaN. s = 0 gives the degenerate interval [mean, mean] and p = 1 if mean = 0 else 0.
    """
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    mean = d.mean(axis=-1) if n else np.full(d.shape[:-1], np.nan)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return TInterval(n, *map(scalar_or_array, (mean, nan, nan, nan)))
    se = d.std(axis=-1, ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2.0, n - 1) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / se
    p = np.where(se > 0, 2.0 * stats.t.sf(t, n - 1), np.where(mean == 0, 1.0, 0.0))
    return TInterval(n, *map(scalar_or_array, (mean, mean - half, mean + half, p)))


def sign_flip_pvalue(diffs: np.ndarray, *, exact_max_n: int = EXACT_SIGN_FLIP_MAX_N,
                     n_resamples: int = SIGN_FLIP_RESAMPLES, seed: int = SIGN_FLIP_SEED) -> np.ndarray | float:
    """Two-sided sign-flip permutation p-value of H0 "differences symmetric about 0", last axis.

    Statistic |Σ s_i d_i| over sign patterns s ∈ {±1}ⁿ. For n ≤ exact_max_n all 2ⁿ patterns are
    listed and p = #{|T_s| ≥ |T_obs|} / 2ⁿ exactly (smallest attainable p is 2/2ⁿ: 0.25 at n=3,
    0.0625 at n=5). Above, n_resamples random patterns drawn with a fixed seed give the valid
    Monte Carlo p = (1 + #{|T_b| ≥ |T_obs|}) / (1 + B). Ties are judged with a relative tolerance
    of 1e-9 so that float rounding cannot split patterns with equal sums. n = 0 gives NaN.
    """
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n == 0:
        return scalar_or_array(np.full(d.shape[:-1], np.nan))
    m = (n + 7) // 8
    flat = np.zeros((int(np.prod(d.shape[:-1])), 8 * m))
    flat[:, :n] = d.reshape(-1, n)
    sums = flat.sum(axis=1)
    threshold = np.abs(sums) - 1e-9 * np.abs(flat).sum(axis=1)
    # A pattern is m bytes of flip bits; table[r, j, v] is the sum of the d's that byte value v
    # flips in byte j of sample r, so a flipped sum costs m look-ups instead of n products.
    table = flat.reshape(-1, m, 8) @ _BYTE_BITS.T
    exact = n <= exact_max_n
    total = 2 ** n if exact else n_resamples
    rng = np.random.default_rng(seed)
    counts = np.zeros(flat.shape[0])
    block = max(1, _SIGN_FLIP_BLOCK // (m * flat.shape[0]))
    for start in range(0, total, block):
        size = min(block, total - start)
        codes = _pattern_bytes(start, size, m) if exact else rng.integers(0, 256, size=(size, m), dtype=np.uint8)
        flipped = table[:, np.arange(m), codes].sum(axis=-1)
        counts += (np.abs(sums[:, None] - 2.0 * flipped) >= threshold[:, None]).sum(axis=1)
    p = counts / total if exact else (counts + 1.0) / (total + 1.0)
    return scalar_or_array(p.reshape(d.shape[:-1]))


def _pattern_bytes(start: int, size: int, m: int) -> np.ndarray:
    """Sign patterns start..start+size-1 (pattern k flips the d's at the set bits of k), as m bytes each."""
    codes = np.arange(start, start + size)
    return np.stack([(codes >> (8 * j)) & 255 for j in range(m)], axis=1)


# ---------------------------------------------------------------------------
# Ranking and power
# ---------------------------------------------------------------------------

def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis (strong family-wise error control, any dependence).

    With p sorted ascending, adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)); rejecting where adjusted p ≤ α
    keeps P(any false rejection) ≤ α. NaN p-values are left out (m counts the others) and stay NaN.
    """
    p = np.asarray(p_values, dtype=float)
    missing = np.isnan(p)
    m = (~missing).sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(missing, np.inf, p), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    factor = m - np.arange(p.shape[-1])
    adjusted = np.minimum(1.0, np.maximum.accumulate(np.where(np.isnan(ranked), 0.0, factor * ranked), axis=-1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(missing, np.nan, out)


def rank_intervals(means: np.ndarray, different: np.ndarray) -> np.ndarray:
    """Rank intervals (rank 1 = highest mean) over the last axis of means, (..., k) → (..., k, 2) ints.

    An agent's interval spans every agent it is not significantly different from: different[..., i, j] is True when
    i and j differ significantly; low_i = 1 + #{j: different and mean_j > mean_i}, high_i = k − #{j: different and
    mean_j < mean_i}. Non-transitive significance (i apart from j and l, j and l apart from m, i not apart from m)
    could still leave two agents that do not differ with disjoint intervals; such an interval is widened to meet the
    other's, so disjoint intervals always mean a significant difference.
    """
    m = np.asarray(means, dtype=float)
    sig = np.asarray(different, dtype=bool)
    above = m[..., None, :] > m[..., :, None]
    low = 1 + (sig & above).sum(axis=-1)
    high = m.shape[-1] - (sig & (m[..., None, :] < m[..., :, None])).sum(axis=-1)
    # i below j in mean, not different, and i's interval wholly below j's: i's low comes up to j's high
    apart = ~sig & above & (low[..., :, None] > high[..., None, :])
    low = np.minimum(low, np.where(apart, high[..., None, :], low[..., :, None]).min(axis=-1))
    return np.stack([low, high], axis=-1)


def scalar_or_array(a: np.ndarray) -> np.ndarray | float:
    """A 0-d result as a plain float, anything else unchanged (the return convention of the vectorized functions
    here, in harness/model.py, harness/null_model.py and harness/summaries.py)."""
    a = np.asarray(a, dtype=float)
    return float(a) if a.ndim == 0 else a
