"""The agent's workspace: a fresh git repo holding the task at its baseline commit."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.profile import Profile, render_train_py

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
GITIGNORE = "results.tsv\nrun.log\n__pycache__/\n"


@dataclass(frozen=True)
class Baseline:
    commit: str
    branch: str
    files: dict[str, str]   # path -> sha256 of every tracked file at the baseline commit


def git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def task_files(profile: Profile) -> dict[str, str]:
    """The files an agent is given, as text: what the baseline commit holds."""
    return {
        "prepare.py": (BENCH_DIR / "prepare.py").read_text(),
        "train.py": render_train_py(profile),
        "program.md": (BENCH_DIR / "program.md").read_text(),
        "profile.toml": profile.to_toml(),
        ".gitignore": GITIGNORE,
    }


def make_workspace(dest: Path, profile: Profile, tag: str) -> Baseline:
    """A git repo at dest: the baseline on `main`, branch autoresearch/<tag> checked out."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    files = task_files(profile)
    for name, text in files.items():
        (dest / name).write_text(text)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.name", "autoresearch-bench")
    git(dest, "config", "user.email", "agent@autoresearch-bench.invalid")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "baseline")
    branch = f"autoresearch/{tag}"
    git(dest, "checkout", "-q", "-b", branch)
    return Baseline(commit=git(dest, "rev-parse", "HEAD"), branch=branch,
                    files={name: sha256_bytes(text.encode()) for name, text in files.items()})


def is_ancestor(repo: Path, commit: str, descendant: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, descendant],
                          capture_output=True).returncode == 0


def file_at(repo: Path, commit: str, path: str) -> bytes:
    """The exact bytes of path at commit."""
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"],
                          capture_output=True, check=True).stdout
