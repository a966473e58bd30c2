"""Loop quality per session: how fast and how well an agent runs the keep/revert loop, beside what it found.

Per session, from the tables (harness/analyze.py Tables):
  experiments per hour   results.tsv rows (the baseline run included: it is a training run) per wall hour
  GPU duty cycle         training seconds / wall seconds: training_seconds of the ledger run matched to each row (what
                         train.py printed through the ledger, so the run's word; rows without a run add nothing, runs
                         the agent never logged are not seen), wall_seconds from session.json
  crash rate, keep rate  crashes per row; keeps per experiment after the baseline row
  excess area            mean over the experiments after the baseline of (best-so-far claimed gain − what a loop on
                         pure noise would have by then, σ·E[max of d+1 normals] after d runs with a val_bpb; σ the
                         loop noise of harness/null_model.py, σ̂/c4): > 0 when the loop climbs faster than
                         noise-mining alone. Best so far: baseline row − the lowest kept val_bpb (baseline included)
  keep replication       verification re-runs the baseline and the FINAL train.py only (the last kept commit, every
                         keep of the session in it), so this is defined on what is verified: a session with at least
                         one keep and a final that differs from the baseline has one verified kept commit; it
                         replicates when its verified val gain on the held-out seeds is > 0 by a one-sided paired
                         t-test at REPLICATION_ALPHA (failed runs scored as the untrained model). A loop on pure noise
                         replicates at rate ≈ α.
  dollars, tokens        the LLM gateway's totals in session.json (NaN where the gateway metered nothing: controls),
                         per replicated kept commit at the agent level.
Does not cover time to reach a threshold or early stops, nor verifying every kept commit (the verifier does not yet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness import stats as arstats
from harness.null_model import LoopNoise, c4, loop_noise

REPLICATION_ALPHA = 0.05
LEVEL = 0.95
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class LoopQuality:
    session_id: str
    agent: str
    profile_hash: str
    n_runs: int                  # results.tsv rows, the baseline's included
    n_experiments: int           # rows after the baseline row
    n_crashes: int
    n_keeps: int                 # keeps after the baseline row
    wall_seconds: float
    training_seconds: float      # Σ over rows of the matched run's training_seconds
    experiments_per_hour: float
    duty_cycle: float            # training seconds / wall seconds
    crash_rate: float
    keep_rate: float             # NaN without experiments after the baseline
    excess_area: float           # bpb; NaN without a baseline val_bpb, experiments or σ
    kept_verified: bool          # a kept commit (the final) was verified on held-out seeds
    replicated: bool             # ... and its val gain replicated (one-sided paired t, REPLICATION_ALPHA)
    dollars: float               # NaN when the gateway metered nothing
    tokens: float


@dataclass(frozen=True)
class AgentLoopQuality:
    profile_hash: str
    agent: str
    n_sessions: int
    experiments_per_hour: float   # Σ runs / Σ wall hours
    duty_cycle: float             # Σ training s / Σ wall s
    crash_rate: float             # Σ crashes / Σ runs
    keep_rate: float              # Σ keeps / Σ experiments after the baseline
    excess_area: float            # mean over sessions, with a t-interval
    excess_low: float
    excess_high: float
    kept_verified: int
    replicated: int
    replication_low: float        # Clopper–Pearson interval of replicated / kept_verified
    replication_high: float
    dollars_per_verified: float   # Σ dollars / replicated kept commits (inf when none replicated, NaN unmetered)
    tokens_per_verified: float


def loop_quality(tables, noise: dict[str, LoopNoise], profile_hash: str | None = None) -> list[LoopQuality]:
    """One LoopQuality per session that has results.tsv rows (of one profile when profile_hash is given), by id."""
    frame = session_frame(tables, noise, profile_hash)
    return [LoopQuality(*row) for row in frame.itertuples(index=False, name=None)]


def session_frame(tables, noise: dict[str, LoopNoise], profile_hash: str | None = None) -> pd.DataFrame:
    """The LoopQuality fields as a frame, one row per session, computed column-wise (10,000 sessions in well under
    a second)."""
    sessions = tables.sessions.reindex(columns=["session_id", "agent", "profile_hash", "wall_seconds", "requests",
                                                "dollars", *TOKEN_COLUMNS]).drop_duplicates("session_id")
    sessions = sessions.set_index("session_id")
    rows = tables.experiments.reindex(columns=["session_id", "agent", "idx", "claimed_val_bpb", "status",
                                               "training_seconds"]).sort_values(["session_id", "idx"], kind="stable")
    profile = rows["session_id"].map(sessions["profile_hash"]).astype(object).fillna("?")
    if profile_hash is not None:
        rows, profile = rows[profile == profile_hash], profile[profile == profile_hash]
    per = _per_session(rows, profile, noise)
    info = sessions.reindex(per.index)
    metered = pd.to_numeric(info["requests"], errors="coerce").fillna(0) > 0
    wall = pd.to_numeric(info["wall_seconds"], errors="coerce")
    tokens = sum(pd.to_numeric(info[c], errors="coerce").fillna(0.0) for c in TOKEN_COLUMNS)
    replicated = _replication(tables).reindex(per.index)
    verified = replicated.notna() & (per["n_keeps"] > 0)
    return pd.DataFrame({
        "session_id": per.index, "agent": info["agent"].astype(object).fillna(per["agent"]).to_numpy(),
        "profile_hash": per["profile_hash"].to_numpy(), "n_runs": per["n_runs"].to_numpy(),
        "n_experiments": per["n_experiments"].to_numpy(), "n_crashes": per["n_crashes"].to_numpy(),
        "n_keeps": per["n_keeps"].to_numpy(), "wall_seconds": wall.to_numpy(float),
        "training_seconds": per["training_seconds"].to_numpy(float),
        "experiments_per_hour": (per["n_runs"] / (wall / 3600.0)).to_numpy(float),
        "duty_cycle": (per["training_seconds"] / wall).to_numpy(float),
        "crash_rate": (per["n_crashes"] / per["n_runs"]).to_numpy(float),
        "keep_rate": (per["n_keeps"] / per["n_experiments"].where(per["n_experiments"] > 0)).to_numpy(float),
        "excess_area": per["excess_area"].to_numpy(float), "kept_verified": verified.to_numpy(bool),
        "replicated": (verified & replicated.fillna(False).astype(bool)).to_numpy(bool),
        "dollars": pd.to_numeric(info["dollars"], errors="coerce").where(metered).to_numpy(float),
        "tokens": tokens.where(metered).to_numpy(float),
    }).astype({"n_runs": int, "n_experiments": int, "n_crashes": int, "n_keeps": int}).replace(
        {"experiments_per_hour": {np.inf: np.nan}, "duty_cycle": {np.inf: np.nan}})


def _per_session(rows: pd.DataFrame, profile: pd.Series, noise: dict[str, LoopNoise]) -> pd.DataFrame:
    """Counts, training seconds and excess area per session from its results.tsv rows (sorted by idx)."""
    session = rows["session_id"]
    first = ~session.duplicated()
    bpb = pd.to_numeric(rows["claimed_val_bpb"], errors="coerce")
    status = rows["status"]
    scored = (status != "crash") & (bpb > 0) & np.isfinite(bpb)
    kept = bpb.where(scored & ((status == "keep") | first), np.inf)
    best = kept.groupby(session).cummin()
    baseline = bpb.where(first & scored).groupby(session).transform("first")
    draws = (scored & ~first).astype(int).groupby(session).cumsum()
    sigma = profile.map({h: _unbiased(n) for h, n in noise.items()}).astype(float)
    null = sigma * arstats.null_spurious_gain(draws.to_numpy(), 1.0)
    excess = (baseline - best - null).where(~first)
    frame = pd.DataFrame({"agent": rows["agent"], "profile_hash": profile, "after": ~first, "crash": status == "crash",
                          "keep": (status == "keep") & ~first, "excess": excess,
                          "training": pd.to_numeric(rows["training_seconds"], errors="coerce").fillna(0.0)})
    per = frame.groupby(session, sort=True).agg(
        agent=("agent", "first"), profile_hash=("profile_hash", "first"), n_runs=("after", "size"),
        n_experiments=("after", "sum"), n_crashes=("crash", "sum"), n_keeps=("keep", "sum"),
        training_seconds=("training", "sum"), excess_area=("excess", "mean"))
    return per


def _unbiased(noise: LoopNoise) -> float:
    """The loop noise's σ̂/c4: unbiased for σ, as the null's mean uses it."""
    return float(noise.sigma.value) / float(c4(noise.sigma.df))


def _replication(tables) -> pd.Series:
    """session → its verified final replicates its val gain (one-sided paired t over held-out seeds, p <
    REPLICATION_ALPHA), for sessions whose final differs from the baseline (the verified kept commit)."""
    from harness.analyze import scored_pairs   # here: analyze imports this module
    pairs = scored_pairs(tables)
    val = pairs.loc[pairs["split"] == "val"].set_index("session_id")["diff"]
    if val.empty:
        return pd.Series(dtype=object)
    per = val.groupby(level="session_id").agg(["mean", "std", "count"])
    changed = (val != 0).groupby(level="session_id").any()
    p = one_sided_p(per["mean"].to_numpy(), per["std"].to_numpy(), per["count"].to_numpy())
    return pd.Series(np.where(np.isnan(p), None, p < REPLICATION_ALPHA), index=per.index, dtype=object)[changed]


def one_sided_p(mean: np.ndarray, sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """p of the paired t-test of H1 "mean difference > 0" from each sample's mean, SD and size (NaN below two; an
    SD of 0 gives 0 when the mean is positive, else 1)."""
    mean, sd, n = (np.asarray(a, dtype=float) for a in (mean, sd, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = stats.t.sf(mean / (sd / np.sqrt(n)), n - 1)
    p = np.where(sd > 0, p, np.where(mean > 0, 0.0, 1.0))
    return np.where(n >= 2, p, np.nan)


# ---------------------------------------------------------------------------
# Per agent
# ---------------------------------------------------------------------------

def by_agent(rows: list[LoopQuality], level: float = LEVEL) -> list[AgentLoopQuality]:
    """One AgentLoopQuality per (profile_hash, agent), in order of first appearance."""
    groups: dict[tuple[str, str], list[LoopQuality]] = {}
    for r in rows:
        groups.setdefault((r.profile_hash, r.agent), []).append(r)
    return [_aggregate(key, group, level) for key, group in groups.items()]


def _aggregate(key: tuple[str, str], rows: list[LoopQuality], level: float) -> AgentLoopQuality:
    def total(name: str) -> float:
        return float(sum(getattr(r, name) for r in rows if not math.isnan(getattr(r, name))))

    areas = np.array([r.excess_area for r in rows if not math.isnan(r.excess_area)])
    t = arstats.paired_t(areas, level) if areas.size else None
    verified, replicated = sum(r.kept_verified for r in rows), sum(r.replicated for r in rows)
    low, high = (stats.binomtest(replicated, verified).proportion_ci(level, "exact") if verified
                 else (math.nan, math.nan))
    metered = [r for r in rows if not math.isnan(r.dollars)]
    done = sum(r.replicated for r in metered)
    return AgentLoopQuality(
        profile_hash=key[0], agent=key[1], n_sessions=len(rows),
        experiments_per_hour=_ratio(total("n_runs"), total("wall_seconds") / 3600.0),
        duty_cycle=_ratio(total("training_seconds"), total("wall_seconds")),
        crash_rate=_ratio(total("n_crashes"), total("n_runs")),
        keep_rate=_ratio(total("n_keeps"), total("n_experiments")),
        excess_area=float(areas.mean()) if areas.size else math.nan,
        excess_low=float(t.low) if t else math.nan, excess_high=float(t.high) if t else math.nan,
        kept_verified=verified, replicated=replicated, replication_low=float(low), replication_high=float(high),
        dollars_per_verified=_per(sum(r.dollars for r in metered), done, bool(metered)),
        tokens_per_verified=_per(sum(r.tokens for r in metered), done, bool(metered)))


def _per(amount: float, count: int, metered: bool) -> float:
    if not metered:
        return math.nan
    return amount / count if count else math.inf


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

HEADER = ("| agent | sessions | experiments / h | GPU duty cycle | crash rate | keep rate | excess area [95% CI] "
          "| kept & verified: replicated [95% CI] | $ / replicated keep | tokens / replicated keep |")
LEGEND = (
    "*experiments / h*: results.tsv rows per wall hour; *GPU duty cycle*: training seconds (as each run's train.py "
    "printed them) / wall seconds; *excess area*: mean over experiments of best-so-far claimed gain minus what a loop "
    "on pure noise has after as many runs (bpb; > 0: faster than noise-mining); *replicated*: sessions whose "
    "verified kept commit (the final: verification re-runs only baseline and final) has a val gain > 0 on the "
    f"held-out seeds by a one-sided paired t-test at α = {REPLICATION_ALPHA} (pure noise replicates at ≈ α); "
    "*$ / tokens per replicated keep*: the LLM gateway's totals over the agent's metered sessions.")


def markdown(tables, profile_hash: str, noise: dict[str, LoopNoise] | None = None) -> list[str]:
    """The loop-quality table of one profile of the tables (harness/analyze.py Tables), with its legend; noise:
    null_model.loop_noise(tables) when the caller has it."""
    noise = loop_noise(tables) if noise is None else noise
    return render(by_agent(loop_quality(tables, noise, profile_hash)))


def render(rows: list[AgentLoopQuality]) -> list[str]:
    """A table of one profile's agents (rows from by_agent, already of one profile) and its legend."""
    if not rows:
        return []
    lines = ["Loop quality:", "", HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    lines += [_row(r) for r in rows]
    return lines + ["", LEGEND, ""]


def _row(r: AgentLoopQuality) -> str:
    area = "n/a" if math.isnan(r.excess_area) else (
        f"{_signed(r.excess_area)} [{_signed(r.excess_low)}, {_signed(r.excess_high)}]")
    replicated = (f"{r.replicated}/{r.kept_verified} ({r.replicated / r.kept_verified:.2f} "
                  f"[{r.replication_low:.2f}, {r.replication_high:.2f}])" if r.kept_verified else "n/a (none verified)")
    cells = [r.agent, str(r.n_sessions), _fixed(r.experiments_per_hour, 1), _fixed(r.duty_cycle, 2),
             _fixed(r.crash_rate, 2), _fixed(r.keep_rate, 2), area, replicated,
             _money(r.dollars_per_verified, "${:.2f}"), _money(r.tokens_per_verified, "{:,.0f}")]
    return "| " + " | ".join(cells) + " |"


def _money(x: float, fmt: str) -> str:
    if math.isnan(x):
        return "n/a (not metered)"
    return "∞ (none replicated)" if math.isinf(x) else fmt.format(x)


def _fixed(x: float, digits: int) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{round(x, 4) + 0.0:+.4f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and b > 0 and not math.isnan(b) else math.nan
