"""One scripted cpu-tiny session of program.md, rendered as a scripted model server's script (harness/gateway/
script.py) for each agent's tool dialect, so that the real CLIs run it through the real gateway.

The steps are shell commands, the same in every dialect (POSIX sh: the scaffold runs them with /bin/sh):
  setup     stay on the benchmark's autoresearch/ branch (or create one), results.tsv's header, the baseline run
  baseline  the baseline row
  [stop]    stop_after_first: a turn that ends the agent's run (rc 0), so that the harness continues it
  [probe]   probe=Probe(...): isolation checks, each printing a `probe ...` line (docker only: they try to write
            outside the workspace)
  edit      MATRIX_LR 0.04 -> 0.05 with sed, git commit
  run       python train.py > run.log 2>&1, its val_bpb
  record    the row, kept if better than the best kept row, else discarded and `git reset --hard HEAD~1`
  end       a turn that ends the agent's run; with cap_turn, a turn of CAP_USAGE that asks for one more command
            instead: the gateway's dollar cap is reached there, mid-conversation
Every turn carries explicit usage numbers, so the gateway's totals can be checked against the script's
(script_usage, priced by the gateway's table).

Dialects: claude (Claude Code: Bash {command}), codex (Codex: exec_command {cmd}, on Responses), opencode (bash
{command, description}), mini (mini-swe-agent: bash {command}; it ends on its submit command, as a text-only turn
is a format error to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.gateway.prices import price_of
from harness.gateway.script import parse_script
from harness.gateway.usage import Tokens

Dialect = Literal["claude", "codex", "opencode", "mini"]
Wire = Literal["messages", "responses"]
DIALECTS: tuple[Dialect, ...] = ("claude", "codex", "opencode", "mini")
MINI_SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
CODEX_YIELD_MS = 30_000     # Codex returns a command still running after this (its most), then polls it
CAP_USAGE = Tokens(input_tokens=200_000, output_tokens=1_000)   # the cap turn: dearer than all others together

GREP = "grep \"^val_bpb:\\|^peak_vram_mb:\" run.log"
MEMORY_GB = "$(awk '/^peak_vram_mb:/{printf \"%.1f\", $2/1024}' run.log)"
SETUP = ("git branch --show-current | grep -q '^autoresearch/' || git checkout -b autoresearch/scripted; "
         "printf 'commit\\tval_bpb\\tmemory_gb\\tstatus\\tdescription\\n' > results.tsv; "
         f"python train.py > run.log 2>&1; {GREP}")
BASELINE = ("printf '%s\\t%s\\t%s\\tkeep\\tbaseline\\n' \"$(git rev-parse --short=7 HEAD)\" "
            f"\"$(awk '/^val_bpb:/{{print $2}}' run.log)\" \"{MEMORY_GB}\" >> results.tsv && cat results.tsv")
EDIT = ("sed -i 's/^MATRIX_LR = [0-9.]*/MATRIX_LR = 0.05/' train.py && grep '^MATRIX_LR' train.py && "
        "git commit -qam 'MATRIX_LR 0.04 -> 0.05' && git log --oneline -1")
RUN = f"python train.py > run.log 2>&1; {GREP}"
RECORD = ("new=$(awk '/^val_bpb:/{print $2}' run.log); "
          "best=$(awk -F'\\t' 'NR > 1 && $4 == \"keep\" {print $2}' results.tsv | sort -g | head -1); "
          "if awk -v n=\"$new\" -v b=\"$best\" 'BEGIN {exit !(n < b)}'; then status=keep; else status=discard; fi; "
          "printf '%s\\t%s\\t%s\\t%s\\tMATRIX_LR 0.04 -> 0.05\\n' \"$(git rev-parse --short=7 HEAD)\" \"$new\" "
          f"\"{MEMORY_GB}\" \"$status\" >> results.tsv; "
          "[ \"$status\" = keep ] || git reset -q --hard HEAD~1; cat results.tsv; git log --oneline -3")


@dataclass(frozen=True)
class Probe:
    """What the isolation probe looks for: a regex of the provider keys' shape (never a key itself, which must not
    enter the sandbox, not even in a command), and the host's path of the hidden test split."""
    key_regex: str
    test_dir: str

    def command(self) -> str:
        keys = f"grep -cE '{self.key_regex}'"
        lines = "tr '\\0' '\\n'"
        files = ('{ find / -xdev -type f -newer /etc/hostname 2>/dev/null; find "$HOME" "$PWD" -type f '
                 '2>/dev/null; }')
        return "; ".join([
            'echo "probe uid $(id -u)"',
            f'echo "probe env $(env | grep -c ^ARBENCH_SEED=) $(env | {keys})"',
            f'echo "probe environ $(cat /proc/[0-9]*/environ 2>/dev/null | {lines} | grep -c ^ARBENCH_SEED=) '
            f'$(cat /proc/[0-9]*/environ 2>/dev/null | {lines} | {keys})"',
            f'echo "probe cmdline $(cat /proc/[0-9]*/cmdline 2>/dev/null | {lines} | grep -c .) '
            f'$(cat /proc/[0-9]*/cmdline 2>/dev/null | {lines} | {keys})"',
            f'echo "probe files $({files} | wc -l) $({files} | xargs -r grep -lsE \'{self.key_regex}\' | wc -l)"',
            f'for p in /heldout {self.test_dir}; do if ls "$p" >/dev/null 2>&1; then echo "probe read $p"; '
            'else echo "probe unreadable $p"; fi; done',
            'for p in / /etc /opt /opt/venv /usr/local/bin "$ARBENCH_DATA_DIR" /ledger; do '
            'if touch "$p/arbench-probe" 2>/dev/null; then echo "probe wrote $p"; else echo "probe refused $p"; fi; '
            'done'])


