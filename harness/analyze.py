"""Analysis of a run: loop noise, claimed vs verified gain per agent, ranking, resolution (written down as markdown by
leaderboards/markdown.py).

Reads the four parquet tables of `<run_dir>/tables/` (schemas in notes/CONTRACTS.md) and reduces them, per profile
and agent, to one `AgentSummary` row. Gains are in bpb, baseline − final: positive means better than the baseline.
Results of different profiles (profile_hash) are never pooled. Sessions with integrity findings are counted and
marked, never dropped. A final run that failed is scored as the untrained model, never dropped, and counted.

Every verified interval, p-value, pairwise comparison, P(A beats B) and rank interval comes from one model of the
per-seed differences (harness/model.py), fitted per profile and split; the p-values of every agent against the
baseline (val and test) and of every pair of agents (test) are Holm-adjusted as one family; what the leaderboard can
resolve comes from the same model (harness/power.py). The null a claimed gain is held against (the σ a keep/revert loop
faces, the expected spurious gain and its 95th percentile) is harness/null_model.py's; IQM, performance profiles and
loop quality come from harness/summaries.py and harness/loop_quality.py.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness import model, null_model, power, stats
from harness.store import TABLES

# Columns this module reads: a table without rows (or without its file) gets them, empty.
COLUMNS = {
    "sessions": ["session_id", "agent", "profile", "profile_hash"],
    "experiments": ["session_id", "agent", "idx", "claimed_val_bpb", "status", "run_status"],
    "verifications": ["session_id", "agent", "role", "train_py_hash", "seed", "split", "bpb", "status", "pair_status",
                      "untrained_bpb", "node"],
    "findings": ["session_id", "agent", "kind", "severity"],
    "nodes": ["node", "profile_hash", "seed", "status", "steps", "tokens_per_second", "val_bpb"],
}
NOISE_AGENT = "noop"
LEVEL = 0.95
ALPHA = 0.05  # family-wise error rate of the leaderboard's tests (Holm)
POWER = 0.8   # for the resolution line printed under each leaderboard
# Findings of this severity flag a session ("warning" is a protocol deviation, not by itself a cheat).
FLAG_SEVERITY = "error"
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Tables:
    sessions: pd.DataFrame
    experiments: pd.DataFrame
    verifications: pd.DataFrame
    findings: pd.DataFrame
    nodes: pd.DataFrame = field(default_factory=pd.DataFrame)   # per-node calibration runs (harness/calibration.py)


def load_tables(run_dir: str | Path) -> Tables:
    """The tables of a run; a table whose parquet file is absent comes back empty."""
    folder = Path(run_dir) / "tables"
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") if (folder / f"{name}.parquet").exists()
              else pd.DataFrame() for name in TABLES}
    return Tables(**frames)


def with_columns(tables: Tables) -> Tables:
    """The tables with every column this module reads (the store writes a table without rows with none)."""
    return Tables(**{name: getattr(tables, name).reindex(columns=list(dict.fromkeys(
        [*getattr(tables, name).columns, *COLUMNS[name]]))) for name in TABLES})


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Gain:
    """An agent's verified gain against the baseline from the model (harness/model.py): mean over its sessions of the
    session's mean difference over seeds, generalized-pivot interval, p-value raw and Holm-adjusted over the
    leaderboard's family (every agent against the baseline on val and test, every pair of agents on test)."""
    n_sessions: int
    n_seeds: int          # seeds of the per-seed contrast
    mean: float
    sd: float             # SD of the session means (NaN below two sessions)
    ci_low: float
    ci_high: float
    p_value: float        # raw
    note: str             # why the interval is missing, "" when it is there
    p_adjusted: float = math.nan   # Holm over the family; NaN when not tested (the baseline itself, no interval)


@dataclass(frozen=True)
class Resolution:
    """What this leaderboard can resolve: the model's variance components turned into the smallest differences its
    tests find with probability POWER at its sessions, seeds and family size (harness/power.py)."""
    n_sessions: int          # median sessions per verified agent
    n_seeds: int
    family: int
    session_sd: float        # τ: spread of true gains between an agent's sessions (pooled)
    seed_sd: float           # seed term of a gain over the baseline (the baseline's deviation per seed)
    pair_seed_sd: float      # seed term between two agents (agent × seed; NaN below two verified agents)
    run_sd: float            # a difference's own run noise
    vs_baseline: float       # detectable gain over the baseline
    between_agents: float    # detectable difference between two agents (NaN below two verified agents)
    separated: int           # tests of the family that reject
    tests: int               # tests in the family


