"""harness/null_model.py: the null of a keep/revert loop against simulated loops, and its σ from real tables.

The calibration tests simulate loops with within-session noise (σ_w, what a loop at one seed faces) and seed noise
(σ_s: a session's seed, shared by all its runs; a held-out seed's effect, shared by every train.py run on it), the
shape of the benchmark: two noop sessions re-running the baseline, an agent whose edits do nothing, three held-out
seeds. Fixed seeds; 10,000 simulated leaderboards where a rate is checked (Monte Carlo SE 0.0022 at 0.05).
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from support import write_session_folders

from harness import null_model
from harness.analyze import Tables, analyze, load_tables
from harness.null_model import LoopNoise, null_gain, pooled_sigma, seed_sigma
from harness.stats import expected_max_normal
from harness.store import build_tables

SIGMA_W, SIGMA_S = 1.0, 1.5   # within-session σ; seed σ of one run is √(σ_w² + σ_s²) ≈ 1.80
N_LEADERBOARDS = 10_000


def keep_revert_loop(runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Claimed gain and keeps of a loop over runs[..., 0] (the baseline) then runs[..., 1:]: a run is kept when it
    beats the best so far; the claim is baseline − best kept."""
    best = np.minimum.accumulate(runs, axis=-1)
    keeps = (runs[..., 1:] < best[..., :-1]).sum(axis=-1)
    return runs[..., 0] - best[..., -1], keeps


def test_null_gain_distribution_matches_a_simulated_loop():
    """Known σ: mean, SD and 95th percentile of one session's claimed gain, and its keeps, for n runs after the
    baseline. Catches: the 95th percentile of the max of n+1 normals (it ignores the baseline's own draw: 3.2σ
    instead of 4.3σ at n = 100), E[max of n] for the mean (off by one run)."""
    rng = np.random.default_rng(1)
    for n in (1, 5, 20, 100):
        gains, keeps = keep_revert_loop(rng.standard_normal((100_000, n + 1)))
        assert null_model.mean_factor(np.array([n])) == pytest.approx(gains.mean(), abs=0.01)
        assert null_model.quantile_factor((n,), 0) == pytest.approx(np.quantile(gains, 0.95), abs=0.03)
        noise = LoopNoise("p", "h", _known(1.0), _known(1.0))
        assert null_gain(np.array([n]), noise).keeps == pytest.approx(keeps.mean(), abs=0.02)
        if n == 100:   # the figures: ≈ 2.51σ of spurious gain, SD ≈ 1.08σ, ≈ 4.2 keeps
            assert (gains.mean(), gains.std(), keeps.mean()) == pytest.approx((2.51, 1.08, 4.19), abs=0.02)
    # n = 1: max(0, Z₀ − Z₁) with Z₀ − Z₁ ~ N(0, 2): the 95th percentile is 1.6449·√2.
    assert null_model.quantile_factor((1,), 0) == pytest.approx(scipy_stats.norm.ppf(0.95) * math.sqrt(2), abs=1e-3)


def simulate_leaderboards(rng: np.random.Generator, redraw: bool = False) -> dict[str, np.ndarray]:
    """Per leaderboard: 2 noop sessions × (baseline + 5 re-runs), an agent's 4 sessions × (baseline + 20 edits that
    do nothing; redraw: each edit draws a new trajectory, as a new seed would), and the trusted runs of the baseline
    and the agent's 4 finals on 3 held-out seeds."""
    L = N_LEADERBOARDS

    def sessions(s: int, runs: int) -> np.ndarray:
        return rng.normal(0, SIGMA_S, (L, s, 1)) + rng.normal(0, SIGMA_W, (L, s, runs))

    agent = sessions(4, 21) if not redraw else rng.normal(0, math.hypot(SIGMA_S, SIGMA_W), (L, 4, 21))
    trusted = rng.normal(0, SIGMA_S, (L, 1, 3)) + rng.normal(0, SIGMA_W, (L, 5, 3)) + rng.normal(0, 0.3, (L, 5, 1))
    return {"noop": sessions(2, 6).reshape(L, 12), "agent": agent, "trusted": trusted}


def estimated_noise(data: dict[str, np.ndarray]) -> LoopNoise:
    return LoopNoise("p", "h", pooled_sigma(data["noop"], np.repeat([0, 1], 6)), seed_sigma(data["trusted"]))


@pytest.fixture(scope="module")
def leaderboards():
    data = simulate_leaderboards(np.random.default_rng(12))
    gains, _ = keep_revert_loop(data["agent"])
    return data, gains, null_gain(np.full(4, 20), estimated_noise(data))


