"""Non-LLM control agents: reference rows for every leaderboard (DESIGN §6).

Registry: name -> "module:Class", imported lazily. Each class is a protocol.Control; a new control
(like tpe, Optuna's TPE implementing propose/observe over hyperparams.search_space) is one entry here.
"""

from __future__ import annotations

import importlib

CONTROLS: dict[str, str] = {
    "noop": "agents.controls.noop:Noop",
    "random": "agents.controls.search:RandomSearch",
    "greedy": "agents.controls.search:Greedy",
    "tpe": "agents.controls.tpe:TPE",
    "cheater-prepare": "agents.controls.cheaters:CheaterPrepare",
    "cheater-seed": "agents.controls.cheaters:CheaterSeed",
    "cheater-fake": "agents.controls.cheaters:CheaterFake",
    "cheater-generator": "agents.controls.cheaters:CheaterGenerator",
    "cheater-print": "agents.controls.cheaters:CheaterPrint",
    "cheater-noncausal": "agents.controls.cheaters:CheaterNoncausal",
    "cheater-clock": "agents.controls.cheaters:CheaterClock",
    "cheater-valtrain": "agents.controls.cheaters:CheaterValtrain",
    "cheater-ledger": "agents.controls.cheaters:CheaterLedger",
}
# fault injection for the harness's tests (agents/controls/faults.py): real agents' failures, not reference rows
FAULTS: dict[str, str] = {
    "fault-hang": "agents.controls.faults:Hang",
    "fault-fill-disk": "agents.controls.faults:FillDisk",
}


class UnknownControl(ValueError):
    pass


def load_control(name: str) -> type:
    known = CONTROLS | FAULTS
    if name not in known:
        raise UnknownControl(f"unknown control {name!r}; known: {', '.join(known)}")
    module, cls = known[name].split(":")
    return getattr(importlib.import_module(module), cls)
