"""Build the images this host can build (`make images`): cpu always, cuda where nvidia-smi answers.

    .venv/bin/python images/build.py [cpu] [cuda]

Each step is skipped when its inputs are unchanged, so a rebuild with nothing changed takes well under a second;
the stamps are the images' own labels (the inputs' hash), so a deleted image is rebuilt:
1. base (cpu): debootstrap a Debian bookworm minbase root with python3, python3-venv and git, and
   `docker import` it as arbench-base:bookworm. No registry needed; its package list's hash is a label.
2. wheelhouse (cpu): `pip download` of exactly cpu.lock's files into images/.build/wheelhouse-cpu.
3. node and the agent CLIs (images/clis.py): node and npm tarballs and one npm cache per CLI, filled on the host,
   which also installs the CLIs into images/.build/clis for the process runtime.
4. dependencies: a classic-builder `docker build` (no network for cpu) of Dockerfile.FLAVOR with the lock, the
   wheelhouse, node and the npm caches, tagged arbench-deps:FLAVOR; one stage per CLI, so that a version bump
   re-runs only its stage and re-copies only its layer and those after it.
5. code: Dockerfile.code puts this checkout's bench/ and agents/ (never harness/: the grader stays on the host) on
   top, tagged arbench:FLAVOR; its own small build, so a code change sends and rebuilds only this.
The image's labels record the lock's sha256, the CLIs' versions, the project's source hash and the base, which
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
from images import clis  # noqa: E402
from images.lock import (BUILD_DIR, TARGETS, fill_wheelhouse, inputs_hash, lock_path, locked_files,  # noqa: E402
                         read_header_hash)

CODE_DOCKERFILE = IMAGES_DIR / "Dockerfile.code"
DEPS_REPO = "arbench-deps"       # arbench-deps:FLAVOR, the dependencies the code layer is built on
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
# Image: the dependencies (arbench-deps:FLAVOR), then the code layer on top (arbench:FLAVOR)

Context = list[tuple[str, Path]]   # (name in the build context, file here), in a fixed order


def deps_context(flavor: str, offline: bool) -> Context:
    """What Dockerfile.FLAVOR copies: the image's and the scaffold's locks and, offline, their wheelhouses; node, npm
    and the CLIs' locks and npm caches."""
    files = [("Dockerfile", IMAGES_DIR / f"Dockerfile.{flavor}")]
    for lock, name, folder in ((flavor, f"{flavor}.lock", "wheelhouse"),
                               (f"scaffold-{flavor}", "scaffold.lock", "wheelhouse-scaffold")):
        files.append((name, lock_path(lock)))
        if offline:
            wheelhouse = fill_wheelhouse(lock)
            files += [(f"{folder}/{file}", wheelhouse / file) for file in locked_files(lock)]
    return files + clis.context_files()


def code_context() -> Context:
    """What Dockerfile.code copies: this checkout's bench/ and agents/ (never harness/: the grader stays on the
    host)."""
    return [("Dockerfile", CODE_DOCKERFILE)] + [(f"src/{rel}", PROJECT_ROOT / rel) for rel in project_files()]


def write_context(files: Context, out: Path) -> None:
    """A build context tar with fixed owners and times, so that unchanged files hit the engine's layer cache."""
    with tarfile.open(out, "w") as tar:
        for name, path in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = path.stat().st_size, 0o755 if os.access(path, os.X_OK) else 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)


def check_lock(flavor: str) -> None:
    if read_header_hash(lock_path(flavor)) != inputs_hash(TARGETS[flavor]):
        raise BuildError(f"images/{flavor}.lock is older than {TARGETS[flavor].requirements}; "
                         f"regenerate it: .venv/bin/python images/lock.py {flavor}")


def docker_build(client: docker.DockerClient, context: Path, tag: str, labels: dict[str, str], offline: bool,
                 buildargs: dict[str, str] | None = None) -> str:
    """A classic-builder build of a context tar, which is deleted after; returns the image id."""
    output: list[str] = []   # the current step's, shown when it fails
    try:
        with open(context, "rb") as f:
            stream = client.api.build(fileobj=f, custom_context=True, tag=tag, labels=labels, buildargs=buildargs,
                                      rm=True, forcerm=True, network_mode="none" if offline else None, decode=True)
            for event in stream:
                if "error" in event:
                    raise BuildError("".join(output[-20:]) + f"docker build of {tag} failed: {event['error'].strip()}")
                if event.get("stream", "").startswith("Step "):
                    print(f"  {event['stream'].strip()}", flush=True)
                    output.clear()
                else:
                    output.append(event.get("stream", ""))
    finally:
        context.unlink()
    return client.images.get(tag).id


