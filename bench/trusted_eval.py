"""Trusted evaluation: harness code in a process without agent code turns the trained model into a bpb.

`python -m bench.launch --trusted val,test` runs train.py in a child process and keeps the scoring in
the launcher (the parent). Two halves live here:

- Child side (`install`, before train.py runs): the harness's bench.prepare stands in as the module
  `prepare`; its evaluate_bpb is replaced by `serve`, which sends a hello (device, batch size, the
  training measurements below) on the control socket and then only runs the model's forward on inputs
  the parent writes into a shared buffer, writing the logits into a second shared buffer. It never
  receives targets, token bytes or a score, and when the parent is done it is told to exit (os._exit),
  so no later line of train.py runs.
- Parent side (`Scorer`): loads the rows with its own bench.prepare (EVAL_TOKENS // MAX_SEQ_LEN rows
  of each split, in batches of train.py's batch size when usable), writes each batch of inputs, and
  computes log_softmax / gather / bytes from the logits it gets back: the metric of
  prepare.evaluate_bpb over the first `vocab` columns. It also checks causality and computes the bpb
  of the uniform distribution (`untrained`, what a failed run is scored as).
Buffers: on CPU (and MPS) a file under /dev/shm (else the temp dir) that both processes map
(torch.from_file(shared=True)); on CUDA tensors the parent allocates on the child's GPU and shares as
CUDA IPC handles (torch.multiprocessing.reductions.reduce_tensor).

Threat model: in verification the agent controls train.py and nothing else; its code runs only in
the child. What it could try, and what stops or bounds it:
- Report its own number (its own evaluate, a printed summary, a patched evaluate_bpb, bytes written
  to any fd it finds): the score is computed in the parent, which reads only the logits buffer and
  small JSON messages it validates; the child holds no channel a result could be written to.
- Compute its logits from the targets: the child is never given y. Inputs necessarily contain the
  earlier targets (that is language modelling); using the following ones means looking ahead, which
  the causality check catches.
- Edit prepare.py (metric, data, constants, tokenizer): not used; the harness's bench.prepare is.
- Score fewer, easier or repeated tokens via batch_size or split: the parent chooses the rows.
- Look at future tokens (non-causal attention or masks, shifted inputs): on the first batch of each
  split and a random subset of the others (all when few, CAUSAL_MIN_BATCHES / CAUSAL_FRACTION), every
  row gets its own random cut from an unpredictable RNG, every token after it is changed, and the
  log-probabilities up to the cut must not move by more than CAUSAL_ATOL: else status "noncausal".
- Train past the budget: the launcher measures time to evaluate_bpb on its own clock and kills at
  --train-limit ("over_budget") and --eval-limit ("timeout").
- Overfit the validation shard it can see: the test split exists only in the verifier's container.
- Pick a lucky seed: bench.launch remaps every seed it sets (install_seed_hooks), torch.Generator too.
What it can still do, and what bounds it:
- Choose its logits: it is the model, and the forward is its code wherever it runs. Bounded by the
  causality check and by the inputs being the harness's.
- Detect the causality probe (a row that shares a prefix with a row it has already seen) and answer
  it with stored log-probabilities: needs deliberate code that a reader of the diff should look for.
  Leaks smaller than CAUSAL_ATOL, or confined to batches that are not checked, also pass.
- Forge the measurements in its hello (train_tokens, train_steps, tokens_per_second, init_fingerprint): they are
  computed next to agent code, so they are evidence, not proof. The verifier uses them for drift checks
  on the baseline (trusted code) and for seed_ignored; pre_eval_seconds, eval_seconds, cpu_seconds and
  neighbour_load come from the launcher.
- Keep training in another thread while the parent evaluates (later batches see a better model): bounded
  by --eval-limit, which the verifier sets from the measured evaluation time.
- Read the eval rows and look each prefix up in its own copy (causal, near-zero bpb): in docker
  verification the child runs as the agent user (bench.launch --child-user) and the test split is
  readable by its owner only, so the test score stays honest; the val split stays readable (agents see
  it in their sessions anyway), and a val lookup shows as val overfitting, which the verifier flags.
  Where the child runs as the launcher's user (process runtime, a harness that is not root), nothing
  stops it.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import random
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from bench.launch import Link

# captured before train.py runs, so that later monkeypatching of these names does not reach us
_Tensor = torch.Tensor
_no_grad = torch.no_grad
_from_file = torch.from_file
_monotonic = time.monotonic
_exit = os._exit

CAUSAL_ATOL = 1e-3           # max |change| of a log-probability up to the cut
CAUSAL_MIN_BATCHES = 8       # per split: every batch is checked when there are at most this many
CAUSAL_FRACTION = 0.25       # else the first and a random quarter of the others: about +25% forward passes
DEFAULT_BATCH_TOKENS = 2**16  # rows per forward pass when train.py passes no usable batch size
CHUNK_ELEMENTS = 2**26       # logits the parent normalizes at once (256 MB of float32)
FINGERPRINT_VALUES = 64      # leading values of each parameter that go into init_fingerprint

Transport = Literal["shared_file", "cuda_ipc"]


class TrustedEvalError(RuntimeError):
    """The model cannot be scored (e.g. model(x) does not return logits)."""


def model_logits(model, x, vocab: int):
    logits = model(x)
    if not isinstance(logits, _Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape or logits.size(-1) < vocab:
        shape = tuple(logits.shape) if isinstance(logits, _Tensor) else type(logits).__name__
        raise TrustedEvalError(f"model(x) must return logits of shape (B, T, >= {vocab}) for x of shape "
                               f"{tuple(x.shape)}, got {shape}")
    return logits


# ---------------------------------------------------------------------------
# Shared buffers
# ---------------------------------------------------------------------------

def transport_for(device: torch.device) -> Transport:
    """CUDA IPC for a model on a CUDA device; a shared file for CPU and MPS (the child copies through the CPU)."""
    return "cuda_ipc" if device.type == "cuda" else "shared_file"


def allocate(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, directory: Path) -> tuple[Any, tuple]:
    """(tensor, handle): a buffer the parent owns and a picklable handle from which the child maps the same memory."""
    if transport_for(device) == "cuda_ipc":
        from torch.multiprocessing.reductions import reduce_tensor
        tensor = torch.zeros(shape, dtype=dtype, device=device)
        return tensor, ("cuda_ipc", reduce_tensor(tensor))
    path = Path(tempfile.mkstemp(dir=directory, prefix="arbench-eval-")[1])
    numel = math.prod(shape)
    os.truncate(path, numel * dtype.itemsize)
    return _from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape), ("shared_file", str(path), shape, dtype)


def open_buffer(handle: tuple):
    """The child's view of a buffer the parent allocated."""
    if handle[0] == "cuda_ipc":
        rebuild, args = handle[1]
        return rebuild(*args)
    _, path, shape, dtype = handle
    return _from_file(path, shared=True, size=math.prod(shape), dtype=dtype).view(shape)


