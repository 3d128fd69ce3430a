"""A live view of a run's steps in the terminal, fed by the run's event stream.

On a terminal the block of step lines is redrawn in place; otherwise (a pipe, a log) each change is one line.
A for_each step shows a progress bar: 0/N while it runs when its items are a literal list, and the rows that
succeeded and failed once it completes (the engine reports rows in the step's result, not row by row).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from weft_client.types import RunEvent

MARKS = {"pending": " ", "running": ">", "completed": "+", "failed": "x", "skipped": "-", "waiting": "~",
         "awaiting_approval": "?", "retrying": "!"}
BAR = 20


@dataclass
class StepLine:
    id: str
    type: str
    status: str = "pending"
    note: str = ""
    rows_total: int | None = None
    rows_done: int | None = None
    rows_failed: int = 0

    def render(self) -> str:
        line = f"[{MARKS.get(self.status, ' ')}] {self.id:<16} {self.type:<14} {self.status}"
        if self.rows_total is not None:
            done = self.rows_done or 0
            filled = round(BAR * done / self.rows_total) if self.rows_total else BAR
            failed = f", {self.rows_failed} failed" if self.rows_failed else ""
            line += f"  [{'#' * filled}{'.' * (BAR - filled)}] {done}/{self.rows_total} rows{failed}"
        return line + (f"  {self.note}" if self.note else "")


@dataclass
class LiveView:
    """The run's steps (in definition order) and where each stands."""

    steps: dict[str, StepLine] = field(default_factory=dict)
    outcome: str | None = None
    out: TextIO | None = None  # None: sys.stdout as it is when the view is made
    redraw: bool = False
    _drawn: int = 0

    @classmethod
    def of(cls, definition: dict[str, Any], out: TextIO | None = None) -> LiveView:
        out = out or sys.stdout
        view = cls(out=out, redraw=out.isatty())
        for node in definition.get("nodes") or []:
            line = StepLine(id=str(node.get("id")), type=str(node.get("action") or node.get("type") or ""))
            items = (node.get("config") or {}).get("items")
            if node.get("type") == "for_each" and isinstance(items, list):
                line.rows_total, line.rows_done = len(items), 0
            view.steps[line.id] = line
        return view

    def apply(self, event: RunEvent) -> None:
        """Fold one event into the view and show what changed."""
        line = self.steps.get(event.step_id or "")
        data = event.data
        if event.type == "workflow_complete":
            self.outcome = str(data.get("status"))
            if data.get("error"):
                self.outcome += f": {data['error']}"
        elif line is None:
            return
        elif event.type == "step_start":
            line.status, line.note = "running", ""
        elif event.type == "step_complete":
            line.status = "completed"
            output = data.get("output")
            if isinstance(output, dict) and "totalCount" in output:  # a for_each's result
                line.rows_total, line.rows_failed = output.get("totalCount"), output.get("failedCount", 0)
                line.rows_done = output.get("successCount", 0) + line.rows_failed
        elif event.type == "step_error":
            line.status, line.note = "failed", str(data.get("error") or "")
        elif event.event_type == "StepSkipped":
            line.status, line.note = "skipped", str(data.get("reason") or "")
        elif event.event_type == "StepWaiting":
            line.status, line.note = "waiting", f"until {data.get('until')}"
        elif event.event_type == "StepAwaitingApproval":
            line.status, line.note = "awaiting_approval", "weft approvals list"
        elif event.event_type == "StepRetryScheduled":
            line.status, line.note = "retrying", f"attempt {data.get('attempt')} failed: {data.get('error')}"
        else:
            return
        self.show(line)

    def show(self, changed: StepLine | None) -> None:
        if self.redraw:
            lines = [s.render() for s in self.steps.values()]
            if self.outcome:
                lines.append(f"run {self.outcome}")
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        elif changed is not None:
            self.out.write(changed.render() + "\n")
        elif self.outcome:
            self.out.write(f"run {self.outcome}\n")
        self.out.flush()
