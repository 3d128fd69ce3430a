"""Step types: a registry a new module extends with `@step("type")` without touching the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.executor.interpolation import interpolate


class StepError(Exception):
    """The step failed; the message says why in the user's terms."""


StepFn = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]
REGISTRY: dict[str, StepFn] = {}


def step(*types: str) -> Callable[[StepFn], StepFn]:
    def register(fn: StepFn) -> StepFn:
        for name in types:
            REGISTRY[name] = fn
        return fn

    return register


@step("transform")
async def transform(node: dict[str, Any], context: dict[str, Any]) -> Any:
    """Build a value from templates: config.template, or the whole config when there is none."""
    config = node.get("config") or {}
    return interpolate(config.get("template", config), context)


@step("echo", "noop")
async def echo(node: dict[str, Any], context: dict[str, Any]) -> Any:
    """Return config.message (interpolated) if given, else the step's input unchanged."""
    config = node.get("config") or {}
    if "message" in config:
        return interpolate(config["message"], context)
    return context.get("input")
