"""A fake OpenAI-compatible HTTP server for tests.

The real ``openai`` client talks to it over loopback::

    with FakeOpenAI() as fake:
        fake.script(Reply('{"steps": []}'), Status(429, headers={"retry-after": "0"}))
        client = AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=2.0)
        ...
        assert fake.requests[0]["model"] == "m"

Only ``POST /v1/chat/completions`` is served; every other path answers 404 with an OpenAI-style error body.
Behaviours are taken from the scripted queue one per request, in order; when the queue is empty,
``responder(request_json)`` decides (default: ``Reply("{}")``). Stdlib only: a ``ThreadingHTTPServer`` in a
daemon thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

__all__ = ["Behaviour", "FakeOpenAI", "Hang", "RawBody", "Reply", "Status"]


class Reply:
    """A normal chat completion whose assistant message content is ``content``."""

    def __init__(
        self, content: str, *, prompt_tokens: int = 100, completion_tokens: int = 50, model: str | None = None
    ) -> None:
        self.content = content
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.model = model

    def __repr__(self) -> str:
        return f"Reply({self.content!r}, prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens})"


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    409: ("conflict_error", None),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


class Status:
    """An HTTP error answered with an OpenAI-style body ``{"error": {"message", "type", "code"}}``."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        err_type, code = _ERROR_TYPES.get(self.status, ("server_error" if self.status >= 500 else "api_error", None))
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return {"error": {"message": self.message or f"fake {self.status}: {phrase}", "type": err_type, "param": None, "code": code}}

    def __repr__(self) -> str:
        return f"Status({self.status}, {self.message!r})"


class Hang:
    """Sleep ``seconds`` (in small slices, abandoned on ``stop()``), then answer with ``then``."""

    def __init__(self, seconds: float, then: Behaviour | None = None) -> None:
        self.seconds = seconds
        self.then: Behaviour = then if then is not None else Reply("{}")

    def __repr__(self) -> str:
        return f"Hang({self.seconds}, then={self.then!r})"


class RawBody:
    """A 200 whose body is exactly these bytes (for a broken server)."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        self.body = body
        self.content_type = content_type

    def __repr__(self) -> str:
        return f"RawBody({self.body[:40]!r}, {self.content_type!r})"


Behaviour = Union[Reply, Status, Hang, RawBody]

_SLICE_S = 0.02


def _coerce(behaviour: object) -> Behaviour:
    """Accept a behaviour, or as shorthands a str (Reply content) or a dict/list (Reply of its JSON)."""
    if isinstance(behaviour, (Reply, Status, Hang, RawBody)):
        return behaviour
    if isinstance(behaviour, str):
        return Reply(behaviour)
    if isinstance(behaviour, (dict, list)):
        return Reply(json.dumps(behaviour))
    raise TypeError(f"not a fake OpenAI behaviour: {behaviour!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: disconnects are expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # an idle keep-alive connection is dropped after this

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, threading.current_thread(), add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, threading.current_thread(), add=False)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):  # client went away / socket shut down on stop()
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _not_found(self) -> None:
        self._read_body()
        status = Status(404, f"Invalid URL ({self.command} {self.path})")
        self._send_json(404, status.body())

    # -- routes ----------------------------------------------------------------------------------------

    do_GET = do_PUT = do_PATCH = do_DELETE = _not_found

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/chat/completions":
            self._not_found()
            return
        raw = self._read_body()
        try:
            request = json.loads(raw or b"null")
            if not isinstance(request, dict):
                raise ValueError("body is not a JSON object")
        except ValueError as exc:
            self._send_json(400, Status(400, f"We could not parse the JSON body of your request: {exc}").body())
            return
        behaviour = self.server.fake._next(request)
        self._answer(behaviour, request)

    def _answer(self, behaviour: Behaviour, request: dict[str, Any]) -> None:
        fake = self.server.fake
        while isinstance(behaviour, Hang):
            deadline = time.monotonic() + behaviour.seconds
            while (left := deadline - time.monotonic()) > 0:
                if fake._stopping.is_set():
                    self.close_connection = True  # abandon without answering
                    return
                time.sleep(min(_SLICE_S, left))
            behaviour = _coerce(behaviour.then)
        if isinstance(behaviour, Reply):
            prompt, completion = behaviour.prompt_tokens, behaviour.completion_tokens
            self._send_json(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": behaviour.model or str(request.get("model") or "fake-model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": behaviour.content, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                },
            )
        elif isinstance(behaviour, Status):
            self._send_json(behaviour.status, behaviour.body(), behaviour.headers)
        elif isinstance(behaviour, RawBody):
            self._send(200, behaviour.body, behaviour.content_type)
        else:  # pragma: no cover - _coerce guarantees one of the above
            raise TypeError(behaviour)


class FakeOpenAI:
    """Fake OpenAI server on 127.0.0.1:<free port>. Use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self.responder: Callable[[dict], object] | None = None
        self.requests: list[dict] = []
        self._queue: deque[object] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()  # returns within one poll interval
        server.server_close()
        with self._lock:
            conns = list(self._conns.items())
        for conn, _ in conns:  # wake handlers blocked reading an idle keep-alive connection
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for _, handler in conns:
            handler.join(max(0.0, deadline - time.monotonic()))
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *behaviours: object) -> None:
        """Queue behaviours, consumed one per request in order (before ``responder`` is consulted)."""
        with self._lock:
            self._queue.extend(behaviours)

    # -- used by the handler ---------------------------------------------------------------------------

    def _next(self, request: dict) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return _coerce(self._queue.popleft())
            responder = self.responder
        return _coerce(responder(request)) if responder is not None else Reply("{}")

    def _track(self, conn: socket.socket, thread: threading.Thread, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = thread
            else:
                self._conns.pop(conn, None)
