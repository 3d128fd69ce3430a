"""Ids in paths and bodies: a malformed id names nothing, so it is a 404, like an unknown one."""

from __future__ import annotations

import uuid

from services.gateway.core.errors import NotFound


def parse_id(raw: str, what: str, field: str | None = None) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(what, field) from None
