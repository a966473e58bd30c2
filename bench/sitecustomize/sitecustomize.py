"""Imported by every Python started with this directory on PYTHONPATH; acts only when the main script is train.py.

- ARBENCH_SEED set: bench.launch.install_seed_hooks(seed), so an agent's plain `python train.py` runs
  under the session's seed, and seeds train.py sets itself are remapped.
- ARBENCH_LEDGER set: one JSON record per run in that directory (written at start, rewritten at exit):
  train.py's sha256, seed, start and end time, exit code, status and the summary parsed from stdout,
  which is teed for that purpose. A run killed from outside keeps ended_at null. The exit code is as
  seen from inside: sys.exit()/exit() codes, 1 for an uncaught exception, else 0.
  Also, as the workspace was when the run started: its git HEAD (head_commit, null outside a repository),
  whether train.py differs from HEAD's (dirty), and the sha256 of the files that set the metric
  (protected_sha256; prepare.py is the file `import prepare` would load, null when none), so that an
  edit that is put back after the run still shows.
"""

import os
import sys

GIT_TIMEOUT_S = 5.0  # git answers in milliseconds; a hung one must not hold train.py up for long


def _main_is_train_py() -> bool:
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "train.py"


def _import_launch():
    try:
        from bench import launch
    except ImportError:   # bench not installed: it sits two levels above this file
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        from bench import launch
    return launch


class _Tee:
    """stdout that also keeps the last TAIL_CHARS characters written, for the summary."""
    TAIL_CHARS = 65536

    def __init__(self, stream):
        self._stream, self._chunks, self._size = stream, [], 0

    def write(self, text):
        self._chunks.append(text)
        self._size += len(text)
        if self._size > 2 * self.TAIL_CHARS:
            tail = self.text()
            self._chunks, self._size = [tail], len(tail)
        return self._stream.write(text)

    def text(self) -> str:
        return "".join(self._chunks)[-self.TAIL_CHARS:]

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _git(directory: str, *args: str) -> bytes | None:
    """git's stdout in directory; None when it fails (no repository, no commit, no such file, no git)."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # the script's repository, not a caller's
    try:
        result = subprocess.run(["git", "-C", directory, *args], capture_output=True, env=env, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _sha256(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: str | None) -> str | None:
    try:
        with open(path, "rb") as f:
            return _sha256(f.read())
    except (OSError, TypeError):
        return None


def _workspace_state(script: str, train_sha: str) -> dict:
    from importlib.machinery import PathFinder

    directory = os.path.dirname(os.path.abspath(script))
    head = (_git(directory, "rev-parse", "--verify", "-q", "HEAD") or b"").decode().strip() or None
    committed = _git(directory, "show", f"{head}:./{os.path.basename(script)}") if head else None
    spec = PathFinder.find_spec("prepare", [directory, *sys.path])  # also a prepare/ package or a .pyc beside it
    prepare = spec.origin if spec is not None and spec.has_location else None
    return {"head_commit": head,
            "dirty": None if head is None else committed is None or _sha256(committed) != train_sha,
            "protected_sha256": {"prepare.py": _sha256_file(prepare),
                                 "profile.toml": _sha256_file(os.path.join(directory, "profile.toml"))}}


def _start_ledger(directory: str, seed) -> None:
    import atexit
    import builtins
    import json
    import time

    launch = _import_launch()
    sha = _sha256_file(sys.argv[0])
    started = time.time()
    path = os.path.join(directory, f"run-{int(started * 1000)}-{os.getpid()}.json")
    record = {"schema_version": launch.SCHEMA_VERSION, "train_py_sha256": sha, "train_py": os.path.abspath(sys.argv[0]),
              "seed": seed, "started_at": started, "ended_at": None, "exit_code": None, "status": "running",
              "message": "", "summary": {}, **_workspace_state(sys.argv[0], sha)}
    tee = sys.stdout = _Tee(sys.stdout)
    exit_code = [0]

    def write():
        os.makedirs(directory, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)

    def recording_exit(original):
        def exit_(code=None):
            exit_code[0] = code if isinstance(code, int) else (0 if code is None else 1)
            return original(code)
        return exit_

    def excepthook(kind, value, traceback, original=sys.excepthook):
        exit_code[0] = 1
        record["message"] = f"{kind.__name__}: {value}"[:500]
        original(kind, value, traceback)

    def finish():
        output = tee.text()
        status, message = launch.classify(exit_code[0], False, output)
        record.update(ended_at=time.time(), exit_code=exit_code[0], status=status,
                      message=record["message"] or message, summary=launch.parse_summary(output))
        write()

    sys.exit = recording_exit(sys.exit)
    builtins.exit = recording_exit(builtins.exit)
    builtins.quit = recording_exit(builtins.quit)
    sys.excepthook = excepthook
    atexit.register(finish)
    write()


def _activate() -> None:
    seed = int(os.environ["ARBENCH_SEED"]) if os.environ.get("ARBENCH_SEED") else None
    if seed is not None:
        _import_launch().install_seed_hooks(seed)
    if os.environ.get("ARBENCH_LEDGER"):
        _start_ledger(os.environ["ARBENCH_LEDGER"], seed)


if _main_is_train_py():
    _activate()
