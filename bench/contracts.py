"""The data that crosses between the sandbox and the host: one definition of each, stdlib only.

Everything here is imported on both sides of the boundary: inside the sandbox (bench/launch.py, bench/sitecustomize,
agents/) and on the host (harness/). It imports nothing but the standard library, so the agent's image needs no
harness code for it, and it decides nothing: it says what the data is and how it is written and read.

  what                 written by                                   read by
  -------------------  -------------------------------------------  ---------------------------------------------
  environment          the host, for the agent's sandbox            sitecustomize (SEED_ENV, LEDGER_SOCKET_ENV)
                       (harness/session.py)
  results.tsv          the agent, in its workspace (program.md;     harness/collect.py, harness/claim.py
                       agents/controls write ResultRow.to_line)     (parse_results: columns by header name)
  ledger messages      sitecustomize, inside `python train.py`,     harness/ledger.py, which keeps them as the
                       one JSON object a line on the ledger socket  run's word (ClientReport.take)
                       (evaluate_message, exit_message)
  ledger answer        harness/ledger.py, once per connection:      sitecustomize, which waits for it and, when
                       LEDGER_ACK, or refusal_answer at the         refused, exits with REFUSED_EXIT_CODE before
                       session's experiment cap                     train.py runs (refusal_of)
  run-ledger record    harness/ledger.py, on the host, one JSON     harness/collect.py, harness/integrity.py
                       file per run (LedgerRecord.to_dict)          (LedgerRecord.from_json); never the sandbox
  run outcome          bench/launch.py, in a verification sandbox   harness/verify.py (RunOutcome.from_json)
                       (result.json, RunOutcome.to_json)

RunStatus is the one status set of a training run: the launcher's outcome, the ledger record and verify's RunRecord
use it as it is; harness/collect.py adds "missing" for a results.tsv row that no run backs.

Persisted formats carry their version: LEDGER_SCHEMA_VERSION (ledger records), RUN_OUTCOME_SCHEMA_VERSION (the
launcher's result.json). results.tsv is program.md's format and has none.

Not covered: how a run is classified from its output (bench/launch.py classify), what the host measures of a run
(harness/ledger.py), how rows are matched to runs (harness/collect.py) and judged (harness/integrity.py). Nothing
here trusts what it parses: results.tsv and the ledger messages come from agent code.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

# ---------------------------------------------------------------------------
# Statuses and environment
# ---------------------------------------------------------------------------

RunStatus = Literal["ok", "crash", "nan", "timeout", "over_budget", "noncausal"]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
# ok           finished with a val_bpb (trusted mode: scored by the parent, causal)
# crash        a non-zero exit or no val_bpb in its summary (trusted: no evaluate_bpb, a malformed message)
# nan          the loss was NaN or exploded, or the bpb is not finite
# timeout      killed at a limit: the untrusted timeout, the eval limit, or a ledger run that never reported its end
# over_budget  trusted mode: no evaluate_bpb within the train limit, or trained past the budget (harness/verify.py)
# noncausal    trusted mode: the model's log-probabilities depend on the tokens that follow

ExperimentStatus = Literal["keep", "discard", "crash"]   # what the agent wrote in a results.tsv row
EXPERIMENT_STATUSES: tuple[ExperimentStatus, ...] = get_args(ExperimentStatus)

SEED_ENV = "ARBENCH_SEED"                    # the session's run seed: sitecustomize seeds every `python train.py`
LEDGER_SOCKET_ENV = "ARBENCH_LEDGER_SOCKET"  # the sandbox's path of the ledger socket: sitecustomize reports there


def gateway_env(url: str, token: str) -> dict[str, str]:
    """The variables the Anthropic and OpenAI clients read, pointing at the LLM gateway with a session's token."""
    url = url.rstrip("/")
    return {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": token, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": token}


# ---------------------------------------------------------------------------
# results.tsv
# ---------------------------------------------------------------------------

RESULTS_FILE = "results.tsv"
RESULTS_HEADER = ("commit", "val_bpb", "memory_gb", "status", "description")   # what our sessions write
REQUIRED_COLUMNS = ("commit", "val_bpb", "status")    # a fork may drop the others and add its own


