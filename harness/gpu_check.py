"""`make gpu-check`: prove the GPU path the first time a machine with an NVIDIA GPU is at hand, in about 15 minutes.

    python -m harness.gpu_check [--out gpu-check] [--runtime auto|docker|process]

1. the sandbox sees the GPU: torch.cuda.is_available() and the device's name, in the runtime the runs use (the CUDA
   image, or this venv with the process runtime);
2. the h100 profile's baseline train.py for its full budget, once, as verification trains it (harness/verify.py:
   trusted launcher, sandbox, one GPU): MFU, tokens/s, steps and val_bpb next to the original's figures on one H100;
3. SIGMA_RUNS shorter seeded runs (the same train.py, a SHORT_BUDGET_S budget): the run-to-run σ of val_bpb;
4. `arbench run` of noop and random on the short profile, one GPU per session, verified.
It writes every figure to one JSON (<out>/gpu-check.json, path printed). On a host without a GPU it exits 2 with one
line; a step that fails is recorded in the JSON and the check exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.launch import parse_summary
from bench.profile import Profile, load_profile
from harness.data import DataMissing, DataPaths, require_prepared
from harness.runtime import get_runtime
from harness.runtime.base import Runtime, SandboxSpec
from harness.schedule import visible_gpus
from harness.store import write_json
from harness.verify import RunRecord, Verifier

# The original autoresearch's baseline on one H100 (its README and program.md): what a sound GPU path reproduces.
REFERENCE = {"mfu_percent": 40.0, "steps": 953, "val_bpb": 0.998}
SIGMA_RUNS = 3
SHORT_BUDGET_S = 15                  # training seconds of the σ runs and of the two sessions
SHORT_EVAL_TOKENS = 2 * 524288       # their evaluation: enough rows for a stable bpb, seconds on a GPU
SIGMA_SEEDS = tuple(range(2000, 2000 + SIGMA_RUNS))
DEVICE_PROBE = ("import json, torch; ok = torch.cuda.is_available(); "
                "print(json.dumps({'cuda': ok, 'device': torch.cuda.get_device_name(0) if ok else None, "
                "'torch': torch.__version__, 'cuda_version': torch.version.cuda}))")


@dataclass(frozen=True)
class RunFigures:
    """One training run's figures: the trusted val_bpb and the launcher's clock, with train.py's own MFU."""
    seed: int
    status: str
    val_bpb: float | None
    steps: float | None
    tokens_per_second: float | None
    mfu_percent: float | None
    training_seconds: float | None
    peak_vram_mb: float | None


def run_figures(record: RunRecord, log_text: str) -> RunFigures:
    """The figures of a verification run (its RunRecord and the run.log train.py wrote beside it). A trusted run's
    log has no summary (the launcher scores it), so MFU is train.py's own formula on the launcher's tokens/s."""
    summary = parse_summary(log_text)
    return RunFigures(seed=record.seed, status=record.status, val_bpb=(record.trusted or {}).get("val"),
                      steps=record.steps, tokens_per_second=record.tokens_per_second,
                      mfu_percent=summary.get("mfu_percent", mfu_percent(log_text, record.tokens_per_second)),
                      training_seconds=record.training_seconds or summary.get("training_seconds"),
                      peak_vram_mb=summary.get("peak_vram_mb"))


def mfu_percent(log_text: str, tokens_per_second: float | None) -> float | None:
    """100 × FLOPs per token × tokens/s / the device's peak, from the lines train.py prints before it trains."""
    flops = re.search(r"^Estimated FLOPs per token: (\S+)", log_text, re.MULTILINE)
    peak = re.search(r"^Device: .*\(peak (\S+) FLOP/s\)", log_text, re.MULTILINE)
    if not (flops and peak and tokens_per_second):
        return None
    return 100 * float(flops.group(1)) * tokens_per_second / float(peak.group(1))


def sigma(runs: list[RunFigures]) -> float | None:
    """Run-to-run standard deviation of val_bpb over the runs that finished."""
    values = [r.val_bpb for r in runs if r.status == "ok" and r.val_bpb is not None]
    return statistics.stdev(values) if len(values) >= 2 else None


def comparison_line(label: str, run: RunFigures) -> str:
    """One run's figures next to the reference's."""
    def show(value, fmt):
        return "n/a" if value is None else format(value, fmt)
    return (f"{label}: {run.status}, MFU {show(run.mfu_percent, '.1f')} % (original ~{REFERENCE['mfu_percent']:.0f} %),"
            f" steps {show(run.steps, '.0f')} (~{REFERENCE['steps']}), val_bpb {show(run.val_bpb, '.4f')} "
            f"(~{REFERENCE['val_bpb']}), tokens/s {show(run.tokens_per_second, ',.0f')}")


def short_profile(profile: Profile) -> Profile:
    return dataclasses.replace(profile, name=f"{profile.name}-short",
                               task={**profile.task, "time_budget": SHORT_BUDGET_S, "eval_tokens": SHORT_EVAL_TOKENS})


