"""Regenerate the image lock files from pyproject.toml's dependencies (and the fixed scaffold's requirements).

    .venv/bin/python images/lock.py [cpu] [cuda] [scaffold-cpu] [scaffold-cuda]

Each lock pins the full dependency closure, one wheel per package with its sha256, in pip's
--require-hashes format; the Dockerfiles install with --require-hashes, so a file that differs from
the one locked here fails the build. The header records the hash of the inputs (dependencies and
target), so images/build.py refuses to build from a lock older than pyproject.toml.

- cpu:  CPython 3.11, glibc 2.36 (Debian bookworm), torch's CPU build. Resolved with the host's pip
        configuration (it may serve the CPU torch wheel from local disk); hashes are of the exact files.
- cuda: CPython 3.12, glibc 2.39 (Ubuntu 24.04 of the nvidia/cuda base), torch's CUDA build from
        PyPI, constrained to the cpu lock's versions wherever both hold a package, so both images run
        the same library versions.
- scaffold-cpu, scaffold-cuda: the fixed scaffold (agents/scaffold/requirements.txt: mini-swe-agent), for a venv of
        its own in each image (/opt/scaffold), from PyPI; the cuda one constrained to the cpu one's versions.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

IMAGES = Path(__file__).resolve().parent
ROOT = IMAGES.parent
PYPI = "https://pypi.org/simple"
# dependencies of code that runs on the host only, never in a sandbox: the LLM gateway's serving stack (it holds the
# provider keys; an agent's image has no use for it), the Slurm executor and the published site (leaderboards/)
HOST_ONLY = frozenset({"starlette", "uvicorn", "sniffio", "submitit", "pygments", "markdown-it-py"})


@dataclass(frozen=True)
class Target:
    flavor: str          # the lock is images/<flavor>.lock
    python: str          # "3.11"
    glibc_minor: int     # newest manylinux_2_X the image's glibc runs
    torch_local: str     # local version label of the torch build ("+cpu") or ""
    isolated: bool       # ignore the host's pip configuration (local indexes)
    requirements: str = "pyproject.toml"   # or a pip requirements file, relative to the project
    constrained_by: str | None = None      # the lock whose versions (torch aside) this one must match


SCAFFOLD = "agents/scaffold/requirements.txt"   # the fixed scaffold (mini-swe-agent): a venv of its own, /opt/scaffold
TARGETS = {   # a lock comes after the one it is constrained by
    "cpu": Target("cpu", "3.11", 36, "+cpu", isolated=False),
    "cuda": Target("cuda", "3.12", 39, "", isolated=True, constrained_by="cpu"),
    "scaffold-cpu": Target("scaffold-cpu", "3.11", 36, "", isolated=True, requirements=SCAFFOLD),
    "scaffold-cuda": Target("scaffold-cuda", "3.12", 39, "", isolated=True, requirements=SCAFFOLD,
                            constrained_by="scaffold-cpu"),
}


def canonicalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path(flavor: str) -> Path:
    return IMAGES / f"{flavor}.lock"


def requirements(target: Target) -> list[str]:
    if target.requirements != "pyproject.toml":
        lines = (ROOT / target.requirements).read_text().splitlines()
        return sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    deps = [d for d in deps if canonicalize_name(re.split(r"[=<>!~\[; ]", d, maxsplit=1)[0]) not in HOST_ONLY]
    return sorted(d + target.torch_local if d.startswith("torch==") else d for d in deps)


def inputs_hash(target: Target) -> str:
    """What a lock is a function of; images/build.py recomputes it to detect a stale lock."""
    text = json.dumps([target.flavor, target.python, target.glibc_minor, requirements(target)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_header_hash(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("# inputs:"):
            return line.split(":", 1)[1].strip()
    return None


def platform_args(target: Target) -> list[str]:
    tags = [f"manylinux_2_{m}_x86_64" for m in range(target.glibc_minor, 4, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    args = ["--only-binary=:all:", "--python-version", target.python, "--implementation", "cp"]
    for tag in tags:
        args += ["--platform", tag]
    return args


def constraints(target: Target) -> list[str]:
    """Versions from the lock it is constrained by (torch excluded) that it must match."""
    if target.constrained_by is None or not lock_path(target.constrained_by).exists():
        return []
    pins = [line.split()[0] for line in lock_path(target.constrained_by).read_text().splitlines() if "==" in line]
    return [p for p in pins if not p.startswith("torch==")]


def resolve(target: Target, tmp: Path) -> list[dict]:
    """pip's own resolver in dry-run mode; its report names each chosen file and its hash."""
    (tmp / "req.txt").write_text("\n".join(requirements(target)) + "\n")
    (tmp / "constraints.txt").write_text("\n".join(constraints(target)) + "\n")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(tmp / "report.json"), "--target", str(tmp / "target"),
           "-r", str(tmp / "req.txt"), "-c", str(tmp / "constraints.txt"), *platform_args(target)]
    if target.isolated:
        cmd[3:3] = ["--isolated"]
        cmd += ["--index-url", PYPI]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"error: pip could not resolve the {target.flavor} lock (its message is above)")
    return json.loads((tmp / "report.json").read_text())["install"]


