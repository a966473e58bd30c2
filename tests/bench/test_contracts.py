"""bench/contracts.py, the one home of what crosses between the sandbox and the host: the import boundary (agents/
imports no harness code, contracts only the standard library), each format's round trip, and one status set."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

from bench import contracts, launch
from bench.contracts import (EXPERIMENT_STATUSES, LEDGER_SCHEMA_VERSION, RUN_OUTCOME_SCHEMA_VERSION, RUN_STATUSES,
                             ClientReport, Evaluation, LedgerRecord, ResultRow, RunOutcome, evaluate_message,
                             exit_message, header_line, parse_results)
from harness import collect, verify

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}   # agents, bench, harness, ...
MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.\w+)*(:\w+)?")   # "harness.x" or "harness.x:Name", as lazy imports name them


def imported(source: str, lazy: bool = True) -> set[str]:
    """Top-level packages a module imports: its import statements and (lazy) the strings that are a whole module
    path, as a registry names what it imports lazily."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
        elif lazy and isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                MODULE_PATH.fullmatch(node.value):
            names.add(node.value.split(".")[0].split(":")[0])
    return names


# ---------------------------------------------------------------------------
# The boundary
# ---------------------------------------------------------------------------

def test_the_scan_sees_every_kind_of_import():
    assert {"harness"} <= imported("from harness.workspace import git")
    assert {"harness"} <= imported("import harness.collect as c")
    assert {"harness"} <= imported("def f():\n    from harness import collect\n")
    assert {"harness"} <= imported('CONTROLS = {"x": "harness.cheats:X"}')
    assert "harness" not in imported('"""Run by the harness (harness/session.py)."""')


def test_agents_import_only_bench_and_agents():
    """The grader's code is not the agent's: nothing under agents/ imports harness (or any other package of ours),
    nor does bench/, which runs beside the agent in its sandbox."""
    assert {"agents", "bench", "harness"} <= FIRST_PARTY
    modules = sorted(p for part in ("agents", "bench") for p in (ROOT / part).rglob("*.py"))
    assert len(modules) >= 20
    crossing = {str(path.relative_to(ROOT)): sorted(imported(path.read_text()) & (FIRST_PARTY - {"agents", "bench"}))
                for path in modules}
    assert {path: names for path, names in crossing.items() if names} == {}


