"""Delivering ``segment send``'s messages: batches, sender threads, the failed-events file.

- Batches stay under MAX_BATCH_BYTES of raw JSON and MAX_BATCH_EVENTS events
  (Segment: 500 KB, 2,500), are gzip-compressed once and posted under
  ``segment.request``'s retry policy with the same bytes on every attempt,
  each sender thread over its own keep-alive client (a request cut at its
  deadline closes its own connection, not the others').
- A batch that still fails is written, as enrollments, to a JSON Lines file
  that ``avsb segment send`` takes back. After BREAKER failed batches in a
  row the rest is written there without trying, instead of retrying a dead
  endpoint for every batch.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import operator
import os
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from avsb_cli.backfill.build import enrollment_of
from avsb_cli.backfill.limits import (
    BREAKER,
    FAILURES_KEPT,
    GZIP_LEVEL,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
)
from avsb_cli.errors import AvsbError

zlib: Any = None  # loaded by _zlib() at the first batch: a dry run needs none


def _zlib() -> Any:
    global zlib
    if zlib is None:
        try:  # ISA-L's level 1: a quarter of zlib's time here, and fewer bytes (bench/)
            from isal import isal_zlib as zlib
        except ImportError:  # pragma: no cover - the standard library's, same format
            import zlib
    return zlib

_encode = msgspec.json.Encoder().encode
_GZIP_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


# The failed-events file -------------------------------------------------------------


def default_failed_path() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"avsb-failed-{stamp}.jsonl")


class FailedFile:
    """Undelivered events as JSON Lines enrollments; created at the first one.

    Owner-only whatever the umask, never through a symlink (config.open_private).
    A named file (--failed-file) that exists is appended to, never emptied:
    it may hold the events of an earlier run.
    """

    def __init__(self, path: Path, *, explicit: bool) -> None:
        self.path = path
        self.explicit = explicit
        self.count = 0
        #: the named file already held events, kept ahead of this run's
        self.appended = False
        self.error: str | None = None
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()

    def write(self, messages: list[bytes]) -> None:
        lines = b"".join(_encode(enrollment_of(m)) + b"\n" for m in messages).decode()
        with self._lock:
            if self.error:
                return
            try:
                if self._fh is None:
                    self._fh = self._open()
                self._fh.write(lines)
                self._fh.flush()
                self.count += len(messages)
            except OSError as exc:
                self.error = f"cannot write {self.path}: {exc.strerror or exc}"

    def _open(self) -> IO[str]:
        from avsb_cli.config import open_private

        if self.explicit:
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115
            size = os.fstat(fd).st_size
            if size:
                self.appended = True
                if os.pread(fd, 1, size - 1) != b"\n":  # a last line without its end
                    fh.write("\n")
            return fh
        base, n = self.path, 0
        while True:  # two runs in the same second get two files
            try:
                fd = open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                return open(fd, "w", encoding="utf-8")  # noqa: SIM115
            except FileExistsError:
                n += 1
                self.path = base.with_name(f"{base.stem}-{n}{base.suffix}")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None


# Sending ------------------------------------------------------------------------------


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]


def messages_of(content: bytes) -> list[bytes]:
    """The messages of a body ``gzip_batch`` made, byte for byte as built."""
    body = _zlib().decompress(content, 47)
    return [bytes(m) for m in msgspec.json.decode(body, type=_Batch).batch]


def _split(joined: bytes) -> list[bytes]:
    """Messages joined with commas, apart again, byte for byte."""
    return [bytes(m) for m in msgspec.json.decode(b"[%s]" % joined, type=list[msgspec.Raw])]


class Batcher:
    """Messages into batches of at most MAX_BATCH_EVENTS whose JSON stays
    within MAX_BATCH_BYTES, envelope included; greedy, in order."""

    def __init__(self, max_bytes: int = MAX_BATCH_BYTES, max_events: int = MAX_BATCH_EVENTS
                 ) -> None:
        self.room = max_bytes - 64  # the envelope: {"batch":[...],"sentAt":"..."}
        self.most = max_events
        self.batch: list[bytes] = []  # the batch being filled
        self.size = 0  # its bytes, a comma each

    def add(self, msgs: list[bytes]) -> list[list[bytes]]:
        """Take ``msgs``; return the batches they filled."""
        # ends[j]: bytes of msgs[:j], a comma each. Cut points come from a
        # bisect instead of a test per message (the reader's thread is the
        # one that limits send's rate).
        ends = list(map(operator.add, itertools.accumulate(map(len, msgs), initial=0),
                        range(len(msgs) + 1)))
        full = []
        i = 0
        while i < len(msgs):
            most = min(len(msgs), i + self.most - len(self.batch))
            # (max: a first message larger than room leaves size above it)
            j = max(i, bisect.bisect_right(ends, self.room - self.size + ends[i], i,
                                           most + 1) - 1)
            if j == i and not self.batch:
                j = i + 1  # a batch takes its first message whatever its size
            self.batch += msgs[i:j]
            self.size += ends[j] - ends[i]
            i = j
            if i < len(msgs):
                full.append(self.rest())
        return full

    def rest(self) -> list[bytes]:
        """The batch being filled, now closed (empty if nothing was added)."""
        batch, self.batch, self.size = self.batch, [], 0
        return batch


def gzip_batch(messages: bytes, sent_at: str) -> bytes:
    """``{"batch":[messages],"sentAt":...}`` gzip-compressed; ``messages`` are
    joined with commas. The envelope goes to the compressor on its own rather
    than be copied around half a megabyte of messages."""
    z = _zlib()
    gz = z.compressobj(GZIP_LEVEL, z.DEFLATED, 31)
    return b"".join((gz.compress(b'{"batch":['), gz.compress(messages),
                     gz.compress(b'],"sentAt":"%s"}' % sent_at.encode()), gz.flush()))


class _Stopped(Exception):
    """A retry wait cut short: the run is being interrupted or has given up."""


class Sender:
    """A sender thread per client, posting gzip batches; results in counters."""

    def __init__(self, *, clients: list[Any], url: str, key: str, policy: Any,
                 failed: FailedFile, progress: Callable[[int], None] | None) -> None:
        from avsb_cli import segment  # (httpx: not for a dry run)

        self._segment = segment
        self.url, self.key, self.policy = url, key, policy
        self.failed = failed
        self.progress = progress
        # Two waiting batches: when the reader outruns the senders the queue is
        # full whatever its size, and each slot holds half a megabyte.
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        #: --strict stop: drop what is queued instead of writing it to the failed file
        self.discard = False
        self.closed = False
        self.lock = threading.Lock()
        self.sent = self.batches_failed = self.retries = 0
        self.failed_events = 0
        self.in_a_row = 0
        self.gave_up: str | None = None
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(client,), name=f"avsb-send-{i}",
                             daemon=True)
            for i, client in enumerate(clients)
        ]
        for t in self.threads:
            t.start()

    def submit(self, batch: list[bytes]) -> None:
        if self.stop.is_set():
            self._fail(batch, None)
        else:
            # Queued as one block: a thousand small objects freed by another
            # thread later would leave the reader's memory fragmented.
            self.queue.put([b",".join(batch), len(batch)])

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    def _run(self, client: Any) -> None:
        while (item := self.queue.get()) is not None:
            self._handle(item, client)
            # Not held while waiting: a batch is half a megabyte (bench/'s memory run).
            del item

    def _handle(self, item: list[Any], client: Any) -> None:
        """Post ``[messages joined with commas, count]``; empties the item."""
        joined, count = item
        content = b""
        cause: str | None = None
        if not self.stop.is_set():
            try:
                # Compressed once: every retry carries the same bytes, messageIds included.
                content = gzip_batch(joined, self._segment.now_iso())
                # Only the compressed body is kept while it is posted, a sixth of the
                # memory (bench/'s memory run); a failed batch is read back from it.
                item[0] = joined = None
                self._post(client, content, count)
                return
            except _Stopped:
                pass
            except AvsbError as exc:
                cause = exc.message
            except Exception as exc:  # a bug must not lose the batch or hang the reader
                cause = f"internal error: {type(exc).__name__}: {exc}"
        self._fail(messages_of(content) if joined is None else _split(joined), cause)

    def _post(self, client: Any, content: bytes, count: int) -> None:
        d = self._segment.request(
            client, "POST", self.url, policy=self.policy, key=self.key,
            content=content, headers=_GZIP_HEADERS, sleep=self._sleep,
        )
        with self.lock:
            self.sent += count
            self.retries += d.attempts - 1
            self.in_a_row = 0
        if self.progress:
            # Delivered is delivered: a display problem must not count it as failed.
            with contextlib.suppress(Exception):
                self.progress(count)

    def _fail(self, batch: list[bytes], cause: str | None) -> None:
        with self.lock:
            if self.discard:
                return
            self.failed_events += len(batch)
            self.batches_failed += 1
            if cause is not None:
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append(cause)
                self.in_a_row += 1
                if self.in_a_row >= BREAKER and not self.stop.is_set():
                    self.gave_up = cause
                    self.stop.set()
        self.failed.write(batch)

    def interrupt(self, *, discard: bool = False) -> None:
        """Stop sending: cut retry waits short; what is queued goes to the
        failed file (Ctrl-C, an error) or nowhere (``discard``: --strict)."""
        with self.lock:
            self.discard = self.discard or discard
        self.stop.set()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()
