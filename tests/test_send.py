"""`avsb segment send`: backfilling enrollments through /v1/batch.

Against the real threaded fake Segment on 127.0.0.1; the retry waits are cut
short (Policy.delay) so fault tests stay fast, the rest is the real code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avsb_cli import backfill, segment
from avsb_cli.errors import ExitCode, Interrupted
from tests.conftest import KEY


def enrollment(i: int, **over: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "experiment_id": f"exp_{i % 3}",
        "experiment_name": f"Experiment {i % 3}",
        "variation_id": f"var_{i % 2}",
        "variation_name": "Variation B" if i % 2 else "Control",
        "timestamp": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
    }
    if i % 2:
        rec["user_id"] = f"user-{i}"
    else:
        rec["anonymous_id"] = f"anon-{i}"
    rec.update(over)
    return rec


def write_jsonl(path: Path, recs: list[dict[str, object]] | range, *, bom: bool = False,
                crlf: bool = False) -> Path:
    rows = [enrollment(r) if isinstance(r, int) else r for r in recs]
    end = "\r\n" if crlf else "\n"
    text = "".join(json.dumps(r) + end for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch, tmp_path):
    monkeypatch.setattr(segment.Policy, "delay", lambda self, retry: 0.01)
    monkeypatch.chdir(tmp_path)  # the default failed-events file lands here


def batch_requests(server) -> list:
    return [r for r in server.requests if r.path == "/v1/batch"]


# The happy path and deduplication ---------------------------------------------------


def test_send_jsonl_then_resend_sends_the_same_message_ids(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(40))
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert (doc["read"], doc["sent"], doc["skipped"], doc["failed"]) == (40, 40, 0, 0)
    first = [e["messageId"] for e in enabled.events]
    assert len(set(first)) == 40
    assert all(m.startswith("avsb-") and len(m) < 100 for m in first)

    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    second = [e["messageId"] for e in enabled.events[40:]]
    assert second == first  # Segment deduplicates the re-run
    assert len(enabled.unique_events) == 40
    assert KEY not in r.output


def test_request_is_gzip_batch_with_basic_auth_and_sent_at(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(3))
    assert cli("segment", "send", str(src)).exit_code == 0
    (req,) = batch_requests(enabled)
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["content-type"] == "application/json"
    assert req.write_key == KEY
    assert set(req.json) == {"batch", "sentAt"}
    assert req.json["sentAt"].endswith("Z")


def test_each_event_is_the_snippet_event_with_the_enrollment_timestamp(cli, enabled, tmp_path):
    rec = enrollment(1, timestamp="2024-05-01T14:30:00+02:00")
    src = write_jsonl(tmp_path / "e.jsonl", [rec])
    assert cli("segment", "send", str(src)).exit_code == 0
    (event,) = enabled.events
    expected = segment.experiment_event(
        experiment_id="exp_1", experiment_name="Experiment 1", variation_id="var_1",
        variation_name="Variation B", user_id="user-1", timestamp="2024-05-01T12:30:00.000Z",
        message_id=backfill.message_id("default", "exp_1", "var_1", "user-1", None,
                                       "2024-05-01T12:30:00.000Z"),
    )
    assert event == expected
    assert event["properties"]["event_name"] == "experiment_viewed"


def test_message_id_depends_on_project_and_on_user_versus_anonymous():
    ts = "2024-05-01T12:00:00.000Z"
    a = backfill.message_id("default", "e", "v", "x", None, ts)
    assert a == backfill.message_id("default", "e", "v", "x", None, ts)
    assert a != backfill.message_id("shop", "e", "v", "x", None, ts)
    assert a != backfill.message_id("default", "e", "v", None, "x", ts)
    assert a != backfill.message_id("default", "e", "v2", "x", None, ts)
    assert len(a) == 69


text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: not s.isspace()
)
token_text = st.sampled_from(["\ue000m\ue001", "a\u2028b", "\x7f", '"', "\\", "%s", "%", "a\nb"])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.tuples(text | token_text, text | token_text, text, text),
    st.one_of(st.none(), text | token_text),
    st.one_of(st.none(), text),
)
def test_builder_output_is_exactly_what_experiment_event_encodes(fields, uid, aid):
    if not (uid or aid):
        aid = "anon"
    eid, ename, vid, vname = fields
    rec = {"experiment_id": eid, "experiment_name": ename, "variation_id": vid,
           "variation_name": vname, "user_id": uid, "anonymous_id": aid,
           "timestamp": "2024-05-01T12:00:00.000Z"}
    builder = backfill.MessageBuilder("p")
    got = builder.build(rec)
    got_again = builder.build(rec)  # from the cached template
    mid = backfill.message_id("p", eid, vid, uid, aid, rec["timestamp"])
    expected = segment.encode(segment.experiment_event(
        experiment_id=eid, experiment_name=ename, variation_id=vid, variation_name=vname,
        user_id=uid, anonymous_id=aid, timestamp=rec["timestamp"], message_id=mid,
    ))
    assert got == expected == got_again


@pytest.mark.parametrize("raw, normal", [
    ("2024-05-01T12:00:00.000Z", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01 14:00:00+02:00", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01T07:00:00.5-05:00", "2024-05-01T12:00:00.500Z"),
    ("2024-05-01T12:00:00.123456Z", "2024-05-01T12:00:00.123456Z"),
])
def test_timestamps_are_normalised_to_utc_with_z(raw, normal):
    assert backfill.normalise_timestamp(raw) == normal


@pytest.mark.parametrize("raw, why", [
    ("2024-05-01T12:00:00", "no time zone"),
    ("2024-05-01", "no time zone"),
    ("yesterday", "not ISO-8601"),
    ("2024-13-01T12:00:00Z", "not ISO-8601"),
    (1714564800, "must be an ISO-8601 string"),
])
def test_bad_timestamps_are_refused(raw, why):
    with pytest.raises(backfill.BadRecord, match=why):
        backfill.normalise_timestamp(raw)


def test_impossible_date_in_canonical_form_is_refused():
    with pytest.raises(backfill.BadRecord, match="not a valid date"):
        backfill.MessageBuilder("p").build(enrollment(1, timestamp="2024-02-30T12:00:00.000Z"))


# Batches ------------------------------------------------------------------------------


def test_batches_hold_at_most_max_batch_events(cli, enabled, tmp_path, monkeypatch):
    # A real event is over 300 bytes, so 450 KB binds before 2,000 events;
    # the count cap is checked with a smaller one.
    monkeypatch.setattr(backfill, "MAX_BATCH_EVENTS", 100)
    src = write_jsonl(tmp_path / "e.jsonl", range(250))
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    sizes = sorted(len(req.json["batch"]) for req in batch_requests(enabled))
    assert sizes == [50, 100, 100]
    assert r.json()["batches"] == 3


def test_full_batches_of_real_events_stay_under_both_limits(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(2500))
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    reqs = batch_requests(enabled)
    assert sum(len(q.json["batch"]) for q in reqs) == 2500
    assert all(len(q.json["batch"]) <= 2000 and len(q.body) <= 450_000 for q in reqs)
    assert max(len(q.body) for q in reqs) > 400_000  # batches are filled, not tiny


def test_batches_stay_under_450_kb_of_raw_json(cli, enabled, tmp_path):
    big = "x" * 9000  # about 9 KB per event: about 50 fit in a batch
    src = write_jsonl(tmp_path / "e.jsonl",
                      [enrollment(i, experiment_name=f"{big}{i}") for i in range(160)])
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    reqs = batch_requests(enabled)
    assert len(reqs) >= 3
    assert all(len(req.body) <= backfill.MAX_BATCH_BYTES for req in reqs)
    assert sum(len(req.json["batch"]) for req in reqs) == 160


def test_oversized_event_is_a_bad_line_not_a_failed_batch(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl",
                      [enrollment(0), enrollment(1, variation_name="y" * 40_000), enrollment(2)])
    r = cli("segment", "send", str(src))
    assert r.exit_code == ExitCode.INPUT
    assert "line 2: the event would be" in r.stderr
    assert len(enabled.events) == 2


# Bad lines ------------------------------------------------------------------------------


def test_bad_lines_are_reported_with_numbers_and_skipped(cli, enabled, tmp_path):
    src = tmp_path / "e.jsonl"
    lines = [
        json.dumps(enrollment(0)),                       # 1 ok
        "{not json",                                     # 2
        "",                                              # 3 blank: ignored
        json.dumps([enrollment(1)]),                     # 4 an array
        json.dumps(enrollment(2, timestamp="2024-05-01T12:00:00")),  # 5 no zone
        json.dumps({k: v for k, v in enrollment(3).items() if k != "user_id"}),  # 6 no id
        json.dumps(enrollment(4, experiment_id=7.5)),    # 7 wrong type
        json.dumps(enrollment(5, userId="u")),           # 8 ok, unknown field ignored
        json.dumps(enrollment(6, user_id=42, anonymous_id="")),  # 9 ok, numeric id
    ]
    src.write_text("\n".join(lines) + "\n")
    r = cli("segment", "send", str(src))
    assert r.exit_code == ExitCode.INPUT, r.output
    for n, what in [(2, "not valid JSON"), (4, "is an array"), (5, "no time zone"),
                    (6, "no user_id or anonymous_id"), (7, "experiment_id must be a string")]:
        (said,) = [x for x in r.stderr.splitlines() if x.startswith(f"avsb: warning: line {n}: ")]
        assert what in said
    assert "line 3" not in r.stderr and "line 8" not in r.stderr
    assert "5 bad lines skipped" in r.stderr
    assert [e.get("userId") or e.get("anonymousId") for e in enabled.events] == [
        "anon-0", "user-5", "42"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_timestamps_padded_or_out_of_range_in_utc(cli, enabled, tmp_path, fmt):
    """A timestamp with spaces around it is taken (fromisoformat alone would not); one
    that leaves datetime's range once in UTC is a bad line, not a crash."""
    recs = [enrollment(0, timestamp=" 2024-05-01T14:00:00+02:00 "),
            enrollment(1, timestamp="0001-01-01T00:30:00+01:00"),
            enrollment(2, timestamp="9999-12-31T23:30:00-01:00"),
            enrollment(3)]
    src = tmp_path / f"e.{fmt}"
    if fmt == "jsonl":
        write_jsonl(src, recs)
    else:
        names = list(enrollment(1)) + ["anonymous_id"]
        src.write_text(",".join(names) + "\n" + "".join(
            ",".join(str(r.get(n, "")) for n in names) + "\n" for r in recs))
    doc = cli("segment", "send", str(src), "--json").json()
    assert [b["line"] for b in doc["bad_lines"]] == ([2, 3] if fmt == "jsonl" else [3, 4])
    assert all("out of range in UTC" in b["error"] for b in doc["bad_lines"])
    assert [e["timestamp"] for e in enabled.events] == ["2024-05-01T12:00:00.000Z",
                                                        "2024-05-01T12:00:03.000Z"]


