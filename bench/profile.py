"""Benchmark profiles: the task's fixed constants and the baseline hyperparameters per machine class.

A profile is one TOML file in bench/profiles/ with three tables:
  [task]   constants of prepare.py (sequence length, time budget, eval tokens, vocab size)
  [data]   the default data source and how much of it to prepare
  [train]  the baseline values written into train.py's hyperparameter block
Its hash covers every value of these tables, so results of different profiles are never ranked together.
Two top-level keys describe the machine class, not the task, and stay out of the hash:
  needs_gpu     true when the profile's runs only make sense on a GPU (`arbench verify` refuses a host without one)
  noise_sigma   run-to-run standard deviation of the baseline's val_bpb, when known (the null model's scale)
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).parent / "profiles"
TRAIN_PY = Path(__file__).parent / "train.py"


class ProfileError(ValueError):
    """A profile that cannot be found or is malformed."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    task: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    needs_gpu: bool = False
    noise_sigma: float | None = None
    origin: str = ""              # where it was read from (a path; a file at a commit); not part of its hash

    @property
    def cli_name(self) -> str:
        """How `--profile` names it: its name when it is one of bench/profiles, else its path."""
        return self.name if not self.origin or Path(self.origin).parent == PROFILES_DIR else self.origin

    @property
    def hash(self) -> str:
        payload = json.dumps({"task": self.task, "data": self.data, "train": self.train}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def time_budget(self) -> float:
        return float(self.task["time_budget"])

    @property
    def source(self) -> str:
        return self.data["source"]

    def to_toml(self) -> str:
        """The profile as TOML, for the copy placed beside prepare.py in a workspace."""
        lines = [f'name = {json.dumps(self.name)}', f'description = {json.dumps(self.description)}']
        lines += ["needs_gpu = true"] if self.needs_gpu else []
        lines += [f"noise_sigma = {self.noise_sigma!r}"] if self.noise_sigma is not None else []
        for table in ("task", "data", "train"):
            lines += ["", f"[{table}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in getattr(self, table).items()]
        return "\n".join(lines) + "\n"


REQUIRED_TASK_KEYS = ("max_seq_len", "time_budget", "eval_tokens", "vocab_size")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by name (bench/profiles/NAME.toml) or by path to a TOML file."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = PROFILES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {str(name_or_path)!r}; known: {', '.join(available_profiles())}")
    return parse_profile(path.read_text(), origin=str(path), default_name=path.stem)


def parse_profile(text: str, origin: str, default_name: str) -> Profile:
    """A profile from its TOML text; `origin` names it in errors (a path, or a file at a commit)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"profile {origin}: {e}") from None
    missing = [k for k in REQUIRED_TASK_KEYS if k not in raw.get("task", {})]
    if missing:
        raise ProfileError(f"profile {origin}: [task] lacks {', '.join(missing)}")
    if "source" not in raw.get("data", {}):
        raise ProfileError(f"profile {origin}: [data] lacks source")
    sigma = raw.get("noise_sigma")
    return Profile(
        name=raw.get("name", default_name),
        description=raw.get("description", ""),
        task=dict(raw["task"]),
        data=dict(raw["data"]),
        train=dict(raw.get("train", {})),
        needs_gpu=bool(raw.get("needs_gpu", False)),
        noise_sigma=float(sigma) if sigma is not None else None,
        origin=origin,
    )


def render_train_py(profile: Profile, template: str | None = None) -> str:
    """train.py with the profile's baseline hyperparameters written into its hyperparameter block."""
    text = TRAIN_PY.read_text() if template is None else template
    for key, value in profile.train.items():
        pattern = re.compile(rf"^{re.escape(key)}\s*=\s*[^#\n]*?(\s*#.*)?$", re.MULTILINE)
        if not pattern.search(text):
            raise ProfileError(f"profile {profile.name}: train.py has no hyperparameter {key}")
        text = pattern.sub(lambda m: f"{key} = {_python_value(value)}{m.group(1) or ''}", text, count=1)
    return text


def _python_value(value: Any) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(_python_value(v) for v in value) + ")"
    return repr(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)
