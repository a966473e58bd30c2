"""`python -m bench.prepare --profile P --source S`: fetch a source's shards and train the tokenizer.

Idempotent (a second call verifies checksums and does nothing), resumable after a kill (every file
is written to .tmp and renamed; the manifest records a file only once it is complete).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from bench.profile import Profile, ProfileError, load_profile
from bench.sources import SOURCES, UnknownSourceError, get_source
from bench.sources.base import DataError, FetchError, Layout, Manifest, Source, prepare_data

PREPARE_PY = Path(__file__).resolve().parent.parent / "prepare.py"
LOCK = ".prepare.lock"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    console = Console(highlight=False, markup=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    try:
        profile = load_profile(args.profile)
        source = get_source(args.source or profile.source)
    except (ProfileError, UnknownSourceError) as e:
        errors.print(f"error: {e}")
        sys.exit(2)
    try:
        prepare(profile, args.profile, source, args.train_shards, console)
    except (DataError, FetchError) as e:
        errors.print(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        errors.print("interrupted: run the same command again to resume")
        sys.exit(130)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.prepare",
                                     description="Prepare a data source (shards + checksums) and train the tokenizer.")
    parser.add_argument("--profile", default=os.environ.get("ARBENCH_PROFILE", "h100"),
                        help="profile name in bench/profiles/ or path to a .toml (default: $ARBENCH_PROFILE or h100)")
    parser.add_argument("--source", default=None, help=f"one of {', '.join(sorted(SOURCES))} (default: the profile's)")
    parser.add_argument("--train-shards", type=int, default=None,
                        help="train shards to prepare (default: the profile's)")
    return parser


def prepare(profile: Profile, profile_arg: str, source: Source, train_shards: int | None, console: Console) -> None:
    started = time.monotonic()
    prep = load_prepare_module(profile_arg, source.name)
    layout = Layout(Path(prep.DATA_DIR), Path(prep.TEST_DIR))
    shards = train_shards if train_shards is not None else int(profile.data.get("train_shards", 1))
    if shards < 1:
        raise DataError(f"at least one train shard is needed, not {shards}")
    console.print(f"Preparing source {source.name} for profile {profile.name} ({shards} train shards, "
                  f"vocab {prep.VOCAB_SIZE}) into {layout.data_dir} (test split: {layout.test_dir})")
    with _exclusive(layout.data_dir, console):
        with _progress(console) as progress:
            report = prepare_data(source, layout, shards, progress)
        console.print(f"Data: {len(report.fetched)} files written, {len(report.verified)} already present and verified")
        trained = _ensure_tokenizer(prep, layout.data_dir, console)
    if not report.fetched and not trained:
        console.print(f"Nothing to do: {source.name} data and tokenizer already prepared and verified "
                      f"at {layout.data_dir}")
    else:
        console.print(f"Done in {time.monotonic() - started:.1f}s: {layout.data_dir}")


@contextmanager
def _exclusive(data_dir: Path, console: Console) -> Iterator[None]:
    """One prepare per data directory at a time; a second one waits (the lock dies with its process)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"Waiting for another prepare of {data_dir} to finish...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_prepare_module(profile_arg: str, source_name: str) -> ModuleType:
    """A fresh instance of prepare.py whose constants come from this profile and source (it reads them
    from the environment at import; the environment is restored afterwards)."""
    saved = {key: os.environ.get(key) for key in ("ARBENCH_PROFILE", "ARBENCH_SOURCE")}
    os.environ.update(ARBENCH_PROFILE=profile_arg, ARBENCH_SOURCE=source_name)
    try:
        spec = importlib.util.spec_from_file_location("_arbench_prepare", PREPARE_PY)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ensure_tokenizer(prep: ModuleType, data_dir: Path, console: Console) -> bool:
    """Train the tokenizer unless a verified one trained on the current train files exists. True if trained."""
    manifest = Manifest.load(data_dir)
    tokenizer_dir = Path(prep.TOKENIZER_DIR).relative_to(data_dir).as_posix()
    files = [f"{tokenizer_dir}/tokenizer.pkl", f"{tokenizer_dir}/token_bytes.pt"]
    trained_on = _train_digest(manifest)
    problems = [p for p in (manifest.verify(data_dir, f) for f in files) if p]
    if manifest.tokenizers.get(tokenizer_dir) == trained_on and not problems:
        console.print(f"Tokenizer: already trained at {prep.TOKENIZER_DIR} (verified)")
        return False
    for f in files:
        (data_dir / f).unlink(missing_ok=True)
    shards = len(prep.list_parquet_files("train"))
    console.print(f"Tokenizer: training vocab {prep.VOCAB_SIZE} on {shards} train shards...")
    try:
        prep.train_tokenizer()
    except prep.TokenizerError as e:
        raise DataError(str(e)) from None
    for f in files:
        manifest.record(data_dir, f)
    manifest.tokenizers[tokenizer_dir] = trained_on
    manifest.save(data_dir)
    return True


def _train_digest(manifest: Manifest) -> str:
    lines = sorted(f"{path}:{rec['sha256']}" for path, rec in manifest.files.items() if path.startswith("train/"))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)
