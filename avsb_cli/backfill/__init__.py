"""Backfill: ``avsb segment send``, enrollments from a file into Segment's batch API.

The pipeline streams, so memory stays flat whatever the file size:

    read.py (JSON Lines / CSV) -> build.py (msgspec: Enrollment -> message)
      -> deliver.py: batches -> bounded queue -> N sender threads -> /v1/batch

- Input is JSON Lines or CSV with a header, from a file or standard input.
  A bad record is counted and reported with its line number and not sent;
  ``strict`` stops at the first.
- Every record becomes the message ``event.experiment_event`` builds, with
  the enrollment's own timestamp (normalised to UTC, ``Z``) and a messageId
  derived from the project and the enrollment, so sending a file twice sends
  the same messageIds and Segment deduplicates them.
- Undelivered batches go to a failed-events file that ``send`` takes back.

This module is the pipeline (``send``) and what the CLI shows of its summary;
the limits live in the leaf ``limits`` module and are passed down from here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from avsb_cli.backfill import read
from avsb_cli.backfill.build import (
    BadRecord,
    Enrollment,
    MessageBuilder,
    Part,
    enrollment_of,
    message_id,
    normalise_timestamp,
)
from avsb_cli.backfill.deliver import (
    Batcher,
    FailedFile,
    Sender,
    default_failed_path,
    gzip_batch,
    messages_of,
)
from avsb_cli.backfill.limits import (
    BAD_LINES_KEPT,
    BOM,
    BREAKER,
    CHUNK_BYTES,
    FIELDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    REQUIRED,
)
from avsb_cli.backfill.read import count_lines, detect_format, open_input, read_csv, read_jsonl
from avsb_cli.errors import (
    AvsbError,
    InputError,
    Interrupted,
    NetworkError,
    Terminated,
    UsageError,
)

__all__ = [
    "BAD_LINES_KEPT", "BOM", "BREAKER", "FIELDS", "MAX_BATCH_BYTES", "MAX_BATCH_EVENTS",
    "REQUIRED", "BadRecord", "Batcher", "Enrollment", "MessageBuilder", "Part", "count_lines",
    "enrollment_of", "gzip_batch", "message_id", "messages_of", "normalise_timestamp",
    "outcome_error", "parts", "problem_lines", "read_jsonl", "send", "summary_rows",
]


def jsonl_chunks(stream: IO[bytes]) -> Iterator[tuple[int, int, bytes | None]]:
    """``read.jsonl_chunks`` at this pipeline's CHUNK_BYTES."""
    return read.jsonl_chunks(stream, CHUNK_BYTES)


def parts(stream: IO[bytes], fmt: str, builder: MessageBuilder, *,
          strict: bool) -> Iterator[Part]:
    """The input as Parts, a chunk of CHUNK_BYTES at a time."""
    if fmt == "csv":
        rows = read_csv(stream, CHUNK_BYTES)
        try:
            for names, batch in rows:
                yield builder.csv_rows(names, batch, strict=strict)
        finally:
            rows.close()
        return
    for done, n, chunk in jsonl_chunks(stream):
        if chunk is None:
            yield Part([], [(done + 1, read.too_long())], 1, done + 1)
        else:
            yield builder.chunk(chunk, done, n, strict=strict)


