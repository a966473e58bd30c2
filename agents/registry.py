"""Every agent a run config can name, and how the harness starts it in a sandbox.

An adapter says how to start the agent on a workspace and what to record about it; the harness
does the rest (sandbox, budget, collection). Controls are scripted agents that follow program.md
themselves (agents/controls); LLM agents (Claude Code, Codex, ...) plug in here with their own adapters.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownAgent(ValueError):
    pass


@dataclass(frozen=True)
class ControlAdapter:
    """A non-LLM reference agent: `python -m agents.controls NAME` inside the sandbox."""

    name: str

    def command(self, max_experiments: int, seed: int) -> list[str]:
        argv = ["python", "-m", "agents.controls", self.name, "--seed", str(seed)]
        if max_experiments:
            argv += ["--max-experiments", str(max_experiments)]
        return argv

    def describe(self) -> dict[str, str]:
        return {"agent": self.name, "kind": "control", "model": "none"}


def known_agents() -> list[str]:
    from agents.controls import CONTROLS

    return sorted(CONTROLS)


def get_agent(name: str) -> ControlAdapter:
    if name not in known_agents():
        raise UnknownAgent(f"unknown agent {name!r}; known: {', '.join(known_agents())}")
    return ControlAdapter(name)
