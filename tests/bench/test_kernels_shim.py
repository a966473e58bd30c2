"""bench/shims/kernels, the offline stand-in for the kernel hub: FlashAttention-3's flash_attn_func against a naive
attention (windows, GQA, scale, gradients), the hub's call signature, clear refusals, the substitution it announces,
`import kernels` finding it in both runtimes' sandboxes, and a train.py that loads its attention from the hub as the
original's does, trained and scored by the launcher in trusted mode through the process runtime."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import pytest
import torch
from launching import small_profile, workspace

from bench.contracts import RunOutcome
from bench.launch import parse_substitutions
from harness.runtime import get_runtime
from harness.runtime.base import SandboxSpec
from harness.runtime.process import SHIMS_DIR

REPO = "varunneal/flash-attention-3"
SUBSTITUTION = f"kernels: get_kernel({REPO!r}) served by torch scaled_dot_product_attention (offline stand-in)"
IMPORT_PROBE = (f"import kernels, torch; q = torch.randn(1, 4, 2, 8)\n"
                f"y = kernels.get_kernel({REPO!r}).flash_attn_interface.flash_attn_func(q, q, q, causal=True, "
                f"window_size=(2, 0))\nprint(kernels.__file__, tuple(y.shape))\n")


@pytest.fixture
def kernels(monkeypatch):
    """A fresh instance of the stand-in (its announcements are per process), as `import kernels` gives it."""
    spec = importlib.util.spec_from_file_location("kernels", SHIMS_DIR / "kernels" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "kernels", module)
    return module


def naive_attention(q, k, v, causal, window_size, scale=None):
    """FA3's definition, spelled out: query i sees key j when i - left <= j <= i + right (-1: unbounded),
    right = 0 when causal; kv head h serves query heads h*g .. h*g+g-1."""
    B, T, H, D = q.shape
    group = H // k.size(2)
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * (scale if scale is not None else 1 / math.sqrt(D))
    left, right = window_size[0], 0 if causal else window_size[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    keep = ((j >= i - left) | (left < 0)) & ((j <= i + right) | (right < 0))
    probs = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhij,bjhd->bihd", probs, v)


CASES = [  # (causal, window_size, kv heads, scale)
    (True, (-1, -1), 4, None),      # full causal, as the original's long layers with T <= window
    (True, (16, 0), 4, None),       # window >= T: the same as full
    (True, (5, 0), 2, None),        # sliding window, the original's short layers, with GQA
    (True, (0, 0), 1, 0.3),         # each query sees only itself; multi-query; own scale
    (False, (3, 2), 2, None),       # a two-sided local window
    (False, (-1, -1), 4, None),     # full bidirectional
]


@pytest.mark.parametrize("causal, window_size, kv_heads, scale", CASES)
def test_flash_attn_func_matches_naive_attention_forward_and_backward(kernels, causal, window_size, kv_heads, scale):
    torch.manual_seed(0)
    q = torch.randn(2, 16, 4, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 16, kv_heads, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    fa3 = kernels.get_kernel(REPO).flash_attn_interface
    got = fa3.flash_attn_func(q, k, v, softmax_scale=scale, causal=causal, window_size=window_size)
    want = naive_attention(q, k, v, causal, window_size, scale)
    assert got.shape == (2, 16, 4, 8)
    torch.testing.assert_close(got, want)
    upstream = torch.randn_like(want)
    grads = torch.autograd.grad(got, (q, k, v), upstream)
    torch.testing.assert_close(grads, torch.autograd.grad(want, (q, k, v), upstream))


def test_flash_attn_func_compiles_into_one_graph(kernels):
    """The original's train.py compiles its model: the stand-in must trace without a graph break."""
    fa3 = kernels.get_kernel(REPO).flash_attn_interface
    q, k, v = torch.randn(1, 16, 4, 8), torch.randn(1, 16, 2, 8), torch.randn(1, 16, 2, 8)

    def layers(q, k, v):
        return fa3.flash_attn_func(q, k, v, causal=True, window_size=(4, 0)) + \
            fa3.flash_attn_func(q, k, v, causal=True, window_size=(16, 0))
    torch.testing.assert_close(torch.compile(layers, backend="eager", fullgraph=True)(q, k, v), layers(q, k, v))


def test_get_kernel_has_the_hubs_signature_and_both_ways_to_the_function(kernels):
    params = inspect.signature(kernels.get_kernel).parameters
    assert list(params) == ["repo_id", "revision", "version", "backend", "user_agent", "trust_remote_code",
                            "check_arch"]
    assert all(p.default is not inspect.Parameter.empty for name, p in params.items() if name != "repo_id")
    for repo in kernels.FLASH_ATTENTION_3:
        kernel = kernels.get_kernel(repo, revision="main")
        assert kernel.flash_attn_interface.flash_attn_func is kernel.flash_attn_func is kernels.flash_attn_func


def test_get_kernel_announces_the_substitution_once_in_a_line_the_launcher_reads(kernels, capsys):
    kernels.get_kernel(REPO)
    kernels.get_kernel(REPO)
    err = capsys.readouterr().err
    assert err.count("substitution") == 1
    assert parse_substitutions(err) == [SUBSTITUTION]


