"""Seed launcher: run train.py in a child process under a given seed; always write a RunOutcome.

    python -m bench.launch --seed S --result OUT.json [--log run.log] [--timeout SECONDS] [--trusted val,test] [train.py]

The parent never imports torch: it starts the child in its own process group, kills the group at the
timeout (default 2x the profile's time budget + STARTUP_ALLOWANCE_S), classifies what happened
(ok / crash / nan / timeout), writes OUT.json and exits 0 whatever train.py did.

The child (`--child`, internal) seeds Python, NumPy and torch from the run seed, remaps every seed that
train.py sets itself (install_seed_hooks), and runs train.py as __main__, like `python train.py`.
With --trusted it first puts the harness's own bench.prepare in place of the module `prepare` and lets
bench.trusted_eval score the model when train.py calls evaluate_bpb (threat model: bench/trusted_eval.py).

The profile (for the budget, and for prepare in trusted mode) is $ARBENCH_PROFILE if set, else the
profile.toml beside train.py, else prepare.py's own default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import operator
import os
import re
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "crash", "nan", "timeout"]
SCHEMA_VERSION = 1
STARTUP_ALLOWANCE_S = 60.0
KILL_GRACE_S = 5.0
SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")
BENCH_ROOT = Path(__file__).resolve().parent.parent   # the directory that holds the bench package


@dataclass
class RunOutcome:
    status: Status
    message: str
    seed: int
    wall_seconds: float
    summary: dict[str, float]
    trusted: dict[str, float] | None = None      # split -> bpb computed by bench.trusted_eval
    checks: dict[str, Any] | None = None         # {causal: bool, pre_eval_seconds: float, ...} in trusted mode
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RunOutcome:
        return cls(**json.loads(text))


# ---------------------------------------------------------------------------
# Reading train.py's output
# ---------------------------------------------------------------------------

def parse_summary(output: str) -> dict[str, float]:
    """The `key: value` lines after the last `---` line (known keys only; may be partial)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    summary = {}
    for line in lines[starts[-1] + 1:] if starts else []:
        key, sep, value = line.partition(":")
        if sep and key.strip() in SUMMARY_KEYS:
            try:
                summary[key.strip()] = float(value)
            except ValueError:
                pass
    return summary


NAN_LOSS = re.compile(r"\bloss: (nan|inf)", re.IGNORECASE)


def classify(exit_code: int | None, timed_out: bool, output: str, needs_val_bpb: bool = True) -> tuple[Status, str]:
    """What happened to one run of train.py, from its exit and its output."""
    summary = parse_summary(output)
    lines = output.splitlines()
    if timed_out:
        return "timeout", "killed at the timeout"
    if any(line.strip() == "FAIL" for line in lines) or NAN_LOSS.search(output) or \
            not math.isfinite(summary.get("val_bpb", 0.0)):
        return "nan", "loss was NaN or exploded (train.py printed FAIL)"
    if exit_code is not None and exit_code < 0:
        return "crash", _error_line(lines) or f"killed by signal {-exit_code}"
    if exit_code != 0:
        return "crash", _error_line(lines) or f"exit code {exit_code}"
    if needs_val_bpb and "val_bpb" not in summary:
        return "crash", "finished without a val_bpb in its summary"
    return "ok", ""


def _error_line(lines: list[str]) -> str:
    """The exception line that ends a Python traceback, if any."""
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line) or line.startswith("Killed"):
            return line.strip()[:500]
    return ""


# ---------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------

