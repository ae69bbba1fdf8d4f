"""A Segment-like HTTP server on 127.0.0.1 for tests and the benchmark.

It plays both roles avsb talks to: the tracking API (``/v1/track``,
``/v1/batch``) and the settings CDN (``/v1/projects/<key>/settings``).
Faults are queued per path and consumed one request at a time:

    server.fault("/v1/track", status=503, times=2)       # then success
    server.fault("/v1/track", status=429, retry_after=1)
    server.fault("/v1/track", delay=2.0)                  # slower than a timeout
    server.fault("/v1/track", reset=True)                 # close without answering
    server.fault("/v1/track", truncate=True)              # handle, then cut the body short
    server.fault("/v1/track", status=302, location="https://evil.example/x")
    server.fault("/v1/track", status=200, body=b"<html>")
    server.down("/v1/batch", status=503)   # every request fails until server.up()

Keys: ``server.add_key(key, region="us"|"eu")``; unknown keys get 404 on the
CDN. Tracking requests with an empty or very short key get 400, like Segment.
Every request is recorded in ``server.requests``; every accepted event in
``server.events`` (deduplicated copy by messageId in ``server.unique_events``).
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.localserver import LocalServer

API_HOSTS = {"us": "api.segment.io/v1", "eu": "events.eu1.segmentapis.com/v1"}


@dataclass
class Fault:
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    reset: bool = False
    #: process the request normally (events are recorded), then send the headers
    #: and only half of the body and close: a reset mid-response
    truncate: bool = False
    retry_after: str | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int = 0

    @property
    def write_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            user = base64.b64decode(auth[6:]).decode()
            return user.split(":", 1)[0]
        return None


class FakeSegment(LocalServer):
    def __init__(self, *, count_only: bool = False) -> None:
        self.keys: dict[str, str] = {}
        self.requests: list[Recorded] = []
        self.events: list[dict[str, Any]] = []
        self.event_count = 0
        self.count_only = count_only  # the benchmark keeps counts, not copies
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        #: a lasting fault per path (an outage), used once the queued ones are gone
        self.outages: dict[str, Fault] = {}
        self.lock = threading.Lock()
        self.in_flight = 0
        super().__init__(self._handler())

    # Control ------------------------------------------------------------------

    def add_key(self, key: str, region: str = "us") -> None:
        self.keys[key] = region

    def down(self, path: str, **kw: Any) -> None:
        """Fail every request to ``path`` (a Fault's fields) until ``up``."""
        self.outages[path] = Fault(**kw)

    def up(self, path: str | None = None) -> None:
        if path is None:
            self.outages.clear()
        else:
            self.outages.pop(path, None)

    def fault(self, path: str, *, times: int = 1, **kw: Any) -> None:
        for _ in range(times):
            self.faults[path].append(Fault(**kw))

    @property
    def unique_events(self) -> dict[str, dict[str, Any]]:
        return {e["messageId"]: e for e in self.events}

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being handled (a delayed one has finished)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if self.in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    # Handler ------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes; with Nagle on, a client that
            # delays its ACK waits about 40 ms per response (measured in bench/).
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _read(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if self.headers.get("Content-Encoding", "").lower() == "gzip" and raw:
                    raw = gzip.decompress(raw)
                return raw

            truncate = False

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.truncate:
                    self.truncate = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                with server.lock:
                    server.in_flight += 1
                try:
                    self._handle_one(method)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _handle_one(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                body = self._read()
                try:
                    doc = json.loads(body) if body else None
                except ValueError:
                    doc = None
                rec = Recorded(method, path, {k.lower(): v for k, v in self.headers.items()},
                               b"" if server.count_only else body,
                               None if server.count_only else doc)
                with server.lock:
                    if not server.count_only:
                        server.requests.append(rec)
                    queue = server.faults.get(path) or server.faults.get("*")
                    fault = queue.popleft() if queue else server.outages.get(path)
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.reset:
                        # Close without a response: the client sees a reset.
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                        self.close_connection = True
                        self.connection.close()
                        return
                    if fault.truncate:
                        self.truncate = True
                    elif fault.status != 200 or fault.body is not None:
                        headers = dict(fault.headers)
                        if fault.retry_after is not None:
                            headers["Retry-After"] = fault.retry_after
                        if fault.location is not None:
                            headers["Location"] = fault.location
                        rec.status = fault.status
                        payload = fault.body if fault.body is not None else json.dumps(
                            {"success": False, "message": f"fault {fault.status}"}
                        ).encode()
                        self._send(fault.status, payload, headers)
                        return
                if method == "GET" and path.startswith("/v1/projects/") and path.endswith(
                    "/settings"
                ):
                    key = path[len("/v1/projects/"):-len("/settings")]
                    if key not in server.keys:
                        rec.status = 404
                        self._send(404, b"Cannot GET - Invalid path or write key provided.",
                                   ctype="text/plain")
                        return
                    settings = {"integrations": {"Segment.io": {
                        "apiKey": key, "apiHost": API_HOSTS[server.keys[key]],
                    }}}
                    rec.status = 200
                    self._send(200, json.dumps(settings).encode())
                    return
                if method == "POST" and path in ("/v1/track", "/v1/batch"):
                    key = rec.write_key or (
                        doc.get("writeKey") if isinstance(doc, dict) else None
                    )
                    if not key or len(key) < 4:
                        rec.status = 400
                        self._send(400, b'{"success":false,"message":"An invalid write key '
                                        b'was provided"}')
                        return
                    if not isinstance(doc, dict):
                        rec.status = 400
                        self._send(400, b'{"success":false,"message":"Invalid JSON"}')
                        return
                    msgs = doc.get("batch", []) if path == "/v1/batch" else [doc]
                    with server.lock:
                        server.event_count += len(msgs)
                        if not server.count_only:
                            server.events.extend(msgs)
                    rec.status = 200
                    self._send(200, b'{"success":true}')
                    return
                rec.status = 404
                self._send(404, b'{"message":"not found"}')

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler


def closed_port_url() -> str:
    """A loopback URL whose port nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"