def test_null_calibrated_on_simulated_leaderboards(leaderboards):
    """σ estimated from the noops' re-runs (10 df): the predicted mean matches the simulated claims, and a loop on
    pure noise exceeds the printed 95th percentiles 5% of the time, for the agent's mean and for one session.
    Catches: the seed σ as the null's σ (mean ×1.79, exceedance 0.014 with the baseline's 2 df), the plug-in 95th
    percentile without σ's uncertainty (exceedance 0.155 / 0.101), σ̂ without c4 (mean −3%)."""
    _, gains, null = leaderboards
    assert np.mean(null.mean) == pytest.approx(gains.mean(), rel=0.015)
    assert (gains.mean(axis=1) > null.q95).mean() == pytest.approx(0.05, abs=0.01)
    assert (gains > np.asarray(null.session_q95)[:, None]).mean() == pytest.approx(0.05, abs=0.01)


def test_sigma_intervals_cover(leaderboards):
    """The within σ's χ² interval and the seed σ's Graybill–Wang interval cover at ≥ 95% − 3 MC SE.
    Catches: the SD of all noop runs (session seeds mixed in: coverage 0.61), a normal-approximation interval
    (0.90), the seed σ pooled over train.py versions as if their seeds were independent (0.79), a χ² interval on
    Satterthwaite's df for the seed σ (0.91 here, 0.85 at 20 train.py × 3 seeds)."""
    data, _, _ = leaderboards
    noise = estimated_noise(data)
    floor = 0.95 - 3 * math.sqrt(0.05 * 0.95 / N_LEADERBOARDS)
    assert np.mean((noise.within.low <= SIGMA_W) & (SIGMA_W <= noise.within.high)) >= floor
    seed = math.hypot(SIGMA_W, SIGMA_S)
    assert np.mean((noise.seed.low <= seed) & (seed <= noise.seed.high)) >= floor
    many = seed_sigma(np.random.default_rng(3).normal(0, 1.0, (N_LEADERBOARDS, 1, 3))
                      + np.random.default_rng(4).normal(0, 1.0, (N_LEADERBOARDS, 20, 3)))
    assert np.mean((many.low <= math.sqrt(2)) & (math.sqrt(2) <= many.high)) >= floor
    assert noise.within.df == 10 and noise.seed.n_cells == 5


def test_seed_sigma_bounds_edits_that_redraw_the_trajectory(leaderboards):
    """When every edit draws a new trajectory the loop faces the seed σ: its claims match the upper bound's mean
    and exceed the within-σ null."""
    data = simulate_leaderboards(np.random.default_rng(13), redraw=True)
    gains, _ = keep_revert_loop(data["agent"])
    null = null_gain(np.full(4, 20), estimated_noise(data))
    assert np.mean(null.upper_mean) == pytest.approx(gains.mean(), rel=0.03)
    assert gains.mean() > 1.5 * np.mean(null.mean)


def _known(sigma: float) -> null_model.SigmaEstimate:
    return null_model.SigmaEstimate(sigma, sigma, sigma, math.inf, 0, 0)


# ---------------------------------------------------------------------------
# From the tables
# ---------------------------------------------------------------------------

def _session(sid, agent, seed):
    return dict(session_id=sid, run_id="r", agent=agent, repeat=seed, seed=seed, profile="cpu-tiny",
                profile_hash="h1", status="done", wall_seconds=100.0)


def _rows(sid, agent, runs):
    """runs: (val_bpb, status, train.py hash, seed or None, run_status, dirty)."""
    return [dict(session_id=sid, agent=agent, idx=i, commit=f"{sid}-{i}", claimed_val_bpb=bpb, status=status,
                 run_status=run_status, train_py_sha256=code, seed=seed, run_dirty=dirty, training_seconds=1.0)
            for i, (bpb, status, code, seed, run_status, dirty) in enumerate(runs)]


def _verif(sid, agent, code, seed, bpb, status="ok", role="final"):
    return dict(session_id=sid, agent=agent, role=role, commit=code, train_py_hash=code, seed=seed, split="val",
                bpb=bpb, status=status, pair_status="ok", message="")


