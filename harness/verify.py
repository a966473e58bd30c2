"""Verification: re-train baseline and final train.py on held-out seeds and score them with trusted code.

The unit is a PAIR: for each held-out seed the baseline and the final train.py are trained back to
back on the same slot, in an order that alternates with the seed's index (the first run of a node
is always a baseline, so that the limits below are measured before any agent code runs). Each run
is made in a fresh sandbox with no agent in it by the launcher in trusted mode (bench/launch.py):
the harness's own prepare.py and evaluation score the model's logits on the val and hidden test
splits. A final identical to the baseline needs no pair: one baseline run per seed serves both
roles (its gain is exactly 0). Pairs are cached by (profile hash, baseline hash, final hash, seed):
a baseline run belongs to the pair it was made for and is never reused away from it, and an
unchanged pair is never trained twice.

Training stops on a time budget, so outside load changes how far a run gets. A pair is re-run (up
to MAX_ATTEMPTS, every attempt recorded) when its BASELINE run drifted: its tokens/s is a robust
outlier (log scale, MAD-based, with a floor) among the baseline's accepted runs on this node, it
ran under more outside load (neighbour_load) than the final, or it missed a limit (which also loosens
the limit of the re-run; a baseline that crashed is not re-run: its code failed). Only baseline-side conditions trigger a re-run: the final's measurements come
from agent code (or can be inflated by it), so re-running on them would let an agent re-draw the
pairs it is losing. (A final that inflates its own neighbour_load can at most silence the load
rule; the tokens/s rule reads the baseline alone.) A pair still drifting after its attempts is
excluded from the verified gain and reported (pair status "drift"), never counted as a gain.

Limits: from the latest baseline runs measured on this node, train limit = budget + STARTUP_FACTOR
x startup + margin, eval limit = EVAL_FACTOR x eval time + margin; before the first measurement the
launcher's defaults. Every check acts: a final that is noncausal, over budget or killed at a limit
is a failed run scored as the untrained model and an error finding; crash/nan finals are scored
the same way. A pair whose baseline failed is excluded, never scored.

Failures of the run's own code (a crash, NaN, a limit) are results: recorded and cached with their reason.
A failure of the infrastructure (the sandbox did not start, the launcher wrote no result without being
timed out) is retried INFRA_ATTEMPTS times and then raised as InfraError; nothing of it is cached, so the
next verification tries again.
"""

from __future__ import annotations

import math
import shutil
import socket
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from bench.contracts import RunOutcome, RunStatus
from bench.launch import EVAL_ALLOWANCE_S, STARTUP_ALLOWANCE_S
from bench.profile import Profile
from harness.data import DATA_TARGET, TEST_TARGET, DataPaths
from harness.integrity import Finding, FindingKind
from harness.lease import LEASE_FILE
from harness.runtime.base import Mount, Runtime, RuntimeError_, SandboxSpec
from harness.stats import paired_t
from harness.store import read_json, write_json
from harness.workspace import file_at, sha256_bytes, task_files

Role = Literal["baseline", "final"]
PairStatus = Literal["ok", "drift", "baseline_failed"]

MAX_ATTEMPTS = 3            # tries of one pair before it is excluded
INFRA_ATTEMPTS = 3          # tries of one run whose sandbox or launcher failed before InfraError
INFRA_BACKOFF_S = 2.0       # wait before retrying such a run (doubles each time)
RETRIED_BASELINE = ("timeout", "over_budget")   # baseline failures load can cause; a crash or NaN is its code
DRIFT_MIN_RUNS = 3          # accepted baseline runs on the node before their median tokens/s is a reference
DRIFT_MAD_Z = 3.5           # robust z of log tokens/s (|x - median| / (1.4826 MAD)) of an outlier (Iglewicz & Hoaglin)
DRIFT_FLOOR = 0.25          # ... and never a deviation under 25% of the median (jitter of a shared node)
NEIGHBOUR_TOLERANCE = 0.25  # CPU cores of outside load the baseline may have had beyond the final's
STARTUP_FACTOR = 2.0        # train limit = budget + 2 x measured startup + max(2 s, 5% of budget): a startup
STARTUP_MARGIN_S, STARTUP_MARGIN_SHARE = 2.0, 0.05   # (imports, warm-up steps) that load slows 2x still fits
EVAL_FACTOR, EVAL_MARGIN_S = 3.0, 5.0   # eval limit = 3 x measured eval seconds + 5 s
LIMIT_WINDOW = 5            # limits come from the node's latest baseline runs: a busy episode loosens them a while
EXEC_MARGIN_S = 60.0        # the sandbox's own timeout beyond the run's limits: launcher start, kill grace
FAILED_CHECKS: dict[str, FindingKind] = {"noncausal": "noncausal", "over_budget": "over_budget",
                                         "timeout": "killed_at_limit"}