@dataclass(frozen=True)
class AgentSummary:
    profile: str
    profile_hash: str
    agent: str
    n_sessions: int
    flagged: tuple[str, ...]   # session ids with integrity findings (still in every mean)
    mean_experiments: float    # experiments after the baseline row, mean over sessions
    mean_keeps: float          # kept experiments after the baseline row
    claimed_gain: float        # results.tsv: baseline row − best kept, mean over sessions
    verified_val: Gain
    verified_test: Gain
    noise_mining: float        # claimed − verified val (selection on noisy runs, incl. the seed effect)
    val_overfit: float         # verified val − verified test (tuning to the val shard)
    rank: tuple[int, int] | None = None  # rank interval by verified test gain; None if not verified
    failed_runs: int = 0       # (session, seed) whose final run failed: scored as the untrained model, counted
    final_runs: int = 0        # (session, seed) final runs of kept pairs (the failure rate's denominator)
    excluded_pairs: int = 0    # (session, seed) pairs left out of every gain: drift or failed baseline
    beats: tuple[tuple[str, float, bool], ...] = ()   # (other agent, P(this agent's test gain > its), significant)
    resolution: Resolution | None = None              # of the agent's profile (the same object on each of its rows)
    null: null_model.NullGain | None = None   # claims on pure noise for its sessions' runs; None without loop noise

    @property
    def failure_rate(self) -> float:
        return self.failed_runs / self.final_runs if self.final_runs else math.nan


# ---------------------------------------------------------------------------
# Per-session quantities
# ---------------------------------------------------------------------------

def _session_index(tables: Tables) -> pd.DataFrame:
    """session_id → agent, profile, profile_hash; sessions only seen in other tables are kept."""
    known = tables.sessions[["session_id", "agent", "profile", "profile_hash"]]
    others = [frame.loc[~frame["session_id"].duplicated(), ["session_id", "agent"]]
              for frame in (tables.experiments, tables.verifications, tables.findings)]
    index = pd.concat([known, *others], ignore_index=True).drop_duplicates("session_id")
    index["profile"], index["profile_hash"] = _labels(index["profile"]), _labels(index["profile_hash"])
    return index.set_index("session_id")


def session_claims(experiments: pd.DataFrame) -> pd.DataFrame:
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
    """Rows that enter a gain, with `failed` (a final run that did not end ok) and a bpb for every one of them.

    A pair counts unless it was excluded (drift, failed baseline: pair_status); rows written before pairs existed
    have no pair_status and count. Its baseline must have run ok with a finite score. Its final counts whatever
    happened to it: a final that crashed, gave NaN, timed out, broke a limit or was noncausal scores as the untrained
    model (the uniform distribution's bpb: what it scored, else the row's `untrained_bpb`, else the largest untrained
    score known for that split), so that a fragile edit is never dropped to its advantage."""
    v = verifications
    kept = v["pair_status"].astype(object).fillna("ok") == "ok"
    bpb = v["bpb"].astype(float)
    final = v["role"] == "final"
    failed = final & (v["status"].astype(object).fillna("ok") != "ok")
    untrained = v["untrained_bpb"].astype(float)
    known = untrained.groupby(v["split"]).transform("max") if len(v) else untrained
    filled = bpb.where(~failed | np.isfinite(bpb), untrained.fillna(known))
    out = v.assign(bpb=filled, failed=failed)
    return out[kept & np.isfinite(filled) & ((v["status"] == "ok") | final)]


def scored_pairs(tables: Tables) -> pd.DataFrame:
    """One row per (session_id, split, seed) with both sides scored (see _scored): diff = baseline − final bpb, the
    final's train.py hash, whether the final failed (scored as the untrained model), and whether the final is the
    baseline itself (baseline_only: diff is exactly 0, one run serving both roles), and the node it ran on (its
    baseline's: both roles train on one slot). Excluded pairs are left out."""
    ok = _scored(with_columns(tables).verifications)
    keys = ["session_id", "split", "seed"]
    base = ok[ok["role"] == "baseline"].drop_duplicates(keys)
    final = ok[ok["role"] == "final"].drop_duplicates(keys)
    both = base[keys + ["bpb", "train_py_hash", "node"]].merge(
        final[keys + ["bpb", "train_py_hash", "failed"]], on=keys, suffixes=("_base", "_final"))
    same = both["train_py_hash_base"].astype(object).eq(both["train_py_hash_final"].astype(object))
    return pd.DataFrame({"session_id": both["session_id"], "split": both["split"], "seed": both["seed"],
                         "diff": both["bpb_base"] - both["bpb_final"], "final_hash": both["train_py_hash_final"],
                         "failed": both["failed"].astype(bool), "baseline_only": same.to_numpy(),
                         "node": both["node"]})


