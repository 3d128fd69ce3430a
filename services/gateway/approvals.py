"""Approval decisions every surface shares (`pending_approval`, `decide`) and the console's email-link routes
(spec B): GET /api/workflows/{id}/approve?token= (plan) and GET /api/workflows/resume?token=&action=&note=
(step), plus their POST forms for the confirmation-page mode (`WEFT_APPROVAL_LINKS_CONFIRM`).

Links need no session: the signed token is the credential (libs/security/approval_tokens.py). HEAD requests and
known link scanners get 200 with no side effect. A decision is a command to the owning service, whose
decider checks the binding (plan hash, step, approver) and whose append spends the token id.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import HttpMethod, Request, Response, Router, post, route
from litestar.enums import RequestEncodingType
from litestar.openapi import ResponseSpec
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect

from libs.security.approval_tokens import TokenError, verify_plan_token, verify_step_token
from libs.events.schemas import CommandEnvelope, Outcome
from libs.events.schemas.plan import ApprovePlan
from libs.events.schemas.run import DecideApproval
from libs.events.store import EventStore
from services.gateway.commands import now
from services.gateway.errors import PLAIN_EXCEPTION_HANDLERS, PlainError, plain_error_body, responses

log = structlog.get_logger()
_pages = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                     autoescape=select_autoescape(["html"]))

# Lower-case fragments of the user agents of crawlers, chat-app link previews (unfurlers) and mail security
# scanners that fetch links in messages; they must never decide anything (WEFT_APPROVAL_BOT_USER_AGENTS adds
# more; README "Approvals" lists them). Microsoft's Safe Links and Office apps fetch as "Microsoft Office ..."
# or "ms-office"; Outlook's own previews say "Outlook"; Slack, Teams, Iframely and Embedly unfurl links.
BOT_USER_AGENTS = (
    "bot", "crawler", "spider", "slurp", "preview", "scanner", "facebookexternalhit", "linkedin", "whatsapp",
    "telegram", "discord", "skype", "googleimageproxy", "google-safety", "proofpoint", "mimecast", "barracuda",
    "urldefense", "safelinks", "symantec", "bitdefender", "trendmicro", "forcepoint", "sophos", "ironport",
    "headlesschrome", "python-requests", "go-http-client", "java/", "wget", "libwww-perl",
    "microsoft office", "ms-office", "msoffice", "outlook", "microsoft-teams", "teams/", "iframely", "embedly",
    "slack", "mattermost", "unfurl", "curl/", "httpx", "aiohttp", "okhttp", "axios", "node-fetch", "zgrab",
)
MAX_NOTE = 2000


class PendingApproval(msgspec.Struct, frozen=True, kw_only=True):
    run_id: uuid.UUID
    workflow_id: uuid.UUID
    step_id: str
    approval: dict[str, Any]
    started_at: Any
    paused_at: str | None = None


# ---- shared by every surface --------------------------------------------------------------------------


async def run_row(store: EventStore, tenant_id: str, run_id: uuid.UUID):
    """The run's read-model row (id, workflow_id, status, started_at, steps as text), or None."""
    async with store.tenant_transaction(tenant_id) as conn:
        return await conn.fetchrow(
            "SELECT id, workflow_id, status, started_at, steps::text AS steps FROM runs WHERE tenant_id = $1"
            " AND id = $2", tenant_id, run_id)


def pending_of(row) -> PendingApproval | None:
    """The run's first step paused on an approval (in the order they paused), with what it shows."""
    steps = msgspec.json.decode(row["steps"])
    waiting = sorted(((s.get("paused_at") or "", sid, s) for sid, s in steps.items()
                      if s.get("status") == "awaiting_approval"), key=lambda item: item[:2])
    if not waiting:
        return None
    paused_at, sid, step = waiting[0]
    return PendingApproval(run_id=row["id"], workflow_id=row["workflow_id"], step_id=sid,
                           approval=step.get("approval") or {}, started_at=row["started_at"],
                           paused_at=paused_at or None)


async def pending_approval(store: EventStore, tenant_id: str, run_id: uuid.UUID) -> PendingApproval | None:
    row = await run_row(store, tenant_id, run_id)
    return None if row is None else pending_of(row)


async def _comment_required(store: EventStore, tenant_id: str, run_id: uuid.UUID, step_id: str) -> bool:
    row = await run_row(store, tenant_id, run_id)
    step = msgspec.json.decode(row["steps"]).get(step_id, {}) if row is not None else {}
    return bool(((step.get("approval") or {}).get("metadata") or {}).get("requireComment"))


