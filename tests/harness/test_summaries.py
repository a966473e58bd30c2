"""harness/summaries.py: IQM, probability of improvement and performance profiles with stratified bootstrap intervals.

The calibration tests simulate leaderboards shaped like ours: sessions × held-out seeds of paired differences,
30% of sessions keeping nothing (their final is the baseline: they score exactly 0), skewed gains for the others, and
the baseline's seed noise shared by every changed session (it does not shrink with more sessions). Fixed seeds.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from support import write_session_folders

from harness import summaries
from harness.analyze import Tables, load_tables
from harness.null_model import loop_noise
from harness.store import build_tables
from harness.summaries import Stratum, bootstrap, iqm, prob_greater, shared_term

N_DATA_SETS = 2000   # Monte Carlo SE of a 95% coverage: 0.0049
FLOOR = 0.95 - 2 * math.sqrt(0.05 * 0.95 / N_DATA_SETS)
SIGMA_SHARED, SIGMA_SESSION = 0.7, 1.0


def test_iqm_is_scipys_trimmed_mean():
    rng = np.random.default_rng(0)
    for n in range(4, 15):
        x = rng.standard_normal((3, n))
        assert iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=-1))


def test_prob_greater_counts_ties_half():
    rng = np.random.default_rng(1)
    x, y = np.round(rng.normal(0, 1, (4, 9)), 1), np.round(rng.normal(0.3, 1, (4, 7)), 1)
    x[:, :3], y[:, :2] = 0.0, 0.0   # exact zeros on both sides: sessions that kept nothing
    brute = [np.mean([(a > b) + 0.5 * (a == b) for a in xr for b in yr]) for xr, yr in zip(x, y)]
    assert prob_greater(x, y) == pytest.approx(brute)
    u = [scipy_stats.mannwhitneyu(xr, yr, alternative="greater").statistic / 63 for xr, yr in zip(x, y)]
    assert prob_greater(x, y) == pytest.approx(u)


def test_resampled_comparisons_match_the_materialised_ones():
    """The bootstrap compares resamples through counts over the sorted originals; the shared term moves only the
    changed sessions."""
    rng = np.random.default_rng(3)
    x, y = np.round(rng.normal(0, 1, 15), 1), np.round(rng.normal(0.3, 1, 12), 1)
    cx, cy = rng.random(15) > 0.3, rng.random(12) > 0.3
    x[~cx], y[~cy] = 0.0, 0.0
    stratum = Stratum("s", np.array(["x"] * 15 + ["y"] * 12), np.concatenate([x, y]), np.concatenate([cx, cy]), 0.5, 2)
    ix, iy, shift = rng.integers(0, 15, (7, 15)), rng.integers(0, 12, (7, 12)), rng.normal(0, 1, 7)
    fast = summaries._resampled_prob(stratum, "x", ix, "y", iy, shift)
    assert fast == pytest.approx(prob_greater(x[ix] + shift[:, None] * cx[ix], y[iy] + shift[:, None] * cy[iy]))


def simulate(rng: np.random.Generator, n_sets: int, sessions: int, seeds: int, mean: float = 0.0):
    """Per data set: sessions × seeds differences d = g + v_seed + w (changed sessions), 0 (kept nothing)."""
    changed = rng.random((n_sets, sessions)) > 0.3
    gain = 0.5 * rng.exponential(1.0, (n_sets, sessions)) - 0.1 + mean
    d = gain[..., None] + rng.normal(0, SIGMA_SHARED, (n_sets, 1, seeds)) \
        + rng.normal(0, SIGMA_SESSION, (n_sets, sessions, seeds))
    return np.where(changed[..., None], d, 0.0), changed


def true_iqm(seeds: int, mean: float = 0.0) -> float:
    """The IQM of the session scores' distribution without the shared term (its draw averaged out)."""
    rng = np.random.default_rng(99)
    n = 4_000_000
    x = 0.5 * rng.exponential(1.0, n) - 0.1 + mean + rng.normal(0, SIGMA_SESSION / math.sqrt(seeds), n)
    return float(iqm(np.where(rng.random(n) > 0.3, x, 0.0)))


