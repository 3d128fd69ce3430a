"""The LLM port: chat completions with a strict JSON-schema response, through the OpenAI-compatible client."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import openai
from openai import AsyncOpenAI

from libs.telemetry.tracing import SpanKind, traced

# Errors worth one retry (the planner owns it; the client itself never retries: max_retries=0).
TRANSIENT = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)
# Any failure to get a completion at all; a garbled 200 body surfaces from the client as a ValueError.
MODEL_FAILURES = (openai.OpenAIError, ValueError)


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    content: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


class LLMClient:
    def __init__(self, *, base_url: str, api_key: str, model: str, timeout_s: float):
        self.model = model
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=0)

    async def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> Completion:
        started = time.perf_counter()
        with traced("llm chat.completions", kind=SpanKind.CLIENT) as span:  # the outbound call, in the trace
            if span.is_recording():
                span.set_attribute("gen_ai.request.model", self.model)
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=0,
                response_format={"type": "json_schema", "json_schema": {"name": "workflow_plan", "strict": True,
                                                                         "schema": schema}},
            )
        try:  # a 200 whose JSON is not a chat completion is as garbled as one that is not JSON
            usage = response.usage
            content = (response.choices[0].message.content or "") if response.choices else ""
            if not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}")
            return Completion(
                content=content,
                model=response.model or self.model,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        except (AttributeError, TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"malformed chat completion: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()
