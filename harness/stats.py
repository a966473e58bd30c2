"""Statistical methods of the analysis: small pure functions on numpy arrays.

Covers the noise floor (variance components), the null model of the keep/revert loop, the
verified gain of one session (paired t-interval over seeds, exact sign-flip permutation test) and
of an agent over sessions × seeds that share the baseline's runs (crossed random effects), and
the ranking of agents (Welch tests, Holm's correction, rank intervals) with its power (repeats
needed, smallest detectable difference). Functions taking a sample along the last axis also take
a stack of samples (shape (..., n)), so calibration checks over thousands of simulated data sets
stay vectorized. Does not cover IQM / stratified bootstrap, P(A beats B), performance profiles or
loop-quality metrics (later issues).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, special, stats

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
# Noise floor
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VarianceComponents:
    """σ of a single run split into a between-session part and a within-session (seed) part."""
    n_obs: int
    n_groups: int
    sigma_total: float    # sample SD of all values (ddof=1)
    sigma_between: float  # NaN when fewer than two groups
    sigma_within: float   # NaN when no group has two values


def variance_components(values: np.ndarray, groups: np.ndarray) -> VarianceComponents:
    """One-way random-effects decomposition, method of moments (ANOVA), unbalanced groups allowed.

    Model x_gi = μ + b_g + e_gi with b_g ~ (0, σ_b²) the session effect and e_gi ~ (0, σ_w²) the
    seed effect. σ_w² = MSW = Σ(x_gi − x̄_g)² / (N − G); σ_b² = max(0, (MSB − MSW) / n₀) with
    MSB = Σ n_g (x̄_g − x̄)² / (G − 1) and n₀ = (N − Σ n_g² / N) / (G − 1) (Searle, Casella &
    McCulloch 1992, §3.6). The truncation at 0 is the usual one; it biases σ_b slightly upward.
    """
    x = np.asarray(values, dtype=float)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n, k = x.size, int(g.max()) + 1 if x.size else 0
    total = float(np.std(x, ddof=1)) if n > 1 else float("nan")
    if n == 0:
        return VarianceComponents(0, 0, total, float("nan"), float("nan"))
    counts = np.bincount(g, minlength=k)
    means = np.bincount(g, weights=x, minlength=k) / counts
    ssw = float(np.sum((x - means[g]) ** 2))
    msw = ssw / (n - k) if n > k else float("nan")
    within = float(np.sqrt(msw)) if n > k else float("nan")
    if k < 2 or n <= k:
        return VarianceComponents(n, k, total, float("nan"), within)
    msb = float(np.sum(counts * (means - x.mean()) ** 2)) / (k - 1)
    n0 = (n - np.sum(counts ** 2) / n) / (k - 1)
    between = float(np.sqrt(max(0.0, (msb - msw) / n0)))
    return VarianceComponents(n, k, total, between, within)


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
        return TInterval(n, _out(mean), _out(nan), _out(nan), _out(nan))
    se = d.std(axis=-1, ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2.0, n - 1) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / se
    p = np.where(se > 0, 2.0 * stats.t.sf(t, n - 1), np.where(mean == 0, 1.0, 0.0))
    return TInterval(n, _out(mean), _out(mean - half), _out(mean + half), _out(p))


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
        return _out(np.full(d.shape[:-1], np.nan))
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
    return _out(p.reshape(d.shape[:-1]))


def _pattern_bytes(start: int, size: int, m: int) -> np.ndarray:
    """Sign patterns start..start+size-1 (pattern k flips the d's at the set bits of k), as m bytes each."""
    codes = np.arange(start, start + size)
    return np.stack([(codes >> (8 * j)) & 255 for j in range(m)], axis=1)


@dataclass(frozen=True)
class CrossedGain:
    """Mean of a sessions × seeds table of paired differences, seeds shared by all sessions."""
    mean: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float
    p_value: np.ndarray | float
    df: np.ndarray | float


def crossed_gain(diffs: np.ndarray, level: float = 0.95) -> CrossedGain:
    """t-interval for the mean of a complete sessions × seeds table (last two axes) of differences
    baseline − final, where every session is scored on the same seeds against the same baseline runs.

    Two-way crossed random effects without replication: d_si = g + u_s + v_i + w_si, with u the
    session effect, v the seed effect shared by all sessions (it holds the baseline's own noise at
    seed i, which a cached baseline puts into every session's difference) and w the rest.
    Var(mean) = σ_u²/S + σ_v²/K + σ_w²/(SK), estimated from the balanced ANOVA mean squares
    (E MS_sessions = σ_w² + Kσ_u², E MS_seeds = σ_w² + Sσ_v², E MS_residual = σ_w²) with σ_u², σ_v²
    truncated at 0; the t quantile uses Satterthwaite's df for that combination of mean squares.
    Sessions alone (a t over session means) would miss σ_v²/K, which does not shrink with more
    sessions. Needs S ≥ 2 and K ≥ 2; a zero variance gives [mean, mean] and p = 1 if mean = 0 else 0.
    """
    d = np.asarray(diffs, dtype=float)
    n_s, n_k = d.shape[-2], d.shape[-1]
    if n_s < 2 or n_k < 2:
        raise ValueError(f"need at least 2 sessions and 2 seeds, got {n_s} x {n_k}")
    mean = d.mean(axis=(-2, -1))
    rows, cols = d.mean(axis=-1), d.mean(axis=-2)
    ms_s = n_k * ((rows - mean[..., None]) ** 2).sum(axis=-1) / (n_s - 1)
    ms_k = n_s * ((cols - mean[..., None]) ** 2).sum(axis=-1) / (n_k - 1)
    resid = d - rows[..., :, None] - cols[..., None, :] + mean[..., None, None]
    df_e = (n_s - 1) * (n_k - 1)
    ms_e = (resid ** 2).sum(axis=(-2, -1)) / df_e
    # n·Var(mean) = c_s MS_s + c_k MS_k + c_e MS_e, with a component dropped when truncated at 0.
    use_s, use_k = ms_s > ms_e, ms_k > ms_e
    c_e = 1.0 - use_s - use_k
    terms = [(use_s * ms_s, n_s - 1), (use_k * ms_k, n_k - 1), (c_e * ms_e, df_e)]
    total = sum(t for t, _ in terms)
    se = np.sqrt(np.maximum(total, 0.0) / (n_s * n_k))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = total ** 2 / sum(t ** 2 / f for t, f in terms)
        half = stats.t.ppf(0.5 + level / 2.0, df) * se
        p = 2.0 * stats.t.sf(np.abs(mean) / se, df)
    zero = se == 0
    half = np.where(zero, 0.0, half)
    p = np.where(zero, np.where(mean == 0, 1.0, 0.0), p)
    return CrossedGain(_out(mean), _out(mean - half), _out(mean + half), _out(p), _out(df))


# ---------------------------------------------------------------------------
# Ranking and power
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class WelchTest:
    """Difference of means a − b with Welch's t-interval and two-sided p-value."""
    diff: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float
    p_value: np.ndarray | float
    df: np.ndarray | float


def welch(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> WelchTest:
    """Welch's unequal-variance t-test of mean(a) = mean(b), samples along the last axis.

    se² = s_a²/n_a + s_b²/n_b, Welch–Satterthwaite df = se⁴ / Σ (s²/n)² / (n − 1). Each side needs
    two values. se = 0 gives p = 1 if the means are equal else 0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = a.shape[-1], b.shape[-1]
    if na < 2 or nb < 2:
        raise ValueError(f"Welch's test needs two values per side, got {na} and {nb}")
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    se = np.sqrt(va + vb)
    diff = a.mean(axis=-1) - b.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(se > 0, (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)), na + nb - 2.0)
        p = np.where(se > 0, 2.0 * stats.t.sf(np.abs(diff) / se, df), np.where(diff == 0, 1.0, 0.0))
    half = stats.t.ppf(0.5 + level / 2.0, df) * se
    return WelchTest(_out(diff), _out(diff - half), _out(diff + half), _out(p), _out(df))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (strong family-wise error control, any dependence).

    With p sorted ascending, adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)); rejecting
    where adjusted p ≤ α keeps P(any false rejection) ≤ α. NaN p-values are left out and stay NaN.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def rank_intervals(means: np.ndarray, different: np.ndarray) -> np.ndarray:
    """Rank intervals (rank 1 = highest mean): an agent's interval spans every agent it is not
    significantly different from. different[i, j] is True when i and j differ significantly;
    low_i = 1 + #{j: different and mean_j > mean_i}, high_i = k − #{j: different and mean_j < mean_i}.
    Returns an int array of shape (k, 2)."""
    m = np.asarray(means, dtype=float)
    sig = np.asarray(different, dtype=bool)
    above = (sig & (m[None, :] > m[:, None])).sum(axis=1)
    below = (sig & (m[None, :] < m[:, None])).sum(axis=1)
    return np.stack([1 + above, m.size - below], axis=1)


def two_sample_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test with n per group at standardized effect d:
    P(|T'| > t_{1−α/2, 2n−2}) with T' noncentral t, df 2n − 2, noncentrality d·√(n/2)."""
    df = 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = effect * np.sqrt(n / 2)
    # scipy returns NaN for the far tail at large noncentrality, where it is ~0 anyway.
    lower = float(np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))
    return float(stats.nct.sf(crit, df, ncp)) + lower


def required_repeats(effect: float, alpha: float = 0.05, power: float = 0.8, max_n: int = 100_000) -> int:
    """Smallest n per group (≥ 2) at which the two-sample t-test reaches the power at effect d
    (d in units of the between-repeat SD): ≈ 64/17/6/4 for d = 0.5/1/2/3 at α = 0.05, power 0.8."""
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    low, high = 2, 2
    while two_sample_power(effect, high, alpha) < power:
        low, high = high, high * 2
        if high > max_n:
            raise ValueError(f"more than {max_n} repeats needed for effect {effect}")
    while low < high:  # power grows with n: bisect for the first n that reaches it
        mid = (low + high) // 2
        low, high = (mid + 1, high) if two_sample_power(effect, mid, alpha) < power else (low, mid)
    return high


def detectable_effect(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest standardized effect d the two-sample t-test with n per group detects with the power."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    return float(optimize.brentq(lambda d: two_sample_power(d, n, alpha) - power, 1e-6, 30.0, xtol=1e-10))


def _out(a: np.ndarray) -> np.ndarray | float:
    """A 0-d result as a plain float, anything else unchanged."""
    a = np.asarray(a, dtype=float)
    return float(a) if a.ndim == 0 else a
