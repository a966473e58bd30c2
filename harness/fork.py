"""Reading a fork: where an autoresearch-style repo keeps its experiments, and how its task differs from the original.

The original task is bench/original.py (karpathy/autoresearch at a pinned commit). A fork's task is read from its
files at the claim's best commit, never by running them: the constants of its prepare.py (with `ast`: literals and
literal arithmetic such as `40 * 524288`), or its profile.toml when it is one of our workspaces. Also read: the
files other than train.py changed between the baseline and the best commit, names its train.py imports that the
task does not define (verification gives a sandbox train.py and our prepare.py, nothing else), and which of our
profiles the task equals. This module reads and reports; harness/claim.py decides what to do about it.
"""

from __future__ import annotations

import ast
import operator
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.original import CONSTANTS, PREPARE_EXPORTS, TASK_FILES
from bench.profile import Profile, ProfileError, available_profiles, load_profile, parse_profile
from harness.config import ConfigError
from harness.workspace import BENCH_DIR, git

PROFILE_FILE = "profile.toml"       # our workspaces carry their profile beside prepare.py
TASK_DEFINING = ("prepare.py", PROFILE_FILE)   # a change to one of these along the branch changes the task
TASK_MODULES = frozenset(Path(f).stem for f in TASK_FILES if f.endswith(".py"))   # prepare, train
DATA_CONSTANTS = ("BASE_URL", "MAX_SHARD", "VAL_SHARD", "VAL_FILENAME")          # the original's: source climbmix
TASK_CONSTANTS = {"MAX_SEQ_LEN": "max_seq_len", "TIME_BUDGET": "time_budget", "EVAL_TOKENS": "eval_tokens",
                  "VOCAB_SIZE": "vocab_size"}   # prepare.py constant -> profile [task] key


# ---------------------------------------------------------------------------
# Branches and commits
# ---------------------------------------------------------------------------

def resolve_branch(repo: Path, branch: str) -> str:
    """The ref --branch names: a local or remote-tracking branch (origin/autoresearch/x), the branch as a remote
    has it when only that exists (a fresh clone), or autoresearch/<branch>."""
    names = [branch] + ([] if branch.startswith("autoresearch/") else [f"autoresearch/{branch}"])
    for name in names:
        if git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False):
            return name
        remote = [ref for ref in remote_branches(repo) if ref.split("/", 1)[1] == name]
        if len(remote) == 1:
            return remote[0]
        if remote:
            raise ConfigError(f"{repo}: branch {name!r} is on several remotes ({', '.join(remote)}); name one")
    found = ", ".join(autoresearch_branches(repo)) or "none, local or remote"
    raise ConfigError(f"{repo}: no branch {branch!r}; autoresearch/* branches here: {found}")


def remote_branches(repo: Path) -> list[str]:
    """Remote-tracking branches as `remote/name`, without the remotes' HEAD aliases."""
    refs = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/remotes", check=False).split()
    return [ref for ref in refs if "/" in ref and not ref.endswith("/HEAD")]


def autoresearch_branches(repo: Path) -> list[str]:
    local = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/autoresearch", check=False).split()
    return local + [ref for ref in remote_branches(repo) if ref.split("/", 1)[1].startswith("autoresearch/")]


def resolve_commits(repo: Path, names: list[str]) -> dict[str, str | None]:
    """Full hash of each (short) commit name; None for one the repository does not have (or that is ambiguous)."""
    query = "".join(f"{name}^{{commit}}\n" for name in names)
    done = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-check=%(objectname)"], input=query,
                          capture_output=True, text=True, check=True)
    answers = done.stdout.splitlines()
    return {name: answer if len(answer) == 40 and " " not in answer else None for name, answer in zip(names, answers)}


# ---------------------------------------------------------------------------
# The task a fork's files define
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskReading:
    """The task as the fork's files at one commit define it."""
    defined_by: str                # "prepare.py", or "profile.toml (profile NAME)" in one of our workspaces
    differences: list[str]         # "TIME_BUDGET = 600 (original: 300)": prepare.py constants unlike the original's
    unreadable: list[str]          # why the task could not be read in full ("EVAL_TOKENS is not a literal: ...")
    profile: str | None            # the profile of ours whose [task] and data source equal the fork's


