"""codex: OpenAI's Codex CLI (@openai/codex, pinned in agents/clis/codex), headless:

    codex exec --json --dangerously-bypass-approvals-and-sandbox -m M -c model_provider=arbench
               -c model_providers.arbench={base_url = "<gateway>/v1", wire_api = "responses", ...} ... START_PROMPT

Its JSONL events (thread.started, item.started/completed: agent messages, command executions with their output,
turn.completed with usage) are its stdout, and so agent.log. It is continued in its own conversation with
`codex exec resume --last` and CONTINUE_PROMPT: the thread is found under ~/.codex/sessions (HOME, the session's
home, is kept across a session's commands).

It talks to the gateway only: a model provider of its own (Codex ignores OPENAI_BASE_URL, and its built-in `openai`
provider cannot be overridden) on the Responses API, without websockets, its key the session token read from
OPENAI_API_KEY (env_key: never on the command line). Its web search tool is off (a server-side tool: the provider
would search the web for it), and so are its update check and analytics. Commands run in a plain `bash -c`, not a
login shell, whose /etc/profile would reset PATH and lose the task's python. Its approvals and its own sandbox are
off: the harness's sandbox is the boundary. Codex reads stdin for more prompt unless it is closed: both runtimes
start commands with stdin at /dev/null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from agents.base import CONTINUE_PROMPT, START_PROMPT, CliAgent, Start

PROVIDER = "arbench"
FLAGS = ("--json", "--dangerously-bypass-approvals-and-sandbox")
CONFIG = ("allow_login_shell=false", 'web_search="disabled"', "check_for_update_on_startup=false",
          "analytics.enabled=false")


def provider_config(base_url: str) -> str:
    return (f'model_providers.{PROVIDER}={{name="{PROVIDER}", base_url="{base_url}", wire_api="responses", '
            'env_key="OPENAI_API_KEY", supports_websockets=false}')


@dataclass(frozen=True)
class Codex(CliAgent):
    cli: ClassVar[str] = "codex"

    def options(self, start: Start) -> list[str]:
        """Everything but the prompt, for a start and a continue alike."""
        if start.gateway_url is None:
            raise ValueError(f"agent {self.name} uses the LLM gateway and was started without one")
        config = (*CONFIG, f"model_provider={PROVIDER}", provider_config(start.gateway_url.rstrip("/") + "/v1"))
        return [*FLAGS, "-m", self.model, *(arg for c in config for arg in ("-c", c))]

    def command(self, start: Start) -> list[str]:
        return ["codex", "exec", *self.options(start), START_PROMPT]

    def continue_command(self, start: Start) -> list[str]:
        return ["codex", "exec", "resume", "--last", *self.options(start), CONTINUE_PROMPT]

    def settings(self) -> dict[str, Any]:
        return {"flags": list(FLAGS), "config": list(CONFIG), "provider": provider_config("<gateway>/v1"),
                "continue": "exec resume --last"}