@dataclass(frozen=True)
class ResultRow:
    commit: str                   # short hash as written; "" when the baseline row names none (a fork wrote "baseline")
    val_bpb: float
    memory_gb: float | None       # None when the file has no memory_gb column or the cell is not a number
    status: ExperimentStatus
    description: str
    extra: dict[str, str] = field(default_factory=dict)   # columns beyond the original five, by header name
    line_no: int = field(default=0, compare=False)        # 1-based line of results.tsv (0: not read from a file)

    def to_line(self) -> str:
        description = " ".join(self.description.split())  # no tabs or newlines inside the column
        return f"{self.commit}\t{self.val_bpb:.6f}\t{self.memory_gb or 0.0:.1f}\t{self.status}\t{description}\n"


@dataclass(frozen=True)
class RowProblem:
    line_no: int  # 1-based line of results.tsv; 0 for the file as a whole
    line: str
    reason: str


def header_line() -> str:
    return "\t".join(RESULTS_HEADER) + "\n"


def parse_results(text: str) -> tuple[list[ResultRow], list[RowProblem]]:
    """Rows of results.tsv, columns found by header name (forks add columns, in any position). Lines are
    tab-separated, csv-style quoting allowed ("a\\tb" is one field); CRLF and trailing whitespace are ignored.
    Tolerant: a malformed row is returned as a RowProblem, never raised."""
    lines = [line.rstrip() for line in text.removeprefix("\ufeff").split("\n")]
    columns = _split(lines[0]) if lines else []
    columns = [c.strip().lower() for c in columns]
    if reason := _header_problem(columns):
        return [], [RowProblem(1, lines[0] if lines else "", reason)]
    rows, problems = [], []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        row_or_reason = _parse_row(columns, _split(line), line_no, baseline=not rows and not problems)
        if isinstance(row_or_reason, ResultRow):
            rows.append(row_or_reason)
        else:
            problems.append(RowProblem(line_no, line, row_or_reason))
    return rows, problems


def _split(line: str) -> list[str]:
    return next(csv.reader([line], delimiter="\t", quotechar='"'), [])


def _header_problem(columns: list[str]) -> str | None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        return (f"header lacks the column(s) {', '.join(missing)} (it has: {', '.join(columns) or 'nothing'}; "
                f"expected tab-separated {', '.join(RESULTS_HEADER)} and optional others)")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    return f"header names the column(s) {', '.join(repeated)} more than once" if repeated else None


def _parse_row(columns: list[str], fields: list[str], line_no: int, baseline: bool) -> ResultRow | str:
    """A row; missing trailing cells of optional columns are empty (an editor strips a trailing tab). The baseline
    row (the first) may name no commit: forks write `baseline` there."""
    if len(fields) > len(columns):
        return f"{len(fields)} tab-separated fields, the header has {len(columns)} (quote a description with a tab)"
    cells = dict(zip(columns, (f.strip() for f in fields)))
    if missing := [c for c in REQUIRED_COLUMNS if c not in cells]:
        return f"{len(fields)} tab-separated fields: no {', '.join(missing)}"
    commit, val_bpb, status = cells["commit"].lower(), cells["val_bpb"], cells["status"].lower()
    if not (4 <= len(commit) <= 40 and all(c in "0123456789abcdef" for c in commit)):
        if not baseline:
            return f"commit {cells['commit']!r} is not a hex hash"
        commit = ""
    bpb = _number(val_bpb)
    if bpb is None:
        return f"val_bpb {val_bpb!r} is not a number"
    if status not in EXPERIMENT_STATUSES:
        return f"status {cells['status']!r} is not one of {', '.join(EXPERIMENT_STATUSES)}"
    extra = {c: v for c, v in cells.items() if c not in RESULTS_HEADER}
    return ResultRow(commit, bpb, _number(cells.get("memory_gb", "")), status, cells.get("description", ""), extra,
                     line_no)


