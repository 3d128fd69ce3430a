"""Errors a decider raises when a command breaks an invariant; they become a recorded outcome."""

from __future__ import annotations


class DomainError(Exception):
    """A refused command: `status` is HTTP-like (404, 409, 422, 400), `field` names the culprit."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