def shared_directory() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


# ---------------------------------------------------------------------------
# Child side: measurements, then serve forward passes until told to exit
# ---------------------------------------------------------------------------

class TrainMeter:
    """Counts the tokens the harness's train dataloader yields, timed with a clock captured before train.py runs.
    first_batch_at is CLOCK_MONOTONIC, which is one clock for every process of the machine: the parent turns it
    into the training time up to evaluate_bpb."""

    def __init__(self):
        self.tokens, self.first_tokens, self.first, self.last = 0, 0, None, None

    def wrap(self, make_dataloader):
        def counted(tokenizer, B, T, split, *args, **kwargs):
            loader = make_dataloader(tokenizer, B, T, split, *args, **kwargs)
            return self._count(loader) if split == "train" else loader
        return counted

    def _count(self, loader):
        for batch in loader:
            now = _monotonic()
            tokens = batch[0].numel()
            if self.first is None:
                self.first, self.first_tokens = now, tokens
            self.tokens, self.last = self.tokens + tokens, now
            yield batch

    def measurements(self) -> dict[str, Any]:
        span = (self.last - self.first) if self.first is not None else 0.0
        rate = (self.tokens - self.first_tokens) / span if span > 0 else None
        return {"train_tokens": self.tokens, "tokens_per_second": rate, "first_batch_at": self.first}


class FirstOptimizer:
    """The first torch.optim optimizer that steps: a hash of its parameters just before its first step
    (init_fingerprint), and how many steps it took."""

    def __init__(self):
        self.fingerprint: str | None = None
        self.steps = 0
        self._optimizer = None
        register_optimizer_step_pre_hook(self._hook)

    def _hook(self, optimizer, args, kwargs) -> None:
        if self._optimizer is None:
            self._optimizer = optimizer
            self.fingerprint = parameter_fingerprint(p for group in optimizer.param_groups for p in group["params"])
        if optimizer is self._optimizer:
            self.steps += 1


@_no_grad()
def parameter_fingerprint(parameters) -> str:
    """Shape, first FINGERPRINT_VALUES values and sum of each tensor, in order: cheap, and sensitive to the seed."""
    digest = hashlib.sha256()
    for p in parameters:
        flat = p.detach().reshape(-1)
        values = torch.cat([flat[:FINGERPRINT_VALUES].double(), flat.double().sum().reshape(1)]).cpu()
        digest.update(repr(tuple(p.shape)).encode() + values.numpy().tobytes())
    return digest.hexdigest()[:32]