def iqm_coverage(sessions: int, seeds: int, shared: bool) -> float:
    d, changed = simulate(np.random.default_rng(5), N_DATA_SETS, sessions, seeds)
    se = np.array([shared_term(d[i][changed[i]])[0] for i in range(N_DATA_SETS)])
    stratum = Stratum("s", np.array(["a"] * sessions), d.mean(axis=-1), changed, se, seeds - 1 if shared else 0)
    estimate = bootstrap([stratum], ["a"], np.array([0.0]), reps=1000)[0]["a"]
    truth = true_iqm(seeds)
    return float(np.mean((estimate.low <= truth) & (truth <= estimate.high)))


@pytest.mark.parametrize("sessions", [summaries.MIN_SESSIONS, 20])
def test_iqm_interval_covers_on_benchmark_shaped_data(sessions):
    """Coverage ≥ 95% − 2 MC SE at 3 seeds (0.977 at 10 sessions, 0.967 at 20, 0.965 at 40). Catches rliable's plain
    stratified bootstrap over sessions (no shared seed term): 0.79 at 10 sessions, 0.71 at 20, 0.56 at 40."""
    assert iqm_coverage(sessions, 3, shared=True) >= FLOOR


def test_probability_of_improvement_covers():
    """P(a session of X beats noop's 0): X's changed sessions move with the shared term, noop's do not, so the
    interval needs it: coverage 0.975 over 400 data sets. Catches the bootstrap without it (0.67)."""
    rng = np.random.default_rng(7)
    n_sets, sessions, seeds = 400, 20, 3
    d, changed = simulate(rng, n_sets, sessions, seeds, mean=0.1)
    truth_rng = np.random.default_rng(98)
    n = 2_000_000
    draws = 0.5 * truth_rng.exponential(1.0, n) - 0.1 + 0.1 + truth_rng.normal(0, 1 / math.sqrt(seeds), n)
    truth = 0.7 * np.mean(draws > 0) + 0.3 * 0.5   # kept-nothing sessions tie with noop's zeros
    covered = []
    for i in range(n_sets):
        se, df = shared_term(d[i][changed[i]])
        stratum = Stratum("s", np.array(["x"] * sessions + ["noop"] * 10),
                          np.concatenate([d[i].mean(axis=-1), np.zeros(10)]),
                          np.concatenate([changed[i], np.zeros(10, dtype=bool)]), se, df)
        e = bootstrap([stratum], ["x", "noop"], np.array([0.0]), reps=400, seed=i)[1]["x", "noop"]
        covered.append(e.low <= truth <= e.high)
    assert np.mean(covered) >= 0.95 - 2 * math.sqrt(0.05 * 0.95 / n_sets)


def test_strata_keep_their_sizes():
    """Stratified: every replicate has each stratum's own number of sessions, so two constant strata give a constant
    IQM (pooled resampling would mix 0s and 1s in varying proportions)."""
    strata = [Stratum("short", np.array(["a"] * 3), np.zeros(3), np.zeros(3, dtype=bool), 0.0, 0),
              Stratum("long", np.array(["a"] * 7), np.ones(7), np.zeros(7, dtype=bool), 0.0, 0)]
    iqms, _, profiles = bootstrap(strata, ["a"], np.array([0.5]), reps=200)
    # Sorted 0,0,0,1,…,1 (10): the IQM keeps indices 2–7, one 0 and five 1s.
    assert (iqms["a"].point, iqms["a"].low, iqms["a"].high) == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    assert (profiles["a"].low, profiles["a"].high) == (pytest.approx(0.7), pytest.approx(0.7))


# ---------------------------------------------------------------------------
# From the tables
# ---------------------------------------------------------------------------

SEEDS = (1000, 1001, 1002)