def read_task(files: dict[str, str]) -> TaskReading:
    """files: path -> text of the task files present at the commit."""
    if PROFILE_FILE in files:
        return _task_of_profile(files[PROFILE_FILE])
    if "prepare.py" not in files:
        return TaskReading("prepare.py", [], ["prepare.py is not in the fork"], None)
    values, unreadable = read_constants(files["prepare.py"])
    differences = [f"{name} = {values[name]!r} (original: {original!r})" for name, original in CONSTANTS.items()
                   if name in values and values[name] != original]
    return TaskReading("prepare.py", differences, unreadable, _profile_of_constants(values))


def _task_of_profile(text: str) -> TaskReading:
    try:
        profile = parse_profile(text, origin=PROFILE_FILE, default_name="profile")
    except ProfileError as e:
        return TaskReading(PROFILE_FILE, [], [str(e)], None)
    return TaskReading(f"{PROFILE_FILE} (profile {profile.name})", [], [],
                       matching_profile(profile.task, profile.source))


def _profile_of_constants(values: dict[str, Any]) -> str | None:
    if any(name not in values for name in [*TASK_CONSTANTS, *DATA_CONSTANTS]):
        return None
    if any(values[name] != CONSTANTS[name] for name in DATA_CONSTANTS):
        return None
    return matching_profile({key: values[name] for name, key in TASK_CONSTANTS.items()}, "climbmix")


def matching_profile(task: dict[str, Any], source: str) -> str | None:
    """The first of our profiles whose [task] and data source equal these; None when none does."""
    profiles: list[Profile] = [load_profile(name) for name in available_profiles()]
    return next((p.name for p in profiles if p.task == task and p.source == source), None)


def read_constants(prepare_py: str) -> tuple[dict[str, Any], list[str]]:
    """The original's constants as prepare.py sets them at module level, evaluated as literals (earlier constants,
    arithmetic, f-strings); the ones that cannot be read so, and why."""
    try:
        tree = ast.parse(prepare_py)
    except SyntaxError as e:
        return {}, [f"prepare.py does not parse (line {e.lineno}: {e.msg})"]
    values: dict[str, Any] = {}
    not_literal: dict[str, str] = {}
    for node in tree.body:
        for name, value in _assignments(node):
            try:
                values[name] = _literal(value, values)
                not_literal.pop(name, None)
            except ValueError:
                values.pop(name, None)
                not_literal[name] = ast.unparse(value)
    problems = [f"{name} is not a literal: {_clip(not_literal[name])}" for name in CONSTANTS if name in not_literal]
    problems += [f"{name} is not set at module level" for name in CONSTANTS
                 if name not in values and name not in not_literal]
    return {name: values[name] for name in CONSTANTS if name in values}, problems


