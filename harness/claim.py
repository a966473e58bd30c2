"""`arbench verify`: re-verify the gain claimed by any autoresearch-style repo.

The repo follows the original's convention: experiments are commits on a branch, results.tsv
(untracked, in the working tree) logs them, its first row is the unmodified baseline. The claim
is baseline val_bpb minus the best kept val_bpb. Before anything trains, the claim block shows that
claim, the null model's expectation for as many runs, and how the fork differs from the task
(harness/fork.py); a fork whose train.py needs what the task does not define, or whose baseline or
best commit is missing, is not trained at all. Then baseline and best train.py are re-trained on
fresh held-out seeds, paired by seed, and scored by trusted code on the val and hidden test splits.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from bench.contracts import RESULTS_FILE, ResultRow
from bench.profile import Profile, available_profiles, load_profile
from harness.collect import read_results
from harness.config import ConfigError
from harness.data import require_prepared
from harness.fork import (PROFILE_FILE, ForkDifferences, autoresearch_branches, read_fork, resolve_branch,
                          resolve_commits)
from harness.runtime import get_runtime
from harness.schedule import visible_gpus
from harness.stats import null_expected_keeps, null_spurious_gain, paired_t, sign_flip_pvalue
from harness.verify import Verification, Verifier, scored_gains
from harness.workspace import file_at, git, is_ancestor


# ---------------------------------------------------------------------------
# The claim, from results.tsv
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    baseline: ResultRow      # the first data row
    best: ResultRow          # the kept row with the lowest val_bpb (the baseline when none beats it)
    rows: list[ResultRow]    # every usable row, the baseline first
    unused_rows: int         # malformed rows, reported with their line numbers

    @property
    def gain(self) -> float:
        return self.baseline.val_bpb - self.best.val_bpb

    @property
    def n_scored(self) -> int:
        """Experiments after the baseline that produced a val_bpb: the N of the keep/revert loop's null model."""
        return sum(r.status != "crash" and r.val_bpb > 0 for r in self.rows[1:])

    def count(self, status: str) -> int:
        """Experiments (rows after the baseline) with this status."""
        return sum(r.status == status for r in self.rows[1:])


def read_claim(repo: Path) -> tuple[Claim, list[str]]:
    """The claim and one warning per row that is not used; ConfigError when no claim can be read."""
    rows, problems = read_results(repo)
    where = f"{repo}/{RESULTS_FILE}"
    if problems and problems[0].line_no == 0:
        raise ConfigError(f"{repo}: no {RESULTS_FILE} (an autoresearch run leaves it untracked in its working tree)")
    if problems and problems[0].line_no == 1:
        raise ConfigError(f"{where} line 1: {problems[0].reason}")
    if not rows:
        raise ConfigError(f"{where}: no usable row" + (f" (line {problems[0].line_no}: {problems[0].reason})"
                                                       if problems else ""))
    if problems and problems[0].line_no < rows[0].line_no:
        raise ConfigError(f"{where} line {problems[0].line_no}, the baseline row (the first data row): "
                          f"{problems[0].reason}; no claim can be read without it")
    if rows[0].status == "crash" or rows[0].val_bpb <= 0:
        raise ConfigError(f"{where} line {rows[0].line_no}, the baseline row, has no val_bpb "
                          f"({rows[0].status}, {rows[0].val_bpb}); no claim can be read without it")
    kept = [r for r in rows if r.status == "keep" and r.val_bpb > 0]
    best = min(kept, key=lambda r: r.val_bpb, default=rows[0])
    warnings = [f"{RESULTS_FILE} line {p.line_no}: {p.reason}; the row is not used" for p in problems]
    return Claim(rows[0], best, rows, len(problems)), warnings


# ---------------------------------------------------------------------------
# The claim in its repository
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ForkClaim:
    repo: Path
    branch: str | None                  # the ref the experiments are checked against (None: not checked)
    profile: Profile                    # what verification runs on
    claim: Claim
    warnings: list[str]                 # rows not used, commits missing besides the baseline and best
    missing: str | None                 # why the baseline or best commit cannot be read
    commits: tuple[str, str] | None     # full hashes of the baseline and best; None when one is missing
    fork: ForkDifferences | None        # None when a commit is missing

    @property
    def blocked(self) -> str | None:
        """Why nothing can be trained, when something stops it."""
        if self.missing:
            return self.missing
        imports = self.fork.foreign_imports if self.fork else {}
        if imports:
            names = "; ".join(f"train.py at {role}: {', '.join(found)}" for role, found in imports.items())
            return f"its train.py imports names the original task does not define ({names})"
        return None

    @property
    def comparable(self) -> bool:
        """The claim is readable and made under the original task (or the repo's own profile, unchanged)."""
        return self.fork is not None and not self.fork.changed_task and not self.fork.task.unreadable


