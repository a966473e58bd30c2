"""`make bench`: how long one cpu-tiny experiment takes, where the time goes, and what it reaches.

Runs the baseline train.py the way an agent does (`python train.py`, seeded through bench's
sitecustomize) in a fresh workspace, a few times, and prints per experiment: wall seconds split into
startup (process start to the first step), training (first to last step, warm-up steps included;
`counted` is the budgeted training time train.py reports), eval (last step to the summary), tokens
per second over the counted steps, and val_bpb; plus the val_bpb of the untrained model; then the container's,
the LLM gateway's, verification's and trusted scoring's costs. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.launch import parse_summary
from bench.profile import Profile, load_profile
from harness.benchmark_docker import report as report_container_overhead
from harness.benchmark_gateway import report as report_gateway_overhead
from harness.benchmark_scheduling import report as report_scheduling_overhead
from harness.data import DataMissing, require_prepared
from harness.runtime.process import SITECUSTOMIZE_DIR
from harness.workspace import task_files
TOK_PER_SEC = re.compile(r"tok/sec: ([\d,]+)")


@dataclass(frozen=True)
class Timing:
    wall: float
    startup: float
    training: float
    eval: float
    tokens_per_second: float   # median over the counted steps (after the 11 warm-up steps)
    summary: dict[str, float]


def step_limited(train_py: str, steps: int) -> str:
    """train.py that trains exactly `steps` steps (0: evaluates the untrained model), schedules driven by
    step / steps instead of time: reproducible runs, for tests and for the untrained reference."""
    replacements = [
        ("\nwhile True:\n", f"\nwhile step < {steps}:\n"),
        ("progress = min(total_training_time / TIME_BUDGET, 1.0)", f"progress = min(step / {max(steps, 1)}, 1.0)"),
        ("if step > 10 and total_training_time >= TIME_BUDGET:", "if False:"),
    ]
    for old, new in replacements:
        if train_py.count(old) != 1:
            raise ValueError(f"train.py does not have exactly one {old.strip()!r}")
        train_py = train_py.replace(old, new)
    return train_py


def write_workspace(dest: Path, profile: Profile, train_py: str | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in task_files(profile).items():
        (dest / name).write_text(text)
    if train_py is not None:
        (dest / "train.py").write_text(train_py)
    return dest


def timed_run(workspace: Path, data_dir: Path, seed: int) -> Timing:
    """Run `python train.py` in workspace, timestamping each output line as it arrives."""
    env = dict(os.environ, ARBENCH_DATA_DIR=str(data_dir), ARBENCH_SEED=str(seed), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(SITECUSTOMIZE_DIR), os.environ.get("PYTHONPATH")])))
    env.pop("ARBENCH_PROFILE", None)   # the workspace's profile.toml decides, as in a session
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=workspace, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines: list[tuple[float, str]] = []   # (seconds since start, line); step lines end in \r, not \n
    pending = b""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        now = time.monotonic() - start
        *complete, pending = re.split(rb"[\r\n]", pending + chunk)
        lines += [(now, part.decode(errors="replace")) for part in complete if part.strip()]
    proc.wait()
    wall = time.monotonic() - start
    output = "\n".join(text for _, text in lines)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed (exit {proc.returncode}):\n{output[-2000:]}")
    steps = [(t, text) for t, text in lines if text.startswith("step ")]
    summary_at = next(t for t, text in lines if text.strip() == "---")
    first, last = (steps[0][0], steps[-1][0]) if steps else (summary_at, summary_at)
    rates = sorted(float(m.group(1).replace(",", "")) for _, text in steps[11:] if (m := TOK_PER_SEC.search(text)))
    return Timing(wall=wall, startup=first, training=last - first, eval=summary_at - last,
                  tokens_per_second=rates[len(rates) // 2] if rates else float("nan"), summary=parse_summary(output))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-tiny")
    parser.add_argument("--runs", type=int, default=3, help="experiments to time (default 3)")
    parser.add_argument("--analysis", action="store_true", help="only the analysis cost (no training)")
    parser.add_argument("--store", action="store_true", help="only `arbench check` and the resume scan on a "
                                                             "generated store of 10,000 sessions (no training)")
    args = parser.parse_args(argv)
    if args.store:
        report_store_cost()
        return
    if args.analysis:
        report_analysis_cost()
        return
    profile = load_profile(args.profile)
    try:
        data = require_prepared(profile)
    except DataMissing:
        subprocess.run([sys.executable, "-m", "bench.prepare", "--profile", args.profile], check=True)
        data = require_prepared(profile)
    print(f"profile {profile.name} ({profile.hash}): budget {profile.time_budget:.0f}s, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        workspace = write_workspace(Path(tmp) / "ws", profile)
        untrained = timed_run(write_workspace(Path(tmp) / "untrained", profile,
                                              step_limited(task_files(profile)["train.py"], 0)), data.data_dir, 0)
        print(f"untrained model: val_bpb {untrained.summary['val_bpb']:.4f}")
        header = f"{'run':>3} {'wall_s':>7} {'startup':>7} {'train':>6} {'counted':>7} {'eval':>5} {'tok/s':>8} {'steps':>5} {'val_bpb':>8}"
        print(header)
        timings = []
        for seed in range(args.runs):
            t = timed_run(workspace, data.data_dir, seed)
            timings.append(t)
            print(f"{seed:>3} {t.wall:7.1f} {t.startup:7.1f} {t.training:6.1f} {t.summary.get('training_seconds', 0):7.1f} "
                  f"{t.eval:5.1f} {t.tokens_per_second:8.0f} {t.summary.get('num_steps', 0):5.0f} {t.summary['val_bpb']:8.4f}")
    bpbs = [t.summary["val_bpb"] for t in timings]
    spread = f" ± {statistics.stdev(bpbs):.4f}" if len(bpbs) > 1 else ""
    print(f"mean: wall {statistics.mean(t.wall for t in timings):.1f}s, val_bpb {statistics.mean(bpbs):.4f}{spread} "
          f"(untrained {untrained.summary['val_bpb']:.4f})")
    report_container_overhead()
    report_gateway_overhead()
    report_scheduling_overhead()
    report_verification_cost(profile, data)
    report_trusted_scoring_cost(profile, data)
    report_analysis_cost()


def report_verification_cost(profile: Profile, data, seeds: int = 3, sessions=(1, 10, 100)) -> None:
    """Verification cost per session, in trainings and seconds, before pairing (the baseline's K held-out runs
    shared by S sessions: (K + S*K) / S) and after (a baseline-final pair per seed, back to back: 2K, plus
    re-runs of drifting pairs); seconds per training measured on one real pair of this profile."""
    from harness.runtime import get_runtime
    from harness.verify import Verifier

    train_py = task_files(profile)["train.py"].encode()
    with tempfile.TemporaryDirectory() as tmp:
        verifier = Verifier(Path(tmp), profile, data, get_runtime("process"), (0,), ("val", "test"))
        start = time.monotonic()
        pair = verifier.pair(train_py, train_py + b"\n# an edit\n", 0)
        wall = time.monotonic() - start
    trainings = sum(len(a.runs) for a in pair.attempts)
    per = wall / trainings
    print(f"verification: {per:.1f}s per trusted training ({trainings} for one pair: {len(pair.attempts)} attempt(s), "
          f"pair {pair.status}); per session, K = {seeds} held-out seeds:")
    for s in sessions:
        before, after = seeds * (1 + s) / s, 2 * seeds
        print(f"  S = {s:>3} sessions: before pairing {before:4.1f} trainings ({before * per:5.0f}s), "
              f"after {after} ({after * per:5.0f}s, x{after / before:.1f})")


def report_trusted_scoring_cost(profile: Profile, data, steps: int = 3) -> None:
    """Trusted scoring in the launcher's own process (bench.trusted_eval: inputs and logits through shared
    memory, causality re-runs included) against prepare.evaluate_bpb inside train.py's process, on the val
    split of a step-limited train.py: seconds per evaluation, and bytes through shared memory per scored token."""
    from bench.contracts import RunOutcome

    call = "    val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)\n"
    timed = step_limited(task_files(profile)["train.py"], steps).replace(
        call, "    _t0 = time.perf_counter()\n" + call + '    print(f"in-process eval: {time.perf_counter() - _t0:.3f}")\n')
    env = {k: v for k, v in os.environ.items() if k != "ARBENCH_PROFILE"} | \
        {"ARBENCH_DATA_DIR": str(data.data_dir), "ARBENCH_TEST_DIR": str(data.test_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = write_workspace(Path(tmp) / "ws", profile, timed)
        for name, options in (("plain", []), ("trusted", ["--trusted", "val"])):
            subprocess.run([sys.executable, "-m", "bench.launch", "--seed", "0", "--result", f"{name}.json",
                            "--log", f"{name}.log", *options, "train.py"], cwd=workspace, env=env, check=True,
                           capture_output=True)
        in_process = float(re.search(r"in-process eval: ([\d.]+)", (workspace / "plain.log").read_text()).group(1))
        checks = RunOutcome.from_json((workspace / "trusted.json").read_text()).checks
    seq_len, vocab, batch = profile.task["max_seq_len"], profile.task["vocab_size"], profile.train["DEVICE_BATCH_SIZE"]
    rows = profile.task["eval_tokens"] // seq_len
    forwards = -(-rows // batch) + checks["causal_cuts"] // batch
    moved = forwards * batch * seq_len * (8 + 4 * vocab) / (rows * seq_len)   # int64 inputs in, float32 logits out
    print(f"trusted scoring (val, {rows} rows of {seq_len}): out of process {checks['eval_seconds']:.2f}s "
          f"({forwards} forward passes, {checks['causal_cuts']} causal cuts) vs in process {in_process:.2f}s "
          f"({-(-rows // batch)} passes, no causality check), x{checks['eval_seconds'] / in_process:.1f}; "
          f"{moved:,.0f} bytes through shared memory per scored token")


def report_analysis_cost(n_sessions: int = 10_000, n_seeds: int = 5, n_agents: int = 5, n_rows: int = 20) -> None:
    """Analysis of n_sessions sessions × n_seeds held-out seeds × 2 splits (synthetic tables, noop among the agents,
    n_rows results.tsv rows per session): the model's point estimates and fit, the loop noise, the whole analysis
    (intervals, Holm family, ranks, resolution, claims and the null), loop quality, the bootstrap of the summaries."""
    import numpy as np
    import pandas as pd

    from harness import loop_quality, model, null_model, summaries
    from harness.analyze import SPLITS, Tables, analyze, model_data, scored_pairs
    from leaderboards.markdown import render_markdown

    rng = np.random.default_rng(0)
    sid = np.array([f"s{i}" for i in range(n_sessions)])
    agent = np.array(["noop"] + [f"agent{i}" for i in range(1, n_agents)])[np.arange(n_sessions) % n_agents]
    per = n_seeds * 2 * len(SPLITS)
    role = np.tile(np.repeat(["baseline", "final"], n_seeds * len(SPLITS)), n_sessions)
    v = pd.DataFrame(dict(session_id=np.repeat(sid, per), agent=np.repeat(agent, per), role=role,
                          split=np.tile(np.repeat(list(SPLITS), n_seeds), 2 * n_sessions),
                          seed=np.tile(np.arange(n_seeds), 2 * len(SPLITS) * n_sessions),
                          bpb=2 + 0.01 * rng.normal(size=n_sessions * per), status="ok", pair_status="ok",
                          untrained_bpb=10.0))
    v["train_py_hash"] = np.where((v["role"] == "baseline") | (v["agent"] == "noop"), "base", v["session_id"])
    e = pd.DataFrame(dict(session_id=np.repeat(sid, n_rows), agent=np.repeat(agent, n_rows),
                          idx=np.tile(np.arange(n_rows), n_sessions),
                          claimed_val_bpb=2 + 0.01 * rng.normal(size=n_sessions * n_rows),
                          status=rng.choice(["keep", "discard", "crash"], n_sessions * n_rows), training_seconds=1.0))
    s = pd.DataFrame(dict(session_id=sid, agent=agent, profile="bench", profile_hash="h", wall_seconds=60.0))
    tables = Tables(s, e, v, pd.DataFrame())
    agents = list(dict.fromkeys(agent))
    laps = [time.perf_counter()]

    def lap() -> float:
        laps.append(time.perf_counter())
        return laps[-1] - laps[-2]

    pairs = scored_pairs(tables)
    pairs["agent"] = pd.Series(agent, index=sid).reindex(pairs["session_id"]).to_numpy()
    for split in SPLITS:
        model.fit(*model_data(pairs[pairs["split"] == split], agents))
    fit_s = lap()
    noise = null_model.loop_noise(tables)
    noise_s = lap()
    render_markdown(analyze(tables, noise=noise), noise)
    whole_s = lap()
    loop_quality.markdown(tables, "h", noise)
    quality_s = lap()
    summaries.markdown(tables, "h", noise)
    bootstrap_s = lap()
    print(f"analysis of {n_sessions:,} sessions × {n_seeds} seeds × {len(SPLITS)} splits ({n_agents} agents, "
          f"{n_rows} results.tsv rows each): point estimates and model fit {fit_s:.2f}s; loop noise {noise_s:.2f}s; "
          f"whole analysis and table (intervals, Holm family, ranks, resolution, claims, null) {whole_s:.2f}s; "
          f"loop quality {quality_s:.2f}s; summaries ({summaries.REPS} stratified bootstrap replicates) "
          f"{bootstrap_s:.2f}s")



# ---------------------------------------------------------------------------
# The store at scale: `arbench check` and the resume scan on a generated run
# ---------------------------------------------------------------------------

STORE_AGENTS = ("noop", "random", "greedy", "agent3", "agent4")


def write_store(run_dir: Path, n_sessions: int, seeds: tuple[int, ...] = (1000, 1001, 1002), n_rows: int = 5,
                distinct_finals: int = 10) -> list[str]:
    """A finished run of n_sessions synthetic sessions (no training), written directly: run.json, complete session
    folders, a verification cache of `distinct_finals` final train.py files × seeds (sessions share them, as
    sessions with identical finals do) and tables/; returns the session ids."""
    import json

    from harness.store import build_tables
    from harness.workspace import sha256_bytes

    profile = load_profile("cpu-tiny")
    repeats = -(-n_sessions // len(STORE_AGENTS))
    ids = [f"{agent}-r{r}" for agent in STORE_AGENTS for r in range(repeats)][:n_sessions]
    baseline = task_files(profile)["train.py"].encode()
    finals = [baseline + f"\n# edit {n}\n".encode() for n in range(distinct_finals)]
    hashes = [sha256_bytes(f)[:16] for f in [baseline, *finals]]

    def put(path: Path, data) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    put(run_dir / "run.json", {"run_id": "store", "config": {
        "agents": [{"name": a, "kind": a, "params": {}} for a in STORE_AGENTS], "repeats": repeats,
        "budget": {"seconds": 60.0, "experiments": n_rows}, "verify_seeds": list(seeds), "parallel": 1, "gpus": [],
        "profile": {"name": profile.name, "hash": profile.hash, "task": profile.task}}})
    for n, final in enumerate(finals):
        for seed in seeds:
            folder = run_dir / "cache" / profile.hash / "pairs" / f"{hashes[0]}-{hashes[n + 1]}" / f"seed-{seed}"
            runs = {role: {"role": role, "train_py_hash": h, "seed": seed, "status": "ok"}
                    for role, h in (("baseline", hashes[0]), ("final", hashes[n + 1]))}
            put(folder / "pair.json", {"baseline_hash": hashes[0], "final_hash": hashes[n + 1], "seed": seed,
                                       "status": "ok", "attempts": [{"order": list(runs), "runs": runs, "drift": []}]})
            for role, source in (("baseline", baseline), ("final", final)):
                (folder / "attempt-1" / role).mkdir(parents=True)
                (folder / "attempt-1" / role / "train.py").write_bytes(source)
                (folder / "attempt-1" / role / "profile.toml").write_text(profile.to_toml())
    for i, sid in enumerate(ids):
        folder = run_dir / "sessions" / sid
        agent = sid.rsplit("-r", 1)[0]
        put(folder / "session.json", {"session_id": sid, "run_id": "store", "agent": agent, "status": "done",
                                      "stage": "done", "message": "", "started_at": 0.0, "ended_at": 60.0,
                                      "wall_seconds": 60.0, "n_experiments": n_rows, "budget_seconds": 60.0,
                                      "profile_hash": profile.hash, "dollars": 0.0})
        put(folder / "manifest.json", {"agent": {"kind": agent}, "host": "node0", "profile_hash": profile.hash})
        put(folder / "experiments.json", [{"idx": k, "commit": f"{i:07x}{k}", "claimed_val_bpb": 2.0 - 0.01 * k,
                                           "status": "keep"} for k in range(n_rows)])
        put(folder / "findings.json", [])
        final_hash = hashes[1 + i % distinct_finals]
        put(folder / "verification.json", {"runs": [
            {"role": role, "train_py_hash": h, "seed": seed, "split": split, "bpb": 2.0, "status": "ok",
             "pair_status": "ok"}
            for role, h in (("baseline", hashes[0]), ("final", final_hash)) for seed in seeds
            for split in ("val", "test")]})
    build_tables(run_dir)
    return ids


def report_store_cost(n_sessions: int = 10_000) -> None:
    """`arbench check` (harness/check.py) and the resume scan (harness/lease.py scan_sessions) on a generated
    store of n_sessions finished sessions: seconds."""
    from harness.check import check_store
    from harness.lease import scan_sessions

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        start = time.perf_counter()
        ids = write_store(run_dir, n_sessions)
        written = time.perf_counter()
        problems = check_store(run_dir)
        checked = time.perf_counter()
        states = scan_sessions(run_dir, ids)
        scanned = time.perf_counter()
    print(f"store of {n_sessions:,} sessions (written in {written - start:.1f}s): arbench check "
          f"{checked - written:.2f}s ({len(problems)} problems), resume scan {scanned - checked:.2f}s "
          f"({sum(s == 'done' for s in states.values()):,} done)")

if __name__ == "__main__":
    main()
