"""First analysis of a run: noise floor, claimed vs verified gain per agent, a markdown leaderboard.

Reads the four parquet tables of `<run_dir>/tables/` (schemas in notes/CONTRACTS.md) and reduces
them, per profile and agent, to one `AgentSummary` row; the methods live in harness/stats.py.
Gains are in bpb, baseline − final: positive means better than the baseline. Results of different
profiles (profile_hash) are never pooled. Sessions with integrity findings are counted and marked,
never dropped. Agents are ranked by verified test gain with rank intervals, and each table says
how small a difference it can resolve. Does not cover IQM, P(A beats B), performance profiles or
loop-quality metrics (later issues).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness import stats
from harness.store import TABLES

# Columns this module reads: a table without rows (or without its file) gets them, empty.
COLUMNS = {
    "sessions": ["session_id", "agent", "profile", "profile_hash"],
    "experiments": ["session_id", "agent", "idx", "claimed_val_bpb", "status", "run_status"],
    "verifications": ["session_id", "agent", "role", "train_py_hash", "seed", "split", "bpb", "status", "pair_status"],
    "findings": ["session_id", "agent", "kind", "severity"],
}
NOISE_AGENT = "noop"
LEVEL = 0.95
ALPHA = 0.05  # family-wise error rate of the ranking's pairwise tests
POWER = 0.8   # for the resolution line printed under each leaderboard
# Findings of this severity flag a session ("warning" is a protocol deviation, not by itself a cheat).
FLAG_SEVERITY = "error"


@dataclass(frozen=True)
class Tables:
    sessions: pd.DataFrame
    experiments: pd.DataFrame
    verifications: pd.DataFrame
    findings: pd.DataFrame


def load_tables(run_dir: str | Path) -> Tables:
    """The tables of a run; a table whose parquet file is absent comes back empty."""
    folder = Path(run_dir) / "tables"
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") if (folder / f"{name}.parquet").exists()
              else pd.DataFrame() for name in TABLES}
    return Tables(**frames)


def _with_columns(tables: Tables) -> Tables:
    """The tables with every column this module reads (the store writes a table without rows with none)."""
    return Tables(**{name: getattr(tables, name).reindex(columns=list(dict.fromkeys(
        [*getattr(tables, name).columns, *COLUMNS[name]]))) for name in TABLES})


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NoiseFloor:
    """Run-to-run noise of val_bpb in one profile, measured by the noise agent (noop).

    Two views, because a session trains every run at its one session seed while verification uses
    held-out seeds: the seed σ comes from the trusted runs of the baseline on the held-out seeds
    (each (train.py, seed) run once: the verifier caches them); the decomposition comes from the
    noop's own runs of the baseline in its loop, between sessions (session seed and node) and
    within a session (reruns at one seed: steps done within the time budget, nondeterminism).
    """
    profile: str
    profile_hash: str
    sigma_seed: float     # SD of trusted val_bpb over held-out seeds; NaN below two seeds
    n_seeds: int
    sigma_between: float  # loop runs: session component; NaN below two sessions
    sigma_within: float   # loop runs: within-session component; NaN when no session reran
    n_sessions: int
    n_runs: int

    @property
    def sigma_null(self) -> float:
        """σ for the null model: the seed σ, since a change of train.py that has no effect still
        draws a new training trajectory; the loop runs' total σ when there is no verification."""
        if not math.isnan(self.sigma_seed):
            return self.sigma_seed
        return math.sqrt(_or(self.sigma_between, 0.0) ** 2 + self.sigma_within ** 2)


@dataclass(frozen=True)
class Gain:
    """An agent's verified gain: mean of its sessions × seeds table of paired differences, with an
    interval and p-value that treat sessions and seeds as random (see `pooled_gain`)."""
    n_sessions: int
    n_seeds: int          # seeds per session in that table (the single session's seeds when one)
    mean: float
    sd: float             # SD of the session means (NaN below two sessions)
    ci_low: float
    ci_high: float
    p_value: float
    note: str             # why the interval is missing, "" when it is there


