"""The image inputs (locks current and complete, build contexts that hold only what each build needs) and, with an
engine, the built CPU image: node 22 and each agent CLI at its pinned version for the non-root agent user, the labels
that say so, and a rebuild with nothing changed that keeps the image."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.runtime.images import IMAGES, LABEL, PROJECT_ROOT, project_hash
from harness.runtime.process import HOST_CLIS_BIN, scrubbed_env

VERSION_OUTPUT = {"claude-code": ("claude", "{} (Claude Code)"), "codex": ("codex", "codex-cli {}"),
                  "opencode": ("opencode", "{}")}   # the command and what its --version prints


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


def test_cli_locks_pin_one_exact_version_with_hashes_and_no_registry():
    clis = load("clis")
    assert set(VERSION_OUTPUT) == set(clis.KINDS) and list(clis.KINDS)[-1] == "claude-code"
    for kind in clis.KINDS:
        package = json.loads((clis.CLIS_DIR / kind / "package.json").read_text())
        lock = json.loads((clis.CLIS_DIR / kind / "package-lock.json").read_text())
        (name, version), = package["dependencies"].items()
        assert re.fullmatch(r"\d+\.\d+\.\d+", version) and clis.pinned_version(kind) == version
        assert lock["packages"][""]["dependencies"] == package["dependencies"]
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        for entry in list(lock["packages"].values())[1:]:
            assert entry["integrity"].startswith("sha512-") and "resolved" not in entry
    claude = json.loads((clis.CLIS_DIR / "claude-code" / "package-lock.json").read_text())["packages"]
    # without libc, npm 10 installs the musl build beside the glibc one (and the cache doubles)
    assert claude["node_modules/@anthropic-ai/claude-code-linux-x64-musl"]["libc"] == ["musl"]


def test_both_dockerfiles_install_every_cli_in_its_own_stage_in_layer_order():
    clis = load("clis")
    for flavor in IMAGES:
        text = (PROJECT_ROOT / "images" / f"Dockerfile.{flavor}").read_text()
        assert re.findall(r"^FROM node AS cli-(\S+)$", text, flags=re.M) == list(clis.KINDS)
        assert re.findall(r"^COPY --from=cli-(\S+) /opt/clis /opt/clis$", text, flags=re.M) == list(clis.KINDS)
        assert "ENV PATH=/opt/venv/bin:/opt/clis/bin:/opt/node/bin:" in text   # python stays the task's venv


def test_code_context_holds_only_the_dockerfile_and_project():
    names = [name for name, _ in load("build").code_context()]
    assert names[0] == "Dockerfile"
    assert {n.split("/")[1] for n in names[1:]} == {"bench", "agents", "pyproject.toml"}   # never the grader
    assert all(n.startswith("src/") and "__pycache__" not in n and not n.endswith(".pyc") for n in names[1:])


def test_deps_contexts_hold_what_each_dockerfile_copies_and_no_project_file():
    if not HOST_CLIS_BIN.is_dir():
        pytest.skip("the npm caches are not filled (make images, or images/clis.py host)")
    build = load("build")
    for flavor in IMAGES:
        names = [name for name, _ in build.deps_context(flavor, offline=False)]
        copied = re.findall(r"^COPY (?!--from)(\S+) ", (PROJECT_ROOT / "images" / f"Dockerfile.{flavor}").read_text(),
                            flags=re.M)
        assert {n.split("/")[0] for n in names} - {"Dockerfile"} == {c.split("/")[0] for c in copied} - {"wheelhouse",
                                                                                        "wheelhouse-scaffold"}
        assert all(any(n == c or n.startswith(f"{c}/") for n in names) for c in copied if "wheelhouse" not in c)
        assert not any(n.startswith("src/") for n in names)


def test_host_clis_answer_their_pinned_versions_on_the_process_runtimes_path(tmp_path):
    if not HOST_CLIS_BIN.is_dir():
        pytest.skip("the host's agent CLIs are not installed (make images, or images/clis.py host)")
    clis = load("clis")
    env = scrubbed_env(tmp_path, cpus=None)
    for kind, (command, output) in VERSION_OUTPUT.items():
        result = subprocess.run([command, "--version"], env=env, capture_output=True, text=True, timeout=60)
        assert result.stdout.strip().splitlines()[-1] == output.format(clis.pinned_version(kind)), result.stderr
    node = subprocess.run(["node", "--version"], env=env, capture_output=True, text=True).stdout.strip()
    assert node == f"v{clis.NODE.version}"


# ---------------------------------------------------------------------------------------------------
# The built CPU image (Docker)

@pytest.mark.docker
@pytest.mark.slow
def test_image_runs_node_22_and_each_pinned_cli_as_the_agent_user(docker_runtime):
    clis = load("clis")
    script = "id -u; node --version; " + "; ".join(f"{c} --version 2>/dev/null | tail -1" for c, _ in
                                                   VERSION_OUTPUT.values()) + "; bash -lc 'command -v python mini'" \
        + "; /opt/scaffold/bin/python -c 'import minisweagent; print(minisweagent.__version__)' | tail -1"
    output = docker_runtime.client.containers.run(IMAGES["cpu"], ["bash", "-c", script], network_mode="none",
                                                  remove=True).decode().splitlines()
    assert output[:2] == ["1000", f"v{clis.NODE.version}"] and clis.NODE.version.startswith("22.")
    assert output[2:5] == [out.format(clis.pinned_version(kind)) for kind, (_, out) in VERSION_OUTPUT.items()]
    # python stays the task's venv, in a login shell too (codex runs `bash -lc`); the scaffold has a venv of its own
    assert output[5:] == ["/opt/venv/bin/python", "/opt/clis/bin/mini", clis.versions()["mini-swe-agent"]]


@pytest.mark.docker
@pytest.mark.slow
def test_image_label_records_the_pinned_cli_versions(docker_runtime):
    clis = load("clis")
    labels = docker_runtime.client.images.get(IMAGES["cpu"]).labels
    recorded = json.loads(labels[f"{LABEL}.agent-clis"])
    scaffold = (PROJECT_ROOT / "agents" / "scaffold" / "requirements.txt").read_text()
    assert recorded == {kind: clis.pinned_version(kind) for kind in clis.KINDS} | {
        "node": clis.NODE.version, "mini-swe-agent": re.search(r"mini-swe-agent==(\S+)", scaffold)[1]}
    assert docker_runtime.describe()["agent_clis"] == labels[f"{LABEL}.agent-clis"]


@pytest.mark.docker
@pytest.mark.slow
def test_rebuild_with_nothing_changed_keeps_the_image(docker_runtime):
    source, builds = project_hash(), []
    for _ in range(2):   # the first brings the image up to date with this checkout, the second must change nothing
        build = subprocess.run([sys.executable, "images/build.py", "cpu"], cwd=PROJECT_ROOT, capture_output=True,
                               text=True)
        assert build.returncode == 0, build.stderr[-2000:]
        builds.append((docker_runtime.client.images.get(IMAGES["cpu"]).id, build.stdout))
    if project_hash() != source:
        pytest.skip("the checkout changed while the test ran")
    assert builds[1][0] == builds[0][0]
    assert "Step " not in builds[1][1]   # no docker build ran
