"""The image inputs: locks current and complete, and a build context that holds only what the image needs."""

from __future__ import annotations

import importlib
import re
import sys
import tarfile

from harness.runtime.images import PROJECT_ROOT


def load(name: str):
    """images/ is a folder of scripts, not an installed package."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    return importlib.import_module(f"images.{name}")


def pins(flavor: str) -> dict[str, str]:
    text = (PROJECT_ROOT / "images" / f"{flavor}.lock").read_text()
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:[0-9a-f]{64}$", text, flags=re.M))


def test_locks_are_current_hashed_and_agree():
    lock = load("lock")
    for flavor, target in lock.TARGETS.items():
        assert lock.read_header_hash(lock.lock_path(flavor)) == lock.inputs_hash(target), f"run images/lock.py {flavor}"
        entries = lock.lock_path(flavor).read_text().count("==")
        assert len(pins(flavor)) == entries   # every pin carries exactly one sha256
    cpu, cuda = pins("cpu"), pins("cuda")
    assert cpu["torch"] == "2.13.0+cpu" and cuda["torch"] == "2.13.0" and "nvidia-cuda-runtime" in cuda
    assert {n: v for n, v in cuda.items() if n in cpu and n != "torch"} == {n: cpu[n] for n in cuda if n in cpu
                                                                           and n != "torch"}


def test_build_context_holds_only_the_dockerfile_lock_and_project(tmp_path):
    build = load("build")
    out = tmp_path / "context.tar"
    build.write_context("cuda", out, wheelhouse=None)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[:2] == ["Dockerfile", "cuda.lock"]
    assert {n.split("/")[1] for n in names[2:]} == {"bench", "agents", "pyproject.toml"}   # never the grader
    assert all(n.startswith("src/") and "__pycache__" not in n and not n.endswith(".pyc") for n in names[2:])
