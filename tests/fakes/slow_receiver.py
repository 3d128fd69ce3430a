"""HttpReceiver whose /effect can answer late: `/effect?delay=<s>` records the effect at once, then waits
before answering. The wait widens the window "the side effect happened, the caller has not recorded it",
which is where a crash must not lead to a second effect.

    with SlowEffectReceiver() as rx:
        ... POST rx.url("/effect?delay=0.3") ...
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_receiver import HttpReceiver, _Handler, _Server

__all__ = ["SlowEffectReceiver"]


class _SlowHandler(_Handler):
    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        url = urlsplit(self.path)
        if url.path == "/effect":
            delay = float(parse_qs(url.query).get("delay", ["0"])[0])
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.server.receiver.stopping.is_set():
                time.sleep(0.01)
        super()._json(status, payload, headers)


class SlowEffectReceiver(HttpReceiver):
    def start(self) -> SlowEffectReceiver:
        self._server = _Server(("127.0.0.1", 0), _SlowHandler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="slow-http-receiver", daemon=True)
        self._thread.start()
        return self

    def keys_for(self, marker: str) -> list[str]:
        """Idempotency keys of every /effect request whose JSON body is {"run": marker}, in arrival order."""
        with self.lock:
            requests = list(self.requests)
        keys = []
        for r in requests:
            if urlsplit(r.path).path != "/effect" or not r.body.startswith(b"{"):
                continue
            if r.json().get("run") == marker:
                keys.append(r.headers.get("idempotency-key", ""))
        return keys

    def effects_for(self, marker: str) -> int:
        """Distinct effects the receiver applied for that marker (one per distinct key, as it honours keys)."""
        return len(set(self.keys_for(marker)))
