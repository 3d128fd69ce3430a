"""Inbound request bodies: strict msgspec Structs decoded with field-naming errors."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

from services.gateway.errors import ApiError

T = TypeVar("T")
UNSET: Any = msgspec.UNSET
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=5000)]
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class CreateWorkflowBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    description: Text | None = None
    definition: dict[str, Any]
    version: Version = "1.0.0"


class PatchWorkflowBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name | msgspec.UnsetType = UNSET
    description: Text | None | msgspec.UnsetType = UNSET
    definition: dict[str, Any] | msgspec.UnsetType = UNSET
    version: Version | msgspec.UnsetType = UNSET
    status: str | msgspec.UnsetType = UNSET


class ParseContext(msgspec.Struct, kw_only=True):
    availableTools: list[str] | None = None  # noqa: N815 - the contract's field name
    organizationId: str | None = None  # noqa: N815


class ParseBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    instruction: Annotated[str, msgspec.Meta(max_length=10000)]
    context: ParseContext | None = None


class GoalBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    goal: Annotated[str, msgspec.Meta(max_length=10000)]
    schedule: str | None = None


class CommandBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    command: Annotated[str, msgspec.Meta(max_length=10000)]


class CancelBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workflowId: str  # noqa: N815 - the contract's field name


class EditStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    action: str
    description: str = ""
    config: dict[str, Any] = {}
    input_from: str | None = None
    depends_on: list[str] = []


class StepsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    steps: Annotated[list[EditStep], msgspec.Meta(min_length=1, max_length=50)]


class ExecuteBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    inputs: dict[str, Any] = {}


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