def world(rng: np.random.Generator) -> tuple[Tables, dict[str, np.ndarray]]:
    """10 greedy sessions (7 changed their final), 10 noop sessions (final = baseline), one profile and budget.
    Returns the tables and, per agent, its sessions × seeds val differences (baseline − final)."""
    baseline = np.array([2.00, 2.10, 1.90])
    sessions, verifications, diffs = [], [], {"greedy": [], "noop": []}
    for agent in ("greedy", "noop"):
        for r in range(10):
            sid = f"{agent}-{r}"
            sessions.append(dict(session_id=sid, agent=agent, profile="cpu-tiny", profile_hash="h1",
                                 budget_seconds=600.0, budget_experiments=20))
            changed = agent == "greedy" and r < 7
            final = baseline - (rng.normal(0.02, 0.02) + rng.normal(0, 0.01, 3) if changed else 0.0)
            diffs[agent].append(baseline - final)
            for k, seed in enumerate(SEEDS):
                for role, bpb, code in (("baseline", baseline[k], "B"), ("final", final[k], f"F{sid}" if changed
                                                                         else "B")):
                    verifications.append(dict(session_id=sid, agent=agent, role=role, commit=code, train_py_hash=code,
                                              seed=seed, split="val", bpb=bpb, status="ok", pair_status="ok",
                                              message=""))
    tables = Tables(pd.DataFrame(sessions), pd.DataFrame(columns=["session_id", "agent"]),
                    pd.DataFrame(verifications), pd.DataFrame(columns=["session_id", "agent"]))
    return tables, {a: np.array(d) for a, d in diffs.items()}


def test_summaries_from_the_tables(tmp_path):
    tables, diffs = world(np.random.default_rng(11))
    write_session_folders(tmp_path, tables)
    build_tables(tmp_path)
    s = summaries.summaries(load_tables(tmp_path), "h1", split="val", reps=500)
    greedy, noop = diffs["greedy"].mean(axis=1), diffs["noop"].mean(axis=1)
    assert s.n_sessions == {"greedy": 10, "noop": 10} and s.strata == ("600 s, 20 experiments",)
    assert s.iqm["greedy"].point == pytest.approx(scipy_stats.trim_mean(greedy, 0.25))
    assert s.iqm["noop"].point == s.iqm["noop"].low == s.iqm["noop"].high == 0.0   # noop's gain is exactly 0
    wins = np.mean([(a > b) + 0.5 * (a == b) for a in greedy for b in noop])
    assert s.improvement["greedy", "noop"].point == pytest.approx(wins)
    assert s.improvement["noop", "greedy"].point == pytest.approx(1 - wins)
    assert s.improvement["greedy", "noop"].low <= wins <= s.improvement["greedy", "noop"].high
    # The shared term from greedy's 7 changed sessions: row-centred seed means, their variance / 3.
    changed = diffs["greedy"][:7]
    columns = (changed - changed.mean(axis=1, keepdims=True)).mean(axis=0)
    assert s.shared_se["600 s, 20 experiments"] == pytest.approx(math.sqrt(np.var(columns, ddof=1) / 3))
    quartiles = np.quantile(np.concatenate([greedy, noop]), [0.25, 0.5, 0.75])
    assert s.thresholds == pytest.approx(np.unique(np.concatenate([[0.0], quartiles])))
    assert s.profiles["greedy"].point[0] == pytest.approx(np.mean(greedy > 0))
    lines = summaries.render(s)
    text = "\n".join(lines)
    assert f"| greedy | 10 | {s.iqm['greedy'].point:+.4f} [" in text
    assert "| noop | 10 | +0.0000 [+0.0000, +0.0000] |" in text
    assert f"| greedy | — | {wins:.2f} [" in text
    # From the tables, the thresholds are 0, 1, 2, 4 held-out seed σ (harness/null_model.py).
    sigma = loop_noise(tables)["h1"].seed.value
    assert f"τ = {sigma:+.4f} | τ = {2 * sigma:+.4f}" in "\n".join(summaries.markdown(tables, "h1", split="val", reps=100))


def test_too_few_sessions_and_empty_tables():
    tables, _ = world(np.random.default_rng(12))
    few = Tables(tables.sessions, tables.experiments, tables.verifications[tables.verifications["session_id"].isin(
        ["greedy-0", "greedy-1", "noop-0"])], tables.findings)
    s = summaries.summaries(few, "h1", split="val", reps=100)
    assert s.n_sessions == {"greedy": 2, "noop": 1}
    assert "n/a: no agent has 10 verified sessions" in "\n".join(summaries.render(s))
    empty = Tables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    assert summaries.summaries(empty, "h1") is None and summaries.markdown(empty, "h1") == []
