"""A strict A vs B stand-in on 127.0.0.1, for tests and the benchmark.

It serves the contract avsb assumes (../shared/AVSB_API.md) the way the
published conventions say:

- ``Authorization: Bearer`` checked on every call but ``/api/openapi.json``
  (401 unknown token, 403 ``scope_missing`` with ``details.missingScope``,
  404 for another org or an unknown project);
- the envelope: ``{"data": ...}``, lists with ``next_cursor``/``has_more``,
  errors as ``{"error": {"code", "message", "details"}}``;
- ``ETag`` on the integration, ``If-Match`` enforced (412);
- ``Idempotency-Key`` kept (a day) with a fingerprint of the body: the same
  key and body replay the cached answer (200), another body is 409;
- ``X-RateLimit-Limit/Remaining/Reset`` on every answer.

Faults use fakesegment's ``Fault`` (status, body, delay, reset, truncate,
retry_after, headers) and are queued per ``"METHOD /path"``, ``"/path"`` or
``"*"``; ``server.before(method, path, fn)`` runs ``fn`` once before the
next such request is handled (a dashboard edit at just the wrong moment).
Every request is recorded in ``server.requests``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.fakesegment import Fault, Recorded
from tests.support.localserver import LocalServer

PAT = "pat_" + "a3f8c2d1" * 8
PAT2 = "pat_" + "0b9e7d6c" * 8
SERVICE = "avsb_svc_abc12345_KMv3l4Qp9xYzR2sT8uVwX1yZ0aBcDeFgHiJkLmNoPq"
ORG = "org_acme"
ALL_SCOPES = frozenset({"projects:read", "projects:write", "integrations:read",
                        "integrations:write"})
OPENAPI_PATHS = {
    "/api/orgs/{orgId}/projects": {"get": {"operationId": "listProjects"}},
    "/api/orgs/{orgId}/projects/{projectId}/integrations/segment": {
        "get": {"operationId": "getSegmentIntegration"},
        "put": {"operationId": "updateSegmentIntegration"},
    },
}


class FakeAvsb(LocalServer):
    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, frozenset[str]]] = {}
        self.projects: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.integrations: dict[tuple[str, str], dict[str, Any]] = {}
        self.idempotency: dict[tuple[str, str], tuple[str, float, int, bytes, str]] = {}
        self.openapi_paths: dict[str, Any] = json.loads(json.dumps(OPENAPI_PATHS))
        self.requests: list[Recorded] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.hooks: dict[str, deque[Callable[[], None]]] = defaultdict(deque)
        self.writes = 0  # PUTs applied (replays and refusals not counted)
        self.lock = threading.Lock()
        super().__init__(self._handler())

    # Control ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def add_token(self, token: str, org: str = ORG,
                  scopes: frozenset[str] | set[str] = ALL_SCOPES) -> None:
        self.tokens[token] = (org, frozenset(scopes))

    def add_project(self, id: str, name: str, short_id: str | None = None,
                    org: str = ORG) -> None:
        self.projects[org].append({"id": id, "name": name, "shortId": short_id or id[-6:]})
        self.integrations[(org, id)] = {"enabled": False, "writeKey": None,
                                        "updatedAt": _now(), "version": 1}

    def integration(self, project_id: str, org: str = ORG) -> dict[str, Any]:
        return self.integrations[(org, project_id)]

    def edit(self, project_id: str, org: str = ORG, **fields: Any) -> None:
        """A change made in the dashboard: a new version, so a new ETag."""
        with self.lock:
            state = self.integrations[(org, project_id)]
            state.update(fields)
            state["version"] += 1
            state["updatedAt"] = _now()

    def fault(self, where: str, *, times: int = 1, **kw: Any) -> None:
        for _ in range(times):
            self.faults[where].append(Fault(**kw))

    def before(self, method: str, path: str, fn: Callable[[], None]) -> None:
        self.hooks[f"{method} {path}"].append(fn)

    def seg_path(self, project_id: str, org: str = ORG) -> str:
        return f"/api/orgs/{org}/projects/{project_id}/integrations/segment"

    def of(self, method: str, path_part: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # Handler ------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any = None, *, raw: bytes | None = None,
                      headers: dict[str, str] | None = None, truncate: bool = False) -> None:
                body = raw if raw is not None else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59",
                           "X-RateLimit-Reset": str(int(time.time()) + 60), **(headers or {})}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def _error(self, status: int, code: str, message: str,
                       details: dict[str, Any] | None = None) -> tuple[int, Any, dict]:
                return status, {"error": {"code": code, "message": message,
                                          "details": details or {}}}, {}

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                path = url.path
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    doc = json.loads(body) if body else None
                except ValueError:
                    doc = None
                rec = Recorded(method, path, {k.lower(): v for k, v in self.headers.items()},
                               body, doc)
                where = f"{method} {path}"
                with server.lock:
                    server.requests.append(rec)
                    hooks = server.hooks.get(where)
                    hook = hooks.popleft() if hooks else None
                    fault = None
                    for key in (where, path, "*"):
                        if server.faults.get(key):
                            fault = server.faults[key].popleft()
                            break
                if hook:
                    hook()
                truncate = False
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.reset:
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                        self.close_connection = True
                        self.connection.close()
                        return
                    truncate = fault.truncate
                    if not truncate and (fault.status != 200 or fault.body is not None):
                        headers = dict(fault.headers)
                        if fault.retry_after is not None:
                            headers["Retry-After"] = fault.retry_after
                        if fault.location is not None:
                            headers["Location"] = fault.location
                        rec.status = fault.status
                        raw = fault.body if fault.body is not None else json.dumps(
                            {"error": {"code": "fault", "message": f"fault {fault.status}"}}
                        ).encode()
                        self._send(fault.status, raw=raw, headers=headers)
                        return
                status, answer, headers = self._route(method, path, parse_qs(url.query), body,
                                                      doc)
                rec.status = status
                self._send(status, answer, headers=headers, truncate=truncate)

            def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
                       doc: Any) -> tuple[int, Any, dict[str, str]]:
                if path == "/api/openapi.json" and method == "GET":
                    return 200, {"openapi": "3.1.0", "paths": server.openapi_paths}, {}
                auth = self.headers.get("Authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else ""
                if token not in server.tokens:
                    return self._error(401, "unauthorized", "Token missing, invalid, expired "
                                       "or revoked")
                org, scopes = server.tokens[token]
                parts = path.strip("/").split("/")
                if parts[:2] != ["api", "orgs"] or len(parts) < 4 or parts[3] != "projects":
                    return self._error(404, "not_found", "Not found")
                if parts[2] != org:
                    return self._error(404, "not_found", "Organisation not found")

                def need(scope: str) -> tuple[int, Any, dict] | None:
                    if scope in scopes:
                        return None
                    return self._error(403, "scope_missing",
                                       f"Token is missing required scope: {scope}",
                                       {"missingScope": scope})

                if len(parts) == 4 and method == "GET":
                    refused = need("projects:read")
                    if refused:
                        return refused
                    items = server.projects.get(org, [])
                    limit = max(1, min(100, int((query.get("limit") or ["20"])[0])))
                    start = int((query.get("cursor") or ["0"])[0])
                    page = items[start:start + limit]
                    more = start + limit < len(items)
                    return 200, {"data": page, "next_cursor": str(start + limit) if more
                                 else None, "has_more": more}, {}
                if len(parts) == 7 and parts[5:] == ["integrations", "segment"]:
                    key = (org, parts[4])
                    if method == "GET":
                        refused = need("integrations:read")
                        if refused:
                            return refused
                        if key not in server.integrations:
                            return self._error(404, "not_found", "Project not found")
                        return self._state(key)
                    if method == "PUT":
                        refused = need("integrations:write")
                        if refused:
                            return refused
                        if key not in server.integrations:
                            return self._error(404, "not_found", "Project not found")
                        return self._put(token, key, body, doc)
                return self._error(404, "not_found", "Not found")

            def _state(self, key: tuple[str, str]) -> tuple[int, Any, dict[str, str]]:
                s = server.integrations[key]
                data = {"enabled": s["enabled"], "writeKey": s["writeKey"],
                        "updatedAt": s["updatedAt"]}
                return 200, {"data": data}, {"ETag": f'"v{s["version"]}"'}

            def _put(self, token: str, key: tuple[str, str], body: bytes,
                     doc: Any) -> tuple[int, Any, dict[str, str]]:
                idem = self.headers.get("Idempotency-Key")
                fp = hashlib.sha256(body).hexdigest()
                with server.lock:
                    if idem:
                        cached = server.idempotency.get((token, idem))
                        if cached and time.time() - cached[1] < 86400:
                            if cached[0] != fp:
                                return self._error(409, "idempotency_conflict",
                                                   "Idempotency-Key reused with another body")
                            return 200, json.loads(cached[3]), {"ETag": cached[4]}
                    state = server.integrations[key]
                    if_match = self.headers.get("If-Match")
                    if if_match and if_match != f'"v{state["version"]}"':
                        return self._error(412, "precondition_failed", "ETag does not match")
                    if (not isinstance(doc, dict) or set(doc) != {"enabled", "writeKey"}
                            or not isinstance(doc["enabled"], bool)
                            or not (doc["writeKey"] is None or isinstance(doc["writeKey"], str))):
                        return self._error(400, "validation_failed", "Body failed validation")
                    state.update(enabled=doc["enabled"], writeKey=doc["writeKey"],
                                 updatedAt=_now())
                    state["version"] += 1
                    server.writes += 1
                    status, answer, headers = self._state(key)
                    if idem:
                        server.idempotency[(token, idem)] = (
                            fp, time.time(), status, json.dumps(answer).encode(), headers["ETag"])
                    return status, answer, headers

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
