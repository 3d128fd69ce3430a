"""A local OAuth 2.0 provider for connected-account tests: authorization code with PKCE (S256), refresh,
revocation and OpenID userinfo, strict the way Google's and Salesforce's token endpoints are.

    with FakeOAuth() as op:
        env = op.env("google")          # WEFT_GOOGLE_* pointing here
        ... GET op.url("/authorize?...") answers 302 to redirect_uri?code=&state=

It records every token request (`op.token_requests`), lets a test expire access tokens (`expires_in`), refuse
refreshes (`refuse_refresh`) or fail revocation (`revoke_status`). Stdlib only: a ThreadingHTTPServer on
127.0.0.1:<free port>.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID, CLIENT_SECRET = "fake-client", "fake-secret"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        op, parts = self.server.op, urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/authorize":
            op.authorize_requests.append(query)
            code = secrets.token_urlsafe(16)
            op.codes[code] = query
            location = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
            return self._send(302, headers={"Location": location})
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in op.access_tokens:
            return self._send(401, {"error": "invalid_token"})
        if parts.path == "/userinfo":
            return self._send(200, {"email": op.email, "sub": "fake-user"})
        return op.api(self, parts.path, query)

    def do_POST(self) -> None:  # noqa: N802
        op, parts = self.server.op, urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if parts.path in ("/token", "/revoke"):
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            with op.lock:
                status, body = (op.token if parts.path == "/token" else op.revoke)(form)
            return self._send(status, body)
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in op.access_tokens:
            return self._send(401, {"error": "invalid_token"})
        return op.api(self, parts.path, {}, json.loads(raw or b"{}"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    op: FakeOAuth


class FakeOAuth:
    def __init__(self, email: str = "alice@example.com") -> None:
        self.email = email
        self.lock = threading.Lock()
        self.codes: dict[str, dict[str, str]] = {}
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.revoked: list[str] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.api_requests: list[tuple[str, str, Any]] = []
        self.expires_in = 3600
        self.refuse_refresh = False
        self.refresh_delay_s = 0.0  # how long a refresh grant takes to answer (a slow provider)
        self.revoke_status = 200
        self.sent: list[bytes] = []
        self.documents: dict[str, dict[str, str]] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.op = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOAuth:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def env(self, provider: str) -> dict[str, str]:
        p = f"WEFT_{provider.upper()}_"
        return {p + "CLIENT_ID": CLIENT_ID, p + "CLIENT_SECRET": CLIENT_SECRET, p + "AUTHORIZE_URL": self.url("/authorize"),
                p + "TOKEN_URL": self.url("/token"), p + "REVOKE_URL": self.url("/revoke"),
                p + "USERINFO_URL": self.url("/userinfo"), p + "API_BASE_URL": self.url(""),
                **({p + "DOCS_BASE_URL": self.url("")} if provider == "google" else {})}

    def _issue(self, scope: str, refresh: str | None) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(16)
        self.access_tokens.add(access)
        body = {"access_token": access, "expires_in": self.expires_in, "token_type": "Bearer", "scope": scope}
        if refresh is None:
            refresh = "rt-" + secrets.token_urlsafe(16)
            self.refresh_tokens.add(refresh)
            body["refresh_token"] = refresh
        return body

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        self.token_requests.append(form)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") == "authorization_code":
            granted = self.codes.pop(form.get("code", ""), None)  # a code works once
            if granted is None or granted["redirect_uri"] != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "Bad code or redirect_uri"}
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != granted["code_challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            return 200, self._issue(granted["scope"], None)
        if form.get("grant_type") == "refresh_token":
            time.sleep(self.refresh_delay_s)
            if self.refuse_refresh or form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            return 200, self._issue("openid email", form["refresh_token"])
        return 400, {"error": "unsupported_grant_type"}

    def revoke(self, form: dict[str, str]) -> tuple[int, dict]:
        if self.revoke_status != 200:
            return self.revoke_status, {"error": "temporarily_unavailable"}
        token = form.get("token", "")
        if token not in self.refresh_tokens and token not in self.access_tokens:
            return 400, {"error": "invalid_token"}
        self.revoked.append(token)
        self.refresh_tokens.discard(token)
        self.access_tokens.clear()  # revoking the grant ends its access tokens too
        return 200, {}

    # ---- the provider's APIs, as far as the steps use them (Gmail v1, Docs v1, Salesforce REST query)

    mailbox: list[dict[str, Any]] = [
        {"id": "m1", "threadId": "t1", "unread": True, "from": "ann@example.com", "subject": "Invoice 42",
         "text": "Please pay invoice 42 by Friday."},
        {"id": "m2", "threadId": "t2", "unread": True, "from": "bob@example.com", "subject": "Lunch?",
         "text": "Lunch on Thursday?"},
        {"id": "m3", "threadId": "t3", "unread": False, "from": "cy@example.com", "subject": "Old news",
         "text": "Already read."},
    ]
    opportunities = [{"attributes": {"type": "Opportunity"}, "Id": "006A", "Name": "Acme renewal", "Amount": 12000},
                     {"attributes": {"type": "Opportunity"}, "Id": "006B", "Name": "Globex pilot", "Amount": 3000}]

    def _message(self, m: dict[str, Any]) -> dict[str, Any]:
        data = base64.urlsafe_b64encode(m["text"].encode()).decode().rstrip("=")
        return {"id": m["id"], "threadId": m["threadId"], "snippet": m["text"][:40],
                "payload": {"mimeType": "multipart/alternative",
                            "headers": [{"name": "From", "value": m["from"]}, {"name": "Subject", "value": m["subject"]},
                                        {"name": "To", "value": self.email}, {"name": "Date", "value": "Fri, 4 Dec 2026"}],
                            "parts": [{"mimeType": "text/plain", "body": {"data": data}}]}}

    def api(self, handler: _Handler, path: str, query: dict[str, str], body: Any = None) -> None:
        self.api_requests.append((path, handler.command, body if body is not None else query))
        gmail = "/gmail/v1/users/me/messages"
        if handler.command == "GET" and path == gmail:
            hits = [m for m in self.mailbox if "is:unread" not in query.get("q", "") or m["unread"]]
            hits = hits[: int(query.get("maxResults", "100"))]
            return handler._send(200, {"messages": [{"id": m["id"], "threadId": m["threadId"]} for m in hits],
                                       "resultSizeEstimate": len(hits)})
        if handler.command == "GET" and path.startswith(gmail + "/"):
            found = [m for m in self.mailbox if m["id"] == path.rsplit("/", 1)[1]]
            if found:
                return handler._send(200, self._message(found[0]))
        if handler.command == "POST" and path == gmail + "/send":
            self.sent.append(base64.urlsafe_b64decode(body["raw"] + "=" * (-len(body["raw"]) % 4)))
            return handler._send(200, {"id": f"sent-{len(self.sent)}", "threadId": "t-sent", "labelIds": ["SENT"]})
        if handler.command == "POST" and path == "/v1/documents":
            self.documents[f"doc-{len(self.documents) + 1}"] = {"title": body["title"], "text": ""}
            return handler._send(200, {"documentId": f"doc-{len(self.documents)}", "title": body["title"]})
        if handler.command == "POST" and path.startswith("/v1/documents/") and path.endswith(":batchUpdate"):
            doc = self.documents[path.removeprefix("/v1/documents/").removesuffix(":batchUpdate")]
            doc["text"] += body["requests"][0]["insertText"]["text"]
            return handler._send(200, {"replies": [{}]})
        if handler.command == "GET" and path.endswith("/query") and path.startswith("/services/data/"):
            return handler._send(200, {"totalSize": len(self.opportunities), "done": True,
                                       "records": self.opportunities})
        handler._send(404, {"error": {"code": 404, "message": f"no fake for {path}"}})
