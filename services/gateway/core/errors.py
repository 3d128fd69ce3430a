"""Errors the core raises; each surface renders them in its own shape and, by `code`, its own status."""

from __future__ import annotations


class ApiError(Exception):
    """A refusal a client can cause: `status` is the canonical HTTP status, `code` names the rule so a surface
    whose contract uses another status for it can map it (e.g. the console's 422 for `workflow_not_active`)."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None,
                 *, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers, self.code = status, message, field, headers or {}, code


class NotFound(ApiError):
    def __init__(self, what: str, field: str | None = None):
        super().__init__(404, f"{what} not found", field, code="not_found")


WORKFLOW_NOT_ACTIVE = "workflow_not_active"
RUN_FINISHED = "run_finished"
NOT_OWNER = "not_owner"
