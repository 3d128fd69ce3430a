"""`delay`: wait config.seconds. The step only says until when; the decider records StepWaiting and the
append sets a durable timer that ends the wait (services/executor/timers.py), so no process sleeps for it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.executor.effects import WaitUntil
from services.executor.steps import StepCall, StepDeps, StepError, config_of, step

MAX_SECONDS = 604800  # a week, as the step catalogue says


# Pure: the end of the wait derives from the node, the context and the attempt's start time (call.at), so
# it runs inline and StepWaiting commits with the StepStarted before it.
@step("delay", pure=True)
async def delay(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps | None = None) -> Any:
    """WaitUntil(call.at + config.seconds)."""
    seconds = config_of(node, context).get("seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SECONDS:
        raise StepError(f"delay: config.seconds must be a number from 0 to {MAX_SECONDS}, got {seconds!r}")
    if call.at is None:
        raise StepError("delay: the call carries no start time")
    return WaitUntil(until=call.at + timedelta(seconds=float(seconds)))
