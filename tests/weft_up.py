"""Running `weft up` (python -m cli up) in tests: free ports, a data folder, its console read by a thread."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.local.embedded import free_port, free_port_block, process_running
from deploy.local.lifetime import popen_tied


def up_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `weft up` on free ports (the gateway's port and the five after it, Postgres, NATS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env.update(WEFT_DATA_DIR=str(data_dir), WEFT_PORT=str(free_port_block(6)), WEFT_PG_PORT=str(free_port()),
               WEFT_NATS_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Up:
    """One `weft up` process (or a wrapper that runs it, such as make) and the lines it printed."""

    def __init__(self, env: dict[str, str], argv: Sequence[str] | None = None, **popen) -> None:
        self.env = env
        # Tied to the test run: if pytest is killed, `weft up` gets SIGTERM and stops what it started.
        self.proc = popen_tied(list(argv or [sys.executable, "-m", "cli", "up"]), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['WEFT_PORT']}"

    def wait_for(self, text: str, timeout: float, after: int = 0) -> str:
        """The first printed line from index `after` on containing `text`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"weft up did not print {text!r} within {timeout}s:\n{self.output}")

    def token(self, timeout: float = 120.0) -> str:
        return self.wait_for("Dev token", timeout).split()[-1]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def named_child(pid: int, name: str) -> int:
    for child in children(pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == name:
                return child
        except OSError:
            continue
    raise AssertionError(f"no child {name!r} of pid {pid}")


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of `pids` runs (a zombie counts as gone); returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if process_running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