def test_contracts_import_only_the_standard_library():
    names = imported((ROOT / "bench" / "contracts.py").read_text(), lazy=False)
    assert names and names <= set(sys.stdlib_module_names)
    # ... and loading it, with no site-packages at all, loads nothing else
    code = ("import sys; before = set(sys.modules); sys.path.insert(0, sys.argv[1]); import bench.contracts; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT)], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['bench']"


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

def test_ledger_record_round_trip_and_the_client_messages_it_keeps():
    client = ClientReport()
    for message in (evaluate_message("val", 1.25), evaluate_message("val", None), {"event": "start", "bpb": 0.1},
                    evaluate_message("val", 1.2), exit_message(7, 0, "ok", "", {"val_bpb": 1.21})):
        client = client.take(json.loads(json.dumps(message)))   # as it crosses the socket
    assert client.evaluations == (Evaluation("val", 1.25), Evaluation("val", 1.2))
    record = LedgerRecord(pid=42, forged=False, forged_reason=None, observed_only=False, started_at=100.0,
                          ended_at=130.0, socket_closed_at=129.5, cmdline=["python", "train.py"], head_commit="a" * 40,
                          dirty=False, sha256={"train.py": "t", "prepare.py": "p", "profile.toml": None},
                          client=client, path="/ledger/run-1.json")
    again = LedgerRecord.from_json(record.to_json(), path=record.path)
    assert again == record
    assert (again.status, again.seed, again.returned_val_bpb, again.printed_val_bpb, again.val_bpb) == \
        ("ok", 7, 1.2, 1.21, 1.2)
    assert (again.train_py_sha256, again.protected_sha256) == ("t", {"prepare.py": "p", "profile.toml": None})
    written = json.loads(record.to_json())
    assert "path" not in written and written["schema_version"] == LEDGER_SCHEMA_VERSION == 2
    assert set(written) == {"schema_version", "pid", "cmdline", "forged", "forged_reason", "observed_only", "refused",
                            "started_at", "ended_at", "socket_closed_at", "head_commit", "dirty", "sha256", "client"}
    assert written["client"] == {"evaluations": [{"split": "val", "bpb": 1.25}, {"split": "val", "bpb": 1.2}],
                                 "seed": 7, "exit_code": 0, "status": "ok", "message": "", "summary": {"val_bpb": 1.21}}


def test_ledger_records_already_written_are_read_and_other_schemas_are_not():
    """A record as the ledger wrote it before this module (no exit keys until the exit message) still reads."""
    old = {"schema_version": 2, "pid": 5, "cmdline": [], "forged": False, "forged_reason": None, "observed_only": False,
           "started_at": 1.0, "ended_at": None, "socket_closed_at": None, "head_commit": None, "dirty": None,
           "sha256": {}, "client": {"evaluations": [{"split": "val", "bpb": 2.0}]}}
    record = LedgerRecord.from_json(json.dumps(old))
    assert (record.status, record.seed, record.summary, record.val_bpb) == ("timeout", None, {}, 2.0)
    assert json.loads(record.to_json()) == old | {"refused": False}   # written back the same, refused said
    lying = old | {"ended_at": 2.0, "client": {"evaluations": [], "status": "great", "summary": {"val_bpb": 0.5}}}
    assert LedgerRecord.from_json(json.dumps(lying)).status == "timeout"   # a status outside the set: killed
    for bad in (old | {"schema_version": 1}, old | {"client": {"evaluations": [], "summary": "val_bpb"}}):
        try:
            LedgerRecord.from_json(json.dumps(bad))
        except (ValueError, KeyError, TypeError):
            continue
        raise AssertionError(f"read {bad}")


def test_run_outcome_round_trip():
    outcome = RunOutcome(status="noncausal", message="moved", seed=3, wall_seconds=12.5, summary={"val_bpb": 1.1},
                         trusted={"val": 1.0, "test": 1.05}, untrained={"val": 8.0}, checks={"causal": False},
                         substitutions=["kernels: offline stand-in"])
    assert RunOutcome.from_json(outcome.to_json()) == outcome
    assert json.loads(outcome.to_json())["schema_version"] == RUN_OUTCOME_SCHEMA_VERSION == 3


def test_results_row_round_trip():
    rows = [ResultRow("abc1234", 0.997812, 44.2, "keep", "baseline"),
            ResultRow("def5678", 1.0, None, "crash", "a\ttabbed\ndescription")]
    parsed, problems = parse_results(header_line() + "".join(row.to_line() for row in rows))
    assert problems == []
    assert parsed == [rows[0], ResultRow("def5678", 1.0, 0.0, "crash", "a tabbed description")]
    assert [row.line_no for row in parsed] == [2, 3]


# ---------------------------------------------------------------------------
# One status set
# ---------------------------------------------------------------------------

def statuses(annotation) -> set[str]:
    return set(get_args(annotation))


def test_every_user_reads_one_run_status_set():
    runs = set(RUN_STATUSES)
    assert runs == {"ok", "crash", "nan", "timeout", "over_budget", "noncausal"}
    assert statuses(get_type_hints(RunOutcome)["status"]) == runs
    assert statuses(get_type_hints(LedgerRecord.status.fget)["return"]) == runs
    assert statuses(get_args(get_type_hints(launch.classify)["return"])[0]) == runs
    assert statuses(get_type_hints(verify.RunRecord)["status"]) == runs
    assert statuses(get_type_hints(verify.VerificationRun)["status"]) == runs
    assert statuses(get_type_hints(collect.ExperimentRecord)["run_status"]) == runs | {"missing"}
    assert statuses(get_type_hints(collect.ExperimentRecord)["status"]) == set(EXPERIMENT_STATUSES)
    assert statuses(get_type_hints(ResultRow)["status"]) == set(EXPERIMENT_STATUSES)


def test_no_module_spells_out_a_run_status_set_of_its_own():
    """A Literal that lists "crash" and "timeout" anywhere but bench/contracts.py is a second copy of the set."""
    copies = []
    for path in sorted(p for part in ("agents", "bench", "harness") for p in (ROOT / part).rglob("*.py")):
        if path == Path(contracts.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
                values = {n.value for n in ast.walk(node.slice) if isinstance(n, ast.Constant)}
                if {"crash", "timeout"} <= values:
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert copies == []