async def decide(state: Any, *, tenant_id: str, actor: str, service: str, command: Any) -> Outcome | None:
    """Send a decision command and wait (bounded) for its committed outcome; None: accepted, not yet
    committed. Every request is its own command, so a reused token is refused by the decider, not merged."""
    command_id = uuid.uuid4()
    envelope = CommandEnvelope(command_id=command_id, tenant_id=tenant_id, actor=actor,
                               correlation_id=str(command_id), command=command, issued_at=now())
    outcome = await state.bus.send(service, envelope)
    return outcome or await state.ctx.store.outcome(tenant_id, command_id)


def client_ip(request: Request) -> str:
    """The peer address (behind a proxy, run uvicorn with --proxy-headers/FORWARDED_ALLOW_IPS so it is the
    client's); recorded with every decision."""
    return request.client.host if request.client else ""


def user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:500]


def is_link_scanner(request: Request) -> bool:
    """HEAD, no user agent, or a known crawler/preview/scanner agent: answer 200 and change nothing."""
    if request.method == "HEAD":
        return True
    agent = user_agent(request).lower()
    extra = request.app.state.settings.approval_bot_user_agents
    fragments = BOT_USER_AGENTS + tuple(f.strip().lower() for f in extra.split(",") if f.strip())
    return not agent or any(fragment in agent for fragment in fragments)


# ---- pages and errors ---------------------------------------------------------------------------------


def _wants_html(request: Request) -> bool:
    return request.accept.best_match(["application/json", "text/html"], default="application/json") == "text/html"


def _page(template: str, status: int = 200, **values: Any) -> Response:
    return Response(_pages.get_template(template).render(**values), status_code=status, media_type="text/html")


def _error(request: Request, status: int, message: str, field: str | None = None) -> Response:
    """B's error shape {"error", "message"}; an HTML page for a browser that asks for one."""
    if _wants_html(request):
        return _page("approval_notice.html", status, title="This link cannot be used", message=message)
    return Response(plain_error_body(status, message, field), status_code=status)


def _scanner_page() -> Response:
    return _page("approval_notice.html", title="Approval link",
                 message="Open this link in a browser to record a decision. Nothing was changed.")


def _refused(request: Request, outcome: Outcome | None) -> Response:
    """A decision's outcome as B answers it: redirect on success; 400 for every refusal (404: gone)."""
    if outcome is None:
        return _page("approval_notice.html", 202, title="Decision received",
                     message="Your decision was received and is being recorded.")
    if outcome.status >= 500:
        return _error(request, 503, "The decision could not be recorded; try the link again shortly")
    status = 404 if outcome.status == 404 else 400
    return _error(request, status, outcome.error or "Decision refused", outcome.field)


class PlanLinkForm(msgspec.Struct, kw_only=True):
    """The confirmation page's form (WEFT_APPROVAL_LINKS_CONFIRM): the link's token, posted back."""

    token: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class StepLinkForm(msgspec.Struct, kw_only=True):
    token: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    action: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=MAX_NOTE)] | None = None


Token = Annotated[str | None, QueryParameter(max_length=4096, description="the emailed link's signed token")]
FORM = Body(media_type=RequestEncodingType.URL_ENCODED)
LINK_RESPONSES = {
    200: ResponseSpec(data_container=str, media_type="text/html", generate_examples=False,
                      description="A page: the confirmation form, or for link scanners and HEAD, a notice (no effect)"),
    202: ResponseSpec(data_container=str, media_type="text/html", generate_examples=False,
                      description="The decision was received and is being recorded"),
    303: ResponseSpec(data_container=None, generate_examples=False,
                      description="Decided: redirect to the workflow's dashboard page"),
    **{code: spec for code, spec in responses(PlainError, 404).items() if code != 401},
}


# ---- plan approval ------------------------------------------------------------------------------------


@route("/{workflow_id:uuid}/approve", http_method=[HttpMethod.GET, HttpMethod.HEAD], status_code=200,
       responses=LINK_RESPONSES, security=[])
async def approve_plan(request: Request, workflow_id: FromPath[uuid.UUID], token: Token = None) -> Response:
    """Approve a draft's plan through its emailed link and activate the workflow (no session: the token is
    the credential). Link scanners and HEAD get a page and change nothing."""
    if is_link_scanner(request):
        return _scanner_page()
    return await _approve_plan(request, str(workflow_id), {"token": token})


@post("/{workflow_id:uuid}/approve", status_code=200, responses=LINK_RESPONSES, security=[])
async def confirm_plan(request: Request, workflow_id: FromPath[uuid.UUID],
                       data: Annotated[PlanLinkForm, FORM]) -> Response:
    """The confirmation page's button (WEFT_APPROVAL_LINKS_CONFIRM=true)."""
    return await _approve_plan(request, str(workflow_id), {"token": data.token})


