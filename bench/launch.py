"""Seed launcher: run train.py in a child process under a given seed; always write a RunOutcome.

    python -m bench.launch --seed S --result OUT.json [--log run.log] [--timeout SECONDS] [train.py]
    python -m bench.launch --seed S --result OUT.json --trusted val,test [--train-limit S] [--eval-limit S] [train.py]

The child (`--child`, internal) seeds Python, NumPy and torch from the run seed, remaps every seed that
train.py sets itself (install_seed_hooks), and runs train.py as __main__, like `python train.py`, in its
own process group. The parent classifies what happened, writes OUT.json (bench.contracts.RunOutcome) and exits 0
whatever train.py did.

Untrusted mode (no --trusted): the parent never imports torch; it kills the group at --timeout
(default 2x the profile's time budget + STARTUP_ALLOWANCE_S) and reads val_bpb from train.py's summary.

Trusted mode (--trusted): the score is computed here, in the parent, where no agent code runs
(bench.trusted_eval: its docstring has the threat model). The child's evaluate_bpb only hands the
model's forward over: the parent writes the inputs into shared memory, the child writes logits back,
and a control socket carries small commands and the child's hello. The parent's own clock sets the
limits: --train-limit seconds from the child's start to its call of evaluate_bpb (default: budget +
STARTUP_ALLOWANCE_S; past it the group is killed, "over_budget") and --eval-limit seconds from there
(default EVAL_ALLOWANCE_S; past it, "timeout"). It also records `checks` (causality, timings, train
tokens, CPU use, the load of other processes, the initial weights' fingerprint) and `untrained`, the
uniform distribution's bpb on the same rows, also for a run that failed. What the child sends is
untrusted data: a malformed message makes the run a crash. Agent code runs only in the child and holds
no channel a score could be written to; it can still choose its logits (it is the model), forge the
measurements in its hello, and try to recognise the causality probe (bench.trusted_eval's docstring has
the threat model: what stops or bounds each).

Who the child runs as (trusted mode): when the launcher is root and --child-user (default
$ARBENCH_CHILD_USER, which the docker runtime sets for verification) names an unprivileged user, the
child runs as that uid and gid with no supplementary groups, so it cannot read what only the parent
can (the held-out test split, 0700). Everything it needs is made reachable: train.py and the profile
readable, the log and the control socket as inherited fds, the eval buffers opened up by the Scorer, a
fresh HOME and TMPDIR it may write. Otherwise (not root, or no user named; the process runtime) the
child runs as the launcher's own user and can read whatever it reads: the launcher says so in one line.

The profile (for the budget, and for prepare in trusted mode) is $ARBENCH_PROFILE if set, else the
profile.toml beside train.py, else prepare.py's own default.

Substitutions (both modes): a stand-in that served train.py in place of what the original task downloads (the
`kernels` module in bench/shims) writes a line starting with SUBSTITUTION_PREFIX to the run's log; the outcome
lists them. train.py could write such a line too, or hide one: it is a note for the report, never a score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import operator
import os
import pickle
import pwd
import re
import resource
import runpy
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.contracts import LEDGER_SOCKET_ENV, RunOutcome, RunStatus

STARTUP_ALLOWANCE_S = 60.0   # default train limit: budget + this (process start, imports, warm-up steps)
EVAL_ALLOWANCE_S = 180.0     # default eval limit
KILL_GRACE_S = 5.0
POLL_S = 0.2                 # how often the parent looks at the child while it waits for a message
MAX_MESSAGE_BYTES = 1 << 16  # the child's messages are small JSON objects
SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")
BENCH_ROOT = Path(__file__).resolve().parent.parent   # the directory that holds the bench package
CHILD_USER_ENV = "ARBENCH_CHILD_USER"                  # trusted mode, launcher as root: who train.py runs as
SUBSTITUTION_PREFIX = "[arbench] substitution: "       # starts a stand-in's line in the log (bench/shims)
MAX_SUBSTITUTIONS, MAX_SUBSTITUTION_CHARS = 10, 300    # bounds on what the log (train.py's output) can put in a report


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


def parse_substitutions(output: str) -> list[str]:
    """The stand-ins that served the run, from the lines they wrote to its log: sorted, unique, bounded."""
    found = {line[len(SUBSTITUTION_PREFIX):].strip()[:MAX_SUBSTITUTION_CHARS]
             for line in output.splitlines() if line.startswith(SUBSTITUTION_PREFIX)}
    return sorted(found)[:MAX_SUBSTITUTIONS]


NAN_LOSS = re.compile(r"\bloss: (nan|inf)", re.IGNORECASE)


def classify(exit_code: int | None, timed_out: bool, output: str, needs_val_bpb: bool = True) -> tuple[RunStatus, str]:
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
    torch.Generator = _remapped_generator(torch.Generator, run_seed)


def _remapped_generator(base: type, run_seed: int) -> type:
    """A subclass of torch.Generator whose manual_seed remaps; instances of the C type still pass isinstance."""
    class Meta(type(base)):
        def __instancecheck__(cls, obj):
            return isinstance(obj, base)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, base)

    class Generator(base, metaclass=Meta):
        def manual_seed(self, seed):
            return base.manual_seed(self, remap_seed(seed, run_seed))
    Generator.__module__, Generator.__qualname__ = "torch", "Generator"   # pickles as torch.Generator
    return Generator


# ---------------------------------------------------------------------------
# The control socket between the parent and the child
# ---------------------------------------------------------------------------

class Link:
    """A socket carrying frames (4-byte length, then the payload). The parent sends pickles (the child may
    trust them); the child sends JSON objects, which the parent parses as untrusted data of bounded size."""

    def __init__(self, sock: socket.socket):
        self.sock, self.pending = sock, b""

    def send_bytes(self, payload: bytes) -> None:
        self.sock.settimeout(None)
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def send_json(self, message: dict) -> None:
        self.send_bytes(json.dumps(message).encode())

    def receive_bytes(self, deadline: float | None = None, alive: Callable[[], bool] | None = None,
                      limit: int | None = None) -> bytes | None:
        """The next frame; None at end of stream or when alive() turns false with nothing pending.
        TimeoutError past the deadline, ValueError for a frame over `limit` bytes or cut short."""
        while True:
            if len(self.pending) >= 4:
                size = struct.unpack(">I", self.pending[:4])[0]
                if limit is not None and size > limit:
                    raise ValueError(f"a message of {size} bytes")
                if len(self.pending) >= 4 + size:
                    frame, self.pending = self.pending[4:4 + size], self.pending[4 + size:]
                    return frame
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError
            self.sock.settimeout(POLL_S if wait is None or wait > POLL_S else wait)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                if alive is not None and not alive():
                    return None
                continue
            if not chunk:
                if self.pending:
                    raise ValueError("the stream ended inside a message")
                return None
            self.pending += chunk

    def receive_json(self, deadline: float | None = None, alive: Callable[[], bool] | None = None) -> Any:
        frame = self.receive_bytes(deadline, alive, MAX_MESSAGE_BYTES)
        try:
            return None if frame is None else json.loads(frame, parse_constant=_reject_constant)
        except RecursionError:
            raise ValueError("a message nested too deeply") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} in a message")


@dataclass(frozen=True)
class Hello:
    """What the child reports when train.py calls evaluate_bpb (validated; its numbers are evidence, not proof)."""
    device: str
    batch_size: int | None
    train_tokens: int
    train_steps: int
    tokens_per_second: float | None
    init_fingerprint: str | None
    first_batch_at: float | None    # CLOCK_MONOTONIC when the first train batch was drawn

    @classmethod
    def parse(cls, message: Any) -> Hello:
        if not isinstance(message, dict) or set(message) != {f for f in cls.__dataclass_fields__}:
            raise ValueError(f"unexpected hello {str(message)[:200]}")
        m = message
        checks = [isinstance(m["device"], str) and re.fullmatch(r"(cpu|mps|cuda)(:\d{1,3})?", m["device"]),
                  m["batch_size"] is None or type(m["batch_size"]) is int,
                  type(m["train_tokens"]) is int and m["train_tokens"] >= 0,
                  type(m["train_steps"]) is int and m["train_steps"] >= 0,
                  m["tokens_per_second"] is None or (type(m["tokens_per_second"]) in (int, float)
                                                     and 0 <= m["tokens_per_second"] < math.inf),
                  m["init_fingerprint"] is None or (isinstance(m["init_fingerprint"], str)
                                                    and re.fullmatch(r"[0-9a-f]{1,64}", m["init_fingerprint"])),
                  m["first_batch_at"] is None or (type(m["first_batch_at"]) in (int, float)
                                                  and 0 <= m["first_batch_at"] < math.inf)]
        if not all(checks):
            raise ValueError(f"malformed hello {str(message)[:200]}")
        return cls(**m)


# ---------------------------------------------------------------------------
# Parent: run the child, classify, write the outcome
# ---------------------------------------------------------------------------

def profile_path(train_py: Path) -> str | None:
    if os.environ.get("ARBENCH_PROFILE"):
        return os.environ["ARBENCH_PROFILE"]
    beside = train_py.resolve().parent / "profile.toml"
    return str(beside) if beside.is_file() else None


def time_budget(train_py: Path) -> float:
    from bench.profile import load_profile
    return load_profile(profile_path(train_py) or "h100").time_budget


@dataclass(frozen=True)
class Limits:
    train: float   # seconds from the child's start to its call of evaluate_bpb
    eval: float    # seconds from that call to the end of evaluation


def _child_env(train_py: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_ROOT), env.get("PYTHONPATH")]))
    env.pop(LEDGER_SOCKET_ENV, None)   # the launcher reports itself; sitecustomize need not
    if profile_path(train_py):
        env["ARBENCH_PROFILE"] = profile_path(train_py)
    return env


@dataclass(frozen=True)
class ChildUser:
    uid: int
    gid: int


def child_user(name: str | None) -> ChildUser | None:
    """Who the trusted child runs as: the user `name` (a name or a uid) when the launcher is root; None, said in
    one line, when the child runs as the launcher's own user."""
    if name and os.geteuid() == 0:
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except KeyError:
            if not name.isdigit():
                sys.exit(f"error: no user {name} to run train.py as")
            return ChildUser(int(name), int(name))
        return ChildUser(entry.pw_uid, entry.pw_gid)
    why = "the launcher is not root" if name else f"no --child-user or ${CHILD_USER_ENV}"
    print(f"launch: train.py runs as the launcher's own user (uid {os.geteuid()}; {why}): "
          f"it can read what the launcher reads, the test split too")
    return None


