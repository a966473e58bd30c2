"""A real single-node Slurm (Debian slurm-wlm, munge, slurmctld, slurmd; two fake GPUs), started by .ci/slurm.sh:
the tests skip with its reason where it cannot start (not root, no apt), and fail under CI=true, where it must."""

from __future__ import annotations

import os
import subprocess

import pytest

from harness.runtime.images import PROJECT_ROOT


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    setup = subprocess.run(["bash", str(PROJECT_ROOT / ".ci" / "slurm.sh")], capture_output=True, text=True,
                           timeout=600)
    if setup.returncode != 0:
        reason = (setup.stderr.strip().splitlines() or [f"exit {setup.returncode}"])[-1]
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but Slurm did not start: {reason}")
        pytest.skip(f"no Slurm: {reason}")
