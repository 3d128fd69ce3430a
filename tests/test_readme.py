"""The README's walk-through, as written, against a real `weft up`: twice in a row, as a newcomer pastes it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.weft_up import Up, up_env

ROOT = Path(__file__).resolve().parents[1]


def walkthrough_commands() -> str:
    """The bash blocks of the README's "Walk-through with curl" section, minus `make up` (the test starts it)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Walk-through with curl\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if not line.startswith("make up")]
    return "\n".join(lines) + "\n"


def _clone(tmp_path: Path) -> Path:
    """A folder laid out like a clone after `make up`: `.venv/bin/weft` runs this worktree's CLI."""
    clone = tmp_path / "clone"
    weft = clone / ".venv" / "bin" / "weft"
    weft.parent.mkdir(parents=True)
    weft.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m cli "$@"\n')
    weft.chmod(0o755)
    return clone


def test_the_walkthrough_runs_as_written_twice_in_a_row(tmp_path: Path):
    script = walkthrough_commands()
    assert "WEFT_PORT" in script and "8000" not in script.replace("${WEFT_PORT:-8000}", "")
    clone = _clone(tmp_path)
    up = Up(up_env(tmp_path / "data"))
    try:
        up.token()
        for attempt in (1, 2):
            # -e and pipefail: any failed request (curl --fail-with-body) stops the walk-through here.
            out = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=clone, env=up.env,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, f"attempt {attempt}:\n{out.stdout}\n{out.stderr}"
            assert '"outputs":{"greeting":"Hello Ada"}' in out.stdout, out.stdout
            assert "workflow null" not in out.stdout
            same_key = [line for line in out.stdout.splitlines() if '"Grace"' in line]
            assert len(same_key) == 2 and json.loads(same_key[0])["run"]["id"] == json.loads(same_key[1])["run"]["id"]
        # The CLI finds the stack's database with the same settings `weft up` got, and with only the data folder.
        for env in (up.env, {k: v for k, v in up.env.items() if k != "WEFT_PG_PORT"}):
            keys = subprocess.run([str(clone / ".venv/bin/weft"), "api-key", "list", "--tenant", "acme"], env=env,
                                  capture_output=True, text=True, timeout=60)
            assert keys.returncode == 0 and keys.stdout.strip() == "no API keys in tenant acme", keys.stderr
        up.wait_for("approve: http://127.0.0.1:", 30)  # the plan email of the assistant surface, on the console
        assert list((tmp_path / "data" / "mail").glob("*.eml")), "mail lands under WEFT_DATA_DIR"
    finally:
        assert up.stop() == 0, up.output
