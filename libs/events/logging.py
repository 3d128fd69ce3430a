"""structlog setup: JSON lines when not on a TTY, console rendering otherwise. The standard library's loggers
(uvicorn's, FastStream's, asyncpg's, nats-py's) are rendered by the same processors, so a service's log is
one format, one line per entry."""

from __future__ import annotations

import logging
import sys

import structlog

FASTSTREAM_LOGGER = "faststream.weft"


def configure_logging(service: str, level: str = "info") -> None:
    renderer = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    numeric_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    _route_stdlib_logging(renderer, numeric_level)


def _route_stdlib_logging(renderer, level: int) -> None:
    """One root handler that renders stdlib records like structlog's own lines (with the bound context and
    the record's `extra` fields, e.g. FastStream's subject), replacing any handler set before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.dict_tracebacks,
            renderer,
        ],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # FastStream's module-level "faststream" logger (its supervisor's lines) comes with a handler of its own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", FASTSTREAM_LOGGER):
        named = logging.getLogger(name)
        named.handlers, named.propagate = [], True
    # httpx logs every request at INFO with its full URL, whose path or query may hold a secret (a webhook
    # token); the guarded client logs what it sends itself, without them (libs/adapters/outbound.py).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _drop_color_message(_logger, _name, event_dict):
    """uvicorn adds an ANSI-coloured copy of each message as an extra field; the plain one is enough."""
    event_dict.pop("color_message", None)
    return event_dict


def faststream_logger() -> logging.Logger:
    """The logger FastStream is given (NatsBroker(logger=...)): a plain one that propagates to the root
    handler above, instead of FastStream's own plain-text stdout handler."""
    return logging.getLogger(FASTSTREAM_LOGGER)
