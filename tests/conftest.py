"""Session fixtures: one real Postgres and one real nats-server (from the same wheels `make up` uses, or
testcontainers when a Docker engine answers), migrated once; tests isolate themselves by unique ids."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from libs.security.auth import issue_token
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from libs.events.migrate import migrate
from libs.readmodels import project
from libs.events.settings import Settings, load_settings
from libs.events.store import EventStore

T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def v2_rate_limit_for_shared_processes() -> Iterator[None]:
    """Tests poll the v2 API far faster than a person does: the service processes they start (they inherit
    os.environ) get a generous v2 limit unless one is set. tests/test_ratelimit_store.py starts gateways
    with the real default (100 per minute) and tests it there."""
    os.environ.setdefault("WEFT_V2_RATE_LIMIT_PER_MINUTE", "100000")
    # Likewise for failed authentications per address (every test client is 127.0.0.1); tests/test_auth_limit.py
    # starts gateways with a small limit and tests it there.
    os.environ.setdefault("WEFT_AUTH_FAILURES_PER_MINUTE", "100000")
    os.environ.setdefault("WEFT_PUBLIC_ANONYMOUS_RATE_PER_MINUTE", "100000")  # many 401 tests, one address
    yield


# The production logins (docs/operations.md, "Database roles"): these processes log in as a plain member of
# weft_app (no BYPASSRLS), in every test that starts them, so a request path that needs more fails here.
APP_LOGIN_PROCESSES = frozenset({"gateway", "planner", "notifier"})
APP_LOGIN, APP_PASSWORD = "weft_test_app_login", "weft-test-app"


def app_login_url(dsn: str) -> str:
    """The same database, host and options as `dsn`, logged in as the session's app login."""
    return f"postgresql://{APP_LOGIN}:{APP_PASSWORD}@{dsn.split('@', 1)[1]}"


async def create_app_login(dsn: str) -> None:
    """The operator's part of "Database roles" for the app login (roles are per cluster: once a session)."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", APP_LOGIN):
            await conn.execute(f"CREATE ROLE {APP_LOGIN} LOGIN PASSWORD '{APP_PASSWORD}' IN ROLE weft_app")
    finally:
        await conn.close()


@dataclass
class Infra:
    database_url: str
    nats_url: str
    pg: EmbeddedPostgres | None
    nats: EmbeddedNats | None
    root: Path


def _docker_engine() -> bool:
    if os.environ.get("WEFT_TEST_DOCKER") == "0" or not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    root = tmp_path_factory.mktemp("infra")
    if _docker_engine():  # pragma: no cover - this project's machines have no engine
        from testcontainers.core.container import DockerContainer
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg, DockerContainer("nats:2.10").with_command(
            "-js"
        ).with_exposed_ports(4222) as nats_c:
            url = pg.get_connection_url()
            asyncio.run(migrate(url))
            asyncio.run(create_app_login(url))
            nats_url = f"nats://{nats_c.get_container_host_ip()}:{nats_c.get_exposed_port(4222)}"
            yield Infra(url, nats_url, None, None, root)
        return
    pg = EmbeddedPostgres(root / "pg", free_port(), root / "postgres.log")
    pg.start()
    pg.create_database("weft_test")
    nats = EmbeddedNats(root / "nats", free_port())
    nats.start()
    asyncio.run(migrate(pg.dsn("weft_test")))
    asyncio.run(create_app_login(pg.dsn("weft_test")))
    try:
        yield Infra(pg.dsn("weft_test"), nats.url, pg, nats, root)
    finally:
        nats.stop()
        pg.stop()


@pytest.fixture(scope="session")
def settings(infra: Infra) -> Settings:
    return load_settings(
        {}, database_url=infra.database_url, nats_url=infra.nats_url, command_timeout_s=5.0, nak_delay_s=0.2
    )


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=20)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def store(pool: asyncpg.Pool, settings: Settings) -> EventStore:
    return EventStore(pool, app_role=settings.db_app_role, projector=project)


async def migrated_database(infra: Infra, prefix: str) -> str:
    """A new, migrated database on the session's Postgres, named prefix_<random>; returns its DSN. For tests
    whose work must not be seen (or raced) by the session's service processes."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = infra.database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(dsn)
    return dsn


@pytest.fixture(scope="session")
async def isolated_store(infra: Infra, settings: Settings) -> AsyncIterator[EventStore]:
    """A store on a database of its own: no relay or service process reads it, so in-process engine tests
    are not raced by the session's real executor."""
    dsn = await migrated_database(infra, "weft_iso")
    p = await asyncpg.create_pool(dsn, min_size=2, max_size=20)
    yield EventStore(p, app_role=settings.db_app_role, projector=project)
    await p.close()


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def poll(fn: Callable[[], Awaitable[T]], until: Callable[[T], bool], timeout: float = 15.0, every: float = 0.05) -> T:
    """Call fn until `until(result)` holds; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await fn()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last result: {result!r}")
        await asyncio.sleep(every)


@dataclass
class Stack:
    """Real Weft processes against the session's Postgres and NATS."""

    base_url: str
    settings: Settings
    procs: dict[str, Any]
    ports: dict[str, int]

    def token(self, tenant: str, user: str = "alice") -> str:
        return issue_token(self.settings, tenant, user)

    def client(self, tenant: str, user: str = "alice") -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token(tenant, user)}"}, timeout=20
        )


def start_processes(infra: Infra, names: list[str], log_dir: Path, extra_env: dict[str, str] | None = None):
    from deploy.local.stack import PROCESSES, ServiceProcess, service_env, wait_http

    procs, ports = {}, {}
    for name in names:
        module, _ = PROCESSES[name]
        ports[name] = free_port()
        database_url = app_login_url(infra.database_url) if name in APP_LOGIN_PROCESSES else infra.database_url
        env = service_env(os.environ.copy() | (extra_env or {}), name=name, port=ports[name],
                          database_url=database_url, nats_url=infra.nats_url)
        procs[name] = ServiceProcess(name, module, env, log_dir)
        procs[name].start()
    for name in names:
        wait_http(ports[name])
    return procs, ports


def swapped(stack: Stack, infra: Infra, name: str, extra_env: dict[str, str], log_dir: Path) -> Iterator[Stack]:
    """The stack with its `name` process replaced, for a module, by one with extra settings; the original
    comes back afterwards (use with `yield from` in a module fixture)."""
    from deploy.local.stack import wait_http

    stack.procs[name].stop()
    procs, _ = start_processes(infra, [name], log_dir, extra_env)
    try:
        yield stack
    finally:
        procs[name].stop()
        stack.procs[name].start()
        wait_http(stack.ports[name])


@pytest.fixture(scope="session")
def stack(infra: Infra, settings: Settings) -> Iterator[Stack]:
    names = ["gateway", "planner", "executor", "relay", "scheduler", "notifier"]
    procs, ports = start_processes(infra, names, infra.root / "logs")
    try:
        yield Stack(f"http://127.0.0.1:{ports['gateway']}", settings, procs, ports)
    finally:
        for proc in procs.values():
            proc.stop()