def device_probe(runtime: Runtime, gpu: int, folder: Path) -> dict:
    """torch's view of the GPU from inside a sandbox of the runtime the runs use."""
    folder.mkdir(parents=True, exist_ok=True)
    with runtime.open(SandboxSpec(name="arbench-gpu-check-probe", workspace=folder, gpu_ids=(gpu,))) as sandbox:
        result = sandbox.exec(["python", "-c", DEVICE_PROBE], folder / "probe.log", timeout_s=300)
    lines = (folder / "probe.log").read_text().strip().splitlines()
    try:
        return json.loads(lines[-1]) | {"exit_code": result.exit_code}
    except (IndexError, json.JSONDecodeError):
        return {"cuda": False, "exit_code": result.exit_code, "error": "\n".join(lines[-5:])}


def baseline_figures(verifier: Verifier, folder: Path, seed: int, gpu: int) -> RunFigures:
    record = verifier.baseline_run(folder, seed, gpu)
    log = folder / "run.log"
    return run_figures(record, log.read_text(errors="replace") if log.exists() else "")


def session_run(out: Path, profile: Profile, runtime: str, gpus: list[int]) -> dict:
    """noop and random through `arbench run`, one GPU per session (two at once where there are two), verified."""
    (out / "profile.toml").write_text(profile.to_toml())
    config = out / "run.toml"
    config.write_text(f'run_id = "gpu-check"\nprofile = "{out / "profile.toml"}"\nagents = ["noop", "random"]\n'
                      f'repeats = 1\nruntime = "{runtime}"\ngpus = {json.dumps(gpus[:2])}\n'
                      f'[budget]\nseconds = 600\nexperiments = 2\n[seeds]\nverify = [1000]\n[calibration]\nruns = 0\n')
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(config), "--out", str(out / "run")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    figures: dict = {"exit_code": result.returncode, "seconds": round(time.monotonic() - started, 1)}
    if result.returncode != 0:
        return figures | {"error": result.stderr[-2000:]}
    import pandas as pd
    sessions = pd.read_parquet(out / "run" / "tables" / "sessions.parquet")
    verifications = pd.read_parquet(out / "run" / "tables" / "verifications.parquet")
    return figures | {"sessions": sessions[["session_id", "status", "end_reason", "n_experiments"]].to_dict("records"),
                      "verifications": verifications[["session_id", "role", "split", "seed", "status", "bpb"]]
                      .to_dict("records")}


def check(out: Path, runtime_name: str, gpus: list[int]) -> tuple[dict, bool]:
    """Every step's figures (printed as they come) and whether all of them passed."""
    profile = load_profile("h100")
    data = prepared(profile)
    runtime = get_runtime(runtime_name)
    report: dict = {"host": os.uname().nodename, "gpus": gpus, "runtime": runtime.name, "reference": REFERENCE}
    report["device"] = device_probe(runtime, gpus[0], out / "probe")
    print(f"device: {report['device']}", flush=True)
    if not report["device"].get("cuda"):
        return report, False
    full = Verifier(out / "cache", profile, data, runtime, (1000,), ("val",))
    report["full"] = asdict(baseline_figures(full, out / "full", 1000, gpus[0]))
    print(comparison_line(f"full budget ({profile.time_budget:.0f} s)", RunFigures(**report["full"])), flush=True)
    short = Verifier(out / "cache", short_profile(profile), data, runtime, SIGMA_SEEDS, ("val",))
    runs = [baseline_figures(short, out / "short" / f"seed-{seed}", seed, gpus[0]) for seed in SIGMA_SEEDS]
    report["short"] = [asdict(r) for r in runs]
    report["short_sigma_val_bpb"] = sigma(runs)
    print(f"{SIGMA_RUNS} runs of {SHORT_BUDGET_S} s: val_bpb {[r.val_bpb for r in runs]}, "
          f"σ = {report['short_sigma_val_bpb']}", flush=True)
    report["sessions"] = session_run(out / "sessions", short_profile(profile), runtime.name, gpus)
    print(f"two sessions (noop, random), verified: exit {report['sessions']['exit_code']}", flush=True)
    passed = (report["full"]["status"] == "ok" and all(r.status == "ok" for r in runs)
              and report["sessions"]["exit_code"] == 0)
    return report, passed


def prepared(profile: Profile) -> DataPaths:
    """The profile's data, prepared now when it is not (the first GPU session downloads it)."""
    try:
        return require_prepared(profile)
    except DataMissing:
        subprocess.run([sys.executable, "-m", "bench.prepare", "--profile", profile.name], check=True)
        return require_prepared(profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--runtime", default="auto", help="auto (docker with the CUDA image when it runs), docker, "
                                                          "process")
    args = parser.parse_args(argv)
    gpus = visible_gpus()
    if not gpus:
        print("gpu-check: this host has no NVIDIA GPU (nvidia-smi -L lists none); run it on a GPU machine",
              file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report, passed = check(out, args.runtime, gpus)
    report |= {"passed": passed, "seconds": round(time.monotonic() - started, 1)}
    write_json(out / "gpu-check.json", report)
    print(f"gpu-check {'passed' if passed else 'FAILED'} in {report['seconds']:.0f} s; figures in "
          f"{out / 'gpu-check.json'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
