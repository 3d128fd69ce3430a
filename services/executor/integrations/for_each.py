"""`for_each`: run one step per row of a list, sequentially, and report per-row results."""

from __future__ import annotations

from typing import Any

from libs.domain.catalog import step_key
from services.executor.effects import Completed, Failed
from services.executor.interpolation import MissingPath, interpolate
from services.executor.steps import REGISTRY, StepCall, StepDeps, StepError, outcome, step

MAX_ROWS = 1000


def _sub_step(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    sub = config.get("step")
    if not isinstance(sub, dict) or not isinstance(sub.get("type"), str):
        raise StepError("for_each: config.step must be an object with a type (and an action for integrations)")
    key = step_key(sub)
    if key is None or key not in REGISTRY:
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
                            attempt=call.attempt, key_attempt=call.key_attempt, at=call.at)
        row_node = {**sub, "id": row_call.step_id}
        try:
            result = outcome(await fn(row_node, {**context, "item": row, "index": index}, row_call, deps))
        except (StepError, MissingPath) as exc:
            result = Failed(error=str(exc))
        match result:
            case Completed(output=output):  # row variables would overwrite each other; the output is kept
                results.append({"index": index, "status": "completed", "output": output})
            case Failed(error=error):
                results.append({"index": index, "status": "failed", "error": error})
            case _:  # a wait or an approval pauses a whole run, not one row (the catalogue refuses it)
                results.append({"index": index, "status": "failed",
                                "error": f"for_each: a {key} step cannot run once per row"})
    succeeded = sum(1 for r in results if r["status"] == "completed")
    return {"results": results, "successCount": succeeded, "failedCount": len(results) - succeeded,
            "totalCount": len(results)}
