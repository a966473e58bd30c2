"""Verification: re-train baseline and final train.py on held-out seeds and score them with trusted code.

Each (train.py, seed) is trained once, in a fresh sandbox that has no agent in it, by the seed
launcher in trusted mode (bench/launch.py): the harness's own prepare.py and evaluation score the
model's logits on the val split and on the hidden test split. Results are cached by
(profile hash, train.py hash, seed), so the baseline's held-out runs are shared by every session
of a run and an unchanged train.py is never trained twice.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from bench.profile import Profile
from harness.data import DATA_TARGET, TEST_TARGET, DataPaths
from harness.runtime.base import Mount, Runtime, SandboxSpec
from harness.store import SCHEMA_VERSION, read_json, write_json
from harness.workspace import file_at, sha256_bytes

Role = Literal["baseline", "final"]
VerifyStatus = Literal["ok", "crash", "nan", "timeout", "infra_error"]


@dataclass(frozen=True)
class VerificationRun:
    role: Role
    commit: str
    train_py_hash: str
    seed: int
    split: str
    bpb: float | None
    status: VerifyStatus
    message: str


class Verifier:
    """Trains and scores train.py files on held-out seeds, with a cache shared across sessions."""

    def __init__(self, cache_dir: Path, profile: Profile, data: DataPaths, runtime: Runtime,
                 seeds: tuple[int, ...], splits: tuple[str, ...]):
        self.cache_dir, self.profile, self.data, self.runtime = cache_dir, profile, data, runtime
        self.seeds, self.splits = seeds, splits

    def score(self, train_py: bytes, seed: int, gpu: int | None = None) -> dict:
        """The launcher's outcome (bench.launch.RunOutcome as JSON) for train_py under seed; cached."""
        final = self.cache_dir / self.profile.hash / sha256_bytes(train_py)[:16] / f"seed-{seed}"
        cached = read_json(final / "result.json")
        if cached is not None:
            return cached
        work = final.with_name(final.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "train.py").write_bytes(train_py)
        (work / "profile.toml").write_text(self.profile.to_toml())
        outcome = self._launch(work, seed, gpu)
        if outcome["status"] != "infra_error":
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)
        return outcome

    def _launch(self, work: Path, seed: int, gpu: int | None) -> dict:
        spec = SandboxSpec(name=f"arbench-verify-{work.parent.name}-{seed}", workspace=work,
                           mounts=(Mount(self.data.data_dir, DATA_TARGET), Mount(self.data.test_dir, TEST_TARGET)),
                           gpu_ids=() if gpu is None else (gpu,))
        budget = self.profile.time_budget
        with self.runtime.open(spec) as sandbox:
            env = {"ARBENCH_PROFILE": sandbox.path(work / "profile.toml"),
                   "ARBENCH_DATA_DIR": sandbox.path(self.data.data_dir),
                   "ARBENCH_TEST_DIR": sandbox.path(self.data.test_dir)}
            argv = ["python", "-m", "bench.launch", "--seed", str(seed), "--result", "result.json",
                    "--log", "run.log", "--trusted", ",".join(self.splits), "train.py"]
            result = sandbox.exec(argv, work / "launcher.log", timeout_s=3 * budget + 300, env=env)
        outcome = read_json(work / "result.json")
        if outcome is None:
            reason = "timed out" if result.timed_out else f"exit code {result.exit_code}"
            return {"status": "infra_error", "message": f"launcher wrote no result ({reason}); see {work}/launcher.log",
                    "trusted": None}
        return outcome

    def runs(self, role: Role, commit: str, train_py: bytes) -> list[VerificationRun]:
        rows = []
        for seed in self.seeds:
            outcome = self.score(train_py, seed)
            trusted = outcome.get("trusted") or {}
            for split in self.splits:
                bpb = trusted.get(split)
                status = outcome["status"] if outcome["status"] != "ok" or bpb is not None else "crash"
                rows.append(VerificationRun(role=role, commit=commit, train_py_hash=sha256_bytes(train_py)[:16],
                                            seed=seed, split=split, bpb=bpb, status=status,
                                            message=outcome.get("message", "")))
        return rows


def verify_session(folder: Path, verifier: Verifier) -> dict:
    """Verify one finished session (baseline vs final commit); written to verification.json; resumable."""
    existing = read_json(folder / "verification.json")
    if existing is not None:
        return existing
    session = read_json(folder / "session.json")
    workspace = folder / "workspace"
    runs = []
    for role, commit in (("baseline", session["baseline_commit"]), ("final", session["final_commit"])):
        runs += verifier.runs(role, commit, file_at(workspace, commit, "train.py"))
    record = {"schema_version": SCHEMA_VERSION, "seeds": list(verifier.seeds), "splits": list(verifier.splits),
              "runs": [asdict(r) for r in runs]}
    if all(r.status != "infra_error" for r in runs):
        write_json(folder / "verification.json", record)
    return record
