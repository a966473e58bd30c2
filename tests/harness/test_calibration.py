"""Per-node calibration (harness/calibration.py) on a real tiny run, and the analysis's node adjustment
(harness/model.py node_adjusted) calibrated on simulated leaderboards with fixed seeds."""

import itertools
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

from harness import model
from harness.analyze import Tables, model_data, scored_pairs
from harness.calibration import NodeCalibration, ensure_calibrated, node_name
from harness.config import ConfigError, parse_config
from harness.run import _config_fingerprint
from harness.runtime import get_runtime
from harness.store import rebuild_tables
from harness.verify import InfraError, RunRecord, Verifier
from support import fast_profile

ALPHA = 0.05
TOLERANCE = 0.01        # of a size or coverage, as in test_stats_calibration.py
N_LEADERBOARDS = 2000   # Monte Carlo SE of a rate near 0.05: 0.0049


def test_a_run_calibrates_its_node_before_the_sessions(pipeline, monkeypatch):
    """The pipeline fixture's `arbench run` (calibration_runs=2) made the only real calibration runs of the tests."""
    run_dir, _ = pipeline
    calibration = NodeCalibration.from_dict(json.loads((run_dir / "nodes" / f"{node_name()}.json").read_text()))
    sessions = [json.loads(p.read_text())["started_at"] for p in (run_dir / "sessions").glob("*/session.json")]
    assert max(r.started_at for r in calibration.runs) < min(sessions)
    assert [r.seed for r in calibration.runs] == [9000, 9001] and {r.status for r in calibration.runs} == {"ok"}
    assert calibration.profile_hash == fast_profile().hash and calibration.node == node_name()
    summary = calibration.summary
    assert summary.runs_ok == 2 and summary.steps_mean > 0 and summary.tokens_per_second_mean > 0
    assert 0 < summary.val_bpb_mean < 20 and summary.val_bpb_sd is not None
    nodes = pd.read_parquet(run_dir / "tables" / "nodes.parquet")
    assert nodes[["node", "seed", "status"]].values.tolist() == [[node_name(), 9000, "ok"], [node_name(), 9001, "ok"]]
    assert nodes["val_bpb"].std() == pytest.approx(summary.val_bpb_sd)
    assert f"- node {node_name()}: σ = " in (run_dir / "leaderboard.md").read_text()   # the noise floor per node
    monkeypatch.setattr(Verifier, "baseline_run", lambda *a, **k: pytest.fail("calibrated twice"))
    assert ensure_calibrated(run_dir, fast_profile(), None, None, None, 2) == calibration


def fake_run(self, work, seed, gpu=None) -> RunRecord:
    """A calibration run that trains nothing: slow enough that two slots overlap."""
    time.sleep(0.3)
    return RunRecord("baseline", "base", seed, "ok", "", {"val": 2.0 + (seed - 9000) / 10}, None, 100.0, 6400, 800.0,
                     9.0, 1.0, 0.0, None, None, None, self.node, gpu, time.time(), 8.0)


def test_the_slots_of_a_node_wait_for_one_calibration(tmp_path, corpus_data, monkeypatch):
    trained = []
    monkeypatch.setattr(Verifier, "baseline_run", lambda *a, **k: trained.append(a[2]) or fake_run(*a, **k))
    profile, runtime = fast_profile(), get_runtime("process", cpus=1)
    assert ensure_calibrated(tmp_path, profile, corpus_data, runtime, None, 0) is None
    assert not (tmp_path / "nodes").exists()
    results = []
    slots = [threading.Thread(target=lambda: results.append(
        ensure_calibrated(tmp_path, profile, corpus_data, runtime, None, 3))) for _ in range(3)]
    for slot in slots:
        slot.start()
    for slot in slots:
        slot.join()
    assert trained == [9000, 9001, 9002] and results[0] == results[1] == results[2]
    summary = results[0].summary
    assert (summary.runs_ok, summary.steps_mean, summary.tokens_per_second_mean) == (3, 100.0, 800.0)
    assert (summary.val_bpb_mean, summary.val_bpb_sd) == pytest.approx((2.1, 0.1))
    assert ensure_calibrated(tmp_path, profile, corpus_data, runtime, None, 3) == results[0] and len(trained) == 3
    assert rebuild_tables(tmp_path)["nodes"]["val_bpb"].tolist() == pytest.approx([2.0, 2.1, 2.2])


