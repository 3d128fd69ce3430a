"""Load -> decide -> append for one command against one stream, with bounded retries on conflicts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from libs.events.errors import DomainError
from libs.events.schemas import CommandEnvelope, Event, Metadata, Outcome
from libs.events.schemas.registry import event_of
from libs.events.store import CommandAlreadyProcessed, EventStore, RecordedEvent, WrongExpectedVersion
from libs.telemetry.tracing import current_traceparent

S = TypeVar("S")
MAX_CONFLICT_RETRIES = 5


def fold(initial: S, evolve: Callable[[S, Event], S], recorded: Sequence[RecordedEvent]) -> S:
    state = initial
    for rec in recorded:
        state = evolve(state, event_of(rec))
    return state


def metadata_for(envelope: CommandEnvelope) -> Metadata:
    return Metadata(
        tenant_id=envelope.tenant_id,
        correlation_id=envelope.correlation_id,
        causation_id=str(envelope.command_id),
        actor=envelope.actor,
        command_id=str(envelope.command_id),
        traceparent=current_traceparent(),  # the span handling this command (libs/events/consumer.py)
    )


async def handle_command(
    store: EventStore,
    envelope: CommandEnvelope,
    stream_id: str,
    initial: Any,
    evolve: Callable[[Any, Event], Any],
    decide: Callable[[Any, Any], list[Event]],
    *,
    status: int = 200,
    timers: Callable[[Sequence[Event]], Sequence[Any]] | None = None,
    on_appended: Callable[[list[RecordedEvent]], None] | None = None,
    follow: Callable[[Any], Awaitable[list[Event]]] | None = None,
) -> Outcome:
    """Run a command to its recorded outcome. Idempotent by command id; refusals are recorded too.
    `timers(events)` names the durable timers the decided events call for, set in the same append.
    `follow(state)` may add events that follow from the decided ones (given the state with them folded
    in), appended in the same transaction: the executor's first pass over a new run.
    `on_appended(stream)` is told the whole stream after this command appended (not when it was refused or
    had been handled before)."""
    tenant_id = envelope.tenant_id
    for _attempt in range(MAX_CONFLICT_RETRIES):
        try:
            # Load, decide and append in one transaction (no lock: docs/decisions/0032), and a
            # conflict (another writer got there first) rolls it all back for a fresh try.
            async with store.transaction(tenant_id) as tx:
                done, recorded = await tx.load(stream_id, envelope.command_id)
                if done is not None:
                    return done
                state = fold(initial, evolve, recorded)
                events = decide(envelope.command, state)
                if follow is not None and events:
                    after = state
                    for event in events:
                        after = evolve(after, event)
                    events = [*events, *await follow(after)]
                outcome, appended = await tx.append_recorded(
                    stream_id, len(recorded), events, metadata=metadata_for(envelope), status=status,
                    timers=timers(events) if timers is not None else (),
                )
        except DomainError as refused:
            # Recorded in a transaction of its own: a refusal raised by the append (a projection's
            # constraint) has aborted the one above.
            return await store.record_outcome(
                tenant_id,
                Outcome(
                    command_id=envelope.command_id,
                    status=refused.status,
                    stream_id=stream_id,
                    error=refused.message,
                    field=refused.field,
                ),
            )
        except CommandAlreadyProcessed as dup:
            return dup.outcome
        except WrongExpectedVersion:
            continue
        if on_appended is not None:
            on_appended([*recorded, *appended])
        return outcome
    raise WrongExpectedVersion(stream_id, -1, -1)  # transient: the consumer NAKs and retries later
