"""Step types: a registry a new module extends with `@step("type")` without touching the engine.

A step function receives the definition node, the `${}` context, the call (run, step, attempt, the time
the attempt started and the idempotency key every side effect must carry) and the executor's shared
dependencies. It returns the step's output (or a StepResult with variables, or an effect such as
WaitUntil or AwaitApproval from services/executor/effects.py), or raises StepError (retryable or not).
The decider (services/executor/results.py) turns what it returns into events. Every registered type has
exactly one entry in the step catalogue (libs/domain/catalog.py), which validates definitions.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from libs.domain.catalog import step_key
from services.executor.effects import EFFECTS, Completed, Effect
from services.executor.interpolation import interpolate

__all__ = ["PURE", "REGISTRY", "StepCall", "StepDeps", "StepError", "StepFn", "StepResult", "config_of", "outcome",
           "step", "step_key"]


class StepError(Exception):
    """The attempt failed; the message says why in the user's terms. Retryable errors follow the
    step's retry policy; others fail the step at once."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class StepCall:
    tenant_id: str
    run_id: uuid.UUID
    step_id: str
    attempt: int
    # The attempt whose key this call reuses: a re-execution after a crash replaces an attempt that never
    # recorded a result (its side effect may have happened), so it must carry that attempt's key.
    key_attempt: int | None = None
    # When the driver started this attempt: a step that needs "now" (a delay's end, an approval's deadline)
    # reads it here, never from a clock, so running it again from the same log gives the same result.
    at: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        """Sent with every side effect (HTTP `Idempotency-Key` header or equivalent)."""
        return f"{self.run_id}:{self.step_id}:{self.key_attempt or self.attempt}"


@dataclass(frozen=True)
class StepResult:
    output: Any
    variables: dict[str, Any] = field(default_factory=dict)


def outcome(value: Any) -> Effect:
    """A step function's return value as an effect: an effect as is, a StepResult or a plain value as
    Completed."""
    if isinstance(value, EFFECTS):
        return value
    if isinstance(value, StepResult):
        return Completed(output=value.output, variables=value.variables)
    return Completed(output=value)


@dataclass
class StepDeps:
    """What integrations share, built once in the executor's app: settings, the guarded HTTP client, ..."""

    settings: Any = None
    http: Any = None
    llm: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


StepFn = Callable[[dict[str, Any], dict[str, Any], StepCall, StepDeps], Awaitable[Any]]
REGISTRY: dict[str, StepFn] = {}
# Step types whose result depends only on the node and the `${}` context: no I/O, no clock, no randomness.
# The engine runs them inline and commits them with the events around them (one append for a chain of them,
# docs/decisions/0011-inline-pure-steps.md): running one again after a crash gives the same result, so it
# needs no commit point of its own.
PURE: set[str] = set()


def step(*types: str, pure: bool = False) -> Callable[[StepFn], StepFn]:
    """Register a step function under `types`. `pure=True` promises the function does no I/O and reads no
    clock or randomness: the same node and context always give the same result."""

    def register(fn: StepFn) -> StepFn:
        for name in types:
            REGISTRY[name] = fn
            if pure:
                PURE.add(name)
            else:
                PURE.discard(name)
        return fn

    return register


def config_of(node: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The node's config with every `${}` resolved (a missing path raises MissingPath)."""
    return interpolate(node.get("config") or {}, context)


@step("transform", pure=True)
async def transform(node: dict[str, Any], context: dict[str, Any], call: StepCall | None = None,
                    deps: StepDeps | None = None) -> Any:
    """Build a value from templates: config.template, or the whole config when there is none."""
    config = node.get("config") or {}
    return interpolate(config.get("template", config), context)


@step("echo", "noop", pure=True)
async def echo(node: dict[str, Any], context: dict[str, Any], call: StepCall | None = None,
               deps: StepDeps | None = None) -> Any:
    """Return config.message (interpolated) if given, else the step's input unchanged."""
    config = node.get("config") or {}
    if config.get("message") is not None:
        return interpolate(config["message"], context)
    return context.get("input")
