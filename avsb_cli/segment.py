"""The Segment client: delivery that survives a bad network (the event is in event.py).

One ``httpx.Client`` is built in ``build_client`` (User-Agent, timeouts, no
redirects, a ``transport`` seam for tests). ``request`` wraps every call in
the retry policy written in the README:

- retried: connection errors (refused, reset), timeouts, HTTP 408, 429 and
  5xx except 501 and 505;
- backoff: 0.5 s, 1 s, 2 s, ... capped at 8 s, each scaled by a random
  factor in [0.5, 1] (jitter); ``Retry-After`` (seconds or a date) lengthens
  a wait up to 10 s (a longer one ends the attempts at once rather than
  hammering the server) but never shortens it: a negative, zero, ``nan``,
  ``inf``, past or garbled value gets the normal backoff;
- bounded: at most ``attempts`` tries and never past the total ``deadline``
  (20 s by default, ``--timeout`` / ``AVSB_TIMEOUT``); each attempt's
  connect and read timeouts are cut to the time left;
- not retried: DNS failures, TLS failures, other 4xx (Segment's message is
  shown), and redirects, which are never followed so the key never goes to
  another host.

The caller builds the message once, so every attempt carries the same
messageId and Segment deduplicates a retry that had in fact arrived; only
``sentAt`` is refreshed per attempt, as Segment uses it to correct clock skew.
"""

from __future__ import annotations

import json
import math
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from avsb_cli import __version__
from avsb_cli.errors import AvsbError, NetworkError
from avsb_cli.event import (  # noqa: F401 - the event, re-exported for callers of the client
    EVENT,
    EVENT_NAME,
    MAX_MESSAGE_BYTES,
    encode,
    experiment_event,
    library_context,
    now_iso,
)
from avsb_cli.policy import TIMEOUT_ENV, Policy  # noqa: F401 - re-exported for the client's callers
from avsb_cli.writekey import redact, remember_secret, shorten

USER_AGENT = f"avsb/{__version__} (+https://app.avsb.cloud/docs/integrations/segment)"
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600)) - {501, 505}

# Seams for tests: the CLI path can't take arguments, so tests replace these.
_sleep: Callable[[float], None] = time.sleep
_clock: Callable[[], float] = time.monotonic


@dataclass
class Delivery:
    url: str
    status: int
    attempts: int
    latency_ms: float
    body: bytes = b""
    causes: list[str] = field(default_factory=list)
    #: the answer's headers (A vs B's ETag and rate-limit headers)
    headers: Any = None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


_SSL_CONTEXTS: dict[tuple[str, str], Any] = {}


def _ssl_context() -> Any:
    """httpx's default context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), made once.

    Building one loads the CA bundle (slow: bench/RESULTS.md); a process that
    builds several clients (tests, backfills) pays for it only once.
    """
    env = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    ctx = _SSL_CONTEXTS.get(env)
    if ctx is None:
        try:
            ctx = _SSL_CONTEXTS[env] = httpx.create_ssl_context(trust_env=True)
        except (OSError, ssl.SSLError) as exc:
            where = f"SSL_CERT_FILE={env[0]}" if env[0] else f"SSL_CERT_DIR={env[1]}"
            reason = getattr(exc, "strerror", None) or str(exc)
            raise NetworkError(
                f"cannot load CA certificates from {where}: {reason}",
                hint="fix or unset SSL_CERT_FILE / SSL_CERT_DIR",
            ) from None
    return ctx


class _RedactLogs:
    """A logging filter that masks every write key avsb knows.

    httpx logs each request's URL at INFO (the settings-CDN URL holds the
    key) and httpcore logs response headers at DEBUG; an application or a
    user that turns logging on must not get the key from either.
    """

    def filter(self, record: Any) -> bool:
        text = record.getMessage()
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2",
                 "httpcore.proxy", "httpcore")


def _redact_http_logs() -> None:
    import logging  # already loaded by httpx

    for name in _HTTP_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _RedactLogs) for f in log.filters):
            log.addFilter(_RedactLogs())