def _verification_counts(verifications: pd.DataFrame) -> pd.DataFrame:
    """Per session: final runs of kept pairs, those that failed (scored), and pairs excluded from every gain."""
    per_run = verifications.drop_duplicates(["session_id", "role", "seed"])
    status = per_run["pair_status"].astype(object).fillna("ok")
    finals = per_run[(per_run["role"] == "final") & (status == "ok")]
    failed = finals[finals["status"].astype(object).fillna("ok") != "ok"]
    excluded = per_run[(per_run["role"] == "baseline") & (status != "ok")]
    return pd.DataFrame({"final_runs": finals.groupby("session_id").size(),
                         "failed_runs": failed.groupby("session_id").size(),
                         "excluded_pairs": excluded.groupby("session_id").size()}).astype(float)


def _labels(column: pd.Series) -> np.ndarray:
    """Group labels with missing values as one label of their own (NaN ≠ NaN would split them)."""
    return column.astype(object).fillna("?").to_numpy()


def _flagged(findings: pd.DataFrame) -> set[str]:
    return set(findings.loc[findings["severity"] == FLAG_SEVERITY, "session_id"])


# ---------------------------------------------------------------------------
# Per-agent summaries
# ---------------------------------------------------------------------------

def analyze(tables: Tables, noise_agent: str = NOISE_AGENT, level: float = LEVEL,
            noise: dict[str, null_model.LoopNoise] | None = None) -> list[AgentSummary]:
    """One row per (profile, agent), sorted by profile then verified test gain (best first); noise:
    null_model.loop_noise(tables, noise_agent) when the caller has it."""
    tables = with_columns(tables)
    noise = null_model.loop_noise(tables, noise_agent) if noise is None else noise
    index = _session_index(tables)
    sessions = index.join(session_claims(tables.experiments))
    sessions[["n_experiments", "n_keeps", "n_draws"]] = sessions[["n_experiments", "n_keeps", "n_draws"]].fillna(0)
    pairs = scored_pairs(tables)
    pairs["agent"] = index["agent"].reindex(pairs["session_id"]).to_numpy()
    pairs["profile_hash"] = index["profile_hash"].reindex(pairs["session_id"]).to_numpy()
    for split in SPLITS:
        of_split = pairs[pairs["split"] == split]
        sessions[f"gain_{split}"] = of_split.groupby("session_id")["diff"].mean()
    flagged = _flagged(tables.findings)
    sessions = sessions.join(_verification_counts(tables.verifications))
    rows = []
    for profile_hash, group in sessions.groupby("profile_hash", sort=False):
        agents = list(dict.fromkeys(group["agent"]))
        ranked = rank_profile(pairs[pairs["profile_hash"] == profile_hash], agents, level)
        for agent, g in group.groupby("agent", sort=False):
            rows.append(_summarize(profile_hash, agent, g, ranked, flagged, noise.get(profile_hash)))
    return sorted(rows, key=lambda r: (r.profile, r.profile_hash, -_or(r.verified_test.mean, -math.inf), r.agent))


# ---------------------------------------------------------------------------
# The model per profile: gains, the family of tests, ranks, resolution
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Ranked:
    """One profile's verified results, per agent: gains per split, rank, pairwise P(beats), resolution."""
    gains: dict[str, dict[str, Gain]]            # split -> agent -> Gain
    ranks: dict[str, tuple[int, int]]
    beats: dict[str, tuple[tuple[str, float, bool], ...]]
    resolution: Resolution | None


