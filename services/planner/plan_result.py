"""What planning produces: a validated plan with where it came from and what it cost."""

from __future__ import annotations

from typing import Any

import msgspec


class PlanResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    confidence: float
    schedule: str | None
    definition: dict[str, Any]
    plan_hash: str
    source: str  # "ai-generated" or "offline-planner"
    model: str
    prompt_version: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    model_latency_ms: float = 0.0
    attempts: int = 0
    cached: bool = False
    est_cost_usd: float = 0.0
    outbound_steps: list[str] = []