@dataclass(frozen=True)
class AgentSummary:
    profile: str
    profile_hash: str
    agent: str
    n_sessions: int
    flagged: tuple[str, ...]   # session ids with integrity findings (still in every mean)
    mean_experiments: float    # experiments after the baseline row, mean over sessions
    mean_keeps: float          # kept experiments after the baseline row
    null_keeps: float          # expected keeps if no change had any effect
    claimed_gain: float        # results.tsv: baseline row − best kept, mean over sessions
    null_gain: float           # expected spurious claimed gain on pure noise (NaN without noise floor)
    verified_val: Gain
    verified_test: Gain
    noise_mining: float        # claimed − verified val (selection on noisy runs, incl. the seed effect)
    val_overfit: float         # verified val − verified test (tuning to the val shard)
    rank: tuple[int, int] | None = None  # rank interval by verified test gain; None if not verified
    failed_runs: int = 0       # (session, seed) whose final run failed: scored as the untrained model, counted
    excluded_pairs: int = 0    # (session, seed) pairs left out of every gain: drift or failed baseline


# ---------------------------------------------------------------------------
# Per-session quantities
# ---------------------------------------------------------------------------

def _session_index(tables: Tables) -> pd.DataFrame:
    """session_id → agent, profile, profile_hash; sessions only seen in other tables are kept."""
    known = tables.sessions[["session_id", "agent", "profile", "profile_hash"]]
    others = [frame.loc[~frame["session_id"].duplicated(), ["session_id", "agent"]]
              for frame in (getattr(tables, name) for name in TABLES[1:])]
    index = pd.concat([known, *others], ignore_index=True).drop_duplicates("session_id")
    index["profile"], index["profile_hash"] = _labels(index["profile"]), _labels(index["profile_hash"])
    return index.set_index("session_id")


def _claims(experiments: pd.DataFrame) -> pd.DataFrame:
    """Per session, from results.tsv rows: experiments and keeps after the baseline row, the number
    of runs that produced a val_bpb (draws of the null model) and the claimed gain (baseline row −
    best kept row; the baseline counts as kept, so a claim is ≥ 0; NaN when the baseline crashed)."""
    rows = experiments.sort_values(["session_id", "idx"])
    has_bpb = (rows["status"] != "crash") & (rows["claimed_val_bpb"] > 0)
    first = ~rows["session_id"].duplicated()
    baseline = rows["claimed_val_bpb"].where(first & has_bpb)
    kept = rows["claimed_val_bpb"].where(((rows["status"] == "keep") | first) & has_bpb)
    after = ~first
    frame = pd.DataFrame({
        "session_id": rows["session_id"],
        "n_experiments": after,
        "n_keeps": after & (rows["status"] == "keep"),
        "n_draws": after & has_bpb,
        "baseline": baseline,
        "best_kept": kept,
    })
    per = frame.groupby("session_id").agg(
        n_experiments=("n_experiments", "sum"), n_keeps=("n_keeps", "sum"), n_draws=("n_draws", "sum"),
        baseline=("baseline", "max"), best_kept=("best_kept", "min"))
    per["claimed_gain"] = per["baseline"] - per["best_kept"]
    return per[["n_experiments", "n_keeps", "n_draws", "claimed_gain"]]


def _scored(verifications: pd.DataFrame) -> pd.DataFrame:
    """Rows that enter a gain: a pair that was not excluded (drift, failed baseline), a scored bpb, and a
    baseline that ran ok; a failed final counts with its score (the untrained model's). Rows written
    before pairs existed have no pair_status and count as a kept pair."""
    v = verifications
    kept = v["pair_status"].astype(object).fillna("ok") == "ok"
    return v[kept & np.isfinite(v["bpb"].astype(float)) & ((v["status"] == "ok") | (v["role"] == "final"))]


def _paired_diffs(verifications: pd.DataFrame) -> pd.Series:
    """baseline − final bpb indexed by (session_id, split, seed), over the scored rows (see _scored)."""
    ok = _scored(verifications)
    wide = ok.pivot_table(index=["session_id", "split", "seed"], columns="role", values="bpb", aggfunc="mean")
    if not {"baseline", "final"} <= set(wide.columns):
        return pd.Series(index=pd.MultiIndex.from_tuples([], names=["session_id", "split", "seed"]), dtype=float)
    return (wide["baseline"] - wide["final"]).dropna()