def read_fork_claim(path: Path, branch: str | None, profile_name: str | None) -> ForkClaim:
    if not (path / ".git").exists():
        raise ConfigError(f"{path} is not a git repository")
    path = path.resolve()
    ref = resolve_branch(path, branch) if branch else None
    profile = load_profile(profile_name or (path / PROFILE_FILE if (path / PROFILE_FILE).exists() else "h100"))
    claim, warnings = read_claim(path)
    claim, named = _name_baseline(path, claim)
    commits = resolve_commits(path, [c for c in dict.fromkeys(r.commit for r in claim.rows) if c])
    baseline, best = (commits.get(row.commit) for row in (claim.baseline, claim.best))
    missing_note = _missing_commits(claim, commits, baseline, best)
    warnings += [named] if named else []
    if baseline is None or best is None:
        return ForkClaim(path, ref, profile, claim, warnings, missing_note, None, None)
    warnings += [missing_note] if missing_note else []
    if ref:
        _require_on_branch(path, ref, {"baseline": (claim.baseline, baseline), "best": (claim.best, best)})
    return ForkClaim(path, ref, profile, claim, warnings, None, (baseline, best), read_fork(path, baseline, best))


def _name_baseline(repo: Path, claim: Claim) -> tuple[Claim, str | None]:
    """A baseline row that names no commit (forks write `baseline` there) stands for the parent of the first
    experiment's commit: each experiment is a commit on top of the last kept one, the first on the baseline."""
    if claim.baseline.commit or len(claim.rows) < 2:
        return claim, None
    first = claim.rows[1].commit
    parent = git(repo, "rev-parse", "--verify", "--quiet", "--short=7", f"{first}^{{commit}}^", check=False)
    if not parent:
        return claim, None
    baseline = replace(claim.baseline, commit=parent)
    best = baseline if claim.best is claim.baseline else claim.best
    return (replace(claim, baseline=baseline, best=best, rows=[baseline, *claim.rows[1:]]),
            f"{RESULTS_FILE} line {baseline.line_no} names no baseline commit: taken to be {parent}, the parent of "
            f"the first experiment's commit {first}")


def _missing_commits(claim: Claim, commits: dict[str, str | None], baseline: str | None,
                     best: str | None) -> str | None:
    missing = [name for name, full in commits.items() if full is None]
    notes = [f"{len(missing)} of {len(commits)} commits named in {RESULTS_FILE} are not in this repository"
             + (": its experiment history was not pushed" if len(missing) == len(commits) else "")] if missing else []
    absent = [f"the {role} {row.commit or '(no commit named)'} (line {row.line_no})"
              for role, row, full in (("baseline", claim.baseline, baseline), ("best", claim.best, best)) if not full]
    if absent:
        return "; ".join(notes + [f"without {' and '.join(dict.fromkeys(absent))} nothing can be verified"])
    return "; ".join(notes + ["the baseline and the best are here, so verification goes on"]) if notes else None


def _require_on_branch(repo: Path, ref: str, commits: dict[str, tuple[ResultRow, str]]) -> None:
    for role, (row, full) in commits.items():
        if not is_ancestor(repo, full, ref):
            raise ConfigError(f"{repo}: the {role} commit {row.commit} ({RESULTS_FILE} line {row.line_no}) is not "
                              f"on {ref}; autoresearch/* branches here: "
                              f"{', '.join(autoresearch_branches(repo)) or 'none'}")


# ---------------------------------------------------------------------------
# The claim block
# ---------------------------------------------------------------------------

def render_claim(fc: ForkClaim, sigma: float | None = None) -> str:
    """What the claim is and how far it can be trusted before anything trains."""
    c = fc.claim
    lines = [f"claim of {fc.repo}" + (f" (branch {fc.branch})" if fc.branch else ""),
             f"  baseline    {_row(c.baseline)}",
             f"  best kept   {_row(c.best)}",
             f"  claimed gain: {c.gain:+.6f} bpb",
             f"  runs        {len(c.rows)} rows: the baseline and {len(c.rows) - 1} experiments ({c.count('keep')} "
             f"keep, {c.count('discard')} discard, {c.count('crash')} crash)"
             + (f"; malformed rows not used: {c.unused_rows}" if c.unused_rows else ""),
             f"  null model  {_null_model(c, fc.profile, sigma)}"]
    if fc.fork is not None:
        lines += _differences(fc.fork, fc.profile)
    lines.append(f"  verdict     {_verdict(fc)}")
    return "\n".join(lines)


def _row(row: ResultRow) -> str:
    return f"{row.commit}  val_bpb {row.val_bpb:.6f}  ({RESULTS_FILE} line {row.line_no})"


def _null_model(claim: Claim, profile: Profile, sigma: float | None) -> str:
    """The null model's claim for as many runs: keep/revert on pure noise (harness.stats)."""
    n = claim.n_scored
    loop = f"a keep/revert loop on pure noise over {n} experiments expects"
    keeps = f"{float(null_expected_keeps(n)):.1f} keeps"
    origin = "--sigma" if sigma is not None else f"profile {profile.name}'s noise floor"
    sigma = sigma if sigma is not None else profile.noise_sigma
    if sigma is None:
        return (f"profile {profile.name} has no known noise floor (pass --sigma): {loop} "
                f"{float(null_spurious_gain(n, 1.0)):.2f} sigma of gain and {keeps}")
    return f"{loop} {float(null_spurious_gain(n, sigma)):+.6f} bpb of gain and {keeps} (sigma {sigma:.6f}: {origin})"


