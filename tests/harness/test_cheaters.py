"""Every control through the real pipeline (`arbench run`: sessions, collection, integrity, paired verification
on held-out seeds): each cheater is caught by the defence named for it, and no honest control gets any finding.
Removing a defence (a check, the out-of-process scorer, the host ledger, the seed analysis) fails this test."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.collect import collect
from harness.integrity import check_integrity
from harness.runtime import get_runtime
from harness.verify import Verifier
from harness.workspace import file_at
from support import fast_profile

pytestmark = pytest.mark.slow

# agent -> the finding kinds its session must get (session integrity and verification together)
CAUGHT = {
    "noop": set(),
    "random": set(),
    "greedy": set(),
    "tpe": set(),
    "cheater-prepare": {"prepare_modified"},
    "cheater-seed": {"seed_tampering"},
    "cheater-fake": {"results_mismatch"},   # its row without any run comes third: 2 experiments show the shaved one
    "cheater-generator": {"seed_tampering", "seed_ignored"},
    "cheater-print": {"printed_mismatch"},
    "cheater-noncausal": {"noncausal"},
    "cheater-clock": {"over_budget"},
    "cheater-valtrain": {"val_overfit"},
    "cheater-ledger": {"results_without_run", "ledger_forged"},
}


def test_every_control_is_in_the_pipeline_test():
    from agents.controls import CONTROLS
    assert set(CAUGHT) == set(CONTROLS)


@pytest.mark.parametrize("agent", list(CAUGHT))
def test_caught_by_its_defence(pipeline, agent):
    run_dir, _ = pipeline
    findings = pd.read_parquet(run_dir / "tables" / "findings.parquet")
    mine = findings[findings["agent"] == agent] if len(findings) else findings
    kinds = set(mine["kind"]) if len(mine) else set()
    assert CAUGHT[agent] <= kinds, mine.to_dict("records") if len(mine) else "no findings"
    if not CAUGHT[agent]:
        assert kinds == set(), mine.to_dict("records")   # not even a warning for an honest control


def test_no_cheat_verifies_as_a_gain(pipeline):
    """The cheats that only verification can see are failed runs, scored as the untrained model: never a gain."""
    run_dir, result = pipeline
    verifications = pd.read_parquet(run_dir / "tables" / "verifications.parquet")
    for agent in ("cheater-noncausal", "cheater-clock"):
        final = verifications[(verifications["agent"] == agent) & (verifications["role"] == "final")]
        assert len(final) and (final["status"] != "ok").all(), final.to_dict("records")
    leaderboard = (run_dir / "leaderboard.md").read_text()
    for agent in set(CAUGHT) - {"noop", "random", "greedy", "tpe"}:
        assert agent in leaderboard


def test_twenty_honest_hyperparameter_edits_get_no_finding(control_session, corpus_data, tmp_path):
    """The false-positive check: the random control's 20 edits (every one a commit, kept or discarded), through
    integrity and through paired verification on a held-out seed each (1000 and 1001 in turn: every per-run check
    acts; the checks across seeds are the pipeline test's, whose honest controls verify on 3 seeds), raise nothing."""
    s = control_session("random", 21)
    experiments = collect(s.workspace, s.ledger)
    assert len(experiments) == 21 and len({e.commit for e in experiments}) == 21
    assert check_integrity(s.workspace, s.baseline.files, experiments, s.ledger) == []
    verifiers = [Verifier(tmp_path / "cache", fast_profile(), corpus_data, get_runtime("process", cpus=2),
                          (seed,), ("val", "test")) for seed in (1000, 1001)]
    baseline = (s.baseline.commit, file_at(s.workspace, s.baseline.commit, "train.py"))
    findings = [f for i, e in enumerate(experiments[1:]) for f in verifiers[i % 2].verify(
        baseline, (e.commit, file_at(s.workspace, e.commit, "train.py"))).findings]
    assert findings == []
