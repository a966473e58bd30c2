"""Hyperparameter search controls over train.py's `NAME = value` block (space in hyperparams.py).

random: every experiment samples a whole configuration from the space (random search).
greedy: every experiment perturbs one or two values of the current best train.py (hill climbing);
        the protocol's keep/revert makes HEAD the current best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.controls.hyperparams import Param, perturb, read_hyperparameters, sample, search_space, write_hyperparameters
from agents.controls.protocol import Control, Proposal


class HyperparameterControl(Control):
    def __init__(self, workspace: Path, seed: int = 0, max_experiments: int | None = None):
        super().__init__(workspace, seed, max_experiments)
        self.space: list[Param] = search_space(read_hyperparameters(self.read("train.py")), self.max_seq_len)

    def proposal(self, tag: str, values: dict[str, Any]) -> Proposal:
        description = f"{tag}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        return Proposal(description, {"train.py": write_hyperparameters(self.read("train.py"), values)}, values)


class RandomSearch(HyperparameterControl):
    def propose(self) -> Proposal:
        return self.proposal("random", {p.name: sample(p, self.rng) for p in self.space})


class Greedy(HyperparameterControl):
    def propose(self) -> Proposal:
        current = read_hyperparameters(self.read("train.py"))
        params = self.rng.sample(self.space, k=min(len(self.space), self.rng.choice((1, 2))))
        return self.proposal("greedy", {p.name: perturb(p, current[p.name], self.rng) for p in params})