OVERFIT_ALPHA = 0.01        # one-sided paired t on per-seed (val gain - test gain)
OVERFIT_GAIN_ALPHA = 0.05   # one-sided paired t: the val gain itself is significant
OVERFIT_SHARE = 0.5         # and val gain - test gain exceeds half the val gain
SCHEMA_VERSION = 2          # of verification.json: 2 = pairs, attempts, findings


class InfraError(RuntimeError):
    """The sandbox or the launcher failed, not the code under test; retried, never cached."""


@dataclass(frozen=True)
class RunRecord:
    """One training run of a pair attempt: the launcher's outcome and what the verifier asked of it."""
    role: Role
    train_py_hash: str
    seed: int
    status: RunStatus
    message: str
    trusted: dict[str, float] | None      # split -> bpb from the trusted evaluator (also when noncausal)
    untrained: dict[str, float] | None    # split -> bpb of the uniform distribution: a failed run's score
    steps: float | None                   # as train.py printed it (informative only)
    train_tokens: int | None
    tokens_per_second: float | None
    pre_eval_seconds: float | None
    eval_seconds: float | None
    neighbour_load: float | None
    init_fingerprint: str | None
    train_limit: float | None             # None: the launcher's default
    eval_limit: float | None
    node: str
    slot: int | None
    started_at: float
    training_seconds: float | None = None  # first train batch to evaluate_bpb (launcher's clock)
    substitutions: list[str] = field(default_factory=list)   # stand-ins the run used (e.g. the kernels module)


@dataclass(frozen=True)
class Attempt:
    order: list[Role]
    runs: dict[str, RunRecord]    # role -> run; a solo (identical final) attempt has the baseline only
    drift: list[str]              # why this attempt was not accepted as drift-free ([] when it was)


@dataclass(frozen=True)
class PairResult:
    baseline_hash: str
    final_hash: str
    seed: int
    status: PairStatus
    attempts: list[Attempt]

    @property
    def solo(self) -> bool:
        return self.baseline_hash == self.final_hash

    def run(self, role: Role) -> RunRecord:
        """The run of the last attempt (the one that counts); a solo pair's baseline serves both roles."""
        return self.attempts[-1].runs["baseline" if self.solo else role]

    @classmethod
    def from_dict(cls, d: dict) -> PairResult:
        attempts = [Attempt(a["order"], {r: RunRecord(**run) for r, run in a["runs"].items()}, a["drift"])
                    for a in d["attempts"]]
        return cls(d["baseline_hash"], d["final_hash"], d["seed"], d["status"], attempts)


@dataclass(frozen=True)
class VerificationRun:
    """A row of the verifications table: one role × seed × split of one session."""
    role: Role
    commit: str
    train_py_hash: str
    seed: int
    split: str
    bpb: float | None          # the score: trusted bpb, or the untrained model's for a failed final
    status: RunStatus
    message: str
    scored_as: Literal["trusted", "untrained"] | None
    pair_status: PairStatus    # rows of a pair that is not "ok" are excluded from every gain
    attempts: int
    steps: float | None
    tokens_per_second: float | None
    pre_eval_seconds: float | None
    eval_seconds: float | None
    neighbour_load: float | None
    train_limit: float | None
    eval_limit: float | None
    untrained_bpb: float | None = None   # the untrained model's bpb on the split: what a failed final scores
    node: str = ""                       # host the pair ran on (both roles: one slot); "" in rows made before it


