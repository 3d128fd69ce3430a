"""Named crash points for fault tests: with WEFT_FAULT_POINT=<name>, the process dies (kill -9 style) the
first time it reaches that point. WEFT_FAULT_ONCE_FILE marks that it already happened, across restarts."""

from __future__ import annotations

import os
from pathlib import Path


def crash_point(name: str) -> None:
    if os.environ.get("WEFT_FAULT_POINT") != name:
        return
    marker = os.environ.get("WEFT_FAULT_ONCE_FILE")
    if marker:
        path = Path(marker)
        if path.exists():
            return
        path.write_text(name)
    os._exit(137)  # no cleanup, no flush: exactly what a kill -9 leaves behind
