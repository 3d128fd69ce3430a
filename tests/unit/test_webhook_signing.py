"""Webhook signing and payloads: spec D's X-Webhook-Signature checked the way the spec's Node example does
(HMAC-SHA256 of the exact body with the secret, hex), and the Standard Webhooks headers checked by an
independent verifier, the `standardwebhooks` package, which also rejects replays with stale timestamps."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from libs.domain.run_view import fold_run
from libs.events.schemas.run import RunCompleted, RunCreated, RunFailed, RunStarted, StepAwaitingApproval
from libs.events.store import RecordedEvent
from libs.adapters.webhooks import (
    EVENTS,
    InvalidEndpoint,
    delivery_id,
    generate_secret,
    request_headers,
    signing_key,
    standard_secret,
    validate_endpoint,
)
from services.notifier.webhook_payload import api_key_of, payload

BODY = b'{"event":"execution.completed","executionId":"16cf01cc-e0b6-49a6-bb8e-5b23475a0957"}'
RUN, WORKFLOW = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2025, 10, 23, 14, 30, 45, 67000, tzinfo=UTC)
T1 = datetime(2025, 10, 23, 14, 32, 10, 234000, tzinfo=UTC)


def spec_d_verify(payload: bytes, signature: str, secret: str) -> bool:
    """Spec D's verifyWebhookSignature, line for line."""
    expected = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


def headers_for(secret: str, body: bytes = BODY, timestamp: int | None = None, webhook_id: str = "msg_1"):
    return request_headers(secret, event="execution.completed", execution_id=str(RUN), webhook_id=webhook_id,
                           timestamp=int(time.time()) if timestamp is None else timestamp, body=body)


def test_the_headers_are_the_ones_spec_d_lists_plus_the_standard_three():
    headers = headers_for("your-webhook-secret-key")
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "Workflow-Automation-Platform/1.0"
    assert headers["X-Webhook-Event"] == "execution.completed"
    assert headers["X-Webhook-Execution-Id"] == str(RUN)
    assert headers["X-Webhook-Signature"].startswith("sha256=") and len(headers["X-Webhook-Signature"]) == 7 + 64
    assert headers["webhook-id"] == "msg_1" and headers["webhook-signature"].startswith("v1,")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5


@pytest.mark.parametrize("secret", ["your-webhook-secret-key", generate_secret()], ids=["plain", "whsec"])
def test_both_signatures_verify_with_independent_verifiers(secret):
    headers = headers_for(secret)
    assert spec_d_verify(BODY, headers["X-Webhook-Signature"], secret)
    # A receiver configures its Standard Webhooks library with the whsec_ form the admin API shows.
    assert Webhook(standard_secret(secret)).verify(BODY, headers) == msgspec.json.decode(BODY)
    if secret.startswith("whsec_"):  # a generated secret is already in that form
        assert Webhook(secret).verify(BODY, headers) == msgspec.json.decode(BODY)
    else:  # and a plain one signs with its UTF-8 bytes, as spec D's signature does
        assert signing_key(secret) == secret.encode()
        Webhook(secret.encode()).verify(BODY, headers)


def test_a_changed_body_or_a_wrong_secret_fails_both_verifiers():
    secret = "your-webhook-secret-key"
    headers = headers_for(secret)
    tampered = BODY.replace(b"completed", b"failed")
    assert not spec_d_verify(tampered, headers["X-Webhook-Signature"], secret)
    assert not spec_d_verify(BODY, headers["X-Webhook-Signature"], secret + "x")
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret(secret)).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret(secret + "x")).verify(BODY, headers)


def test_the_webhook_id_is_signed_so_a_message_cannot_be_replayed_under_another_id():
    secret = "your-webhook-secret-key"
    headers = headers_for(secret) | {"webhook-id": "msg_2"}
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret(secret)).verify(BODY, headers)


def test_a_captured_request_replayed_later_is_rejected_by_its_timestamp():
    secret = "your-webhook-secret-key"
    old = headers_for(secret, timestamp=int(time.time()) - 600)  # signed 10 minutes ago
    assert spec_d_verify(BODY, old["X-Webhook-Signature"], secret)  # D's signature alone cannot tell
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(standard_secret(secret)).verify(BODY, old)


