"""tpe: Bayesian optimisation of train.py's hyperparameters with Optuna's TPE sampler, on the controls' ask/tell
seam: `propose` asks an in-memory study for a whole configuration of hyperparams.search_space, `observe` tells it
the val_bpb (a crash is a failed trial, which TPE leaves out of its model). The baseline's result is told as a
trial at HEAD's values, so the model starts from it. Seeded by the control's seed: one seed, one sequence.

The question it answers on every leaderboard: would plain BayesOpt, given the same budget, have done as well?
Floats are rounded to 4 significant digits before they are written (as the random control's are); TPE is told
the value it drew, at most 0.05% away from the one trained.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from agents.controls.hyperparams import Param, read_hyperparameters, snap
from agents.controls.protocol import Outcome, Proposal
from agents.controls.search import HyperparameterControl
from bench.contracts import ExperimentStatus

STARTUP_TRIALS = 8   # random configurations before TPE models the results (Optuna's default is 10)


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    d = optuna.distributions
    if param.kind == "log":
        return d.FloatDistribution(param.low, param.high, log=True)
    if param.kind == "uniform":
        return d.FloatDistribution(param.low, param.high)
    if param.kind == "int":
        return d.IntDistribution(int(param.low), int(param.high))
    return d.CategoricalDistribution(param.choices)


class TPE(HyperparameterControl):
    def __init__(self, workspace: Path, seed: int = 0, max_experiments: int | None = None):
        super().__init__(workspace, seed, max_experiments)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.distributions = {p.name: distribution(p) for p in self.space}
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)   # in memory: no storage
        self.trial: optuna.Trial | None = None

    def propose(self) -> Proposal:
        self.trial = self.study.ask(self.distributions)
        values = {p.name: self._written(p, self.trial.params[p.name]) for p in self.space}
        return self.proposal("tpe", values)

    @staticmethod
    def _written(param: Param, value: Any) -> Any:
        return snap(param, value) if param.kind in ("log", "uniform") else value

    def observe(self, proposal: Proposal, outcome: Outcome, status: ExperimentStatus) -> None:
        if self.trial is None:       # the baseline: HEAD's own values
            if outcome.val_bpb is not None:
                self._tell_baseline(outcome.val_bpb)
            return
        trial, self.trial = self.trial, None
        if outcome.val_bpb is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, outcome.val_bpb)

    def _tell_baseline(self, val_bpb: float) -> None:
        current = read_hyperparameters(self.read("train.py"))
        try:
            self.study.add_trial(optuna.trial.create_trial(
                params={name: current[name] for name in self.distributions}, distributions=self.distributions,
                value=val_bpb))
        except ValueError:           # a baseline value outside its own space (e.g. a batch size no choice holds)
            pass
