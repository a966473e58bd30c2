"""What the container images hold of this checkout, and how to tell an image is current.

Shared by the docker runtime (which refuses an image built from other code) and images/build.py
(which labels each image with the hash computed here). Building is not covered here.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

IMAGES = {"cpu": "arbench:cpu", "cuda": "arbench:cuda"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PARTS = ("bench", "agents", "pyproject.toml")   # what an image holds of this checkout: never the grader (harness)
IMAGE_PROJECT_DIR = "/opt/arbench"
LABEL = "org.arbench"            # prefix of the images' and containers' labels


def project_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The files of this checkout that go into an image, relative to root, in a fixed order."""
    files = []
    for part in PROJECT_PARTS:
        path = root / part
        candidates = [path] if path.is_file() else path.rglob("*")
        files += [p.relative_to(root) for p in candidates
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(files)


def project_hash(root: Path = PROJECT_ROOT) -> str:
    digest = hashlib.sha256()
    for rel in project_files(root):
        digest.update(f"{rel}\0".encode() + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def host_flavors() -> list[str]:
    """The images this host can build and run: cpu, and cuda where an NVIDIA driver answers."""
    return ["cpu"] + (["cuda"] if shutil.which("nvidia-smi") else [])
