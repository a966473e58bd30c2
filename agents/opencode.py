"""opencode: the opencode CLI (opencode-ai, pinned in agents/clis/opencode), headless, standing in for Gemini CLI:

    opencode run --format json --title autoresearch START_PROMPT      (its configuration in OPENCODE_CONFIG_CONTENT)

Gemini CLI speaks only Google's API (generateContent, x-goog-api-key), which the gateway does not serve: a fourth
wire format, with its own usage fields, stream shape, key and prices. opencode is the third scaffold instead, an
open-source agent CLI that runs either model family through the gateway.

Its JSON events (step_start, text, tool_use with the tool's input and output, step_finish with tokens) are its
stdout, and so agent.log. It is continued in its own conversation with `--continue` and CONTINUE_PROMPT: the
session is found in ~/.local/share/opencode (HOME, the session's home, is kept across a session's commands).

It talks to the gateway only, through one provider of its configuration: Anthropic Messages for Claude models,
OpenAI Responses for the others (api), the base URL the gateway's /v1, the key read from the environment
({env:...}: the session token never lands in a file). Its main and small model are both the row's model; the fixed
--title spares the title request a new session would make. Permissions are all allowed (the harness's sandbox is
the boundary) but web fetches; models, plugins, LSP servers and updates are never downloaded, and the workspace's
own opencode.json is ignored, so that the agent cannot reconfigure its provider. opencode `npm install`s its
plugin SDK into ~/.config/opencode on every start unless that folder's package-lock.json lists it: the launcher
(`python -m agents.opencode ARGS`, then exec `opencode ARGS`) writes that lock first, so nothing is downloaded
(offline the install fails quietly; on a host with a network, as the process runtime may be, it fetched 95 MB).
Its bash tool's default timeout of 2 min would kill a training run: command_timeout_s raises it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from agents.base import CONTINUE_PROMPT, START_PROMPT, CliAgent, Start, api_of, check_command_timeout

PROVIDER = "arbench"
PLUGIN_SDK = "@opencode-ai/plugin"
FLAGS = ("--format", "json")
ENV = {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
       "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_SHARE": "1", "OPENCODE_DISABLE_PROJECT_CONFIG": "1"}
SDK = {"messages": ("@ai-sdk/anthropic", "ANTHROPIC_API_KEY"), "responses": ("@ai-sdk/openai", "OPENAI_API_KEY")}
PERMISSION = {"*": "allow", "webfetch": "deny", "websearch": "deny"}


@dataclass(frozen=True)
class OpenCode(CliAgent):
    api: Literal["auto", "messages", "responses"] = "auto"   # auto: Messages for Claude models, Responses otherwise
    command_timeout_s: int = 1800      # its bash tool's timeout: longer than a training run (h100: 300 s + startup)

    cli: ClassVar[str] = "opencode"

    def __post_init__(self):
        if self.api not in ("auto", "messages", "responses"):
            raise ValueError(f"api must be auto, messages or responses, got {self.api!r}")
        check_command_timeout(self.command_timeout_s)

    def wire(self) -> str:
        return api_of(self.model, self.api)

    def config(self, base_url: str) -> dict[str, Any]:
        sdk, key = SDK[self.wire()]
        model = f"{PROVIDER}/{self.model}"
        return {"autoupdate": False, "share": "disabled", "snapshot": False, "model": model, "small_model": model,
                "provider": {PROVIDER: {"npm": sdk, "name": "arbench gateway",
                                        "options": {"baseURL": base_url, "apiKey": f"{{env:{key}}}"},
                                        "models": {self.model: {"name": self.model}}}},
                "permission": PERMISSION}

    def command(self, start: Start) -> list[str]:
        return ["python", "-m", "agents.opencode", "run", *FLAGS, "--title", "autoresearch", START_PROMPT]

    def continue_command(self, start: Start) -> list[str]:
        return ["python", "-m", "agents.opencode", "run", *FLAGS, "--continue", CONTINUE_PROMPT]

    def variables(self) -> dict[str, str]:
        return ENV | {"OPENCODE_EXPERIMENTAL_BASH_DEFAULT_TIMEOUT_MS": str(self.command_timeout_s * 1000)}

    def env(self, start: Start) -> dict[str, str]:
        base = super().env(start)
        config = self.config(base["ANTHROPIC_BASE_URL"] + "/v1")
        return base | self.variables() | {"OPENCODE_CONFIG_CONTENT": json.dumps(config)}

    def settings(self) -> dict[str, Any]:
        return {"flags": list(FLAGS), "title": "autoresearch", "continue": "--continue", "env": self.variables(),
                "config": self.config("<gateway>/v1")}


def main(argv: list[str]) -> None:
    """In the sandbox: mark opencode's plugin SDK as installed in its config folder, then become `opencode argv`."""
    config = Path(os.environ["HOME"]) / ".config" / "opencode"
    (config / "node_modules").mkdir(parents=True, exist_ok=True)
    lock = {"lockfileVersion": 3, "packages": {"": {"dependencies": {PLUGIN_SDK: "*"}}}}
    (config / "package-lock.json").write_text(json.dumps(lock))
    sys.stdout.flush()
    os.execvp("opencode", ["opencode", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