# ---------------------------------------------------------------------------
# The node adjustment of the verified differences
# ---------------------------------------------------------------------------

def leaderboards_on_nodes(gains, fast_share, node_effect, rng, n_sessions=20, n_seeds=5, n=N_LEADERBOARDS,
                          keep_nothing=0.2, tau=1.0, seed_sd=1.0, agent_seed_sd=0.3, run_sd=1.0):
    """n leaderboards of noop + one agent per true gain (units of the run noise) whose verified pairs ran on a fast
    or a slow node, each pair on the fast one with its agent's fast_share: a changed session's d gains +node_effect
    on the fast node and −node_effect on the slow one (a final whose gain grows with throughput), on top of the
    session's gain, the baseline's seed term, agent × seed and run noise. Returns (d, changed, agent, node, true)."""
    true = np.concatenate([[0.0], gains])
    share = np.concatenate([[0.5], fast_share])
    agent = np.repeat(np.arange(true.size), n_sessions)
    b = rng.normal(0, seed_sd, (n, 1, n_seeds))
    c = rng.normal(0, agent_seed_sd, (n, true.size, n_seeds))[:, agent]
    changed = (rng.random((n, agent.size)) >= keep_nothing) & (agent > 0)
    delta = (true / (1 - keep_nothing))[agent][None, :, None] + tau * rng.normal(size=(n, agent.size, 1))
    node = (rng.random((n, agent.size, n_seeds)) < share[agent][None, :, None]).astype(int)   # 1: the fast node
    d = (delta + b + c + run_sd * rng.normal(size=(n, agent.size, n_seeds)) + node_effect * (2 * node - 1)) \
        * changed[..., None]
    return d, changed, agent, node, true


def fits(d, changed, agent, node):
    """(naive, node-adjusted) fits of a stack of leaderboards."""
    adjusted = np.stack([model.node_adjusted(d[i], changed[i], agent, node[i]) for i in range(d.shape[0])])
    return model.fit(d, changed, agent), model.fit(adjusted, changed, agent)


def test_node_effects_are_no_skill_once_adjusted():
    """No agent is better than the baseline; agent 1's pairs land on the fast node 85% of the time, agent 2's 15%:
    without the adjustment agent 1 'beats' the baseline far more often than α, with it every test holds α."""
    d, changed, agent, node, _ = leaderboards_on_nodes([0.0, 0.0, 0.0], [0.85, 0.15, 0.5], 1.0,
                                                       np.random.default_rng(14))
    naive, adjusted = (model.compare(f, ALPHA, beats=False) for f in fits(d, changed, agent, node))
    assert np.mean(naive.p_gain[:, 1] <= ALPHA) > 2 * ALPHA      # measured 0.15
    assert np.mean(naive.p_pair[:, 1, 2] <= ALPHA) > 10 * ALPHA  # 0.74: agent 1 'beats' agent 2
    assert np.all(np.mean(adjusted.p_gain[:, 1:] <= ALPHA, axis=0) <= ALPHA + TOLERANCE)
    assert np.mean(adjusted.p_pair[:, 1, 2] <= ALPHA) <= ALPHA + TOLERANCE


def test_adjusted_intervals_cover_the_gain_on_the_average_node():
    d, changed, agent, node, true = leaderboards_on_nodes([0.5, 1.5, 3.0], [0.85, 0.15, 0.5], 1.0,
                                                          np.random.default_rng(15))
    _, f = fits(d, changed, agent, node)
    eye = np.eye(4)
    for i in range(1, 4):
        assert np.mean(model.p_value(model.pivot(f, eye[i]), null=true[i]) > ALPHA) >= 1 - ALPHA - TOLERANCE
    pv = model.pivot(f, eye[1] - eye[2])
    assert np.mean(model.p_value(pv, null=true[1] - true[2]) > ALPHA) >= 1 - ALPHA - TOLERANCE