def dependency_labels(client: docker.DockerClient, flavor: str) -> dict[str, str]:
    labels = {f"{LABEL}.flavor": flavor, f"{LABEL}.lock-sha256": sha256_bytes(lock_path(flavor).read_bytes()),
              f"{LABEL}.agent-clis": json.dumps(clis.versions(), sort_keys=True)}
    if flavor == "cpu":
        labels[f"{LABEL}.base"] = build_base(client)
        labels[f"{LABEL}.base-packages"] = image_label(client, BASE_TAG, "base-packages")
    else:   # the digest-pinned FROM of the Dockerfile
        labels[f"{LABEL}.base"] = next(line.split()[1] for line in (IMAGES_DIR / "Dockerfile.cuda").read_text()
                                       .splitlines() if line.startswith("FROM "))
    return labels


def build_deps(client: docker.DockerClient, flavor: str, labels: dict[str, str]) -> tuple[str, str | None]:
    """arbench-deps:FLAVOR, everything but the project; returns its id and the id of the image it replaced."""
    tag = f"{DEPS_REPO}:{flavor}"
    inputs = sha256_bytes(json.dumps(labels).encode() + (IMAGES_DIR / f"Dockerfile.{flavor}").read_bytes()
                          + lock_path(f"scaffold-{flavor}").read_bytes()
                          + Path(__file__).read_bytes() + Path(clis.__file__).read_bytes()
                          + json.dumps([clis.inputs_hash(kind) for kind in clis.KINDS]).encode())[:16]
    if image_label(client, tag, "deps-inputs") == inputs:
        return client.images.get(tag).id, None
    replaced = client.images.get(tag).id if image_label(client, tag, "deps-inputs") else None
    context = BUILD_DIR / f"context-deps-{flavor}.tar"
    write_context(deps_context(flavor, offline=flavor == "cpu"), context)
    image_id = docker_build(client, context, tag, labels | {f"{LABEL}.deps-inputs": inputs}, offline=flavor == "cpu")
    return image_id, replaced


def build_image(client: docker.DockerClient, flavor: str) -> str:
    check_lock(flavor)
    check_lock(f"scaffold-{flavor}")
    labels = dependency_labels(client, flavor)
    deps_id, replaced_deps = build_deps(client, flavor, labels)
    labels[f"{LABEL}.source"] = project_hash()
    labels[f"{LABEL}.inputs"] = sha256_bytes(json.dumps([labels, deps_id]).encode() + CODE_DOCKERFILE.read_bytes()
                                             + Path(__file__).read_bytes())[:16]
    tag = IMAGES[flavor]
    if image_label(client, tag, "inputs") == labels[f"{LABEL}.inputs"]:
        return client.images.get(tag).id
    replaced = client.images.get(tag).id if image_label(client, tag, "inputs") else None
    context = BUILD_DIR / f"context-{flavor}.tar"
    write_context(code_context(), context)
    image_id = docker_build(client, context, tag, labels, offline=True, buildargs={"DEPS": f"{DEPS_REPO}:{flavor}"})
    for old in (replaced, replaced_deps):   # the code image first: it is the child
        remove_replaced(client, old)
    return image_id


def remove_replaced(client: docker.DockerClient, image_id: str | None) -> None:
    """A previous build of a tag: only the layers it does not share are removed; kept while a container uses it."""
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
            clis.install_all()   # the host's CLIs (process runtime), and the npm caches the images install from
            client = connect()
            image_id = build_image(client, flavor)
        except (BuildError, clis.CliError, RuntimeError_, subprocess.CalledProcessError, docker.errors.APIError,
                OSError) as e:
            raise SystemExit(f"error: {e}") from None
        size_gb = client.images.get(image_id).attrs["Size"] / 1e9
        print(f"{IMAGES[flavor]}: {image_id[:19]} ({size_gb:.2f} GB) in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