def remap_seed(value: Any, run_seed: int) -> int:
    """A 63-bit seed that depends on both the seed train.py asked for and the run seed."""
    try:
        key = str(operator.index(value))
    except TypeError:
        key = repr(value)
    digest = hashlib.sha256(f"{key}|{run_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


_hook_state = threading.local()


def _remapping(original, run_seed: int, modulus: int | None):
    """original(seed, ...) with the seed remapped; calls made from inside another hook pass through."""
    def seeded(seed=None, *args, **kwargs):
        if getattr(_hook_state, "active", False):
            return original(seed, *args, **kwargs)
        _hook_state.active = True
        try:
            new = remap_seed(seed, run_seed)
            return original(new % modulus if modulus else new, *args, **kwargs)
        finally:
            _hook_state.active = False
    seeded.__wrapped__ = original
    return seeded


def install_seed_hooks(run_seed: int) -> None:
    """Seed Python, NumPy and torch from run_seed, and remap any seed set later (v -> remap_seed(v, run_seed)).

    Covered: random.seed, numpy.random.seed, numpy.random.default_rng, torch.manual_seed (also as
    torch.random.manual_seed), torch.cuda.manual_seed, torch.cuda.manual_seed_all, torch.mps.manual_seed.
    Not covered: generators built directly (random.Random(v), torch.Generator().manual_seed(v),
    numpy bit generators such as PCG64(v)).
    """
    import random
    import numpy as np
    import torch
    import torch.cuda
    import torch.mps

    random.seed(remap_seed(None, run_seed))
    np.random.seed(remap_seed(None, run_seed) % 2**32)
    torch.manual_seed(remap_seed(None, run_seed))
    targets = [(random, "seed", None), (np.random, "seed", 2**32), (torch, "manual_seed", None),
               (torch.random, "manual_seed", None), (torch.cuda, "manual_seed", None),
               (torch.cuda, "manual_seed_all", None), (torch.mps, "manual_seed", None)]
    for module, name, modulus in targets:
        setattr(module, name, _remapping(getattr(module, name), run_seed, modulus))
    original_rng = np.random.default_rng
    remapped_rng = _remapping(original_rng, run_seed, None)

    def default_rng(seed=None):
        """A generator or bit generator passed in is returned as it is; any other seed is remapped."""
        if isinstance(seed, (np.random.Generator, np.random.BitGenerator)):
            return original_rng(seed)
        return remapped_rng(seed)
    np.random.default_rng = default_rng


# ---------------------------------------------------------------------------
# Parent: run the child, classify, write the outcome
# ---------------------------------------------------------------------------

def profile_path(train_py: Path) -> str | None:
    if os.environ.get("ARBENCH_PROFILE"):
        return os.environ["ARBENCH_PROFILE"]
    beside = train_py.resolve().parent / "profile.toml"
    return str(beside) if beside.is_file() else None


def default_timeout(train_py: Path) -> float:
    from bench.profile import load_profile
    return 2 * load_profile(profile_path(train_py) or "h100").time_budget + STARTUP_ALLOWANCE_S


class _Channel:
    """The pipe on which the trusted evaluator reports: a first line when evaluation starts, then its result."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self.eval_started: float | None = None
        self.lines: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.write_fd)
        self._thread.start()

    def _read(self) -> None:
        with os.fdopen(self.read_fd, "rb") as pipe:
            for line in pipe:
                if self.eval_started is None:
                    self.eval_started = time.monotonic()
                self.lines.append(line)

    def result(self) -> dict[str, Any] | None:
        self._thread.join(timeout=KILL_GRACE_S)
        try:
            return json.loads(self.lines[1]) if len(self.lines) >= 2 else None
        except ValueError:
            return None


def launch(train_py: Path, seed: int, log_path: Path, timeout: float, trusted: list[str]) -> RunOutcome:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_ROOT), env.get("PYTHONPATH")]))
    env.pop("ARBENCH_LEDGER", None)   # the launcher reports itself; sitecustomize need not
    if profile_path(train_py):
        env["ARBENCH_PROFILE"] = profile_path(train_py)
    channel = _Channel() if trusted else None
    argv = [sys.executable, "-P", "-m", "bench.launch", "--child", "--seed", str(seed), str(train_py)]
    if channel:
        argv += ["--trusted", ",".join(trusted), "--channel-fd", str(channel.write_fd)]
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, pass_fds=(channel.write_fd,) if channel else ())
        if channel:
            channel.start()
        timed_out = _wait(proc, timeout)
    wall = time.monotonic() - start
    output = log_path.read_text(errors="replace")
    result = channel.result() if channel else None
    status, message = classify(proc.returncode, timed_out, output, needs_val_bpb=not trusted)
    if timed_out:
        message = f"killed after {timeout:.0f}s"
    outcome = RunOutcome(status=status, message=message, seed=seed, wall_seconds=round(wall, 3),
                         summary=parse_summary(output))
    if trusted:
        _add_trusted(outcome, result, channel.eval_started - start if channel.eval_started else None)
    return outcome


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the child (SIGTERM at the timeout, SIGKILL after a grace period), then SIGKILL whatever is
    left of its process group, so nothing it started outlives it. True if it timed out."""
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc, signal.SIGKILL)
    proc.wait()
    return timed_out


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _add_trusted(outcome: RunOutcome, result: dict[str, Any] | None, pre_eval_seconds: float | None) -> None:
    if result is None:
        if outcome.status == "ok":
            outcome.status, outcome.message = "crash", "train.py never called evaluate_bpb (no trusted result)"
        return
    outcome.trusted = result["bpb"]
    outcome.checks = {"causal": result["causal"], "causal_max_diff": result["causal_max_diff"],
                      "pre_eval_seconds": round(pre_eval_seconds, 3) if pre_eval_seconds is not None else None}
    if not all(math.isfinite(v) for v in outcome.trusted.values()) and outcome.status == "ok":
        outcome.status, outcome.message = "nan", "the trained model's logits give a non-finite bpb"