@dataclass(frozen=True)
class Verification:
    runs: list[VerificationRun]
    pairs: list[PairResult]
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Not every counted run produced a score, no pair was verified, or an error finding was raised."""
        return bool(self.failures) or not any(p.status == "ok" for p in self.pairs) or \
            any(f.severity == "error" for f in self.findings)

    @property
    def failures(self) -> list[str]:
        """One line per counted run (the last attempt of each pair) that did not end ok, with its reason."""
        return [f"seed {p.seed} {role}: {run.status} ({run.message or 'no message'})"
                for p in self.pairs for role in (("baseline",) if p.solo else ("baseline", "final"))
                if (run := p.run(role)).status != "ok"]

    @property
    def substitutions(self) -> list[str]:
        return sorted({s for p in self.pairs for a in p.attempts for run in a.runs.values() for s in run.substitutions})


# ---------------------------------------------------------------------------
# Rules: drift, limits, scores, findings (pure functions on records)
# ---------------------------------------------------------------------------

def drift_reasons(baseline: RunRecord, final: RunRecord | None, reference: list[float]) -> list[str]:
    """Why a pair must be re-run, from its baseline run only (the module docstring says why).

    reference: tokens/s of the baseline train.py's earlier accepted runs on this node. Throughput is
    compared on a log scale (load slows a run by a factor), so the allowed band is a ratio."""
    reasons = []
    rate = baseline.tokens_per_second
    logs = [math.log(x) for x in reference if x > 0]
    if rate and len(logs) >= DRIFT_MIN_RUNS:
        median = statistics.median(logs)
        mad = statistics.median(abs(x - median) for x in logs)
        allowed = max(DRIFT_MAD_Z * 1.4826 * mad, -math.log(1 - DRIFT_FLOOR))
        if abs(math.log(rate) - median) > allowed:
            reasons.append(f"baseline tokens/s {rate:.0f} vs node median {math.exp(median):.0f} "
                           f"(allowed x{math.exp(allowed):.2f} either way)")
    if final is not None and baseline.neighbour_load is not None and final.neighbour_load is not None \
            and baseline.neighbour_load - final.neighbour_load > NEIGHBOUR_TOLERANCE:
        reasons.append(f"baseline ran under {baseline.neighbour_load:.2f} cores of outside load, "
                       f"the final under {final.neighbour_load:.2f}")
    return reasons


def measured_limits(baselines: list[RunRecord], budget: float) -> tuple[float | None, float | None]:
    """(train limit, eval limit) from the baseline runs on the node; None each until one was measured (the
    launcher's default). The largest startup and eval time among the latest LIMIT_WINDOW runs are used, so a
    busy moment loosens a limit for a while and the limit comes back once the node is quiet; a baseline killed
    at the train limit had a startup of at least that limit minus the budget, so its re-run gets a limit
    STARTUP_FACTOR times looser."""
    recent = sorted(baselines, key=lambda r: r.started_at)[-LIMIT_WINDOW:]
    startups = [r.pre_eval_seconds - budget for r in recent if r.status == "ok" and r.pre_eval_seconds is not None]
    startups += [r.train_limit - budget for r in recent if r.status == "over_budget" and r.train_limit is not None]
    evals = [r.eval_seconds for r in recent if r.status == "ok" and r.eval_seconds is not None]
    train = (budget + STARTUP_FACTOR * max(0.0, max(startups)) + max(STARTUP_MARGIN_S, STARTUP_MARGIN_SHARE * budget)
             if startups else None)
    evaluation = EVAL_FACTOR * max(evals) + EVAL_MARGIN_S if evals else None
    return (None if train is None else round(train, 2)), (None if evaluation is None else round(evaluation, 2))


def over_training(final: RunRecord, baselines: list[RunRecord], budget: float) -> RunRecord:
    """A final that trained (first train batch to evaluate_bpb) longer than the budget plus the warm-up the
    baseline needs on this node (STARTUP_FACTOR x, plus the margin) is over budget, however early it reached
    evaluation: a patched clock inside train.py shows here even when start-up was quick."""
    warmups = [r.training_seconds - budget for r in sorted(baselines, key=lambda r: r.started_at)[-LIMIT_WINDOW:]
               if r.status == "ok" and r.training_seconds is not None]
    if final.status != "ok" or final.training_seconds is None or not warmups:
        return final
    limit = budget + STARTUP_FACTOR * max(0.0, max(warmups)) + max(STARTUP_MARGIN_S, STARTUP_MARGIN_SHARE * budget)
    if final.training_seconds <= limit:
        return final
    return replace(final, status="over_budget", message=f"trained {final.training_seconds:.1f}s from its first batch "
                   f"to evaluation, over the limit of {limit:.1f}s (budget {budget:g}s + the baseline's warm-up)")


def score(run: RunRecord, split: str, fallback_untrained: dict[str, float] | None
          ) -> tuple[float | None, Literal["trusted", "untrained"] | None]:
    """A run's bpb on split: the trusted score when ok, else the untrained model's (never a gain)."""
    if run.status == "ok" and run.trusted and run.trusted.get(split) is not None:
        return run.trusted[split], "trusted"
    untrained = run.untrained or fallback_untrained or {}
    return (untrained[split], "untrained") if untrained.get(split) is not None else (None, None)


def run_findings(pairs: list[PairResult], commit: str | None) -> list[Finding]:
    """One error finding per failed check of the final, and seed_ignored. Every attempt whose baseline ran ok
    counts (also one re-run for drift: the final's failure stands); an attempt whose baseline failed too
    ran on a node that could not hold the limits, so its final's failure says nothing about the final."""
    failed: dict[FindingKind, list[int]] = {}
    for pair in pairs:
        for attempt in pair.attempts:
            final = attempt.runs.get("final")
            if final is not None and final.status in FAILED_CHECKS and attempt.runs["baseline"].status == "ok":
                failed.setdefault(FAILED_CHECKS[final.status], []).append(pair.seed)
    findings = [Finding(kind, "error", f"final train.py: {kind.replace('_', ' ')} on held-out seeds "
                        f"{sorted(set(seeds))}", commit) for kind, seeds in failed.items()]
    prints = [p.run("final").init_fingerprint for p in pairs if not p.solo]
    prints = [f for f in prints if f]
    if len(prints) >= 2 and len(set(prints)) == 1:
        findings.append(Finding("seed_ignored", "error", f"final train.py starts from the same weights on "
                                f"all {len(prints)} held-out seeds (init fingerprint {prints[0][:12]})", commit))
    return findings


def val_overfit(val_gains: np.ndarray, test_gains: np.ndarray) -> str | None:
    """Why the session overfits the val split, or None. Per-seed paired gains (baseline - final).

    All three must hold, so that an honest edit (whose val and test gains differ only by noise)
    essentially never triggers it: the val gain is significant (one-sided paired t, p < 0.05), val
    gain - test gain is significantly positive (one-sided paired t, p < 0.01), and it exceeds half
    the val gain (most of the val gain does not carry over to unseen text)."""
    if len(val_gains) < 2:
        return None
    excess = val_gains - test_gains
    p_excess, p_val = _one_sided_p(excess), _one_sided_p(val_gains)
    if p_val < OVERFIT_GAIN_ALPHA and p_excess < OVERFIT_ALPHA and excess.mean() > OVERFIT_SHARE * val_gains.mean():
        return (f"verified val gain {val_gains.mean():+.4f} bpb but test gain {test_gains.mean():+.4f} "
                f"(difference p = {p_excess:.2g}, val gain p = {p_val:.2g}, {len(excess)} seeds)")
    return None


def _one_sided_p(diffs: np.ndarray) -> float:
    """p of H0 mean <= 0 against mean > 0, from the two-sided paired t."""
    t = paired_t(diffs)
    return float(t.p_value / 2 if t.mean > 0 else 1 - t.p_value / 2)


# ---------------------------------------------------------------------------
# The verifier: pairs on a node, cached
# ---------------------------------------------------------------------------

class Verifier:
    """Trains and scores pairs on held-out seeds; one per node, shared by the threads of its slots."""

    def __init__(self, cache_dir: Path, profile: Profile, data: DataPaths, runtime: Runtime,
                 seeds: tuple[int, ...], splits: tuple[str, ...]):
        self.cache_dir, self.profile, self.data, self.runtime = cache_dir, profile, data, runtime
        self.seeds, self.splits = seeds, splits
        self.node = socket.gethostname()
        self.root = cache_dir / profile.hash / "pairs"
        self._lock = threading.Lock()
        pairs = [PairResult.from_dict(read_json(path)) for path in sorted(self.root.glob("*/seed-*/pair.json"))]
        # limits: every baseline run that measured the node; drift reference: those of accepted attempts only
        # (a drifted run in the reference would widen the band that is meant to catch the next one)
        self._baselines = [run for p in pairs for run in (a.runs["baseline"] for a in p.attempts)
                           if run.node == self.node and run.status in ("ok", "over_budget")]
        self._accepted = [p.attempts[-1].runs["baseline"] for p in pairs
                          if p.status == "ok" and p.attempts[-1].runs["baseline"].node == self.node]

    def pair(self, baseline_py: bytes, final_py: bytes, seed: int, gpu: int | None = None) -> PairResult:
        """The pair of (baseline, final) on seed, trained back to back on one slot unless cached."""
        key = (sha256_bytes(baseline_py)[:16], sha256_bytes(final_py)[:16])
        folder = pair_folder(self.cache_dir, self.profile, baseline_py, final_py, seed)
        cached = read_json(folder / "pair.json")
        if cached is not None:
            return PairResult.from_dict(cached)
        _clear(folder)   # an interrupted pair starts over
        sources = {"baseline": baseline_py, "final": final_py}
        attempts: list[Attempt] = []
        status: PairStatus = "drift"
        for n in range(1, MAX_ATTEMPTS + 1):
            order = self._order(seed, solo=key[0] == key[1])
            runs = {role: self._train(folder / f"attempt-{n}" / role, role, sources[role], seed, gpu)
                    for role in order}
            baseline = runs["baseline"]
            if baseline.status != "ok":
                attempts.append(Attempt(order, runs, [f"baseline {baseline.status}: {baseline.message}"]))
                status = "baseline_failed"
                if baseline.status in RETRIED_BASELINE:
                    continue
                break
            reasons = [] if key[0] == key[1] else drift_reasons(baseline, runs["final"], self._reference(baseline))
            attempts.append(Attempt(order, runs, reasons))
            if not reasons:
                status = "ok"
                with self._lock:
                    self._accepted.append(baseline)
                break
            status = "drift"
        result = PairResult(key[0], key[1], seed, status, attempts)
        write_json(folder / "pair.json", result)
        return result

    def _order(self, seed: int, solo: bool) -> list[Role]:
        if solo:
            return ["baseline"]
        with self._lock:
            measured = bool(self._baselines)
        return ["baseline", "final"] if self.seeds.index(seed) % 2 == 0 or not measured else ["final", "baseline"]

    def _reference(self, baseline: RunRecord) -> list[float]:
        """tokens/s of this baseline train.py's accepted runs on the node (the run being judged is not one)."""
        with self._lock:
            return [r.tokens_per_second for r in self._accepted
                    if r.train_py_hash == baseline.train_py_hash and r.tokens_per_second is not None]

    def baseline_run(self, work: Path, seed: int, gpu: int | None = None) -> RunRecord:
        """One run of the profile's baseline train.py on seed into folder `work`, in a sandbox like every verification
        run's (per-node calibration, harness/calibration.py); InfraError as in pair()."""
        return self._train(work, "baseline", task_files(self.profile)["train.py"].encode(), seed, gpu)

    def _train(self, work: Path, role: Role, train_py: bytes, seed: int, gpu: int | None) -> RunRecord:
        """One launcher run in a fresh sandbox under the limits measured so far; recorded, never raised."""
        partial = work.with_name(work.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "train.py").write_bytes(train_py)
        (partial / "profile.toml").write_text(self.profile.to_toml())
        with self._lock:
            train_limit, eval_limit = measured_limits(self._baselines, self.profile.time_budget)
        started = time.time()
        outcome = self._launch_retrying_infra(partial, seed, gpu, train_limit, eval_limit)
        record = _record(role, train_py, seed, outcome, train_limit, eval_limit, self.node, gpu, started)
        if role == "final":
            with self._lock:
                record = over_training(record, self._baselines, self.profile.time_budget)
        partial.rename(work)
        if role == "baseline" and record.status in ("ok", "over_budget"):
            with self._lock:
                self._baselines.append(record)
        return record

    def _launch_retrying_infra(self, work: Path, seed: int, gpu: int | None, train_limit: float | None,
                               eval_limit: float | None) -> RunOutcome:
        """The launcher's RunOutcome, retrying a run the infrastructure failed; InfraError after that."""
        reason = ""
        for n in range(INFRA_ATTEMPTS):
            if n:
                time.sleep(INFRA_BACKOFF_S * 2 ** (n - 1))
                (work / "result.json").unlink(missing_ok=True)
            try:
                return self._launch(work, seed, gpu, train_limit, eval_limit)
            except Exception as e:   # whatever the runtime raised: the sandbox, not the code under test, failed
                reason = f"{type(e).__name__}: {e}"
        raise InfraError(f"verification run in {work} failed {INFRA_ATTEMPTS} times for reasons outside train.py: "
                         f"{reason}")

    def _launch(self, work: Path, seed: int, gpu: int | None, train_limit: float | None,
                eval_limit: float | None) -> RunOutcome:
        """The launcher's RunOutcome (result.json). A launcher timed out without one failed the run; one that exited
        without one is the infrastructure's failure (raised): it never runs agent code in its own process."""
        pair_key, attempt = work.parent.parent.parent.name, work.parent.name
        spec = SandboxSpec(name=f"arbench-verify-{pair_key}-{seed}-{attempt}-{work.name}", workspace=work,
                           mounts=(Mount(self.data.data_dir, DATA_TARGET), Mount(self.data.test_dir, TEST_TARGET)),
                           gpu_ids=() if gpu is None else (gpu,), start_as_root=True)   # train.py runs as agent
        limits = []
        if train_limit is not None:
            limits += ["--train-limit", str(train_limit)]
        if eval_limit is not None:
            limits += ["--eval-limit", str(eval_limit)]
        timeout = ((train_limit or self.profile.time_budget + STARTUP_ALLOWANCE_S) + (eval_limit or EVAL_ALLOWANCE_S)
                   + EXEC_MARGIN_S)
        with self.runtime.open(spec) as sandbox:
            env = {"ARBENCH_PROFILE": sandbox.path(work / "profile.toml"),
                   "ARBENCH_DATA_DIR": sandbox.path(self.data.data_dir),
                   "ARBENCH_TEST_DIR": sandbox.path(self.data.test_dir)}
            argv = ["python", "-m", "bench.launch", "--seed", str(seed), "--result", "result.json",
                    "--log", "run.log", "--trusted", ",".join(self.splits), *limits, "train.py"]
            result = sandbox.exec(argv, work / "launcher.log", timeout_s=timeout, env=env)
        if (work / "result.json").exists():
            return RunOutcome.from_json((work / "result.json").read_text())
        if not result.timed_out:
            raise RuntimeError_(f"the launcher exited with code {result.exit_code} and wrote no result; "
                                f"see {work / 'launcher.log'}")
        return RunOutcome(status="timeout", message=f"killed at the sandbox timeout ({timeout:.0f}s) before the "
                          f"launcher wrote a result; see {work.name}/launcher.log", seed=seed,
                          wall_seconds=round(result.seconds, 3), summary={})

    def verify(self, baseline: tuple[str, bytes], final: tuple[str, bytes], gpu: int | None = None) -> Verification:
        """Every pair of (baseline commit, train.py) and (final commit, train.py), as rows and findings; each run
        on `gpu` (None: CPU)."""
        pairs = [self.pair(baseline[1], final[1], seed, gpu) for seed in self.seeds]
        return verification(pairs, baseline[0], final[0], self.splits)


def _record(role: Role, train_py: bytes, seed: int, outcome: RunOutcome, train_limit: float | None,
            eval_limit: float | None, node: str, slot: int | None, started: float) -> RunRecord:
    checks = outcome.checks or {}
    return RunRecord(
        role=role, train_py_hash=sha256_bytes(train_py)[:16], seed=seed, status=outcome.status,
        message=outcome.message, trusted=outcome.trusted, untrained=outcome.untrained,
        steps=checks.get("train_steps"), train_tokens=checks.get("train_tokens"),
        tokens_per_second=checks.get("tokens_per_second"), pre_eval_seconds=checks.get("pre_eval_seconds"),
        eval_seconds=checks.get("eval_seconds"), neighbour_load=checks.get("neighbour_load"),
        init_fingerprint=checks.get("init_fingerprint"), train_limit=train_limit, eval_limit=eval_limit,
        node=node, slot=slot, started_at=round(started, 3), training_seconds=checks.get("training_seconds"),
        substitutions=list(outcome.substitutions))


def verification(pairs: list[PairResult], baseline_commit: str, final_commit: str,
                 splits: tuple[str, ...]) -> Verification:
    """Rows, pairs and findings of one baseline/final comparison."""
    rows = []
    for pair in pairs:
        untrained = pair.run("baseline").untrained
        for role, commit in (("baseline", baseline_commit), ("final", final_commit)):
            run = pair.run(role)
            for split in splits:
                bpb, scored_as = score(run, split, untrained)
                if role == "baseline" and scored_as != "trusted":
                    bpb, scored_as = None, None   # the harness's failure: the pair is excluded, not scored
                rows.append(VerificationRun(
                    role=role, commit=commit, train_py_hash=run.train_py_hash, seed=pair.seed, split=split,
                    bpb=bpb, status=run.status, message=run.message, scored_as=scored_as,
                    pair_status=pair.status, attempts=len(pair.attempts), steps=run.steps,
                    tokens_per_second=run.tokens_per_second, pre_eval_seconds=run.pre_eval_seconds,
                    eval_seconds=run.eval_seconds, neighbour_load=run.neighbour_load,
                    train_limit=run.train_limit, eval_limit=run.eval_limit,
                    untrained_bpb=(run.untrained or untrained or {}).get(split), node=run.node))
    findings = run_findings(pairs, final_commit)
    gains = {split: scored_gains(rows, split) for split in ("val", "test")}
    seeds = sorted(set(gains["val"]) & set(gains["test"]))
    reason = val_overfit(np.array([gains["val"][s] for s in seeds]), np.array([gains["test"][s] for s in seeds]))
    if reason:
        findings.append(Finding("val_overfit", "error", reason, final_commit))
    return Verification(rows, pairs, findings)


def scored_gains(rows: list[VerificationRun], split: str) -> dict[int, float]:
    """seed -> baseline - final bpb on split, over the pairs that count (status ok, both sides scored)."""
    scored = {(r.role, r.seed): r.bpb for r in rows
              if r.split == split and r.pair_status == "ok" and r.bpb is not None}
    return {seed: scored["baseline", seed] - scored["final", seed]
            for role, seed in scored if role == "baseline" and ("final", seed) in scored}


def _clear(folder: Path) -> None:
    """Empty the folder of a pair that starts over, but for the lease of the job training it (harness/jobs.py)."""
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.name != LEASE_FILE:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def pair_folder(cache_dir: Path, profile: Profile, baseline_py: bytes, final_py: bytes, seed: int) -> Path:
    return cache_dir / profile.hash / "pairs" / f"{sha256_bytes(baseline_py)[:16]}-{sha256_bytes(final_py)[:16]}" \
        / f"seed-{seed}"


def cached_pair(cache_dir: Path, profile: Profile, baseline_py: bytes, final_py: bytes, seed: int) -> PairResult | None:
    """The pair's result when it was trained already; None when not (then only a Verifier on a node makes it)."""
    cached = read_json(pair_folder(cache_dir, profile, baseline_py, final_py, seed) / "pair.json")
    return None if cached is None else PairResult.from_dict(cached)


def session_sources(folder: Path) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """(commit, train.py) of a finished session's baseline and final."""
    session, workspace = read_json(folder / "session.json"), folder / "workspace"
    return ((session["baseline_commit"], file_at(workspace, session["baseline_commit"], "train.py")),
            (session["final_commit"], file_at(workspace, session["final_commit"], "train.py")))


def verification_done(folder: Path) -> bool:
    """Whether the session has its verification; one that failed (an "error" recorded) is tried again."""
    existing = read_json(folder / "verification.json")
    return existing is not None and not existing.get("error")


def write_verification(folder: Path, result: Verification, seeds: tuple[int, ...], splits: tuple[str, ...]) -> dict:
    """verification.json: schema_version, seeds, splits, runs (VerificationRun rows: the verifications table),
    pairs (PairResult: every attempt with both runs' measurements, limits and drift reasons) and findings
    (integrity.Finding)."""
    record = {"schema_version": SCHEMA_VERSION, "seeds": list(seeds), "splits": list(splits),
              "runs": [asdict(r) for r in result.runs], "pairs": [asdict(p) for p in result.pairs],
              "findings": [asdict(f) for f in result.findings]}
    write_json(folder / "verification.json", record)
    return record


def write_verification_error(folder: Path, message: str, seeds: tuple[int, ...], splits: tuple[str, ...]) -> dict:
    """verification.json of a session the infrastructure could not verify: no runs, the reason in "error" (an infra
    failure, never the agent's; the next `arbench run` tries again)."""
    record = {"schema_version": SCHEMA_VERSION, "seeds": list(seeds), "splits": list(splits), "runs": [], "pairs": [],
              "findings": [], "error": message}
    write_json(folder / "verification.json", record)
    return record
