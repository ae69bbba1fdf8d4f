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
- Timeouts come from httpx's per-request ``timeout`` extension.
- Errors become the httpx exceptions its transport raises, with the socket
  or TLS error as their cause, so ``segment.describe_error`` reads them the
  same way.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading

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
            body = resp.read()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
            if isinstance(exc, http.client.RemoteDisconnected):
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                ) from exc
            if isinstance(exc, http.client.HTTPException):  # a cut body, a bad status line
                raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__,
                                                request=request) from exc
            if isinstance(exc, OSError):
                raise httpx.ReadError(str(exc), request=request) from exc
            raise
        if resp.will_close:
            conn.close()
        else:
            self._give_back(key, conn)
        return httpx.Response(
            resp.status,
            # http.client decodes header bytes as Latin-1; back to the bytes sent
            # (httpx would refuse non-ASCII text).
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.getheaders()],
            stream=httpx.ByteStream(body),  # httpx decodes any Content-Encoding
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