def test_missing_id_names_the_unknown_fields(cli, enabled, tmp_path):
    rec = {k: v for k, v in enrollment(1).items() if k != "user_id"} | {"userId": "u1"}
    src = write_jsonl(tmp_path / "e.jsonl", [rec])
    r = cli("segment", "send", str(src))
    assert "line 1: no user_id or anonymous_id (unknown fields: userId)" in r.stderr


def test_printed_bad_lines_are_capped_but_all_counted(cli, enabled, tmp_path):
    src = tmp_path / "e.jsonl"
    src.write_text("".join("oops\n" for _ in range(30)) + json.dumps(enrollment(0)) + "\n")
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == ExitCode.INPUT
    doc = r.json()
    assert doc["skipped"] == 30 and len(doc["bad_lines"]) == backfill.BAD_LINES_KEPT
    assert doc["bad_lines"][0] == {"line": 1, "error": doc["bad_lines"][0]["error"]}
    assert doc["sent"] == 1
    r = cli("segment", "send", str(src))
    assert r.stderr.count("avsb: warning: line ") == backfill.BAD_LINES_KEPT
    assert "... and 10 more bad lines" in r.stderr


def test_strict_stops_at_the_first_bad_line_and_sends_nothing_more(cli, enabled, tmp_path):
    src = tmp_path / "e.jsonl"
    good = [json.dumps(enrollment(i)) for i in range(6000)]
    src.write_text("\n".join(good[:5000] + ["oops"] + good[5000:]) + "\n")
    r = cli("segment", "send", str(src), "--strict", "--json")
    assert r.exit_code == ExitCode.INPUT
    doc = r.json()
    assert doc["stopped_at_line"] == 5001 and doc["skipped"] == 1
    assert doc["sent"] + doc["unsent"] == 5000 and doc["failed"] == 0
    after = {backfill.MessageBuilder("default").build(enrollment(i)) for i in range(5000, 6000)}
    after_ids = {json.loads(m)["messageId"] for m in after}
    assert not after_ids & set(enabled.unique_events)
    assert len(enabled.events) == doc["sent"]
    assert "stopped at line 5001 (--strict)" in r.stderr
    assert not list(tmp_path.glob("avsb-failed-*"))


