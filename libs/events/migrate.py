"""Forward-only SQL migrations: numbered files applied once each, recorded in schema_migrations."""

from __future__ import annotations

from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x5745_4654_0000_0002  # one migrator at a time across replicas


def migration_files() -> list[tuple[int, Path]]:
    files = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number = int(path.name.split("_", 1)[0])
        files.append((number, path))
    numbers = [n for n, _ in files]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"duplicate migration numbers in {MIGRATIONS_DIR}")
    return files


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations in order; returns the names applied."""
    applied: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, path in migration_files():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, path.name
                )
            applied.append(path.name)
    finally:
        await conn.close()
    return applied
