"""Build the images this host can build (`make images`): cpu always, cuda where nvidia-smi answers.

    .venv/bin/python images/build.py [cpu] [cuda]

Each step is skipped when its inputs are unchanged, so a rebuild with nothing changed takes seconds;
the stamps are the images' own labels (the inputs' hash), so a deleted image is rebuilt:
1. base (cpu): debootstrap a Debian bookworm minbase root with python3, python3-venv and git, and
   `docker import` it as arbench-base:bookworm. No registry needed; its package list's hash is a label.
2. wheelhouse (cpu): `pip download` of exactly cpu.lock's files into images/.build/wheelhouse-cpu.
3. image: a classic-builder `docker build` (no network for cpu) of a context holding the Dockerfile,
   the lock, the wheelhouse and this checkout's bench/ and agents/ (never harness/: the grader stays on
   the host); the dependency layers come before the code layer, so a code change rebuilds only the last layers.
The image's labels record the lock's sha256, the project's source hash and the base, which
harness.runtime.docker.DockerRuntime.describe() puts in every session manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(IMAGES_DIR.parent))

import docker  # noqa: E402

from harness.runtime.base import RuntimeError_  # noqa: E402
from harness.runtime.docker import connect  # noqa: E402
from harness.runtime.images import (IMAGES, LABEL, PROJECT_ROOT, host_flavors, project_files,  # noqa: E402
                                    project_hash)
from harness.workspace import sha256_bytes  # noqa: E402
from images.lock import TARGETS, inputs_hash, lock_path, read_header_hash  # noqa: E402

BUILD_DIR = IMAGES_DIR / ".build"
BASE_TAG = "arbench-base:bookworm"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "git", "ca-certificates")
DEBIAN_MIRROR = os.environ.get("ARBENCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class BuildError(Exception):
    """A step that cannot run here (not root, no debootstrap, stale lock, failed build)."""


def image_label(client: docker.DockerClient, tag: str, key: str) -> str | None:
    try:
        return client.images.get(tag).labels.get(f"{LABEL}.{key}")
    except docker.errors.ImageNotFound:
        return None


# ---------------------------------------------------------------------------------------------------
# Base (cpu)

def build_base(client: docker.DockerClient) -> str:
    """arbench-base:bookworm, made with debootstrap; returns its image id."""
    inputs = sha256_bytes(json.dumps([BASE_SUITE, BASE_PACKAGES]).encode())[:16]
    if image_label(client, BASE_TAG, "base-inputs") == inputs:
        return client.images.get(BASE_TAG).id
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise BuildError("building the base image needs root and debootstrap (apt-get install debootstrap)")
    BUILD_DIR.mkdir(exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        root = Path(tmp) / "root"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                        BASE_SUITE, str(root), DEBIAN_MIRROR], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)
        for junk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
            shutil.rmtree(root / junk, ignore_errors=True)
        packages = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
                                  check=True, capture_output=True).stdout
        changes = [f"LABEL {LABEL}.base-inputs={inputs} {LABEL}.base-packages={sha256_bytes(packages)[:16]}",
                   "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["/bin/bash"]']
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        repo, tag = BASE_TAG.split(":")
        client.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag, changes=changes)
        if tar.wait() != 0:
            raise BuildError("tar of the debootstrapped root failed")
    print(f"{BASE_TAG}: debootstrapped and imported in {time.monotonic() - start:.1f} s", flush=True)
    return client.images.get(BASE_TAG).id


# ---------------------------------------------------------------------------------------------------
# Wheelhouse (cpu)

def locked_files(flavor: str) -> list[str]:
    """The wheel file names the lock pins (its `# <file>` lines)."""
    return [line[2:] for line in lock_path(flavor).read_text().splitlines() if line.startswith("# ")
            and line.endswith(".whl")]


def fill_wheelhouse(flavor: str) -> Path:
    """Exactly the lock's files, downloaded with the host's pip configuration, hashes checked."""
    wheelhouse = BUILD_DIR / f"wheelhouse-{flavor}"
    stamp = wheelhouse / ".lock-sha256"
    lock_sha = sha256_bytes(lock_path(flavor).read_bytes())
    if stamp.exists() and stamp.read_text() == lock_sha:
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                    "--only-binary=:all:", "-r", str(lock_path(flavor)), "-d", str(wheelhouse)], check=True)
    missing = [f for f in locked_files(flavor) if not (wheelhouse / f).exists()]
    if missing:
        raise BuildError(f"pip download did not produce {missing[0]}")
    stamp.write_text(lock_sha)
    return wheelhouse


# ---------------------------------------------------------------------------------------------------
# Image

def add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = path.stat().st_size, 0o755 if os.access(path, os.X_OK) else 0o644
    with open(path, "rb") as f:
        tar.addfile(info, f)


def write_context(flavor: str, out: Path, wheelhouse: Path | None) -> None:
    """The build context: only what the Dockerfile copies, with fixed owners and times."""
    with tarfile.open(out, "w") as tar:
        add_file(tar, "Dockerfile", IMAGES_DIR / f"Dockerfile.{flavor}")
        add_file(tar, f"{flavor}.lock", lock_path(flavor))
        for name in locked_files(flavor) if wheelhouse else []:
            add_file(tar, f"wheelhouse/{name}", wheelhouse / name)
        for rel in project_files():
            add_file(tar, f"src/{rel}", PROJECT_ROOT / rel)


def check_lock(flavor: str) -> None:
    if read_header_hash(lock_path(flavor)) != inputs_hash(TARGETS[flavor]):
        raise BuildError(f"images/{flavor}.lock is older than pyproject.toml's dependencies; "
                         f"regenerate it: .venv/bin/python images/lock.py {flavor}")


def build_image(client: docker.DockerClient, flavor: str) -> str:
    check_lock(flavor)
    dockerfile = (IMAGES_DIR / f"Dockerfile.{flavor}").read_bytes()
    labels = {f"{LABEL}.flavor": flavor, f"{LABEL}.source": project_hash(),
              f"{LABEL}.lock-sha256": sha256_bytes(lock_path(flavor).read_bytes())}
    if flavor == "cpu":
        labels[f"{LABEL}.base"] = build_base(client)
        labels[f"{LABEL}.base-packages"] = image_label(client, BASE_TAG, "base-packages")
    else:   # the digest-pinned FROM of the Dockerfile
        labels[f"{LABEL}.base"] = next(line.split()[1] for line in dockerfile.decode().splitlines()
                                       if line.startswith("FROM "))
    labels[f"{LABEL}.inputs"] = sha256_bytes(json.dumps(labels).encode() + dockerfile
                                             + Path(__file__).read_bytes())[:16]
    tag = IMAGES[flavor]
    if image_label(client, tag, "inputs") == labels[f"{LABEL}.inputs"]:
        return client.images.get(tag).id
    replaced = client.images.get(tag).id if image_label(client, tag, "inputs") else None
    wheelhouse = fill_wheelhouse(flavor) if flavor == "cpu" else None
    context = BUILD_DIR / f"context-{flavor}.tar"
    write_context(flavor, context, wheelhouse)
    try:
        with open(context, "rb") as f:
            stream = client.api.build(fileobj=f, custom_context=True, tag=tag, labels=labels, rm=True, forcerm=True,
                                      network_mode="none" if flavor == "cpu" else None, decode=True)
            for event in stream:
                if "error" in event:
                    raise BuildError(f"docker build of {tag} failed: {event['error'].strip()}")
                if event.get("stream", "").startswith("Step "):
                    print(f"  {event['stream'].strip()}", flush=True)
    finally:
        context.unlink()
    remove_replaced(client, replaced)
    return client.images.get(tag).id


def remove_replaced(client: docker.DockerClient, image_id: str | None) -> None:
    """The previous build of a tag: only its code layer is its own; kept while a container uses it."""
    if image_id is None:
        return
    try:
        client.images.remove(image_id)
    except docker.errors.APIError:
        pass


def main(argv: list[str]) -> None:
    flavors = argv or host_flavors()
    unknown = [f for f in flavors if f not in IMAGES]
    if unknown:
        raise SystemExit(f"error: unknown image {unknown[0]!r}; known: {', '.join(IMAGES)}")
    for flavor in flavors:
        start = time.monotonic()
        try:
            client = connect()
            image_id = build_image(client, flavor)
        except (BuildError, RuntimeError_, subprocess.CalledProcessError, docker.errors.APIError) as e:
            raise SystemExit(f"error: {e}") from None
        size_gb = client.images.get(image_id).attrs["Size"] / 1e9
        print(f"{IMAGES[flavor]}: {image_id[:19]} ({size_gb:.2f} GB) in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
