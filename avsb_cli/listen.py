"""The local Segment stand-in of ``avsb segment listen``: receive, judge, report.

A page's analytics.js takes its settings from ``{cdn}/v1/projects/<key>/settings``
and then posts to the ``apiHost`` those settings name; server libraries post
to ``{host}/v1/batch``. This module answers both on a local port:

- ``judge`` (pure) says whether a message is the snippet's ``avsb_experiment``
  event: exactly the properties ``segment.experiment_event`` builds, with their
  types, or what is missing, extra, misspelt or of the wrong type;
- ``handle`` (pure) turns one HTTP request into Segment's answer and the
  records to show: accepted events, or why the request was refused;
- ``Listener`` serves them over ``http.server`` and hands records to the
  caller through a queue; ``Forwarder`` relays accepted events to the real
  Segment through ``segment.request`` (the retry policy) when asked.

Nothing here prints; the command renders the records (render.EventView).
"""

from __future__ import annotations

import base64
import difflib
import json
import queue
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from avsb_cli import segment, writekey
from avsb_cli.errors import ListenTimeoutError, NetworkError, UsageError

#: The documented default port: fixed, so a page's setup line keeps working.
DEFAULT_PORT = 8787
#: Segment's limits: 500 KB a batch request, 32 KB a message.
MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = segment.MAX_MESSAGE_BYTES
#: A body past this is not even read: the connection is closed after the answer.
MAX_READ_BYTES = 8 * MAX_BATCH_BYTES
#: The single-call paths, short (analytics.js) and long (HTTP API), by type.
SINGLE_PATHS = {
    "/v1/t": "track", "/v1/track": "track",
    "/v1/i": "identify", "/v1/identify": "identify",
    "/v1/p": "page", "/v1/page": "page",
    "/v1/s": "screen", "/v1/screen": "screen",
    "/v1/g": "group", "/v1/group": "group",
    "/v1/a": "alias", "/v1/alias": "alias",
}
BATCH_PATHS = ("/v1/batch", "/v1/b", "/v1/import")
#: analytics.js's own usage metrics: accepted and not shown.
METRICS_PATH = "/v1/m"
JSON_TYPES = ("application/json", "text/plain")

OK_BODY = b'{"success":true}'


def _failure(message: str) -> bytes:
    return json.dumps({"success": False, "message": message}).encode()


# Judging ------------------------------------------------------------------------


def _sample_properties() -> dict[str, Any]:
    """The snippet's properties as ``segment.experiment_event`` builds them:
    the one definition of the event, shared with test-event and send."""
    return segment.experiment_event(
        anonymous_id="-", experiment_id="", experiment_name="", variation_id="",
        variation_name="",
    )["properties"]