def send(
    project: str,
    source: str,
    *,
    fmt: str | None = None,
    strict: bool = False,
    dry_run: bool = False,
    failed_file: str | os.PathLike[str] | None = None,
    concurrency: int = 4,
    progress: Callable[[int, float], None] | None = None,
    store: Any | None = None,
    keystore: Any | None = None,
    transport: Any | None = None,
    timeout: float | None = None,
    policy: Any | None = None,
) -> dict[str, Any]:
    """Send the enrollments in ``source`` (a path or ``-``); return the summary."""
    from avsb_cli import checks, endpoints
    from avsb_cli.config import ConfigStore
    from avsb_cli.policy import Policy

    if not 1 <= concurrency <= 16:
        raise UsageError("--concurrency must be between 1 and 16")
    explicit = failed_file is not None
    failed_path = Path(failed_file) if explicit else default_failed_path()
    if not dry_run:
        if source != "-" and explicit and failed_path.exists() and os.path.exists(source) and (
            os.path.samefile(source, failed_path)
        ):
            raise UsageError("--failed-file must not be the file being sent")
        if explicit and failed_path.is_symlink():
            raise UsageError(f"--failed-file {failed_path} is a symbolic link; avsb does not "
                             "write through one", hint="name the file itself")
        folder = failed_path.parent if str(failed_path.parent) else Path(".")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"cannot write the failed-events file in {folder}",
                             hint="pass --failed-file PATH in a writable folder")

    stream, opened = open_input(source)  # a mistyped path first, then the key
    key_doc: dict[str, Any] = {"key_masked": None, "key_source": None}
    try:
        if dry_run:
            store = store or ConfigStore()
            seg = ConfigStore.segment_of(store.load(), project)
            resolved = None
        else:
            seg, resolved = checks.usable_key(project, store=store, keystore=keystore)
            key_doc = {"key_masked": resolved.masked, "key_source": resolved.source}
        url = f"{endpoints.tracking_base(seg)}/v1/batch"
        policy = policy or Policy.from_env(timeout)  # (checked in a dry run too)
    except BaseException:
        if opened:
            stream.close()
        raise
    start = time.monotonic()
    done = [0]

    def advance(n: int) -> None:
        if progress is not None:
            done[0] += n
            progress(n, done[0] / max(1e-6, time.monotonic() - start))

    failed = FailedFile(failed_path, explicit=explicit)
    doc: dict[str, Any] = {
        "project": project, "source": source, "format": None, "dry_run": dry_run,
        "endpoint": url, **key_doc,
    }
    read = valid = skipped = batches = 0
    bad_lines: list[dict[str, Any]] = []
    stopped_at: int | None = None
    sender: Sender | None = None
    clients: list[Any] = []
    line_no = 0  # every line up to here is sent, queued or in the failed file
    batcher = Batcher(MAX_BATCH_BYTES, MAX_BATCH_EVENTS)
    stop = _Signals()
    try:
        stop.install(lambda: sender)
        fmt = detect_format(source, fmt, stream)
        doc["format"] = fmt
        chunks = parts(stream, fmt, MessageBuilder(project), strict=strict)
        if not dry_run:
            from avsb_cli import segment  # (httpx, which a dry run does without)

            clients = [segment.build_client(transport, policy=policy,
                                            tls=not url.startswith("http://"))
                       for _ in range(concurrency)]
            assert resolved is not None and resolved.key
            sender = Sender(clients=clients, url=url, key=resolved.key, policy=policy,
                            failed=failed, progress=advance)
        while True:
            part = stop.read(chunks)
            if part is None:
                break
            read += part.read
            valid += len(part.messages)
            if part.problems:
                skipped += len(part.problems)
                keep = max(0, BAD_LINES_KEPT - len(bad_lines))
                bad_lines += [{"line": n, "error": e} for n, e in part.problems[:keep]]
                if strict:
                    # Nothing more is sent, queued batches included; the user
                    # fixes the file and sends it all again (deduplicated).
                    stopped_at = part.problems[0][0]
                    if sender is not None:
                        sender.interrupt(discard=True)
                    batcher.rest()
                    break
            for batch in batcher.add(part.messages):
                batches += 1
                if sender is not None:
                    sender.submit(batch)
                else:
                    advance(len(batch))
            line_no = part.last_line
            if stop.signum:  # what was read is batched; the rest stays unread
                break
        if batch := batcher.rest():
            batches += 1
            if sender is not None:
                sender.submit(batch)
            else:
                advance(len(batch))
        if sender is not None:
            sender.close()
    except KeyboardInterrupt:
        if sender is not None:
            sender.interrupt()
            if batch := batcher.rest():
                sender.submit(batch)
            sender.close()
        failed.close()
        sent = sender.sent if sender else 0
        where = f" to {failed.path}" if failed.count else ""
        raise Interrupted(
            f"interrupted at line {line_no}: {sent:,} events sent, "
            f"{failed.count:,} written{where}; the lines after {line_no} were not read",
            hint=f"send the file again: avsb segment send {source}"
            " (Segment deduplicates what was already sent)",
        ) from None
    finally:
        stop.restore()
        with contextlib.suppress(NameError):
            chunks.close()
        if sender is not None and not sender.closed:  # an error: keep what was queued
            sender.interrupt()
            sender.close()
        if opened:
            stream.close()
        for client in clients:
            client.close()
        failed.close()

    seconds = time.monotonic() - start
    sent = sender.sent if sender else 0
    doc.update({
        "read": read,
        "valid": valid,
        "sent": sent,
        "skipped": skipped,
        "failed": sender.failed_events if sender else 0,
        "unsent": valid - sent if stopped_at is not None and sender else 0,
        "batches": batches,
        "batches_failed": sender.batches_failed if sender else 0,
        "retries": sender.retries if sender else 0,
        "seconds": round(seconds, 3),
        "events_per_second": round((sent if sender else valid) / seconds) if seconds else 0,
        "bad_lines": bad_lines,
        "stopped_at_line": stopped_at,
        "failed_file": str(failed.path) if failed.count else None,
        "failed_file_error": failed.error,
        "gave_up": sender.gave_up if sender else None,
        "failures": sender.failures if sender else [],
        "failed_file_appended": failed.appended,
        "interrupted": stop.name,
        "last_line_read": line_no,
    })
    return doc


class _Stopped(Exception):
    """A signal while the input was being read: nothing of it was taken yet."""