def world() -> Tables:
    ok = "ok"
    sessions = [_session("greedy-0", "greedy", 0), _session("greedy-1", "greedy", 1),
                _session("noop-0", "noop", 0), _session("noop-1", "noop", 1)]
    experiments = (
        _rows("noop-0", "noop", [(2.00, "keep", "B", 0, ok, False), (2.02, "discard", "B", 0, ok, False),
                                 (1.98, "keep", "B", 0, ok, False), (0.0, "crash", "B", 0, "crash", False),
                                 (2.01, "discard", "B", 0, "missing", None)])
        + _rows("noop-1", "noop", [(2.10, "keep", "B", None, ok, False), (2.13, "discard", "B", 1, ok, False),
                                   (2.50, "discard", "B", 1, ok, True)])
        + _rows("greedy-0", "greedy", [(2.05, "keep", "B", 0, ok, False), (1.95, "keep", "X", 0, ok, False),
                                       (2.07, "discard", "B", 0, ok, False), (1.99, "discard", "Y", 0, ok, False),
                                       (1.96, "discard", "X", 0, ok, False)])
        + _rows("greedy-1", "greedy", [(2.11, "keep", "B", 1, ok, False), (2.12, "discard", "B", 7, ok, False)]))
    verifications = [
        _verif("greedy-0", "greedy", "B", s, b, role="baseline") for s, b in ((1000, 2.01), (1001, 2.09), (1002, 1.92))
    ] + [_verif("greedy-0", "greedy", "F0", s, b) for s, b in ((1000, 1.90), (1001, 2.05), (1002, 1.85))] + [
        _verif("greedy-1", "greedy", "F1", s, b, status) for s, b, status in
        ((1000, 1.95, "ok"), (1001, 2.00, "ok"), (1002, 9.0, "crash"))
    ] + [_verif(sid, "noop", "B", s, b, role=role) for sid in ("noop-0", "noop-1") for role in ("baseline", "final")
         for s, b in ((1000, 2.00), (1001, 2.10), (1002, 1.90))]
    return Tables(pd.DataFrame(sessions), pd.DataFrame(experiments), pd.DataFrame(verifications),
                  pd.DataFrame(columns=["session_id", "agent"]))


def test_loop_noise_from_every_rerun_at_a_session_seed(tmp_path):
    write_session_folders(tmp_path, world())
    build_tables(tmp_path)
    noise = null_model.loop_noise(load_tables(tmp_path))["h1"]
    # Cells of one train.py at one seed in one session, by hand: noop-0's three runs of B (crash, the row without a
    # run left out), noop-1's two clean runs (the dirty one left out; the first row's seed is its session's),
    # greedy-0's B twice and X twice; greedy-0's Y and greedy-1's runs (seeds 1 and 7) have no replicate.
    cells = [[2.00, 2.02, 1.98], [2.10, 2.13], [2.05, 2.07], [1.95, 1.96]]
    ss = sum(np.sum((np.array(c) - np.mean(c)) ** 2) for c in cells)
    assert (noise.within.df, noise.within.n_runs, noise.within.n_cells) == (5, 9, 4)
    assert noise.within.value == pytest.approx(math.sqrt(ss / 5))
    assert noise.within.high == pytest.approx(math.sqrt(ss / scipy_stats.chi2.ppf(0.025, 5)))
    assert not noise.bound and noise.sigma is noise.within
    # Seeds: B (its first run per seed: greedy-0's pair, sessions in folder order) and F0 ran ok on every seed; F1
    # crashed on 1002 and is left out. Two-way table without replication, by hand.
    table = np.array([[2.01, 2.09, 1.92], [1.90, 2.05, 1.85]])
    seed_means = table.mean(axis=0)
    resid = table - table.mean(axis=1, keepdims=True) - seed_means + table.mean()
    var = np.var(seed_means, ddof=1) + 0.5 * np.sum(resid ** 2) / 2
    assert noise.seed.value == pytest.approx(math.sqrt(var))
    assert (noise.seed.n_cells, noise.seed.n_runs) == (2, 6)
    assert noise.seed.low < noise.seed.value < noise.seed.high


def test_null_for_an_agent_and_markdown():
    noise = null_model.loop_noise(world())["h1"]
    null = null_gain(np.array([4, 1]), noise)   # greedy: 4 and 1 runs with a val_bpb after the baseline
    sigma = noise.within.value / null_model.c4(5)
    assert null.mean == pytest.approx(sigma * (expected_max_normal(5) + expected_max_normal(2)) / 2)
    assert null.keeps == pytest.approx(((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) + 1 / 2) / 2)
    assert null.session_q95 > null.q95 > null.mean > 0   # one session spreads more than a mean of two
    text = null_model.noise_line(noise) + "\n" + null_model.spread_line({"greedy": null})
    assert f"σ within a session = {noise.within.value:.4f}" in text and "(5 df from 9 re-runs" in text
    assert f"95th percentile greedy {null.session_q95:.4f} (2 runs)" in text and f"{null.upper_mean:.4f}." in text
    # The leaderboard's rows carry the same null, with the draws per session counted from the rows: greedy 4 and 1,
    # noop 3 (the crash is no draw; a claim without a run still is) and 2.
    by_agent = {r.agent: r.null for r in analyze(world())}
    assert by_agent["greedy"] == null and by_agent["noop"] == null_gain(np.array([3, 2]), noise)
    none = null_model.loop_noise(Tables(pd.DataFrame(), pd.DataFrame(), world().verifications.iloc[:6],
                                        pd.DataFrame()))["?"]
    assert none.bound and none.sigma is none.seed   # no re-run anywhere: the seed σ, said to be an upper bound
    assert "upper bound" in null_model.noise_line(none)
    assert null_model.noise_line(None).startswith("Loop noise: n/a") and null_model.spread_line({}) == ""