def _differences(fork: ForkDifferences, profile: Profile) -> list[str]:
    task = fork.task
    same = "constants as the original's" if task.defined_by == "prepare.py" else "the repo's own task"
    lines = [f"  task        {task.defined_by}: {'; '.join(task.differences) or same}"]
    lines += [f"              unreadable: {reason}" for reason in task.unreadable]
    lines.append(f"  changed     besides train.py, baseline..best: {', '.join(fork.changed_files) or 'nothing'}")
    lines += [f"  imports     train.py at {role} imports what the task lacks: {', '.join(found)}"
              for role, found in fork.foreign_imports.items()]
    maps = (f"the claim maps to {task.profile}" if task.profile else
            f"the claim maps to none of our profiles ({', '.join(available_profiles())})")
    lines.append(f"  profile     {maps}; verification runs on {profile.name}")
    return lines


def _verdict(fc: ForkClaim) -> str:
    if fc.missing or fc.fork is None:
        return f"cannot be verified: {fc.missing}"
    if blocked := fc.blocked:
        return (f"the fork changed the task: {blocked}; its claim is not comparable to the original's, and its "
                f"train.py cannot run under the original's prepare.py, so nothing is trained")
    if fc.fork.changed_task:
        what = fc.fork.task.differences + [f"{f} changed along the branch" for f in fc.fork.task_files_changed]
        return f"the fork changed the task ({'; '.join(what)}): its claim is not comparable to the original's"
    if fc.fork.task.unreadable:
        return "the task could not be read in full, so it is not confirmed as the original's"
    return "the task is unchanged: the claim is comparable"


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimReport:
    text: str
    failed: bool   # nothing was verified, a run failed or an error finding was raised: `arbench verify` exits 1


def verify_claim(fc: ForkClaim, seeds: tuple[int, ...], runtime_name: str, out: Path | None,
                 console: Console) -> ClaimReport:
    """Train baseline and best on `seeds` and report; refuses (before training) a fork that cannot run, a host
    without the GPU the profile needs, and data that is not prepared."""
    if fc.blocked or fc.commits is None:
        return ClaimReport("not verified: see the verdict above", failed=True)
    gpus = visible_gpus()
    if fc.profile.needs_gpu and not gpus:
        raise ConfigError(f"profile {fc.profile.name} needs a GPU and this host reports none (nvidia-smi); see the "
                          f"claim without training: arbench verify {fc.repo} --claim-only")
    data = require_prepared(fc.profile)
    verifier = Verifier((out or Path("runs") / f"verify-{fc.repo.name}").resolve() / "cache", fc.profile, data,
                        get_runtime(runtime_name), seeds, ("val", "test"))
    console.print(f"verifying {fc.repo}: baseline {fc.claim.baseline.commit} vs best {fc.claim.best.commit} "
                  f"on seeds {list(seeds)} ({fc.profile.name}, {f'GPU {gpus[0]}' if gpus else 'CPU'})")
    baseline, best = ((commit, _train_py(fc.repo, commit)) for commit in fc.commits)
    result = verifier.verify(baseline, best, gpu=gpus[0] if gpus else None)
    return ClaimReport(render_report(fc.claim, result), failed=result.failed)


def _train_py(repo: Path, commit: str) -> bytes:
    try:
        return file_at(repo, commit, "train.py")
    except subprocess.CalledProcessError:
        raise ConfigError(f"{repo}: commit {commit[:7]} has no train.py") from None


def render_report(claim: Claim, result: Verification) -> str:
    lines = []
    for split in ("val", "test"):
        gains = scored_gains(result.runs, split)
        seeds = sorted(gains)
        if not seeds:
            lines.append(f"{split}: no verified pair")
            continue
        diffs = np.array([gains[s] for s in seeds])
        t = paired_t(diffs)
        base = [r.bpb for r in result.runs if r.split == split and r.role == "baseline" and r.seed in gains]
        sigma = float(np.std(base, ddof=1)) if len(base) > 1 else float("nan")
        lines.append(f"{split}: verified gain {t.mean:+.6f} bpb, 95% CI [{t.low:+.6f}, {t.high:+.6f}], "
                     f"sign-flip p = {sign_flip_pvalue(diffs):.3f}, n = {len(seeds)} seeds")
        if split == "val":
            null = float(null_spurious_gain(claim.n_scored, sigma))
            lines.append(f"     claimed - verified (noise-mining + seed effect): {claim.gain - t.mean:+.6f} bpb; "
                         f"a keep/revert loop on pure noise expects {null:+.6f} (seed sigma {sigma:.6f})")
    lines += [f"failed: {failure}" for failure in result.failures]
    lines += [f"substituted: {substitution}" for substitution in result.substitutions]
    lines += [f"excluded pair, seed {p.seed}: drift after {len(p.attempts)} attempts "
              f"({'; '.join(p.attempts[-1].drift)})" for p in result.pairs if p.status == "drift"]
    lines += [f"finding [{f.severity}] {f.kind}: {f.message}" for f in result.findings]
    return "\n".join(lines)
