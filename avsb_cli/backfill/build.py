"""Enrollment -> Segment message: one typed record, one validation path, msgspec both ways.

An enrollment is decoded into ``Enrollment`` by msgspec, in C: from JSON
Lines (a whole chunk at once with ``decode_lines``, or one line) and from
CSV rows (``convert``) alike, so both formats pass the same checks and give
the same errors, each naming the field. ``MessageBuilder`` then does what a
type can't say: a blank field is a missing one, a numeric id is text, the
timestamp has a zone and is normalised to UTC (a chunk's at once). The
message is the one ``event.experiment_event`` builds, field for field,
encoded by msgspec, with a messageId derived from the project and the
enrollment.
"""

from __future__ import annotations

import io
import itertools
import operator
import re
from collections.abc import Iterable
from datetime import datetime
from hashlib import sha256
from typing import Any, NamedTuple

import msgspec

from avsb_cli.backfill.limits import FIELDS, REQUIRED
from avsb_cli.backfill.read import Row, read_jsonl
from avsb_cli.event import EVENT, EVENT_NAME, MAX_MESSAGE_BYTES, library_context


class BadRecord(Exception):
    """A record that is not sent; the message names what is wrong with it."""


class Enrollment(msgspec.Struct, gc=False):
    """One enrollment as read; other fields and columns are ignored."""

    experiment_id: str
    experiment_name: str
    variation_id: str
    variation_name: str
    timestamp: str
    user_id: str | int | None = None  # numeric ids in an export are taken as text
    anonymous_id: str | int | None = None


class Properties(msgspec.Struct, gc=False):
    experiment_id: str
    experiment_name: str
    variation_id: str
    variation_name: str
    event_name: str


class Message(msgspec.Struct, omit_defaults=True, gc=False):
    """``event.experiment_event``'s message, its fields in the same order."""

    type: str
    event: str
    messageId: str  # noqa: N815 - Segment's names
    timestamp: str
    properties: Properties
    context: msgspec.Raw
    userId: str | None = None  # noqa: N815
    anonymousId: str | None = None  # noqa: N815


class Part(NamedTuple):
    """What one chunk of input came to."""

    messages: list[bytes]
    problems: list[tuple[int, str]]  # (line, what is wrong), in line order
    read: int  # records (blank lines are not records)
    last_line: int


_decoder = msgspec.json.Decoder(Enrollment)
_encode = msgspec.json.Encoder().encode
_convert = msgspec.convert
_second = operator.itemgetter(1)
_fromiso = datetime.fromisoformat
_zone = operator.attrgetter("tzinfo")
_offset = operator.methodcaller("utcoffset")
_LABEL_PROBE = datetime(2000, 1, 1)  # encoded: '"2000-01-01T00:00:00' and the zone's label
#: a whole-seconds stamp's end in msgspec's JSON ("...:SSZ"), to get ".000"
_WHOLE_SECONDS = re.compile(rb'Z(?<=:\d\dZ)"')
#: what a chunk built at once can raise; it is then read again a record at a time
_CHUNK_FAILED = (msgspec.MsgspecError, BadRecord, ValueError, OverflowError, RecursionError)


def utc_stamps(values: list[str]) -> list[str]:
    """ISO-8601 texts with a zone as UTC, ``Z``, milliseconds (microseconds if
    needed): a chunk's timestamps at once, parsed by datetime.fromisoformat and
    written by msgspec's RFC 3339 encoder, both in C. ValueError (or
    OverflowError, TypeError) if any is not one; ``normalise_timestamp`` says why.
    """
    whens = list(map(_fromiso, values))
    zones = set(map(_zone, whens))
    if None in zones:
        raise ValueError("no time zone")
    # Each stamp minus its offset is its UTC time still labelled with its zone,
    # and msgspec writes the label as a suffix, swapped for Z below. A chunk's
    # stamps mostly share one zone: one offset for all of them. (astimezone, a
    # stamp at a time, made this 756 ns a stamp with offsets, against 534.)
    if len(zones) == 1:
        offset = next(iter(zones)).utcoffset(None)
        utc = list(map(operator.sub, whens, itertools.repeat(offset))) if offset else whens
    else:
        utc = list(map(operator.sub, whens, map(_offset, whens)))
    text = _encode(utc)
    for zone in zones:  # (msgspec writes "+05:30" for a zone of +05:30:15 too)
        label = _encode(_LABEL_PROBE.replace(tzinfo=zone))[20:]  # b'+05:30"' or b'Z"'
        if label != b'Z"':
            text = text.replace(label, b'Z"')
    # msgspec writes fractions with six digits and whole seconds as "...:SSZ":
    # both fixed on the encoded list, in C (a Python step per stamp was 5-7%
    # of a dry run's instructions).
    return _WHOLE_SECONDS.sub(b'.000Z"', text.replace(b'000Z"', b'Z"')
                              ).decode()[2:-2].split('","')


