"""Trusted evaluation: harness code, not train.py, turns the trained model into a bpb.

`python -m bench.launch --trusted val,test` installs this in the child before train.py runs: the
harness's bench.prepare stands in as the module `prepare`, and its evaluate_bpb is replaced by the
one built here. When train.py calls it, the launcher is told over a pipe (so the time from the
child's start to evaluation is measured by the launcher's clock), the model is scored from its
logits on a fixed number of rows of each split, its causality is checked, the result goes back over
the pipe and the process exits before any later line of train.py runs.

Threat model: in verification the agent controls train.py and nothing else.
What its code could try, and what stops it:
- Edit prepare.py (metric, data, constants, tokenizer): not used; the harness's bench.prepare is.
- Report its own number (its own evaluate, a printed summary): the bpb is computed here from
  model(x) called without targets; log_softmax is taken here, so only normalized probabilities count.
- Score fewer, easier or repeated tokens via batch_size or split: the rows are fixed,
  EVAL_TOKENS // MAX_SEQ_LEN rows of each split from the harness's loader, whatever it passes.
- Look at future tokens (non-causal attention or masks, shifted inputs): every token after a cut is
  changed in every row of the first batch, at two adjacent cuts; the log-probabilities up to the cut
  must not move by more than CAUSAL_ATOL, else checks.causal is false.
- Overfit the validation shard it can see: the test split exists only in the verifier's container.
- Pick a lucky seed: bench.launch remaps every seed it sets (install_seed_hooks).
- Train past the budget: pre_eval_seconds comes from the launcher's clock; the launcher kills at its timeout.
- Monkeypatch the torch functions used here: references to them are taken at import, before train.py runs.
What it does not stop (each needs deliberate code that the integrity checks and a reader of the diff
should look for):
- Code in the same process can reach everything: the pipe (/proc/self/fd), this module through
  sys.modules, Tensor methods, C-level state, os._exit with a forged result. The trust boundary is
  the process, and the model's forward is the agent's code wherever it runs.
- A stateful model that is causal on the checked batch and not on later ones, or that detects the
  perturbation; leaks smaller than CAUSAL_ATOL.
- Seeds set on generators it builds itself (torch.Generator().manual_seed).
"""

from __future__ import annotations

import json
import math
import os
import sys

import torch

# captured before train.py runs, so that later monkeypatching of these names does not reach us
_Tensor = torch.Tensor
_log_softmax = torch.log_softmax
_gather = torch.gather
_randint = torch.randint
_Generator = torch.Generator
_no_grad = torch.no_grad
_write = os.write
_exit = os._exit

CAUSAL_ATOL = 1e-3           # max |change| of a log-probability before the cut
DEFAULT_BATCH_TOKENS = 2**16  # rows per forward pass when train.py passes no usable batch size


class TrustedEvalError(RuntimeError):
    """The model cannot be scored (e.g. model(x) does not return logits)."""


def install(prepare, splits: list[str], channel_fd: int) -> None:
    """Replace prepare.evaluate_bpb by a trusted evaluator that scores `splits` and exits the process."""
    def evaluate_bpb(model, tokenizer=None, batch_size=None, split="val"):
        _write(channel_fd, b"evaluate\n")
        result = evaluate(model, prepare, splits, batch_size)
        _write(channel_fd, (json.dumps(result) + "\n").encode())
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        _exit(0)
    prepare.evaluate_bpb = evaluate_bpb


def eval_rows(prepare) -> int:
    return max(1, prepare.EVAL_TOKENS // prepare.MAX_SEQ_LEN)


@_no_grad()
def evaluate(model, prepare, splits: list[str], batch_size=None) -> dict:
    """{bpb: {split: bits per byte}, causal, causal_max_diff, rows, batch_size} for a trained model."""
    device = next(model.parameters()).device
    rows = eval_rows(prepare)
    usable = isinstance(batch_size, int) and 0 < batch_size <= rows   # train.py's batch: no recompilation
    batch = batch_size if usable else max(1, min(rows, DEFAULT_BATCH_TOKENS // prepare.MAX_SEQ_LEN))
    tokenizer = prepare.Tokenizer.from_directory()
    vocab = tokenizer.get_vocab_size()
    token_bytes = prepare.get_token_bytes(device=device)
    model.eval()
    bpb, max_diff = {}, None
    for split in splits:
        loader = prepare.make_dataloader(tokenizer, batch, prepare.MAX_SEQ_LEN, split, device=device)
        total_nats, total_bytes = 0.0, 0
        for start in range(0, rows, batch):
            x, y, _ = next(loader)
            logits = model_logits(model, x, vocab)
            if max_diff is None:
                max_diff = causal_max_diff(model, x, logits, vocab)
            n = min(batch, rows - start)   # every batch has the same shape; the last one is cut
            nats, nbytes = score(logits[:n], y[:n], token_bytes)
            total_nats, total_bytes = total_nats + nats, total_bytes + nbytes
        bpb[split] = total_nats / (math.log(2) * total_bytes)
    return {"bpb": bpb, "causal": max_diff is not None and max_diff <= CAUSAL_ATOL,
            "causal_max_diff": max_diff, "rows": rows, "batch_size": batch}


def model_logits(model, x, vocab: int):
    logits = model(x)
    if not isinstance(logits, _Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape or logits.size(-1) < vocab:
        shape = tuple(logits.shape) if isinstance(logits, _Tensor) else type(logits).__name__
        raise TrustedEvalError(f"model(x) must return logits of shape (B, T, >= {vocab}) for x of shape "
                               f"{tuple(x.shape)}, got {shape}")
    return logits


def score(logits, y, token_bytes) -> tuple[float, int]:
    """(nats summed over targets with bytes > 0, their bytes): the metric of prepare.evaluate_bpb."""
    logp = _log_softmax(logits.float(), dim=-1)
    nll = -_gather(logp, -1, y.unsqueeze(-1)).squeeze(-1)
    nbytes = token_bytes[y]
    return (nll.double() * (nbytes > 0)).sum().item(), int(nbytes.sum().item())


def causal_max_diff(model, x, logits, vocab: int) -> float:
    """Largest change of a log-probability at positions <= cut when every token after the cut changes."""
    T = x.size(1)
    generator = _Generator(device="cpu")
    generator.manual_seed(0)
    worst = 0.0
    for cut in (T // 2 - 1, T // 2):
        if cut < 0 or cut + 1 >= T:
            continue
        offset = _randint(1, vocab, (x.size(0), T - cut - 1), generator=generator).to(x.device)
        perturbed = x.clone()
        perturbed[:, cut + 1:] = (x[:, cut + 1:] + offset) % vocab
        before = _log_softmax(logits[:, :cut + 1].float(), dim=-1)
        after = _log_softmax(model_logits(model, perturbed, vocab)[:, :cut + 1].float(), dim=-1)
        diff = (after - before).abs().max().item()
        worst = max(worst, diff if math.isfinite(diff) else math.inf)
    return worst