EXPECTED: dict[str, Any] = _sample_properties()
#: Properties whose value is fixed (``event_name``), with that value.
FIXED = {k: v for k, v in EXPECTED.items() if v}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _norm(name: str) -> str:
    """camelCase, Case, spaces, dashes and dots folded to snake_case."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    return re.sub(r"[\s.\-_]+", "_", name).lower()


def near_miss(name: Any) -> bool:
    """A name meant to be ``avsb_experiment``: ``Avsb_Experiment``, ``avsb_experiments``."""
    if not isinstance(name, str) or name == segment.EVENT:
        return False
    norm = _norm(name)
    return norm == segment.EVENT or (
        difflib.SequenceMatcher(None, norm, segment.EVENT).ratio() >= 0.85)


def judge(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The verdict on one message, or None if it is not (meant to be) an avsb event.

    PASS needs the event name ``avsb_experiment`` and exactly the five
    properties the snippet sends, each a string, ``event_name`` equal to
    ``experiment_viewed``. The result lists what is ``missing``, ``extra``,
    ``misspelt`` (sent name -> expected name), of the wrong type or value,
    and ``problems``: the same in words, in that order.
    """
    if msg.get("type", "track") != "track":
        return None
    name = msg.get("event")
    if name != segment.EVENT and not near_miss(name):
        return None
    props = msg.get("properties")
    problems: list[str] = []
    if name != segment.EVENT:
        problems.append(f"event name {name!r} should be {segment.EVENT!r}")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        problems.append(f"properties is {_a(json_type(props))}, should be an object")
        props = {}
    unknown = [k for k in props if k not in EXPECTED]
    absent = [k for k in EXPECTED if k not in props]
    misspelt: list[dict[str, str]] = []
    for key in list(unknown):
        close = [k for k in absent if _norm(key) == k]
        close = close or difflib.get_close_matches(_norm(key), absent, n=1, cutoff=0.8)
        if close:
            misspelt.append({"got": key, "expected": close[0]})
            unknown.remove(key)
            absent.remove(close[0])
    wrong_type: list[dict[str, str]] = []
    wrong_value: list[dict[str, Any]] = []
    for key, expected in EXPECTED.items():
        if key not in props:
            continue
        got = json_type(props[key])
        if got != json_type(expected):
            wrong_type.append({"name": key, "got": got, "expected": json_type(expected)})
        elif key in FIXED and props[key] != FIXED[key]:
            wrong_value.append({"name": key, "got": props[key], "expected": FIXED[key]})
    problems += [f"missing {k}" for k in absent]
    problems += [f"extra {k}" for k in unknown]
    problems += [f"{m['got']} should be {m['expected']}" for m in misspelt]
    problems += [f"{w['name']} is {_a(w['got'])}, should be {_a(w['expected'])}"
                 for w in wrong_type]
    problems += [f"{w['name']} is {w['got']!r}, should be {w['expected']!r}"
                 for w in wrong_value]
    if not (msg.get("userId") or msg.get("anonymousId")):
        problems.append("no userId or anonymousId")
    return {
        "verdict": "fail" if problems else "pass",
        "missing": absent,
        "extra": unknown,
        "misspelt": misspelt,
        "wrong_type": wrong_type,
        "wrong_value": wrong_value,
        "problems": problems,
    }


def _a(type_name: str) -> str:
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else (None if value is None else str(value))


def event_record(msg: dict[str, Any], *, path: str, received_at: str,
                 expected_key: str | None = None, key: str | None = None) -> dict[str, Any]:
    """What is shown (and printed under --json) for one accepted message."""
    verdict = judge(msg)
    props = msg.get("properties") if isinstance(msg.get("properties"), dict) else {}
    rec: dict[str, Any] = {
        "kind": "event",
        "received_at": received_at,
        "path": path,
        "type": _text(msg.get("type")),
        "event": _text(msg.get("event")),
        "user_id": _text(msg.get("userId")),
        "anonymous_id": _text(msg.get("anonymousId")),
        "message_id": _text(msg.get("messageId")),
        "avsb": verdict is not None,
        "verdict": verdict["verdict"] if verdict else None,
        "problems": verdict["problems"] if verdict else [],
        # Not the key: whether it is the one the page should use.
        "write_key_matches": (key == expected_key) if expected_key and key else None,
    }
    if verdict is not None:
        for name in ("experiment_id", "experiment_name", "variation_id", "variation_name"):
            rec[name] = _text(props.get(name))
        rec["judgement"] = {k: v for k, v in verdict.items() if k not in ("verdict", "problems")}
    return rec


# One request -> Segment's answer -----------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    #: accepted messages, each with the path they came on
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: the write key the request carried
    key: str | None = None
    #: why the request was refused (shown as a line), None if accepted
    reason: str | None = None
    #: shown on screen (metrics and CORS preflights are not)
    shown: bool = True


def settings_for(key: str, api_host: str) -> dict[str, Any]:
    """The settings answer that keeps analytics.js sending to ``api_host`` (host:port)."""
    return {
        "integrations": {"Segment.io": {
            "apiKey": key, "apiHost": f"{api_host}/v1", "protocol": "http",
            "unbundledIntegrations": [], "addBundledMetadata": True,
        }},
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}},
                 "identify": {"__default": {"enabled": True}},
                 "group": {"__default": {"enabled": True}}},
        # No usage metrics: analytics.js would post them to api.segment.io.
        "metrics": {"sampleRate": 0.0},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def basic_user(header: str) -> str | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        return base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").split(":")[0]
    except (ValueError, UnicodeDecodeError):
        return None


