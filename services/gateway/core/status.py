"""Run status words: the one table (DESIGN section 5). Canonical on the left, each surface's word after."""

from __future__ import annotations

from typing import Literal

Surface = Literal["v2", "executions", "public", "console", "assistant"]
ACTIVE = ("pending", "running", "awaiting_approval")
TERMINAL = ("completed", "failed", "cancelled")

_WORDS: dict[str, dict[str, str]] = {
    #                    v2            executions   public              console              assistant
    "pending":           dict(v2="running", executions="PENDING", public="pending", console="running",
                              assistant="pending"),
    "running":           dict(v2="running", executions="RUNNING", public="running", console="running",
                              assistant="running"),
    "awaiting_approval": dict(v2="running", executions="PAUSED", public="pending_approval",
                              console="awaiting_approval", assistant="running"),
    "completed":         dict(v2="completed", executions="COMPLETED", public="completed", console="completed",
                              assistant="completed"),
    "failed":            dict(v2="failed", executions="FAILED", public="failed", console="failed",
                              assistant="failed"),
    "cancelled":         dict(v2="terminated", executions="CANCELED", public="cancelled", console="failed",
                              assistant="cancelled"),
}


def word(status: str, surface: Surface) -> str:
    """The surface's word for a canonical run status."""
    return _WORDS[status][surface]


def words(surface: Surface) -> tuple[str, ...]:
    """Every word the surface uses, in table order, once each (for filters and documentation)."""
    return tuple(dict.fromkeys(row[surface] for row in _WORDS.values()))


def canonical(surface: Surface, surface_word: str) -> list[str]:
    """The canonical statuses a surface word stands for (a status filter): v2 "running" is three of them."""
    return [status for status, row in _WORDS.items() if row[surface] == surface_word]
