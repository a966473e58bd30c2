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
    """The runtime called name; "auto" is docker when an engine answers, else process with a warning."""
    if name == "auto":
        from harness.runtime.docker import docker_available

        if docker_available():
            name = "docker"
        else:
            print("warning: no Docker engine answers; using the process runtime: results are NOT containerized",
                  file=sys.stderr)
            name = "process"
    if name not in RUNTIMES:
        raise RuntimeError_(f"unknown runtime {name!r}; known: auto, {', '.join(RUNTIMES)}")
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