def _as_child_user(child: ChildUser, train_py: Path, home: Path, env: dict[str, str]) -> dict[str, Any]:
    """Popen arguments that start the child as `child` with no supplementary groups, once what it needs is
    reachable: train.py and the profile readable by others, their directory searchable, `home` (HOME and
    TMPDIR) writable."""
    profile = profile_path(train_py)
    readable = [train_py] + ([Path(profile)] if profile and profile.endswith(".toml") else [])
    for path, bits in [(train_py.resolve().parent, 0o001)] + [(p, 0o004) for p in readable]:
        if path.stat().st_mode & bits != bits:
            path.chmod(path.stat().st_mode | bits)
    home.chmod(0o777)
    env.update(HOME=str(home), TMPDIR=str(home))
    return {"user": child.uid, "group": child.gid, "extra_groups": []}


def _child_argv(train_py: Path, seed: int) -> list[str]:
    return [sys.executable, "-P", "-m", "bench.launch", "--child", "--seed", str(seed), str(train_py)]


def launch(train_py: Path, seed: int, log_path: Path, timeout: float) -> RunOutcome:
    """Untrusted mode: run train.py, kill it at the timeout, read its own summary."""
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_child_argv(train_py, seed), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_child_env(train_py), start_new_session=True)
        timed_out = _wait(proc, timeout)
    wall = time.monotonic() - start
    output = log_path.read_text(errors="replace")
    status, message = classify(proc.returncode, timed_out, output)
    if timed_out:
        message = f"killed after {timeout:.0f}s"
    return RunOutcome(status=status, message=message, seed=seed, wall_seconds=round(wall, 3),
                      summary=parse_summary(output), substitutions=parse_substitutions(output))


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


