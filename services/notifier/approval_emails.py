"""Approval emails: which events call for one, to whom, what it says (templates/), and sending each once.

PlanApprovalRequested -> the requester (the plan, its outbound destinations, estimated cost, an approve link);
StepAwaitingApproval -> each approver of the paused step (what to review, approve and reject links);
ApprovalReminderDue -> the approvers who have not decided; ApprovalEscalated -> the second approver.

Each (event, recipient) is sent once per successful commit: its senders are serialised by an advisory lock and
the sent-record row is written after the SMTP send, in the same transaction (docs/decisions/0009 has the
at-least-once trade-off; 0033 why no row is claimed first). Link tokens and the
Message-ID derive from the event id and recipient, so a resend carries the same links and id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from libs.security.approval_tokens import issue_plan_token, issue_step_token
from libs.domain.catalog import step_type
from libs.events.consumer import subscribe_events
from libs.domain.definition import plan_hash
from libs.events.faults import crash_point
from libs.adapters.mail import MailError, message_id_for, send_mail
from libs.domain.run_view import fold_run
from libs.events.schemas import Event
from libs.events.schemas.plan import PlanApprovalRequested, PlanGenerated, PlanRevised
from libs.events.schemas.registry import decode_event, event_of
from libs.events.schemas.run import (
    ApprovalEscalated,
    ApprovalPolicy,
    ApprovalReminderDue,
    RunCreated,
    StepAwaitingApproval,
)
from libs.events.schemas.workflow import WorkflowCreated, WorkflowDeleted, WorkflowUpdated
from libs.runtime.service import ServiceContext
from libs.events.settings import Settings
from libs.events.store import EventStore

log = structlog.get_logger()
EMAIL_EVENTS = {"PlanApprovalRequested": "workflow", "StepAwaitingApproval": "run",
                "ApprovalReminderDue": "run", "ApprovalEscalated": "run"}
PREVIEW_ROWS = 10
WORDING = {"step_reminder": "reminder", "step_escalation": "escalation"}  # the step template's variants
_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                         trim_blocks=False, keep_trailing_newline=True)


@dataclass(frozen=True)
class Email:
    recipient: str
    kind: str  # plan_approval | step_approval | step_reminder | step_escalation
    subject: str
    text: str
    html: str


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _render(template: str, **values: Any) -> tuple[str, str]:
    return (_templates.get_template(f"{template}.txt").render(**values),
            _templates.get_template(f"{template}.html").render(**values))


def destination(node: dict[str, Any]) -> str | None:
    """Where an outbound step sends data, in words (templates stay as written: `${...}` is shown raw)."""
    entry = step_type(node)
    if entry is None or not entry.outbound:
        return None
    config = node.get("config") or {}
    match entry.action:
        case "email.send":
            return f"email to {config.get('to')}"
        case "http.request":
            return f"{config.get('method') or 'GET'} {config.get('url')}"
        case "slack.post_message":
            return f"Slack {config.get('channel') or '(the default incoming webhook)'}"
    return entry.action


class ApprovalMailer:
    def __init__(self, store: EventStore, settings: Settings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.settings, self.clock = store, settings, clock

    async def on_event(self, subject: str, headers: dict[str, Any], data: bytes) -> None:
        """weft.evt.<tenant>.<category>.<key>.<EventType>, relayed with the event id as Nats-Msg-Id."""
        tenant_id, stream_id = subject.split(".")[2], headers["Weft-Stream"]
        event_id = uuid.UUID(headers["Nats-Msg-Id"])
        emails = await self.compose(tenant_id, event_id, stream_id, decode_event(stream_id, data))
        for email in emails:
            await self.send_once(tenant_id, event_id, email)

    # ---- sending once ---------------------------------------------------------------------------------

    async def send_once(self, tenant_id: str, event_id: uuid.UUID, email: Email) -> bool:
        """Send unless this (event, recipient) was sent before; True if it was sent now.

        Senders of one (event, recipient) are serialised by an advisory transaction lock; the holder looks for
        the sent-record row, sends, then writes the row and commits. A concurrent second sender (another replica,
        a redelivery) waits on the lock and then finds the row; a crash before the commit records nothing, so the
        redelivered event sends again (same Message-ID): never lost, at worst sent twice. Not a claimed row held
        across the SMTP exchange: an insert takes a transaction id at once, and every global-order reader (the
        relay, live feeds) publishes nothing above the oldest running one (docs/decisions/0032), for every
        tenant, for as long as the mail server takes. An advisory lock takes none; the insert at the end does,
        briefly."""
        message_id = message_id_for(f"{event_id}:{email.recipient}")
        async with self.store.tenant_transaction(tenant_id) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               f"weft.sent_email:{event_id}:{email.recipient}")
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM sent_emails WHERE event_id = $1 AND recipient = $2)",
                                   event_id, email.recipient):
                return False
            error = None
            try:
                await send_mail(self.settings, to=email.recipient, subject=email.subject, text=email.text,
                                html=email.html, headers={"Message-ID": message_id, "X-Weft-Event-Id": str(event_id)})
            except MailError as exc:
                if exc.retryable:
                    raise  # nothing recorded; the event is NAKed and redelivered later
                # Refused for good (a 5xx, a bad address): recorded, not retried forever.
                error = str(exc)[:1000]
                log.error("approval_email_refused", kind=email.kind, to=email.recipient, error=str(exc))
            await conn.execute(
                "INSERT INTO sent_emails (event_id, recipient, tenant_id, kind, message_id, error)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, recipient) DO NOTHING",
                event_id, email.recipient, tenant_id, email.kind, message_id, error)
            if error is not None:
                return False
            crash_point("approval_email_sent")  # the window the trade-off is about: sent, not yet recorded
        log.info("approval_email_sent", kind=email.kind, to=email.recipient, message_id=message_id)
        return True

    # ---- composing ------------------------------------------------------------------------------------

    async def compose(self, tenant_id: str, event_id: uuid.UUID, stream_id: str, event: Event) -> list[Email]:
        match event:
            case PlanApprovalRequested():
                return await self._plan(tenant_id, event_id, stream_id, event)
            case StepAwaitingApproval(policy=policy):
                approvers = policy.approvers if policy and policy.approvers else [self.settings.approval_email]
                return await self._step(tenant_id, event_id, stream_id, event.step_id, approvers, "step_approval")
            case ApprovalReminderDue(approvers=approvers):
                return await self._step(tenant_id, event_id, stream_id, event.step_id, approvers, "step_reminder",
                                        deadline=event.deadline)
            case ApprovalEscalated(approver=approver):
                return await self._step(tenant_id, event_id, stream_id, event.step_id, [approver],
                                        "step_escalation", deadline=event.deadline)
        return []

    async def _plan(self, tenant_id: str, event_id: uuid.UUID, stream_id: str,
                    event: PlanApprovalRequested) -> list[Email]:
        name, goal, definition = "", "", None
        for rec in await self.store.read_stream(tenant_id, stream_id):
            match event_of(rec):
                case WorkflowCreated() as e:
                    name, goal = e.name, e.goal or e.description or ""
                case WorkflowUpdated(name=str() as new_name):
                    name = new_name
                case PlanGenerated() | PlanRevised() as e if e.plan_version == event.plan_version:
                    definition = e.definition
                case WorkflowDeleted():
                    return []  # nothing left to approve
        if definition is None:
            raise LookupError(f"{stream_id}: plan version {event.plan_version} not found")  # NAKed, retried
        recipient = event.requester_email or self.settings.approval_email
        now = self.clock()
        token = issue_plan_token(self.settings, token_id=uuid.uuid5(event_id, recipient), tenant_id=tenant_id,
                                 workflow_id=event.workflow_id, plan_version=event.plan_version,
                                 plan_hash=event.plan_hash, approver=recipient, now=now)
        base = self.settings.public_base_url.rstrip("/")
        steps = [{"id": n["id"], "action": n.get("action") or n["type"], "description": n.get("description") or "",
                  "destination": destination(n)} for n in definition.get("nodes", [])]
        text, html = _render(
            "plan_approval", requested_by=event.requested_by, name=name, goal=goal, plan_version=event.plan_version,
            plan_hash=event.plan_hash, steps=steps, destinations=[s["destination"] for s in steps if s["destination"]],
            est_cost_usd=event.est_cost_usd, approve_url=f"{base}/api/workflows/{event.workflow_id}/approve?"
            + urlencode({"token": token}),
            expires_at=_when(now + timedelta(seconds=self.settings.plan_approval_ttl_s)))
        subject = f'Approve the plan for "{name}" (version {event.plan_version})'
        return [Email(recipient=recipient, kind="plan_approval", subject=subject, text=text, html=html)]

    async def _step(self, tenant_id: str, event_id: uuid.UUID, stream_id: str, step_id: str, recipients: list[str],
                    kind: str, deadline: datetime | None = None) -> list[Email]:
        recorded = await self.store.read_stream(tenant_id, stream_id)
        if step_id not in fold_run(recorded).awaiting:
            return []  # decided (or the run ended) before this email went out: there is nothing to decide
        created = next(e for e in map(event_of, recorded) if isinstance(e, RunCreated))
        paused = [e for e in map(event_of, recorded)
                  if isinstance(e, StepAwaitingApproval) and e.step_id == step_id][-1]
        policy = paused.policy or ApprovalPolicy(plan_hash=plan_hash(created.definition))
        async with self.store.tenant_transaction(tenant_id) as conn:
            workflow_name = await conn.fetchval("SELECT name FROM workflows WHERE tenant_id = $1 AND id = $2",
                                                tenant_id, created.workflow_id) or "a workflow"
        approval = paused.approval
        metadata = approval.get("metadata") or {}
        rows = (approval.get("rows") or [])[:PREVIEW_ROWS]
        fields = approval.get("displayFields") or list(dict.fromkeys(k for r in rows for k in r))
        now = self.clock()
        base = self.settings.public_base_url.rstrip("/")
        emails = []
        for recipient in dict.fromkeys(recipients):
            # One token per action (docs/decisions/0052): the reject link cannot be made from the approve one.
            tokens = {action: issue_step_token(
                self.settings, token_id=uuid.uuid5(event_id, f"{recipient}/{action}"), tenant_id=tenant_id,
                workflow_id=created.workflow_id, run_id=created.run_id, step_id=step_id, plan_hash=policy.plan_hash,
                approver=recipient, action=action, now=now) for action in ("approve", "reject")}
            link = f"{base}/api/workflows/resume?"
            text, html = _render(
                "step_approval", kind=WORDING.get(kind, "request"),
                workflow_name=workflow_name, step_id=step_id, title=metadata.get("title") or "Approval required",
                description=metadata.get("description") or "", rows=rows, total_rows=metadata.get("totalRows", 0),
                fields=fields, required=policy.required, approvers=len(policy.approvers),
                deadline=_when(deadline or policy.deadline), on_timeout=policy.on_timeout,
                require_comment=policy.require_comment,
                approve_url=link + urlencode({"token": tokens["approve"], "action": "approve"}),
                reject_url=link + urlencode({"token": tokens["reject"], "action": "reject"}),
                expires_at=_when(now + timedelta(seconds=self.settings.step_approval_ttl_s)))
            prefix = {"step_reminder": "Reminder: ", "step_escalation": "Escalated: "}.get(kind, "")
            subject = f"{prefix}Approval needed: {metadata.get('title') or step_id} ({workflow_name})"
            emails.append(Email(recipient=recipient, kind=kind, subject=subject, text=text, html=html))
        return emails


def setup_approval_emails(ctx: ServiceContext, settings: Settings) -> ApprovalMailer:
    """Subscribe the events that call for approval emails (one durable consumer per event type)."""
    mailer = ApprovalMailer(ctx.store, settings)
    for event_type, category in EMAIL_EVENTS.items():
        subscribe_events(ctx.broker, durable=f"notifier-email-{event_type}",
                         subject=f"weft.evt.*.{category}.*.{event_type}", settings=settings, handle=mailer.on_event)
    return mailer


__all__ = ["ApprovalMailer", "Email", "destination", "setup_approval_emails"]