def model_data(pairs: pd.DataFrame, agents: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One split's pairs as the model's arrays (harness/model.fit): units × seeds differences, changed, agent index,
    weight. A unit is one distinct training of an agent: sessions whose final is the same train.py share it, and
    so do all of an agent's sessions whose final is the baseline (their difference is 0, one run serving both).
    Node effects are taken out of d where the pairs' nodes identify them (harness/model.py node_adjusted)."""
    code = {a: i for i, a in enumerate(agents)}
    changed = ~pairs["baseline_only"].to_numpy(bool) | (pairs["diff"].to_numpy() != 0)
    unit_key = pd.Series(np.where(changed, pairs["final_hash"].astype(object).fillna(pairs["session_id"]), ""),
                         index=pairs.index)
    # a unit is changed when any of its pairs is (a baseline-only session with a non-zero diff is one of its own)
    unit_key = unit_key.where(unit_key != "", "baseline")
    keys = pd.MultiIndex.from_arrays([pairs["agent"].to_numpy(), unit_key.to_numpy()])
    unit, uniques = pd.factorize(keys)
    seed, seeds = pd.factorize(pairs["seed"])
    n_units, n_seeds = len(uniques), len(seeds)
    total = np.zeros((n_units, n_seeds))
    count = np.zeros((n_units, n_seeds))
    np.add.at(total, (unit, seed), pairs["diff"].to_numpy(float))
    np.add.at(count, (unit, seed), 1.0)
    with np.errstate(invalid="ignore"):
        d = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    unit_changed = np.zeros(n_units, dtype=bool)
    np.logical_or.at(unit_changed, unit, changed)
    sessions = pd.Series(pairs["session_id"].to_numpy()).groupby(unit).nunique()
    weight = sessions.reindex(range(n_units)).to_numpy(float)
    agent = np.array([code[a] for a, _ in uniques], dtype=int)
    node = np.full((n_units, n_seeds), -1)
    node[unit, seed] = pd.factorize(pairs["node"].replace("", np.nan))[0]   # a pair's node (-1: not recorded)
    return model.node_adjusted(d, unit_changed, agent, node), unit_changed, agent, weight


def rank_profile(pairs: pd.DataFrame, agents: list[str], level: float = LEVEL, alpha: float = ALPHA) -> Ranked:
    """Gains, Holm family, rank intervals, P(A beats B) and resolution of one profile's agents, all from the model
    (harness/model.compare: every agent against the baseline on val and test, every pair of agents on test)."""
    by_split = {split: pairs[pairs["split"] == split] for split in SPLITS}
    fits = {split: _fit(by_split[split], agents) for split in SPLITS}
    gains = {split: {a: _gain(fits[split], i, level) for i, a in enumerate(agents)} for split in SPLITS}
    ranked = [a for a in agents if gains["test"][a].n_sessions]
    val_p = np.array([gains["val"][a].p_value if not _baseline_only(fits["val"], i) else np.nan
                      for i, a in enumerate(agents)])
    test = _fit(by_split["test"], ranked)
    if test is None:
        adjusted = stats.holm(val_p)
        gains["val"] = {a: replace(g, p_adjusted=float(q)) for (a, g), q in zip(gains["val"].items(), adjusted)}
        return Ranked(gains, {}, {}, None)
    cmp = model.compare(test, alpha, val_p)
    gains["val"] = {a: replace(g, p_adjusted=float(q)) for (a, g), q in zip(gains["val"].items(), cmp.adjusted_extra)}
    for i, a in enumerate(ranked):
        gains["test"][a] = replace(gains["test"][a], p_adjusted=float(cmp.adjusted_gain[i]))
    ranks = {a: (int(lo), int(hi)) for a, (lo, hi) in zip(ranked, cmp.ranks)}
    beats = {a: tuple((b, float(cmp.beats[i, j]), bool(cmp.different[i, j])) for j, b in enumerate(ranked)
                      if j != i and not np.isnan(cmp.beats[i, j])) for i, a in enumerate(ranked)}
    searching = [i for i in range(len(ranked)) if not np.isnan(cmp.p_gain[i])]
    pair_list = [(i, j) for i, j in itertools.combinations(searching, 2)]
    res = _resolution(test, searching, pair_list, int(cmp.tests), int(cmp.rejected))
    return Ranked(gains, ranks, beats, res)


def _baseline_only(f: model.Fit | None, i: int) -> bool:
    return f is not None and bool(f.changed[i] == 0) and bool(f.mean[i] == 0)


def _fit(pairs: pd.DataFrame, agents: list[str]) -> model.Fit | None:
    if pairs.empty:
        return None
    d, changed, agent, weight = model_data(pairs, agents)
    agent = np.concatenate([agent, np.arange(len(agents))])   # every agent indexed, even one without pairs here
    return model.fit(np.vstack([d, np.full((len(agents), d.shape[1]), np.nan)]),
                     np.concatenate([changed, np.zeros(len(agents), bool)]), agent,
                     np.concatenate([weight, np.zeros(len(agents))]))


def _gain(f: model.Fit | None, i: int, level: float) -> Gain:
    nan = math.nan
    if f is None or not f.sessions[i] > 0:
        return Gain(0, 0, nan, nan, nan, nan, nan, "no verification")
    n = int(f.sessions[i])
    seeds = int(np.sum(~np.isnan(f.by_seed[i])))
    mean = float(f.mean[i])
    sd = float(np.sqrt(f.session_var[i])) if n >= 2 else nan
    if n < 2:
        return Gain(1, seeds, mean, nan, nan, nan, nan, "1 session")
    if seeds < 2:
        return Gain(n, seeds, mean, sd, nan, nan, nan, "fewer than 2 seeds")
    c = np.zeros(f.mean.shape[-1])
    c[i] = 1.0
    r = model.contrast(f, c, level)
    return Gain(n, seeds, mean, sd, float(r.low), float(r.high), float(r.p_value), "")


def _resolution(f: model.Fit | None, searching: list[int], pair_list: list[tuple[int, int]], tests: int,
                separated: int) -> Resolution | None:
    """The fitted variance components as a power.Design: detectable differences at this leaderboard's size."""
    if f is None or not searching:
        return None
    s = f.sessions[searching]
    usable = [i for i in searching if f.sessions[i] >= 2 and f.changed[i] > 0]
    if not usable or tests == 0:
        return None
    tau2 = np.array([max(0.0, f.session_var[i] - f.sigma_e2 * f.kappa[i] * f.sessions[i]) for i in usable])
    seed2 = [_seed_term(f, {i: 1.0}) / f.changed[i] ** 2 for i in usable]
    pair2 = [_seed_term(f, {i: 1.0, j: -1.0}) for i, j in pair_list if i in usable and j in usable]
    weights = f.sessions[usable] - 1
    session_sd = math.sqrt(float(np.sum(weights * tau2) / np.sum(weights)))
    seed_sd = math.sqrt(max(0.0, float(np.nanmean(seed2))))
    pair_sd = math.sqrt(max(0.0, float(np.nanmean(pair2)))) if pair2 else math.nan
    run_sd = math.sqrt(float(f.sigma_e2))
    n_sessions = int(np.median(s))
    n_seeds = int(np.median(np.sum(~np.isnan(f.by_seed[searching]), axis=-1)))
    df = float(f.df_e) if f.df_e > 0 else math.inf
    design = power.Design(n_sessions, n_seeds, session_sd, seed_sd, run_sd, 1, df, tests, ALPHA)
    vs_baseline = power.detectable(design, POWER)
    between = (power.detectable(replace(design, seed_sd=pair_sd, agents=2), POWER) if pair2 else math.nan)
    return Resolution(n_sessions, n_seeds, tests, session_sd, seed_sd, pair_sd, run_sd, vs_baseline, between,
                      separated, tests)


def _seed_term(f: model.Fit, c: dict[int, float]) -> float:
    """Per-seed variance of a contrast's seed part: Q − σ̂_e² λ (NaN below two seeds)."""
    vec = np.zeros(f.mean.shape[-1])
    for i, v in c.items():
        vec[i] = v
    pv = model.pivot(f, vec)
    return float(pv.q - pv.sigma_e2 * pv.lam)


def _summarize(profile_hash: str, agent: str, group: pd.DataFrame, ranked: Ranked, flagged: set[str],
               noise: null_model.LoopNoise | None) -> AgentSummary:
    both = group.dropna(subset=["claimed_gain", "gain_val"])
    val_test = group.dropna(subset=["gain_val", "gain_test"])
    return AgentSummary(
        profile=group["profile"].iloc[0], profile_hash=profile_hash, agent=agent, n_sessions=len(group),
        flagged=tuple(sorted(flagged & set(group.index))),
        mean_experiments=float(group["n_experiments"].mean()),
        mean_keeps=float(group["n_keeps"].mean()),
        claimed_gain=_mean(group["claimed_gain"]),
        verified_val=ranked.gains["val"][agent],
        verified_test=ranked.gains["test"][agent],
        noise_mining=_mean(both["claimed_gain"] - both["gain_val"]),
        val_overfit=_mean(val_test["gain_val"] - val_test["gain_test"]),
        rank=ranked.ranks.get(agent),
        failed_runs=int(group["failed_runs"].fillna(0).sum()),
        final_runs=int(group["final_runs"].fillna(0).sum()),
        excluded_pairs=int(group["excluded_pairs"].fillna(0).sum()),
        beats=ranked.beats.get(agent, ()),
        resolution=ranked.resolution,
        null=null_model.null_gain(group["n_draws"][group["claimed_gain"].notna()].to_numpy(), noise) if noise
        else None,
    )


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else float("nan")


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value