# ---------------------------------------------------------------------------
# Child: seed, (trusted: swap prepare), run train.py as __main__
# ---------------------------------------------------------------------------

def run_child(train_py: Path, seed: int, trusted: list[str], channel_fd: int | None) -> None:
    install_seed_hooks(seed)
    if trusted:
        import bench.prepare
        from bench import trusted_eval
        sys.modules["prepare"] = bench.prepare
        trusted_eval.install(bench.prepare, trusted, channel_fd)
    sys.argv = [str(train_py)]
    sys.path.insert(0, str(train_py.resolve().parent))   # as `python train.py` would
    runpy.run_path(str(train_py), run_name="__main__")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.launch", description=__doc__.splitlines()[0])
    parser.add_argument("train_py", nargs="?", default="train.py", type=Path)
    parser.add_argument("--seed", type=int, required=True, help="run seed")
    parser.add_argument("--result", type=Path, help="where to write the RunOutcome JSON")
    parser.add_argument("--log", type=Path, help="train.py's stdout and stderr (default: a temporary file)")
    parser.add_argument("--timeout", type=float, help="seconds before the run is killed (default: 2x budget + 60)")
    parser.add_argument("--trusted", default="", help="comma-separated splits (val,test) scored by trusted code")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--channel-fd", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    trusted = [s for s in args.trusted.split(",") if s]
    if args.child:
        run_child(args.train_py, args.seed, trusted, args.channel_fd)
        return
    if args.result is None:
        sys.exit("error: --result is required")
    if not args.train_py.is_file():
        sys.exit(f"error: {args.train_py} does not exist")
    if bad := [s for s in trusted if s not in ("val", "test")]:
        sys.exit(f"error: --trusted takes val and/or test, not {','.join(bad)}")
    from bench.profile import ProfileError
    try:
        timeout = args.timeout if args.timeout is not None else default_timeout(args.train_py)
    except ProfileError as e:
        sys.exit(f"error: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        outcome = launch(args.train_py, args.seed, args.log or Path(tmp) / "run.log", timeout, trusted)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    tmp_result = args.result.with_name(args.result.name + ".tmp")
    tmp_result.write_text(outcome.to_json())
    tmp_result.replace(args.result)
    scores = outcome.trusted or {"val_bpb": outcome.summary.get("val_bpb")}
    print(f"launch: {outcome.status}{': ' + outcome.message if outcome.message else ''} "
          f"(seed {args.seed}, {outcome.wall_seconds:.1f}s, {scores}) -> {args.result}")


if __name__ == "__main__":
    main()
