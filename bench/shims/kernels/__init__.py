"""An offline stand-in for Hugging Face's `kernels` package: what the original autoresearch train.py asks of it.

The original's train.py downloads FlashAttention-3 from the kernel hub when it starts:

    from kernels import get_kernel
    fa3 = get_kernel("varunneal/flash-attention-3").flash_attn_interface
    y = fa3.flash_attn_func(q, k, v, causal=True, window_size=window_size)

Sandboxes have no network, so bench/shims is on their PYTHONPATH (ahead of any installed `kernels`) and this
module serves that call with torch's scaled_dot_product_attention (SDPA). get_kernel says so on stderr, once
per repository, in a line that starts with bench.launch.SUBSTITUTION_PREFIX; the launcher reads those lines
from the run's log into RunOutcome.substitutions.

Covered: get_kernel, with the hub's signature, for the FlashAttention-3 repositories in FLASH_ATTENTION_3;
their flash_attn_func (also as .flash_attn_interface.flash_attn_func) with FA3's signature and meaning:
q (B, T, H, D), k and v (B, T, H_kv, D) with H a multiple of H_kv (GQA: query head h uses kv head
h // (H / H_kv)), softmax_scale (default D**-0.5), causal, window_size=(left, right): query i sees key j
when i - left <= j <= i + right, -1 for no bound, right = 0 when causal; returns (B, T, H, D). Works under
torch.compile (fullgraph). FA3's speed knobs (num_splits, pack_gqa, deterministic, sm_margin) are accepted
and ignored.
Not covered, refused with UnsupportedKernelError: other repositories and functions, softcap, qv, FP8
descaling, attention_chunk, return_attn_probs, q and k of different lengths.
Not promised: FA3's speed (a full causal window takes SDPA's fused causal path on CUDA; a sliding window is
a boolean mask, so no work is skipped: a run trains fewer steps in its budget than with FA3) or its bitwise
results; gradients are autograd's through SDPA.
"""

import sys
import types

import torch
import torch.nn.functional as F

from bench.launch import SUBSTITUTION_PREFIX

FLASH_ATTENTION_3 = ("varunneal/flash-attention-3", "kernels-community/flash-attn3")   # the original's two choices
_announced: set[str] = set()


class UnsupportedKernelError(NotImplementedError):
    """A kernel, function or option this stand-in does not serve."""


def get_kernel(repo_id, revision=None, version=None, backend=None, user_agent=None, trust_remote_code=False,
               check_arch=True):
    """The kernel hub's get_kernel, offline: a FlashAttention-3 repository gives a module backed by SDPA."""
    if repo_id not in FLASH_ATTENTION_3:
        raise UnsupportedKernelError(f"get_kernel({repo_id!r}): the offline stand-in for `kernels` serves only "
                                     f"{' and '.join(FLASH_ATTENTION_3)}")
    if repo_id not in _announced:
        _announced.add(repo_id)
        print(f"{SUBSTITUTION_PREFIX}kernels: get_kernel({repo_id!r}) served by torch scaled_dot_product_attention "
              f"(offline stand-in)", file=sys.stderr, flush=True)
    kernel = types.ModuleType(repo_id, "FlashAttention-3's flash_attn_func served by torch SDPA (bench/shims)")
    kernel.flash_attn_func = flash_attn_func
    kernel.flash_attn_interface = kernel   # the hub's module has the function at its top and in this submodule
    return kernel


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                    v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                    pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
    """FlashAttention-3's flash_attn_func computed by scaled_dot_product_attention: (B, T, H, D) in and out."""
    refused = {"softcap": softcap != 0.0, "qv": qv is not None, "attention_chunk": attention_chunk != 0,
               "q_descale/k_descale/v_descale": any(d is not None for d in (q_descale, k_descale, v_descale)),
               "return_attn_probs": bool(return_attn_probs)}
    if used := [name for name, on in refused.items() if on]:
        raise UnsupportedKernelError(f"flash_attn_func: {', '.join(used)} not supported by the offline stand-in "
                                     f"for FlashAttention-3 (torch scaled_dot_product_attention)")
    seq_len = q.size(1)
    if k.size(1) != seq_len:
        raise UnsupportedKernelError(f"flash_attn_func: q and k of different lengths ({seq_len}, {k.size(1)}) "
                                     f"are not supported by the offline stand-in for FlashAttention-3")
    # FA3's reading of the window: right is 0 when causal, and a bound of T - 1 or more bounds nothing (-1)
    left, right = (-1 if b < 0 or b >= seq_len - 1 else b for b in (window_size[0], 0 if causal else window_size[1]))
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))   # SDPA takes (B, H, T, D)
    options = {"scale": softmax_scale, "enable_gqa": k.size(1) != q.size(1)}
    if left == right == -1:
        y = F.scaled_dot_product_attention(q, k, v, **options)
    elif left == -1 and right == 0 and q.is_cuda:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=_window_mask(seq_len, left, right, q.device), **options)
    return y.transpose(1, 2)


def _window_mask(seq_len, left, right, device):
    """Boolean (T, T): query i sees key j when i - left <= j <= i + right (-1: no bound)."""
    pos = torch.arange(seq_len, device=device)
    offset = pos[None, :] - pos[:, None]   # j - i
    keep = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)
    if left >= 0:
        keep &= offset >= -left
    if right >= 0:
        keep &= offset <= right
    return keep
