"""`weft projections rebuild` (the real CLI) reproduces the read models the inline projections wrote live.

The workflows and runs tables are compared whole (every tenant's rows, every column): other modules' data
live in the same database, which only widens what the rebuild must reproduce. Tests run one at a time,
but the stack's processes may still be finishing earlier work, so a comparison is accepted only when no
event was appended between the two snapshots.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx

from libs.readmodels import READ_MODEL_TABLES
from libs.events.schemas import Metadata
from libs.events.schemas.run import RunCreated
from libs.events.schemas.workflow import WorkflowCreated, WorkflowUpdated
from tests.conftest import poll

DEFINITION = {
    "nodes": [
        {"id": "a", "type": "transform", "config": {"template": {"x": "${inputs.v}"}}},
        {"id": "b", "type": "echo", "input_from": "a"},
    ]
}


async def _create(client: httpx.AsyncClient, **extra) -> dict:
    body = {"name": f"wf-{uuid.uuid4().hex[:8]}", "definition": DEFINITION, **extra}
    r = await client.post("/api/v2/workflows", json=body)
    assert r.status_code == 201, r.text
    return r.json()["workflow"]


async def _execute(client: httpx.AsyncClient, wid: str, inputs: dict) -> dict:
    r = await client.post(f"/api/v2/workflows/{wid}/execute", json={"inputs": inputs})
    assert r.status_code == 201, r.text
    run_id = r.json()["run"]["id"]

    async def fetch() -> dict:
        return (await client.get(f"/api/v2/workflows/{wid}/runs/{run_id}")).json()["run"]

    return await poll(fetch, lambda run: run["status"] in ("completed", "failed"), timeout=30)


PRIMARY_KEYS: dict[str, tuple[str, ...]] = {}  # read-model table -> its primary key columns, read from the catalog


async def snapshot(pool: asyncpg.Pool) -> tuple[int, dict[str, list[dict]]]:
    """(last event position, every row of every read model, all columns, ordered by primary key) in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        last = await conn.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
        tables = {}
        for table in READ_MODEL_TABLES:
            PRIMARY_KEYS[table] = tuple(await conn.fetchval(
                "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i"
                " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                " WHERE i.indrelid = $1::regclass AND i.indisprimary", table))
            order = ", ".join(PRIMARY_KEYS[table])
            tables[table] = [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")]  # noqa: S608
    return last, tables


def row_key(table: str, row: dict) -> tuple:
    return tuple(row[c] for c in PRIMARY_KEYS[table])


def run_rebuild(database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", "projections", "rebuild"],
        env={**os.environ, "WEFT_DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=120,
    )


def first_difference(live: dict[str, list[dict]], rebuilt: dict[str, list[dict]]) -> str:
    for table in READ_MODEL_TABLES:
        a = {row_key(table, r): r for r in live[table]}
        b = {row_key(table, r): r for r in rebuilt[table]}
        if a.keys() != b.keys():
            return f"{table}: ids only live {sorted(a.keys() - b.keys())[:3]}, only rebuilt {sorted(b.keys() - a.keys())[:3]}"
        for rid, row in a.items():
            if row != b[rid]:
                cols = {c: (row[c], b[rid][c]) for c in row if row[c] != b[rid][c]}
                return f"{table} row {rid}: (live, rebuilt) {cols}"
    return "no difference"


async def append_many_workflows(store, tenant: str, count: int) -> None:
    """Workflows written straight to the store (inline projector): 2 events each, every one of which shows
    in the read model, so a rebuild that drops or repeats an event at a batch boundary cannot hide."""
    for i in range(count):
        wid, at = uuid.uuid4(), datetime.now(UTC)
        await store.append(
            f"workflow-{wid}", 0,
            [
                WorkflowCreated(workflow_id=wid, name=f"bulk-{i}", definition=DEFINITION, created_by="bulk", at=at),
                WorkflowUpdated(workflow_id=wid, description=f"updated {i}", version=f"1.{i}.0", at=at),
            ],
            metadata=Metadata(tenant_id=tenant),
        )


async def test_rebuild_reproduces_the_live_read_models(stack, store, pool, infra, tenant):
    # More consecutive events than one rebuild batch (1000), so at least one batch boundary falls in them.
    await append_many_workflows(store, f"{tenant}-bulk", 600)
    async with stack.client(tenant) as client:
        kept, patched, deleted, idle = [await _create(client) for _ in range(4)]
        await _create(client, description="has a description", version="3.1.0")
        r = await client.patch(
            f"/api/v2/workflows/{patched['id']}",
            json={"name": f"renamed-{uuid.uuid4().hex[:6]}", "description": "patched", "version": "2.0.0",
                  "definition": {"nodes": [*DEFINITION["nodes"], {"id": "c", "type": "echo", "input_from": "b"}]}},
        )
        assert r.status_code == 200, r.text
        r = await client.patch(f"/api/v2/workflows/{idle['id']}", json={"status": "archived", "description": None})
        assert r.status_code == 200, r.text

        runs = [
            await _execute(client, kept["id"], {"v": 1}),
            await _execute(client, kept["id"], {"v": {"nested": [1, 2.5, "x"]}}),
            await _execute(client, patched["id"], {"v": 1}),
            await _execute(client, deleted["id"], {"v": 1}),
        ]
        assert [run["status"] for run in runs] == ["completed"] * 4, runs
        failed = await _execute(client, kept["id"], {})  # ${inputs.v} does not resolve: the step fails
        assert failed["status"] == "failed", failed

        r = await client.delete(f"/api/v2/workflows/{deleted['id']}")
        assert r.status_code == 200, r.text
        # The delete cascades to the read models' runs (the events stay in the log).
        assert (await client.get(f"/api/v2/workflows/{deleted['id']}")).status_code == 404

    for attempt in range(5):
        before_pos, live = await snapshot(pool)
        # This test's rows are in the live tables, as the API showed them.
        ours = {r["id"]: r for r in live["runs"] if r["tenant_id"] == tenant}
        assert len(ours) == 4 and all(r["workflow_id"] != uuid.UUID(deleted["id"]) for r in ours.values())
        assert {r["status"] for r in ours.values()} == {"completed", "failed"}
        for run in ours.values():
            steps = json.loads(run["steps"])
            if run["status"] == "completed":
                assert {sid: s["status"] for sid, s in steps.items()} in ({"a": "completed", "b": "completed"},
                                                                          {"a": "completed", "b": "completed", "c": "completed"})
                assert all("started_at" in s and "finished_at" in s and "output" in s for s in steps.values())
            else:
                assert steps["a"]["status"] == "failed" and run["error"], run
        assert len([w for w in live["workflows"] if w["tenant_id"] == tenant]) == 4

        result = run_rebuild(infra.database_url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("rebuilt read models from "), result.stdout
        replayed = int(result.stdout.split()[4])

        after_pos, rebuilt = await snapshot(pool)
        if after_pos == before_pos:
            break
    else:
        raise AssertionError("events kept being appended during every rebuild; nothing was compared")

    assert rebuilt == live, first_difference(live, rebuilt)
    assert replayed == await pool.fetchval("SELECT count(*) FROM events WHERE global_position <= $1", after_pos)


async def test_runs_of_one_workflow_created_at_once_get_different_numbers(store, pool, tenant):
    """Appends are not serialised (docs/decisions/0032): a run created while another run of the same workflow is
    still uncommitted must not take the same number (the workflow row's counter makes the second wait)."""
    wid, now, meta = uuid.uuid4(), datetime.now(UTC), Metadata(tenant_id=tenant)
    await store.append(f"workflow-{wid}", 0, [WorkflowCreated(workflow_id=wid, name="n", definition={"nodes": []},
                                                              created_by="t", at=now)], metadata=meta)

    def created(run_id: uuid.UUID) -> RunCreated:
        return RunCreated(run_id=run_id, workflow_id=wid, workflow_version=1, definition={"concurrency": "unlimited"},
                          inputs={}, created_by="t", at=now)

    first, second = uuid.uuid4(), uuid.uuid4()
    async with store.transaction(tenant) as tx:  # the first run's row is written, not committed
        await tx.append_recorded(f"run-{first}", 0, [created(first)], metadata=meta)
        late = asyncio.create_task(store.append(f"run-{second}", 0, [created(second)], metadata=meta))
        await asyncio.sleep(0.3)  # the second append runs its projection meanwhile
    await asyncio.wait_for(late, 10)
    numbers = {r["id"]: r["run_number"] for r in await pool.fetch(
        "SELECT id, run_number FROM runs WHERE workflow_id = $1", wid)}
    assert numbers == {first: 1, second: 2}
