"""The gateway's application services: one function per use case, called by every surface.

A surface parses its own request, calls a use case here, and renders the result in its own words, status
codes and error shape (docs/decisions/0015-surfaces-and-use-cases.md). Rules live here or in a decider, never
in a surface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # commands.py renders errors, whose types live in core.errors: import only for the types
    from libs.events.bus import CommandBus
    from libs.events.settings import Settings
    from libs.events.store import EventStore
    from services.gateway.commands import Dispatcher


class Core:
    """What every use case needs, built once in the gateway's setup and injected as `core`.

    A plain class, not a dataclass: Litestar's signature model treats a dataclass dependency as data and
    resolves its field types, which would need the imports above at run time (and make a cycle)."""

    __slots__ = ("store", "dispatcher", "bus", "settings")

    def __init__(self, *, store: EventStore, dispatcher: Dispatcher, bus: CommandBus, settings: Settings):
        self.store, self.dispatcher, self.bus, self.settings = store, dispatcher, bus, settings


__all__ = ["Core"]
