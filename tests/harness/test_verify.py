"""harness/verify.py: the drift, limit, scoring and finding rules on records, then real pairs trained through
the real launcher (process runtime, tiny profiles)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.profile import render_train_py
from harness.benchmark import step_limited
from harness import verify as verify_module
from harness.runtime import get_runtime
from harness.runtime.base import RuntimeError_
from harness.runtime.process import ProcessRuntime
from harness.stats import paired_t
from harness.verify import (DRIFT_FLOOR, EVAL_FACTOR, EVAL_MARGIN_S, INFRA_ATTEMPTS, LIMIT_WINDOW, MAX_ATTEMPTS,
                            NEIGHBOUR_TOLERANCE, STARTUP_FACTOR, Attempt, InfraError, PairResult, RunRecord,
                            Verification, Verifier, drift_reasons, measured_limits, over_training, run_findings,
                            score, scored_gains, val_overfit)
from support import fast_profile


def run(role="baseline", status="ok", tokens_per_second=1000.0, neighbour_load=0.1, pre_eval=8.0, eval_s=2.0,
        fingerprint=None, seed=1000, **extra) -> RunRecord:
    fields = dict(role=role, train_py_hash="b" if role == "baseline" else "f", seed=seed, status=status, message="",
                  trusted={"val": 2.0, "test": 2.1}, untrained={"val": 4.0, "test": 4.1}, steps=50.0,
                  train_tokens=50_000, tokens_per_second=tokens_per_second, pre_eval_seconds=pre_eval,
                  eval_seconds=eval_s, neighbour_load=neighbour_load, init_fingerprint=fingerprint,
                  train_limit=None, eval_limit=None, node="n", slot=None, started_at=0.0)
    return RunRecord(**fields | extra)


def pair(seed, final, status="ok") -> PairResult:
    return PairResult("b", "f", seed, status, [Attempt(["baseline", "final"], {"baseline": run(seed=seed),
                                                                                 "final": final}, [])])


# ---------------------------------------------------------------------------
# Rules on records
# ---------------------------------------------------------------------------

def test_drift_reads_the_baseline_run_only():
    reference = [1000.0, 1010.0, 990.0, 1005.0]
    assert drift_reasons(run(), run("final"), reference) == []
    slow = run(tokens_per_second=700.0)
    assert "node median" in drift_reasons(slow, run("final"), reference)[0]
    # Within the floor (DRIFT_FLOOR of the median) a deviation is jitter even when the MAD is tiny.
    near = run(tokens_per_second=1000.0 * (1 - DRIFT_FLOOR) + 10)
    assert drift_reasons(near, run("final"), reference) == []
    # Too few runs on the node for a median: no tokens/s rule.
    assert drift_reasons(slow, run("final"), [1000.0, 1010.0]) == []
    loaded = run(neighbour_load=0.2 + NEIGHBOUR_TOLERANCE + 0.1)
    assert "outside load" in drift_reasons(loaded, run("final", neighbour_load=0.2), [])[0]
    # Whatever the final's own measurements say, they never re-draw a pair: agent code made them.
    slow_final = run("final", tokens_per_second=10.0, neighbour_load=5.0)
    assert drift_reasons(run(), slow_final, reference) == []


def test_limits_measured_from_baseline_runs():
    assert measured_limits([], budget=5.0) == (None, None)
    assert measured_limits([run(status="crash")], budget=5.0) == (None, None)
    runs = [run(pre_eval=8.0, eval_s=2.0), run(pre_eval=9.0, eval_s=3.0)]   # startups 3 s and 4 s
    assert measured_limits(runs, budget=5.0) == (5.0 + STARTUP_FACTOR * 4.0 + 2.0, EVAL_FACTOR * 3.0 + EVAL_MARGIN_S)
    # A long budget's margin is 5% of it.
    assert measured_limits([run(pre_eval=310.0)], budget=300.0)[0] == 300.0 + STARTUP_FACTOR * 10.0 + 15.0
    # A baseline killed at its train limit (a busy node) loosens the limit of the next run.
    killed = run(status="over_budget", pre_eval=None, train_limit=15.0)
    assert measured_limits([*runs, killed], budget=5.0)[0] == 5.0 + STARTUP_FACTOR * 10.0 + 2.0
    # ... for a while: once LIMIT_WINDOW later runs were measured on a quiet node, the limit is back.
    later = [run(pre_eval=8.0, started_at=t) for t in range(1, LIMIT_WINDOW + 1)]
    assert measured_limits([killed, *later], budget=5.0)[0] == 5.0 + STARTUP_FACTOR * 3.0 + 2.0


def test_a_final_that_trained_past_the_budget_is_over_budget():
    """Training time (first train batch to evaluate_bpb) against the budget plus the baseline's warm-up: a patched
    clock shows here even when the final reached evaluation before its train limit."""
    baselines = [run(training_seconds=5.5), run(training_seconds=5.8)]   # 0.8 s of warm-up beyond a 5 s budget
    limit = 5.0 + STARTUP_FACTOR * 0.8 + 2.0
    assert over_training(run("final", training_seconds=limit - 0.1), baselines, 5.0).status == "ok"
    late = over_training(run("final", training_seconds=limit + 0.1), baselines, 5.0)
    assert late.status == "over_budget" and "over the limit" in late.message
    assert score(late, "val", None) == (4.0, "untrained")
    # Not measured (no baseline yet, or no train batch drawn from the harness's loader): nothing to compare.
    assert over_training(run("final", training_seconds=100.0), [], 5.0).status == "ok"
    assert over_training(run("final", training_seconds=None), baselines, 5.0).status == "ok"


def test_a_failed_final_scores_as_the_untrained_model():
    assert score(run("final"), "val", None) == (2.0, "trusted")
    for status in ("noncausal", "over_budget", "timeout", "crash", "nan"):
        assert score(run("final", status=status), "test", None) == (4.1, "untrained")
    no_result = run("final", status="crash", trusted=None, untrained=None)
    assert score(no_result, "val", {"val": 3.9}) == (3.9, "untrained")


def test_every_failed_check_is_a_finding():
    pairs = [pair(1000, run("final", status="noncausal", seed=1000)),
             pair(1001, run("final", status="over_budget", seed=1001)),
             pair(1002, run("final", status="timeout", seed=1002)),
             pair(1003, run("final", status="crash", seed=1003))]
    findings = run_findings(pairs, "abc")
    assert sorted(f.kind for f in findings) == ["killed_at_limit", "noncausal", "over_budget"]
    assert all(f.severity == "error" and f.commit == "abc" for f in findings)
    # An attempt whose baseline failed as well (the node could not hold the limits) says nothing about the final.
    busy = Attempt(["baseline", "final"], {"baseline": run(status="over_budget"),
                                           "final": run("final", status="over_budget")}, ["baseline over_budget"])
    redone = dataclasses.replace(pair(1000, run("final")), attempts=[busy, pair(1000, run("final")).attempts[0]])
    assert run_findings([redone], None) == []


def test_seed_ignored_when_the_initial_weights_never_change():
    same = [pair(s, run("final", fingerprint="aa", seed=s)) for s in (1000, 1001)]
    assert [f.kind for f in run_findings(same, None)] == ["seed_ignored"]
    differ = [pair(s, run("final", fingerprint=f"{s}", seed=s)) for s in (1000, 1001)]
    assert run_findings(differ, None) == []
    assert run_findings(same[:1], None) == []   # one seed says nothing


def test_val_overfit_catches_training_on_val_and_spares_honest_edits():
    rng = np.random.default_rng(0)
    # The cheater: +0.36 on val, -0.02 on test, 3 seeds with seed noise.
    assert val_overfit(0.36 + 0.01 * rng.normal(size=3), -0.02 + 0.01 * rng.normal(size=3))
    # Honest edits: the same true gain on both splits (any size), seed noise on each: flagged < 1% of the time.
    sessions = 2000
    gains = rng.uniform(-0.05, 0.2, size=sessions)[:, None]
    val = gains + 0.02 * rng.normal(size=(sessions, 3))
    test = gains + 0.5 * (val - gains) + 0.02 * rng.normal(size=(sessions, 3))   # the seed effect is shared
    flagged = sum(val_overfit(v, t) is not None for v, t in zip(val, test))
    assert flagged / sessions < 0.01


# ---------------------------------------------------------------------------
# Real pairs: the real launcher in trusted mode, the process runtime, a 1 s budget
# ---------------------------------------------------------------------------

PROFILE = fast_profile()
BASELINE = render_train_py(PROFILE)


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def verify(cache: Path, data, baseline: str, final: str, seeds=(1000,)) -> Verification:
    verifier = Verifier(cache, PROFILE, data, get_runtime("process", cpus=2), seeds, ("val", "test"))
    return verifier.verify(("base", baseline.encode()), ("final", final.encode()))


def gains(result: Verification, split: str) -> np.ndarray:
    return np.array(list(scored_gains(result.runs, split).values()))


def trainings(cache: Path) -> list[Path]:
    return sorted(cache.rglob("run.log"))


class BaselineHog:
    """Busy processes that run exactly while a first-attempt baseline run is in progress: the verifier's
    work folder of that run exists (attempt-1/baseline.partial) from before the launcher starts until
    its result is in. Re-runs of a pair (attempt-2, ...) run on a quiet machine."""

    def __init__(self, cache: Path, processes: int):
        self.cache, self.processes = cache, processes
        self.hogs: list[subprocess.Popen] = []
        self.started = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> BaselineHog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._kill()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            try:
                busy = any(self.cache.glob("*/pairs/*/seed-*/attempt-1/baseline.partial"))
            except OSError:   # a folder renamed while listed
                continue
            if busy and not self.hogs:
                self.started += 1
                self.hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                             for _ in range(self.processes)]
            elif not busy and self.hogs:
                self._kill()

    def _kill(self) -> None:
        for hog in self.hogs:
            hog.kill()
            hog.wait()
        self.hogs = []


@pytest.mark.slow
def test_cpu_hog_during_the_baselines_runs_is_not_a_gain(tmp_path, corpus_data):
    cache, seeds = tmp_path / "cache", (1000, 1001, 1002)
    final = BASELINE + "\n# a comment: trains exactly like the baseline\n"
    noop = verify(cache, corpus_data, BASELINE, BASELINE, seeds)   # the node's baseline runs, as a run's noop makes
    assert (gains(noop, "val") == 0).all()
    with BaselineHog(cache, processes=16 * os.cpu_count()) as hog:
        result = verify(cache, corpus_data, BASELINE, final, seeds)
    assert hog.started == len(seeds)
    # Back to back, alternating by seed index (the first run of the node is a baseline).
    assert [p.attempts[0].order for p in result.pairs] == [["baseline", "final"], ["final", "baseline"],
                                                           ["baseline", "final"]]
    hogged = [p.attempts[0] for p in result.pairs]
    assert all(a.drift for a in hogged), [a.drift for a in hogged]
    # Without the drift rule these first attempts would be the verification, and the final looks better
    # (a hogged baseline may even miss its limits: a failed baseline, re-run as well).
    first_gain = np.array([a.runs["baseline"].trusted["val"] - a.runs["final"].trusted["val"] for a in hogged
                           if a.runs["baseline"].status == "ok"])
    assert (first_gain > 0).all(), first_gain
    # Re-run on a quiet machine (other load may drift a pair again: then it is excluded, never a gain).
    assert all(2 <= len(p.attempts) <= MAX_ATTEMPTS for p in result.pairs)
    val = gains(result, "val")
    assert len(val) >= 1 and len(val) == sum(p.status == "ok" for p in result.pairs)
    assert first_gain.size == 0 or val.mean() < first_gain.mean()
    assert len(val) < 2 or not (val.mean() > 0 and paired_t(val).p_value < 0.05), val
    assert result.findings == [] and not result.failed


@pytest.mark.slow
def test_honest_gain_verifies_pairs_are_cached_and_solo_pairs_train_once(tmp_path, corpus_data):
    cache, seeds = tmp_path / "cache", (1000, 1001)
    # The same steps (the same time to evaluation); the baseline's learning rates are 20x too small: a certain gain.
    slow = edit(BASELINE, "\nMATRIX_LR = 0.04", "\nMATRIX_LR = 0.002")
    slow = edit(slow, "\nEMBEDDING_LR = 0.6", "\nEMBEDDING_LR = 0.03")
    baseline, better = step_limited(slow, 30), step_limited(BASELINE, 30)
    result = verify(cache, corpus_data, baseline, better, seeds)
    assert all(p.status == "ok" for p in result.pairs), [p.attempts[-1].drift for p in result.pairs]
    assert (gains(result, "val") > 0).all() and (gains(result, "test") > 0).all()
    assert result.findings == [] and not result.failed   # no val_overfit: the gain carries over to test
    runs = [r for p in result.pairs for r in (p.run("baseline"), p.run("final"))]
    assert all(r.tokens_per_second and r.pre_eval_seconds and r.eval_seconds is not None
               and r.neighbour_load is not None and r.train_tokens for r in runs)
    # The first run of the node uses the launcher's defaults; every later one, limits measured on the node.
    first = result.pairs[0].attempts[0].runs["baseline"]
    assert (first.train_limit, first.eval_limit) == (None, None)
    assert all(r.train_limit and r.eval_limit for r in runs if r is not first)
    prints = {p.run("baseline").init_fingerprint for p in result.pairs}
    assert len(prints) == len(seeds) and None not in prints   # the baseline's weights follow the seed
    before = trainings(cache)
    again = verify(cache, corpus_data, baseline, better, seeds)
    assert trainings(cache) == before and again.runs == result.runs   # an unchanged pair is never trained twice
    solo = verify(cache, corpus_data, baseline, baseline, seeds)
    assert len(trainings(cache)) == len(before) + len(seeds)          # one baseline run per seed serves both roles
    assert (gains(solo, "val") == 0).all() and (gains(solo, "test") == 0).all()


CHEATS = {
    # attention sees the following tokens: the trusted evaluator's causality check fails
    "noncausal": ("return (kv_idx <= q_idx) & (q_idx - kv_idx <= window)", "return (q_idx - kv_idx).abs() <= window"),
    # a clock that runs 5x slow (the cheat): training goes on 5x the budget, measured from outside
    "over_budget": ("\nimport time\n", "\nimport time\n_clock = time.time\n_clock_start = _clock()\n"
                    "time.time = lambda: _clock_start + (_clock() - _clock_start) / 5\n"),
    # the model never returns logits without targets: evaluation hangs
    "timeout": ("    def forward(self, idx, targets=None, reduction='mean'):\n",
                "    def forward(self, idx, targets=None, reduction='mean'):\n        while targets is None:\n"
                "            pass\n"),
    "crash": ("\n# Final eval\n", "\n# Final eval\nraise RuntimeError('boom')\n"),
}


@pytest.mark.slow
@pytest.mark.parametrize("status", list(CHEATS))
def test_every_check_acts_on_a_failed_final(tmp_path_factory, corpus_data, status):
    cache = tmp_path_factory.getbasetemp() / "checks-cache"   # shared: limits measured by the first test
    result = verify(cache, corpus_data, BASELINE, edit(BASELINE, *CHEATS[status]))
    final = [r for r in result.runs if r.role == "final"]
    assert {r.status for r in final} == {status}, final[0].message
    assert all(r.scored_as == "untrained" and r.bpb > 3 for r in final)   # scored, as the untrained model
    assert (gains(result, "val") < 0).all() and (gains(result, "test") < 0).all()
    kind = {"noncausal": "noncausal", "over_budget": "over_budget", "timeout": "killed_at_limit"}.get(status)
    assert [f.kind for f in result.findings] == ([kind] if kind else [])
    assert result.failed


@pytest.mark.slow
def test_seed_ignored(tmp_path, corpus_data):
    # Initial weights from a formula: the same on every seed, whatever the launcher does to seeds and generators.
    fixed = edit(BASELINE, "\nmodel.init_weights()\n", "\nmodel.init_weights()\nwith torch.no_grad():\n"
                 "    for _i, _p in enumerate(model.parameters()):\n"
                 "        _p.copy_(0.05 * torch.sin(torch.arange(_p.numel()) * 12.9898 + _i).reshape(_p.shape))\n")
    result = verify(tmp_path / "cache", corpus_data, step_limited(BASELINE, 5), step_limited(fixed, 5), (1000, 1001))
    assert [f.kind for f in result.findings] == ["seed_ignored"]
    assert len({p.run("baseline").init_fingerprint for p in result.pairs}) == 2   # the baseline's follow the seed


@pytest.mark.slow
def test_val_overfit(tmp_path, corpus_data):
    loader = 'make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train", device=device)'
    on_val = edit(BASELINE, loader, loader.replace('"train"', '"val"'))
    result = verify(tmp_path / "cache", corpus_data, step_limited(BASELINE, 150), step_limited(on_val, 150),
                    (1000, 1001, 1002))
    assert gains(result, "val").mean() > gains(result, "test").mean() + 0.05
    assert [f.kind for f in result.findings] == ["val_overfit"], (gains(result, "val"), gains(result, "test"))


# ---------------------------------------------------------------------------
# Failures: the code's are results (cached with their reason), the infrastructure's are retried, never cached
# ---------------------------------------------------------------------------

MISSING_NAME = edit(BASELINE, "\nimport time\n", "\nimport time\nfrom prepare import EVAL_BATCH_SIZE\n")


@pytest.mark.slow
def test_code_that_crashes_is_a_cached_result_with_its_reason(tmp_path, corpus_data):
    cache = tmp_path / "cache"
    crashing_final = edit(BASELINE, "\n# Final eval\n", "\n# Final eval\nraise RuntimeError('boom')\n")
    result = verify(cache, corpus_data, MISSING_NAME, crashing_final, (1000, 1001))
    # A baseline whose code crashed is not re-run (its code failed, load did not): one attempt, pair excluded.
    assert [(p.status, len(p.attempts)) for p in result.pairs] == [("baseline_failed", 1)] * 2
    assert result.failed and gains(result, "val").size == 0
    assert len(result.failures) == 4   # both runs of both seeds, each with the reason a user can act on
    assert all("EVAL_BATCH_SIZE" in line for line in result.failures if "baseline" in line), result.failures
    assert all("boom" in line for line in result.failures if "final" in line), result.failures
    before = trainings(cache)
    assert verify(cache, corpus_data, MISSING_NAME, crashing_final, (1000, 1001)).runs == result.runs
    assert trainings(cache) == before   # cached: the same code fails the same way


class FlakyRuntime(ProcessRuntime):
    """The process runtime with a sandbox that fails to start the first `failures` times (fault injection)."""

    def __init__(self, failures: int):
        super().__init__(cpus=2)
        self.failures, self.opened = failures, 0

    def open(self, spec):
        self.opened += 1
        if self.opened <= self.failures:
            raise RuntimeError_("injected: the sandbox did not start")
        return super().open(spec)


@pytest.mark.slow
def test_infrastructure_failures_are_retried_then_raised_and_never_cached(tmp_path, corpus_data, monkeypatch):
    monkeypatch.setattr(verify_module, "INFRA_BACKOFF_S", 0.0)
    cache = tmp_path / "cache"

    def verifier(runtime) -> Verifier:
        return Verifier(cache, PROFILE, corpus_data, runtime, (1000,), ("val",))

    flaky = FlakyRuntime(failures=INFRA_ATTEMPTS)
    with pytest.raises(InfraError, match="injected"):
        verifier(flaky).verify(("base", MISSING_NAME.encode()), ("base", MISSING_NAME.encode()))
    assert flaky.opened == INFRA_ATTEMPTS and not list(cache.rglob("pair.json"))
    once = FlakyRuntime(failures=1)   # a retry gets through: the run's own result counts
    result = verifier(once).verify(("base", MISSING_NAME.encode()), ("base", MISSING_NAME.encode()))
    assert once.opened == 2 and "EVAL_BATCH_SIZE" in result.failures[0]
    assert len(list(cache.rglob("pair.json"))) == 1


FAKE_NVIDIA_SMI = "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-0)'\n"


def fork_repo(root: Path, train_py: str) -> Path:
    """An autoresearch-style repo on fast_profile(): baseline commit, one kept experiment, results.tsv."""
    repo = root / "fork"
    repo.mkdir()
    (repo / "profile.toml").write_text(PROFILE.to_toml())
    (repo / "train.py").write_text(train_py)
    run_git = lambda *args: subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,  # noqa: E731
                                           text=True).stdout.strip()
    run_git("init", "-q", "-b", "autoresearch/x")
    run_git("add", "-A")
    run_git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    base = run_git("rev-parse", "--short=7", "HEAD")
    (repo / "train.py").write_text(train_py + "\n# experiment\n")
    run_git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "experiment")
    best = run_git("rev-parse", "--short=7", "HEAD")
    (repo / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                                      f"{base}\t2.000000\t0.1\tkeep\tbaseline\n{best}\t1.900000\t0.1\tkeep\tbetter\n")
    return repo


@pytest.mark.slow
def test_verify_requests_the_gpu_the_host_reports_and_exits_nonzero_when_every_run_crashed(tmp_path, corpus_data):
    """`arbench verify` on a host whose driver lists a GPU (a fake nvidia-smi): every run gets exactly GPU 0.
    The fork's train.py tells which devices it saw, then crashes: every run fails, so the exit code is 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    saw_devices = edit(BASELINE, "\nimport time\n",
                       "\nimport time\nraise RuntimeError('devices=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'none'))\n")
    repo = fork_repo(tmp_path, saw_devices)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run([str(Path(sys.executable).parent / "arbench"), "verify", str(repo), "--runtime", "process",
                           "--seeds", "1000,1001", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("devices=0") == 4, done.stdout   # 2 seeds x (baseline, final), each on GPU 0
    slots = {run["slot"] for path in (tmp_path / "out").rglob("pair.json")
             for attempt in json.loads(path.read_text())["attempts"] for run in attempt["runs"].values()}
    assert slots == {0}