class _Signals:
    """SIGINT and SIGTERM during send: stop reading, deliver or save what was read.

    The handler only takes note and stops the senders (whose retry waits end
    at once; what is queued goes to the failed-events file); the main loop
    then stops after the part it holds, so no record read is in a local
    variable when the run ends. It raises only while the main thread waits
    for input (a quiet pipe), where nothing has been taken from it yet.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reading = False
        self._saved: dict[int, Any] = {}
        self._sender: Callable[[], Sender | None] = lambda: None

    @property
    def name(self) -> str | None:
        import signal

        return signal.Signals(self.signum).name if self.signum else None

    def install(self, sender: Callable[[], Sender | None]) -> None:
        import signal

        if threading.current_thread() is not threading.main_thread():
            return  # (an embedding program's thread: its own signals, its own rules)
        self._sender = sender
        for name in self.SIGNALS:
            num = getattr(signal, name)
            self._saved[num] = signal.signal(num, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        sender = self._sender()
        if sender is not None:
            # From another thread: the main thread may hold a lock interrupt() takes.
            threading.Thread(target=sender.interrupt, daemon=True).start()
        if self.reading:
            raise _Stopped

    def read(self, chunks: Iterator[Part]) -> Part | None:
        """The next part, or None at the end of the input or on a signal."""
        if self.signum:
            return None
        try:
            self.reading = True
            try:
                return next(chunks, None)
            finally:
                self.reading = False
        except _Stopped:
            return None

    def restore(self) -> None:
        import signal

        for num, handler in self._saved.items():
            signal.signal(num, handler)
        self._saved = {}


# What the CLI shows -------------------------------------------------------------


def problem_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"line {b['line']}: {b['error']}" for b in doc["bad_lines"]]
    more = doc["skipped"] - len(doc["bad_lines"])
    if more > 0:
        lines.append(f"... and {more:,} more bad lines")
    return lines


def summary_rows(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("read", f"{doc['read']:,}")]
    if doc["dry_run"]:
        rows.append(("valid (would be sent)", f"{doc['valid']:,}"))
    else:
        rows.append(("sent", f"{doc['sent']:,}"))
    rows.append(("skipped (bad lines)", f"{doc['skipped']:,}"))
    if not doc["dry_run"]:
        rows.append(("failed", f"{doc['failed']:,}"))
    if doc["unsent"]:
        rows.append(("not sent (--strict stop)", f"{doc['unsent']:,}"))
    rows += [
        ("batches", f"{doc['batches']:,}"),
        ("seconds", f"{doc['seconds']:.1f}"),
        ("events/s", f"{doc['events_per_second']:,}"),
        ("endpoint", doc["endpoint"]),
    ]
    if doc["failed_file"]:
        rows.append(("failed events in", doc["failed_file"]
                     + (" (appended)" if doc.get("failed_file_appended") else "")))
    if doc.get("interrupted"):
        rows.append(("stopped by", f"{doc['interrupted']} after line {doc['last_line_read']:,}"))
    return rows


def outcome_error(doc: dict[str, Any]) -> AvsbError | None:
    """The error the run ends with, if anything was not delivered (exit 6 or 8),
    or it was stopped by a signal (130, 143)."""
    if doc.get("interrupted"):
        kind = Terminated if doc["interrupted"] == "SIGTERM" else Interrupted
        saved = (f", {doc['failed']:,} saved to {doc['failed_file']}" if doc["failed_file"]
                 else "")
        saved += "" if not doc["failed_file_error"] else (
            f", {doc['failed']:,} NOT saved ({doc['failed_file_error']})")
        line = doc["last_line_read"]
        return kind(
            f"interrupted by {doc['interrupted']} after line {line:,}: {doc['sent']:,} events "
            f"sent{saved}; the lines after {line:,} were not read",
            hint=f"send the file again: avsb segment send {doc['source']}"
            + (f", and {doc['failed_file']}" if doc["failed_file"] else "")
            + " (Segment deduplicates what was already sent)",
        )
    if doc["failed_file_error"]:
        return NetworkError(
            f"{doc['failed']:,} events were not delivered and could not be saved: "
            f"{doc['failed_file_error']}"
        )
    if doc["failed"]:
        cause = doc["gave_up"] or (doc["failures"][0] if doc["failures"] else "unknown")
        gave_up = "; gave up after failed batches in a row" if doc["gave_up"] else ""
        return NetworkError(
            f"{doc['failed']:,} of {doc['valid']:,} events were not delivered ({cause}){gave_up}",
            hint=f"they are in {doc['failed_file']}; send them again with: avsb segment send "
                 f"{doc['failed_file']}",
        )
    if doc["stopped_at_line"] is not None:
        first = doc["bad_lines"][0]["error"] if doc["bad_lines"] else "bad record"
        return InputError(
            f"stopped at line {doc['stopped_at_line']} (--strict): {first}; "
            f"{doc['sent']:,} events sent, {doc['unsent']:,} not",
            hint="fix the line and send the file again; Segment deduplicates what was sent",
        )
    if doc["skipped"]:
        lines = "bad line" if doc["skipped"] == 1 else "bad lines"
        events = "event was" if doc["valid"] == 1 else "events were"
        return InputError(
            f"{doc['skipped']:,} {lines} skipped; the other {doc['valid']:,} {events} "
            + ("checked" if doc["dry_run"] else "sent"),
            hint="fix them and check the file again" if doc["dry_run"] else
            "fix them and send the file again; Segment deduplicates what was sent",
        )
    return None