def test_what_it_does_not_serve_is_refused_in_one_line_the_launcher_reports(kernels):
    with pytest.raises(kernels.UnsupportedKernelError, match="serves only varunneal/flash-attention-3"):
        kernels.get_kernel("kernels-community/activation")
    fa3 = kernels.get_kernel(REPO).flash_attn_interface
    q = torch.randn(1, 8, 2, 4)
    with pytest.raises(kernels.UnsupportedKernelError, match="softcap not supported"):
        fa3.flash_attn_func(q, q, q, causal=True, softcap=30.0)
    with pytest.raises(kernels.UnsupportedKernelError, match="different lengths"):
        fa3.flash_attn_func(q, q[:, :4], q[:, :4], causal=True)
    assert kernels.UnsupportedKernelError.__name__.endswith("Error")   # what bench.launch.classify takes as the cause


def test_the_process_sandbox_imports_the_stand_in(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with get_runtime("process", cpus=1).open(SandboxSpec(name="t", workspace=workspace)) as sandbox:
        result = sandbox.exec([sys.executable, "-c", IMPORT_PROBE], tmp_path / "log.txt", timeout_s=120)
    out = (tmp_path / "log.txt").read_text()
    assert result.exit_code == 0, out
    assert f"{SHIMS_DIR / 'kernels' / '__init__.py'} (1, 4, 2, 8)" in out and SUBSTITUTION in out


@pytest.mark.docker
@pytest.mark.slow
def test_the_docker_image_imports_the_stand_in(docker_runtime, tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with docker_runtime.open(SandboxSpec(name="t-kernels", workspace=workspace)) as sandbox:
        result = sandbox.exec(["python", "-c", IMPORT_PROBE], tmp_path / "log.txt", timeout_s=120)
    out = (tmp_path / "log.txt").read_text()
    assert result.exit_code == 0, out
    assert "/opt/arbench/bench/shims/kernels/__init__.py (1, 4, 2, 8)" in out and SUBSTITUTION in out


# ---------------------------------------------------------------------------
# A train.py in the original's shape, through the launcher (trusted mode, process runtime)
# ---------------------------------------------------------------------------

HUB_ATTENTION = [   # our train.py -> the original's way: FlashAttention-3 from the hub, called with each layer's window
    ("from prepare import", f"from kernels import get_kernel\nfa3 = get_kernel({REPO!r}).flash_attn_interface\n\n"
                            "from prepare import"),
    ("y = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask)\n"
     "        y = y.transpose(1, 2).contiguous()",
     "y = fa3.flash_attn_func(q, k, v, causal=True, window_size=attn_mask)\n        y = y.contiguous()"),
    ("x = block(x, ve, cos_sin, attn_masks[i])", "x = block(x, ve, cos_sin, (self.window_sizes[i], 0))"),
]
STEPS = 30


def hub_attention(train_py: str) -> str:
    for old, new in HUB_ATTENTION:
        assert train_py.count(old) == 1, old
        train_py = train_py.replace(old, new)
    return train_py


def trusted_run(ws: Path, data) -> RunOutcome:
    """`python -m bench.launch --trusted val` in a process-runtime sandbox on ws, as verification runs it."""
    env = {"ARBENCH_DATA_DIR": str(data.data_dir), "ARBENCH_TEST_DIR": str(data.test_dir)}
    argv = ["python", "-m", "bench.launch", "--seed", "1", "--result", "outcome.json", "--log", "run.log",
            "--trusted", "val", "train.py"]
    with get_runtime("process", cpus=2).open(SandboxSpec(name=ws.name, workspace=ws, env=env)) as sandbox:
        sandbox.exec(argv, ws.parent / f"{ws.name}-launcher.log", timeout_s=300)
    return RunOutcome.from_json((ws / "outcome.json").read_text())


@pytest.fixture(scope="module")
def hub_runs(tmp_path_factory, corpus_data):
    """Two layers (a half-context sliding window, then the full context) of two heads each: our train.py, and the
    same with its attention loaded from the hub, trained STEPS steps with the same seed."""
    small = small_profile()
    profile = dataclasses.replace(small, train={**small.train, "DEPTH": 2, "HEAD_DIM": 64})
    root = tmp_path_factory.mktemp("hub")
    return {"ours": trusted_run(workspace(root / "ours", profile, steps=STEPS), corpus_data),
            "hub": trusted_run(workspace(root / "hub", profile, steps=STEPS, edit=hub_attention), corpus_data)}


@pytest.mark.slow
def test_a_train_py_loading_attention_from_the_hub_trains_and_says_what_served_it(hub_runs):
    hub = hub_runs["hub"]
    assert hub.status == "ok", hub.message
    assert hub.trusted["val"] < hub.untrained["val"] - 0.5   # about 4.3 -> 3.2 bits per byte in 30 steps
    assert hub.substitutions == [SUBSTITUTION]
    assert hub_runs["ours"].substitutions == []


@pytest.mark.slow
def test_the_stand_in_trains_the_model_our_attention_trains(hub_runs):
    """Same masks, same SDPA call on CPU: the same weights, so the same trusted score."""
    assert hub_runs["hub"].trusted["val"] == hub_runs["ours"].trusted["val"]
