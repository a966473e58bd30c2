"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe (--remote-debugging-pipe: the
browser reads commands from fd 3 and writes answers and events to fd 4, NUL-terminated JSON), so that no client
library and no port are needed."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TIMEOUT_S = 20.0
ERROR_EVENTS = ("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded")


class Chromium:
    """with Chromium() as page: page.open(url); page.eval(js); page.errors (console errors and exceptions so far)."""

    def __init__(self) -> None:
        self.binary = shutil.which("chromium") or shutil.which("chromium-browser")
        self.profile = tempfile.TemporaryDirectory(prefix="arbench-chromium-")
        self.events: list[dict] = []
        self.answers: dict[int, dict] = {}
        self.ready = threading.Condition()
        self.next_id = 0
        self.session = ""

    def __enter__(self) -> Chromium:
        to_browser, from_us = os.pipe()
        to_us, from_browser = os.pipe()
        # above 4, so that putting them on 3 and 4 in the child never overwrites one with the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)

        def pipes_on_3_and_4() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--no-default-browser-check", "--hide-scrollbars", f"--user-data-dir={self.profile.name}",
             "--window-size=1400,1000", "about:blank"],
            preexec_fn=pipes_on_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in high:
            os.close(fd)
        self.writer, self.reader = os.fdopen(from_us, "wb"), os.fdopen(to_us, "rb")
        threading.Thread(target=self._read, daemon=True).start()
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True, browser=True)[
            "sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", browser=True)
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()
        self.writer.close()
        self.profile.cleanup()

    def call(self, method: str, browser: bool = False, **params: Any) -> dict:
        """A command to the page's session (browser=True: to the browser itself); its result."""
        with self.ready:
            self.next_id += 1
            key = self.next_id
        message = {"id": key, "method": method, "params": params}
        if self.session and not browser:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        self.writer.flush()
        with self.ready:
            if not self.ready.wait_for(lambda: key in self.answers, timeout=TIMEOUT_S):
                raise TimeoutError(f"chromium did not answer {method}")
            answer = self.answers.pop(key)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image loaded or failed)."""
        start = len(self.events)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + TIMEOUT_S
        with self.ready:
            if not self.ready.wait_for(lambda: any(e.get("method") == "Page.loadEventFired"
                                                   for e in self.events[start:]),
                                       timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{url} did not load")

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    @property
    def errors(self) -> list[dict]:
        """Console errors, uncaught exceptions and failed loads reported so far."""
        with self.ready:
            events = list(self.events)
        return [e for e in events if e.get("method") in ERROR_EVENTS and _is_error(e)]

    def _read(self) -> None:
        buffer = b""
        while chunk := self.reader.read1(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self.ready:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self.answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self.ready.notify_all()


def _is_error(event: dict) -> bool:
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        return True
    if event["method"] == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    return params.get("entry", {}).get("level") == "error"
