"""`segment send` reads JSON Lines a chunk at a time, decoded by msgspec in one call.

A chunk with a bad line is read again a line at a time (read_jsonl +
MessageBuilder.rows), for the line numbers; test_send.py pins that path
down. Whatever the input, the chunked reading must give the same messages,
the same bad lines with the same numbers and messages, and the same count.
"""

from __future__ import annotations

import io
import json
import ssl
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avsb_cli import backfill, segment
from avsb_cli.backfill import deliver, read
from tests.test_send import enrollment

FIELDS = ["experiment_id", "experiment_name", "variation_id", "variation_name", "user_id",
          "anonymous_id", "timestamp"]


def reference(data: bytes, *, strict: bool = False) -> backfill.Part:
    builder = backfill.MessageBuilder("proj")
    return builder.rows(backfill.read_jsonl(io.BytesIO(data)), strict=strict)


def chunked(data: bytes, *, strict: bool = False, stream: io.RawIOBase | None = None
            ) -> backfill.Part:
    builder = backfill.MessageBuilder("proj")
    messages, problems, read = [], [], 0
    for part in backfill.parts(stream or io.BytesIO(data), "jsonl", builder, strict=strict):
        messages += part.messages
        problems += part.problems
        read += part.read
        if strict and part.problems:
            break
    return backfill.Part(messages, problems, read, 0)


def same(data: bytes, *, strict: bool = False) -> backfill.Part:
    want, got = reference(data, strict=strict), chunked(data, strict=strict)
    assert got.problems == want.problems
    assert got.messages == want.messages
    assert got.read == want.read
    return got


# Lines that stress the shortcut: every way a line can differ from its neighbours.
text = st.sampled_from(["exp_1", "Exp 1", "Variation B", "user-7", "é", "\u00a0", "\u3000x",
                        " ", "", " lead", "a\"b", "back\\slash", "tab\there", "snow☃", "x" * 40])
stamp = st.sampled_from(["2024-05-01T12:00:00.000Z", "2024-12-31T23:59:59.999Z",
                         "2024-02-30T12:00:00.000Z", "2024-05-01T24:00:00.000Z",
                         "2024-05-01T12:00:00Z", "2024-05-01T14:00:00.000+02:00",
                         "2024-05-01 12:00:00.000Z", "2024-05-01T12:00:00.000", "not a date",
                         "2024-W01-1T12:00:00.000Z", "2024-05-01T12:00:60.000Z"])
value = st.one_of(text, st.integers(-5, 10**6), st.none(), st.booleans(), st.just([1]))


