"""Send one command as a signed-in person and wait, bounded, for its committed outcome (forms, not APIs).

The API surfaces go through `Dispatcher.dispatch` (Idempotency-Key, 202 with a Location); a form has neither,
so this is the plain path: a fresh command id per submission, the outcome or None (accepted, not committed yet).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from libs.events.bus import CommandNotAccepted
from libs.events.schemas import CommandEnvelope, Outcome
from libs.security.auth import Principal
from services.gateway.commands import now
from services.gateway.core import Core
from services.gateway.core.errors import ApiError


async def send(core: Core, principal: Principal, service: str, make: Callable[[uuid.UUID], Any], *,
               timeout_s: float | None = None) -> Outcome | None:
    """The outcome of `make(command_id)` sent to `service`; None when it was accepted but not yet committed.
    Not accepted (NATS unreachable) is a 503 ApiError: nothing happened, the person may try again."""
    command_id = uuid.uuid4()
    envelope = CommandEnvelope(command_id=command_id, tenant_id=principal.tenant_id, actor=principal.user_id,
                               correlation_id=str(command_id), command=make(command_id), issued_at=now())
    try:
        outcome = await core.bus.send(service, envelope, timeout_s)
    except CommandNotAccepted as exc:
        raise ApiError(503, f"The platform is unavailable, nothing was changed; try again shortly ({exc})") from exc
    # The reply can be missed (service restarted after commit): the record is authoritative.
    return outcome or await core.store.outcome(principal.tenant_id, command_id)


def refused(outcome: Outcome | None, pending: str = "Accepted; it is being recorded") -> ApiError | None:
    """The outcome as an error to show next to a form's field, or None when it committed."""
    if outcome is None:
        return ApiError(202, pending)
    if outcome.ok:
        return None
    return ApiError(outcome.status if outcome.status < 500 else 503, outcome.error or "Refused", outcome.field)