def install(prepare, control_fd: int) -> None:
    """In the child, before train.py runs: count train tokens and optimizer steps, fingerprint the initial
    weights, and make prepare.evaluate_bpb hand the model over to the parent (it never returns)."""
    os.set_inheritable(control_fd, False)   # programs train.py starts do not get the socket
    link = Link(socket.socket(fileno=control_fd))
    meter, optimizer = TrainMeter(), FirstOptimizer()
    prepare.make_dataloader = meter.wrap(prepare.make_dataloader)

    def evaluate_bpb(model, tokenizer=None, batch_size=None, split="val"):
        hello = {"batch_size": batch_size if type(batch_size) is int else None,
                 "train_steps": optimizer.steps, "init_fingerprint": optimizer.fingerprint, **meter.measurements()}
        serve(model, link, hello)
    prepare.evaluate_bpb = evaluate_bpb


@_no_grad()
def serve(model, link: Link, hello: dict) -> None:
    """Send the hello, then run forward passes on the parent's inputs until it says exit."""
    try:
        device = next(model.parameters()).device
        if device.type == "cuda":
            torch.cuda.empty_cache()   # the parent allocates the buffers on the same GPU
        link.send_json(hello | {"device": str(device)})
        setup = pickle.loads(link.receive_bytes())
        inputs, outputs, vocab = open_buffer(setup["x"]), open_buffer(setup["logits"]), setup["vocab"]
        model.eval()
        while pickle.loads(link.receive_bytes()) == "go":
            logits = model_logits(model, inputs.to(device, copy=True), vocab)
            outputs.copy_(logits[..., :vocab])
            del logits
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            link.send_json({"done": True})
        code = 0
    except Exception as e:   # the parent sees the error; the traceback goes to the log
        traceback.print_exc()
        try:
            link.send_json({"error": f"{type(e).__name__}: {e}"[:500]})
        except OSError:
            pass
        code = 1
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    _exit(code)


# ---------------------------------------------------------------------------
# Parent side: rows, scoring, causality, the uniform reference
# ---------------------------------------------------------------------------