def normalise_timestamp(value: Any) -> str:
    """One timestamp as ``utc_stamps`` writes it; BadRecord says what is wrong."""
    if type(value) is not str:
        raise BadRecord("timestamp must be an ISO-8601 string, e.g. 2024-05-01T12:00:00Z")
    text = value.strip()
    try:
        when = _fromiso(text)
    except ValueError:
        raise BadRecord(f"timestamp {value[:40]!r} is not ISO-8601 or not a valid date "
                        "and time") from None
    if when.tzinfo is None:
        raise BadRecord(f"timestamp {text[:40]!r} has no time zone (add Z for UTC)")
    try:
        return utc_stamps([text])[0]
    except OverflowError:
        raise BadRecord(f"timestamp {text[:40]!r} is out of range in UTC") from None


def message_id(project: str, experiment_id: str, variation_id: str,
               user_id: str | None, anonymous_id: str | None, timestamp: str) -> str:
    """Deterministic, so a re-sent enrollment carries the same messageId (69 characters)."""
    who = f"u:{user_id}" if user_id else f"a:{anonymous_id}"
    raw = f"{project}\0{experiment_id}\0{variation_id}\0{who}\0{timestamp}"
    return "avsb-" + sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


# Why a record was refused ------------------------------------------------------------

_EXPECTED = re.compile(r"Expected `[^`]*`, got `([^`]*)`(?: - at `\$\.([^`]*)`)?")
_KINDS = {"array": "an array", "str": "a string", "int": "a number", "float": "a number",
          "bool": "a boolean"}


