"""The asyncio clients: `AsyncClient` and `AsyncPublicClient`, the same operations as the blocking ones, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from weft_client import _core
from weft_client._core import Call, Settings
from weft_client.api import PublicApi, V2Api
from weft_client.errors import ApiError, CommandPending, NotFound, RateLimited, TransportError, Unavailable
from weft_client.events import Resumption, SseParser, run_event
from weft_client.types import CommandState, Page, RateLimit, Run, RunEvent

_DROPPED = (httpx.TransportError,)  # connect/read/write errors, timeouts, a connection closed mid-answer


class _Transport:
    def __init__(self, url: str, credential: str | None, *, settings: Settings | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> None:
        self.settings = settings or Settings(**options)
        headers = {"User-Agent": "weft-client", **self.settings.extra_headers}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        self.url = url.rstrip("/")
        self.rate_limit = RateLimit()
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.settings.timeout_s,
                                  transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        """One answer that is not a retryable refusal: 503 and dropped connections are retried (reads, and
        writes with an Idempotency-Key, which the gateway turns into one command however often it arrives);
        429 waits for Retry-After when the client is told to."""
        s, failures, waited, waits = self.settings, 0, 0.0, 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, params=call.params, json=call.body,
                                              headers=call.request_headers(), timeout=call.timeout_s or s.timeout_s)
            except _DROPPED as exc:
                failures += 1
                if not call.retryable or failures > s.max_retries:
                    raise TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(_core.backoff(failures))
                continue
            self.rate_limit = _core.rate_limit(response.headers, self.rate_limit)
            status, headers = response.status_code, dict(response.headers)
            if status in _core.RETRY_STATUSES and call.retryable and failures < s.max_retries:
                failures += 1
                await asyncio.sleep(_core.retry_delay(status, headers, failures, s.max_retry_wait_s))
                continue
            if status == 429 and s.wait_on_rate_limit and waits < _core.MAX_RATE_LIMIT_WAITS:
                delay = _core.retry_delay(status, headers, 1, s.max_rate_limit_wait_s)
                if waited + delay <= s.max_rate_limit_wait_s:
                    waited, waits = waited + delay, waits + 1
                    await asyncio.sleep(delay)
                    continue
            if status >= 400:
                raise _core.error_from(status, response.content, headers)
            return response

    async def _do(self, call: Call) -> Any:
        response = await self._send(call)
        if response.status_code == 202 and response.headers.get("location") and call.keyed:
            state = await self._settle(response.headers["location"])
            follow = call.follow(state) if call.follow else call  # no reader: repeat the call with its key
            return await self._do(follow) if isinstance(follow, Call) else follow
        return _core.result(call, response.content)

    async def _settle(self, location: str):
        """Poll a 202's Location until its command commits (the state) or is refused (the refusal raised)."""
        deadline, pause = time.monotonic() + self.settings.follow_timeout_s, self.settings.poll_interval_s
        while True:
            try:
                state = _core.command_state((await self._send(Call("GET", location))).content)
            except NotFound:  # not noted as pending (yet, or ever): keep looking until the deadline
                state = CommandState(id=location.rsplit("/", 1)[-1], state="pending")
            if state.state == "committed":
                return state
            if state.state == "refused":
                raise _core.error_for(state.status or 500, state.error or "Command refused")
            if time.monotonic() > deadline:
                raise CommandPending(state.id, location)
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 2.0)

    async def _pages(self, make: Any, page_size: int) -> AsyncIterator[Any]:
        offset = 0
        while True:
            page: Page = await self._do(make(offset))
            for item in page.items:
                yield item
            offset += len(page.items)
            if not page.items or offset >= page.count:
                return


class AsyncClient(_Transport, V2Api):
    """The v2 API as a user: `AsyncClient("http://127.0.0.1:8000", token=...)`.

    Options (keywords, see weft_client._core.Settings): max_retries, wait_on_rate_limit, max_rate_limit_wait_s,
    follow_timeout_s, timeout_s. `rate_limit` holds the last X-RateLimit-* headers."""

    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        super().__init__(url, token, **options)

    async def wait_run(self, workflow_id: str, run_id: str, *, timeout_s: float = 300.0, poll_s: float = 0.5) -> Run:
        """Poll the run until it finishes (completed, failed or terminated); TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = await self.get_run(workflow_id, run_id)
            if run.finished:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.status} after {timeout_s}s")
            await asyncio.sleep(poll_s)

    async def events(self, workflow_id: str, run_id: str, *, last_event_id: int | None = None,
                     until_finished: bool = True, max_reconnects: int = 20) -> AsyncIterator[RunEvent]:
        """The run's events, live, each exactly once and in order, resuming after a dropped connection from
        the last id handed out. Stops after `workflow_complete` (unless until_finished=False)."""
        state = Resumption(last_id=last_event_id)
        path = f"{_core.V2}/{workflow_id}/runs/{run_id}/events"
        while True:
            try:
                async with self._http.stream("GET", path, headers=state.headers(), timeout=httpx.Timeout(
                        self.settings.timeout_s, read=self.settings.stream_idle_timeout_s)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        error = _core.error_from(response.status_code, response.content, dict(response.headers))
                        if not isinstance(error, (Unavailable, RateLimited)):
                            raise error
                        raise httpx.RemoteProtocolError(str(error))  # worth reconnecting
                    parser = SseParser()
                    async for line in response.aiter_lines():
                        message = parser.line(line)
                        event = run_event(message) if message is not None else None
                        if event is not None and state.accept(event):
                            state.reconnects = 0  # progress: the reconnect budget is for a stream going nowhere
                            yield event
                            if state.finished and until_finished:
                                return
                # The server ended the stream (": reconnect"): resume from the last id.
            except _DROPPED as exc:
                if state.reconnects >= max_reconnects:
                    raise TransportError(f"event stream of run {run_id}: {exc}") from exc
            except ApiError:
                raise
            state.reconnects += 1
            if state.reconnects > max_reconnects:
                raise TransportError(f"event stream of run {run_id}: gave up after {max_reconnects} reconnects")
            await asyncio.sleep(_core.backoff(state.reconnects, base=0.1, cap=2.0))


class AsyncPublicClient(_Transport, PublicApi):
    """The public API with an API key: `AsyncPublicClient("http://127.0.0.1:8000", api_key=...)`."""

    def __init__(self, url: str, api_key: str, **options: Any) -> None:
        super().__init__(url, api_key, **options)
