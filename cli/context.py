"""What every `weft` command shares: its settings (the embedded stack's database unless WEFT_DATABASE_URL says
otherwise) and the one line it prints instead of a traceback when something fails."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from deploy.local.locations import database_url, locations
from libs.events.settings import Settings, load_settings


def settings() -> Settings:
    """WEFT_* settings, with the database `weft up` runs (same data folder and ports) when WEFT_DATABASE_URL is
    not set."""
    return load_settings(database_url=database_url())


def _shown(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:  # never print a password
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def explain(exc: BaseException) -> str:
    """One line saying what went wrong and what to do about it."""
    import asyncpg

    if isinstance(exc, ValueError):
        return _one_line(str(exc))
    url = _shown(database_url())
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"{_one_line(str(exc))} at {url}: run `make up` once (it creates it), or set WEFT_DATABASE_URL"
    if isinstance(exc, asyncpg.UndefinedTableError):
        return f"the database at {url} has no Weft tables ({_one_line(str(exc))}): run `weft migrate`"
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return f"the database at {url} refused the login ({_one_line(str(exc))}): check WEFT_DATABASE_URL"
    if isinstance(exc, asyncpg.PostgresError):
        return f"the database at {url} answered {type(exc).__name__}: {_one_line(str(exc))}"
    if isinstance(exc, OSError | asyncpg.InterfaceError | TimeoutError):
        why = _one_line(str(exc)) or type(exc).__name__
        if os.environ.get("WEFT_DATABASE_URL"):
            return f"cannot reach the database at {url} ({why}): is it running? check WEFT_DATABASE_URL"
        return (f"cannot reach the database at {url} ({why}): start the stack with `make up` (data in "
                f"{locations().data_dir}), or point WEFT_DATABASE_URL at a running Postgres")
    return (f"unexpected {type(exc).__name__}: {_one_line(str(exc))} "
            "(WEFT_DEBUG=1 shows the traceback; please report it)")
