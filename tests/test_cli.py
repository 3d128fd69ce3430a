"""The `weft` command finds the embedded stack's database as `weft up` runs it, and every error is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from deploy.local.embedded import free_port
from deploy.local.locations import Locations, write_record
from libs.events.migrate import migrate
from tests.conftest import Infra


def weft(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=clean | env, capture_output=True, text=True,
                          timeout=60)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("weft: "), out.stderr
    return out.stderr


async def _database(infra: Infra, name: str, migrated: bool) -> str:
    admin = await asyncpg.connect(infra.database_url)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = infra.database_url.rsplit("/", 1)[0] + f"/{name}"
    if migrated:
        await migrate(dsn)
    return dsn


def _list_keys(tenant: str, **env: str) -> list:
    out = weft("api-key", "list", "--tenant", tenant, "--json", **env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_without_a_database_url_the_cli_uses_the_embedded_port(infra: Infra, tenant: str):
    if infra.pg is None:  # pragma: no cover - testcontainers
        pytest.skip("needs the embedded Postgres")
    await _database(infra, "weft", migrated=True)  # what `weft up` creates on WEFT_PG_PORT
    assert _list_keys(tenant, WEFT_PG_PORT=str(infra.pg.port)) == []


async def test_without_any_setting_the_cli_uses_what_the_last_weft_up_recorded(infra: Infra, tenant: str,
                                                                                 tmp_path: Path):
    dsn = await _database(infra, f"weft_cli_{uuid.uuid4().hex[:6]}", migrated=True)
    where = Locations(data_dir=tmp_path, api_port=8000, pg_port=1, nats_port=1)
    write_record(where, database_url=dsn, nats_url="nats://127.0.0.1:1")
    assert _list_keys(tenant, WEFT_DATA_DIR=str(tmp_path)) == []


def test_a_database_that_is_down_is_one_line_saying_to_start_it(tmp_path: Path):
    port = free_port()
    for args in (["api-key", "list", "--tenant", "acme"], ["migrate"], ["projections", "rebuild"]):
        line = one_line_error(weft(*args, WEFT_PG_PORT=str(port), WEFT_DATA_DIR=str(tmp_path)))
        assert f"127.0.0.1:{port}" in line and "make up" in line, line


def test_a_usage_mistake_is_one_line_naming_the_help_to_read():
    line = one_line_error(weft("api-key", "create", "--tenant", "acme"))
    assert "--name" in line and "weft api-key create --help" in line, line


async def test_an_unmigrated_database_says_to_migrate_and_a_bad_port_names_the_setting(infra: Infra):
    dsn = await _database(infra, f"weft_empty_{uuid.uuid4().hex[:6]}", migrated=False)
    assert "weft migrate" in one_line_error(weft("api-key", "list", "--tenant", "acme", WEFT_DATABASE_URL=dsn))
    assert "WEFT_PG_PORT" in one_line_error(weft("api-key", "list", "--tenant", "acme", WEFT_PG_PORT="x"))
