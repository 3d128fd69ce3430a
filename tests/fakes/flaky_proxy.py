"""A reverse proxy in front of a real gateway that misbehaves on request: answers 503 (before or after the gateway
handled the request), drops the connection after the gateway answered, turns an answer into a 202, or cuts an
event stream after N events. It records every request (method, path, headers), so a test can see what a client
sent on each try. Runs its own event loop in a thread: sync and async clients can both use it.

One request per connection (it forces `Connection: close`), which keeps the byte pumping trivial.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from deploy.local.embedded import free_port

_UNAVAILABLE = b'{"success":false,"error":"Service temporarily unavailable; retry shortly"}'


@dataclass
class Rule:
    """Misbehave on the next `times` requests whose method matches and whose path contains `path`.
    action: 503_before | 503_after | drop_after | accepted | cut | stall (cut, but the connection stays open
    and silent, as when a peer vanishes without closing)."""

    method: str
    path: str
    action: str
    times: int = 1
    cut_after_events: int = 1  # cut: close after this many `id:` events (plus `extra_bytes` of the next)
    extra_bytes: int = 0
    location: Callable[[dict[str, str]], str] | None = None  # accepted: the Location, from the request headers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    action: str | None


@dataclass
class FlakyProxy:
    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()

        async def main() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()
            async with server:
                await self._stop.wait()
            # Streams still being pumped (an SSE answer the client stopped reading): end them and their
            # upstream connections, so the gateway sees the client go.
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self._loop.run_until_complete(main())
        self._loop.close()

    def _rule(self, method: str, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.times > 0 and rule.method == method and rule.path in path:
                rule.times -= 1
                return rule
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            rule = self._rule(method, path)
            self.seen.append(Seen(method, path, headers, rule.action if rule else None))
            if rule is not None and rule.action == "503_before":
                return await self._answer(writer, 503, _UNAVAILABLE, {"Retry-After": "0"})
            kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith(("connection:", "keep-alive:"))]
            forward = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1") + body
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            try:
                up_writer.write(forward)
                await up_writer.drain()
                if rule is None:
                    return await self._pump(up_reader, writer)
                if rule.action in ("cut", "stall"):
                    return await self._pump(up_reader, writer, rule)
                await up_reader.read()  # the gateway handled it; its answer is lost on the way back
                if rule.action == "503_after":
                    await self._answer(writer, 503, _UNAVAILABLE, {"Retry-After": "0"})
                elif rule.action == "accepted":
                    location = rule.location(headers) if rule.location else "/"
                    payload = ('{"success":true,"status":"accepted","command_id":"' + location.rsplit("/", 1)[-1]
                               + '","message":"Accepted","location":"' + location + '"}').encode()
                    await self._answer(writer, 202, payload, {"Location": location})
                # drop_after: close without a word
            finally:
                up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, payload: bytes, headers: dict[str, str]) -> None:
        phrase = {202: "Accepted", 503: "Service Unavailable"}[status]
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
                     f"\r\n{extra}Connection: close\r\n\r\n".encode() + payload)
        await writer.drain()

    @staticmethod
    async def _pump(up: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: Rule | None = None) -> None:
        """Copy the answer through; with a cut rule, stop after the N-th event's blank line (+ extra bytes)."""
        sent = bytearray()
        while chunk := await up.read(65536):
            if cut is not None:
                sent += chunk
                stop = _cut_point(bytes(sent), cut.cut_after_events, cut.extra_bytes)
                if stop is not None:
                    writer.write(chunk[: len(chunk) - (len(sent) - stop)])
                    await writer.drain()
                    if cut.action == "stall":
                        await asyncio.Event().wait()  # silent until the proxy stops
                    return  # the caller closes the socket mid-stream: a dropped connection
            writer.write(chunk)
            await writer.drain()


def _cut_point(data: bytes, events: int, extra: int) -> int | None:
    """The byte offset just after the `events`-th event with an id, plus `extra`; None if not there yet."""
    start = 0
    for _ in range(events):
        at = data.find(b"\nid: ", start)
        if at < 0:
            return None
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return None
        start = end + 4
    return start + extra if len(data) >= start + extra else None