def test_node_adjustment_leaves_what_it_cannot_identify():
    rng = np.random.default_rng(16)
    d, changed, agent, node, _ = leaderboards_on_nodes([0.0, 0.0], [1.0, 0.0], 1.0, rng, n=1)
    d, changed, node = d[0], changed[0], node[0]
    # each agent on its own node: node and agent are confounded, nothing to subtract
    assert np.array_equal(model.node_adjusted(d, changed, agent, node), d)
    assert np.array_equal(model.node_adjusted(d, changed, agent, np.zeros_like(node)), d)   # one node
    assert np.array_equal(model.node_adjusted(d, changed, agent, np.where(node == 1, -1, 0)), d)   # unknown nodes
    # nodes that vary within units: unit + seed effects and a shift of 2 on node 1, recovered exactly (centred: ±1)
    mixed = np.where(rng.random(node.shape) < 0.5, 1, 0)
    base = (rng.normal(size=(agent.size, 1)) + rng.normal(size=(1, node.shape[1]))) * changed[:, None]
    adjusted = model.node_adjusted(base + 2.0 * mixed * changed[:, None], changed, agent, mixed)
    assert adjusted[changed] == pytest.approx(base[changed] + 1.0)
    assert np.all(adjusted[~changed] == 0.0)   # sessions that kept nothing stay exactly 0
    # each session's pairs on one node, the agents on both: agent + seed effects and the shift, recovered exactly
    per_unit = np.repeat(rng.integers(0, 2, (agent.size, 1)), node.shape[1], axis=1)
    base = (rng.normal(size=3)[agent][:, None] + rng.normal(size=(1, node.shape[1]))) * changed[:, None]
    adjusted = model.node_adjusted(base + 2.0 * per_unit * changed[:, None], changed, agent, per_unit)
    assert adjusted[changed] == pytest.approx(base[changed] + 1.0)


def test_the_analysis_reads_each_pairs_node():
    """verifications rows carry the node of their pair; analyze.model_data takes its effect out of d."""
    rng = np.random.default_rng(17)
    rows = []
    for s, seed in itertools.product(range(8), range(3)):
        agent, node = ("a", "b")[s % 2], rng.choice(["fast", "slow"])
        final = 1.0 - 0.1 * (s % 2) - 0.3 * (node == "fast") + 0.01 * rng.normal()
        rows += [dict(session_id=f"s{s}", agent=agent, role=role, train_py_hash=h, seed=seed, split="val", bpb=bpb,
                      status="ok", pair_status="ok", untrained_bpb=5.0, node=node)
                 for role, h, bpb in (("baseline", "base", 1.0), ("final", f"f{s}", final))]
    frame = pd.DataFrame(rows)
    tables = Tables(pd.DataFrame(), pd.DataFrame(), frame, pd.DataFrame())
    pairs = scored_pairs(tables).assign(agent=lambda p: p["session_id"].map(dict(zip(frame.session_id, frame.agent))))
    d, _, agent, _ = model_data(pairs, ["a", "b"])
    assert np.std(d[agent == 0]) < 0.05 and np.std(d[agent == 1]) < 0.05   # only the run noise is left
    naive, _, agent, _ = model_data(pairs.assign(node=""), ["a", "b"])   # rows made before nodes were recorded
    assert np.std(naive[agent == 0]) > 0.1


def test_calibration_runs_in_the_config():
    raw = {"run_id": "c", "profile": "cpu-tiny", "agents": ["noop"]}
    assert parse_config(raw).calibration_runs == 2
    config = parse_config(raw | {"calibration": {"runs": 0}})
    assert config.calibration_runs == 0 and _config_fingerprint(config) != _config_fingerprint(parse_config(raw))
    with pytest.raises(ConfigError, match="calibration.runs"):
        parse_config(raw | {"calibration": {"runs": -1}})
    with pytest.raises(ConfigError, match=r"calibration\.seeds"):
        parse_config(raw | {"calibration": {"seeds": 1}})
    with pytest.raises(ConfigError, match="9001"):
        parse_config(raw | {"seeds": {"verify": [1000, 9001]}})


def test_a_run_the_infrastructure_failed_is_recorded_not_raised(tmp_path, corpus_data, monkeypatch):
    def fail(self, work, seed, gpu=None):
        raise InfraError("the sandbox did not start")
    monkeypatch.setattr(Verifier, "baseline_run", fail)
    calibration = ensure_calibrated(tmp_path, fast_profile(), corpus_data, get_runtime("process", cpus=1), None, 2)
    assert calibration.runs == [] and calibration.summary.runs_ok == 0 and calibration.summary.val_bpb_sd is None
    nodes = rebuild_tables(tmp_path)["nodes"]
    assert nodes["status"].tolist() == ["infra_error"] * 2 and nodes["seed"].tolist() == [9000, 9001]