@st.composite
def record_line(draw: st.DrawFn) -> bytes:
    rec: dict[str, object] = {
        "experiment_id": draw(st.sampled_from(["exp_1", "exp_2"])),
        "experiment_name": draw(st.sampled_from(["Exp 1", "Exp 2"])),
        "variation_id": draw(st.sampled_from(["var_a", "var_b"])),
        "variation_name": draw(st.sampled_from(["A", "B"])),
    }
    ids = draw(st.sampled_from(["user", "anon", "both", "neither"]))
    if ids in ("user", "both"):
        rec["user_id"] = draw(st.sampled_from(["u1", "u2", "u3"]))
    if ids in ("anon", "both"):
        rec["anonymous_id"] = draw(st.sampled_from(["a1", "a2"]))
    rec["timestamp"] = draw(st.sampled_from(["2024-05-01T12:00:00.000Z",
                                             "2024-06-02T01:02:03.004Z"]))
    for _ in range(draw(st.integers(0, 2))):  # odd values in some fields
        rec[draw(st.sampled_from([*FIELDS, "source"]))] = draw(
            stamp if draw(st.booleans()) else value)
    keys = list(rec)
    if draw(st.booleans()):
        keys = draw(st.permutations(keys))
    ordered = {k: rec[k] for k in keys}
    seps = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    body = json.dumps(ordered, separators=seps, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:  # a duplicate key: JSON keeps the last
        body = body[:-1] + seps[0] + '"user_id"' + seps[1] + '"dup"}'
    pad = draw(st.sampled_from(["", "", " ", "\t"]))
    end = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    return (pad + body + pad + end).encode()


odd_line = st.sampled_from([b"\n", b"  \n", b"oops\n", b"[1, 2]\n", b"{\n", b"{}\n",
                            b'{"a":1}{"b":2}\n', b"\xff\xfe\n", b'"text"\n', b"null\n",
                            b'{"experiment_id":"e"}\n', b"\x0c\n", b"{\"a\":\"b\"}\r\r\n"])
lines = st.lists(st.one_of(record_line(), record_line(), record_line(), odd_line),
                 min_size=1, max_size=40)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(lines=lines, chunk=st.integers(1, 400), bom=st.booleans(), newline=st.booleans(),
       strict=st.booleans())
def test_chunks_give_what_lines_read_alone_give(lines, chunk, bom, newline, strict):
    data = (backfill.BOM if bom else b"") + b"".join(lines)
    if not newline:
        data = data.rstrip(b"\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backfill, "CHUNK_BYTES", chunk)
        same(data, strict=strict)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(record_line(), min_size=1, max_size=60))
def test_records_alone_in_big_chunks_match_too(lines):
    same(b"".join(lines))


@pytest.mark.parametrize("line, change, error", [
    (322, {"user_id": " "}, "no user_id or anonymous_id"),  # enrollment(321) has a user_id
    (321, {"anonymous_id": ""}, "no user_id or anonymous_id"),  # enrollment(320) has not
    (322, {"timestamp": "2024-02-30T12:00:00.000Z"}, "not a valid date"),
    (322, {"timestamp": "2024-05-01T12:00:00Z"}, None),  # fine, normalised the slow way
    (322, {"experiment_name": ""}, "no experiment_name"),
])
def test_one_odd_record_among_good_ones_keeps_its_line_number(line, change, error):
    recs = [enrollment(i) for i in range(500)]
    recs[line - 1] = enrollment(line - 1, **change)
    data = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    got = same(data)
    if error is None:
        assert not got.problems and len(got.messages) == 500
        return
    assert [n for n, _ in got.problems] == [line]
    assert error in got.problems[0][1]
    assert len(got.messages) == 499


def test_non_ascii_ids_and_names_and_unicode_blank_ids():
    recs = [enrollment(i, experiment_name="Expérience ☃", user_id=f"usér-{i}")
            for i in range(300)]
    recs[7].update(user_id="\u3000", anonymous_id="anon-7")  # blank to str, not to bytes
    data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in recs)
    got = same(data)
    assert not got.problems and len(got.messages) == 300
    eighth = json.loads(got.messages[7])  # the blank user_id counts as none
    assert "userId" not in eighth and eighth["anonymousId"] == "anon-7"
    assert json.loads(got.messages[8])["properties"]["experiment_name"] == "Expérience ☃"


# Reading chunks ---------------------------------------------------------------------


def test_chunks_end_at_newlines_and_count_lines(monkeypatch):
    monkeypatch.setattr(backfill, "CHUNK_BYTES", 10)
    data = b"aaaa\nbbbbbbbbbbbbbbbb\ncc\n\nlast"
    got = list(backfill.jsonl_chunks(io.BytesIO(data)))
    assert b"".join(c for _, _, c in got) == data
    assert all(c.endswith(b"\n") for _, _, c in got[:-1]) and got[-1][2] == b"last"
    starts = [done for done, _, _ in got]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(n for _, n, _ in got) == 5


def test_a_line_longer_than_the_limit_is_skipped_without_reading_it_into_memory(monkeypatch):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 300)
    monkeypatch.setattr(backfill, "CHUNK_BYTES", 16)
    good = json.dumps(enrollment(1)).encode() + b"\n"
    assert len(good) < 300
    data = good + b"x" * 5000 + b"\n" + good + b"y" * 350 + b"\n" + good
    got = same(data)
    assert [(n, e) for n, e in got.problems] == [(2, "longer than 0 MiB"), (4, "longer than 0 MiB")]
    assert len(got.messages) == 3
    held = max(len(c or b"") for _, _, c in backfill.jsonl_chunks(io.BytesIO(data)))
    assert held <= 300 + 16 + 1


