"""`for_each`: run one step per row of a list, sequentially, and report per-row results."""

from __future__ import annotations

from typing import Any

from services.executor.interpolation import MissingPath, interpolate
from services.executor.steps import REGISTRY, StepCall, StepDeps, StepError, StepResult, step

MAX_ROWS = 1000


def _sub_step(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    sub = config.get("step")
    if not isinstance(sub, dict) or not isinstance(sub.get("type"), str):
        raise StepError("for_each: config.step must be an object with a type (and an action for integrations)")
    key = sub.get("action") if sub["type"] == "integration" else sub["type"]
    if not isinstance(key, str) or key not in REGISTRY:
        raise StepError(f"for_each: config.step names an unknown step type {key!r}")
    return sub, key


@step("for_each")
async def for_each(node: dict[str, Any], context: dict[str, Any], call: StepCall, deps: StepDeps) -> Any:
    """Run config.step once per row of config.items with `${item}` and `${index}`; a failed row does not
    stop the others."""
    config = node.get("config") or {}
    # Only `items` is resolved here: the sub-step's templates are resolved per row, where `item` exists.
    items = interpolate(config.get("items"), context)
    if not isinstance(items, list):
        raise StepError(f"for_each: config.items must resolve to a list, got {type(items).__name__}")
    if len(items) > MAX_ROWS:
        raise StepError(f"for_each: config.items has {len(items)} rows; at most {MAX_ROWS} are allowed")
    sub, key = _sub_step(config)
    fn = REGISTRY[key]
    results: list[dict[str, Any]] = []
    for index, row in enumerate(items):
        # Each row gets its own step id, hence its own idempotency key: a receiver dedupes a redelivered
        # row without mistaking row 2 for row 1.
        row_call = StepCall(tenant_id=call.tenant_id, run_id=call.run_id, step_id=f"{call.step_id}[{index}]",
                            attempt=call.attempt)
        row_node = {**sub, "id": row_call.step_id}
        try:
            output = await fn(row_node, {**context, "item": row, "index": index}, row_call, deps)
        except (StepError, MissingPath) as exc:
            results.append({"index": index, "status": "failed", "error": str(exc)})
            continue
        if isinstance(output, StepResult):  # row variables would overwrite each other; the output is kept
            output = output.output
        results.append({"index": index, "status": "completed", "output": output})
    succeeded = sum(1 for r in results if r["status"] == "completed")
    return {"results": results, "successCount": succeeded, "failedCount": len(results) - succeeded,
            "totalCount": len(results)}
