"""A loopback HTTP receiver for outbound tests: records every raw request and honours Idempotency-Key.

    with HttpReceiver() as rx:
        ... POST rx.url("/effect") ...
        assert rx.requests[0].headers["idempotency-key"] == key and rx.effects == 1

Routes (any method):
  /effect            the side effect: counted once per Idempotency-Key; a repeated key gets the stored
                     response again (a request without a key is counted every time)
  /status/<code>     answers <code> with a JSON body; 3xx carry `Location: ?location=` (default /effect)
  /big?n=<bytes>     n bytes of "x"; `&chunked=1` streams them without a Content-Length
  /slow?s=<seconds>  answers after s seconds (abandoned on stop())
  /text              text/plain
  /agent             JSON {"answer": ..., "prompt": <the request's prompt>}
Stdlib only: a ThreadingHTTPServer in a daemon thread on 127.0.0.1:<free port>.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpReceiver", "ReceivedRequest"]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw_head: bytes  # request line and headers, the bytes as they arrived
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    receiver: HttpReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:  # disconnects are expected (size cut)
        pass


class _Tee:
    """The request stream, remembering every byte read since the last reset (the raw request head)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.seen = stream, bytearray()

    def readline(self, *args: Any) -> bytes:
        line = self.stream.readline(*args)
        self.seen += line
        return line

    def read(self, *args: Any) -> bytes:
        data = self.stream.read(*args)
        self.seen += data
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    rfile: Any

    def setup(self) -> None:
        super().setup()
        self.rfile = _Tee(self.rfile)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        raw_head = bytes(self.rfile.seen).rstrip(b"\r\n")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.rfile.seen.clear()
        request = ReceivedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                  raw_head, body)
        rx = self.server.receiver
        with rx.lock:
            rx.requests.append(request)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/effect":
            self._effect(request)
        elif url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
            headers = {"Location": query.get("location", "/effect")} if 300 <= code < 400 else {}
            self._json(code, {"status": code}, headers)
        elif url.path == "/big":
            self._big(int(query.get("n", "0")), query.get("chunked") == "1")
        elif url.path == "/slow":
            deadline = time.monotonic() + float(query.get("s", "1"))
            while time.monotonic() < deadline and not rx.stopping.is_set():
                time.sleep(0.02)
            self._json(200, {"slow": True})
        elif url.path == "/text":
            self._send(200, b"plain words", "text/plain; charset=utf-8")
        elif url.path == "/agent":
            prompt = request.json().get("prompt") if body else None
            self._json(200, {"answer": f"agent saw {len(prompt or '')} chars", "prompt": prompt})
        else:
            self._json(404, {"error": "no such route"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _effect(self, request: ReceivedRequest) -> None:
        rx = self.server.receiver
        key = request.headers.get("idempotency-key")
        with rx.lock:
            stored = rx.responses.get(key) if key else None
            if stored is None:
                rx.effects += 1
                received = json.loads(request.body) if request.body.startswith((b"{", b"[")) else request.body.decode()
                stored = (201, {"effect": rx.effects, "received": received})
                if key:
                    rx.responses[key] = stored
        self._json(*stored)

    def _big(self, n: int, chunked: bool) -> None:
        if not chunked:
            self._send(200, b"x" * n, "application/octet-stream")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, n, 1024):
            piece = b"x" * min(1024, n - start)
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class HttpReceiver:
    """Records requests in `requests`; `effects` counts distinct side effects on /effect."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.responses: dict[str, tuple[int, Any]] = {}
        self.effects = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpReceiver:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="http-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        self._server = self._thread = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "HttpReceiver is not started"
        return self._server.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.responses.clear()
            self.effects = 0
