"""The durable timers a run's events call for, set in the same append (EventStore.append(timers=...)).

A delay step's StepWaiting gets a timer whose EndDelay command ends the wait: the scheduler service fires it
(services/scheduler/timers.py), so a waiting run needs no driver, no in-memory sleep and no recovery poke.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from libs.events.schemas import CommandEnvelope, Event, Metadata
from libs.events.schemas.run import EndDelay, StepWaiting
from libs.events.timers import CancelTimers, Timer, timer_id_for
from services.executor import approvals

SERVICE = "executor"


def delay_timer(tenant_id: str, waiting: StepWaiting, correlation_id: str | None = None) -> Timer:
    """The timer that ends this wait. Its id derives from (run, step, attempt): recording it twice sets it once."""
    timer_id = timer_id_for("delay", waiting.run_id, waiting.step_id, waiting.attempt)
    command_id = uuid.uuid5(timer_id, "command")
    envelope = CommandEnvelope(
        command_id=command_id, tenant_id=tenant_id, actor="executor",
        correlation_id=correlation_id or str(waiting.run_id),
        command=EndDelay(run_id=waiting.run_id, step_id=waiting.step_id, attempt=waiting.attempt, at=waiting.until),
        issued_at=waiting.at,
    )
    return Timer(timer_id=timer_id, due_at=waiting.until, service=SERVICE, envelope=envelope)


def timers_for(tenant_id: str, metadata: Metadata | None, events: Sequence[Event]) -> list[Timer | CancelTimers]:
    """Every timer the events of one append call for."""
    correlation_id = metadata.correlation_id if metadata is not None else None
    found = [delay_timer(tenant_id, e, correlation_id) for e in events if isinstance(e, StepWaiting)]
    # Approval deadlines and reminders (services/executor/approvals.py), and their cancellation once decided.
    return (found + [t for e in events for t in approvals.timers(tenant_id, correlation_id, e)]
            + approvals.cancelled_timers(events))
