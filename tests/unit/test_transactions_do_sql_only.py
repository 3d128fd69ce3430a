"""Inside a transaction, only SQL: a call awaited in a transaction's body that is given neither its connection nor
its store transaction is work outside the database (HTTP, an LLM, SMTP, NATS, a sleep), and while the transaction
holds an id it holds back every tenant's events (docs/decisions/0033). A syntactic guard: it sees the calls written
in the block, not what a helper given the connection does inside (connections.usable, which calls the provider
under an advisory lock, is such a helper)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Reviewed: (file, awaited call) -> why it holds no transaction id while it waits.
REVIEWED = {
    ("libs/events/aggregate.py", "follow"): "the executor's first pass: pure steps only, before the first write",
    ("services/notifier/approval_emails.py", "send_mail"): "under an advisory lock, before the first write",
}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _outside_calls(rel: str, source: str) -> set[tuple[str, str]]:
    """(file, call) for each call awaited in a transaction block without the block's connection or transaction."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.AsyncWith):
            continue
        bound = {item.optional_vars.id for item in node.items
                 if "transaction(" in ast.unparse(item.context_expr) and isinstance(item.optional_vars, ast.Name)}
        if not any("transaction(" in ast.unparse(item.context_expr) for item in node.items):
            continue
        bound |= {"conn"} if not bound else set()  # `async with conn.transaction():` works on `conn` itself
        for statement in node.body:
            for awaited in (n for n in ast.walk(statement) if isinstance(n, ast.Await)):
                call = awaited.value
                if not isinstance(call, ast.Call) or _names(call) & bound:
                    continue
                found.add((rel, ast.unparse(call.func)))
    return found


def _all_outside_calls() -> set[tuple[str, str]]:
    return {call for top in ("cli", "deploy", "services", "libs") for path in sorted((ROOT / top).rglob("*.py"))
            for call in _outside_calls(path.relative_to(ROOT).as_posix(), path.read_text())}


def test_transactions_await_nothing_but_their_connection_unless_reviewed():
    assert _all_outside_calls() - set(REVIEWED) == set()


def test_every_reviewed_call_is_still_there():
    assert set(REVIEWED) - _all_outside_calls() == set()


def test_the_guard_sees_a_slow_call_in_a_transaction():
    source = ("async def f(store, client):\n"
              "    async with store.tenant_transaction('t') as conn:\n"
              "        await conn.execute('UPDATE x SET y = 1')\n"
              "        await helper(conn, 1)\n"
              "        await client.request('POST', 'https://example.com')\n"
              "    await client.request('POST', 'https://example.com')\n")
    assert _outside_calls("probe.py", source) == {("probe.py", "client.request")}