def _number(text: str) -> float | None:
    """A finite float, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------
# Ledger messages: sitecustomize -> harness/ledger.py, one JSON object a line
# ---------------------------------------------------------------------------

LEDGER_ACK = b'{"recorded": true}\n'   # the service's answer once the run's record exists: the client waits for it
REFUSED_EXIT_CODE = 3                  # a run the ledger refused exits with this code before train.py runs


def refusal_answer(reason: str) -> bytes:
    """The service's answer to a run it records but refuses (the session's experiment cap is reached): the client
    says why on stderr and exits with REFUSED_EXIT_CODE, having trained nothing."""
    return json.dumps({"recorded": True, "refused": reason}).encode() + b"\n"


def refusal_of(answer: bytes) -> str | None:
    """Why the service refused the run, from its answer; None when it let the run go on."""
    try:
        reason = json.loads(answer).get("refused")
    except (ValueError, AttributeError):
        return None
    return str(reason) if reason else None
EXIT_KEYS = ("seed", "exit_code", "status", "message", "summary")   # what the exit message carries


def evaluate_message(split: str, bpb: float | None) -> dict[str, Any]:
    """Sent each time evaluate_bpb returns, before train.py sees the value (bpb None: not a number)."""
    return {"event": "evaluate", "split": split, "bpb": bpb}


def exit_message(seed: int | None, exit_code: int, status: RunStatus, message: str,
                 summary: dict[str, float]) -> dict[str, Any]:
    """Sent once, at the interpreter's exit: how the run ended as seen from inside, and its printed summary."""
    return {"event": "exit", "seed": seed, "exit_code": exit_code, "status": status, "message": message,
            "summary": summary}


@dataclass(frozen=True)
class Evaluation:
    split: str
    bpb: float


@dataclass(frozen=True)
class ClientReport:
    """What a run said of itself over the socket, kept as its word, never as a measurement. The EXIT_KEYS fields
    hold whatever the exit message carried (nothing checks their types); in the file they are there only once it
    came."""
    evaluations: tuple[Evaluation, ...] = ()   # evaluate_bpb's return values, in order
    exited: bool = False                       # the exit message came
    seed: Any = None
    exit_code: Any = None
    status: Any = None
    message: Any = None
    summary: Any = None

    def take(self, message: dict[str, Any]) -> ClientReport:
        """This report with one more message folded in; a message of another shape changes nothing."""
        if message.get("event") == "evaluate" and isinstance(message.get("bpb"), (int, float)):
            evaluation = Evaluation(str(message.get("split")), float(message["bpb"]))
            return replace(self, evaluations=(*self.evaluations, evaluation))
        if message.get("event") == "exit":
            return replace(self, exited=True, **{key: message.get(key) for key in EXIT_KEYS})
        return self

    def to_dict(self) -> dict[str, Any]:
        said = {key: getattr(self, key) for key in EXIT_KEYS} if self.exited else {}
        return {"evaluations": [asdict(e) for e in self.evaluations], **said}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClientReport:
        said = {key: raw.get(key) for key in EXIT_KEYS}
        if said["summary"]:
            said["summary"] = dict(said["summary"])   # a summary that is no mapping makes the record unreadable
        return cls(tuple(Evaluation(e["split"], float(e["bpb"])) for e in raw["evaluations"]),
                   exited=any(key in raw for key in EXIT_KEYS), **said)


# ---------------------------------------------------------------------------
# The run-ledger record: harness/ledger.py -> harness/collect.py
# ---------------------------------------------------------------------------

LEDGER_SCHEMA_VERSION = 2   # 1 was the in-sandbox ledger, written by train.py's own process: not read any more
PROTECTED_FILES = ("prepare.py", "profile.toml")   # beside train.py, the files whose sha256 a record holds


