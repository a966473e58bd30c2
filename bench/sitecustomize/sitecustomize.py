"""Imported by every Python started with this directory on PYTHONPATH; acts only when the main script is train.py.

- ARBENCH_SEED set (bench.contracts.SEED_ENV): bench.launch.install_seed_hooks(seed), so an agent's plain
  `python train.py` runs under the session's seed, and seeds train.py sets itself are remapped.
- ARBENCH_LEDGER_SOCKET set (bench.contracts.LEDGER_SOCKET_ENV): the run reports to the host's run ledger
  (harness/ledger.py) before any train.py code runs: it connects and waits for the service's answer (the service
  measures the run itself: pid, files, HEAD, times). When the module `prepare` is first imported its evaluate_bpb
  is wrapped, so each value it returns is sent before train.py sees it. At exit: the exit code as seen from inside
  (sys.exit()/exit() codes, 1 for an uncaught exception, else 0), status and the summary parsed from stdout, which
  is teed for that purpose. The messages are bench.contracts' (evaluate_message, exit_message); the service keeps
  them as the client's word. A ledger that cannot be reached is said on stderr; the run goes on, unrecorded. A run
  the service refuses (the session's experiment cap is reached) says why on stderr and exits with
  bench.contracts.REFUSED_EXIT_CODE before any train.py code runs.
"""

import os
import sys

CONNECT_TIMEOUT_S = 30.0  # the service answers after hashing the workspace and asking git: milliseconds


def _main_is_train_py() -> bool:
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "train.py"


def _import_bench(name: str):
    """bench.<name>, also where bench is not installed (it sits two levels above this file)."""
    import importlib
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError:
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        return importlib.import_module(f"bench.{name}")


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


def _connect(path: str):
    """A socket to the ledger once the service has recorded the run; None (said on stderr) when it cannot be.
    A run the service refuses (the session's experiment cap is reached) exits here, before train.py runs."""
    import socket
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CONNECT_TIMEOUT_S)
    try:
        conn.connect(path)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("the ledger closed the connection")
            answer += chunk
    except OSError as e:
        print(f"[arbench] run ledger at {path} unreachable ({e}): this run is not recorded", file=sys.stderr)
        conn.close()
        return None
    contracts = _import_bench("contracts")
    refused = contracts.refusal_of(answer)
    if refused:
        print(f"[arbench] this run is refused: {refused}", file=sys.stderr, flush=True)
        os._exit(contracts.REFUSED_EXIT_CODE)   # not sys.exit: an exception out of sitecustomize would not end it
    return conn


def _sender(conn):
    import json

    def send(message: dict) -> None:
        try:
            conn.sendall(json.dumps(message).encode() + b"\n")
        except (OSError, TypeError, ValueError):
            pass
    return send


class _PrepareFinder:
    """Finds the module `prepare` as the path finders would, and has its loader wrap evaluate_bpb."""

    def __init__(self, send):
        self.send = send

    def find_spec(self, name, path=None, target=None):
        if name != "prepare":
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WrappingLoader(spec.loader, self.send)
        return spec


class _WrappingLoader:
    def __init__(self, loader, send):
        self._loader, self._send = loader, send

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if callable(getattr(module, "evaluate_bpb", None)):
            module.evaluate_bpb = _reporting(module.evaluate_bpb, self._send)

    def __getattr__(self, name):   # get_source and the like, for tracebacks
        return getattr(self._loader, name)


def _reporting(evaluate, send):
    contracts = _import_bench("contracts")

    def evaluate_bpb(*args, **kwargs):
        bpb = evaluate(*args, **kwargs)
        split = kwargs.get("split", args[3] if len(args) > 3 else "val")
        try:
            send(contracts.evaluate_message(str(split), float(bpb)))
        except (TypeError, ValueError):
            send(contracts.evaluate_message(str(split), None))
        return bpb
    evaluate_bpb.__name__, evaluate_bpb.__doc__ = evaluate.__name__, evaluate.__doc__
    return evaluate_bpb


def _start_ledger(socket_path: str, seed) -> None:
    import atexit
    import builtins

    conn = _connect(socket_path)
    if conn is None:
        return
    conn.settimeout(None)
    send = _sender(conn)
    sys.meta_path.insert(0, _PrepareFinder(send))
    launch, contracts = _import_bench("launch"), _import_bench("contracts")
    tee = sys.stdout = _Tee(sys.stdout)
    exit_code, error = [0], [""]

    def recording_exit(original):
        def exit_(code=None):
            exit_code[0] = code if isinstance(code, int) else (0 if code is None else 1)
            return original(code)
        return exit_

    def excepthook(kind, value, traceback, original=sys.excepthook):
        exit_code[0] = 1
        error[0] = f"{kind.__name__}: {value}"[:500]
        original(kind, value, traceback)

    def finish():
        output = tee.text()
        status, message = launch.classify(exit_code[0], False, output)
        send(contracts.exit_message(seed, exit_code[0], status, error[0] or message, launch.parse_summary(output)))

    sys.exit = recording_exit(sys.exit)
    builtins.exit = recording_exit(builtins.exit)
    builtins.quit = recording_exit(builtins.quit)
    sys.excepthook = excepthook
    atexit.register(finish)


def _activate() -> None:
    contracts = _import_bench("contracts")
    seed = int(os.environ[contracts.SEED_ENV]) if os.environ.get(contracts.SEED_ENV) else None
    if seed is not None:
        _import_bench("launch").install_seed_hooks(seed)
    if os.environ.get(contracts.LEDGER_SOCKET_ENV):
        _start_ledger(os.environ[contracts.LEDGER_SOCKET_ENV], seed)


if _main_is_train_py():
    _activate()
