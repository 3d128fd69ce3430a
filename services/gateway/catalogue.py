"""GET /schema/asyncapi.json: the event catalogue (libs/events/asyncapi.py) beside the OpenAPI document."""

from __future__ import annotations

import msgspec
from litestar import Response, get

from libs.events.asyncapi import asyncapi_document

_encoded: bytes | None = None


@get("/schema/asyncapi.json", include_in_schema=False, sync_to_thread=False)
def asyncapi() -> Response:
    global _encoded
    if _encoded is None:
        _encoded = msgspec.json.encode(asyncapi_document())
    return Response(_encoded, media_type="application/json")
