"""`make gpu-check` (harness/gpu_check.py) where no GPU is: one clear line, exit 2; and its figures, read from a real
CPU verification run (the shared `pipeline` run's cache: no training of its own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.gpu_check import REFERENCE, RunFigures, comparison_line, run_figures, sigma
from harness.schedule import visible_gpus
from harness.store import read_json
from harness.verify import PairResult


@pytest.mark.skipif(bool(visible_gpus()), reason="this host has a GPU")
def test_a_host_without_a_gpu_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness.gpu_check", "--out", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "gpu-check: this host has no NVIDIA GPU (nvidia-smi -L lists none); run it on a GPU machine"]


@pytest.mark.slow
def test_figures_of_a_real_training_run(pipeline):
    run_dir, _ = pipeline
    pair_json = next(run_dir.glob("cache/*/pairs/*/seed-*/pair.json"))
    record = PairResult.from_dict(read_json(pair_json)).attempts[-1].runs["baseline"]
    log = next(pair_json.parent.glob("attempt-*/baseline/run.log")).read_text()
    figures = run_figures(record, log)
    assert figures.status == "ok" and figures.val_bpb == record.trusted["val"]
    assert figures.steps >= 1 and figures.tokens_per_second > 0 and figures.training_seconds > 0
    assert 0 < figures.mfu_percent < 100   # train.py's formula on the launcher's tokens/s (no summary when trusted)
    line = comparison_line("cpu", figures)
    assert f"(~{REFERENCE['steps']})" in line and f"val_bpb {figures.val_bpb:.4f}" in line


def test_sigma_is_over_the_runs_that_finished():
    def run(seed, status, bpb):
        return RunFigures(seed, status, bpb, None, None, None, None, None)
    assert sigma([run(1, "ok", 1.0), run(2, "ok", 1.2), run(3, "crash", None)]) == pytest.approx(0.1414, abs=1e-4)
    assert sigma([run(1, "ok", 1.0)]) is None