@dataclass(frozen=True)
class Step:
    text: str
    command: str | None       # None: a turn that ends the agent's run
    usage: Tokens


def steps(stop_after_first: bool = False, probe: Probe | None = None, cap_turn: bool = False) -> list[Step]:
    """The scenario's turns in order; usage numbers differ per turn, so a turn counted twice or missed shows."""
    plan: list[tuple[str, str | None]] = [
        ("On the benchmark's branch; writing the header and running the baseline.", SETUP),
        ("Recording the baseline.", BASELINE)]
    if stop_after_first:
        plan.append(("The baseline is recorded. I will stop here.", None))
    if probe is not None:
        plan.append(("Checking the sandbox first.", probe.command()))
    plan += [("Trying a higher matrix learning rate.", EDIT), ("Running it.", RUN),
             ("Recording it; keeping it only if it beats the best kept run.", RECORD)]
    out = [Step(text, command, Tokens(input_tokens=1000 + 100 * i, output_tokens=50 + 10 * i,
                                      cache_read_tokens=2000 * i, cache_write_tokens=500 if i == 0 else 40 * i))
           for i, (text, command) in enumerate(plan)]
    if cap_turn:
        return out + [Step("One more idea: a deeper model.", "git log --oneline -1", CAP_USAGE)]
    return out + [Step("Two experiments are done. I will stop here.", None, Tokens(800, 30, 2000 * len(out), 0))]


def tool_call(dialect: Dialect, command: str, text: str) -> dict:
    if dialect == "claude":
        return {"name": "Bash", "arguments": {"command": command, "description": text}}
    if dialect == "codex":
        return {"name": "exec_command", "arguments": {"cmd": command, "yield_time_ms": CODEX_YIELD_MS}}
    if dialect == "opencode":
        return {"name": "bash", "arguments": {"command": command, "description": text}}
    return {"name": "bash", "arguments": {"command": command}}


def render(plan: list[Step], dialect: Dialect, wire: Wire) -> dict:
    """The script (JSON for ScriptedServer.load). OpenAI's APIs report no cache writes: on Responses they are 0."""
    turns = []
    for step in plan:
        usage = step.usage if wire == "messages" else Tokens(step.usage.input_tokens, step.usage.output_tokens,
                                                             step.usage.cache_read_tokens, 0)
        command = MINI_SUBMIT if step.command is None and dialect == "mini" else step.command
        turns.append({"text": step.text, "usage": vars(usage),
                      "tool_calls": [tool_call(dialect, command, step.text)] if command else []})
    return {"turns": turns}


def scenario(dialect: Dialect, wire: Wire, stop_after_first: bool = False, probe: Probe | None = None,
             cap_turn: bool = False) -> dict:
    return render(steps(stop_after_first, probe, cap_turn), dialect, wire)


def script_usage(script: dict, turns: int | None = None) -> Tokens:
    """The usage of the script's first `turns` turns (all by default)."""
    played = parse_script(script).turns[:turns]
    return Tokens(*(sum(getattr(t.usage, name) for t in played) for name in
                    ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")))


def dollars(script: dict, model: str, turns: int | None = None) -> float:
    return price_of(model).dollars(script_usage(script, turns))


def dollar_cap(script: dict, model: str) -> float:
    """A cap that the script's last turn (the cap turn) crosses and no earlier turn reaches."""
    before, last = dollars(script, model, -1), dollars(script, model)
    return round(before + (last - before) / 2, 6)
