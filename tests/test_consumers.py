"""Command consumers against the real nats-server and Postgres: ack after commit, NAK and redelivery,
poison commands recorded as CommandRejected after MaxDeliver."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
import nats
import pytest
from faststream.nats import NatsBroker

from libs.events.bus import CommandBus, command_subject, ensure_streams
from libs.events.consumer import subscribe_commands
from libs.events.schemas import CommandEnvelope, CommandRejected
from libs.events.schemas.workflow import CreateWorkflow, WorkflowCommand
from services.planner.handlers import handle_workflow_command
from tests.conftest import poll


def _envelope(tenant: str, name: str) -> CommandEnvelope:
    command_id = uuid.uuid4()
    return CommandEnvelope(
        command_id=command_id, tenant_id=tenant, actor="alice", correlation_id=str(command_id),
        command=CreateWorkflow(workflow_id=uuid.uuid4(), name=name, definition={"nodes": []}, created_by="alice",
                               at=datetime.now(UTC)),
        issued_at=datetime.now(UTC),
    )


@pytest.fixture
async def nc(settings):
    conn = await nats.connect(settings.nats_url)
    await ensure_streams(conn.jetstream(), settings)
    yield conn
    await conn.drain()


@pytest.fixture
def service_name() -> str:
    # A service name of its own gives the test its own subject filter and durable consumer.
    return f"svc{uuid.uuid4().hex[:10]}"


async def _workflow_count(store, tenant: str) -> int:
    async with store.tenant_transaction(tenant) as conn:
        return await conn.fetchval("SELECT count(*) FROM workflows")


async def test_command_survives_a_handler_failure(settings, store, nc, tenant, service_name):
    deliveries: list[int] = []

    async def flaky(envelope: CommandEnvelope):
        deliveries.append(len(deliveries) + 1)
        if len(deliveries) == 1:
            raise ConnectionResetError("database went away mid-command")
        return await handle_workflow_command(store, envelope)

    broker = NatsBroker(settings.nats_url)
    subscribe_commands(broker, service=service_name, settings=settings, store=store, nc=nc,
                       command_type=WorkflowCommand, handle=flaky)
    await broker.start()
    try:
        outcome = await CommandBus(nc, nc.jetstream(), 10.0).send(service_name, _envelope(tenant, "flaky"))
    finally:
        await broker.stop()
    assert outcome is not None and outcome.status == 201
    assert deliveries == [1, 2]
    assert await _workflow_count(store, tenant) == 1


async def test_faststream_default_policy_would_drop_a_failed_command(settings, nc, tenant, service_name):
    """Why every subscriber uses AckPolicy.MANUAL: with FastStream's default, one failure loses the command."""
    from faststream.nats import JStream, PullSub

    calls: list[int] = []
    broker = NatsBroker(settings.nats_url)

    @broker.subscriber(f"weft.cmd.{service_name}.>", stream=JStream("WEFT_COMMANDS", declare=False),
                       durable=f"{service_name}-default", pull_sub=PullSub(batch_size=1, timeout=0.5))
    async def handler(msg) -> None:
        calls.append(1)
        raise ConnectionResetError("transient")

    await broker.start()
    try:
        js = nc.jetstream()
        await js.publish(command_subject(service_name, tenant, "CreateWorkflow"), b"{}",
                         headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await poll(lambda: asyncio.sleep(0, len(calls)), lambda n: n >= 1, timeout=10)
        await asyncio.sleep(2.0)  # ample time for a redelivery (NAK or ack_wait) that never comes
    finally:
        await broker.stop()
    assert len(calls) == 1


async def test_poison_command_becomes_command_rejected_after_max_deliver(settings, store, nc, tenant, service_name):
    settings = msgspec.structs.replace(settings, max_deliver=3, nak_delay_s=0.05)
    seen: list[int] = []

    async def always_fails(envelope: CommandEnvelope):
        seen.append(1)
        raise ValueError("bug: cannot handle this command")

    broker = NatsBroker(settings.nats_url)
    subscribe_commands(broker, service=service_name, settings=settings, store=store, nc=nc,
                       command_type=WorkflowCommand, handle=always_fails)
    await broker.start()
    envelope = _envelope(tenant, "poison")
    try:
        outcome = await CommandBus(nc, nc.jetstream(), 10.0).send(service_name, envelope)
    finally:
        await broker.stop()
    assert len(seen) == 3
    assert outcome is not None and outcome.status == 500
    events = await store.read_stream(tenant, f"command-{envelope.command_id}")
    assert [e.type for e in events] == ["CommandRejected"]
    rejected = msgspec.json.decode(events[0].data, type=CommandRejected)
    assert rejected.deliveries == 3 and "cannot handle this command" in rejected.reason
    assert (await store.outcome(tenant, envelope.command_id)).status == 500
    assert await _workflow_count(store, tenant) == 0


async def test_undecodable_command_is_rejected_at_once(settings, store, nc, tenant, service_name):
    calls: list[int] = []

    async def handler(envelope):
        calls.append(1)

    broker = NatsBroker(settings.nats_url)
    subscribe_commands(broker, service=service_name, settings=settings, store=store, nc=nc,
                       command_type=WorkflowCommand, handle=handler)
    await broker.start()
    command_id = uuid.uuid4()
    try:
        await nc.jetstream().publish(command_subject(service_name, tenant, "CreateWorkflow"), b"not json",
                                     headers={"Nats-Msg-Id": str(command_id)})
        events = await poll(lambda: store.read_stream(tenant, f"command-{command_id}"), lambda evs: len(evs) == 1)
    finally:
        await broker.stop()
    assert calls == []
    assert msgspec.json.decode(events[0].data, type=CommandRejected).deliveries == 1


async def test_redelivered_command_appends_nothing(settings, store, nc, tenant, service_name):
    """The same command delivered twice (JetStream is at-least-once) yields one workflow, one outcome."""
    envelope = _envelope(tenant, "twice")
    first = await handle_workflow_command(store, envelope)
    second = await handle_workflow_command(store, envelope)
    assert first == second and first.status == 201
    assert len(await store.read_stream(tenant, first.stream_id)) == 1


async def test_a_slow_handler_is_not_redelivered_while_it_works(settings, store, nc, tenant, service_name):
    """A model call can outlast ack_wait; in-progress heartbeats keep JetStream from handing it out again."""
    settings = msgspec.structs.replace(settings, ack_wait_s=1.0)
    calls: list[int] = []

    async def slow(envelope: CommandEnvelope):
        calls.append(1)
        await asyncio.sleep(2.5)
        return await handle_workflow_command(store, envelope)

    broker = NatsBroker(settings.nats_url)
    subscribe_commands(broker, service=service_name, settings=settings, store=store, nc=nc,
                       command_type=WorkflowCommand, handle=slow, max_workers=2)
    await broker.start()
    try:
        outcome = await CommandBus(nc, nc.jetstream(), 10.0).send(service_name, _envelope(tenant, "slow"))
        await asyncio.sleep(1.5)  # a redelivery would have arrived by now
    finally:
        await broker.stop()
    assert outcome is not None and outcome.status == 201
    assert len(calls) == 1


async def test_data_postgres_cannot_store_is_refused_at_once_as_the_clients_error(settings, store, nc, tenant,
                                                                                   service_name):
    """A NUL character that got past every boundary fails identically on every delivery: refused on the first,
    with a 4xx outcome, not retried until MaxDeliver."""
    calls: list[int] = []

    async def handle(envelope: CommandEnvelope):
        calls.append(1)
        return await handle_workflow_command(store, envelope)

    broker = NatsBroker(settings.nats_url)
    subscribe_commands(broker, service=service_name, settings=settings, store=store, nc=nc,
                       command_type=WorkflowCommand, handle=handle)
    await broker.start()
    envelope = _envelope(tenant, "nul\x00name")
    try:
        outcome = await CommandBus(nc, nc.jetstream(), 10.0).send(service_name, envelope)
        await asyncio.sleep(1.0)  # a redelivery (NAK delay 0.5 s) would have come by now
    finally:
        await broker.stop()
    assert outcome is not None and outcome.status == 400 and "Invalid data" in outcome.error
    assert calls == [1]
    events = await store.read_stream(tenant, f"command-{envelope.command_id}")
    assert msgspec.json.decode(events[0].data, type=CommandRejected).deliveries == 1
    assert await _workflow_count(store, tenant) == 0