def _verification_counts(verifications: pd.DataFrame) -> pd.DataFrame:
    """Per session: final runs that failed but were scored, and pairs excluded from every gain."""
    per_run = verifications.drop_duplicates(["session_id", "role", "seed"])
    status = per_run["pair_status"].astype(object).fillna("ok")
    failed = per_run[(per_run["role"] == "final") & (per_run["status"] != "ok") & (status == "ok")]
    excluded = per_run[(per_run["role"] == "baseline") & (status != "ok")]
    return pd.DataFrame({"failed_runs": failed.groupby("session_id").size(),
                         "excluded_pairs": excluded.groupby("session_id").size()}).astype(float)


def _labels(column: pd.Series) -> np.ndarray:
    """Group labels with missing values as one label of their own (NaN ≠ NaN would split them)."""
    return column.astype(object).fillna("?").to_numpy()


def _flagged(findings: pd.DataFrame) -> set[str]:
    return set(findings.loc[findings["severity"] == FLAG_SEVERITY, "session_id"])


# ---------------------------------------------------------------------------
# Noise floor and per-agent summaries
# ---------------------------------------------------------------------------

def noise_floors(tables: Tables, noise_agent: str = NOISE_AGENT) -> dict[str, NoiseFloor]:
    """Noise floor per profile_hash from the noise agent's sessions (see NoiseFloor)."""
    tables = _with_columns(tables)
    return _noise_floors(tables, _session_index(tables), noise_agent)


def _noise_floors(tables: Tables, index: pd.DataFrame, noise_agent: str) -> dict[str, NoiseFloor]:
    profiles = index[["profile", "profile_hash"]]
    v = tables.verifications
    v = _scored(v)
    v = v[(v["agent"] == noise_agent) & (v["split"] == "val") & (v["role"] == "baseline")]
    trusted = v.join(profiles, on="session_id")
    trusted = trusted.drop_duplicates(["profile_hash", "train_py_hash", "seed"])
    e = tables.experiments
    loop = e[(e["agent"] == noise_agent) & (e["status"] != "crash") & (e["run_status"] == "ok")
             & (e["claimed_val_bpb"] > 0)].join(profiles, on="session_id")
    floors = {}
    for (profile_hash, profile), _ in pd.concat([trusted, loop]).groupby(["profile_hash", "profile"]):
        seeds = trusted[trusted["profile_hash"] == profile_hash]
        runs = loop[loop["profile_hash"] == profile_hash]
        # Grouped by train.py so that seeds are the only thing varying (a noop has one train.py).
        seed = stats.variance_components(seeds["bpb"].to_numpy(float), _labels(seeds["train_py_hash"]))
        parts = stats.variance_components(runs["claimed_val_bpb"].to_numpy(float), runs["session_id"].to_numpy())
        floors[profile_hash] = NoiseFloor(profile, profile_hash, seed.sigma_within, seed.n_obs,
                                          parts.sigma_between, parts.sigma_within, parts.n_groups, parts.n_obs)
    return floors


def analyze(tables: Tables, noise_agent: str = NOISE_AGENT, level: float = LEVEL) -> list[AgentSummary]:
    """One row per (profile, agent), sorted by profile then verified test gain (best first)."""
    tables = _with_columns(tables)
    index = _session_index(tables)
    sessions = index.join(_claims(tables.experiments))
    sessions[["n_experiments", "n_keeps", "n_draws"]] = sessions[["n_experiments", "n_keeps", "n_draws"]].fillna(0)
    diffs = _paired_diffs(tables.verifications)
    splits = set(diffs.index.get_level_values("split"))
    # Per split, a sessions × seeds table of paired differences.
    tables_by_split = {split: diffs.xs(split, level="split").unstack("seed") if split in splits
                       else pd.DataFrame(index=sessions.index) for split in ("val", "test")}
    for split, table in tables_by_split.items():
        sessions[f"gain_{split}"] = table.mean(axis=1)
    floors = _noise_floors(tables, index, noise_agent)
    sigma = sessions["profile_hash"].map({h: f.sigma_null for h, f in floors.items()}).astype(float)
    sessions["null_gain"] = sigma * stats.null_spurious_gain(sessions["n_draws"].to_numpy(), 1.0)
    sessions["null_keeps"] = stats.null_expected_keeps(sessions["n_draws"].to_numpy())
    flagged = _flagged(tables.findings)
    sessions = sessions.join(_verification_counts(tables.verifications))
    rows = [_summarize(key, group, tables_by_split, flagged, level)
            for key, group in sessions.groupby(["profile_hash", "profile", "agent"], sort=False)]
    ranks = {}
    for profile_hash, group in sessions.groupby("profile_hash"):
        test_gains = {agent: g["gain_test"].dropna().to_numpy() for agent, g in group.groupby("agent")}
        ranks |= {(profile_hash, agent): rank for agent, rank in rank_agents(test_gains).items()}
    rows = [replace(r, rank=ranks.get((r.profile_hash, r.agent))) for r in rows]
    return sorted(rows, key=lambda r: (r.profile, r.profile_hash, -_or(r.verified_test.mean, -math.inf), r.agent))


