"""The leaderboard as markdown: per profile, its loop noise, the agents' table (harness/analyze.py's AgentSummary
rows), claimed vs null, pairwise P(A beats B), failures, what it can resolve, loop quality and rliable-style summaries,
the legend. The numbers are harness/analyze.py's; this module only writes them down (also for leaderboards/site.py).
"""

from __future__ import annotations

import math

from harness import loop_quality, null_model, power, summaries
from harness.analyze import (ALPHA, NOISE_AGENT, POWER, AgentSummary, Gain, Resolution, Tables, analyze,
                             with_columns)


HEADER = ("| agent | rank | sessions | experiments | keeps (null) | claimed gain | null gain [95th pct] "
          "| verified val [95% CI] | p val | verified test [95% CI] | p test | failed finals | noise-mining "
          "| val overfit |")
MAX_LISTED = 10  # flagged session ids listed under a table
MAX_MATRIX = 8   # agents beyond which P(A beats B) is listed for neighbours in the ranking only
LEGEND = (
    "Gains in bpb, baseline − final (positive = better than baseline). *claimed*: results.tsv, baseline "
    f"row − best kept row; {null_model.NULL_LEGEND}; *verified*: trusted re-runs of baseline and "
    "final train.py on held-out seeds, paired by seed, mean over sessions of each session's mean over seeds, "
    "from one model of every verified difference (agent fixed; session, seed and agent × seed random; each "
    "distinct training counted once, so a session whose final is the baseline adds a difference of exactly 0 "
    "and no noise) with generalized-pivot intervals; *p*: against the baseline, Holm-adjusted over every "
    "agent on val and test and every pair of agents on test (one family, family-wise α = "
    f"{ALPHA}); *failed finals*: share of final runs that crashed, gave NaN, timed out, broke a limit or were "
    "noncausal, each scored as the untrained model's bpb (a large loss), never dropped; *noise-mining* = "
    "claimed − verified val (selection on noisy runs, seed effect included); *val overfit* = verified val − "
    "verified test. ⚑ = sessions with integrity findings, kept in every mean. *rank*: by verified test gain; an "
    "agent's interval spans every agent it is not significantly different from in that family (an agent with "
    "one session is never significantly different); *P(A beats B)*: the model's probability that A's mean "
    "test gain exceeds B's."
)


def render_markdown(agent_rows: list[AgentSummary], noise: dict[str, null_model.LoopNoise] | None = None,
                    extra: dict[str, list[str]] | None = None) -> str:
    """A leaderboard section per profile: its loop noise (null_model.loop_noise), the agents' table, claimed vs null,
    pairwise P(A beats B), failures, what it can resolve, `extra[profile_hash]` (further fragments), the legend."""
    noise, extra = noise or {}, extra or {}
    if not agent_rows and not noise:
        return "No sessions to analyze.\n"
    hashes = list(dict.fromkeys([s.profile_hash for s in agent_rows] + list(noise)))
    parts = []
    for profile_hash in hashes:
        rows = [s for s in agent_rows if s.profile_hash == profile_hash]
        found = noise.get(profile_hash)
        name = found.profile if found else rows[0].profile
        parts += [f"## Profile {name} ({profile_hash})", "", null_model.noise_line(found), ""]
        if rows:
            parts += [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *map(_row, rows), ""]
            parts += _null_lines(rows) + _flagged_line(rows) + _verification_line(rows) + _beats_lines(rows)
            parts += _resolution_lines(rows)
        if extra.get(profile_hash):
            parts += [*extra[profile_hash], ""] if extra[profile_hash][-1] else extra[profile_hash]
    parts += [LEGEND, ""]
    return "\n".join(parts)


def _null_lines(rows: list[AgentSummary]) -> list[str]:
    """Claimed vs null: whose mean claimed gain is more than its loops would claim on pure noise (above the null's
    95th percentile), then what one session's null and the seed-σ bound add."""
    compared = [r for r in rows if r.null is not None and not math.isnan(r.claimed_gain)
                and not math.isnan(float(r.null.q95))]
    if not compared:
        return []
    above = [f"{r.agent} ({signed(r.claimed_gain)} > {signed(float(r.null.q95))})" for r in compared
             if r.claimed_gain > r.null.q95]
    within = [f"{r.agent} ({signed(r.claimed_gain)} ≤ {signed(float(r.null.q95))})" for r in compared
              if not r.claimed_gain > r.null.q95]
    line = (f"Claimed vs null: above the null's 95th percentile, more than noise-mining explains: "
            f"{', '.join(above) or 'none'}; within it, no more than noise-mining: {', '.join(within) or 'none'}.")
    spread = null_model.spread_line({r.agent: r.null for r in compared})
    return [line, "", spread, ""] if spread else [line, ""]


