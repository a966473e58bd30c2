"""claude-code: Anthropic's Claude Code CLI (@anthropic-ai/claude-code, pinned in agents/clis/claude-code), headless:

    claude -p START_PROMPT --output-format stream-json --verbose --dangerously-skip-permissions --model M
           --disallowedTools WebSearch WebFetch

Its stream-json events (init, assistant messages with their tool_use blocks, the tool results, the closing result)
are its stdout, and so agent.log. It is continued in its own conversation with `--continue` and CONTINUE_PROMPT:
Claude Code finds the conversation under ~/.claude/projects/ by the working directory, and both HOME (the
session's home) and the workspace are kept across a session's commands.

It talks to the gateway only (ANTHROPIC_BASE_URL, the session token as ANTHROPIC_API_KEY, one Messages request a
turn): every model slot it has (main, the opus/sonnet/haiku/fable aliases its subagents and background tasks pick, the
small fast model) names the row's model, so that it never asks for a model the gateway does not price; its
nonessential traffic (telemetry, error reports, update checks) is off, and so are WebSearch (a server-side tool: the
provider would search the web for it) and WebFetch. Its Bash tool's default timeout of 2 min (10 at most) would
kill a training run: command_timeout_s raises both.

Permissions: --dangerously-skip-permissions, which Claude Code refuses as root unless IS_SANDBOX=1 (its check:
getuid() === 0 && IS_SANDBOX !== "1"). The docker runtime runs it as the non-root `agent`; the process runtime as
the harness's user, root on some hosts. IS_SANDBOX=1 is set in both, as it states a fact (the harness's sandbox
is the boundary), so that the CLI behaves the same in both runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from agents.base import CONTINUE_PROMPT, START_PROMPT, CliAgent, Start, check_command_timeout

FLAGS = ("--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions",
         "--disallowedTools", "WebSearch", "WebFetch")
MODEL_VARIABLES = ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
                   "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_FABLE_MODEL", "ANTHROPIC_SMALL_FAST_MODEL",
                   "CLAUDE_CODE_SUBAGENT_MODEL")
ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "IS_SANDBOX": "1"}


@dataclass(frozen=True)
class ClaudeCode(CliAgent):
    command_timeout_s: int = 1800      # its Bash tool's timeout: longer than a training run (h100: 300 s + startup)

    cli: ClassVar[str] = "claude-code"

    def __post_init__(self):
        check_command_timeout(self.command_timeout_s)

    def command(self, start: Start) -> list[str]:
        return ["claude", "-p", START_PROMPT, *FLAGS, "--model", self.model]

    def continue_command(self, start: Start) -> list[str]:
        return ["claude", "-p", CONTINUE_PROMPT, "--continue", *FLAGS, "--model", self.model]

    def variables(self) -> dict[str, str]:
        timeout_ms = str(self.command_timeout_s * 1000)
        return ENV | {name: self.model for name in MODEL_VARIABLES} | {"BASH_DEFAULT_TIMEOUT_MS": timeout_ms,
                                                                        "BASH_MAX_TIMEOUT_MS": timeout_ms}

    def env(self, start: Start) -> dict[str, str]:
        return super().env(start) | self.variables()

    def settings(self) -> dict[str, Any]:
        return {"flags": list(FLAGS), "continue": "--continue", "env": self.variables()}