def rank_agents(session_gains: dict[str, np.ndarray], alpha: float = ALPHA) -> dict[str, tuple[int, int]]:
    """Rank intervals of agents by mean session gain (rank 1 = best), for agents with a gain.

    Every pair is compared with Welch's test on the session gains (the shared baseline runs cancel
    in a difference between agents, so sessions are the replicates) and the p-values are
    Holm-adjusted together, so the chance that any two agents are called different when they are
    not stays ≤ alpha. A pair where either agent has a single session cannot be tested and counts
    as not different, which widens both intervals.
    """
    agents = [a for a, g in session_gains.items() if g.size]
    pairs = list(itertools.combinations(range(len(agents)), 2))
    p = np.array([_welch_p(session_gains[agents[i]], session_gains[agents[j]]) for i, j in pairs])
    different = np.zeros((len(agents), len(agents)), dtype=bool)
    for (i, j), q in zip(pairs, stats.holm(p)):
        different[i, j] = different[j, i] = q <= alpha
    means = np.array([session_gains[a].mean() for a in agents])
    intervals = stats.rank_intervals(means, different)
    return {a: (int(lo), int(hi)) for a, (lo, hi) in zip(agents, intervals)}


def _welch_p(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.welch(a, b).p_value) if a.size >= 2 and b.size >= 2 else float("nan")


def _summarize(key: tuple[str, str, str], group: pd.DataFrame, tables_by_split: dict[str, pd.DataFrame],
               flagged: set[str], level: float) -> AgentSummary:
    profile_hash, profile, agent = key
    val, test = (tables_by_split[split].reindex(group.index) for split in ("val", "test"))
    both = group.dropna(subset=["claimed_gain", "gain_val"])
    val_test = group.dropna(subset=["gain_val", "gain_test"])
    return AgentSummary(
        profile=profile, profile_hash=profile_hash, agent=agent, n_sessions=len(group),
        flagged=tuple(sorted(flagged & set(group.index))),
        mean_experiments=float(group["n_experiments"].mean()),
        mean_keeps=float(group["n_keeps"].mean()),
        null_keeps=float(group["null_keeps"].mean()),
        claimed_gain=_mean(group["claimed_gain"]),
        null_gain=_mean(group["null_gain"]),
        verified_val=pooled_gain(val, level),
        verified_test=pooled_gain(test, level),
        noise_mining=_mean(both["claimed_gain"] - both["gain_val"]),
        val_overfit=_mean(val_test["gain_val"] - val_test["gain_test"]),
        failed_runs=int(group["failed_runs"].fillna(0).sum()),
        excluded_pairs=int(group["excluded_pairs"].fillna(0).sum()),
    )


def pooled_gain(diffs: pd.DataFrame, level: float = LEVEL) -> Gain:
    """An agent's verified gain from its sessions × seeds table of paired differences (NaN = no pair).

    The sessions are the agent's replicates: what varies between repeats (the search path, hence
    the final train.py) is what a user comparing agents needs the uncertainty of. But every session
    is scored on the same held-out seeds against the same baseline runs (the verifier caches them),
    so the baseline's noise at those seeds is in every session's difference and does not average
    out over sessions: a t-interval over session means misses it (simulated coverage 0.64–0.93 at a
    nominal 0.95, and a sign-flip test over sessions rejects a true null up to 35% of the time).
    So the interval and p-value come from `stats.crossed_gain`, sessions and seeds both random.
    It needs a complete table: the larger of "seeds every session has" and "sessions with every
    seed" is used (all of it when no run failed). Fewer than two sessions or two common seeds give
    the mean only, with the reason.
    """
    table = diffs.dropna(how="all")
    nan = float("nan")
    if table.empty:
        return Gain(0, 0, nan, nan, nan, nan, nan, "no verification")
    if len(table) == 1:
        return Gain(1, int(table.notna().sum().sum()), float(np.nanmean(table)), nan, nan, nan, nan, "1 session")
    complete = _complete(table)
    means = complete.mean(axis=1)
    if complete.shape[0] < 2 or complete.shape[1] < 2:
        reason = "fewer than 2 seeds common to the sessions"
        return Gain(len(table), complete.shape[1], float(table.mean(axis=1).mean()), nan, nan, nan, nan, reason)
    g = stats.crossed_gain(complete.to_numpy(), level)
    return Gain(len(complete), complete.shape[1], float(g.mean), float(means.std(ddof=1)), float(g.low),
                float(g.high), float(g.p_value), "")


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    """The larger complete part of a table: all its rows on the columns none misses, or the rows
    that miss no column."""
    by_seeds = table.loc[:, table.notna().all(axis=0)]
    by_sessions = table[table.notna().all(axis=1)]
    return by_seeds if by_seeds.size >= by_sessions.size else by_sessions