def test_strict_with_an_early_bad_line_sends_nothing(cli, enabled, tmp_path):
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps(enrollment(0)) + "\n{\n" + json.dumps(enrollment(1)) + "\n")
    r = cli("segment", "send", str(src), "--strict")
    assert r.exit_code == ExitCode.INPUT
    assert batch_requests(enabled) == []


# Input forms -----------------------------------------------------------------------------


def test_bom_and_crlf_jsonl(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(5), bom=True, crlf=True)
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["sent"] == 5


CSV_HEADER = ("experiment_id,experiment_name,variation_id,variation_name,user_id,anonymous_id,"
              "timestamp")


def test_csv_with_bom_crlf_quoted_fields_and_line_numbers(cli, enabled, tmp_path):
    rows = [
        CSV_HEADER,
        'exp_1,"Hero, the test",var_1,B,u1,,2024-05-01T12:00:00Z',            # line 2
        'exp_1,"Two\r\nlines",var_1,B,,a2,2024-05-01T12:00:01Z',               # lines 3-4
        "exp_1,Hero,var_1,B,u3,,not-a-time",                                    # line 5
        "exp_1,Hero,var_1,B,u4,,2024-05-01T12:00:02Z,extra",                    # line 6
        "",                                                                     # line 7
        "exp_1,Hero,var_1,B,u5,,2024-05-01T12:00:03Z",                          # line 8
    ]
    src = tmp_path / "e.csv"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == ExitCode.INPUT, r.output
    doc = r.json()
    assert doc["format"] == "csv"
    assert [(b["line"], b["error"][:12]) for b in doc["bad_lines"]] == [
        (5, "timestamp 'n"), (6, "has 8 fields")]
    events = enabled.events
    assert [e["properties"]["experiment_name"] for e in events] == [
        "Hero, the test", "Two\r\nlines", "Hero"]
    assert events[1]["anonymousId"] == "a2" and "userId" not in events[1]
    assert events[0]["timestamp"] == "2024-05-01T12:00:00.000Z"


