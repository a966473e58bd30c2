"""train.py's hyperparameter block (`NAME = value  # comment`) and the search space the controls explore.

The space is relative to the baseline's values, so one definition serves every profile. Each Param is
declarative (kind, bounds, choices) so that a sampler from a library (e.g. Optuna's TPE) can map it to its
own distributions; `sample` and `perturb` are the plain random versions used by the random and greedy controls.
"""

from __future__ import annotations

import ast
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from bench.profile import Profile, render_train_py

HYPERPARAMETER = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=\s*([^#\n]+?)\s*(?:#.*)?$", re.MULTILINE)


def read_hyperparameters(train_py: str) -> dict[str, Any]:
    """Module-level UPPER_CASE constants whose value is a literal (arithmetic such as 2**19 included)."""
    values = {}
    for name, expr in HYPERPARAMETER.findall(train_py):
        try:
            values[name] = _literal(ast.parse(expr, mode="eval").body)
        except (SyntaxError, ValueError):
            continue
    return values


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.Mult, ast.Add, ast.Sub, ast.Div)):
        left, right = _literal(node.left), _literal(node.right)
        if not all(isinstance(v, (int, float)) for v in (left, right)) or abs(right) > 64:
            raise ValueError("not a small arithmetic literal")
        return {ast.Pow: pow, ast.Mult: lambda a, b: a * b, ast.Add: lambda a, b: a + b,
                ast.Sub: lambda a, b: a - b, ast.Div: lambda a, b: a / b}[type(node.op)](left, right)
    return ast.literal_eval(node)


def write_hyperparameters(train_py: str, values: dict[str, Any]) -> str:
    """train.py with new values in its hyperparameter block (comments kept)."""
    return render_train_py(Profile(name="control", description="", task={}, data={}, train=values), template=train_py)


# ---------------------------------------------------------------------------
# Search space
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    name: str
    kind: Literal["log", "uniform", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()


LEARNING_RATES = ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR")
RATIOS = {"WEIGHT_DECAY": (0.0, 0.4), "WARMUP_RATIO": (0.0, 0.2), "WARMDOWN_RATIO": (0.1, 0.9),
          "FINAL_LR_FRAC": (0.0, 0.2)}


def search_space(baseline: dict[str, Any], max_seq_len: int) -> list[Param]:
    """Sane ranges around the baseline: learning rates within 4x, depth -1..+2, batch size halved or doubled."""
    space = [Param(n, "log", baseline[n] / 4, baseline[n] * 4) for n in LEARNING_RATES if baseline.get(n, 0) > 0]
    space += [Param(n, "uniform", low, high) for n, (low, high) in RATIOS.items() if n in baseline]
    if "DEPTH" in baseline:
        space.append(Param("DEPTH", "int", max(1, baseline["DEPTH"] - 1), baseline["DEPTH"] + 2))
    if "TOTAL_BATCH_SIZE" in baseline and "DEVICE_BATCH_SIZE" in baseline:
        step = baseline["DEVICE_BATCH_SIZE"] * max_seq_len  # tokens per forward/backward pass
        sizes = (baseline["TOTAL_BATCH_SIZE"] // 2, baseline["TOTAL_BATCH_SIZE"], baseline["TOTAL_BATCH_SIZE"] * 2)
        space.append(Param("TOTAL_BATCH_SIZE", "choice", choices=tuple(s for s in sizes if s >= step and s % step == 0)))
    return space


def sample(param: Param, rng: random.Random) -> Any:
    if param.kind == "log":
        return _round(math.exp(rng.uniform(math.log(param.low), math.log(param.high))))
    if param.kind == "uniform":
        return _round(rng.uniform(param.low, param.high))
    if param.kind == "int":
        return rng.randint(int(param.low), int(param.high))
    return rng.choice(param.choices)


def perturb(param: Param, value: Any, rng: random.Random) -> Any:
    """A step from value that stays inside the param's range (and differs from value where the range allows)."""
    if param.kind == "log":
        return _round(min(param.high, max(param.low, value * math.exp(rng.gauss(0.0, 0.4)))))
    if param.kind == "uniform":
        return _round(min(param.high, max(param.low, value + rng.gauss(0.0, 0.15 * (param.high - param.low)))))
    neighbours = _neighbours(param, value)
    return rng.choice(neighbours) if neighbours else value


def _neighbours(param: Param, value: Any) -> list[Any]:
    if param.kind == "int":
        return [v for v in (value - 1, value + 1) if param.low <= v <= param.high]
    if value not in param.choices:
        return list(param.choices)
    i = param.choices.index(value)
    return [param.choices[j] for j in (i - 1, i + 1) if 0 <= j < len(param.choices)]


def snap(param: Param, value: float) -> float:
    """A float drawn by another sampler, rounded like ours and kept inside the param's range."""
    return min(param.high, max(param.low, _round(value)))


def _round(x: float) -> float:
    return float(f"{x:.4g}")