def _gunzip(raw: bytes) -> bytes | None:
    """At most MAX_BATCH_BYTES + 1 bytes of a gzip body (a bomb stops there)."""
    try:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = d.decompress(raw, MAX_BATCH_BYTES + 1)
        return out
    except zlib.error:
        return None


def shown_path(target: str) -> str:
    """The request path as lines and records show it: no query, and no key.

    A page that gets the settings URL wrong still puts its write key in the
    path (``/v1/projects/KEY/settings.json``), and a key can sit in any segment;
    the segment after ``projects`` and every key-shaped one are masked.
    """
    from urllib.parse import unquote

    parts = target.split("?", 1)[0].split("/")
    for i, part in enumerate(parts):
        if part and (parts[i - 1:i] == ["projects"] or writekey.key_shaped(unquote(part))):
            parts[i] = writekey.mask(unquote(part))
    return "/".join(parts)


def handle(method: str, path: str, headers: dict[str, str], body: bytes, *,
           host: str) -> Answer:
    """Segment's answer to one request (``headers`` with lower-case names).

    ``host`` is the ``host:port`` the client reached us on: the settings
    answer sends analytics.js back to it. A refused request's answer carries
    the key it was sent with, as an accepted one does, so that key is masked
    wherever it shows up later.
    """
    key = basic_user(headers.get("authorization", ""))
    path = path.split("?", 1)[0]
    shown = shown_path(path)
    if method == "GET":
        m = re.fullmatch(r"/v1/projects/([^/]+)/settings", path)
        if m:
            doc = settings_for(m.group(1), host)
            return Answer(200, json.dumps(doc).encode(), shown=False)
        if path in ("/", ""):
            return Answer(200, b"avsb segment listen: a local stand-in for Segment. "
                               b"POST events to /v1/batch or /v1/track.\n", "text/plain",
                          shown=False)
        return Answer(404, b"Cannot GET - Invalid path or write key provided.", "text/plain",
                      key=key, reason=f"GET {shown}: not a Segment path")
    if method != "POST":
        return Answer(405, _failure("Method not allowed"), key=key,
                      reason=f"{method} {shown}: not allowed")
    if path == METRICS_PATH:
        return Answer(200, OK_BODY, shown=False)
    kind = SINGLE_PATHS.get(path)
    if kind is None and path not in BATCH_PATHS:
        return Answer(404, _failure("Not found"), key=key,
                      reason=f"POST {shown}: not a Segment path")

    def refuse(message: str, why: str, status: int = 400) -> Answer:
        return Answer(status, _failure(message), key=key, reason=f"POST {shown}: {why}")

    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in JSON_TYPES:
        return refuse("Invalid content type", f"content type {ctype or '(none)'!r}, "
                      "Segment takes application/json")
    limit = MAX_MESSAGE_BYTES if kind else MAX_BATCH_BYTES
    if len(body) > limit:
        return refuse("Exceed payload limit",
                      f"{len(body):,} bytes, over Segment's {limit // 1024} KB limit")
    if headers.get("content-encoding", "").strip().lower() == "gzip":
        raw = _gunzip(body)
        if raw is None:
            return refuse("Invalid gzip body", "the gzip body does not decompress")
        body = raw
        if len(body) > limit:
            return refuse("Exceed payload limit",
                          f"over {limit // 1024} KB once decompressed, Segment's limit")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return refuse("Invalid JSON", "malformed JSON")
    if not isinstance(doc, dict):
        return refuse("Invalid JSON", f"the body is {_a(json_type(doc))}, not an object")
    if not key and isinstance(doc.get("writeKey"), str):
        key = doc["writeKey"]
    if not key or len(key) < 4:
        return refuse("An invalid write key was provided",
                      "no write key (HTTP Basic user name or writeKey)")
    if kind:
        messages = [doc if "type" in doc else {**doc, "type": kind}]
    else:
        batch = doc.get("batch")
        if not isinstance(batch, list):
            return refuse("Invalid batch", "no \"batch\" array")
        messages = batch
        for i, msg in enumerate(batch):
            if not isinstance(msg, dict):
                return refuse("Invalid JSON", f"batch item {i} is not an object")
            size = len(json.dumps(msg, separators=(",", ":")).encode())
            if size > MAX_MESSAGE_BYTES:
                return refuse("Exceed payload limit",
                              f"batch item {i} is {size:,} bytes, over Segment's 32 KB limit")
    return Answer(200, OK_BODY, messages=messages, key=key)


