"""Container overhead per experiment: the same command in a fresh container of the CPU image (create,
start, log streamed to the host, wait, remove) and as a plain process, as a share of the training
budgets of cpu-tiny and h100. Verification pays this once per seed; an agent's session pays it once.

    .venv/bin/python -m harness.benchmark_docker [--repeats N]     (also printed by `make bench`)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.profile import load_profile
from harness.runtime import get_runtime
from harness.runtime.base import RuntimeError_, Sandbox, SandboxSpec

# the launcher's own start (its parent never imports torch); training itself costs the same in both
COMMAND = ["python", "-m", "bench.launch", "--help"]
PROFILES = ("cpu-tiny", "h100")


@dataclass(frozen=True)
class Overhead:
    process_s: float             # median seconds of COMMAND as a plain process
    docker_s: float              # median seconds of COMMAND in a fresh container
    budget_share: dict[str, float]   # (docker_s - process_s) / time budget, per profile

    @property
    def overhead_s(self) -> float:
        return self.docker_s - self.process_s


def exec_seconds(sandbox: Sandbox, log: Path) -> float:
    start = time.perf_counter()
    result = sandbox.exec(COMMAND, log, timeout_s=120)
    if result.exit_code != 0:
        raise SystemExit(f"error: {' '.join(COMMAND)} failed (exit {result.exit_code}); see {log}")
    return time.perf_counter() - start


def measure_container_overhead(repeats: int = 5) -> Overhead:
    """Median seconds per run, the two runtimes alternating so that load on the host hits both alike."""
    runtimes = [get_runtime("docker"), get_runtime("process")]
    seconds: dict[str, list[float]] = {r.name: [] for r in runtimes}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in runtimes:
            (Path(tmp) / runtime.name).mkdir()
        specs = [SandboxSpec(name=f"bench-overhead-{r.name}", workspace=Path(tmp) / r.name) for r in runtimes]
        with runtimes[0].open(specs[0]) as container, runtimes[1].open(specs[1]) as process:
            for i in range(repeats + 1):   # the first round warms caches and is dropped
                for name, sandbox in (("docker", container), ("process", process)):
                    took = exec_seconds(sandbox, Path(tmp) / f"{name}-{i}.log")
                    seconds[name] += [took] if i else []
    docker_s, process_s = statistics.median(seconds["docker"]), statistics.median(seconds["process"])
    share = {name: (docker_s - process_s) / load_profile(name).time_budget for name in PROFILES}
    return Overhead(process_s=process_s, docker_s=docker_s, budget_share=share)


def report(repeats: int = 5) -> None:
    """Print the overhead, or why it was not measured (no engine, no current image)."""
    try:
        o = measure_container_overhead(repeats)
    except RuntimeError_ as e:
        print(f"container overhead: not measured: {e}")
        return
    print(f"container overhead per experiment: {o.overhead_s:.2f} s "
          f"(fresh container {o.docker_s:.2f} s vs plain process {o.process_s:.2f} s, median of {repeats})")
    for name, share in o.budget_share.items():
        print(f"  {name:9s} budget {load_profile(name).time_budget:6.0f} s: {100 * share:6.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    report(parser.parse_args().repeats)


if __name__ == "__main__":
    main()
