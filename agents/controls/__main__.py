"""python -m agents.controls NAME [--max-experiments N] [--seed S]   (cwd = the workspace)"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from agents.controls import CONTROLS, UnknownControl, load_control


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.controls", description="Run a control agent in the workspace (cwd).")
    parser.add_argument("name", help=f"one of: {', '.join(CONTROLS)}")
    parser.add_argument("--max-experiments", type=int, default=None, help="stop after N results.tsv rows, baseline included")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        control = load_control(args.name)
    except UnknownControl as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not (Path.cwd() / "train.py").is_file() or not (Path.cwd() / "profile.toml").is_file():
        print("error: run this inside a workspace (no train.py or profile.toml in the current directory)", file=sys.stderr)
        return 2
    # a kill from the harness unwinds normally, so the training run in flight is killed with us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        control(Path.cwd(), seed=args.seed, max_experiments=args.max_experiments).run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