def sha256_of(item: dict) -> str:
    info = item["download_info"]
    known = info.get("archive_info", {}).get("hashes", {}).get("sha256")
    if known:
        return known
    url = urlparse(info["url"])
    if url.scheme != "file":
        raise SystemExit(f"error: no sha256 for {info['url']}")
    return hashlib.sha256(Path(unquote(url.path)).read_bytes()).hexdigest()


def render(target: Target, items: list[dict]) -> str:
    lines = [f"# {target.flavor} image lock, generated by images/lock.py from {target.requirements}: do not edit",
             f"# CPython {target.python}, manylinux_2_{target.glibc_minor} x86_64",
             f"# inputs: {inputs_hash(target)}"]
    for item in sorted(items, key=lambda i: canonicalize_name(i["metadata"]["name"])):
        name = canonicalize_name(item["metadata"]["name"])
        filename = unquote(item["download_info"]["url"].rsplit("/", 1)[-1])
        lines += [f"# {filename}",
                  f"{name}=={item['metadata']['version']} \\",
                  f"    --hash=sha256:{sha256_of(item)}"]
    return "\n".join(lines) + "\n"


def lock(flavor: str) -> Path:
    target = TARGETS[flavor]
    with tempfile.TemporaryDirectory() as tmp:
        text = render(target, resolve(target, Path(tmp)))
    lock_path(flavor).write_text(text)
    return lock_path(flavor)


# ---------------------------------------------------------------------------------------------------
# Wheelhouses: a lock's files on the host, for the offline cpu builds

BUILD_DIR = IMAGES / ".build"


def locked_files(flavor: str) -> list[str]:
    """The wheel file names the lock pins (its `# <file>` lines)."""
    return [line[2:] for line in lock_path(flavor).read_text().splitlines() if line.startswith("# ")
            and line.endswith(".whl")]


def fill_wheelhouse(flavor: str) -> Path:
    """Exactly the lock's files, downloaded with the host's pip configuration, hashes checked."""
    wheelhouse = BUILD_DIR / f"wheelhouse-{flavor}"
    stamp = wheelhouse / ".lock-sha256"
    lock_sha = hashlib.sha256(lock_path(flavor).read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == lock_sha:
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                    "--only-binary=:all:", "-r", str(lock_path(flavor)), "-d", str(wheelhouse)], check=True)
    missing = [f for f in locked_files(flavor) if not (wheelhouse / f).exists()]
    if missing:
        raise FileNotFoundError(f"pip download did not produce {missing[0]}")
    stamp.write_text(lock_sha)
    return wheelhouse


def main(argv: list[str]) -> None:
    flavors = argv or list(TARGETS)   # cpu first: the cuda lock is constrained by it
    unknown = [f for f in flavors if f not in TARGETS]
    if unknown:
        raise SystemExit(f"error: unknown flavor {unknown[0]!r}; known: {', '.join(TARGETS)}")
    for flavor in flavors:
        print(f"locked {lock(flavor).relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
