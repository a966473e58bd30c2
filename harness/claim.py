"""`arbench verify`: re-verify the gain claimed by any autoresearch-style repo.

The repo follows the original's convention: experiments are commits on a branch, results.tsv
(untracked, in the working tree) logs them, its first row is the unmodified baseline. The claim
is baseline val_bpb minus the best kept val_bpb. Baseline and best train.py are re-trained on
fresh held-out seeds, paired by seed, and scored by trusted code on the val and hidden test splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from bench.profile import load_profile
from harness.collect import read_results
from harness.config import ConfigError
from harness.data import require_prepared
from harness.runtime import get_runtime
from harness.stats import null_spurious_gain, paired_t, sign_flip_pvalue
from harness.verify import Verification, Verifier, scored_gains
from harness.workspace import file_at, git, is_ancestor


@dataclass(frozen=True)
class Claim:
    baseline_commit: str
    baseline_bpb: float
    best_commit: str
    best_bpb: float
    n_runs: int   # rows that produced a val_bpb: the draws of the keep/revert loop's null model

    @property
    def gain(self) -> float:
        return self.baseline_bpb - self.best_bpb


def find_claim(repo: Path, branch: str | None) -> Claim:
    rows, problems = read_results(repo)
    if not rows:
        reason = problems[0].reason if problems else "no rows"
        raise ConfigError(f"{repo}: no usable results.tsv rows ({reason})")
    kept = [r for r in rows if r.status == "keep" and r.val_bpb > 0]
    best = min(kept, key=lambda r: r.val_bpb, default=rows[0])
    return Claim(baseline_commit=_resolve(repo, rows[0].commit, branch), baseline_bpb=rows[0].val_bpb,
                 best_commit=_resolve(repo, best.commit, branch), best_bpb=best.val_bpb,
                 n_runs=sum(r.status != "crash" and r.val_bpb > 0 for r in rows))


def _resolve(repo: Path, short: str, branch: str | None) -> str:
    full = git(repo, "rev-parse", "--verify", "--quiet", f"{short}^{{commit}}", check=False)
    if not full:
        raise ConfigError(f"{repo}: results.tsv names commit {short}, which the repo does not have")
    if branch and not is_ancestor(repo, full, branch):
        raise ConfigError(f"{repo}: commit {short} is not on branch {branch}")
    return full


def verify_claim(path: Path, branch: str | None, profile_name: str | None, seeds: tuple[int, ...],
                 runtime_name: str, out: Path | None, console: Console) -> ClaimReport:
    if not (path / ".git").exists():
        raise ConfigError(f"{path} is not a git repository")
    if branch and not git(path, "rev-parse", "--verify", "--quiet", branch, check=False):
        raise ConfigError(f"{path}: no branch {branch!r}")
    profile = load_profile(profile_name or (path / "profile.toml" if (path / "profile.toml").exists() else "h100"))
    claim = find_claim(path, branch)
    data = require_prepared(profile)
    path = path.resolve()
    verifier = Verifier((out or Path("runs") / f"verify-{path.name}").resolve() / "cache", profile, data,
                        get_runtime(runtime_name), seeds, ("val", "test"))
    console.print(f"verifying {path}: baseline {claim.baseline_commit[:7]} vs best {claim.best_commit[:7]} "
                  f"on seeds {list(seeds)} ({profile.name})")
    result = verifier.verify(*[(c, file_at(path, c, "train.py")) for c in (claim.baseline_commit, claim.best_commit)])
    return ClaimReport(render_report(claim, result), failed=result.failed)


@dataclass(frozen=True)
class ClaimReport:
    text: str
    failed: bool   # a final run failed or an error finding was raised: `arbench verify` exits 1


def render_report(claim: Claim, result: Verification) -> str:
    lines = [f"claimed gain: {claim.gain:+.6f} bpb ({claim.baseline_bpb:.6f} -> {claim.best_bpb:.6f}, "
             f"{claim.n_runs} runs with a val_bpb)"]
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
            lines.append(f"     claimed - verified (noise-mining + seed effect): {claim.gain - t.mean:+.6f} bpb; "
                         f"a keep/revert loop on pure noise expects {float(null_spurious_gain(max(claim.n_runs - 1, 0), sigma)):+.6f} "
                         f"(seed sigma {sigma:.6f})")
    lines += [f"failed final run, seed {r.seed}: {r.status} ({r.message}), scored as the untrained model"
              for r in result.runs if r.role == "final" and r.status != "ok" and r.split == "val"]
    lines += [f"excluded pair, seed {p.seed}: {p.status} after {len(p.attempts)} attempts "
              f"({'; '.join(p.attempts[-1].drift)})" for p in result.pairs if p.status != "ok"]
    lines += [f"finding [{f.severity}] {f.kind}: {f.message}" for f in result.findings]
    return "\n".join(lines)
