"""How `weft up` keeps its children: stop signals that cannot abort the cleanup, and restarts with backoff.

Every child (Postgres, nats-server, each service) is supervised alike: when one exits, it is reaped at once
(Popen.poll), the console says so, and it is started again after a delay that doubles while it keeps failing.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(BaseException):
    """Raised once, by the first stop signal, wherever the supervisor is (starting, waiting, watching)."""


def say(text: str) -> None:
    """A console line; a console that went away (a closed pipe, a closed terminal) never stops the supervisor."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        pass


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP all mean "stop everything". The first one raises StopRequested; any later one
    (Ctrl-C pressed again, `make` forwarding the SIGTERM it got from the same process-group kill) only notes it,
    so it can never interrupt the cleanup half-way. SIGINT is handled even when it was inherited as ignored
    (`make up &`, scripts, CI): there is no other Ctrl-C for a supervisor."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            raise StopRequested(signum)
        say(f"({signal.Signals(signum).name} again: already stopping, every child has a bounded time to exit)")


def exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@dataclass
class Child:
    """One supervised process. `start` spawns it (and may wait until it serves); `alive` reaps it."""

    name: str
    start: Callable[[], None]
    alive: Callable[[], bool]
    returncode: Callable[[], int | None]
    pid: Callable[[], int | None]
    log: str
    failures: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    healthy_after_s: float = 30.0  # a child up this long has recovered: its next failure starts the backoff over

    def backoff(self) -> float:
        return min(0.5 * 2 ** self.failures, 10.0)

    def launch(self) -> None:
        self.start()
        self.started_at = time.monotonic()

    def watch(self, now: float) -> None:
        """Called every tick: notice an exit, and restart when its delay has passed."""
        if self.restart_at is None:
            if self.alive():
                return
            if now - self.started_at > self.healthy_after_s:
                self.failures = 0
            delay = self.backoff()
            self.failures += 1
            self.restart_at = now + delay
            say(f"{self.name:<10} exited ({exit_reason(self.returncode())}); restarting in {delay:.1f}s "
                f"(log: {self.log})")
            return
        if now < self.restart_at:
            return
        try:
            self.launch()
        except (RuntimeError, OSError) as exc:  # did not come up (e.g. Postgres' old shared memory still in use)
            delay = self.backoff()
            self.failures += 1
            self.restart_at = time.monotonic() + delay
            say(f"{self.name:<10} did not start ({exc}); retrying in {delay:.1f}s (log: {self.log})")
            return
        self.restart_at = None
        say(f"{self.name:<10} is back (pid {self.pid()})")


def tick_forever(children: list[Child], every_s: float, extra: Callable[[], None]) -> None:
    """Watch children until a stop signal raises StopRequested."""
    while True:
        extra()
        now = time.monotonic()
        for child in children:
            child.watch(now)
        time.sleep(every_s)