def _as_dict(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        rec = msgspec.json.decode(raw)
    except (msgspec.DecodeError, TypeError, RecursionError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _blank(value: Any) -> bool:
    return value is None or (type(value) is str and (not value or value.isspace()))


def _unknown_hint(raw: Any) -> str:
    unknown = [str(k)[:40] for k in _as_dict(raw) if k not in FIELDS][:5]
    return f" (unknown fields: {', '.join(unknown)})" if unknown else ""


def explain(exc: msgspec.MsgspecError, raw: Any) -> str:
    """msgspec's error for ``raw`` (a JSON line or a CSV row) as a bad line's message."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):  # (a subclass of DecodeError)
        if "UTF-8" in text:
            return "not UTF-8 text"
        detail = re.sub(r" \(byte (\d+)\)$", lambda m: f" at column {int(m[1]) + 1}",
                        text.removeprefix("JSON is malformed: "))
        return f"not valid JSON ({detail[:1].lower()}{detail[1:]})"
    found = _EXPECTED.match(text)
    if found and found[2] is None:
        kind = _KINDS.get(found[1], found[1])
        return f"is {kind}, not a JSON object (JSON Lines: one a line)"
    if found and found[1] != "null":
        if found[2] == "timestamp":
            return "timestamp must be an ISO-8601 string, e.g. 2024-05-01T12:00:00Z"
        return f"{found[2]} must be a string, not {found[1]}"
    rec = _as_dict(raw)  # a required field missing or null: name them all
    missing = [n for n in REQUIRED if _blank(rec.get(n))] or ["required field"]
    return "no " + ", ".join(missing) + _unknown_hint(raw)


def _text_id(value: str | int | None) -> str | None:
    """A user or anonymous id as sent: a number as text, a blank one as none."""
    if type(value) is int:
        return str(value)
    return value if value and not value.isspace() else None  # type: ignore[union-attr]


def _problem(rec: Enrollment, raw: Any) -> str | None:
    """What is wrong with a decoded enrollment, as a bad line's message, in the
    order the fields are checked: the required texts, an id, the timestamp."""
    missing = [n for n in REQUIRED[:4] if _blank(getattr(rec, n))]
    if missing:
        return "no " + ", ".join(missing) + _unknown_hint(raw)
    if not (_text_id(rec.user_id) or _text_id(rec.anonymous_id)):
        return "no user_id or anonymous_id" + _unknown_hint(raw)
    if not rec.timestamp:
        return "no timestamp" + _unknown_hint(raw)
    try:
        normalise_timestamp(rec.timestamp)
    except BadRecord as exc:
        return str(exc)
    return None


# Building -----------------------------------------------------------------------------


class MessageBuilder:
    """Enrollments -> the encoded messages ``event.experiment_event`` builds."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._context = msgspec.Raw(_encode(library_context()))
        self._max_bytes = MAX_MESSAGE_BYTES
        self._picks: dict[tuple[str, ...], Any] = {}

    def build(self, raw: bytes | dict[str, Any]) -> bytes:
        """A JSON line (bytes) or a record as a dict (a CSV row, a failed event's
        enrollment) through the one validation path."""
        try:
            rec = _decoder.decode(raw) if type(raw) is bytes else _convert(raw, Enrollment)
        except msgspec.MsgspecError as exc:
            raise BadRecord(explain(exc, raw)) from None
        except RecursionError:  # msgspec recurses once per level of nesting
            raise BadRecord("nested too deep to be an enrollment") from None
        return self.message(rec, raw)

    def message(self, rec: Enrollment, raw: Any = None) -> bytes:
        """The encoded message for one decoded enrollment; BadRecord says why not."""
        problem = _problem(rec, raw)
        if problem:
            raise BadRecord(problem)
        # (a timestamp with spaces around it is taken; fromisoformat would not)
        return self.messages([msgspec.structs.replace(rec, timestamp=rec.timestamp.strip())])[0]

    def messages(self, recs: list[Enrollment]) -> list[bytes]:
        """A chunk's enrollments as messages, their timestamps normalised together.

        Any problem raises (BadRecord, ValueError, OverflowError); the caller then
        goes through the chunk a record at a time, where ``_problem`` names it.
        """
        project, context, most = self.project, self._context, self._max_bytes
        message, properties, event, event_name = Message, Properties, EVENT, EVENT_NAME
        encode, hashed, text_id = _encode, sha256, _text_id
        out: list[bytes] = []
        append = out.append
        # This loop is most of a dry run's time: message_id is inlined (the call
        # was 4% of its instructions); tests/test_send.py checks the ids against
        # message_id, tests/test_send_ids.py against earlier releases.
        for rec, ts in zip(recs, utc_stamps([r.timestamp for r in recs]), strict=True):
            eid, ename, vid, vname = (rec.experiment_id, rec.experiment_name,
                                      rec.variation_id, rec.variation_name)
            if not (eid and ename and vid and vname) or (
                    eid.isspace() or ename.isspace() or vid.isspace() or vname.isspace()):
                raise BadRecord("a blank field")
            uid, aid = text_id(rec.user_id), text_id(rec.anonymous_id)
            if uid:
                key = f"{project}\0{eid}\0{vid}\0u:{uid}\0{ts}"
            elif aid:
                key = f"{project}\0{eid}\0{vid}\0a:{aid}\0{ts}"
            else:
                raise BadRecord("no id")
            mid = "avsb-" + hashed(key.encode("utf-8", "surrogatepass")).hexdigest()
            try:
                body = encode(message("track", event, mid, ts, properties(
                    eid, ename, vid, vname, event_name), context, uid, aid))
            except UnicodeEncodeError:  # a CSV byte that was not UTF-8 (surrogateescape)
                raise BadRecord("not valid UTF-8 text") from None
            if len(body) > most:
                raise BadRecord(f"the event would be {len(body):,} bytes; Segment refuses "
                                "messages over 32 KB")
            append(body)
        return out

    def rows(self, rows: Iterable[Row], *, strict: bool, last_line: int = 0) -> Part:
        """Records one by one, each problem with its line; stops at the first if strict."""
        build = self.build
        messages: list[bytes] = []
        problems: list[tuple[int, str]] = []
        read = 0
        for line_no, raw, problem in rows:
            read += 1
            last_line = max(last_line, line_no)
            if problem is None:
                try:
                    messages.append(build(raw))  # type: ignore[arg-type]
                    continue
                except BadRecord as exc:
                    problem = str(exc)
            problems.append((line_no, problem))
            if strict:
                break
        return Part(messages, problems, read, last_line)

    def chunk(self, chunk: bytes, done: int, n: int, *, strict: bool) -> Part:
        """``n`` whole JSON Lines after ``done`` lines, decoded in one call.

        A chunk with any bad line is read again a line at a time, for the
        line numbers: the same checks, so the same messages either way.
        """
        try:
            recs = _decoder.decode_lines(chunk)
            return Part(self.messages(recs), [], len(recs), done + n)
        except _CHUNK_FAILED:
            return self.rows(read_jsonl(io.BytesIO(chunk), done), strict=strict,
                             last_line=done + n)

    def csv_rows(self, names: list[str], rows: list[Row], *, strict: bool) -> Part:
        """CSV rows (lists in the header's order) after ``read_csv``.

        A CSV value is always text, so the Struct is made directly from the
        columns msgspec would take; a part with any bad row goes row by row
        through ``build`` (msgspec.convert), for the line numbers.
        """
        values = list(map(_second, rows))
        if None not in values:  # no problem from the reader
            pick = self._picks.get(tuple(names))
            if pick is None:  # the columns Enrollment takes, in its order
                pick = self._picks[tuple(names)] = operator.itemgetter(
                    *(names.index(f) for f in Enrollment.__struct_fields__))
            try:
                recs = list(itertools.starmap(Enrollment, map(pick, values)))
                return Part(self.messages(recs), [], len(rows), rows[-1][0])
            except _CHUNK_FAILED:
                pass
        return self.rows([(n, dict(zip(names, row, strict=True)) if row else None, problem)  # type: ignore[arg-type]
                          for n, row, problem in rows], strict=strict)


def enrollment_of(message: bytes) -> dict[str, Any]:
    """A message back as the enrollment it came from (for the failed-events file)."""
    msg = msgspec.json.decode(message)
    props = msg.get("properties", {})
    rec = {name: props.get(name) for name in REQUIRED[:4]}
    if msg.get("userId"):
        rec["user_id"] = msg["userId"]
    if msg.get("anonymousId"):
        rec["anonymous_id"] = msg["anonymousId"]
    rec["timestamp"] = msg.get("timestamp")
    return rec