class _Background:
    """fn() in a thread started now; result() waits for it and returns its value or raises its exception."""

    def __init__(self, fn: Callable[[], Any]):
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self._value = fn()
        except BaseException as e:
            self._error = e

    def result(self, deadline: float | None = None) -> Any:
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._value


class ScorerUnavailable(RuntimeError):
    """The trusted parent cannot load its tokenizer or eval rows: the harness's problem, not the run's."""


def _load_scorer(splits: list[str]):
    from bench import prepare, trusted_eval   # torch, in the trusted parent only
    try:
        return trusted_eval.Scorer(prepare, splits)
    except (OSError, AssertionError) as e:
        raise ScorerUnavailable(f"the trusted evaluator cannot load its data: {e}") from e


def launch_trusted(train_py: Path, seed: int, log_path: Path, limits: Limits, splits: list[str],
                   child: ChildUser | None = None) -> RunOutcome:
    """Trusted mode: the child (as `child` if given) trains; at evaluate_bpb the parent scores it via shared memory."""
    env = _child_env(train_py)
    os.environ.update({k: env[k] for k in ("ARBENCH_PROFILE",) if k in env})   # the parent's prepare: same profile
    env.pop("ARBENCH_TEST_DIR", None)   # the parent loads the test rows; the child has no use for them
    ours, theirs = socket.socketpair()
    link = Link(ours)
    cpu_before = _children_cpu_seconds()
    start = time.monotonic()
    with open(log_path, "wb") as log, tempfile.TemporaryDirectory(prefix="arbench-child-",
                                                                 ignore_cleanup_errors=True) as home:
        drop = _as_child_user(child, train_py, Path(home), env) if child else {}
        proc = subprocess.Popen(_child_argv(train_py, seed) + ["--trusted", ",".join(splits),
                                                             "--control-fd", str(theirs.fileno())],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, pass_fds=(theirs.fileno(),), **drop)
        theirs.close()
        load = _LoadMeter(proc.pid)
        scorer = _Background(lambda: _load_scorer(splits))   # torch and the rows, while the child starts
        try:
            run = _TrustedRun(link, proc, limits, start)
            run.pre_eval(load)
            if run.hello is not None:
                run.evaluate(scorer, other_user=child is not None)
        finally:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    wall = time.monotonic() - start
    output = log_path.read_text(errors="replace")
    if run.status is None:
        status, message = classify(proc.returncode, False, output, needs_val_bpb=False)
        run.status, run.message = (status, message) if status != "ok" else \
            ("crash", "train.py never called evaluate_bpb (no trusted result)")
    outcome = RunOutcome(status=run.status, message=run.message, seed=seed, wall_seconds=round(wall, 3),
                         summary=parse_summary(output), trusted=run.trusted, untrained=scorer.result().untrained(),
                         checks=run.checks(limits, _children_cpu_seconds() - cpu_before),
                         substitutions=parse_substitutions(output))
    return outcome