class Trickle(io.RawIOBase):
    """A pipe that hands over a few bytes at a time, as a slow producer does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pulled = data, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        piece = self.data[self.pulled:self.pulled + min(self.step, len(buf))]
        buf[: len(piece)] = piece
        self.pulled += len(piece)
        return len(piece)


@pytest.mark.parametrize("step", [1, 2, 7, 4096])
def test_a_trickling_pipe_with_a_bom_reads_the_same(step):
    data = backfill.BOM + b"".join(json.dumps(enrollment(i)).encode() + b"\n"
                                   for i in range(40))
    got = chunked(data, stream=io.BufferedReader(Trickle(data, step), buffer_size=64))
    want = reference(data)
    assert got.messages == want.messages and not got.problems


def test_chunks_are_read_lazily():
    source = Trickle(b"".join(json.dumps(enrollment(i)).encode() + b"\n"
                              for i in range(100_000)), 1 << 16)
    first = next(backfill.parts(io.BufferedReader(source), "jsonl",
                                backfill.MessageBuilder("p"), strict=False))
    assert first.messages
    assert source.pulled <= 3 * backfill.CHUNK_BYTES


# Batching --------------------------------------------------------------------------


def greedy(parts: list[list[bytes]], room: int, most: int) -> list[list[bytes]]:
    """The plain loop Batcher must agree with."""
    out, batch, size = [], [], 0
    for msg in (m for part in parts for m in part):
        if batch and (size + len(msg) + 1 > room or len(batch) >= most):
            out.append(batch)
            batch, size = [], 0
        batch.append(msg)
        size += len(msg) + 1
    return out + ([batch] if batch else [])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.lists(st.integers(1, 120).map(lambda n: b"x" * n), max_size=30),
                      max_size=8),
       room=st.integers(1, 400), most=st.integers(1, 12))
def test_batcher_cuts_where_a_message_at_a_time_would(parts, room, most):
    batcher = backfill.Batcher(room + 64, most)
    got = [batch for part in parts for batch in batcher.add(part)]
    if rest := batcher.rest():
        got.append(rest)
    assert got == greedy(parts, room, most)
    assert batcher.rest() == []


def test_sent_batches_are_freed_without_waiting_for_the_garbage_collector(enabled, tmp_path):
    """httpx binds each response to its stream in a cycle that holds the
    request body; unbroken, a long send kept its batches until the next full
    collection (about 4 MB in bench/'s memory run).

    Counted, not weighed: with the collector off, the cyclic garbage a send
    leaves is collected into gc.garbage (DEBUG_SAVEALL) and must hold no
    response or request. Bytes traced by tracemalloc also counted the fake
    Segment's threads and whatever a loaded machine's retries left, and failed
    once for that."""
    import gc

    import httpx

    src = tmp_path / "e.jsonl"
    src.write_bytes(b"".join(json.dumps(enrollment(i)).encode() + b"\n" for i in range(10_000)))
    enabled.count_only = True  # the fake Segment shares this process: no copies kept
    backfill.send("default", str(src), failed_file=tmp_path / "f.jsonl")  # warm: imports, pools
    gc.collect()
    gc.disable()
    try:
        doc = backfill.send("default", str(src), failed_file=tmp_path / "f.jsonl")
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kept = [o for o in gc.garbage if isinstance(o, (httpx.Response, httpx.Request))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert doc["sent"] == 10_000 and doc["batches"] >= 5
    assert enabled.event_count == 20_000
    assert kept == [], f"{len(kept)} responses and requests were left for the collector"


# Compressing and the client ------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 127, 128, 129, 1000])
def test_gzip_batch_is_the_batch_document(count):
    messages = [b'{"n":%d}' % i for i in range(count)]
    body = zlib.decompress(backfill.gzip_batch(b",".join(messages), "2024-05-01T12:00:00.000Z"),
                           47)
    assert json.loads(body) == {"batch": [{"n": i} for i in range(count)],
                                "sentAt": "2024-05-01T12:00:00.000Z"}


def test_a_failed_batch_is_read_back_from_its_body_as_built():
    builder = backfill.MessageBuilder("p")
    messages = [builder.build(enrollment(i, experiment_name="Ünïcode ☃")) for i in range(300)]
    assert backfill.messages_of(backfill.gzip_batch(b",".join(messages), "T")) == messages


def test_gzip_batch_without_isal_is_the_same_document(monkeypatch):
    messages = [json.dumps(enrollment(i)).encode() for i in range(300)]
    fast = backfill.gzip_batch(b",".join(messages), "T")
    monkeypatch.setattr(deliver, "zlib", zlib)
    plain = backfill.gzip_batch(b",".join(messages), "T")
    assert zlib.decompress(fast, 47) == zlib.decompress(plain, 47)


def test_a_plain_http_client_skips_the_ca_bundle_and_fails_closed_on_https(monkeypatch):
    loaded = []
    monkeypatch.setattr(segment, "_ssl_context", lambda: loaded.append(1))
    with segment.build_client(tls=False) as client:
        ctx = client._transport.inner._pool._ssl_context  # type: ignore[attr-defined]
    assert loaded == []
    # Nothing is trusted: an https request through it fails verification.
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0


def test_send_to_an_http_endpoint_asks_for_a_plain_client(enabled, tmp_path, monkeypatch):
    asked = []
    real = segment.build_client

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs.get("tls"))
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, "build_client", spy)
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps(enrollment(1)) + "\n")
    doc = backfill.send("default", str(src), failed_file=tmp_path / "f.jsonl")
    assert doc["sent"] == 1 and asked == [False] * 4  # a client for each sender thread


# CSV ------------------------------------------------------------------------------------

csv_value = st.sampled_from(["exp_1", "Exp, 1", 'say "hi"', "two\nlines", "cr\r\nlf", "é☃",
                             "", " ", "u1", "a1", "2024-05-01T12:00:00Z", "bad-time"])


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    import csv as csvmod

    names = draw(st.permutations(FIELDS))
    if draw(st.booleans()):
        names = [n for n in names if n != "anonymous_id"]
    out = io.StringIO()
    writer = csvmod.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(names)
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            out.write("\n")  # a blank line
        elif kind == 1:
            writer.writerow(["x"] * draw(st.integers(1, 9)))  # a wrong field count
        else:
            good = {"experiment_id": "exp_1", "experiment_name": "Exp 1", "variation_id": "v",
                    "variation_name": "V", "user_id": f"u{kind}", "anonymous_id": "",
                    "timestamp": "2024-05-01T12:00:00.000Z"}
            if draw(st.booleans()):
                good[draw(st.sampled_from(FIELDS))] = draw(csv_value)
            writer.writerow([good[n] for n in names])
    return out.getvalue().encode()


def csv_reference(data: bytes) -> tuple[list[bytes], list[tuple[int, str]]]:
    """The plain way: csv.reader over the whole text, each row through MessageBuilder.build."""
    import csv as csvmod

    reader = csvmod.reader(io.StringIO(data.decode(), newline=""))
    names = [h.strip().lower() for h in next(reader)]
    builder = backfill.MessageBuilder("proj")
    messages, problems, last = [], [], reader.line_num
    for row in reader:
        line, last = last + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(names):
            problems.append((line, f"has {len(row)} fields; the header has {len(names)}"))
            continue
        try:
            messages.append(builder.build(dict(zip(names, row, strict=True))))
        except backfill.BadRecord as exc:
            problems.append((line, str(exc)))
    return messages, problems


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=csv_file(), chunk=st.integers(1, 300))
def test_csv_in_chunks_gives_what_csv_reader_row_by_row_gives(data, chunk):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backfill, "CHUNK_BYTES", chunk)
        messages, problems = [], []
        for part in backfill.parts(io.BytesIO(data), "csv", backfill.MessageBuilder("proj"),
                                   strict=False):
            messages += part.messages
            problems += part.problems
    assert (messages, problems) == csv_reference(data)
