"""Request bodies decoded by hand (routes not yet typed): strict msgspec Structs with field-naming errors."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from services.gateway.errors import ApiError

T = TypeVar("T")
UNSET: Any = msgspec.UNSET


_decoders: dict[type, msgspec.json.Decoder] = {}


def decode_body(raw: bytes, body_type: type[T], *, empty_ok: bool = False) -> T:
    """Decode or raise ApiError(400) that names the field, e.g. "Expected `str`, got `int` - at `$.name`"."""
    if not raw.strip():
        if empty_ok:
            return body_type()
        raise ApiError(400, "Request body is required (JSON object)")
    decoder = _decoders.get(body_type)
    if decoder is None:
        decoder = _decoders[body_type] = msgspec.json.Decoder(body_type)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in message else None
        if message.startswith("Object missing required field"):
            field = message.split("`")[1]
        elif message.startswith("Object contains unknown field"):
            field = message.split("`")[1]
        raise ApiError(400, f"Invalid request body: {message}", field) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from exc
