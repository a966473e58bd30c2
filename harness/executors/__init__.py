"""Executors: where a run's jobs (harness/jobs.py) run. `local` (this host's slots) or `slurm` (submitit)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.config import ConfigError, RunConfig
from harness.executors.base import Executor
from harness.schedule import Slot


def make_executor(config: RunConfig, run_dir: Path, slots: list[Slot]) -> Executor:
    """The config's executor: the local pool on slots, or Slurm with its logs in <run_dir>/slurm/."""
    if config.executor == "slurm":
        from harness.executors.slurm import SlurmExecutor
        if shutil.which("sbatch") is None:
            raise ConfigError("executor slurm: this host has no sbatch (Slurm's client); submit from a Slurm login "
                              "node, or run with --executor local")
        return SlurmExecutor(run_dir / "slurm", config.slurm, config.run_id)
    from harness.executors.local import LocalExecutor
    return LocalExecutor(slots)
