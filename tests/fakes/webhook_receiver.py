"""A loopback webhook receiver that honours `webhook-id` (Standard Webhooks): the first successful request
per id is applied, a repeated id is answered 200 and not applied again. Records every raw request.

    with WebhookReceiver() as rx:
        endpoint url: rx.url("/ok") | rx.url("/fail") | rx.url("/flaky?fail=2") | rx.url("/slow?s=3")
        rx.applied -> {webhook_id: the body applied}; rx.requests -> every request as it arrived

Routes (POST):
  /ok                 applies and answers 200
  /fail               always 500
  /flaky?fail=<n>     500 for the first n requests of each webhook-id, then applies (retries succeed)
  /slow?s=<seconds>   applies at once, answers after s seconds (a crash "after sending" happens in between)
  /redirect           302 to /ok (which must not be followed)
`rx.mode` overrides every route when set ("fail" or "ok"), so a test can make an endpoint recover.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_receiver import HttpReceiver, ReceivedRequest, _Handler, _Server

__all__ = ["WebhookReceiver"]


class _WebhookServer(_Server):
    request_queue_size = 128  # many deliveries connect at once (no keep-alive): no SYN dropped by a full backlog


class _WebhookHandler(_Handler):
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        raw_head = bytes(self.rfile.seen).rstrip(b"\r\n")
        self.rfile.seen.clear()
        request = ReceivedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                  raw_head, body)
        rx: WebhookReceiver = self.server.receiver  # type: ignore[assignment]
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = rx.mode or url.path.strip("/")
        webhook_id = request.headers.get("webhook-id", "")
        with rx.lock:
            rx.requests.append(request)
            rx.seen[webhook_id] += 1
            nth = rx.seen[webhook_id]
        if route == "fail" or (route == "flaky" and nth <= int(query.get("fail", "1"))):
            self._json(500, {"error": "receiver failing on purpose"})
            return
        if route == "redirect":
            self._json(302, {"moved": True}, {"Location": "/ok"})
            return
        if route not in ("ok", "flaky", "slow"):
            self._json(404, {"error": "no such route"})
            return
        with rx.lock:
            duplicate = webhook_id in rx.applied
            if not duplicate:
                rx.applied[webhook_id] = request.body
        if route == "slow":
            deadline = time.monotonic() + float(query.get("s", "1"))
            while time.monotonic() < deadline and not rx.stopping.is_set():
                time.sleep(0.01)
        self._json(200, {"ok": True, "duplicate": duplicate})

    do_POST = do_GET = _handle


class WebhookReceiver(HttpReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.applied: dict[str, bytes] = {}
        self.seen: Counter[str] = Counter()
        self.mode: str | None = None

    def start(self) -> WebhookReceiver:
        self._server = _WebhookServer(("127.0.0.1", 0), _WebhookHandler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def requests_for(self, execution_id: Any) -> list[ReceivedRequest]:
        with self.lock:
            return [r for r in self.requests if r.headers.get("x-webhook-execution-id") == str(execution_id)]
