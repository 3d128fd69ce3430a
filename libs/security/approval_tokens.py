"""Approval links: JWTs with their own signing key, type, audience and expiry, bound to what they decide.

A plan token approves one plan version (tenant, workflow, plan version and hash); a step token decides one
paused step (tenant, workflow, run, step and the run's plan hash) one way: its `act` claim is approve or
reject, so the approve and reject links of an email carry different tokens and editing `action=` in a link
cannot turn one into the other (docs/decisions/0052). Both name the approver (`sub`) and carry a
`jti` that the decision consumes in the same transaction as its event, so a link works once
(docs/decisions/0009). The key is `WEFT_APPROVAL_SIGNING_KEY`, never the user-JWT secret, and the JOSE
header `typ` says which kind a token is, so neither kind (nor a user token) passes for another.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import msgspec

from libs.events.bus import TENANT_RE
from libs.events.settings import Settings

ALGORITHMS = ["HS256"]  # fixed in code: a token never chooses its algorithm
AUDIENCE = "weft-approval"
ISSUER = "weft-approvals"
PLAN_TYPE = "weft-plan-approval+jwt"
STEP_TYPE = "weft-step-approval+jwt"
STEP_ACTIONS = ("approve", "reject")
_KIND = {PLAN_TYPE: "plan-approval", STEP_TYPE: "step-approval"}


class TokenError(Exception):
    """Why a token was refused: reason is missing | malformed | tampered | expired | wrong_type | invalid."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class PlanClaims(msgspec.Struct, frozen=True, kw_only=True):
    token_id: uuid.UUID
    tenant_id: str
    workflow_id: uuid.UUID
    plan_version: int
    plan_hash: str
    approver: str
    expires_at: datetime


class StepClaims(msgspec.Struct, frozen=True, kw_only=True):
    token_id: uuid.UUID
    tenant_id: str
    workflow_id: uuid.UUID
    run_id: uuid.UUID
    step_id: str
    plan_hash: str
    approver: str
    expires_at: datetime
    action: str  # approve | reject: the only decision this token can make


def _encode(settings: Settings, typ: str, claims: dict, *, token_id: uuid.UUID, approver: str, now: datetime,
            ttl_s: int) -> str:
    issued = int(now.timestamp())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": approver, "iat": issued, "exp": issued + ttl_s,
            "jti": str(token_id), **claims}
    return jwt.encode(body, settings.approval_signing_key, algorithm=ALGORITHMS[0], headers={"typ": typ})


def issue_plan_token(settings: Settings, *, token_id: uuid.UUID, tenant_id: str, workflow_id: uuid.UUID,
                     plan_version: int, plan_hash: str, approver: str, now: datetime) -> str:
    return _encode(settings, PLAN_TYPE, {"tid": tenant_id, "wid": str(workflow_id), "pv": plan_version,
                                         "ph": plan_hash}, token_id=token_id, approver=approver, now=now,
                   ttl_s=settings.plan_approval_ttl_s)


def issue_step_token(settings: Settings, *, token_id: uuid.UUID, tenant_id: str, workflow_id: uuid.UUID,
                     run_id: uuid.UUID, step_id: str, plan_hash: str, approver: str, action: str,
                     now: datetime) -> str:
    if action not in STEP_ACTIONS:
        raise ValueError(f"action must be one of {STEP_ACTIONS}")
    return _encode(settings, STEP_TYPE, {"tid": tenant_id, "wid": str(workflow_id), "rid": str(run_id),
                                         "sid": step_id, "ph": plan_hash, "act": action}, token_id=token_id,
                   approver=approver, now=now, ttl_s=settings.step_approval_ttl_s)


def _decode(settings: Settings, token: str | None, typ: str) -> dict:
    if not token or not token.strip():
        raise TokenError("missing", "token is required")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("malformed", "token is not a well-formed approval token") from None
    try:
        claims = jwt.decode(token, settings.approval_signing_key, algorithms=ALGORITHMS, audience=AUDIENCE,
                            issuer=ISSUER, options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]})
    except jwt.ExpiredSignatureError:
        raise TokenError("expired", "token has expired; ask for a new approval email") from None
    except (jwt.InvalidSignatureError, jwt.DecodeError):
        raise TokenError("tampered",
                         "token signature does not match: the link was altered or not issued here") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError):
        raise TokenError("wrong_type", f"token is not a {_KIND[typ]} token") from None
    except jwt.PyJWTError as exc:
        raise TokenError("invalid", f"token is invalid: {exc}") from None
    # The header is covered by the signature, so `typ` is as trustworthy as the claims.
    if header.get("typ") != typ:
        other = _KIND.get(header.get("typ"), "another kind of")
        raise TokenError("wrong_type", f"token is a {other} token, not a {_KIND[typ]} token")
    if not isinstance(claims.get("tid"), str) or not TENANT_RE.fullmatch(claims["tid"]):
        raise TokenError("invalid", "token names no valid tenant")
    return claims


def verify_plan_token(settings: Settings, token: str | None) -> PlanClaims:
    """The claims of a valid, unexpired plan-approval token; TokenError saying why otherwise.
    Single use is not checked here: the decision's transaction consumes the token id."""
    claims = _decode(settings, token, PLAN_TYPE)
    try:
        return PlanClaims(token_id=uuid.UUID(claims["jti"]), tenant_id=claims["tid"],
                          workflow_id=uuid.UUID(claims["wid"]), plan_version=int(claims["pv"]),
                          plan_hash=str(claims["ph"]), approver=str(claims["sub"]),
                          expires_at=datetime.fromtimestamp(claims["exp"], UTC))
    except (KeyError, ValueError, TypeError):
        raise TokenError("invalid", "token lacks the plan it approves") from None


def verify_step_token(settings: Settings, token: str | None) -> StepClaims:
    """The claims of a valid, unexpired step-approval token; TokenError saying why otherwise."""
    claims = _decode(settings, token, STEP_TYPE)
    if claims.get("act") not in STEP_ACTIONS:  # tokens issued before decisions were signed have none
        raise TokenError("invalid", "token does not say which decision it makes; ask for a new approval email")
    try:
        return StepClaims(token_id=uuid.UUID(claims["jti"]), tenant_id=claims["tid"],
                          workflow_id=uuid.UUID(claims["wid"]), run_id=uuid.UUID(claims["rid"]),
                          step_id=str(claims["sid"]), plan_hash=str(claims["ph"]), approver=str(claims["sub"]),
                          expires_at=datetime.fromtimestamp(claims["exp"], UTC), action=claims["act"])
    except (KeyError, ValueError, TypeError):
        raise TokenError("invalid", "token lacks the step it decides") from None


def expires_in(settings: Settings, typ: str, now: datetime) -> datetime:
    """When a token of this type issued now expires (for the email's wording)."""
    ttl = settings.plan_approval_ttl_s if typ == PLAN_TYPE else settings.step_approval_ttl_s
    return now + timedelta(seconds=ttl)
