"""Every answer avsb reads, bounded in time and size, whichever transport carries it.

httpx's own transport (httpcore) carries the requests; ``Bounded`` wraps it
(and a test's) so that a server that trickles, never ends or sends a
compression bomb costs at most the ``--timeout`` deadline and MAX_ANSWER
bytes. avsb had its own HTTP/1.1 transport until bench/DECISIONS.md showed
httpx's within 10% of send's events/s and 30 ms of start-up (issue 11).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import httpx

#: The most bytes of an answer avsb reads, before and after decompression:
#: Segment's answers are a few hundred bytes, A vs B's pages a few KB.
MAX_ANSWER = 256 << 10


class AnswerTooLarge(httpx.DecodingError):
    """An answer over its cap (an endless body, a huge one, a compression bomb)."""


class _Abort:
    """What the watchdog does at a request's deadline: close the transport's
    connections (httpcore gives no handle on one request's socket), which
    wakes the blocked read at once. Each sender thread of ``segment send``
    has its own client, so only its own request is cut."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
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
            self.inner.close()
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
            if self._heap[0][1] == token:
                # Woken only for a new first deadline: `segment send` arms one a
                # request, each later than the last, and a wake-up a request cost
                # three thread switches and the GIL each time.
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
