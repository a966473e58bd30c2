"""The seam between the harness and an agent: what every agent adapter (controls included) says about itself, and
the registry of them (AGENTS: kind -> "module:Class", imported lazily; get_agent makes a run config's row).

An adapter is a frozen dataclass: `name` (the run config's row) and `kind` (its key in AGENTS) come from
the harness, every other field is a parameter a run config may set (`[agents.NAME] kind = "...", model = "..."`).
It says four things, and the harness does the rest (sandbox, budgets, gateway session, collection):
  image_needs   what it needs in the image beyond python and git (install steps); controls need nothing
  command()     the argv that starts it in its workspace (cwd), which holds program.md
  env()         its environment beyond the harness's own (data, run ledger, seed): for an agent that talks to a
                model, the LLM gateway's URL as its sandbox reaches it, its session token as the only API key,
                its model; controls get none of it
  leaves        what it leaves in the session folder for collection, beside its workspace
The budget is the harness's to enforce (harness/budget.py), never the agent's: an agent may be told the experiment
cap (Start.max_experiments), and nothing depends on its keeping to it.

A run config's row is an AgentSpec: its name, its kind and the adapter's parameters. `agents = ["noop"]` makes the
row noop of kind noop; `[agents.claude-sonnet] kind = "claude-code", model = "..."` makes a named row, so that two
models under one CLI are two rows. Controls are scripted agents that follow program.md themselves
(agents/controls); gateway-probe (agents/probe.py) only calls the LLM gateway, for tests and dry runs; LLM agents
(Claude Code, Codex, ...) plug in with their own adapters.

Imports only the standard library: agents/ imports bench/ and itself, never the harness that grades it.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from agents.controls import CONTROLS, FAULTS
from bench.contracts import gateway_env

AGENT_LOG = "agent.log"                             # everything the agent printed
GATEWAY_FILES = ("transcript.jsonl", "usage.json")  # what the gateway writes for the agent's session
CLIS_DIR = Path(__file__).resolve().parent / "clis"  # agents/clis/<cli>/package.json: each CLI's pinned npm package

# What every LLM agent is told, word for word, so that agents differ only in themselves: the original task's
# kick-off (a person asks the agent to read program.md and start), and the nudge when it stopped before its budget.
START_PROMPT = ("Have a look at program.md and let's kick off a new experiment. Do the setup first, then run the "
                "experiment loop on your own. NEVER STOP: keep experimenting until you are stopped from outside.")
CONTINUE_PROMPT = ("You stopped, but your budget is not spent. Do not ask, and do not summarise: continue the "
                   "experiment loop in program.md from where you are, and NEVER STOP.")


@dataclass(frozen=True)
class Start:
    """What the harness tells an agent when it starts it."""
    seed: int                      # the session's run seed (sitecustomize seeds every `python train.py` with it)
    max_experiments: int           # the session's experiment cap, 0 = none: for the agent's information only
    gateway_url: str | None = None  # the LLM gateway as the sandbox reaches it (gateway agents only)
    token: str | None = None       # the session's gateway token: the agent's only API key (gateway agents only)
    resume: int = 0                # 0 for the first start; n for the nth time the harness continued it


@dataclass(frozen=True)
class Agent(abc.ABC):
    name: str                      # the run config's row: the leaderboard's name for it
    kind: str                      # its key in AGENTS

    uses_gateway: ClassVar[bool] = False
    image_needs: ClassVar[tuple[str, ...]] = ()   # shell steps, as root, that install what it needs in the image
    leaves: ClassVar[tuple[str, ...]] = (AGENT_LOG,)   # files it leaves, relative to the session folder

    @abc.abstractmethod
    def command(self, start: Start) -> list[str]:
        """The argv that starts the agent in its workspace (the working directory)."""

    def continue_command(self, start: Start) -> list[str] | None:
        """The argv that continues the agent after it exited before its budget (CONTINUE_PROMPT, in its own
        conversation where it can); None: it is never continued (controls, probes)."""
        return None

    def env(self, start: Start) -> dict[str, str]:
        return {}

    def model_id(self) -> str | None:
        """The model it runs, priced by the gateway's table; None for an agent without one."""
        return None

    def parameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "kind")}

    def describe(self) -> dict[str, Any]:
        """For the session manifest."""
        return {"agent": self.name, "kind": self.kind, "model": self.model_id() or "none",
                "parameters": self.parameters(), "image_needs": list(self.image_needs), "leaves": list(self.leaves)}


