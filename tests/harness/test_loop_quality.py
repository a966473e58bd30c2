"""harness/loop_quality.py: per-session loop quality from real tables, and its two null references on simulated loops
(excess area ≈ 0 and replication ≈ α when nothing has an effect). Fixed seeds."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special
from scipy import stats as scipy_stats
from support import write_session_folders

from harness import loop_quality
from harness.analyze import Tables, load_tables
from harness.null_model import LoopNoise, SigmaEstimate, loop_noise
from harness.stats import expected_max_normal
from harness.store import build_tables

SEEDS = (1000, 1001, 1002)
BASELINE = {"val": [2.00, 2.10, 1.90], "test": [2.20, 2.30, 2.10]}


def _session(sid, agent, seed, wall, usage=None):
    usage = usage or {}
    return dict(session_id=sid, agent=agent, seed=seed, profile="cpu-tiny", profile_hash="h1", status="done",
                wall_seconds=wall, requests=usage.get("requests", 0), dollars=usage.get("dollars", 0.0),
                input_tokens=usage.get("input", 0), output_tokens=usage.get("output", 0),
                cache_read_tokens=usage.get("read", 0), cache_write_tokens=usage.get("write", 0))


def _rows(sid, agent, runs):
    """runs: (val_bpb, status, train.py hash, training seconds)."""
    return [dict(session_id=sid, agent=agent, idx=i, commit=f"{sid}-{i}", claimed_val_bpb=bpb, status=status,
                 run_status="crash" if status == "crash" else "ok", train_py_sha256=code, seed=None,
                 run_dirty=False, training_seconds=seconds)
            for i, (bpb, status, code, seconds) in enumerate(runs)]


def _verified(sid, agent, finals):
    """Baseline and final on the held-out seeds, both splits; finals None: the final is the baseline."""
    rows = []
    for split in ("val", "test"):
        for k, seed in enumerate(SEEDS):
            final = BASELINE[split][k] if finals is None else finals[split][k]
            for role, bpb, code in (("baseline", BASELINE[split][k], "B"),
                                    ("final", final, "B" if finals is None else f"F-{sid}")):
                rows.append(dict(session_id=sid, agent=agent, role=role, commit=code, train_py_hash=code, seed=seed,
                                 split=split, bpb=bpb, status="ok", pair_status="ok", message=""))
    return rows


USAGE = {"greedy-0": dict(requests=10, dollars=2.0, input=1000, output=500, read=200, write=100),
         "greedy-1": dict(requests=4, dollars=1.0, input=400, output=100, read=0, write=0)}
EXPERIMENTS = {
    "greedy-0": [(2.00, "keep", "B", 60.0), (1.95, "keep", "X", 58.0), (0.0, "crash", "Y", None),
                 (1.97, "discard", "Z", 61.0), (1.90, "keep", "W", 59.5)],
    "greedy-1": [(2.10, "keep", "B", 60.0), (2.12, "discard", "X", 60.0), (2.08, "keep", "Y", 60.0)],
    "noop-0": [(2.00, "keep", "B", 60.0), (2.03, "discard", "B", 60.0), (1.99, "keep", "B", 60.0)],
    "noop-1": [(2.10, "keep", "B", 60.0), (2.06, "keep", "B", 60.0), (2.09, "discard", "B", 60.0)],
}
FINALS = {"greedy-0": {"val": [1.90, 2.00, 1.81], "test": [2.12, 2.21, 2.02]},    # replicates: +0.10, +0.10, +0.09
          "greedy-1": {"val": [1.98, 2.12, 1.91], "test": [2.19, 2.31, 2.11]}}   # does not: +0.02, −0.02, −0.01


def world() -> Tables:
    sessions = [_session("greedy-0", "greedy", 0, 3600.0, USAGE["greedy-0"]),
                _session("greedy-1", "greedy", 1, 1800.0, USAGE["greedy-1"]),
                _session("noop-0", "noop", 0, 900.0), _session("noop-1", "noop", 1, 900.0)]
    experiments = [row for sid, runs in EXPERIMENTS.items() for row in _rows(sid, sid.split("-")[0], runs)]
    verifications = [row for sid in EXPERIMENTS for row in _verified(sid, sid.split("-")[0], FINALS.get(sid))]
    return Tables(pd.DataFrame(sessions), pd.DataFrame(experiments), pd.DataFrame(verifications),
                  pd.DataFrame(columns=["session_id", "agent"]))


def expected_excess(runs, sigma):
    """The definition, one row at a time: best-so-far claimed gain minus σ·E[max of d+1 normals]."""
    baseline, best, draws, total = runs[0][0], runs[0][0], 0, 0.0
    for bpb, status, _, _ in runs[1:]:
        if status != "crash":
            draws += 1
            if status == "keep":
                best = min(best, bpb)
        total += (baseline - best) - sigma * expected_max_normal(draws + 1)
    return total / (len(runs) - 1)


def test_loop_quality_per_session(tmp_path):
    write_session_folders(tmp_path, world())
    build_tables(tmp_path)
    tables = load_tables(tmp_path)
    noise = loop_noise(tables)
    rows = {r.session_id: r for r in loop_quality.loop_quality(tables, noise)}
    df = noise["h1"].within.df   # the noops' re-runs of B: 2 + 2 df
    unbiased = noise["h1"].within.value / (math.sqrt(2 / df) * special.gamma((df + 1) / 2) / special.gamma(df / 2))
    g0 = rows["greedy-0"]
    assert (g0.n_runs, g0.n_experiments, g0.n_crashes, g0.n_keeps) == (5, 4, 1, 2)
    assert g0.experiments_per_hour == pytest.approx(5.0)
    assert g0.duty_cycle == pytest.approx((60.0 + 58.0 + 61.0 + 59.5) / 3600.0)
    assert (g0.crash_rate, g0.keep_rate) == (pytest.approx(0.2), pytest.approx(0.5))
    assert g0.excess_area == pytest.approx(expected_excess(EXPERIMENTS["greedy-0"], unbiased))
    assert g0.dollars == 2.0 and g0.tokens == 1800.0
    # Replication: one-sided paired t over the val seeds, by scipy.
    for sid in ("greedy-0", "greedy-1"):
        d = np.array(BASELINE["val"]) - np.array(FINALS[sid]["val"])
        p = scipy_stats.ttest_1samp(d, 0.0, alternative="greater").pvalue
        assert rows[sid].kept_verified and rows[sid].replicated == (p < loop_quality.REPLICATION_ALPHA)
    assert rows["greedy-0"].replicated and not rows["greedy-1"].replicated
    noop = rows["noop-0"]   # its final is the baseline: nothing kept was verified; the gateway metered nothing
    assert not noop.kept_verified and not noop.replicated and math.isnan(noop.dollars) and math.isnan(noop.tokens)
    assert noop.excess_area == pytest.approx(expected_excess(EXPERIMENTS["noop-0"], unbiased))


def test_loop_quality_per_agent_and_markdown():
    tables = world()
    agents = {a.agent: a for a in loop_quality.by_agent(loop_quality.loop_quality(tables, loop_noise(tables)))}
    greedy = agents["greedy"]
    assert greedy.experiments_per_hour == pytest.approx((5 + 3) / 1.5)
    assert greedy.duty_cycle == pytest.approx((238.5 + 180.0) / 5400.0)
    assert (greedy.crash_rate, greedy.keep_rate) == (pytest.approx(1 / 8), pytest.approx(3 / 6))
    assert (greedy.kept_verified, greedy.replicated) == (2, 1)
    # Clopper–Pearson for 1 of 2, from the beta quantiles.
    assert greedy.replication_low == pytest.approx(scipy_stats.beta.ppf(0.025, 1, 2))
    assert greedy.replication_high == pytest.approx(scipy_stats.beta.ppf(0.975, 2, 1))
    assert greedy.dollars_per_verified == pytest.approx(3.0) and greedy.tokens_per_verified == pytest.approx(2300.0)
    assert math.isnan(agents["noop"].dollars_per_verified) and agents["noop"].kept_verified == 0
    text = "\n".join(loop_quality.markdown(tables, "h1"))
    assert "| greedy | 2 | 5.3 | 0.08 | 0.12 | 0.50 |" in text and "1/2 (0.50 [" in text and "| $3.00 | 2,300 |" in text
    assert "| noop | 2 |" in text and "n/a (none verified) | n/a (not metered) |" in text
    assert loop_quality.markdown(Tables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()), "h1") == []


def noise_loops(rng: np.random.Generator, sessions: int, runs: int) -> Tables:
    """Keep/revert loops on pure noise (σ = 1 around a session offset), 5% of the runs crashing."""
    bpb = 10.0 + rng.normal(0, 0.5, (sessions, 1)) + rng.standard_normal((sessions, runs + 1))
    crash = rng.random((sessions, runs + 1)) < 0.05
    crash[:, 0] = False
    best = np.minimum.accumulate(np.where(crash, np.inf, bpb), axis=1)
    keep = np.zeros_like(crash)
    keep[:, 1:] = ~crash[:, 1:] & (bpb[:, 1:] < best[:, :-1])
    keep[:, 0] = True
    sid = np.repeat([f"s{i}" for i in range(sessions)], runs + 1)
    experiments = pd.DataFrame({"session_id": sid, "agent": "a", "idx": np.tile(np.arange(runs + 1), sessions),
                                "claimed_val_bpb": np.where(crash, 0.0, bpb).ravel(),
                                "status": np.where(crash, "crash", np.where(keep, "keep", "discard")).ravel(),
                                "training_seconds": 1.0})
    table = pd.DataFrame({"session_id": [f"s{i}" for i in range(sessions)], "agent": "a", "profile_hash": "h",
                          "wall_seconds": 100.0})
    return Tables(table, experiments, pd.DataFrame(), pd.DataFrame())


def test_excess_area_is_zero_on_pure_noise():
    """4,000 loops of 20 runs on pure noise, σ known: the mean excess area is 0 within 3 Monte Carlo SE. Catches the
    raw area under best-so-far without the null (+1.46σ), and the null with E[max of d] (one draw short: +0.08σ)."""
    tables = noise_loops(np.random.default_rng(21), 4000, 20)
    known = SigmaEstimate(1.0, 1.0, 1.0, math.inf, 0, 0)
    frame = loop_quality.session_frame(tables, {"h": LoopNoise("p", "h", known, known)})
    area = frame["excess_area"].to_numpy()
    assert abs(area.mean()) < 3 * area.std() / math.sqrt(area.size)


def test_replication_rate_is_alpha_on_pure_noise():
    """4,000 sessions that kept something with no effect, verified on 5 seeds: replication rate 0.05 ± 0.01 (MC SE
    0.0034). Catches "replicated = verified gain > 0" (rate 0.5)."""
    rng = np.random.default_rng(22)
    n, seeds = 4000, (1, 2, 3, 4, 5)
    rows = []
    diffs = rng.standard_normal((n, len(seeds)))
    for i in range(n):
        for k, seed in enumerate(seeds):
            common = dict(session_id=f"s{i}", agent="a", seed=seed, split="val", status="ok", pair_status="ok")
            rows += [dict(common, role="baseline", train_py_hash="B", bpb=3.0),
                     dict(common, role="final", train_py_hash=f"F{i}", bpb=3.0 - diffs[i, k])]
    experiments = pd.DataFrame({"session_id": np.repeat([f"s{i}" for i in range(n)], 2), "agent": "a",
                                "idx": np.tile([0, 1], n), "claimed_val_bpb": 3.0, "status": "keep",
                                "training_seconds": 1.0})
    tables = Tables(pd.DataFrame({"session_id": [f"s{i}" for i in range(n)], "agent": "a", "profile_hash": "h",
                                  "wall_seconds": 10.0}), experiments, pd.DataFrame(rows), pd.DataFrame())
    frame = loop_quality.session_frame(tables, {})
    assert frame["kept_verified"].all()
    assert frame["replicated"].mean() == pytest.approx(0.05, abs=0.01)
