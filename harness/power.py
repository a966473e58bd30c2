"""Power of the leaderboard's tests, and `arbench plan`: how many sessions and seeds a comparison needs.

The design is the model of harness/model.py, balanced, every session changing train.py: a contrast of `agents`
agents (1: an agent against the baseline, 2: two agents) with S sessions each on K held-out seeds has

    C ~ N(D, V),  V = agents·τ²/S + σ_seed²/K + agents·σ_run²/(S K),
    s_a² ~ (τ² + σ_run²/K) χ²_{S−1}/(S−1),  Q ~ (σ_seed² + agents·σ_run²/S) χ²_{K−1}/(K−1),  σ̂_run² ~ σ_run² χ²_df/df,

τ the spread of true gains between an agent's sessions, σ_seed the contrast's per-seed term (against the baseline:
the baseline's own deviation at a seed, shared by every session, so it does not shrink with more sessions; between two
agents it cancels but for the agent × seed interaction), σ_run one difference's own run noise. The test is the
leaderboard's: the generalized-pivot p-value at α / family (Bonferroni's share of the family, so Holm, which the
leaderboard uses, has at least this power). Power = E over (s², Q, σ̂²) of P(|C| ≥ h(s², Q, σ̂²)), h the pivot's
critical value: POWER_DRAWS fixed draws of the mean squares, each with its critical value, and the normal
probability for C in closed form, so power(D) is smooth in D and the detectable difference is a root.

At α = 0.05 and unlimited sessions, a gain over the baseline needs 3.3 σ_seed at 3 seeds, 1.7 at 5, 1.0 at 10
(the seed term's t on K − 1 df).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from harness import model

POWER = 0.8
ALPHA = 0.05
POWER_DRAWS = 400           # Latin-hypercube draws of the mean squares
POWER_SEED = 7
MAX_SESSIONS = 4096         # a plan needing more sessions than this per agent is reported as out of reach
PLAN_SEEDS = (3, 5, 10, 20)


@dataclass(frozen=True)
class Design:
    sessions: int            # per agent
    seeds: int
    session_sd: float        # τ
    seed_sd: float           # σ_seed of the contrast
    run_sd: float            # σ_run
    agents: int = 1          # agents in the contrast: 1 against the baseline, 2 between agents
    residual_df: float = math.inf   # df of σ̂_run² (all agents of the leaderboard pool it)
    family: int = 1          # tests in the Holm family
    alpha: float = ALPHA

    @property
    def sd(self) -> float:
        s, k, n = self.sessions, self.seeds, self.agents
        return math.sqrt(n * self.session_sd ** 2 / s + self.seed_sd ** 2 / k + n * self.run_sd ** 2 / (s * k))


def power(design: Design, effect: float) -> float:
    """P(the leaderboard's test calls a true difference `effect` significant) under the design."""
    return float(_power_curve(design)(abs(effect)))


def detectable(design: Design, target: float = POWER) -> float:
    """Smallest difference found with probability `target` (NaN when the design has no test)."""
    curve = _power_curve(design)
    if not np.isfinite(design.sd) or design.sd == 0:
        return math.nan
    high = design.sd
    while curve(high) < target:
        high *= 2
        if high > 1e6 * design.sd:
            return math.inf
    return float(optimize.brentq(lambda d: curve(d) - target, 0.0, high, xtol=1e-9 * high))


@functools.lru_cache(maxsize=256)
def _power_curve(design: Design):
    """power(D) for the design: the critical values are drawn once, the normal part is closed-form in D."""
    h = _critical_values(design)
    sd = design.sd
    if not np.all(np.isfinite(h)) or sd == 0:
        return lambda d: math.nan
    return lambda d: float(np.mean(special.ndtr((d - h) / sd) + special.ndtr((-h - d) / sd)))


def _critical_values(design: Design) -> np.ndarray:
    """The pivot's critical value at α/family for each fixed draw of the design's mean squares."""
    s, k, n = design.sessions, design.seeds, design.agents
    if s < 2 or k < 2:
        return np.full(POWER_DRAWS, np.nan)
    u = _uniforms()
    tau2, seed2, run2 = design.session_sd ** 2, design.seed_sd ** 2, design.run_sd ** 2
    ms = np.stack([(tau2 + run2 / k) * stats.chi2.ppf(u[j], s - 1) / (s - 1) for j in range(n)], axis=-1)
    q = (seed2 + n * run2 / s) * stats.chi2.ppf(u[2], k - 1) / (k - 1)
    finite_df = math.isfinite(design.residual_df) and design.residual_df > 0
    sigma_e2 = run2 * (stats.chi2.ppf(u[3], design.residual_df) / design.residual_df if finite_df else np.ones(
        POWER_DRAWS))
    full = np.ones(POWER_DRAWS)
    pv = model.Pivot(estimate=np.zeros(POWER_DRAWS), ms=ms, ms_df=full[:, None] * np.full(n, s - 1.0),
                     ms_coef=full[:, None] * np.full(n, 1.0 / s), kappa=full[:, None] * np.full(n, 1.0 / (s * k)),
                     mix=np.zeros((POWER_DRAWS, n)),
                     q=q, q_df=full * (k - 1), q_coef=full / k, lam=full * n / s, sigma_e2=sigma_e2,
                     df_e=full * (design.residual_df if math.isfinite(design.residual_df) else 1e9))
    return model.critical_value(model.pivot_variances(pv), design.alpha / design.family)


@functools.lru_cache(maxsize=1)
def _uniforms() -> np.ndarray:
    rng = np.random.default_rng(POWER_SEED)
    return np.stack([(rng.permutation(POWER_DRAWS) + 0.5) / POWER_DRAWS for _ in range(4)])


# ---------------------------------------------------------------------------
# arbench plan
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanRow:
    seeds: int
    vs_baseline: int | None      # sessions per agent to tell an agent from the baseline (None: out of reach)
    between_agents: int | None   # ... to tell two agents apart
    gpu_hours: float | None      # for the larger of the two, all agents, sessions and verification


def family_size(agents: int) -> int:
    """Tests in the leaderboard's Holm family: each agent against the baseline on val and test, each pair on test."""
    return 2 * agents + agents * (agents - 1) // 2


def sessions_needed(sigma: float, effect: float, seeds: int, agents: int, contrast_agents: int,
                    session_sd: float) -> int | None:
    """Fewest sessions per agent at which the design reaches POWER (None beyond MAX_SESSIONS). Against the baseline the
    baseline's seed term (σ) stays whatever the sessions; between two agents it cancels (no agent × seed assumed)."""
    def design(s: int) -> Design:
        return Design(s, seeds, session_sd, sigma if contrast_agents == 1 else 0.0, sigma, contrast_agents,
                      agents * (s - 1) * (seeds - 1), family_size(agents))
    return fewest_sessions(design, effect)


def fewest_sessions(design: Callable[[int], Design], effect: float) -> int | None:
    """Fewest sessions per agent s at which design(s) finds `effect` with probability POWER (None beyond
    MAX_SESSIONS)."""
    if power(design(MAX_SESSIONS), effect) < POWER:
        return None
    high = 2
    while power(design(high), effect) < POWER:   # doubling, then bisection: few designs evaluated for small answers
        high *= 2
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if power(design(mid), effect) < POWER else (low, mid)
    return low


def plan(sigma: float, effect: float, agents: int, session_hours: float, run_minutes: float,
         session_sd: float | None = None, seeds: tuple[int, ...] = PLAN_SEEDS) -> list[PlanRow]:
    """Sessions per agent and GPU-hours for each number of held-out seeds. GPU-hours = agents × sessions ×
    (session_hours + 2K verification runs of run_minutes: a baseline and a final per seed)."""
    tau = sigma if session_sd is None else session_sd
    rows = []
    for k in seeds:
        base = sessions_needed(sigma, effect, k, agents, 1, tau)
        pair = sessions_needed(sigma, effect, k, agents, 2, tau) if agents >= 2 else None
        need = None if base is None or (agents >= 2 and pair is None) else max(base, pair or 0)
        hours = None if need is None else agents * need * (session_hours + 2 * k * run_minutes / 60)
        rows.append(PlanRow(k, base, pair, hours))
    return rows


def render_plan(rows: list[PlanRow], sigma: float, effect: float, agents: int, session_hours: float,
                session_sd: float) -> str:
    fam = family_size(agents)
    lines = [f"Power {POWER} to find a verified difference of {effect:g} bpb (σ = {sigma:g} run-to-run, session SD "
             f"{session_sd:g}), {agents} agents: Holm over {fam} tests (each agent vs the baseline on val and test, "
             f"each pair on test), α = {ALPHA} family-wise; {session_hours:g} h sessions.",
             "", "| held-out seeds | sessions/agent vs baseline | sessions/agent between agents | GPU-hours |",
             "|---|---|---|---|"]
    for r in rows:
        cells = [str(r.seeds), _sessions(r.vs_baseline),
                 "n/a (one agent)" if agents < 2 else _sessions(r.between_agents),
                 "out of reach" if r.gpu_hours is None else f"{r.gpu_hours:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Against the baseline the seed term does not shrink with sessions: with unlimited sessions a "
              f"gain needs {_floor_text(sigma, fam)}."]
    return "\n".join(lines) + "\n"


def _sessions(n: int | None) -> str:
    return f"> {MAX_SESSIONS} (out of reach)" if n is None else str(n)


def _floor_text(sigma: float, family: int) -> str:
    parts = [f"{asymptotic_detectable(k, family) * sigma:.3g} bpb at {k} seeds" for k in PLAN_SEEDS]
    return ", ".join(parts)


def asymptotic_detectable(seeds: int, family: int = 1, alpha: float = ALPHA) -> float:
    """Detectable gain over the baseline, in units of σ_seed, with unlimited sessions: the pivot is then σ̂_seed/√K
    times a t on K − 1 df, so the answer is the noncentral t's (3.3 at 3 seeds, 1.7 at 5, 1.0 at 10 for one test)."""
    df, crit = seeds - 1, stats.t.ppf(1 - alpha / family / 2, seeds - 1)
    def pw(ncp: float) -> float:
        return float(stats.nct.sf(crit, df, ncp) + np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))
    return float(optimize.brentq(lambda ncp: pw(ncp) - POWER, 1e-6, 1e3) / math.sqrt(seeds))