class ChildFailed(Exception):
    """The child crashed, sent something malformed, or missed the eval deadline during evaluation."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class EvalResult:
    bpb: dict[str, float]
    causal_max_diff: float
    causal_cuts: int
    worst: str              # where the largest change was seen
    batch_size: int


class Scorer:
    """The parent's half: holds the rows (x, y), the token bytes and the vocabulary; no agent code runs here."""

    def __init__(self, prepare, splits: list[str]):
        self.prepare, self.splits = prepare, splits
        tokenizer = prepare.Tokenizer.from_directory()
        self.vocab = tokenizer.get_vocab_size()
        self.seq_len = prepare.MAX_SEQ_LEN
        self.rows = max(1, prepare.EVAL_TOKENS // prepare.MAX_SEQ_LEN)
        self.token_bytes = prepare.get_token_bytes(device="cpu")
        self.data = {}
        for split in splits:
            x, y, _ = next(prepare.make_dataloader(tokenizer, self.rows, self.seq_len, split, device="cpu"))
            self.data[split] = (x, y)

    def untrained(self) -> dict[str, float]:
        """bpb of the uniform distribution over the vocabulary on the same rows (targets with bytes > 0)."""
        result = {}
        for split, (_, y) in self.data.items():
            nbytes = self.token_bytes[y]
            result[split] = math.log2(self.vocab) * int((nbytes > 0).sum()) / int(nbytes.sum())
        return result

    def batch_size(self, asked: int | None) -> int:
        if isinstance(asked, int) and 0 < asked <= self.rows:   # train.py's batch: no recompilation
            return asked
        return max(1, min(self.rows, DEFAULT_BATCH_TOKENS // self.seq_len))

    @_no_grad()
    def evaluate(self, link: Link, device: torch.device, batch: int, deadline: float,
                 other_user: bool = False) -> EvalResult:
        """Score the child's model; other_user: it runs as another user, which must open the buffer files."""
        directory = Path(tempfile.mkdtemp(dir=shared_directory(), prefix="arbench-eval-"))
        try:
            x_buf, x_handle = allocate((batch, self.seq_len), torch.long, device, directory)
            out_buf, out_handle = allocate((batch, self.seq_len, self.vocab), torch.float32, device, directory)
            if other_user:   # a root without CAP_CHOWN cannot give them away: searchable directory, open files
                directory.chmod(0o711)
                for path in directory.iterdir():
                    path.chmod(0o666)
            link.send_bytes(pickle.dumps({"x": x_handle, "logits": out_handle, "vocab": self.vocab}))
            forward = _Forward(link, x_buf, out_buf, deadline)
            return self._score(forward, batch, random.Random(os.urandom(16)))
        finally:
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()

    def _score(self, forward: _Forward, batch: int, rng: random.Random) -> EvalResult:
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        token_bytes = self.token_bytes.to(forward.device)
        bpb, worst, cuts = {}, (0.0, "no cut checked"), 0
        for split, (x_all, y_all) in self.data.items():
            count = -(-self.rows // batch)
            others = list(range(1, count))
            checked = {0} | set(rng.sample(others, len(others) if count <= CAUSAL_MIN_BATCHES
                                           else math.ceil(CAUSAL_FRACTION * len(others))))
            total_nats, total_bytes = 0.0, 0
            for b in range(count):
                index = torch.arange(b * batch, (b + 1) * batch) % self.rows   # the last batch is padded, not scored
                x, y, n = x_all[index], y_all[index].to(forward.device), min(batch, self.rows - b * batch)
                forward(x)
                kept = forward.logits() if b in checked else None
                for rows in self._chunks(n):
                    logp = torch.log_softmax(kept[rows] if kept is not None else forward.logits(rows), dim=-1)
                    nats, nbytes = score(logp, y[rows], token_bytes)
                    total_nats, total_bytes = total_nats + nats, total_bytes + nbytes
                if kept is not None:
                    diff, where, n_cuts = self._causal(forward, x, kept, generator)
                    cuts += n_cuts
                    if diff > worst[0]:
                        worst = (diff, f"{split} batch {b} {where}")
            bpb[split] = total_nats / (math.log(2) * total_bytes)
        return EvalResult(bpb=bpb, causal_max_diff=worst[0], causal_cuts=cuts, worst=worst[1], batch_size=batch)

    def _chunks(self, n: int):
        """Row slices of at most CHUNK_ELEMENTS logits: the parent's memory stays bounded on a GPU."""
        step = max(1, CHUNK_ELEMENTS // (self.seq_len * self.vocab))
        return [slice(r, min(r + step, n)) for r in range(0, n, step)]

    def _causal(self, forward: _Forward, x, kept, generator) -> tuple[float, str, int]:
        """Largest change of a log-probability at positions <= each row's random cut when every later token changes."""
        B, T = x.shape
        if T < 2:
            return 0.0, "", 0
        cut = torch.randint(0, T - 1, (B,), generator=generator)
        later = torch.arange(T)[None, :] > cut[:, None]
        offset = torch.randint(1, self.vocab, (B, T), generator=generator)
        forward(torch.where(later, (x + offset) % self.vocab, x))
        per_row = torch.zeros(B, dtype=torch.float64)
        for rows in self._chunks(B):
            before, after = torch.log_softmax(kept[rows], dim=-1), torch.log_softmax(forward.logits(rows), dim=-1)
            moved = (after - before).abs().amax(dim=-1).nan_to_num(nan=math.inf)
            per_row[rows] = moved.masked_fill(later[rows].to(moved.device), 0.0).amax(dim=-1).double().cpu()
        row = int(per_row.argmax())
        return float(per_row[row]), f"row {row} cut {int(cut[row])}", B


class _Forward:
    """One forward pass through the child: write x, say go, wait for done; logits() copies rows of the output
    out (read once: the child can rewrite the buffer at any time, and a row must be normalized as it was read)."""

    def __init__(self, link: Link, x_buf, out_buf, deadline: float):
        self.link, self.x_buf, self.out_buf, self.deadline = link, x_buf, out_buf, deadline
        self.device = out_buf.device

    def __call__(self, x) -> None:
        self.x_buf.copy_(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.link.send_bytes(pickle.dumps("go"))
        try:
            reply = self.link.receive_json(self.deadline)
        except TimeoutError:
            raise ChildFailed("timeout", "killed at the eval limit") from None
        except (OSError, ValueError) as e:
            raise ChildFailed("crash", f"malformed message from the model process: {e}") from None
        if reply is None:
            raise ChildFailed("crash", "the model process exited during evaluation")
        if reply != {"done": True}:
            error = reply.get("error") if isinstance(reply, dict) else None
            raise ChildFailed("crash", str(error)[:500] if isinstance(error, str) else f"unexpected message {str(reply)[:200]}")

    def logits(self, rows: slice = slice(None)):
        return self.out_buf[rows].clone()


def score(logp, y, token_bytes) -> tuple[float, int]:
    """(nats summed over targets with bytes > 0, their bytes): the metric of prepare.evaluate_bpb."""
    nll = -torch.gather(logp, -1, y.unsqueeze(-1)).squeeze(-1)
    nbytes = token_bytes[y]
    return (nll.double() * (nbytes > 0)).sum().item(), int(nbytes.sum().item())
