"""Integration steps (importing this package registers them) and the dependencies they share."""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI

from libs.adapters.outbound import GuardedHttpClient, Resolver
from libs.events.settings import Settings
from services.executor.integrations import (agent, approval, condition, delay, email, for_each, google, http_request,
                                            salesforce, slack)
from services.executor.integrations.agent import register_agent
from services.executor.steps import StepDeps

__all__ = ["agent", "approval", "build_deps", "close_deps", "condition", "delay", "email", "for_each", "google",
           "http_request", "register_agent", "salesforce", "slack"]


def build_deps(settings: Settings, store: Any = None, *, resolver: Resolver | None = None) -> StepDeps:
    """The executor's shared step dependencies: the guarded HTTP client, the LLM client when one is
    configured, and the store (for agent definitions). Close them with close_deps."""
    llm = None
    if settings.llm_base_url:
        # The step's retry policy owns retries (STYLE: one retry owner per side effect).
        llm = AsyncOpenAI(base_url=settings.llm_base_url, api_key=settings.llm_api_key or "unused",
                          max_retries=0, timeout=settings.llm_timeout_s)
    extra = {"store": store} if store is not None else {}
    return StepDeps(settings=settings, http=GuardedHttpClient(settings, resolver), llm=llm, extra=extra)


async def close_deps(deps: StepDeps) -> None:
    if deps.http is not None:
        await deps.http.aclose()
    if deps.llm is not None:
        await deps.llm.close()
