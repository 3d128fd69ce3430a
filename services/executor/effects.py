"""What a step's attempt came to, in the decider's words: a step function's return value (or the error it
raised) becomes one of these, and the decider (services/executor/results.py) turns it into events.

A step type that needs the run to wait says so by returning an effect (WaitUntil, AwaitApproval); the
engine only records what the decider makes of it, so a new step type never touches the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from libs.events.schemas.run import ApprovalPolicy


class Completed(msgspec.Struct, frozen=True, kw_only=True):
    """The step produced its output (and variables merged into the run's)."""

    output: Any = None
    variables: dict[str, Any] = {}


class Failed(msgspec.Struct, frozen=True, kw_only=True):
    """The attempt failed; `retryable` errors follow the node's retry policy, others fail the step."""

    error: str
    retryable: bool = False


class WaitUntil(msgspec.Struct, frozen=True, kw_only=True):
    """Pause this step until `until` (a durable timer ends the wait)."""

    until: datetime


class AwaitApproval(msgspec.Struct, frozen=True, kw_only=True):
    """Pause the run until people decide: what they review and how it is decided. The decider binds the
    policy to the run's plan hash."""

    approval: dict[str, Any]
    policy: ApprovalPolicy


Effect = Completed | Failed | WaitUntil | AwaitApproval
EFFECTS = (Completed, Failed, WaitUntil, AwaitApproval)
