"""avsb's HTTP/1.1 transport for httpx, on the standard library's http.client.

httpx's own transport (httpcore and h11, in pure Python) costs about 1 ms of
CPU a request here and 60 ms to import; `segment send` posts hundreds of
batches from threads that share the GIL with the thread building them, so
that is time taken from the build. This transport does the same job for what
avsb needs, in about a fifth of the CPU, and http.client is already loaded by
httpx. httpx keeps doing everything above the wire: auth, headers, redirects
(avsb follows none), content decoding, and proxies (httpx mounts its own
transports for HTTPS_PROXY and the like).

- Keep-alive: idle connections are pooled per (scheme, host, port), any
  number of threads at once, and closed on any error or when the server says
  so.
- Timeouts come from httpx's per-request ``timeout`` extension; the body is
  streamed to ``Bounded`` (below), which reads at most the answer cap.
- An answer cut off inside its headers is an error, not a 200 without
  headers (http.client takes the end of the stream for the blank line).
- Errors become the httpx exceptions its transport raises, with the socket
  or TLS error as their cause, so ``segment.describe_error`` reads them the
  same way.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx

#: idle connections kept per host (more than --concurrency's 16 is never needed)
MAX_IDLE = 16

_Key = tuple[str, str, int]


class Http11Transport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}",
                                            request=request)
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeout = request.extensions.get("timeout", {})
        conn = self._take(key) or self._connect(key, timeout.get("connect"), request)
        abort = request.extensions.get("avsb_abort")
        if abort is not None:
            abort.socket = conn.sock
        try:
            conn.sock.settimeout(timeout.get("write"))
            conn.putrequest(request.method, url.raw_path.decode("ascii"),
                            skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
            conn.endheaders(request.read() or None)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.WriteTimeout(str(exc) or "timed out", request=request) from exc
            if isinstance(exc, OSError):
                raise httpx.WriteError(str(exc), request=request) from exc
            raise
        try:
            conn.sock.settimeout(timeout.get("read"))
            resp = conn.getresponse()
        except BaseException as exc:
            conn.close()
            if (err := _read_error(exc, request)) is exc:
                raise
            raise err from exc
        return httpx.Response(
            resp.status,
            # http.client decodes header bytes as Latin-1; back to the bytes sent
            # (httpx would refuse non-ASCII text).
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.getheaders()],
            stream=_Body(self, key, conn, resp, request),
            request=request,
            extensions={"http_version": b"HTTP/1.0" if resp.version == 10 else b"HTTP/1.1",
                        "reason_phrase": (resp.reason or "").encode("latin-1", "replace")},
        )

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # Connections -------------------------------------------------------------------

    def _take(self, key: _Key) -> http.client.HTTPConnection | None:
        with self._lock:
            conns = self._idle.get(key)
            return conns.pop() if conns else None

    def _give_back(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < MAX_IDLE:
                conns.append(conn)
                return
        conn.close()

    def _connect(self, key: _Key, seconds: float | None,
                 request: httpx.Request) -> http.client.HTTPConnection:
        scheme, host, port = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=seconds, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=seconds)
        conn.response_class = _Response
        try:
            conn.connect()
            # Small requests and answers go out at once, as httpcore sends them.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(str(exc) or "timed out", request=request) from exc
            if isinstance(exc, OSError):  # refused, DNS, unreachable, TLS
                raise httpx.ConnectError(str(exc), request=request) from exc
            raise
        return conn

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Http11Transport idle={sum(map(len, self._idle.values()))}>"


def _read_error(exc: BaseException, request: httpx.Request) -> BaseException:
    """The httpx exception for an error while reading an answer."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc) or "timed out", request=request)
    if isinstance(exc, http.client.RemoteDisconnected):
        return httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                         request=request)
    if isinstance(exc, http.client.HTTPException):  # a cut body, a bad status line
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, OSError):
        return httpx.ReadError(str(exc), request=request)
    return exc


class _Lines:
    """A response's file that notes the end of the stream met by readline:
    http.client reads headers until a blank line *or* the end, so an answer
    cut inside its headers would pass for a whole one."""

    def __init__(self, fp: Any) -> None:
        self._fp = fp
        self.eof = False

    def readline(self, limit: int = -1) -> bytes:
        line = self._fp.readline(limit)
        if not line:
            self.eof = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._lines = self.fp = _Lines(self.fp)  # type: ignore[assignment]

    def begin(self) -> None:
        super().begin()
        if self._lines.eof:  # the stream ended before the blank line ending the headers
            raise http.client.RemoteDisconnected("the answer was cut off in its headers")


