"""Provenance of a result: which revision of this project produced it."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@cache
def project_revision() -> dict[str, object]:
    """The project's git revision and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""
    revision = git("rev-parse", "HEAD")
    return {"git_revision": revision or "unknown", "dirty": bool(git("status", "--porcelain")) if revision else None}
