"""noop: re-runs the unchanged baseline every experiment (an empty commit each time), so its spread is pure noise."""

from __future__ import annotations

from agents.controls.protocol import Control, Proposal


class Noop(Control):
    def propose(self) -> Proposal:
        return Proposal(f"noop: re-run baseline ({self.rows})")