def _beats_lines(rows: list[AgentSummary]) -> list[str]:
    """P(row beats column) for the verified agents, * where the difference is significant."""
    ranked = [r for r in rows if r.rank is not None]
    if len(ranked) < 2 or not any(r.beats for r in ranked):   # none has two sessions: nothing to compare
        return []
    names = [r.agent for r in ranked]
    table = {r.agent: {other: (p, sig) for other, p, sig in r.beats} for r in ranked}
    if len(ranked) > MAX_MATRIX:
        cells = [f"{a} over {b} {prob(*table[a].get(b, (math.nan, False)))}" for a, b in zip(names, names[1:])]
        return [f"P(A beats B) for neighbours in the ranking: {'; '.join(cells)}.", ""]
    head = "| P(row beats column) | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for a in names:
        cells = ["—" if a == b else prob(*table[a].get(b, (math.nan, False))) for b in names]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines + ["", "\\* significant after Holm (family-wise α = 0.05)." if any(
        sig for r in ranked for _, _, sig in r.beats) else "No pair of these agents differs significantly.", ""]


def prob(p: float, significant: bool) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2f}{'*' if significant else ''}"


def _flagged_line(rows: list[AgentSummary]) -> list[str]:
    flagged = [f"{sid} ({s.agent})" for s in rows for sid in s.flagged]
    if not flagged:
        return []
    more = f" and {len(flagged) - MAX_LISTED} more" if len(flagged) > MAX_LISTED else ""
    return [f"⚑ Flagged sessions: {', '.join(flagged[:MAX_LISTED])}{more}.", ""]


def _verification_line(rows: list[AgentSummary]) -> list[str]:
    counts = [f"{s.agent} {_count(s.failed_runs, 'failed final run')} of {s.final_runs} (scored as the untrained "
              f"model), {_count(s.excluded_pairs, 'excluded pair')} (drift or failed baseline)"
              for s in rows if s.failed_runs or s.excluded_pairs]
    return [f"Verification: {'; '.join(counts)}.", ""] if counts else []


def _resolution_lines(rows: list[AgentSummary]) -> list[str]:
    res = rows[0].resolution
    if res is None:
        return ["Resolution: n/a. No agent has two verified sessions that changed train.py, so this leaderboard "
                "cannot conclude anything about verified gains: no interval, no p-value, no agent told apart from the "
                "baseline or from another (every rank interval spans them all); its verified numbers are point "
                "estimates only. `arbench plan` says how many sessions and seeds would.", ""]
    line = (f"Resolution: with {res.n_sessions} sessions per agent and {res.n_seeds} held-out seeds (session SD "
            f"{num(res.session_sd)}, seed term {num(res.seed_sd)}, run noise {num(res.run_sd)}), Holm over "
            f"{res.tests} tests: a verified test gain over the baseline below {num(res.vs_baseline)}")
    if not math.isnan(res.between_agents):
        line += f" and a difference between two agents below {num(res.between_agents)}"
    line += f" is found with probability under {POWER} (α = {ALPHA} family-wise; `arbench plan` sizes a run)."
    return [line, "", _separation_line(rows, res), ""]


def _separation_line(rows: list[AgentSummary], res: Resolution) -> str:
    tested = [r for r in rows if r.rank is not None]
    if res.separated == 0:
        return ("These agents cannot be separated: no agent differs significantly from the baseline or from another "
                "agent; with these sessions and seeds, smaller differences than those above go unseen.")
    apart = sum(sig for r in tested for _, _, sig in r.beats) // 2
    pairs = len(tested) * (len(tested) - 1) // 2
    return f"{res.separated} of {res.tests} tests reject; {apart} of {pairs} pairs of agents are told apart."


def conclusion(rows: list[AgentSummary]) -> list[str]:
    """What one profile's leaderboard lets a reader conclude, and what not, in plain sentences (the site's front page):
    who verifies a gain over the baseline, which pairs are told apart, how many more sessions would separate the
    closest two."""
    ranked = [r for r in rows if r.rank is not None]
    res = rows[0].resolution if rows else None
    if not ranked or res is None:
        return ["Nothing can be concluded yet about verified gains: no agent has two verified sessions that changed "
                "train.py, so the numbers below are point estimates without intervals, and no agent is ranked above "
                "another."]
    better = [r.agent for r in ranked if r.verified_test.p_adjusted < ALPHA and r.verified_test.mean > 0]
    lines = [f"{', '.join(better)}: a verified test gain over the baseline (Holm-adjusted p < {ALPHA})." if better
             else "No agent's verified test gain is told apart from the baseline.", _separation_line(rows, res)]
    return lines + _closest_line(ranked, res)


def _closest_line(ranked: list[AgentSummary], res: Resolution) -> list[str]:
    """The neighbours in the ranking that are closest and not told apart, and the sessions per agent that would
    separate a difference of their size with probability POWER (harness/power.py, this board's variance components)."""
    beats = {(r.agent, other): (p, sig) for r in ranked for other, p, sig in r.beats}
    close = [(a.verified_test.mean - b.verified_test.mean, a, b) for a, b in zip(ranked, ranked[1:])
             if not beats.get((a.agent, b.agent), (math.nan, False))[1]]
    if not close:
        return ["Every pair of neighbours in the ranking is told apart."] if len(ranked) > 1 else []
    gap, a, b = min(close, key=lambda c: c[0])
    p = beats.get((a.agent, b.agent), (math.nan, False))[0]
    line = (f"The closest agents, {a.agent} and {b.agent}, are {num(gap)} bpb apart on test (P({a.agent} beats "
            f"{b.agent}) = {prob(p, False)}) and cannot be told apart here")
    needed = sessions_to_separate(res, len(ranked), gap)
    if needed is None:
        return [line + f"; no number of sessions up to {power.MAX_SESSIONS} per agent at {res.n_seeds} held-out seeds "
                "would separate a difference this size (more seeds might: `arbench plan`)."]
    more = max(needed - res.n_sessions, 0)
    return [line + f"; about {more} more sessions per agent ({needed} in all, at {res.n_seeds} held-out seeds) would "
            f"separate a difference this size with probability {POWER}."]