def test_csv_header_without_a_needed_column_is_refused(cli, enabled, tmp_path):
    src = tmp_path / "e.csv"
    src.write_text("experiment_id,variation_id,user_id\nexp,var,u\n")
    r = cli("segment", "send", str(src))
    assert r.exit_code == ExitCode.INPUT
    assert "the CSV header (line 1) has no column experiment_name, variation_name, timestamp" \
        in r.stderr
    assert batch_requests(enabled) == []


def test_csv_and_jsonl_of_the_same_enrollments_send_the_same_events(cli, enabled, tmp_path):
    recs = [enrollment(i) for i in range(4)]
    write_jsonl(tmp_path / "e.jsonl", recs)
    csv_text = CSV_HEADER + "\n" + "".join(
        ",".join(str(r.get(f, "")) for f in CSV_HEADER.split(",")) + "\n" for r in recs)
    (tmp_path / "e.csv").write_text(csv_text)
    assert cli("segment", "send", str(tmp_path / "e.jsonl")).exit_code == 0
    assert cli("segment", "send", str(tmp_path / "e.csv")).exit_code == 0
    assert enabled.events[:4] == enabled.events[4:]


def test_stdin_jsonl_and_sniffed_csv(cli, enabled, tmp_path):
    text = "".join(json.dumps(enrollment(i)) + "\n" for i in range(3))
    r = cli("segment", "send", "-", "--json", input=text)
    assert r.exit_code == 0, r.output
    assert (r.json()["format"], r.json()["sent"]) == ("jsonl", 3)
    csv_text = CSV_HEADER + "\nexp_1,Hero,var_1,B,u1,,2024-05-01T12:00:00Z\n"
    r = cli("segment", "send", "-", "--json", input=csv_text)
    assert r.exit_code == 0, r.output
    assert (r.json()["format"], r.json()["sent"]) == ("csv", 1)


