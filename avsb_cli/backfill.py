"""Backfill: ``avsb segment send``, enrollments from a file into Segment's batch API.

The pipeline streams, so memory stays flat whatever the file size:

    reader (main thread) -> bounded queue of batches -> N sender threads -> /v1/batch

- Input is JSON Lines or CSV with a header, from a file or standard input;
  a UTF-8 BOM and CRLF line ends are accepted. A bad record is counted and
  reported with its line number and not sent; ``strict`` stops at the first.
- Every record becomes the message ``segment.experiment_event`` builds, with
  the enrollment's own timestamp (normalised to UTC, ``Z``) and a messageId
  derived from the project and the enrollment, so sending a file twice sends
  the same messageIds and Segment deduplicates them.
- Batches stay under ``MAX_BATCH_BYTES`` of raw JSON and ``MAX_BATCH_EVENTS``
  events (Segment: 500 KB, 2,500), are gzip-compressed once and posted under
  ``segment.request``'s retry policy with the same bytes on every attempt,
  over one keep-alive client shared by the sender threads.
- A batch that still fails is written, as enrollments, to a JSON Lines file
  that ``avsb segment send`` takes back. After ``BREAKER`` failed batches in a
  row the rest is written there without trying, instead of retrying a dead
  endpoint for every batch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import operator
import os
import queue
import re
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) uses
from pathlib import Path
from typing import IO, Any

from avsb_cli.errors import AvsbError, InputError, Interrupted, NetworkError, UsageError

MAX_BATCH_BYTES = 450_000
MAX_BATCH_EVENTS = 2000
MAX_LINE_BYTES = 1 << 20
BAD_LINES_KEPT = 20
FAILURES_KEPT = 5
#: failed batches in a row after which the rest is not tried
BREAKER = 3
#: gzip level 1: about as small as 6 on this JSON, several times cheaper
GZIP_LEVEL = 1
#: The reader thread holds the GIL nearly all the time, so a sender taking
#: it back (after a gzip block, a socket call) waits out the whole switch
#: interval, 5 ms by default. 0.2 ms while sending: +10-15% events/s (bench/).
SWITCH_INTERVAL = 0.0002
FORMATS = ("jsonl", "csv")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
REQUIRED = ("experiment_id", "experiment_name", "variation_id", "variation_name", "timestamp")
IDS = ("user_id", "anonymous_id")
FIELDS = REQUIRED[:4] + IDS + ("timestamp",)
BOM = b"\xef\xbb\xbf"
_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", re.ASCII)
_canonical_ts = _CANONICAL_TS.fullmatch
_fromiso = datetime.fromisoformat
_sha256 = hashlib.sha256
_GZIP_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


class BadRecord(Exception):
    """A record that is not sent; the message names what is wrong with it."""


# Reading ------------------------------------------------------------------------

Row = tuple[int, dict[str, Any] | None, str | None]


def detect_format(source: str, fmt: str | None, stream: Any) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}", hint="use jsonl or csv")
        return fmt
    if source != "-":
        found = SUFFIXES.get(Path(source).suffix.lower())
        if found:
            return found
    # No telling extension: JSON Lines start with '{', CSV with a header.
    head = stream.peek(4096)[:4096].removeprefix(BOM).lstrip()
    return "jsonl" if head.startswith(b"{") else "csv"


def read_jsonl(stream: IO[bytes]) -> Iterator[Row]:
    readline = stream.readline
    # json.loads costs twice its C scanner here (encoding sniffing, regexes);
    # the scanner takes the common line, json.loads the rest and the errors.
    scan = json.JSONDecoder().scan_once
    line_no = 0
    while True:
        raw = readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of it
                raw = readline(MAX_LINE_BYTES)
            yield line_no, None, f"longer than {MAX_LINE_BYTES >> 20} MiB"
            continue
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield line_no, None, "not UTF-8 text"
            continue
        rec: Any = None
        if line.startswith("{"):
            try:
                rec, end = scan(line, 0)
            except (StopIteration, ValueError):
                rec = None
            else:
                if end != len(line) and not line[end:].isspace():
                    rec = None
        if rec is None:
            if not line.strip():
                continue  # blank lines separate nothing in JSON Lines
            try:
                rec = json.loads(line)
            except ValueError as exc:
                # json's own messages may end in "at" ("Invalid control character at").
                msg = getattr(exc, "msg", "invalid").removesuffix(" at")
                col = getattr(exc, "colno", None)
                yield line_no, None, f"not valid JSON ({msg}" + (
                    f" at column {col})" if col else ")")
                continue
            if type(rec) is not dict:
                kind = "an array" if isinstance(rec, list) else type(rec).__name__
                yield line_no, None, f"is {kind}, not a JSON object (JSON Lines: one a line)"
                continue
        yield line_no, rec, None


def read_csv(stream: IO[bytes]) -> Iterator[Row]:
    # surrogateescape: a stray non-UTF-8 byte spoils its record, not the file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the caller owns the stream (stdin included)


def _csv_rows(reader: Any) -> Iterator[Row]:
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"cannot read the CSV header (line 1): {exc}") from None
    names = [h.strip().lower() for h in header]
    missing = [f for f in REQUIRED if f not in names]
    if not any(f in names for f in IDS):
        missing.append("user_id or anonymous_id")
    if missing:
        raise InputError(
            f"the CSV header (line 1) has no column {', '.join(missing)}",
            hint="columns: " + ", ".join(FIELDS) + " (user_id and/or anonymous_id)",
        )
    width = len(names)
    last = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield last + 1, None, f"not valid CSV ({exc})"
            last = reader.line_num
            continue
        line_no, last = last + 1, reader.line_num
        if not row:
            continue
        if len(row) != width:
            yield line_no, None, f"has {len(row)} fields; the header has {width}"
            continue
        yield line_no, dict(zip(names, row, strict=True)), None


# Building messages ------------------------------------------------------------------


def normalise_timestamp(value: Any) -> str:
    """ISO-8601 with a zone, as UTC with ``Z`` (milliseconds, or microseconds if needed)."""
    if type(value) is not str:
        raise BadRecord("timestamp must be an ISO-8601 string, e.g. 2024-05-01T12:00:00Z")
    text = value.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRecord(f"timestamp {value[:40]!r} is not ISO-8601") from None
    if _CANONICAL_TS.fullmatch(text):
        return text  # already UTC with milliseconds, the common case
    if when.tzinfo is None:
        raise BadRecord(f"timestamp {value[:40]!r} has no time zone (add Z for UTC)")
    when = when.astimezone(UTC)
    spec = "milliseconds" if when.microsecond % 1000 == 0 else "microseconds"
    return when.isoformat(timespec=spec)[:-6] + "Z"


def _field(rec: dict[str, Any], name: str) -> str | None:
    value = rec.get(name)
    if value is None:
        return None
    if type(value) is str:
        return value if value and not value.isspace() else None
    if type(value) is int:  # numeric ids in an export; bool is not int here
        return str(value)
    raise BadRecord(f"{name} must be a string, not {type(value).__name__}")


def message_id(project: str, experiment_id: str, variation_id: str,
               user_id: str | None, anonymous_id: str | None, timestamp: str) -> str:
    """Deterministic, so a re-sent enrollment carries the same messageId (69 characters)."""
    who = f"u:{user_id}" if user_id else f"a:{anonymous_id}"
    raw = "\0".join((project, experiment_id, variation_id, who, timestamp))
    return "avsb-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


# Placeholders for the per-record values of a cached message template.
_TOKENS = {
    "messageId": "\ue000m\ue001",
    "timestamp": "\ue000t\ue001",
    "userId": "\ue000u\ue001",
    "anonymousId": "\ue000a\ue001",
}


class MessageBuilder:
    """Enrollment -> the encoded message ``segment.experiment_event`` builds.

    Exports hold few distinct experiment/variation pairs, so the message is
    built once per pair by experiment_event itself, with placeholders where
    the per-record values go, and kept as a %-format; each record then only
    fills in messageId, timestamp and ids, encoded by the same function
    json.dumps uses. Several times faster than a dict and json.dumps per
    record, and byte for byte the same (tests check it).
    """

    MAX_TEMPLATES = 4096

    def __init__(self, project: str) -> None:
        from avsb_cli import segment

        self.project = project
        self._segment = segment
        self._max_bytes = segment.MAX_MESSAGE_BYTES
        self._templates: dict[tuple[Any, ...], Any] = {}

    def build(self, rec: dict[str, Any]) -> bytes:
        get = rec.get
        eid, ename = get("experiment_id"), get("experiment_name")
        vid, vname = get("variation_id"), get("variation_name")
        uid, aid = get("user_id"), get("anonymous_id")
        if (type(eid) is str and type(ename) is str and type(vid) is str
                and type(vname) is str and eid and ename and vid and vname
                and not (eid.isspace() or ename.isspace() or vid.isspace() or vname.isspace())):
            # The common record; the ids may still be blank, numbers or wrong.
            if uid is not None and (type(uid) is not str or not uid or uid.isspace()):
                uid = _field(rec, "user_id")
            if aid is not None and (type(aid) is not str or not aid or aid.isspace()):
                aid = _field(rec, "anonymous_id")
        else:
            eid, ename, vid, vname = (_field(rec, name) for name in REQUIRED[:4])
            uid, aid = _field(rec, "user_id"), _field(rec, "anonymous_id")
            missing = [n for n, v in zip(REQUIRED, (eid, ename, vid, vname), strict=False)
                       if not v]
            if missing:
                raise BadRecord("no " + ", ".join(missing) + _unknown_hint(rec))
        if uid:
            who = "u:" + uid
        elif aid:
            who = "a:" + aid
        else:
            raise BadRecord("no user_id or anonymous_id" + _unknown_hint(rec))
        ts = get("timestamp")
        if type(ts) is str and _canonical_ts(ts):
            try:
                _fromiso(ts)  # the pattern lets 2024-02-30 through
            except ValueError:
                raise BadRecord(f"timestamp {ts!r} is not a valid date and time") from None
        elif ts is None or ts == "":
            raise BadRecord("no timestamp" + _unknown_hint(rec))
        else:
            ts = normalise_timestamp(ts)
        # The formula of message_id(), inlined: this runs once per record.
        mid = "avsb-" + _sha256(f"{self.project}\0{eid}\0{vid}\0{who}\0{ts}".encode(
            "utf-8", "surrogatepass")).hexdigest()
        key = (eid, ename, vid, vname, uid is not None, aid is not None)
        template = self._templates.get(key)
        if template is None:
            template = self._template(*key)
        if template is False:  # a placeholder clashed with a value: build it plainly
            text = self._plain(eid, ename, vid, vname, uid, aid, ts, mid)
        else:
            fmt, pick = template
            text = fmt % pick((mid, ts, encode_basestring(uid) if uid else None,
                               encode_basestring(aid) if aid else None))
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRecord("not valid UTF-8 text") from None
        if len(body) > self._max_bytes:
            raise BadRecord(f"the event would be {len(body):,} bytes; Segment refuses "
                            "messages over 32 KB")
        return body

    def _plain(self, eid: str, ename: str, vid: str, vname: str, uid: str | None,
               aid: str | None, ts: str, mid: str) -> str:
        msg = self._segment.experiment_event(
            experiment_id=eid, experiment_name=ename, variation_id=vid, variation_name=vname,
            user_id=uid, anonymous_id=aid, timestamp=ts, message_id=mid,
        )
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))

    def _template(self, eid: str, ename: str, vid: str, vname: str, has_user: bool,
                  has_anon: bool) -> Any:
        text = self._plain(
            eid, ename, vid, vname, _TOKENS["userId"] if has_user else None,
            _TOKENS["anonymousId"] if has_anon else None, _TOKENS["timestamp"],
            _TOKENS["messageId"],
        )
        found: list[tuple[int, int, str]] = []
        template: Any = False
        placed = (True, True, has_user, has_anon)
        for index, token in enumerate(_TOKENS.values()):
            if not placed[index]:
                continue  # in a value, its text is just text
            quoted = encode_basestring(token)
            if text.count(quoted) != 1:  # a value holds it too: no template
                break
            found.append((text.index(quoted), index, quoted))
        else:
            found.sort()
            pieces, order, pos = [], [], 0
            for at, index, quoted in found:
                pieces.append(text[pos:at].replace("%", "%%"))
                # messageId (hex) and the normalised timestamp need no escaping.
                pieces.append('"%s"' if index < 2 else "%s")
                order.append(index)
                pos = at + len(quoted)
            pieces.append(text[pos:].replace("%", "%%"))
            template = ("".join(pieces), operator.itemgetter(*order))
        if len(self._templates) >= self.MAX_TEMPLATES:
            self._templates.clear()
        self._templates[(eid, ename, vid, vname, has_user, has_anon)] = template
        return template


def _unknown_hint(rec: dict[str, Any]) -> str:
    unknown = [str(k)[:40] for k in rec if k not in FIELDS][:5]
    return f" (unknown fields: {', '.join(unknown)})" if unknown else ""


def enrollment_of(message: bytes) -> dict[str, Any]:
    """A message back as the enrollment it came from (for the failed-events file)."""
    msg = json.loads(message)
    props = msg.get("properties", {})
    rec = {name: props.get(name) for name in REQUIRED[:4]}
    if msg.get("userId"):
        rec["user_id"] = msg["userId"]
    if msg.get("anonymousId"):
        rec["anonymous_id"] = msg["anonymousId"]
    rec["timestamp"] = msg.get("timestamp")
    return rec


# The failed-events file -------------------------------------------------------------


def default_failed_path() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"avsb-failed-{stamp}.jsonl")


class FailedFile:
    """Undelivered events as JSON Lines enrollments; created at the first one."""

    def __init__(self, path: Path, *, explicit: bool) -> None:
        self.path = path
        self.explicit = explicit
        self.count = 0
        self.error: str | None = None
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()

    def write(self, messages: list[bytes]) -> None:
        lines = "".join(
            json.dumps(enrollment_of(m), ensure_ascii=False) + "\n" for m in messages
        )
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
        if self.explicit:
            return open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        base, n = self.path, 0
        while True:  # two runs in the same second get two files
            try:
                return open(self.path, "x", encoding="utf-8")  # noqa: SIM115
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


class _Stopped(Exception):
    """A retry wait cut short: the run is being interrupted or has given up."""


class Sender:
    """Sender threads posting gzip batches over one client; results in counters."""

    def __init__(self, *, client: Any, url: str, key: str, policy: Any, workers: int,
                 failed: FailedFile, progress: Callable[[int], None] | None) -> None:
        from avsb_cli import segment

        self._segment = segment
        self.client, self.url, self.key, self.policy = client, url, key, policy
        self.failed = failed
        self.progress = progress
        self.queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=2 * workers)
        self.stop = threading.Event()
        #: --strict stop: drop what is queued instead of writing it to the failed file
        self.discard = False
        self.closed = False
        self.lock = threading.Lock()
        self.sent = self.batches_sent = self.batches_failed = self.retries = 0
        self.failed_events = self.abandoned = 0
        self.in_a_row = 0
        self.gave_up: str | None = None
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, name=f"avsb-send-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def submit(self, batch: list[bytes]) -> None:
        if self.stop.is_set():
            self._fail(batch, None)
        else:
            self.queue.put(batch)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                return
            if self.stop.is_set():
                self._fail(batch, None)
                continue
            try:
                self._post(batch)
            except _Stopped:
                self._fail(batch, None)
            except AvsbError as exc:
                self._fail(batch, exc.message)
            except Exception as exc:  # a bug must not lose the batch or hang the reader
                self._fail(batch, f"internal error: {type(exc).__name__}: {exc}")

    def _post(self, batch: list[bytes]) -> None:
        sent_at = self._segment.now_iso().encode()
        body = b'{"batch":[' + b",".join(batch) + b'],"sentAt":"' + sent_at + b'"}'
        # Compressed once: every retry carries the same bytes, messageIds included.
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        content = gz.compress(body) + gz.flush()
        d = self._segment.request(
            self.client, "POST", self.url, policy=self.policy, key=self.key,
            content=content, headers=_GZIP_HEADERS, sleep=self._sleep,
        )
        with self.lock:
            self.sent += len(batch)
            self.batches_sent += 1
            self.retries += d.attempts - 1
            self.in_a_row = 0
        if self.progress:
            # Delivered is delivered: a display problem must not count it as failed.
            with contextlib.suppress(Exception):
                self.progress(len(batch))

    def _fail(self, batch: list[bytes], cause: str | None) -> None:
        with self.lock:
            if self.discard:
                self.abandoned += len(batch)
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


def _open_input(source: str) -> tuple[Any, bool]:
    """The input as a peekable binary stream, and whether we opened it."""
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise InputError("standard input is not readable as bytes")
        if sys.stdin.isatty():
            raise UsageError("'-' reads enrollments from a pipe or a file, not the terminal",
                             hint="e.g. avsb segment send enrollments.jsonl, or cat f | avsb "
                                  "segment send -")
        return (stream if hasattr(stream, "peek") else io.BufferedReader(stream)), False
    try:
        return open(source, "rb"), True  # noqa: SIM115
    except FileNotFoundError:
        raise InputError(f"file not found: {source}") from None
    except IsADirectoryError:
        raise InputError(f"{source} is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None


def count_lines(source: str) -> int | None:
    """Lines in a regular file, for a progress bar's total; None for a pipe."""
    if source == "-":
        return None
    try:
        with open(source, "rb") as fh:
            if not os.path.isfile(source):
                return None
            n, last = 0, b"\n"
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                n += chunk.count(b"\n")
                last = chunk[-1:]
            return n + (last != b"\n")
    except OSError:
        return None


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
    from avsb_cli import endpoints, integration, segment
    from avsb_cli.config import ConfigStore

    if not 1 <= concurrency <= 16:
        raise UsageError("--concurrency must be between 1 and 16")
    explicit = failed_file is not None
    failed_path = Path(failed_file) if explicit else default_failed_path()
    if not dry_run:
        if source != "-" and explicit and failed_path.exists() and os.path.exists(source) and (
            os.path.samefile(source, failed_path)
        ):
            raise UsageError("--failed-file must not be the file being sent")
        folder = failed_path.parent if str(failed_path.parent) else Path(".")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"cannot write the failed-events file in {folder}",
                             hint="pass --failed-file PATH in a writable folder")

    stream, opened = _open_input(source)  # a mistyped path first, then the key
    key_doc: dict[str, Any] = {"key_masked": None, "key_source": None}
    try:
        if dry_run:
            store = store or ConfigStore()
            seg = ConfigStore.segment_of(store.load(), project)
            resolved = None
        else:
            seg, resolved = integration.usable_key(project, store=store, keystore=keystore)
            key_doc = {"key_masked": resolved.masked, "key_source": resolved.source}
        url = f"{endpoints.tracking_base(seg)}/v1/batch"
        policy = policy or segment.Policy.from_env(timeout)
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
    client = None
    line_no = 0
    batch: list[bytes] = []
    switch = sys.getswitchinterval()
    try:
        fmt = detect_format(source, fmt, stream)
        doc["format"] = fmt
        rows = read_jsonl(stream) if fmt == "jsonl" else read_csv(stream)
        build = MessageBuilder(project).build
        if not dry_run:
            client = segment.build_client(transport, policy=policy)
            assert resolved is not None and resolved.key
            sender = Sender(client=client, url=url, key=resolved.key, policy=policy,
                            workers=concurrency, failed=failed, progress=advance)
            sys.setswitchinterval(SWITCH_INTERVAL)
        size = 0
        room = MAX_BATCH_BYTES - 64  # the envelope: {"batch":[...],"sentAt":"..."}
        for line_no, rec, problem in rows:
            read += 1
            if problem is None:
                try:
                    msg = build(rec)  # type: ignore[arg-type]
                except BadRecord as exc:
                    problem = str(exc)
            if problem is not None:
                skipped += 1
                if len(bad_lines) < BAD_LINES_KEPT:
                    bad_lines.append({"line": line_no, "error": problem})
                if strict:
                    # Nothing more is sent, queued batches included; the user
                    # fixes the file and sends it all again (deduplicated).
                    stopped_at = line_no
                    if sender is not None:
                        sender.interrupt(discard=True)
                    batch = []
                    break
                continue
            valid += 1
            if batch and (size + len(msg) + 1 > room or len(batch) >= MAX_BATCH_EVENTS):
                batches += 1
                if sender is not None:
                    sender.submit(batch)
                else:
                    advance(len(batch))
                batch, size = [], 0
            batch.append(msg)
            size += len(msg) + 1
        if batch:
            batches += 1
            if sender is not None:
                sender.submit(batch)
            else:
                advance(len(batch))
            batch = []
        if sender is not None:
            sender.close()
    except KeyboardInterrupt:
        if sender is not None:
            sender.interrupt()
            if batch:
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
        sys.setswitchinterval(switch)
        with contextlib.suppress(NameError):
            rows.close()
        if sender is not None and not sender.closed:  # an error: keep what was queued
            sender.interrupt()
            sender.close()
        if opened:
            stream.close()
        if client is not None:
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
    })
    return doc


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
        rows.append(("failed events in", doc["failed_file"]))
    return rows


def outcome_error(doc: dict[str, Any]) -> AvsbError | None:
    """The error the run ends with, if anything was not delivered (exit 6 or 8)."""
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
