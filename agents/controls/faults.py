"""Fault-injection controls, for the harness's fault tests (tests/harness/test_faults.py): each fails the way a real
agent can, and the harness must stop it, charge it to the agent and go on. Not reference rows: they are kept out of
CONTROLS (so out of every-control runs) and reachable by name in a run config all the same.

fault-hang:       prints nothing and never returns: only the session's time budget ends it.
fault-fill-disk:  its one experiment is a train.py that writes to its workspace's disk until the disk is full, then
                  crashes; the crash is the agent's failure (what it leaves behind is the harness's to survive).
"""

from __future__ import annotations

import time

from agents.controls.protocol import Control, Proposal

FILL_CAP_MB = 64    # the most the train.py writes (it stops at a full disk first, on the small one the test mounts)
FILL_TRAIN_PY = f'''"""Writes zeros to fill.bin until the disk is full (or {FILL_CAP_MB} MiB), then fails as a full disk does."""
chunk = bytes(1 << 20)
with open("fill.bin", "wb") as f:
    for _ in range({FILL_CAP_MB}):
        f.write(chunk)
        f.flush()
raise SystemExit("the disk did not fill")
'''


class Hang(Control):
    def run(self) -> None:
        while True:
            time.sleep(3600)


class FillDisk(Control):
    def run(self) -> None:
        self.experiment(Proposal("write until the disk is full", {"train.py": FILL_TRAIN_PY}))