def build_client(
    transport: httpx.BaseTransport | None = None, *, policy: Policy | None = None,
    tls: bool = True,
) -> httpx.Client:
    """The one HTTP client, over httpx's own transport unless a test passes
    one. ``tls=False`` for a client that only talks plain http (a local relay
    or test server): it skips loading the CA bundle (see bench/RESULTS.md),
    and any https request through it fails certificate checks instead of
    going unverified."""
    policy = policy or Policy()
    _redact_http_logs()
    verify: Any = True
    if transport is None:
        verify = _ssl_context() if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client = httpx.Client(
        transport=transport,
        # Only what transport.Bounded inflates within its cap.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
        verify=verify,
        follow_redirects=False,
        # HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE are honoured (corporate CI
        # needs them; httpx 0.28 reads no .netrc), but plain http always goes
        # direct: endpoints allow it only for loopback addresses, and a proxy
        # would see the key in its Basic credential (HTTP_PROXY, ALL_PROXY).
        trust_env=True,
        mounts={"http://": None, "all://127.0.0.1": None, "all://localhost": None,
                "all://[::1]": None},
    )
    from avsb_cli.transport import Bounded

    # Every answer is bounded in time and size whichever transport carries it,
    # the proxy transports httpx builds from the environment included (they
    # are wrapped where it keeps them).
    client._transport = Bounded(client._transport)
    client._mounts = {pattern: Bounded(t) if t is not None else None
                      for pattern, t in client._mounts.items()}
    return client


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


_HINTS = {
    "DNS": "check the host name in the endpoint, and the machine's DNS",
    "TLS": "check the system clock, SSL_CERT_FILE, or a proxy that intercepts TLS",
    "timed out": "check the network, or allow more time with --timeout or AVSB_TIMEOUT",
    "refused": "check the endpoint's host and port (--endpoint, AVSB_SEGMENT_ENDPOINT)",
}


def _hint_for(cause: str) -> str | None:
    for word, hint in _HINTS.items():
        if word in cause:
            return hint
    return None