def cors_headers(headers: dict[str, str]) -> dict[str, str]:
    """What a browser needs: analytics.js sends Authorization, which makes
    every POST preflighted, so it is allowed by name."""
    origin = headers.get("origin")
    out = {"Access-Control-Allow-Origin": origin or "*"}
    if origin:
        out["Vary"] = "Origin"
        out["Access-Control-Allow-Credentials"] = "true"
    return out


def preflight_headers(headers: dict[str, str]) -> dict[str, str]:
    asked = headers.get("access-control-request-headers", "")
    allowed = {h.strip().lower() for h in asked.split(",") if h.strip()}
    allowed |= {"authorization", "content-type", "content-encoding"}
    return {
        **cors_headers(headers),
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(sorted(allowed)),
        "Access-Control-Max-Age": "600",
    }


# The server ----------------------------------------------------------------------


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Listener:
    """The HTTP server in a thread; records arrive on ``self.records``."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 expected_key: str | None = None) -> None:
        self.expected_key = expected_key
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        #: accepted batches for the forwarder: (messages, count)
        self.accepted: queue.Queue[list[dict[str, Any]]] | None = None
        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self.httpd = server_class((host, port), self._handler())
        except OSError as exc:
            if getattr(exc, "errno", None) == 98 or "in use" in str(exc):
                raise UsageError(
                    f"port {port} on {host} is in use (another avsb segment listen?)",
                    hint="stop it, or pick another port with --port (--port 0: any free one)",
                ) from None
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self.httpd.handle_error = self._handle_error  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> Listener:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # records are the log
                pass

            def _headers(self) -> dict[str, str]:
                return {k.lower(): v for k, v in self.headers.items()}

            def _reply(self, status: int, body: bytes, ctype: str,
                       extra: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self) -> None:
                self._reply(204, b"", "text/plain", preflight_headers(self._headers()))

            def do_GET(self) -> None:
                self._serve("GET", b"")

            def do_POST(self) -> None:
                headers = self._headers()
                length = headers.get("content-length")
                key = basic_user(headers.get("authorization", ""))
                shown = shown_path(self.path)
                if length is None or not length.strip().isdigit():
                    self.close_connection = True
                    self._answer(Answer(411, _failure("Length required"), key=key,
                                        reason=f"POST {shown}: no Content-Length"))
                    return
                n = int(length)
                if n > MAX_READ_BYTES:
                    self.close_connection = True
                    self._answer(Answer(400, _failure("Exceed payload limit"), key=key,
                                        reason=f"POST {shown}: {n:,} bytes, over "
                                               f"Segment's {MAX_BATCH_BYTES // 1024} KB limit"))
                    return
                self._serve("POST", self.rfile.read(n))

            def do_PUT(self) -> None:
                self._serve("PUT", b"")

            def do_DELETE(self) -> None:
                self._serve("DELETE", b"")

            def _serve(self, method: str, body: bytes) -> None:
                headers = self._headers()
                host = headers.get("host") or f"127.0.0.1:{listener.port}"
                answer = handle(method, self.path, headers, body, host=host)
                self._answer(answer)

            def _answer(self, answer: Answer) -> None:
                headers = self._headers()
                self._reply(answer.status, answer.body, answer.content_type,
                            cors_headers(headers))
                listener._record(answer, shown_path(self.path))

        return Handler

    def _handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        # Chromium drops keep-alive connections abruptly; that is not news.
        if isinstance(exc, OSError):
            return
        self.records.put({"kind": "rejected", "received_at": segment.now_iso(), "path": "",
                          "status": 500, "reason": f"internal error: {type(exc).__name__}: {exc}"})

    def _record(self, answer: Answer, path: str) -> None:
        if answer.key and len(answer.key) >= 4:  # not every "x": a 1-letter key masks nothing
            writekey.remember_secret(answer.key)  # shown masked, like the project's own key
        at = segment.now_iso()
        if answer.reason is not None:
            self.records.put({"kind": "rejected", "received_at": at, "path": path,
                              "status": answer.status, "reason": answer.reason})
            return
        for msg in answer.messages:
            self.records.put(event_record(msg, path=path, received_at=at,
                                          expected_key=self.expected_key, key=answer.key))
        if answer.messages and self.accepted is not None:
            self.accepted.put(answer.messages)


class Forwarder:
    """Relays accepted events to the real Segment, one batch per request received,
    through ``segment.request`` (retries, deadline); results go to ``records``."""

    def __init__(self, records: queue.Queue[dict[str, Any]], *, base: str, key: str,
                 policy: Any = None, transport: Any = None) -> None:
        self.records = records
        self.url = f"{base}/v1/batch"
        self.key = key
        self.policy = policy or segment.Policy.from_env(None)
        self.client = segment.build_client(transport, policy=self.policy,
                                           tls=base.startswith("https:"))
        self.inbox: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self.pending = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Forwarder:
        self.thread.start()
        return self

    def _run(self) -> None:
        while True:
            messages = self.inbox.get()
            if messages is None:
                return
            self.records.put(self.send(messages))

    def send(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        def body() -> bytes:
            return json.dumps({"batch": messages, "sentAt": segment.now_iso()},
                              separators=(",", ":")).encode()

        rec: dict[str, Any] = {"kind": "forward", "received_at": segment.now_iso(),
                               "events": len(messages), "endpoint": self.url}
        try:
            d = segment.request(self.client, "POST", self.url, policy=self.policy,
                                key=self.key, content=body, headers=segment.JSON_HEADERS)
        except NetworkError as exc:
            rec.update(ok=False, status=None, message=exc.message)
        else:
            rec.update(ok=True, status=d.status, attempts=d.attempts)
        return rec

    def close(self, wait: float = 5.0) -> None:
        self.inbox.put(None)
        if self.thread.ident is not None:  # started
            self.thread.join(wait)
        # A relay still in flight keeps its client (the process is ending):
        # closing it under the thread would end in a traceback, not a record.
        if not self.thread.is_alive():
            self.client.close()


# The listening loop ----------------------------------------------------------------


@dataclass
class Tally:
    events: int = 0
    avsb: int = 0
    passed: int = 0
    failed: int = 0
    rejected: int = 0
    forwarded: int = 0
    forward_failed: int = 0
    first_problem: str | None = None

    def add(self, rec: dict[str, Any]) -> None:
        kind = rec["kind"]
        if kind == "rejected":
            self.rejected += 1
        elif kind == "forward":
            if rec["ok"]:
                self.forwarded += rec["events"]
            else:
                self.forward_failed += rec["events"]
        elif kind == "event":
            self.events += 1
            if rec["avsb"]:
                self.avsb += 1
                if rec["verdict"] == "pass":
                    self.passed += 1
                else:
                    self.failed += 1
                    if self.first_problem is None:
                        self.first_problem = "; ".join(rec["problems"])

    def summary(self) -> dict[str, Any]:
        return {"kind": "summary", "events": self.events, "avsb_events": self.avsb,
                "passed": self.passed, "failed": self.failed, "rejected": self.rejected,
                "forwarded": self.forwarded, "forward_failed": self.forward_failed}


def wait(listener: Listener, show: Any, tally: Tally, *, count: int | None,
         timeout: float | None, clock: Any = time.monotonic) -> bool:
    """Show records as they come until ``count`` avsb events (then True) or
    ``timeout`` seconds (then False); forever when neither is given."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        if count is not None and tally.avsb >= count:
            return True
        left = None if deadline is None else deadline - clock()
        if left is not None and left <= 0:
            return False
        try:
            rec = listener.records.get(timeout=0.2 if left is None else min(0.2, left))
        except queue.Empty:
            continue
        tally.add(rec)
        show(rec)


