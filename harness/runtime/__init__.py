"""Runtimes: where a session's agent or a verification run executes.

RUNTIMES maps a name to "module:Class"; get_runtime() imports lazily, so the docker SDK is only
loaded when the docker runtime is asked for.
"""

from __future__ import annotations

import importlib
import sys

from harness.runtime.base import Runtime, RuntimeError_

RUNTIMES = {
    "process": "harness.runtime.process:ProcessRuntime",
    "docker": "harness.runtime.docker:DockerRuntime",
}


def get_runtime(name: str, **options) -> Runtime:
    """The runtime called name; "auto" is docker when an engine answers with this checkout's image,
    else process with a warning saying why."""
    if name == "auto":
        try:
            return get_runtime("docker", **options)
        except RuntimeError_ as e:
            print(f"warning: {e}; using the process runtime: results are NOT containerized", file=sys.stderr)
            return get_runtime("process", **options)
    if name not in RUNTIMES:
        raise RuntimeError_(f"unknown runtime {name!r}; known: auto, {', '.join(RUNTIMES)}")
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