def sessions_to_separate(res: Resolution, agents: int, gap: float) -> int | None:
    """Sessions per agent at which two agents `gap` apart on test are told apart with probability POWER, at this
    leaderboard's seeds, variance components and family size; None when out of reach or not estimable."""
    def design(s: int) -> power.Design:
        return power.Design(s, res.n_seeds, res.session_sd, res.pair_seed_sd, res.run_sd, 2,
                            agents * (s - 1) * (res.n_seeds - 1), res.tests)
    if not gap > 0 or not math.isfinite(design(2).sd):
        return None
    return power.fewest_sessions(design, gap)


def _row(s: AgentSummary) -> str:
    sessions = f"{s.n_sessions} (⚑ {len(s.flagged)})" if s.flagged else str(s.n_sessions)
    keeps = "n/a" if s.null is None or math.isnan(s.null.keeps) else f"{s.null.keeps:.1f}"
    cells = [s.agent, rank_text(s), sessions, f"{s.mean_experiments:.1f}", f"{s.mean_keeps:.1f} ({keeps})",
             signed(s.claimed_gain), null_text(s), interval(s.verified_val), p_text(s.verified_val),
             interval(s.verified_test), p_text(s.verified_test), failed_text(s), signed(s.noise_mining),
             signed(s.val_overfit)]
    return "| " + " | ".join(cells) + " |"


def rank_text(s: AgentSummary) -> str:
    return "n/a" if s.rank is None else (str(s.rank[0]) if s.rank[0] == s.rank[1] else f"{s.rank[0]}–{s.rank[1]}")


def failed_text(s: AgentSummary) -> str:
    return "n/a" if not s.final_runs else f"{s.failure_rate:.0%} ({s.failed_runs}/{s.final_runs})"


def null_text(s: AgentSummary) -> str:
    return "n/a" if s.null is None or math.isnan(float(s.null.mean)) else (
        f"{signed(float(s.null.mean))} [{signed(float(s.null.q95))}]")


def interval(g: Gain) -> str:
    if g.note:
        return f"{signed(g.mean)} [n/a: {g.note}]" if g.n_sessions else f"n/a: {g.note}"
    return f"{signed(g.mean)} [{signed(g.ci_low)}, {signed(g.ci_high)}]"


def p_text(g: Gain) -> str:
    """The Holm-adjusted p-value; the raw one where the agent is not in the family (the baseline itself)."""
    p = g.p_value if math.isnan(g.p_adjusted) else g.p_adjusted
    return "n/a" if math.isnan(p) else f"{p:.3g}"


def signed(x: float) -> str:
    # round first so that -1e-17 prints as +0.0000, not -0.0000
    return "n/a" if math.isnan(x) else f"{round(x, 4) + 0.0:+.4f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def num(x: float, missing: str = "n/a") -> str:
    return missing if math.isnan(x) else f"{x:.4f}"


def leaderboard_markdown(tables: Tables, noise_agent: str = NOISE_AGENT) -> str:
    """The published leaderboard: render_markdown with, per profile, loop quality (harness/loop_quality.py) and the
    rliable-style summaries (harness/summaries.py) below the table; one loop noise (harness/null_model.py) for all."""
    tables = with_columns(tables)
    noise = null_model.loop_noise(tables, noise_agent)
    rows = analyze(tables, noise_agent, noise=noise)
    hashes = dict.fromkeys(r.profile_hash for r in rows)
    extra = {h: loop_quality.markdown(tables, h, noise) + summaries.markdown(tables, h, noise) + node_lines(tables, h)
             for h in hashes}
    return render_markdown(rows, noise, extra)


def node_lines(tables: Tables, profile_hash: str) -> list[str]:
    """The noise floor per node: σ of val_bpb over its calibration runs (harness/calibration.py), its steps in the
    budget and tokens/s."""
    nodes = tables.nodes
    ok = nodes[(nodes["profile_hash"] == profile_hash) & (nodes["status"] == "ok")]
    lines = [f"- node {node}: σ = {num(float(runs['val_bpb'].std()))} bpb over {len(runs)} calibration runs, "
             f"{runs['steps'].mean():.0f} steps, {runs['tokens_per_second'].mean():,.0f} tok/s"
             for node, runs in ok.groupby("node", sort=True)]
    return ["Noise floor per node:", "", *lines, ""] if lines else []