class _Body(httpx.SyncByteStream):
    """An answer's body, read as it is consumed; the connection goes back to
    the pool only once the body was read to its end."""

    def __init__(self, transport: Http11Transport, key: _Key, conn: Any,
                 resp: http.client.HTTPResponse, request: httpx.Request) -> None:
        self.transport, self.key, self.conn, self.resp = transport, key, conn, resp
        self.request = request
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        resp = self.resp
        try:
            while chunk := resp.read(CHUNK):
                yield chunk
            if resp.length:  # read(amt) takes a body cut short for its end
                raise http.client.IncompleteRead(b"", resp.length)
        except BaseException as exc:
            self.resp.close()
            self.conn.close()
            if (err := _read_error(exc, self.request)) is exc:
                raise
            raise err from exc
        self.done = True

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.done and not self.resp.will_close:
            self.transport._give_back(self.key, conn)
        else:
            self.resp.close()
            conn.close()


CHUNK = 64 << 10

# Bounds on every answer, whichever transport carries it ------------------------------

#: The most bytes of an answer avsb reads, before and after decompression:
#: Segment's answers are a few hundred bytes, A vs B's pages a few KB.
MAX_ANSWER = 256 << 10


class AnswerTooLarge(httpx.DecodingError):
    """An answer over its cap (an endless body, a huge one, a compression bomb)."""


class _Abort:
    """What the watchdog cuts at a request's deadline: its socket when the
    transport says which (avsb's own), else the transport's connections."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.socket: socket.socket | None = None
        self.fired = self.done = False
        self.lock = threading.Lock()

    def finish(self) -> bool:
        """Mark the answer read; False if the deadline came first."""
        with self.lock:
            self.done = True
            return not self.fired

    def __call__(self) -> None:
        with self.lock:
            if self.done:  # (the answer was whole just before the deadline)
                return
            self.fired = True
        try:
            if self.socket is not None:
                self.socket.shutdown(socket.SHUT_RDWR)  # wakes a blocked read at once
            else:
                self.inner.close()  # httpx's own: its pool's connections
        except OSError:
            pass


class _Watchdog:
    """One thread that calls each armed function at its monotonic time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, fn: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (at, token, fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="avsb-deadline",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._cancelled.add(token)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._heap)[1])
                    if not self._heap:
                        self._cond.wait()
                        continue
                    left = self._heap[0][0] - time.monotonic()
                    if left <= 0:
                        fn = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(left)
            fn()


WATCHDOG = _Watchdog()


class Bounded(httpx.BaseTransport):
    """Any transport, with every answer bounded in time and size.

    - Time: a request's ``avsb_deadline`` extension (a ``time.monotonic``
      instant) is a hard end for the whole exchange, headers and body: a
      server that trickles a byte a second defeats per-read timeouts, so a
      watchdog cuts the connection then.
    - Size: at most ``avsb_cap`` bytes (MAX_ANSWER by default) are read,
      and decoded: gzip and deflate are inflated here, the output capped, so
      a compression bomb stops at the cap (httpx would inflate it whole).
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        cap = request.extensions.get("avsb_cap", MAX_ANSWER)
        deadline = request.extensions.get("avsb_deadline")
        abort = _Abort(self.inner)
        token = None
        if deadline is not None:
            request.extensions = {**request.extensions, "avsb_abort": abort}
            token = WATCHDOG.arm(deadline, abort)
        cut = False
        try:
            resp = self.inner.handle_request(request)
            try:
                raw = _read_capped(resp.stream, cap, request)
            finally:
                resp.close()
            encoding = resp.headers.get("Content-Encoding", "").strip().lower()
            body = _decode(raw, encoding, cap, request)
        except httpx.HTTPError:
            if not abort.fired:
                raise
            cut = True
        finally:
            if token is not None:
                WATCHDOG.disarm(token)
        # (outside the except: the reset the cut caused is not the cause to show)
        if cut or not abort.finish():  # a read cut by the watchdog can look like a body's end
            raise httpx.ReadTimeout("timed out (the --timeout deadline)", request=request)
        headers = [(k, v) for k, v in resp.headers.raw
                   if k.lower() not in (b"content-encoding", b"content-length")]
        return httpx.Response(resp.status_code, headers=headers, content=body,
                              request=request, extensions=resp.extensions)

    def close(self) -> None:
        self.inner.close()


def _too_large(cap: int, request: httpx.Request) -> AnswerTooLarge:
    return AnswerTooLarge(f"more than avsb reads ({cap >> 10:,} KB)", request=request)


def _read_capped(stream: Any, cap: int, request: httpx.Request) -> bytes:
    parts, size = [], 0
    for chunk in stream:
        size += len(chunk)
        if size > cap:
            raise _too_large(cap, request)
        parts.append(chunk)
    return b"".join(parts)


def _decode(raw: bytes, encoding: str, cap: int, request: httpx.Request) -> bytes:
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise httpx.DecodingError(f"an answer in an encoding avsb does not read ({encoding})",
                                  request=request)
    # 47: gzip or zlib header; deflate is sometimes sent raw (-15).
    d = zlib.decompressobj(-15 if encoding == "deflate" and raw[:1] not in (b"\x78",) else 47)
    try:
        out = d.decompress(raw, cap + 1)
    except zlib.error as exc:
        raise httpx.DecodingError(f"a {encoding} answer that does not inflate ({exc})",
                                  request=request) from None
    if len(out) > cap:
        raise _too_large(cap, request)
    return out