def describe_error(exc: httpx.HTTPError) -> tuple[str, bool]:
    """A short cause for a transport error, and whether it is worth retrying."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if isinstance(err, socket.gaierror):
            return "could not resolve the host name (DNS)", False
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"TLS certificate check failed ({err.verify_message})", False
        if isinstance(err, ssl.SSLError):
            return "TLS handshake failed", False
        if isinstance(err, ConnectionRefusedError):
            return "connection refused", True
        if isinstance(err, ConnectionResetError):
            return "connection reset", True
    from avsb_cli.transport import AnswerTooLarge

    if isinstance(exc, AnswerTooLarge):  # endless, huge or a bomb: the same again next time
        return f"the answer was {exc}", False
    if isinstance(exc, httpx.DecodingError):
        return shorten(str(exc), 120), False
    text = str(exc).lower()
    if isinstance(exc, httpx.ProxyError):
        return f"the proxy from HTTPS_PROXY failed ({shorten(str(exc), 80)})", True
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting", True
    if isinstance(exc, httpx.ReadTimeout):
        return "timed out waiting for the response", True
    if isinstance(exc, httpx.TimeoutException):
        return "timed out", True
    if "name or service not known" in text or "nodename nor servname" in text or (
        "temporary failure in name resolution" in text
    ):
        return "could not resolve the host name (DNS)", False
    if "refused" in text:
        return "connection refused", True
    if "ssl" in text or "certificate" in text:
        return "TLS handshake failed", False
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection mid-response", True
    if isinstance(exc, httpx.TransportError):
        return f"connection failed ({type(exc).__name__})", True
    return type(exc).__name__, False


def segment_message(resp: httpx.Response) -> str:
    """What Segment said in an error response, in one short line."""
    text = ""
    try:
        doc = resp.json()
        if isinstance(doc, dict):
            for k in ("message", "error", "errors"):
                if doc.get(k):
                    text = str(doc[k])
                    break
    except ValueError:
        pass
    if not text:
        text = resp.text
    return shorten(text, 200)


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds the server asked to wait, or None when it asked for no usable wait.

    Only a finite, positive number of seconds or a date in the future counts:
    ``-1``, ``nan``, ``inf``, ``0``, a past date or garbage would otherwise
    turn the backoff into attempts in a tight loop (or a wait forever).
    """
    raw = (resp.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    policy: Policy,
    key: str | None = None,
    content: bytes | Callable[[], bytes] | None = None,
    headers: dict[str, str] | None = None,
    ok_statuses: frozenset[int] = frozenset(),
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    cap: int | None = None,
) -> Delivery:
    """Send one request under the retry policy.

    ``content`` may be a function, called once per attempt (to refresh
    sentAt). Returns the response for 2xx, and for statuses in
    ``ok_statuses`` that the caller wants to interpret itself (the CDN's
    404). Raises NetworkError otherwise, with one line naming the host and
    the cause.
    """
    sleep = sleep or _sleep
    clock = clock or _clock
    host = _host(url)
    start = clock()
    causes: list[str] = []
    auth = (key, "") if key is not None else None
    if key:
        remember_secret(key)  # masked in any error text, whoever called us
    attempt = 0
    while True:
        attempt += 1
        remaining = policy.deadline - (clock() - start)
        timeout = httpx.Timeout(
            max(0.05, min(policy.read_timeout, remaining)),
            connect=max(0.05, min(policy.connect_timeout, remaining)),
        )
        wait: float | None = None
        body = content() if callable(content) else content
        # The whole exchange ends by the deadline, however slowly the server
        # answers (transport.Bounded), and reads at most ``cap`` bytes.
        extensions: dict[str, Any] = {"avsb_deadline": time.monotonic() + max(0.05, remaining)}
        if cap is not None:
            extensions["avsb_cap"] = cap
        try:
            resp = client.request(
                method, url, content=body, headers=headers, auth=auth, timeout=timeout,
                extensions=extensions,
            )
        except httpx.HTTPError as exc:
            cause, retryable = describe_error(exc)
            causes.append(cause)
            if not retryable:
                raise NetworkError(f"cannot reach {host}: {cause}", hint=_hint_for(cause)) from None
        else:
            # httpx binds a response and its stream in a cycle, and the request
            # body (half a megabyte for a batch) hangs off it until the next
            # full garbage collection, which a long send rarely gets. The body
            # is read; unbinding frees all of it now.
            resp.stream = httpx.ByteStream(b"")
            status = resp.status_code
            if 200 <= status < 300 or status in ok_statuses:
                return Delivery(
                    url=url,
                    status=status,
                    attempts=attempt,
                    latency_ms=round((clock() - start) * 1000, 1),
                    body=resp.content,
                    causes=causes,
                    headers=resp.headers,
                )
            if 300 <= status < 400:
                target = _host(resp.headers.get("Location", "")) or "elsewhere"
                raise NetworkError(
                    f"{host} answered HTTP {status}, a redirect to {redact(target)}; "
                    "not followed, so the write key is not sent to another host",
                    hint="check the endpoint (--endpoint, AVSB_SEGMENT_ENDPOINT)",
                )
            message = segment_message(resp)
            cause = f"HTTP {status}" + (f": {message}" if message else "")
            causes.append(cause)
            if status not in RETRY_STATUSES:
                raise NetworkError(f"{host} refused the request: {cause}")
            wait = _retry_after(resp)
            if wait is not None and wait > policy.retry_after_cap:
                raise NetworkError(
                    f"{host} answered {cause} and asked to retry after {wait:g}s, "
                    f"longer than avsb waits ({policy.retry_after_cap:g}s)",
                    hint="try again later",
                )
        # Retry-After can lengthen the wait, never shorten it below the backoff.
        wait = max(wait or 0.0, policy.delay(attempt))
        elapsed = clock() - start
        if attempt >= policy.attempts or elapsed + wait >= policy.deadline:
            raise NetworkError(
                f"gave up on {host} after {attempt} attempt"
                f"{'s' if attempt > 1 else ''} in {elapsed:.1f}s: {causes[-1]}",
                hint=_hint_for(causes[-1]),
            )
        sleep(wait)


JSON_HEADERS = {"Content-Type": "application/json"}


def send_track(
    client: httpx.Client, base: str, key: str, msg: dict[str, Any], policy: Policy, **kw: Any
) -> Delivery:
    """POST one track message; ``msg`` ends up with the sentAt of the last attempt."""
    encode(msg)  # the size check, before any attempt

    def body() -> bytes:
        msg["sentAt"] = now_iso()
        return encode(msg)

    return request(
        client, "POST", f"{base}/v1/track", policy=policy, key=key,
        content=body, headers=JSON_HEADERS, **kw,
    )


# Validation -------------------------------------------------------------------


@dataclass
class Check:
    name: str
    title: str
    ok: bool | None  # None: not run
    detail: str = ""
    fix: str = ""

    def fail(self, detail: str, fix: str) -> None:
        self.ok, self.detail, self.fix = False, detail, fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": "pass" if self.ok else ("skip" if self.ok is None else "fail"),
            "detail": redact(self.detail),
            "fix": redact(self.fix),
        }