def test_delivery_ids_are_one_per_event_and_endpoint():
    event, endpoint = uuid.uuid4(), uuid.uuid4()
    assert delivery_id(event, endpoint) == delivery_id(event, endpoint)
    assert len({delivery_id(event, endpoint), delivery_id(event, uuid.uuid4()), delivery_id(uuid.uuid4(), endpoint)}) == 3


@pytest.mark.parametrize("field, kwargs", [
    ("url", {"url": "ftp://example.com/hook"}),
    ("url", {"url": "/relative"}),
    ("url", {"url": "https://" + "a" * 2100 + ".example"}),
    ("events", {"events": []}),
    ("events", {"events": ["execution.finished"]}),
    ("events", {"events": "execution.started"}),
    ("secret", {"secret": "short"}),
    ("owner_email", {"owner_email": "nobody"}),
    ("owner_email", {"owner_email": "a@b.example\r\nBcc: x@y.example"}),
])
def test_endpoint_validation_names_the_field(field, kwargs):
    values = {"url": "https://hooks.example.com/weft", "events": list(EVENTS), "secret": "s" * 16} | kwargs
    with pytest.raises(InvalidEndpoint) as caught:
        validate_endpoint(values["url"], values["events"], values["secret"], values.get("owner_email"))
    assert caught.value.field == field


def test_endpoint_validation_keeps_each_event_once():
    _, events = validate_endpoint("https://hooks.example.com/x", ["execution.failed", "execution.failed"], "s" * 16)
    assert events == ("execution.failed",)


# --- payloads -----------------------------------------------------------------------------------------


def recorded(*events) -> list[RecordedEvent]:
    return [RecordedEvent(global_position=i + 1, event_id=uuid.uuid4(), stream_id=f"run-{RUN}", version=i + 1,
                          type=type(e).__name__, data=msgspec.json.encode(e), metadata={}, tenant_id="t",
                          recorded_at=T0, event=e) for i, e in enumerate(events)]


CREATED = RunCreated(run_id=RUN, workflow_id=WORKFLOW, workflow_version=1, definition={"nodes": []}, inputs={},
                     created_by="alice", at=T0)


def body_of(name, *events):
    return msgspec.json.decode(payload(name, events[-1], fold_run(recorded(*events))))


def test_completed_payload_is_spec_d_example_shaped():
    completed = RunCompleted(run_id=RUN, outputs={"successCount": 3, "failedCount": 0}, at=T1)
    body = body_of("execution.completed", CREATED, RunStarted(run_id=RUN, at=T0), completed)
    assert body == {
        "event": "execution.completed",
        "executionId": str(RUN),
        "workflowId": str(WORKFLOW),
        "timestamp": "2025-10-23T14:32:10.234Z",
        "data": {"status": "completed", "startedAt": "2025-10-23T14:30:45.067Z",
                 "completedAt": "2025-10-23T14:32:10.234Z", "output": {"successCount": 3, "failedCount": 0}},
    }
    assert list(body) == ["event", "executionId", "workflowId", "timestamp", "data"]


def test_started_failed_and_pending_approval_payloads_speak_d_status_words():
    started = body_of("execution.started", CREATED, RunStarted(run_id=RUN, at=T0))
    assert started["data"] == {"status": "running", "startedAt": "2025-10-23T14:30:45.067Z"}
    failed = body_of("execution.failed", CREATED, RunFailed(run_id=RUN, error="step post: HTTP 500", at=T1))
    assert failed["data"]["status"] == "failed" and failed["data"]["error"] == "step post: HTTP 500"
    paused = body_of("execution.pending_approval", CREATED, StepAwaitingApproval(run_id=RUN, step_id="review", at=T1))
    assert paused["data"] == {"status": "pending_approval", "startedAt": "2025-10-23T14:30:45.067Z", "stepId": "review"}


def test_the_api_key_comes_from_the_run_actor():
    key = uuid.uuid4()
    assert api_key_of(f"api_key:{key}") == key
    assert api_key_of("alice") is None and api_key_of(None) is None and api_key_of("api_key:nonsense") is None
