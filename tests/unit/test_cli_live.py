"""The live run view, pure: step lines in definition order, a for_each row bar, redraw in place on a terminal."""

from __future__ import annotations

import io

from cli.user.live import LiveView
from weft_client.types import RunEvent

DEFINITION = {"nodes": [
    {"id": "load", "type": "transform"},
    {"id": "each", "type": "for_each", "config": {"items": [1, 2, 3, 4], "step": {"type": "echo"}}},
    {"id": "send", "type": "integration", "action": "email.send"},
]}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _events() -> list[RunEvent]:
    return [
        RunEvent(id=1, type="step_start", step_id="load"),
        RunEvent(id=2, type="step_complete", step_id="load", data={"output": {}}),
        RunEvent(id=3, type="step_start", step_id="each"),
        RunEvent(id=4, type="step_complete", step_id="each",
                 data={"output": {"successCount": 3, "failedCount": 1, "totalCount": 4}}),
        RunEvent(id=5, type="run_event", step_id="send", event_type="StepSkipped", data={"reason": "condition"}),
        RunEvent(id=6, type="workflow_complete", data={"status": "completed"}),
    ]


def test_a_log_gets_one_line_per_change():
    out = io.StringIO()
    view = LiveView.of(DEFINITION, out)
    for event in _events():
        view.apply(event)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[>] load") and lines[1].startswith("[+] load")
    assert lines[2].endswith("running  [....................] 0/4 rows")  # the literal items' count
    assert lines[3].endswith("[####################] 4/4 rows, 1 failed")
    assert lines[4].startswith("[-] send") and lines[4].endswith("skipped  condition")
    assert lines[5] == "run completed"


def test_a_terminal_is_redrawn_in_place():
    out = Terminal()
    view = LiveView.of(DEFINITION, out)
    view.show(None)
    for event in _events():
        view.apply(event)
    frames = out.getvalue().split("\x1b[")
    assert sum(1 for f in frames if f.startswith("3F")) == 6  # each event redraws the 3 step lines in place
    final = out.getvalue().rsplit("\x1b[3F", 1)[-1].replace("\x1b[2K", "").splitlines()
    assert len(final) == 4 and final[1].endswith("4/4 rows, 1 failed") and final[3] == "run completed"