def fetch_settings(
    client: httpx.Client, cdn: str, key: str, policy: Policy
) -> tuple[int, dict[str, Any] | None]:
    url = f"{cdn}/v1/projects/{quote(key, safe='')}/settings"
    d = request(client, "GET", url, policy=policy, ok_statuses=frozenset({404}))
    doc = d.json() if d.status == 200 else None
    # The answer is untrusted: only a document shaped like source settings
    # counts (a captive portal or a proxy's error page answers 200 too).
    if not isinstance(doc, dict) or not isinstance(doc.get("integrations"), dict):
        return d.status, None
    if not isinstance(doc["integrations"].get("Segment.io", {}), dict):
        return d.status, None
    return d.status, doc


def workspace_region(settings: dict[str, Any]) -> tuple[str | None, str]:
    from avsb_cli.endpoints import region_of_api_host

    seg = settings.get("integrations", {}).get("Segment.io") or {}
    api_host = seg.get("apiHost") or ""
    if not isinstance(api_host, str):
        return None, shorten(repr(api_host), 60)
    if not api_host:
        # analytics.js defaults to the US host when the CDN names none.
        return "us", "api.segment.io/v1 (default)"
    return region_of_api_host(str(api_host)), str(api_host)


def run_checks(
    client: httpx.Client,
    *,
    key: str | None,
    key_problem: str | AvsbError | None,
    region: str,
    tracking: str,
    cdn: str,
    policy: Policy,
    send_event: dict[str, Any] | None = None,
) -> list[Check]:
    """The checks of ``avsb segment validate``, in order; later ones need earlier ones.

    ``key_problem`` says why there is no key; an AvsbError brings its own
    code and fix (a locked keyring is not fixed by storing a key again).
    """
    checks = [
        Check("key_format", "write key is well-formed", None),
        Check("key_known", "Segment knows the write key", None),
        Check("region", f"workspace region matches the configured region ({region})", None),
        Check("delivery", "tracking API accepts an authenticated request", None),
    ]
    fmt, known, reg, delivery = checks
    if key is None:
        if isinstance(key_problem, AvsbError):
            fmt.fail(key_problem.message, key_problem.hint or "")
        else:
            fmt.fail(
                key_problem or "no write key",
                "store a key: avsb integrations segment enable --write-key-stdin "
                "(or set AVSB_SEGMENT_WRITE_KEY)",
            )
        return checks
    fmt.ok, fmt.detail = True, f"key {redact(key)}"

    # One deadline for the whole validation, like a single request: the CDN
    # gets at most half of it, the delivery probe whatever is left.
    started = _clock()
    try:
        status, settings = fetch_settings(
            client, cdn, key, replace(policy, deadline=policy.deadline / 2)
        )
    except NetworkError as exc:
        known.fail(
            f"settings CDN: {exc.message}",
            exc.hint or "check the network, or AVSB_SEGMENT_CDN_URL if you set it",
        )
    else:
        if status == 404:
            known.fail(
                "the settings CDN answered 404: Segment has no source with this key",
                "copy the write key from Segment: Connections > Sources > your source > "
                "Settings > API Keys, then store it with "
                "avsb integrations segment enable --write-key-stdin",
            )
        elif settings is None:
            known.fail(
                "the settings CDN answered 200 but not with JSON settings",
                "check AVSB_SEGMENT_CDN_URL, or try again later",
            )
        else:
            known.ok, known.detail = True, f"{_host(cdn)} returned the source's settings"
            found, api_host = workspace_region(settings)
            if found is None:
                reg.ok, reg.detail = None, f"unknown apiHost {api_host!r}; not compared"
            elif found == region:
                reg.ok, reg.detail = True, f"apiHost {api_host} is in {found.upper()}"
            else:
                reg.fail(
                    f"the workspace is in {found.upper()} (apiHost {api_host}) but avsb is "
                    f"configured for {region.upper()}; its events would be dropped",
                    f"avsb integrations segment enable --region {found}",
                )

    policy = replace(policy, deadline=max(0.1, policy.deadline - (_clock() - started)))
    try:
        if send_event is not None:
            d = send_track(client, tracking, key, send_event, policy)
            who = send_event.get("userId") or send_event.get("anonymousId")
            what = f"sent test event {send_event['messageId']} as {who}"
        else:
            # An empty batch is authenticated and routed like any upload but
            # adds no event to the user's data.
            d = request(
                client, "POST", f"{tracking}/v1/batch", policy=policy, key=key,
                content=b'{"batch":[]}', headers=JSON_HEADERS,
            )
            what = "empty batch accepted"
        delivery.ok = True
        delivery.detail = f"{_host(tracking)}: HTTP {d.status}, {what}"
    except NetworkError as exc:
        delivery.fail(exc.message, exc.hint or "check the endpoint and the network")
    return checks