@dataclass(frozen=True)
class LedgerRecord:
    """One connection to the host's run ledger, or one `python train.py` seen in /proc that never connected
    (observed_only). Measured on the host, except `client`, which is the run's own word."""
    pid: int
    forged: bool                      # the peer was not a python running the workspace's train.py
    forged_reason: str | None
    observed_only: bool               # seen running train.py in /proc, never connected: nothing is known of it
    started_at: float                 # host clock: connect (observed_only: first seen)
    ended_at: float | None = None     # host clock: the process was gone; None when it outlived the session
    socket_closed_at: float | None = None
    refused: bool = False             # the session's experiment cap was reached: told to exit before train.py ran
    cmdline: list[str] = field(default_factory=list)
    head_commit: str | None = None    # git HEAD, read on the host at connect
    dirty: bool | None = None         # train.py differed from HEAD's
    sha256: dict[str, str | None] = field(default_factory=dict)   # train.py and PROTECTED_FILES as the run found them
    client: ClientReport = field(default_factory=ClientReport)
    schema_version: int = LEDGER_SCHEMA_VERSION
    path: str = ""                    # the file it was read from (from_json); never written

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self) | {"client": self.client.to_dict()}
        del record["path"]
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str = "") -> LedgerRecord:
        """A record of the current schema; ValueError, KeyError or TypeError for anything else."""
        raw = json.loads(text)
        if raw["schema_version"] != LEDGER_SCHEMA_VERSION:
            raise ValueError(f"a ledger record of schema {raw['schema_version']}, not {LEDGER_SCHEMA_VERSION}")
        return cls(pid=int(raw["pid"]), forged=bool(raw["forged"]), forged_reason=raw["forged_reason"],
                   observed_only=bool(raw["observed_only"]), refused=bool(raw.get("refused", False)),
                   started_at=float(raw["started_at"]),
                   ended_at=raw["ended_at"], socket_closed_at=raw.get("socket_closed_at"),
                   cmdline=list(raw.get("cmdline") or []), head_commit=raw["head_commit"], dirty=raw["dirty"],
                   sha256=dict(raw["sha256"]), client=ClientReport.from_dict(dict(raw["client"])), path=path)

    @property
    def status(self) -> RunStatus:
        """The status the run reported at exit; a run that ended without one, or outlived the session, was killed."""
        said = self.client.status
        return said if said in RUN_STATUSES and self.ended_at is not None else "timeout"

    @property
    def seed(self) -> int | None:
        return self.client.seed

    @property
    def summary(self) -> dict[str, Any]:
        """What the run printed."""
        return self.client.summary or {}

    @property
    def train_py_sha256(self) -> str | None:
        return self.sha256.get("train.py")

    @property
    def protected_sha256(self) -> dict[str, str | None]:
        return {name: self.sha256.get(name) for name in PROTECTED_FILES}

    @property
    def returned_val_bpb(self) -> float | None:
        """The last value evaluate_bpb(split="val") returned."""
        returned = [e.bpb for e in self.client.evaluations if e.split == "val"]
        return returned[-1] if returned else None

    @property
    def printed_val_bpb(self) -> float | None:
        value = self.summary.get("val_bpb")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def val_bpb(self) -> float | None:
        """What a results.tsv row is held to: evaluate_bpb's return value when the ledger has it, else the print."""
        return self.returned_val_bpb if self.returned_val_bpb is not None else self.printed_val_bpb


# ---------------------------------------------------------------------------
# The launcher's run outcome: bench/launch.py -> harness/verify.py
# ---------------------------------------------------------------------------

RUN_OUTCOME_SCHEMA_VERSION = 3   # 3: substitutions


@dataclass
class RunOutcome:
    """One run of train.py by the launcher, written to its --result file (a verification's result.json)."""
    status: RunStatus
    message: str
    seed: int
    wall_seconds: float
    summary: dict[str, float]
    trusted: dict[str, float] | None = None      # split -> bpb computed by the parent (bench.trusted_eval)
    untrained: dict[str, float] | None = None    # split -> bpb of the uniform distribution (trusted mode)
    checks: dict[str, Any] | None = None         # {causal: bool, pre_eval_seconds: float, ...} in trusted mode
    substitutions: list[str] = field(default_factory=list)   # stand-ins that served train.py (parse_substitutions)
    schema_version: int = RUN_OUTCOME_SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RunOutcome:
        return cls(**json.loads(text))