def drain(listener: Listener, show: Any, tally: Tally) -> None:
    """Records already queued (a forward result, a late event), shown before the summary."""
    while True:
        try:
            rec = listener.records.get_nowait()
        except queue.Empty:
            return
        tally.add(rec)
        show(rec)


def setup_lines(url: str, key_masked: str | None) -> list[str]:
    """What to paste into a page's Segment setup to send to ``url``."""
    key = "WRITE_KEY"
    return [
        "Snippet: add this line before analytics.load(...):",
        f'  analytics._cdn = "{url}";',
        f"  analytics.load({key});",
        "npm (@segment/analytics-next):",
        f'  AnalyticsBrowser.load({{ writeKey: {key}, cdnURL: "{url}" }})',
    ] + ([f"{key} is the project's write key, {key_masked}."] if key_masked else [
        f"{key} is your source's write key (any key is accepted here)."])


def run(*, project: str, host: str, port: int, write_key: str | None, forward: bool,
        count: int | None, timeout: float | None, view: Any) -> dict[str, Any]:
    """Listen until ``count`` avsb events, ``timeout`` or Ctrl-C; returns the summary.

    ``view`` gets ``started(info)``, ``record(rec)`` for each record and
    ``summary(doc)``. Raises ValidationFailedError if an avsb event failed,
    ListenTimeoutError if fewer than ``count`` came in time; Ctrl-C shows the
    summary and propagates.
    """
    from avsb_cli import checks, endpoints
    from avsb_cli.config import ConfigStore
    from avsb_cli.errors import ValidationFailedError

    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    if timeout is not None and not 0 < timeout <= 86400:
        raise UsageError("--timeout must be between 0 and 86400 seconds")
    if not 0 <= port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    if write_key is not None:
        expected: str | None = writekey.normalise(write_key, source="--write-key")
    else:
        seg = ConfigStore.segment_of(ConfigStore().load(), project)
        try:
            expected = writekey.resolve(project, seg).key
        except Exception:  # the page's key is only compared, never needed
            expected = None
    forwarder = None
    if forward:
        seg, resolved = checks.usable_key(project)
        forwarder = Forwarder(queue.Queue(), base=endpoints.tracking_base(seg),
                              key=resolved.key)
    listener = Listener(host, port, expected_key=expected)
    if forwarder is not None:
        forwarder.records = listener.records
        listener.accepted = forwarder.inbox
        forwarder.start()
    tally = Tally()
    with listener:
        view.started({
            "kind": "listening", "url": listener.url, "port": listener.port,
            "loopback": endpoints.is_loopback(host),
            "forward": forwarder.url if forwarder else None,
            "setup": setup_lines(listener.url, writekey.mask(expected) or None),
        })
        finishing = False
        try:
            arrived = wait(listener, view.record, tally, count=count, timeout=timeout)
            finishing = True
            if forwarder is not None:
                # The last relay may still be retrying: its answer belongs in the report.
                forwarder.close(wait=forwarder.policy.deadline)
        except KeyboardInterrupt:
            if forwarder is not None:
                # A relay in flight gets a moment, unless Ctrl-C was to stop
                # waiting for it.
                forwarder.close(wait=0 if finishing else 1.0)
            drain(listener, view.record, tally)
            view.summary(tally.summary())
            raise
    drain(listener, view.record, tally)
    doc = tally.summary()
    view.summary(doc)
    if tally.failed:
        raise ValidationFailedError(
            f"{tally.failed} of {tally.avsb} avsb_experiment events failed: "
            f"{tally.first_problem}")
    if count is not None and not arrived:
        raise ListenTimeoutError(
            f"timed out after {timeout:g}s: {tally.avsb} of {count} avsb_experiment "
            f"event{'s' if count > 1 else ''} arrived",
            hint="check that the page loads analytics.js with the lines printed at start, "
                 "or allow more time with --timeout")
    return doc
