"""Run metrics counted from committed run events, wherever the executor appends them (a command's append or a
driver's), so a conflict that rolls an append back counts nothing; and the approvals-waiting sampler."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from libs.telemetry import metrics

# Event type names (the msgspec tags) of a run's end, and the status label each one counts as.
FINISHED = {"RunCompleted": "completed", "RunFailed": "failed", "RunCancelled": "cancelled",
            "RunTerminated": "terminated"}


def count_run_events(type_names: Iterable[str]) -> None:
    """weft_runs_started / weft_runs_finished{status} for the types of events just committed."""
    for name in type_names:
        if name == "RunStarted":
            metrics.RUNS_STARTED.inc()
        elif name in FINISHED:
            metrics.labelled(metrics.RUNS_FINISHED, FINISHED[name]).inc()


def approvals_sampler(pool: asyncpg.Pool):
    """weft_approvals_waiting: runs paused on a step approval, every tenant (the service's owner connection)."""

    async def sample() -> None:
        waiting = await pool.fetchval("SELECT count(*) FROM runs WHERE status = 'awaiting_approval'")
        metrics.APPROVALS_WAITING.set(waiting)

    return sample
