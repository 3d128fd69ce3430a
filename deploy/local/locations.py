"""Where the embedded stack lives: data folder and ports, read the same way by `weft up` and by every `weft`
command that needs the database, so the CLI finds what `make up` started without WEFT_DATABASE_URL."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PG_PORT, DEFAULT_NATS_PORT, DEFAULT_API_PORT = 54320, 42220, 8000
RECORD = "stack.json"  # written by `weft up`: the URLs it actually runs with


@dataclass(frozen=True)
class Locations:
    data_dir: Path
    api_port: int
    pg_port: int
    nats_port: int

    @property
    def embedded_database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/weft"

    @property
    def embedded_nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name} must be a port number (1-65535), got {raw!r}")
    return int(raw)


def locations(env: Mapping[str, str] | None = None) -> Locations:
    """WEFT_DATA_DIR (default .weft), WEFT_PORT, WEFT_PG_PORT, WEFT_NATS_PORT."""
    env = os.environ if env is None else env
    return Locations(
        data_dir=Path(env.get("WEFT_DATA_DIR") or ".weft").resolve(),
        api_port=_port(env, "WEFT_PORT", DEFAULT_API_PORT),
        pg_port=_port(env, "WEFT_PG_PORT", DEFAULT_PG_PORT),
        nats_port=_port(env, "WEFT_NATS_PORT", DEFAULT_NATS_PORT),
    )


def write_record(where: Locations, *, database_url: str, nats_url: str) -> None:
    path = where.data_dir / RECORD
    path.write_text(json.dumps({"database_url": database_url, "nats_url": nats_url, "api_port": where.api_port}))
    path.chmod(0o600)  # the database URL may carry a password


def database_url(env: Mapping[str, str] | None = None) -> str:
    """The database a `weft` command uses: WEFT_DATABASE_URL; else, when WEFT_PG_PORT is not set, the one the
    last `weft up` with this data folder ran with; else the embedded default port."""
    env = os.environ if env is None else env
    if env.get("WEFT_DATABASE_URL"):
        return env["WEFT_DATABASE_URL"]
    where = locations(env)
    if not env.get("WEFT_PG_PORT"):
        try:
            return json.loads((where.data_dir / RECORD).read_text())["database_url"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return where.embedded_database_url
