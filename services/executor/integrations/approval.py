"""`approval`: pause the run until people decide (the rules: services/executor/approvals.py)."""

from __future__ import annotations

from typing import Any

from services.executor import approvals
from services.executor.steps import StepCall, StepDeps, StepError, step

FALLBACK_APPROVER = "approver@localhost"


# Pure: what is reviewed and the policy (deadline from call.at) derive from the node, the context and the
# deployment's fallback approver, so the pause commits with the StepStarted before it.
@step("approval", pure=True)
async def approval(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps | None = None
                   ) -> Any:
    """AwaitApproval with rows, metadata, display fields and the policy; Failed naming a wrong config field."""
    if call.at is None:
        raise StepError("approval: the call carries no start time")
    settings = deps.settings if deps is not None else None
    fallback = getattr(settings, "approval_email", None) or FALLBACK_APPROVER
    return approvals.pause(node, context, call.at, fallback)