def test_format_option_overrides_the_extension(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "enrollments.txt", range(2))
    r = cli("segment", "send", str(src), "--format", "jsonl", "--json")
    assert r.exit_code == 0 and r.json()["sent"] == 2
    r = cli("segment", "send", str(src), "--format", "csv")
    assert r.exit_code == ExitCode.INPUT  # a JSON line is no CSV header


def test_missing_file_is_an_input_error(cli, enabled, tmp_path):
    r = cli("segment", "send", str(tmp_path / "nope.jsonl"), "--json")
    assert r.exit_code == ExitCode.INPUT
    assert r.json()["error"]["code"] == "input"


# Faults ----------------------------------------------------------------------------------


def test_5xx_burst_on_a_batch_is_retried_with_the_same_body(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(30))
    enabled.fault("/v1/batch", status=503, times=2)
    r = cli("segment", "send", str(src), "--concurrency", "1", "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert (doc["sent"], doc["failed"], doc["retries"]) == (30, 0, 2)
    bodies = [req.body for req in batch_requests(enabled)]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert len(enabled.unique_events) == 30


def test_dead_server_fills_the_failed_file_which_a_second_send_delivers(
    cli, enabled, tmp_path, monkeypatch
):
    monkeypatch.setenv("AVSB_TIMEOUT", "0.3")
    src = write_jsonl(tmp_path / "e.jsonl", range(9000))  # several batches
    enabled.down("/v1/batch", status=503)
    r = cli("segment", "send", str(src), "--json", "--concurrency", "1")
    assert r.exit_code == ExitCode.NETWORK, r.output
    doc = r.json()
    assert doc["sent"] == 0 and doc["failed"] == 9000 and doc["gave_up"]
    failed = Path(doc["failed_file"])
    assert failed.name.startswith("avsb-failed-") and failed.parent == Path(".")
    # The breaker: after BREAKER failed batches in a row the rest is not tried.
    tried = {q.json["batch"][0]["messageId"] for q in batch_requests(enabled)}
    assert len(tried) == backfill.BREAKER < doc["batches"]
    assert "send them again with: avsb segment send avsb-failed-" in r.stderr
    first = json.loads(failed.read_text().splitlines()[0])
    assert set(first) <= set(backfill.FIELDS)

    enabled.up()
    before = len(enabled.events)
    r = cli("segment", "send", str(failed), "--json")
    assert r.exit_code == 0, r.output
    resent = {e["messageId"] for e in enabled.events[before:]}
    builder = backfill.MessageBuilder("default")
    expected = {json.loads(builder.build(enrollment(i)))["messageId"] for i in range(9000)}
    assert resent == expected  # the same messageIds as a first-time send


def test_refused_batch_goes_to_the_failed_file_and_the_rest_is_sent(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(4000))
    enabled.fault("/v1/batch", status=400, body=b'{"message":"Exceed payload limit"}')
    out = tmp_path / "failed.jsonl"
    r = cli("segment", "send", str(src), "--failed-file", str(out), "--json")
    assert r.exit_code == ExitCode.NETWORK
    doc = r.json()
    assert doc["sent"] + doc["failed"] == 4000 and doc["failed"] > 0
    assert doc["failed_file"] == str(out)
    assert len(out.read_text().splitlines()) == doc["failed"]
    assert "Exceed payload limit" in r.stderr


def test_undelivered_events_win_over_bad_lines_in_the_exit_code(cli, enabled, tmp_path):
    # Both at once: exit 6, not 8. A job that retries on 6 then sends the
    # failed-events file; an 8 would read "fix your file" and lose them.
    src = write_jsonl(tmp_path / "e.jsonl", [enrollment(0), {"experiment_id": "x"},
                                             enrollment(1)])
    enabled.fault("/v1/batch", status=400, body=b'{"message":"nope"}')
    for mode in ((), ("--json",)):
        r = cli("segment", "send", str(src), "--failed-file", str(tmp_path / "f.jsonl"),
                *mode)
        assert r.exit_code == ExitCode.NETWORK, r.output
        enabled.fault("/v1/batch", status=400, body=b'{"message":"nope"}')
    doc = r.json()
    assert doc["skipped"] == 1 and doc["failed"] == 2 and doc["sent"] == 0


def test_failed_file_must_not_be_the_input(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(2))
    r = cli("segment", "send", str(src), "--failed-file", str(src))
    assert r.exit_code == ExitCode.USAGE
    assert src.read_text().count("\n") == 2


def test_ctrl_c_keeps_what_was_read_in_the_failed_file(enabled, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "e.jsonl", range(10))
    five = b"".join(src.read_bytes().splitlines(keepends=True)[:5])
    monkeypatch.setattr(backfill, "CHUNK_BYTES", len(five))  # a chunk is five lines
    real = backfill.jsonl_chunks

    def interrupted(stream):  # type: ignore[no-untyped-def]
        chunks = real(stream)
        yield next(chunks)
        raise KeyboardInterrupt

    monkeypatch.setattr(backfill, "jsonl_chunks", interrupted)
    enabled.down("/v1/batch", status=503)
    with pytest.raises(Interrupted, match="interrupted at line 5") as info:
        backfill.send("default", str(src), failed_file=tmp_path / "f.jsonl")
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 5


# Dry run, JSON, configuration ------------------------------------------------------------


def test_dry_run_checks_and_sends_nothing(cli, segment, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(2100))
    r = cli("segment", "send", str(src), "--dry-run", "--json")  # no key needed
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["dry_run"] is True and doc["valid"] == 2100 and doc["sent"] == 0
    assert doc["batches"] == 2
    assert segment.requests == []
    r = cli("segment", "send", str(src), "--dry-run")
    assert "valid (would be sent)" in r.stdout and "2,100" in r.stdout


def test_json_summary_is_one_document_even_with_bad_lines(cli, enabled, tmp_path):
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps(enrollment(0)) + "\nbad\n")
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == ExitCode.INPUT
    doc = json.loads(r.stdout)  # exactly one document
    for field in ("read", "sent", "skipped", "failed", "batches", "seconds",
                  "events_per_second", "bad_lines", "failed_file"):
        assert field in doc
    assert (doc["read"], doc["sent"], doc["skipped"]) == (2, 1, 1)