@dataclass(frozen=True)
class Resolution:
    """How far apart two agents' verified test gains must be for this leaderboard to tell them apart."""
    n_sessions: int        # fewest sessions among the agents that enter the estimate
    session_sd: float      # pooled within-agent SD of session test gains
    detectable: float      # difference found with probability POWER by one Welch/t test at ALPHA
    closest_gap: float     # smallest gap between two agents' mean test gains (NaN below two agents)
    repeats_for_gap: int   # sessions per agent that gap would need (0 when it cannot be computed)


def resolution(rows: list[AgentSummary]) -> Resolution | None:
    """Power of the ranking of one profile's rows: the pooled session SD of verified test gains turned
    into the smallest detectable difference at the current number of sessions, and the number of
    sessions needed to separate the two closest agents. Agents whose session gains are all equal
    (noop: its final train.py is the baseline, re-used from the cache) say nothing about the spread
    of a searching agent and are left out of the SD. None when no agent has two varying sessions."""
    tested = [r.verified_test for r in rows if r.verified_test.n_sessions >= 2 and r.verified_test.sd > 0]
    if not tested:
        return None
    dof = sum(g.n_sessions - 1 for g in tested)
    sd = math.sqrt(sum((g.n_sessions - 1) * g.sd ** 2 for g in tested) / dof)
    n = min(g.n_sessions for g in tested)
    means = np.sort([r.verified_test.mean for r in rows if r.verified_test.n_sessions])
    gap = float(np.diff(means).min()) if means.size >= 2 else float("nan")
    try:
        repeats = stats.required_repeats(gap / sd, ALPHA, POWER) if gap > 0 else 0
    except ValueError:   # a gap far below the spread: more repeats than anyone runs, shown as not resolvable (0)
        repeats = 0
    return Resolution(n, sd, sd * stats.detectable_effect(n, ALPHA, POWER), gap, repeats)


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else float("nan")


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

HEADER = ("| agent | rank | sessions | experiments | keeps (null) | claimed gain | null gain "
          "| verified val [95% CI] | p val | verified test [95% CI] | p test | noise-mining | val overfit |")
MAX_LISTED = 10  # flagged session ids listed under a table
LEGEND = (
    "Gains in bpb, baseline − final (positive = better than baseline). *claimed*: results.tsv, baseline "
    "row − best kept row; *null gain* / *keeps (null)*: expected if no change had any effect (σ · E[max of "
    "N+1 normals], H(N+1) − 1, σ = the noise floor's seed σ); *verified*: trusted re-runs of baseline and "
    "final train.py on held-out seeds, paired by seed, mean over sessions × seeds with a t-interval and "
    "p-value counting both session and seed noise (baseline and final trained back to back on each seed); "
    "*noise-mining* = claimed − verified val (selection on noisy runs, seed effect included); *val overfit* "
    "= verified val − verified test. ⚑ = sessions with integrity findings, kept in every mean. *rank*: by "
    "verified test gain; an agent's interval spans every agent it is not significantly different from "
    f"(Welch tests on session gains, Holm-corrected, family-wise α = {ALPHA}); an agent with one session "
    "is never significantly different."
)


