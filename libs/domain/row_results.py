"""D's per-row results of a run (successCount, failedCount, results), one shape for /results and webhooks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _row_result(entry: dict[str, Any]) -> dict[str, Any]:
    """One row of a for_each result: its index and status, then the row's own output fields (which may
    carry a more specific status such as "sent")."""
    output = entry.get("output")
    row = {"index": entry.get("index"), "status": entry.get("status")}
    row.update(output if isinstance(output, dict) else ({"output": output} if output is not None else {}))
    if entry.get("error") is not None:
        row["error"] = entry["error"]
    return row


def _is_per_row(output: Any) -> bool:
    return isinstance(output, dict) and isinstance(output.get("results"), list) and "successCount" in output


def per_row_source(outputs: Any, completed: Iterable[Any]) -> dict[str, Any] | None:
    """Whose rows the run reports: its outputs' own when its last step worked row by row, else the last such
    step's among `completed` (step outputs in the order they finished); None when no step did."""
    if _is_per_row(outputs):
        return outputs
    return next((output for output in reversed(list(completed)) if _is_per_row(output)), None)


def row_results(outputs: dict[str, Any] | None, completed: Iterable[Any]) -> dict[str, Any]:
    """The run's outputs with successCount, failedCount and per-row results; none, 0 and 0 when no step
    worked row by row."""
    outputs = outputs if isinstance(outputs, dict) else {}
    rows = per_row_source(outputs, completed)
    results = [_row_result(r) for r in rows["results"] if isinstance(r, dict)] if rows else []
    return {**outputs, "successCount": rows["successCount"] if rows else 0,
            "failedCount": rows.get("failedCount", 0) if rows else 0, "results": results}