def test_human_summary_table(cli, enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(3))
    r = cli("segment", "send", str(src))
    assert r.exit_code == 0
    for word in ("read", "sent", "skipped", "failed", "batches", "events/s"):
        assert word in r.stdout
    assert KEY not in r.output


def test_not_enabled_and_disabled_are_exit_3(cli, segment, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(1))
    assert cli("segment", "send", str(src)).exit_code == ExitCode.NOT_CONFIGURED
    cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY)
    cli("integrations", "segment", "disable")
    r = cli("segment", "send", str(src))
    assert r.exit_code == ExitCode.NOT_CONFIGURED
    assert "disabled" in r.stderr
    assert segment.requests == [] or all(q.path != "/v1/batch" for q in segment.requests)


def test_progress_callback_counts_every_sent_event(enabled, tmp_path):
    src = write_jsonl(tmp_path / "e.jsonl", range(2500))
    seen: list[tuple[int, float]] = []
    doc = backfill.send("default", str(src), progress=lambda n, rate: seen.append((n, rate)))
    assert sum(n for n, _ in seen) == doc["sent"] == 2500
    assert all(rate > 0 for _, rate in seen)


def test_reader_is_lazy():
    """The reader pulls lines as the pipeline asks: nothing reads the whole input."""
    pulled = []

    class Source(io.RawIOBase):
        def __init__(self) -> None:
            self.lines = (json.dumps(enrollment(i)).encode() + b"\n" for i in range(10**9))

        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
            line = next(self.lines)
            pulled.append(1)
            buf[: len(line)] = line
            return len(line)

    rows = backfill.read_jsonl(io.BufferedReader(Source(), buffer_size=512))
    first = [next(rows) for _ in range(3)]
    assert [n for n, _, _ in first] == [1, 2, 3]
    assert len(pulled) < 10