def render_markdown(summaries: list[AgentSummary], noise: dict[str, NoiseFloor]) -> str:
    """A leaderboard section per profile: its noise floor, the agents' table, then the legend."""
    if not summaries and not noise:
        return "No sessions to analyze.\n"
    hashes = list(dict.fromkeys([s.profile_hash for s in summaries] + list(noise)))
    parts = []
    for profile_hash in hashes:
        rows = [s for s in summaries if s.profile_hash == profile_hash]
        floor = noise.get(profile_hash)
        name = floor.profile if floor else rows[0].profile
        parts += [f"## Profile {name} ({profile_hash})", "", _noise_line(floor), ""]
        if rows:
            parts += [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *map(_row, rows), ""]
            parts += _flagged_line(rows) + _verification_line(rows) + _resolution_line(resolution(rows))
    parts += [LEGEND, ""]
    return "\n".join(parts)


def _flagged_line(rows: list[AgentSummary]) -> list[str]:
    flagged = [f"{sid} ({s.agent})" for s in rows for sid in s.flagged]
    if not flagged:
        return []
    more = f" and {len(flagged) - MAX_LISTED} more" if len(flagged) > MAX_LISTED else ""
    return [f"⚑ Flagged sessions: {', '.join(flagged[:MAX_LISTED])}{more}.", ""]


def _verification_line(rows: list[AgentSummary]) -> list[str]:
    counts = [f"{s.agent} {_count(s.failed_runs, 'failed final run')} (scored as the untrained model), "
              f"{_count(s.excluded_pairs, 'excluded pair')} (drift or failed baseline)"
              for s in rows if s.failed_runs or s.excluded_pairs]
    return [f"Verification: {'; '.join(counts)}.", ""] if counts else []


def _resolution_line(res: Resolution | None) -> list[str]:
    if res is None:
        return ["Resolution: n/a (no agent has two verified sessions that differ).", ""]
    line = (f"Resolution: with {res.n_sessions} sessions per agent (session SD {_num(res.session_sd)}), "
            f"differences in verified test gain below {_num(res.detectable)} are likely missed "
            f"(α = {ALPHA}, power {POWER}).")
    if res.repeats_for_gap:
        line += (f" Separating the two closest agents (gap {_num(res.closest_gap)}) "
                 f"needs ~{res.repeats_for_gap} sessions each.")
    return [line, ""]


def _noise_line(floor: NoiseFloor | None) -> str:
    if floor is None:
        return f"Noise floor: n/a (no `{NOISE_AGENT}` session in this profile)."
    return (f"Noise floor (`{NOISE_AGENT}`): seed σ = {_num(floor.sigma_seed)} (trusted val_bpb of the baseline, "
            f"{_count(floor.n_seeds, 'held-out seed')}). Its loop's own runs of the baseline "
            f"({_count(floor.n_runs, 'run')}, {_count(floor.n_sessions, 'session')}): σ between sessions "
            f"(session seed, node) {_num(floor.sigma_between, 'n/a (one session)')}, σ within a session "
            f"(same seed: steps done in the time budget, nondeterminism) "
            f"{_num(floor.sigma_within, 'n/a (no reruns)')}.")


def _row(s: AgentSummary) -> str:
    sessions = f"{s.n_sessions} (⚑ {len(s.flagged)})" if s.flagged else str(s.n_sessions)
    rank = "n/a" if s.rank is None else (str(s.rank[0]) if s.rank[0] == s.rank[1] else f"{s.rank[0]}–{s.rank[1]}")
    cells = [s.agent, rank, sessions, f"{s.mean_experiments:.1f}", f"{s.mean_keeps:.1f} ({s.null_keeps:.1f})",
             _signed(s.claimed_gain), _signed(s.null_gain), _interval(s.verified_val), _p(s.verified_val),
             _interval(s.verified_test), _p(s.verified_test), _signed(s.noise_mining), _signed(s.val_overfit)]
    return "| " + " | ".join(cells) + " |"


def _interval(g: Gain) -> str:
    if g.note:
        return f"{_signed(g.mean)} [n/a: {g.note}]" if g.n_sessions else f"n/a: {g.note}"
    return f"{_signed(g.mean)} [{_signed(g.ci_low)}, {_signed(g.ci_high)}]"


def _p(g: Gain) -> str:
    return "n/a" if math.isnan(g.p_value) else f"{g.p_value:.3g}"


def _signed(x: float) -> str:
    # round first so that -1e-17 prints as +0.0000, not -0.0000
    return "n/a" if math.isnan(x) else f"{round(x, 4) + 0.0:+.4f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _num(x: float, missing: str = "n/a") -> str:
    return missing if math.isnan(x) else f"{x:.4f}"