@dataclass(frozen=True)
class GatewayAgent(Agent):
    """An agent that talks to a model through the LLM gateway: its requests are metered, capped and recorded."""
    model: str                     # a model id of the gateway's price table

    uses_gateway: ClassVar[bool] = True
    leaves: ClassVar[tuple[str, ...]] = (AGENT_LOG, *GATEWAY_FILES)

    def model_id(self) -> str:
        return self.model

    def env(self, start: Start) -> dict[str, str]:
        """The variables the Anthropic and OpenAI clients read, pointing at the gateway with the session's token."""
        if start.gateway_url is None or start.token is None:
            raise ValueError(f"agent {self.name} uses the LLM gateway and was started without one")
        return gateway_env(start.gateway_url, start.token)


def api_of(model: str, api: str = "auto") -> str:
    """The wire an adapter that speaks either uses: `api` when set, else by the model's provider (Anthropic Messages
    for Claude models, OpenAI Responses for the others)."""
    if api != "auto":
        return api
    return "messages" if "claude" in model.lower() else "responses"


def check_command_timeout(seconds) -> None:
    """A CLI's shell-tool timeout must outlast a training run: whole seconds, at least a minute."""
    if not isinstance(seconds, int) or seconds < 60:
        raise ValueError(f"command_timeout_s must be whole seconds >= 60, got {seconds!r}")


@dataclass(frozen=True)
class CliAgent(GatewayAgent):
    """An agent CLI people run autoresearch with, installed in the image at the version agents/clis/<cli>/ pins,
    started non-interactively on START_PROMPT, continued on CONTINUE_PROMPT."""
    cli: ClassVar[str]             # its folder under agents/clis/ and its npm package's key there

    def cli_version(self) -> str:
        """The exact version its package.json pins."""
        dependencies = json.loads((CLIS_DIR / self.cli / "package.json").read_text())["dependencies"]
        return next(iter(dependencies.values()))

    def settings(self) -> dict[str, Any]:
        """The adapter's own settings (flags, variables): for the manifest, so two runs can be told apart."""
        return {}

    def prompts(self) -> str:
        """Everything the agent is told besides program.md; hashed into the manifest."""
        return START_PROMPT + "\n" + CONTINUE_PROMPT

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "cli": self.cli, "cli_version": self.cli_version(), "settings": self.settings(),
            "prompt_sha256": hashlib.sha256(self.prompts().encode()).hexdigest()}


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

AGENTS: dict[str, str] = {
    **{control: "agents.controls.adapter:ControlAgent" for control in CONTROLS | FAULTS},
    "gateway-probe": "agents.probe:GatewayProbe",
    "mini-swe-agent": "agents.scaffold:MiniSweAgent",
    "claude-code": "agents.claude_code:ClaudeCode",
    "codex": "agents.codex:Codex",
    "opencode": "agents.opencode:OpenCode",
}


class UnknownAgent(ValueError):
    """An agent the registry cannot make: an unknown kind, or parameters its adapter does not take."""


@dataclass(frozen=True)
class AgentSpec:
    name: str
    kind: str = ""                                          # "": the name is the kind (`agents = ["noop"]`)
    params: dict[str, Any] = field(default_factory=dict)   # the adapter's parameters, as the run config sets them

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", self.name)


def agent_class(kind: str) -> type[Agent]:
    if kind not in AGENTS:
        raise UnknownAgent(f"unknown agent kind {kind!r}; known: {', '.join(sorted(AGENTS))}")
    module, cls = AGENTS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def get_agent(spec: AgentSpec) -> Agent:
    """The adapter of a run config's row; UnknownAgent names what is wrong with it."""
    cls = agent_class(spec.kind)
    params = [f for f in fields(cls) if f.name not in ("name", "kind")]
    unknown = sorted(set(spec.params) - {f.name for f in params})
    missing = [f.name for f in params if f.name not in spec.params and f.default is MISSING
               and f.default_factory is MISSING]
    if unknown or missing:
        problem = (f"unknown parameter(s) {', '.join(unknown)}" if unknown
                   else f"missing parameter(s) {', '.join(missing)}")
        raise UnknownAgent(f"agent {spec.name!r} (kind {spec.kind}): {problem}; "
                           f"its parameters: {', '.join(f.name for f in params) or 'none'}")
    try:
        return cls(name=spec.name, kind=spec.kind, **spec.params)
    except ValueError as e:   # a value the adapter refuses
        raise UnknownAgent(f"agent {spec.name!r} (kind {spec.kind}): {e}") from None
