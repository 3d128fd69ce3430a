"""Approval-link tokens: their own key, type, audience and expiry, bound to what they decide."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from libs.security.approval_tokens import (
    PLAN_TYPE,
    STEP_TYPE,
    TokenError,
    issue_plan_token,
    issue_step_token,
    verify_plan_token,
    verify_step_token,
)
from libs.security.auth import issue_token
from libs.events.settings import load_settings

SETTINGS = load_settings({})
WORKFLOW, RUN, TOKEN = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
NOW = datetime.now(UTC)


def plan_token(now: datetime = NOW, settings=SETTINGS) -> str:
    return issue_plan_token(settings, token_id=TOKEN, tenant_id="acme", workflow_id=WORKFLOW, plan_version=2,
                            plan_hash="sha256:abc", approver="ann@example.com", now=now)


def step_token(now: datetime = NOW, action: str = "approve") -> str:
    return issue_step_token(SETTINGS, token_id=TOKEN, tenant_id="acme", workflow_id=WORKFLOW, run_id=RUN,
                            step_id="review", plan_hash="sha256:def", approver="bob@example.com", action=action,
                            now=now)


def reason(fn, token) -> str:
    with pytest.raises(TokenError) as caught:
        fn(SETTINGS, token)
    return caught.value.reason


def test_a_plan_token_carries_its_bindings():
    claims = verify_plan_token(SETTINGS, plan_token())
    assert (claims.token_id, claims.tenant_id, claims.workflow_id, claims.plan_version, claims.plan_hash,
            claims.approver) == (TOKEN, "acme", WORKFLOW, 2, "sha256:abc", "ann@example.com")
    assert abs((claims.expires_at - NOW).total_seconds() - 24 * 3600) < 2
    header = jwt.get_unverified_header(plan_token())
    assert header == {"alg": "HS256", "typ": PLAN_TYPE}


def test_a_step_token_carries_its_bindings_and_lives_two_hours():
    claims = verify_step_token(SETTINGS, step_token())
    assert (claims.run_id, claims.step_id, claims.plan_hash, claims.workflow_id, claims.approver) == (
        RUN, "review", "sha256:def", WORKFLOW, "bob@example.com")
    assert abs((claims.expires_at - NOW).total_seconds() - 2 * 3600) < 2


def test_expired_tokens_are_refused():
    assert reason(verify_plan_token, plan_token(NOW - timedelta(hours=25))) == "expired"
    assert reason(verify_step_token, step_token(NOW - timedelta(hours=3))) == "expired"


def test_one_kind_never_passes_for_the_other_nor_a_user_token():
    assert reason(verify_plan_token, step_token()) == "wrong_type"
    assert reason(verify_step_token, plan_token()) == "wrong_type"
    # A user JWT signed with the approval key (a deployment that reused the key) is still the wrong type.
    same_key = load_settings({}, jwt_secret=SETTINGS.approval_signing_key)
    assert reason(verify_plan_token, issue_token(same_key, "acme", "ann")) == "wrong_type"


def _swap_payload(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


def test_tampered_tokens_are_refused():
    assert reason(verify_plan_token, _swap_payload(plan_token(), wid=str(uuid.uuid4()))) == "tampered"
    assert reason(verify_plan_token, _swap_payload(plan_token(), exp=2**40)) == "tampered"
    # Signed with another key: the user-JWT secret, or anyone's.
    foreign = load_settings({}, approval_signing_key=SETTINGS.jwt_secret)
    assert reason(verify_plan_token, plan_token(settings=foreign)) == "tampered"
    # alg "none" is never accepted.
    unsigned = jwt.encode({"sub": "x"}, None, algorithm="none", headers={"typ": PLAN_TYPE})
    assert reason(verify_plan_token, unsigned) in {"tampered", "invalid"}


def test_missing_and_garbage_tokens_say_so():
    assert reason(verify_plan_token, None) == "missing"
    assert reason(verify_plan_token, "  ") == "missing"
    assert reason(verify_step_token, "not-a-jwt") == "malformed"


def test_the_signing_key_is_its_own_setting():
    assert SETTINGS.approval_signing_key != SETTINGS.jwt_secret
    other = load_settings({"WEFT_APPROVAL_SIGNING_KEY": "k" * 40})
    assert reason(verify_plan_token, issue_plan_token(
        other, token_id=TOKEN, tenant_id="acme", workflow_id=WORKFLOW, plan_version=1, plan_hash="h",
        approver="a@b.c", now=NOW)) == "tampered"


def test_a_step_token_signs_the_one_decision_it_makes():
    assert verify_step_token(SETTINGS, step_token(action="approve")).action == "approve"
    assert verify_step_token(SETTINGS, step_token(action="reject")).action == "reject"
    assert step_token(action="approve") != step_token(action="reject")
    with pytest.raises(ValueError):
        step_token(action="maybe")
    # A token without the claim (issued before decisions were signed) decides nothing.
    legacy = jwt.encode({**jwt.decode(step_token(), options={"verify_signature": False}), "act": None},
                        SETTINGS.approval_signing_key, algorithm="HS256", headers={"typ": STEP_TYPE})
    assert reason(verify_step_token, legacy) == "invalid"
