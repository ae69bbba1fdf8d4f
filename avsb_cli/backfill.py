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

import bisect
import contextlib
import csv
import hashlib
import io
import itertools
import json
import operator
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) uses
from pathlib import Path
from typing import IO, Any, NamedTuple

from avsb_cli.errors import AvsbError, InputError, Interrupted, NetworkError, UsageError

try:  # zlib-ng's level 1 takes a third of zlib's time here, for 30% more bytes (bench/)
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - the standard library's, same format
    import zlib  # type: ignore[no-redef]

MAX_BATCH_BYTES = 450_000
MAX_BATCH_EVENTS = 2000
MAX_LINE_BYTES = 1 << 20
#: JSON Lines are read and built this many bytes at a time (about 250 lines)
CHUNK_BYTES = 1 << 16
#: CSV rows per Part
PART_ROWS = 1000
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
# What JavaScript's toISOString writes, with hours, minutes and seconds in range:
# with a real date, datetime.fromisoformat takes it as it stands.
_TS_BYTES = rb"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z"
_ts_column = re.compile(rb"(?:%s\n)*" % _TS_BYTES).fullmatch
_ts_bytes = re.compile(_TS_BYTES).fullmatch
_date = date.fromisoformat
_canonical_ts = _CANONICAL_TS.fullmatch
_fromiso = datetime.fromisoformat
try:  # CPython's own SHA-256 (3.12+: _sha2, 3.11: _sha256). On a 60-byte input
    # OpenSSL's per-call set-up is most of the cost: a tenth of building (bench/).
    from _sha2 import sha256 as _sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python
    try:
        from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _sha256 = hashlib.sha256
_first = operator.itemgetter(0)
_U = b"u"
_KINDS = {b"user_id": _U, b"anonymous_id": b"a"}
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


def read_jsonl(stream: IO[bytes], start: int = 0) -> Iterator[Row]:
    """JSON Lines one at a time; ``start`` lines came before the stream."""
    readline = stream.readline
    # json.loads costs twice its C scanner here (encoding sniffing, regexes);
    # the scanner takes the common line, json.loads the rest and the errors.
    scan = json.JSONDecoder().scan_once
    line_no = start
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
        if line_no == 1 and raw.startswith(BOM):  # (jsonl_chunks strips it itself)
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


def jsonl_chunks(stream: IO[bytes]) -> Iterator[tuple[int, int, bytes | None]]:
    """JSON Lines as chunks of whole lines, about CHUNK_BYTES each.

    Yields ``(lines before the chunk, lines in it, chunk)``; every chunk
    but a last line without a newline ends with one. A line longer than
    MAX_LINE_BYTES comes as one line, ``None``, and its bytes are skipped,
    so memory stays bounded whatever the input.
    """
    read = getattr(stream, "read1", stream.read)  # what a pipe has, without waiting
    done = 0
    tail = b""
    first = True
    while True:
        data = read(CHUNK_BYTES)
        if not data:
            if tail:
                yield done, 1, tail
            return
        if first:
            first = False
            while len(data) < 3 and BOM.startswith(data) and (more := read(CHUNK_BYTES)):
                data += more
            data = data.removeprefix(BOM)
            if not data:
                continue
        buf = tail + data if tail else data
        cut = buf.rfind(b"\n") + 1
        if not cut:
            tail = buf
            if len(tail) > MAX_LINE_BYTES:
                yield done, 1, None
                done += 1
                while (nl := data.find(b"\n")) < 0:
                    data = read(CHUNK_BYTES)
                    if not data:
                        return
                tail = data[nl + 1:]
            continue
        chunk, tail = (buf, b"") if cut == len(buf) else (buf[:cut], buf[cut:])
        n = chunk.count(b"\n")
        yield done, n, chunk
        done += n


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


class Part(NamedTuple):
    """What one chunk of input came to."""

    messages: list[bytes]
    problems: list[tuple[int, str]]  # (line, what is wrong), in line order
    read: int  # records (blank lines are not records)
    last_line: int


# Columns: JSON Lines without a parser ------------------------------------------------