class _TrustedRun:
    """The parent's side of one trusted run: wait for the hello (train limit), then score (eval limit)."""

    def __init__(self, link: Link, proc: subprocess.Popen, limits: Limits, start: float):
        self.link, self.proc, self.limits, self.start = link, proc, limits, start
        self.status: RunStatus | None = None
        self.message = ""
        self.hello: Hello | None = None
        self.trusted: dict[str, float] | None = None
        self.result = None
        self.causal: bool | None = None
        self.pre_eval_seconds = self.eval_seconds = self.neighbour_load = self.eval_called_at = None

    def pre_eval(self, load: _LoadMeter) -> None:
        deadline = self.start + self.limits.train
        try:
            message = self.link.receive_json(deadline, alive=lambda: self.proc.poll() is None)
            if message is None:   # the socket closed: wait for the child's exit, classified from its log
                self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                return
        except (TimeoutError, subprocess.TimeoutExpired):
            _signal_group(self.proc, signal.SIGKILL)
            self.status, self.message = "over_budget", \
                f"did not call evaluate_bpb within the train limit of {self.limits.train:.0f}s: killed"
            return
        except (OSError, ValueError) as e:
            self.status, self.message = "crash", f"malformed message from the model process: {e}"
            return
        self.eval_called_at = time.monotonic()
        self.pre_eval_seconds = self.eval_called_at - self.start
        self.neighbour_load = load.neighbour_load()
        if isinstance(message, dict) and isinstance(message.get("error"), str):
            self.status, self.message = "crash", message["error"][:500]
            return
        try:
            self.hello = Hello.parse(message)
        except ValueError as e:
            self.status, self.message = "crash", f"malformed message from the model process: {e}"

    def evaluate(self, scorer: _Background, other_user: bool) -> None:
        import torch
        from bench.trusted_eval import CAUSAL_ATOL, ChildFailed
        eval_start = time.monotonic()
        deadline = eval_start + self.limits.eval
        try:
            loaded = scorer.result(deadline)
            device = torch.device(self.hello.device)
            self.result = loaded.evaluate(self.link, device, loaded.batch_size(self.hello.batch_size), deadline,
                                          other_user)
        except (ChildFailed, TimeoutError) as e:
            status, message = ("timeout", "killed at the eval limit") if isinstance(e, TimeoutError) else (e.status, e.message)
            self.status = status
            self.message = f"{message} ({self.limits.eval:.0f}s)" if status == "timeout" else message
            return
        except OSError as e:
            self.status, self.message = "crash", f"the model process closed the control socket during evaluation ({e})"
            return
        finally:
            self.eval_seconds = time.monotonic() - eval_start
        try:
            self.link.send_bytes(pickle.dumps("exit"))
            self.proc.wait(timeout=KILL_GRACE_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.trusted = self.result.bpb
        self.causal = self.result.causal_max_diff <= CAUSAL_ATOL
        if not all(math.isfinite(v) for v in self.trusted.values()):
            self.status, self.message = "nan", "the trained model's logits give a non-finite bpb"
        elif not self.causal:
            self.status, self.message = "noncausal", (
                f"log-probabilities up to a random cut moved by {self.result.causal_max_diff:.3g} (> {CAUSAL_ATOL}) "
                f"when the tokens after it changed ({self.result.worst})")
        else:
            self.status = "ok"

    def checks(self, limits: Limits, cpu_seconds: float) -> dict[str, Any]:
        result, hello = self.result, self.hello
        return {"causal": self.causal,
                "causal_max_diff": None if result is None else result.causal_max_diff,
                "causal_cuts": None if result is None else result.causal_cuts,
                "pre_eval_seconds": _rounded(self.pre_eval_seconds), "eval_seconds": _rounded(self.eval_seconds),
                "training_seconds": _rounded(self.training_seconds()),
                "train_tokens": None if hello is None else hello.train_tokens,
                "train_steps": None if hello is None else hello.train_steps,
                "tokens_per_second": None if hello is None else _rounded(hello.tokens_per_second),
                "cpu_seconds": _rounded(cpu_seconds), "neighbour_load": _rounded(self.neighbour_load),
                "init_fingerprint": None if hello is None else hello.init_fingerprint,
                "train_limit": limits.train, "eval_limit": limits.eval}


    def training_seconds(self) -> float | None:
        """First train batch to evaluate_bpb: the training time, warm-up steps included, on one clock. The start
        comes from the child (harness code next to agent code): a value outside the run's own span is dropped."""
        first = None if self.hello is None else self.hello.first_batch_at
        if first is None or self.eval_called_at is None or not self.start <= first <= self.eval_called_at:
            return None
        return self.eval_called_at - first


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _LoadMeter:
    """CPU cores used by processes outside the child's group, from /proc (None where /proc cannot be read):
    system-wide busy time (/proc/stat) minus the group's own (/proc/<pid>/stat), over wall time."""

    def __init__(self, pgid: int):
        self.pgid, self.start = pgid, time.monotonic()
        self.busy, self.own = _busy_ticks(), _group_ticks(pgid)

    def neighbour_load(self) -> float | None:
        busy, own, wall = _busy_ticks(), _group_ticks(self.pgid), time.monotonic() - self.start
        if None in (busy, own, self.busy, self.own) or wall <= 0:
            return None
        return max(0.0, ((busy - self.busy) - (own - self.own)) / os.sysconf("SC_CLK_TCK") / wall)


def _busy_ticks() -> int | None:
    """Busy CPU ticks of the whole machine: user, nice, system, irq, softirq, steal."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        return sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7))
    except (OSError, ValueError, IndexError):
        return None


def _group_ticks(pgid: int) -> int | None:
    """utime + stime (and reaped children's) of the live processes of a process group."""
    total, seen = 0, False
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total, seen = total + sum(int(fields[i]) for i in (11, 12, 13, 14)), True
    return total if seen else None


# ---------------------------------------------------------------------------
# Child: seed, (trusted: swap prepare), run train.py as __main__
# ---------------------------------------------------------------------------

def run_child(train_py: Path, seed: int, control_fd: int | None) -> None:
    install_seed_hooks(seed)
    if control_fd is not None:
        import bench.prepare
        from bench import trusted_eval
        sys.modules["prepare"] = bench.prepare
        trusted_eval.install(bench.prepare, control_fd)
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
    parser.add_argument("--timeout", type=float, help="untrusted: seconds before the run is killed (default: 2x budget + 60)")
    parser.add_argument("--trusted", default="", help="comma-separated splits (val,test) scored by trusted code")
    parser.add_argument("--train-limit", type=float, help="trusted: seconds to evaluate_bpb (default: budget + 60)")
    parser.add_argument("--eval-limit", type=float, help=f"trusted: seconds for evaluation (default: {EVAL_ALLOWANCE_S:.0f})")
    parser.add_argument("--child-user", default=os.environ.get(CHILD_USER_ENV),
                        help=f"trusted, as root: the user train.py runs as (default: ${CHILD_USER_ENV})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    trusted = [s for s in args.trusted.split(",") if s]
    if args.child:
        run_child(args.train_py, args.seed, args.control_fd)
        return
    if args.result is None:
        sys.exit("error: --result is required")
    if not args.train_py.is_file():
        sys.exit(f"error: {args.train_py} does not exist")
    if bad := [s for s in trusted if s not in ("val", "test")]:
        sys.exit(f"error: --trusted takes val and/or test, not {','.join(bad)}")
    if trusted and args.timeout is not None:
        sys.exit("error: --timeout is for untrusted runs; trusted runs take --train-limit and --eval-limit")
    if not trusted and (args.train_limit is not None or args.eval_limit is not None):
        sys.exit("error: --train-limit and --eval-limit need --trusted")
    from bench.profile import ProfileError
    try:
        budget = time_budget(args.train_py)
    except ProfileError as e:
        sys.exit(f"error: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        log = args.log or Path(tmp) / "run.log"
        if trusted:
            limits = Limits(train=args.train_limit if args.train_limit is not None else budget + STARTUP_ALLOWANCE_S,
                            eval=args.eval_limit if args.eval_limit is not None else EVAL_ALLOWANCE_S)
            try:
                outcome = launch_trusted(args.train_py, args.seed, log, limits, trusted, child_user(args.child_user))
            except ScorerUnavailable as e:
                sys.exit(f"error: {e}")
        else:
            outcome = launch(args.train_py, args.seed, log,
                             args.timeout if args.timeout is not None else 2 * budget + STARTUP_ALLOWANCE_S)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    tmp_result = args.result.with_name(args.result.name + ".tmp")
    tmp_result.write_text(outcome.to_json())
    tmp_result.replace(args.result)
    scores = outcome.trusted or {"val_bpb": outcome.summary.get("val_bpb")}
    print(f"launch: {outcome.status}{': ' + outcome.message if outcome.message else ''} "
          f"(seed {args.seed}, {outcome.wall_seconds:.1f}s, {scores}) -> {args.result}")


if __name__ == "__main__":
    main()