def test_failed_file_lines_round_trip_to_the_same_message():
    builder = backfill.MessageBuilder("default")
    for i in range(4):
        msg = builder.build(enrollment(i))
        assert builder.build(backfill.enrollment_of(msg)) == msg


def test_a_failing_progress_display_does_not_count_delivered_events_as_failed(enabled, tmp_path):
    def broken(n: int, rate: float) -> None:
        raise RuntimeError("terminal went away")

    doc = backfill.send("default", str(write_jsonl(tmp_path / "e.jsonl", range(5))),
                        progress=broken)
    assert (doc["sent"], doc["failed"], doc["failed_file"]) == (5, 0, None)


def test_messages_read_well_for_one_bad_line(cli, segment, tmp_path):
    good = {"experiment_id": "e1", "experiment_name": "E", "variation_id": "v",
            "variation_name": "V", "user_id": "u1", "timestamp": "2024-05-01T12:00:00Z"}
    f = tmp_path / "one-bad.jsonl"
    f.write_text(json.dumps(good) + '\n{"bad\tjson"}\n')
    r = cli("segment", "send", str(f), env={"AVSB_SEGMENT_WRITE_KEY": KEY})
    assert r.exit_code == 8, r.output
    assert "1 bad line skipped; the other 1 event was sent" in r.stderr
    assert "at at" not in r.stderr and "line 2: not valid JSON" in r.stderr
    r = cli("segment", "send", str(f), "--dry-run", env={"AVSB_SEGMENT_WRITE_KEY": KEY})
    assert "the other 1 event was checked" in r.stderr
    assert "check the file again" in r.stderr and "deduplicates" not in r.stderr


def test_a_dry_run_checks_the_timeout_too(cli, tmp_path, monkeypatch):
    """A dry run sends nothing, but a bad --timeout or AVSB_TIMEOUT is still an
    error there, not a surprise in the real run."""
    src = write_jsonl(tmp_path / "e.jsonl", range(2))
    r = cli("segment", "send", str(src), "--dry-run", "--timeout", "-1")
    assert r.exit_code == ExitCode.USAGE and "between 0 and 3600" in r.stderr
    monkeypatch.setenv("AVSB_TIMEOUT", "soon")
    r = cli("segment", "send", str(src), "--dry-run")
    assert r.exit_code == ExitCode.USAGE and "AVSB_TIMEOUT must be a number" in r.stderr


def test_a_dry_run_imports_no_httpx(tmp_path, config_dir):
    """A dry run builds and checks every message but sends none: the HTTP client's
    modules (httpx, httpcore) are not imported, a fifth of its start-up."""
    import subprocess
    import sys

    from tests.conftest import avsb_env

    src = write_jsonl(tmp_path / "e.jsonl", range(3))
    probe = ("import json, runpy, sys\n"
             "sys.argv = ['avsb', 'segment', 'send', sys.argv[1], '--dry-run', '--json']\n"
             "try:\n    runpy.run_module('avsb_cli', run_name='__main__')\n"
             "except SystemExit as exc:\n    code = exc.code\n"
             "mods = json.dumps(sorted(sys.modules))\n"
             "sys.stderr.write('CODE=%s MODULES=%s\\n' % (code, mods))\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(src)], env=avsb_env(),
                          capture_output=True, text=True, timeout=60)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("CODE="))
    code, modules = line.split(" MODULES=")
    assert code == "CODE=0" and json.loads(proc.stdout)["valid"] == 3
    assert not {m.split(".")[0] for m in json.loads(modules)} & {"httpx", "httpcore"}
