"""mini-swe-agent, the fixed scaffold: one bash tool and one prompt (agents/scaffold/mini.yaml) for every model, so
that two models are compared with the agent code held constant, as on the SWE-bench bash-only leaderboard.

It is installed from PyPI at the version agents/scaffold/requirements.txt pins, in a venv of its own (/opt/scaffold
in the images; litellm's dependency tree would change the task's venv), its `mini` command on PATH. In the sandbox
`python -m agents.scaffold ...` (the task's python, standard library only) finds the config beside this file, sets
the command timeout from the workspace's profile (as the controls do: 2x the training budget plus a startup
allowance; mini's default of 30 s would kill every training run) and execs `mini`.

Through the gateway, by the model's provider: Claude models speak Anthropic Messages (litellm `anthropic/M`), the
others OpenAI Responses (`--model-class litellm_response`, `openai/M`) or, with api = "chat", Chat Completions.
Offline: litellm's bundled price map (LITELLM_LOCAL_MODEL_COST_MAP), no cost tracking of its own (the gateway
meters), no first-run setup prompt. mini has no resume: continuing it starts a fresh conversation on START_PROMPT
followed by CONTINUE_PROMPT, in the same workspace (its results.tsv and git log say where it was). Each run's
trajectory is kept in the session's home, mini/trajectory-<n>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from agents.base import CONTINUE_PROMPT, START_PROMPT, CliAgent, Start, api_of

SCAFFOLD_DIR = Path(__file__).resolve().parent / "scaffold"
CONFIG = SCAFFOLD_DIR / "mini.yaml"
REQUIREMENTS = SCAFFOLD_DIR / "requirements.txt"     # mini-swe-agent==VERSION: what the images' scaffold lock pins
Api = Literal["auto", "messages", "responses", "chat"]
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True",       # never fetch litellm's price map from the internet
       "MSWEA_CONFIGURED": "true",                   # no first-run setup prompt
       "MSWEA_SILENT_STARTUP": "1"}


@dataclass(frozen=True)
class MiniSweAgent(CliAgent):
    api: Api = "auto"              # auto: Messages for Claude models, Responses for the others

    cli: ClassVar[str] = "mini-swe-agent"

    def __post_init__(self):
        if self.api not in ("auto", "messages", "responses", "chat"):
            raise ValueError(f"api must be auto, messages, responses or chat, got {self.api!r}")

    def wire(self) -> str:
        return api_of(self.model, self.api)

    def mini_args(self) -> list[str]:
        provider = "anthropic" if self.wire() == "messages" else "openai"
        return ["--model", f"{provider}/{self.model}"] + (["--model-class", "litellm_response"]
                                                          if self.wire() == "responses" else [])

    def command(self, start: Start) -> list[str]:
        return ["python", "-m", "agents.scaffold", *self.mini_args(), "--run", str(start.resume)]

    def continue_command(self, start: Start) -> list[str]:
        return self.command(start)    # --run > 0: a fresh run told to continue

    def env(self, start: Start) -> dict[str, str]:
        return super().env(start) | ENV

    def cli_version(self) -> str:
        return REQUIREMENTS.read_text().strip().split("==")[1]

    def settings(self) -> dict[str, Any]:
        return {"wire": self.wire(), "mini": self.mini_args(), "config": "agents/scaffold/mini.yaml",
                "command_timeout": "2 x time_budget + 120 s", "env": ENV}

    def prompts(self) -> str:
        return super().prompts() + "\n" + CONFIG.read_text()


# ---------------------------------------------------------------------------
# In the sandbox: python -m agents.scaffold --model PROVIDER/M [--model-class C] --run N

def mini_argv(model: str, model_class: str | None, run: int, workspace: Path, home: Path) -> list[str]:
    from agents.controls.protocol import STARTUP_ALLOWANCE_S
    from bench.profile import load_profile

    timeout = int(2 * load_profile(workspace / "profile.toml").time_budget + STARTUP_ALLOWANCE_S)
    task = START_PROMPT if run == 0 else f"{START_PROMPT}\n\n{CONTINUE_PROMPT}"
    return (["mini", "--yolo", "--exit-immediately", "--model", model]
            + (["--model-class", model_class] if model_class else [])
            + ["--config", str(CONFIG), "--config", f"environment.timeout={timeout}", "--task", task,
               "--output", str(home / "mini" / f"trajectory-{run}.json")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agents.scaffold", description="Start mini-swe-agent here.")
    parser.add_argument("--model", required=True, help="litellm's name: anthropic/M or openai/M")
    parser.add_argument("--model-class", default=None)
    parser.add_argument("--run", type=int, default=0, help="0: the first run; n: the nth continue")
    args = parser.parse_args(argv)
    if not (Path.cwd() / "profile.toml").is_file():
        sys.exit("error: run this inside a workspace (no profile.toml in the current directory)")
    home = Path(os.environ.get("HOME") or Path.cwd())
    argv = mini_argv(args.model, args.model_class, args.run, Path.cwd(), home)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