def _assignments(node: ast.stmt) -> list[tuple[str, ast.expr]]:
    if isinstance(node, ast.Assign):
        return [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return [(node.target.id, node.value)]
    return []


NUMBER_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
MAX_EXPONENT = 64   # `**` beyond this is no constant of a task (and would take long to compute)


def _literal(node: ast.expr, known: dict[str, Any]) -> Any:
    """The value of a literal expression; ValueError for anything else (calls, unknown names, ...)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _number(_literal(node.operand, known)) * (-1 if isinstance(node.op, ast.USub) else 1)
    if isinstance(node, ast.BinOp) and type(node.op) in NUMBER_OPS:
        left, right = _literal(node.left, known), _literal(node.right, known)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            return left + right
        left, right = _number(left), _number(right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("exponent too large")
        try:
            return NUMBER_OPS[type(node.op)](left, right)
        except ArithmeticError:
            raise ValueError("arithmetic error") from None
    if isinstance(node, ast.JoinedStr):
        return "".join(_formatted(part, known) for part in node.values)
    raise ValueError(ast.unparse(node))


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return value


def _formatted(part: ast.expr, known: dict[str, Any]) -> str:
    if not isinstance(part, ast.FormattedValue):
        return str(_literal(part, known))
    value = _literal(part.value, known)
    value = {-1: value, 115: str(value), 114: repr(value), 97: ascii(value)}[part.conversion]
    spec = _literal(part.format_spec, known) if part.format_spec is not None else ""
    try:
        return format(value, spec)
    except (ValueError, TypeError):
        raise ValueError(f"format {spec!r}") from None


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


# ---------------------------------------------------------------------------
# What train.py imports
# ---------------------------------------------------------------------------

def task_names(files: dict[str, str]) -> frozenset[str]:
    """What prepare.py offers train.py under the repo's task: the original's exports for a fork, everything our
    prepare.py defines for one of our workspaces (verification runs it with ours)."""
    return defined_names((BENCH_DIR / "prepare.py").read_text()) if PROFILE_FILE in files else PREPARE_EXPORTS


def defined_names(source: str) -> frozenset[str]:
    """Public names a module defines at its top level (imports aside)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        names |= {name for name, _ in _assignments(node)}
    return frozenset(n for n in names if not n.startswith("_"))


def foreign_imports(train_py: str, offered: frozenset[str], own_modules: set[str]) -> list[str]:
    """What train.py imports that the task does not give it: names from prepare beyond `offered`
    (`from prepare import X`, `prepare.X`) and modules of the fork's own (files the sandbox will not have)."""
    try:
        tree = ast.parse(train_py)
    except SyntaxError:
        return []   # it will crash in verification, and be reported as the crash it is
    found: list[str] = []
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if node.module == "prepare":
                found += [f"prepare.{a.name}" for a in node.names if a.name != "*" and a.name not in offered]
            elif top in own_modules:
                found.append(f"module {top}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if alias.name == "prepare":
                    aliases.add(alias.asname or "prepare")
                elif top in own_modules:
                    found.append(f"module {top}")
    found += [f"prepare.{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name) and node.value.id in aliases and node.attr not in offered]
    return list(dict.fromkeys(found))


def local_modules(paths: list[str]) -> set[str]:
    """Top-level modules a fork's tree provides beside train.py (x.py, or a folder x/) that the task does not."""
    modules = {p.split("/")[0] if "/" in p else p.removesuffix(".py") for p in paths if "/" in p or p.endswith(".py")}
    return {m for m in modules if m.isidentifier()} - TASK_MODULES


# ---------------------------------------------------------------------------
# A fork's differences from the task
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ForkDifferences:
    task: TaskReading                     # read at the best commit
    changed_files: list[str]              # besides train.py, between the baseline and the best commit
    foreign_imports: dict[str, list[str]]  # "baseline" / "best" -> what its train.py imports that the task lacks

    @property
    def task_files_changed(self) -> list[str]:
        return [f for f in self.changed_files if f in TASK_DEFINING]

    @property
    def changed_task(self) -> bool:
        return bool(self.task.differences or self.task_files_changed or any(self.foreign_imports.values()))


def read_fork(repo: Path, baseline: str, best: str) -> ForkDifferences:
    changed = git(repo, "diff", "--name-only", "--no-renames", baseline, best).splitlines()
    at_best = _files_at(repo, best)
    imports = {}
    for role, commit in (("baseline", baseline), ("best", best)):
        files = at_best if commit == best else _files_at(repo, commit)
        names = foreign_imports(files.get("train.py", ""), task_names(files), local_modules(_tree(repo, commit)))
        if names:
            imports[role] = names
    return ForkDifferences(read_task(at_best), [f for f in changed if f != "train.py"], imports)


def _files_at(repo: Path, commit: str) -> dict[str, str]:
    """The text of train.py, prepare.py and profile.toml at commit, those that exist."""
    tree = set(_tree(repo, commit))
    return {name: git(repo, "show", f"{commit}:{name}") for name in ("train.py", *TASK_DEFINING) if name in tree}


def _tree(repo: Path, commit: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", commit).splitlines()