async def _approve_plan(request: Request, workflow_id: str, fields: dict[str, str | None]) -> Response:
    settings = request.app.state.settings
    try:
        claims = verify_plan_token(settings, fields.get("token"))
    except TokenError as exc:
        return _error(request, 400, f"Invalid approval link: {exc.message}", "token")
    if str(claims.workflow_id) != workflow_id:
        return _error(request, 400, "Invalid approval link: the token was issued for another workflow", "token")
    if request.method == "GET" and settings.approval_links_confirm:
        return _page("approval_confirm.html", title="Approve this workflow plan",
                     prompt=f"Approve plan version {claims.plan_version} and activate the workflow?",
                     action_url=f"/api/workflows/{workflow_id}/approve", token=fields["token"], action=None,
                     with_note=False, button="Approve plan")
    command = ApprovePlan(workflow_id=claims.workflow_id, plan_version=claims.plan_version,
                          plan_hash=claims.plan_hash, approved_by=claims.approver, token_id=claims.token_id,
                          client_ip=client_ip(request), user_agent=user_agent(request),
                          via="confirm-page" if request.method == "POST" else "email", at=now())
    outcome = await decide(request.app.state, tenant_id=claims.tenant_id, actor=f"approval-link:{claims.approver}",
                           service="planner", command=command)
    log.info("plan_approval_link_used", workflow_id=workflow_id, token_id=str(claims.token_id),
             status=outcome.status if outcome else 202)
    if outcome is not None and outcome.ok:
        return Redirect(f"/dashboard/workflows/{workflow_id}", status_code=303)
    return _refused(request, outcome)


# ---- step approval ------------------------------------------------------------------------------------


@route("/resume", http_method=[HttpMethod.GET, HttpMethod.HEAD], status_code=200, responses=LINK_RESPONSES,
       security=[])
async def resume_run(request: Request, token: Token = None,
                     action: Annotated[str | None, QueryParameter(max_length=20,
                                                                  description="approve or reject")] = None,
                     note: Annotated[str | None, QueryParameter(description="optional feedback (with reject)")] = None
                     ) -> Response:
    """Approve or reject a paused step through its emailed link; the run resumes or stops."""
    if is_link_scanner(request):
        return _scanner_page()
    return await _resume(request, {"token": token, "action": action, "note": note})


@post("/resume", status_code=200, responses=LINK_RESPONSES, security=[])
async def confirm_resume(request: Request, data: Annotated[StepLinkForm, FORM]) -> Response:
    """The confirmation page's button, with the approver's note."""
    return await _resume(request, {"token": data.token, "action": data.action, "note": data.note})


async def _resume(request: Request, fields: dict[str, str | None]) -> Response:
    settings = request.app.state.settings
    try:
        claims = verify_step_token(settings, fields.get("token"))
    except TokenError as exc:
        return _error(request, 400, f"Invalid approval link: {exc.message}", "token")
    action, note = fields.get("action") or claims.action, fields.get("note") or ""
    if action not in ("approve", "reject"):
        return _error(request, 400, "action must be approve or reject", "action")
    if action != claims.action:  # the decision is signed into the token: an edited action= is refused
        return _error(request, 400, f"This link can only {claims.action}: the action was changed", "action")
    if len(note) > MAX_NOTE:
        return _error(request, 400, f"note must be at most {MAX_NOTE} characters", "note")
    # A link of a step that needs a comment asks for it (a page, no side effect) instead of failing.
    needs_note = request.method == "GET" and not note.strip() and await _comment_required(
        request.app.state.ctx.store, claims.tenant_id, claims.run_id, claims.step_id)
    if request.method == "GET" and (settings.approval_links_confirm or needs_note):
        verb = "Approve" if action == "approve" else "Reject"
        return _page("approval_confirm.html", title=f"{verb} step {claims.step_id}",
                     prompt=f"{verb} step {claims.step_id} of this run?", action_url="/api/workflows/resume",
                     token=fields["token"], action=action, with_note=True, note=note,
                     note_required=action == "reject" or needs_note, button=verb)
    command = DecideApproval(run_id=claims.run_id, step_id=claims.step_id, decision=action,
                             decided_by=claims.approver, comment=note.strip(), token_id=claims.token_id,
                             plan_hash=claims.plan_hash, client_ip=client_ip(request), user_agent=user_agent(request),
                             via="confirm-page" if request.method == "POST" else "email", at=now())
    outcome = await decide(request.app.state, tenant_id=claims.tenant_id, actor=f"approval-link:{claims.approver}",
                           service="executor", command=command)
    log.info("step_approval_link_used", run_id=str(claims.run_id), step_id=claims.step_id,
             token_id=str(claims.token_id), action=action, status=outcome.status if outcome else 202)
    if outcome is not None and outcome.ok:
        return Redirect(f"/dashboard/workflows/{claims.workflow_id}", status_code=303)
    return _refused(request, outcome)


router = Router(path="/api/workflows", route_handlers=[approve_plan, confirm_plan, resume_run, confirm_resume],
                exception_handlers=PLAIN_EXCEPTION_HANDLERS, tags=["approvals"])
