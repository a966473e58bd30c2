"""The budgets of a session, enforced by the harness whatever the agent does (its own code never decides):

  seconds          the sandbox stops the agent at it (Sandbox.exec's timeout)
  experiments      the run ledger counts each `python train.py` (harness/ledger.py): the run past the cap is refused
                   before it trains, and BudgetWatch stops the session
  dollars, tokens  the LLM gateway meters every request and refuses those past the cap (Usage.stopped);
                   BudgetWatch, polling its usage, stops the session
An upstream outage that outlasted the gateway's limit (Usage.infra_error) stops the session too, as an
infrastructure failure: not charged to the agent, redone on resume. A disk the agent's own files filled ends it as
disk_full, the agent's failure (harness/session.py). A session ends with one EndReason.
Not covered: the status a session gets from its end (harness/session.py), how the caps are set (harness/config.py
Budget).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.config import Budget
from harness.gateway.client import GatewayError
from harness.gateway.usage import Usage
from harness.ledger import LedgerService
from harness.runtime.base import Sandbox

EndReason = Literal["time", "experiments", "dollars", "tokens", "agent_exit", "disk_full", "infra_error"]
POLL_S = 0.25        # how often the gateway's usage is read while an agent runs (a refused run wakes it at once)


@dataclass(frozen=True)
class Stop:
    reason: EndReason
    message: str


def stop_for(budget: Budget, over_cap: bool, usage: Usage | None) -> Stop | None:
    """The cap or outage that ends a session, from the ledger and the gateway; None while there is none."""
    if usage is not None and usage.infra_error:
        return Stop("infra_error", f"the model provider failed for too long: {usage.infra_error}")
    if over_cap:
        return Stop("experiments", f"stopped at the experiment cap ({budget.experiments} runs): the run past it "
                                   "was refused")
    if usage is not None and usage.stopped == "dollars":
        return Stop("dollars", f"stopped at the dollar cap of ${budget.dollars:g} (${usage.dollars:.4f} spent)")
    if usage is not None and usage.stopped == "tokens":
        return Stop("tokens", f"stopped at the token cap of {budget.tokens} ({usage.tokens} used)")
    return None


class BudgetWatch:
    """`with BudgetWatch(...) as watch: sandbox.exec(...)`: stops the sandbox's command once the ledger refused a run
    or the gateway's usage (read with `usage`, None for an agent without the gateway) says stop; `watch.stop` says
    why, and the agent's log ends with it."""

    def __init__(self, budget: Budget, sandbox: Sandbox, ledger: LedgerService, usage: Callable[[], Usage] | None,
                 log_path: Path):
        self.budget, self.sandbox, self.ledger, self.usage, self.log_path = budget, sandbox, ledger, usage, log_path
        self.stop: Stop | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="budget-watch", daemon=True)

    def __enter__(self) -> BudgetWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.is_set():
            try:
                stop = stop_for(self.budget, self.ledger.over_cap.is_set(), self.usage() if self.usage else None)
            except GatewayError as e:
                stop = Stop("infra_error", f"the LLM gateway failed: {e}")
            if stop is not None:
                self.stop = stop
                with open(self.log_path, "a") as log:
                    log.write(f"\n[arbench] {time.strftime('%H:%M:%S')} session stopped: {stop.message}\n")
                self.sandbox.close()
                return
            self.ledger.over_cap.wait(POLL_S)
