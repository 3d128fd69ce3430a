"""`agent`: a registered agent endpoint (by agent_id) or, without one, the configured LLM."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai

from libs.security.secrets import SecretBox, SecretsError
from services.executor.integrations.support import check_status, send
from services.executor.interpolation import MissingPath, interpolate
from services.executor.steps import StepCall, StepDeps, StepError, StepResult, config_of, step
from libs.telemetry.tracing import SpanKind, traced


async def register_agent(store: Any, tenant_id: str, name: str, endpoint: str,
                         headers: dict[str, str] | None = None) -> uuid.UUID:
    """Store an agent definition for the tenant; returns its id."""
    if httpx.URL(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"agent endpoint must be an http(s) URL, got {endpoint!r}")
    agent_id = uuid.uuid4()
    async with store.tenant_transaction(tenant_id) as conn:
        await conn.execute(
            "INSERT INTO agents (id, tenant_id, name, endpoint, headers) VALUES ($1, $2, $3, $4, $5::jsonb)",
            agent_id, tenant_id, name, endpoint, json.dumps(headers or {}),
        )
    return agent_id


async def load_agent(store: Any, tenant_id: str, agent_id: Any, settings: Any = None) -> dict[str, Any]:
    """The tenant's agent row, its auth secret decrypted into an Authorization header (decision 0101);
    another tenant's id is "not found" like a missing one."""
    try:
        key = uuid.UUID(str(agent_id))
    except ValueError:
        raise StepError(f"agent: config.agent_id must be a UUID, got {agent_id!r}") from None
    async with store.tenant_transaction(tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT name, endpoint, headers::text AS headers, timeout_s, prompt_template, secret_key_id,"
            " secret_ciphertext FROM agents WHERE tenant_id = $1 AND id = $2",
            tenant_id, key,
        )
    if row is None:
        raise StepError(f"agent: agent {key} not found")
    headers = {str(k): str(v) for k, v in json.loads(row["headers"]).items()}
    if row["secret_key_id"] is not None:
        try:
            secret = SecretBox.from_settings(settings).open(row["secret_key_id"], row["secret_ciphertext"],
                                                               f"agent:{tenant_id}:{key}".encode())
        except (SecretsError, AttributeError) as exc:  # a deployment without the key: not the run's data
            raise StepError(f"agent: cannot decrypt the auth secret of agent {key}: {exc}") from None
        headers["Authorization"] = f"Bearer {secret}"
    return {"name": row["name"], "endpoint": row["endpoint"], "headers": headers, "timeout_s": row["timeout_s"],
            "prompt_template": row["prompt_template"]}


async def _call_endpoint(agent_id: Any, prompt: str, call: StepCall, deps: StepDeps,
                         context: dict[str, Any]) -> StepResult:
    store = deps.extra.get("store")
    if store is None:
        raise StepError("agent: agent_id needs the executor's store, and none is configured")
    agent = await load_agent(store, call.tenant_id, agent_id, deps.settings)
    if agent["prompt_template"]:  # the agent's template wraps the step's prompt: `${prompt}` is the step's
        try:
            wrapped = interpolate(agent["prompt_template"], {**context, "prompt": prompt})
        except MissingPath as exc:
            raise StepError(f"agent: the prompt template of agent {agent['name']}: {exc}") from None
        prompt = wrapped if isinstance(wrapped, str) else json.dumps(wrapped)
    what = f"agent {agent['name']}"
    response = await send(deps, call, "POST", agent["endpoint"], what=what, headers=agent["headers"],
                          json={"prompt": prompt, "runId": str(call.run_id), "stepId": call.step_id},
                          timeout=agent.get("timeout_s"))
    check_status(response, what)
    try:
        result = response.json()
    except ValueError:
        raise StepError(f"{what}: the endpoint answered {response.status} without a JSON body") from None
    # Contract C: the agent's response is kept in the run's variables under the agent's name.
    return StepResult(output=result, variables={agent["name"]: result})


async def _call_llm(prompt: str, model: str, deps: StepDeps) -> dict[str, Any]:
    try:
        with traced("llm chat.completions", kind=SpanKind.CLIENT):  # the outbound call, in the run's trace
            completion = await deps.llm.chat.completions.create(model=model,
                                                                messages=[{"role": "user", "content": prompt}])
    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
        raise StepError(f"agent: LLM unreachable: {exc}", retryable=True) from exc
    except openai.APIStatusError as exc:
        retryable = exc.status_code == 429 or exc.status_code >= 500
        raise StepError(f"agent: LLM answered {exc.status_code}: {exc.message}", retryable=retryable) from exc
    except openai.OpenAIError as exc:
        raise StepError(f"agent: LLM call failed: {exc}") from exc
    if not completion.choices:
        raise StepError("agent: the LLM returned no choices", retryable=True)
    usage = completion.usage
    return {
        "text": completion.choices[0].message.content or "",
        "model": completion.model,
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        },
    }


@step("agent")
async def agent(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Send the interpolated config.prompt to config.agent_id's endpoint, else to the LLM."""
    config = config_of(node, context)
    prompt = config.get("prompt")
    prompt = prompt if isinstance(prompt, str) else json.dumps(prompt) if prompt is not None else None
    if not prompt:
        raise StepError("agent: config.prompt must be a non-empty string")
    if config.get("agent_id"):
        return await _call_endpoint(config["agent_id"], prompt, call, deps, context)
    if deps.llm is None:
        raise StepError("no LLM configured: set WEFT_LLM_BASE_URL, or give the agent step a config.agent_id")
    model = config.get("model") or deps.settings.llm_model
    if not isinstance(model, str):
        raise StepError(f"agent: config.model must be a string, got {model!r}")
    return await _call_llm(prompt, model, deps)
