"""libs/adapters/mail.py and the notifier's send-once record, against a real SMTP server on loopback (aiosmtpd)
and the real Postgres (an isolated database: no relay or service process reads it)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from aiosmtpd.controller import Controller

from deploy.local.embedded import free_port
from libs.adapters.mail import MailError, message_id_for, send_mail, sink_path
from libs.events.settings import Settings, load_settings
from libs.events.store import EventStore
from services.notifier.approval_emails import ApprovalMailer, Email
from libs.events.schemas import Metadata
from libs.events.schemas.workflow import WorkflowDeleted
from tests.conftest import poll
from tests.fakes.smtp_server import Inbox, smtp_server


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    with smtp_server() as served:
        yield served


def smtp_settings(controller: Controller, **extra: Any) -> Settings:
    return load_settings({}, smtp_host="127.0.0.1", smtp_port=controller.port, smtp_from="weft@example.com",
                         outbound_timeout_s=5.0, **extra)


async def test_smtp_gets_text_and_html_with_the_callers_message_id(smtp):
    controller, inbox = smtp
    sent = await send_mail(smtp_settings(controller), to=["a@example.com", "b@example.com"], subject="Plan ready",
                           text="plain body", html="<p>rich body</p>",
                           headers={"Message-ID": message_id_for("evt-1:a@example.com"), "X-Weft-Event-Id": "evt-1"})
    (envelope,) = inbox.envelopes
    (message,) = inbox.messages
    assert envelope.mail_from == "weft@example.com" and envelope.rcpt_tos == ["a@example.com", "b@example.com"]
    assert sent == message["Message-ID"].strip() == message_id_for("evt-1:a@example.com")
    assert message["Subject"] == "Plan ready" and message["X-Weft-Event-Id"] == "evt-1"
    assert message.get_body(("plain",)).get_content().strip() == "plain body"
    assert message.get_body(("html",)).get_content().strip() == "<p>rich body</p>"


async def test_without_smtp_the_sink_keeps_one_file_per_message_id_and_says_where(tmp_path: Path):
    settings = load_settings({}, mail_sink_dir=str(tmp_path / "mail"))
    message_id = message_id_for("evt-2:ann@example.com")
    with structlog.testing.capture_logs() as logged:  # said in the service's own (JSON) log, not printed aside
        first = await send_mail(settings, to="ann@example.com", subject="Approve", text="https://x/approve?token=1",
                                headers={"Message-ID": message_id})
        again = await send_mail(settings, to="ann@example.com", subject="Approve", text="https://x/approve?token=2",
                                headers={"Message-ID": message_id})
    path = sink_path(settings, message_id)
    assert first == again == message_id and [p.name for p in (tmp_path / "mail").iterdir()] == [path.name]
    assert message_from_bytes(path.read_bytes(), policy=policy.default).get_body(("plain",)).get_content().strip() \
        == "https://x/approve?token=2"
    written = [e for e in logged if e["event"] == "mail_written"]
    assert [(e["path"], e["to"]) for e in written] == [(str(path.resolve()), "ann@example.com")] * 2


@pytest.mark.parametrize("answer, retryable", [("451 try later", True), ("550 no such user", False)])
async def test_smtp_refusals_say_whether_a_retry_can_help(smtp, answer, retryable):
    controller, inbox = smtp
    inbox.answer = answer
    with pytest.raises(MailError, match=answer.split()[0]) as caught:
        await send_mail(smtp_settings(controller), to="a@example.com", subject="s", text="t")
    assert caught.value.retryable is retryable


async def test_an_unreachable_server_is_retryable():
    settings = load_settings({}, smtp_host="127.0.0.1", smtp_port=free_port(), outbound_timeout_s=2.0)
    with pytest.raises(MailError, match="SMTP") as caught:
        await send_mail(settings, to="a@example.com", subject="s", text="t")
    assert caught.value.retryable


async def test_header_injection_and_bad_addresses_are_refused(tmp_path: Path):
    settings = load_settings({}, mail_sink_dir=str(tmp_path))
    with pytest.raises(MailError, match="header"):
        await send_mail(settings, to="a@example.com", subject="Hi\r\nBcc: x@evil.example", text="t")
    with pytest.raises(MailError, match="@"):
        await send_mail(settings, to=["nobody"], subject="s", text="t")
    assert list(tmp_path.iterdir()) == []


# ---- the notifier's send-once record -------------------------------------------------------------------


def email(recipient: str = "ann@example.com") -> Email:
    return Email(recipient=recipient, kind="plan_approval", subject="Approve", text="link", html="<p>link</p>")


async def sent_rows(store: EventStore, tenant: str, event_id: uuid.UUID) -> list[Any]:
    async with store.tenant_transaction(tenant) as conn:
        return await conn.fetch("SELECT recipient, message_id, error FROM sent_emails WHERE event_id = $1", event_id)


async def test_an_event_is_emailed_once_however_often_and_concurrently_it_is_handled(smtp, isolated_store, tenant):
    controller, inbox = smtp
    mailer = ApprovalMailer(isolated_store, smtp_settings(controller))
    event_id = uuid.uuid4()
    results = await asyncio.gather(*(mailer.send_once(tenant, event_id, email()) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert await mailer.send_once(tenant, event_id, email()) is False
    assert [m["To"] for m in inbox.messages] == ["ann@example.com"]
    (row,) = await sent_rows(isolated_store, tenant, event_id)
    assert row["message_id"] == inbox.messages[0]["Message-ID"].strip() and row["error"] is None
    # Another recipient of the same event is its own message.
    assert await mailer.send_once(tenant, event_id, email("bob@example.com")) is True


async def test_a_slow_mail_server_holds_no_transaction_id_so_the_relay_is_not_held_back(
        smtp, isolated_store, tenant):
    # Every global-order reader (the relay, live feeds) reads only below the oldest running transaction id
    # (docs/decisions/0032): a sender holding one across the SMTP exchange would hold back every tenant's events.
    controller, inbox = smtp
    mailer = ApprovalMailer(isolated_store, smtp_settings(controller))
    event_id = uuid.uuid4()
    inbox.delay_s = 1.5
    try:
        both = asyncio.gather(mailer.send_once(tenant, event_id, email()), mailer.send_once(tenant, event_id, email()))
        await poll(lambda: asyncio.sleep(0, inbox.receiving), lambda n: n >= 1, timeout=5.0, every=0.02)
        database = await isolated_store.pool.fetchval("SELECT current_database()")
        # One sender is in the SMTP exchange, the other waits for it: neither has a transaction id.
        holding = await isolated_store.pool.fetch(
            "SELECT pid, state, backend_xid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND backend_xid IS NOT NULL", database)
        waiting = await isolated_store.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'advisory'", database)
        # And an event appended meanwhile is below the global-order bound at once: the relay could publish it.
        _, (probe,) = await isolated_store.append_recorded(
            f"probe-{uuid.uuid4()}", 0, [WorkflowDeleted(workflow_id=uuid.uuid4(), at=datetime.now(UTC))],
            metadata=Metadata(tenant_id=tenant))
        readable = await isolated_store.pool.fetchval(
            "SELECT $1::xid8 < pg_snapshot_xmin(pg_current_snapshot())", probe.xid)
        assert inbox.messages == []  # still inside the exchange when all of the above was looked at
        results = await both
    finally:
        inbox.delay_s = 0.0
    assert list(holding) == [], holding
    assert waiting == 1  # the second sender waits for the first, on the advisory lock
    assert readable is True
    assert sorted(results) == [False, True] and len(inbox.messages) == 1


async def test_a_failed_send_records_nothing_so_the_redelivery_sends_it(smtp, isolated_store, tenant):
    controller, inbox = smtp
    mailer = ApprovalMailer(isolated_store, smtp_settings(controller))
    event_id = uuid.uuid4()
    inbox.answer = "421 busy"
    with pytest.raises(MailError):
        await mailer.send_once(tenant, event_id, email())
    assert await sent_rows(isolated_store, tenant, event_id) == []
    inbox.answer = "250 OK"
    assert await mailer.send_once(tenant, event_id, email()) is True
    assert len(inbox.messages) == 1


async def test_a_permanent_refusal_is_recorded_and_not_retried(smtp, isolated_store, tenant):
    controller, inbox = smtp
    mailer = ApprovalMailer(isolated_store, smtp_settings(controller))
    event_id = uuid.uuid4()
    inbox.answer = "550 mailbox unavailable"
    assert await mailer.send_once(tenant, event_id, email()) is False
    (row,) = await sent_rows(isolated_store, tenant, event_id)
    assert "550" in row["error"]
    inbox.answer = "250 OK"
    assert await mailer.send_once(tenant, event_id, email()) is False and inbox.messages == []


async def test_make_up_prints_each_new_sink_message_with_its_link(tmp_path: Path, capsys):
    from deploy.local.mailbox import MailWatcher

    settings = load_settings({}, mail_sink_dir=str(tmp_path / "mail"))
    await send_mail(settings, to="old@example.com", subject="Before", text="http://127.0.0.1:8000/old")
    watcher = MailWatcher(tmp_path / "mail")  # what was there before `make up` is not news
    capsys.readouterr()
    await send_mail(settings, to="ann@example.com", subject="Approve the plan", text="Approve:\n"
                    "http://127.0.0.1:8000/api/workflows/w/approve?token=abc\n")
    watcher.report()
    watcher.report()  # printed once
    out = capsys.readouterr().out
    assert out.count("to ann@example.com: Approve the plan\n") == 1 and "old@example.com" not in out
    assert "approve: http://127.0.0.1:8000/api/workflows/w/approve?token=abc" in out
