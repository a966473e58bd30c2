"""The adapter of every control: `python -m agents.controls KIND --seed S [--max-experiments N]` in the sandbox.

A control needs nothing in the image beyond python and git, gets no environment of its own and no gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.base import Agent, Start


@dataclass(frozen=True)
class ControlAgent(Agent):
    knows_budget: bool = True   # told the experiment cap (--max-experiments); false: it runs until the harness stops it

    def __post_init__(self):
        if not isinstance(self.knows_budget, bool):
            raise ValueError(f"knows_budget must be true or false, got {self.knows_budget!r}")

    def command(self, start: Start) -> list[str]:
        argv = ["python", "-m", "agents.controls", self.kind, "--seed", str(start.seed)]
        if self.knows_budget and start.max_experiments:
            argv += ["--max-experiments", str(start.max_experiments)]
        return argv