_open_sep = re.compile(rb"[ \t]*\{[ \t]*").fullmatch
_close_sep = re.compile(rb"[ \t]*\}[ \t]*\r?\n").fullmatch
_colon_sep = re.compile(rb"[ \t]*:[ \t]*").fullmatch
_comma_sep = re.compile(rb"[ \t]*,[ \t]*").fullmatch
_NOT_CONTROL = bytes(range(0x20, 0x100)) + b"\n\r"


def columns(chunk: bytes, n: int) -> Columns | None:
    """The seven fields of ``n`` JSON Lines as columns, or None to parse them one by one.

    Applies when every line is a flat object of plain strings (no escapes,
    no control characters) whose keys sit in the same places, with the same
    spacing, on every line. Then the chunk splits on '"' into key, value
    and punctuation columns, each checked once for the whole chunk: the same
    punctuation on every line is the same JSON grammar, and a string without
    a backslash is its own value. A column may hold different keys on
    different lines (user_id here, anonymous_id there) if no line can end up
    with a key twice. A field no line has is a column of None. With the
    columns comes whether an id is empty or starts with a space (and so may
    be blank, which ``build`` takes as no id).
    """
    if not n or b"\\" in chunk or chunk.translate(None, _NOT_CONTROL) or (
        b"\r" in chunk and chunk.count(b"\r") != chunk.count(b"\r\n")
    ):
        return None
    if not chunk.isascii():
        try:
            chunk.decode()
        except UnicodeDecodeError:
            return None
    parts = chunk.split(b'"')
    q, rest = divmod(len(parts) - 1, n)  # quotes a line
    if rest or not q or q % 4:
        return None
    first, last = parts[0], parts[-1]
    if not (_open_sep(first) and _close_sep(last)) or (
        n > 1 and parts[q:-1:q].count(last + first) != n - 1
    ):
        return None
    for j in range(2, q, 2):
        sep = parts[j]
        if not (_colon_sep if j % 4 == 2 else _comma_sep)(sep) or parts[j::q].count(sep) != n:
            return None
    fixed: dict[str, int] = {}  # a key on every line: its column
    varying: list[tuple[int, list[bytes], set[str]]] = []
    for c in range(q // 4):
        keys = parts[4 * c + 1::q]
        if keys.count(keys[0]) == n:
            name = keys[0].decode()
            if name in fixed:
                return None
            fixed[name] = c
        else:
            varying.append((c, keys, {k.decode() for k in set(keys)}))
    taken = set(fixed)
    for _, _, names in varying:
        if names & taken:
            return None
        taken |= names
    out: list[Any] = []
    spaced = False  # an id empty or starting with a space, which may be blank
    shared = None
    for name in FIELDS:
        keys = names = None
        c = fixed.get(name)
        if c is None:
            c, keys, names = next((v for v in varying if name in v[2]), (None, None, None))
        if c is None:
            out.append([None] * n)
            continue
        values = parts[4 * c + 3::q]
        if name in IDS:
            spaced = spaced or min(values)[:1] <= b" "
        if keys is None:  # a key on every line
            out.append(values)
            continue
        if name in IDS and names == set(IDS):
            # user_id on some lines, anonymous_id on the others, in one place:
            # left as it is for Columns.ids (unshare makes the two columns).
            shared = (keys, values)
            out.append(None)
            continue
        want = name.encode()
        out.append([v if k == want else None for k, v in zip(keys, values, strict=True)])
    return Columns(out, spaced, shared)


class Columns(NamedTuple):
    """What ``columns`` found: the seven fields, and two facts about the ids."""

    fields: list[Any]  # user_id and anonymous_id are None when they are ``ids``
    spaced: bool  # an id is empty or starts with a space (so may be blank)
    ids: tuple[list[bytes], list[bytes]] | None  # (keys, values): both ids in one place

    def unshare(self) -> list[Any]:
        """The seven fields, user_id and anonymous_id as columns of their own."""
        if self.ids is not None:
            keys, values = self.ids
            self.fields[4], self.fields[5] = (
                [v if k == want else None for k, v in zip(keys, values, strict=True)]
                for want in (b"user_id", b"anonymous_id"))
        return self.fields


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
        self._project = project.encode("utf-8", "surrogatepass")
        self._segment = segment
        self._max_bytes = segment.MAX_MESSAGE_BYTES
        self._templates: dict[tuple[Any, ...], Any] = {}
        #: the same templates as bytes, keyed by the columns' bytes (``chunk``)
        self._fast: dict[tuple[Any, ...], tuple[bytes, Any]] = {}
        #: dates (YYYY-MM-DD) known to be real
        self._days: set[bytes] = set()

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
            pieces, raw, order, pos = [], [], [], 0
            for at, index, quoted in found:
                pieces.append(text[pos:at].replace("%", "%%"))
                raw.append(pieces[-1])
                # messageId (hex) and the normalised timestamp need no escaping.
                pieces.append('"%s"' if index < 2 else "%s")
                # The columns' ids are plain (no quote, backslash or control
                # character), so JSON-encoded they are just quoted.
                raw.append('"avsb-%s"' if index == 0 else '"%s"')
                order.append(index)
                pos = at + len(quoted)
            pieces.append(text[pos:].replace("%", "%%"))
            raw.append(pieces[-1])
            pick = operator.itemgetter(*order)
            template = ("".join(pieces), pick)
            # _whole fills one-id templates with (messageId, timestamp, id).
            with contextlib.suppress(UnicodeEncodeError):  # CSV's undecodable bytes
                key = (eid.encode(), ename.encode(), vid.encode(), vname.encode(),
                       has_user, has_anon)
                if order == sorted(order):
                    self._fast[key] = ("".join(raw).encode(), pick)
        if len(self._templates) >= self.MAX_TEMPLATES:
            self._templates.clear()
            self._fast.clear()
        self._templates[(eid, ename, vid, vname, has_user, has_anon)] = template
        return template

    # Many records at a time ------------------------------------------------------

    def rows(self, rows: Iterator[Row], *, strict: bool, last_line: int = 0) -> Part:
        """Messages for records read one by one; stops at the first problem if strict."""
        build = self.build
        messages: list[bytes] = []
        problems: list[tuple[int, str]] = []
        read = 0
        for line_no, rec, problem in rows:
            read += 1
            last_line = max(last_line, line_no)
            if problem is None:
                try:
                    messages.append(build(rec))  # type: ignore[arg-type]
                    continue
                except BadRecord as exc:
                    problem = str(exc)
            problems.append((line_no, problem))
            if strict:
                break
        return Part(messages, problems, read, last_line)

    def chunk(self, chunk: bytes, done: int, n: int, *, strict: bool) -> Part:
        """Messages for ``n`` whole JSON Lines that follow ``done`` lines.

        Byte for byte what ``build`` makes of each line read alone (tests
        compare them), about three times faster: fields come from
        ``columns``, the message from a bytes template. Any record the
        columns can't vouch for (a new experiment, a blank id, another
        timestamp form, a line unlike the others) goes through ``build``.
        """
        found = columns(chunk, n) if chunk.endswith(b"\n") else None
        if found is None:
            return self.rows(read_jsonl(io.BytesIO(chunk), done), strict=strict,
                             last_line=done + n)
        stamps = found.fields[6]
        good_stamps = None not in stamps and bool(_ts_column(b"\n".join(stamps) + b"\n"))
        if good_stamps:
            days = self._days
            new = set(map(operator.itemgetter(slice(0, 10)), stamps)) - days
            good_stamps = all(map(self._real_day, new))
        # A blank id counts as none (build), and the slow way sorts that out.
        # The columns hold no control characters, so an ASCII blank is spaces.
        plain = chunk.isascii() and not found.spaced
        checked = good_stamps and plain
        if checked and (messages := self._whole(found)) is not None:
            return Part(messages, [], n, done + n)
        cols = found.unshare()
        fast, project, sha, limit = self._fast, self._project, _sha256, self._max_bytes
        messages: list[bytes] = []
        problems: list[tuple[int, str]] = []
        add = messages.append
        lines: list[bytes] | None = None
        for i, (eid, ename, vid, vname, uid, aid, ts) in enumerate(zip(*cols, strict=True)):
            template = fast.get((eid, ename, vid, vname, uid is not None, aid is not None))
            if template is not None and (checked or (
                    self._ids_ok(uid, aid) and (good_stamps or self._stamp_ok(ts)))):
                if uid is not None:
                    key = b"%s\0%s\0%s\0u:%s\0%s" % (project, eid, vid, uid, ts)
                else:
                    key = b"%s\0%s\0%s\0a:%s\0%s" % (project, eid, vid, aid, ts)
                fmt, pick = template
                body = fmt % pick((sha(key).hexdigest().encode(), ts, uid, aid))
                if len(body) <= limit:
                    add(body)
                    continue
            # The slow way, as the line would be read alone.
            if lines is None:
                lines = chunk.split(b"\n")
            try:
                add(self.build(json.loads(lines[i])))
            except BadRecord as exc:
                problems.append((done + i + 1, str(exc)))
                if strict:
                    break
        return Part(messages, problems, len(messages) + len(problems), done + n)

    def _whole(self, found: Columns) -> list[bytes] | None:
        """The chunk's messages a column at a time, when every record is known good.

        The same steps as the loop in ``chunk``, but each one over a whole
        column in a comprehension or inside C (map, zip): a third less per record.
        None when some record needs a look of its own.
        """
        eids, enames, vids, vnames, uids, aids, stamps = found.fields
        n = len(stamps)
        ids: Any = None  # with one id a record: the ids, and u or a for each
        if found.ids is not None:
            keys, ids = found.ids
            kinds: Any = list(map(_KINDS.__getitem__, keys))
            has_u: Any = [k is _U for k in kinds]  # (faster than map(bytes.__eq__))
            has_a: Any = [k is not _U for k in kinds]
        else:
            no_u, no_a = uids.count(None), aids.count(None)
            has_u = [u is not None for u in uids] if 0 < no_u < n else itertools.repeat(not no_u)
            has_a = [a is not None for a in aids] if 0 < no_a < n else itertools.repeat(not no_a)
            if no_u + no_a == n:  # none without ids (no template, below), so each has one
                if not no_u:
                    ids, kinds = uids, itertools.repeat(b"u")
                elif not no_a:
                    ids, kinds = aids, itertools.repeat(b"a")
                else:
                    ids = [u if u is not None else a for u, a in zip(uids, aids, strict=True)]
                    kinds = [b"a" if u is None else b"u" for u in uids]
        templates = list(map(self._fast.get, zip(eids, enames, vids, vnames, has_u, has_a,
                                                 strict=False)))  # (has_* may repeat)
        if None in templates:  # a new experiment or variation, or a record without ids
            return None
        if ids is not None:
            keys = map(b"%s\0%s\0%s\0%s:%s\0%s".__mod__,
                       zip(itertools.repeat(self._project), eids, vids, kinds, ids, stamps))
            hexes = [_sha256(k).hexdigest().encode() for k in keys]
            # One id: the template's values are messageId, timestamp, id, in that order.
            out = list(map(bytes.__mod__, map(_first, templates),
                           zip(hexes, stamps, ids, strict=True)))
        else:
            whos = [b"u:" + u if u is not None else b"a:" + a  # type: ignore[operator]
                    for u, a in zip(uids, aids, strict=True)]
            keys = map(b"\0".join, zip(itertools.repeat(self._project), eids, vids, whos,
                                       stamps))
            hexes = [_sha256(k).hexdigest().encode() for k in keys]
            out = [fmt % pick((h, ts, u, a)) for (fmt, pick), h, ts, u, a
                   in zip(templates, hexes, stamps, uids, aids, strict=True)]
        return out if max(map(len, out)) <= self._max_bytes else None

    def _real_day(self, day: bytes) -> bool:
        try:
            _date(day.decode())
        except ValueError:
            return False
        if len(self._days) > 100_000:
            self._days.clear()
        self._days.add(day)
        return True

    def _stamp_ok(self, ts: bytes | None) -> bool:
        return ts is not None and bool(_ts_bytes(ts)) and (
            ts[:10] in self._days or self._real_day(ts[:10]))

    @staticmethod
    def _ids_ok(*ids: bytes | None) -> bool:
        """No blank id, by str.isspace() (bytes.isspace() knows ASCII only)."""
        return all(v is None or (v and not v.decode().isspace()) for v in ids)


def parts(stream: IO[bytes], fmt: str, builder: MessageBuilder, *,
          strict: bool) -> Iterator[Part]:
    """The input as Parts: a chunk of JSON Lines, or PART_ROWS rows of CSV, at a time."""
    if fmt == "csv":
        rows = read_csv(stream)
        try:
            while (part := builder.rows(itertools.islice(rows, PART_ROWS),
                                        strict=strict)).read:
                yield part
        finally:
            rows.close()
        return
    for done, n, chunk in jsonl_chunks(stream):
        if chunk is None:
            yield Part([], [(done + 1, f"longer than {MAX_LINE_BYTES >> 20} MiB")], 1, done + 1)
        else:
            yield builder.chunk(chunk, done, n, strict=strict)


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


def messages_of(content: bytes) -> list[bytes]:
    """The messages of a body ``gzip_batch`` made, as ``build`` encodes them."""
    return _encoded(json.loads(zlib.decompress(content, 47))["batch"])


def _encoded(messages: list[Any]) -> list[bytes]:
    return [json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode() for m in messages]


class Batcher:
    """Messages into batches of at most MAX_BATCH_EVENTS whose JSON stays
    within MAX_BATCH_BYTES, envelope included; greedy, in order."""

    def __init__(self) -> None:
        self.room = MAX_BATCH_BYTES - 64  # the envelope: {"batch":[...],"sentAt":"..."}
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
            most = min(len(msgs), i + MAX_BATCH_EVENTS - len(self.batch))
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
    gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return b"".join((gz.compress(b'{"batch":['), gz.compress(messages),
                     gz.compress(b'],"sentAt":"%s"}' % sent_at.encode()), gz.flush()))


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
        # Two waiting batches: when the reader outruns the senders the queue is
        # full whatever its size, and each slot holds half a megabyte.
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=2)
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
            # Queued as one block: a thousand small objects freed by another
            # thread later would leave the reader's memory fragmented.
            self.queue.put([b",".join(batch), len(batch)])

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            self._handle(item)
            # Not held while waiting: a batch is half a megabyte (bench/'s memory run).
            del item

    def _handle(self, item: list[Any]) -> None:
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
                self._post(content, count)
                return
            except _Stopped:
                pass
            except AvsbError as exc:
                cause = exc.message
            except Exception as exc:  # a bug must not lose the batch or hang the reader
                cause = f"internal error: {type(exc).__name__}: {exc}"
        self._fail(messages_of(content) if joined is None
                   else _encoded(json.loads(b"[%s]" % joined)), cause)

    def _post(self, content: bytes, count: int) -> None:
        d = self._segment.request(
            self.client, "POST", self.url, policy=self.policy, key=self.key,
            content=content, headers=_GZIP_HEADERS, sleep=self._sleep,
        )
        with self.lock:
            self.sent += count
            self.batches_sent += 1
            self.retries += d.attempts - 1
            self.in_a_row = 0
        if self.progress:
            # Delivered is delivered: a display problem must not count it as failed.
            with contextlib.suppress(Exception):
                self.progress(count)

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
    line_no = 0  # every line up to here is sent, queued or in the failed file
    batcher = Batcher()
    switch = sys.getswitchinterval()
    try:
        fmt = detect_format(source, fmt, stream)
        doc["format"] = fmt
        chunks = parts(stream, fmt, MessageBuilder(project), strict=strict)
        if not dry_run:
            client = segment.build_client(transport, policy=policy,
                                          tls=not url.startswith("http://"))
            assert resolved is not None and resolved.key
            sender = Sender(client=client, url=url, key=resolved.key, policy=policy,
                            workers=concurrency, failed=failed, progress=advance)
            sys.setswitchinterval(SWITCH_INTERVAL)
        for part in chunks:
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
        sys.setswitchinterval(switch)
        with contextlib.suppress(NameError):
            chunks.close()
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
