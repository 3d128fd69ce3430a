"""Children that share their starter's lifetime: on Linux, each child asks the kernel for a signal when the process
that started it dies (PR_SET_PDEATHSIG), so nothing `weft up` or a test run starts outlives it, even after kill -9.

The kernel ties that signal to the *thread* that forked the child, not to the process: a child started from a
short-lived worker thread (asyncio.to_thread in a test) would be signalled when that thread ends. So children
are forked only by the main thread or by one daemon thread that lives as long as the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None  # macOS and others: no parent-death signal; children outlive a kill -9 there
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl


_prctl = _load_prctl()  # resolved before any fork: the child only calls it


def _die_with(parent_pid: int, sig: int, then: Callable[[], None] | None) -> Callable[[], None]:
    def preexec() -> None:
        if then is not None:
            then()
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl: then the signal never comes, so check once.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), sig)

    return preexec


class _Spawner:
    """One daemon thread that forks on behalf of other non-main threads (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen], Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="weft-spawner", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((start, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            start, done = self._jobs.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
                done.set_exception(exc)


_spawner = _Spawner()


def popen_tied(args: Sequence[str], *, death_signal: int = signal.SIGTERM,
               preexec_fn: Callable[[], None] | None = None, **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen(args, **kwargs), and the child receives `death_signal` when this process dies."""
    preexec = _die_with(os.getpid(), death_signal, preexec_fn)

    def start() -> subprocess.Popen:
        return subprocess.Popen(args, preexec_fn=preexec, **kwargs)  # noqa: PLW1509 - see _die_with

    if threading.current_thread() is threading.main_thread():
        return start()
    return _spawner.run(start)
