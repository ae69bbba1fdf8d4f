"""The messageIds `segment send` derives are pinned: the same file gives the
same ids as every earlier release, so a re-send after an upgrade is still
deduplicated by Segment. The expected values were computed with the release
before msgspec (the hand-made builder), before any change to the builder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avsb_cli import backfill

STAMPS = ["2024-05-01T12:00:00.000Z", "2026-10-01T12:00:00Z", "2024-05-01T14:30:00+02:00",
          "2024-05-01T07:00:00.5-05:00", "2024-05-01T12:00:00.123456Z",
          "2024-05-01 12:00:00.250+00:00", "2024-12-31T23:59:59.999Z",
          "2025-01-01T01:00:00+01:00"]
FIRST_TWO = ["avsb-1ec1e4e9c256d3feee2643a9e17824dd101d826d00d8880ba717bac141614940",
             "avsb-dd67d91b23d276d717d77b3488ff65018808ab1d07b281187b88b820599ca07f"]
ALL_SHA256 = "c95ed8097967dc86a383c21d56d83d7822e731c3a6ea604bdd875318350b693b"
FIELDS = ["experiment_id", "experiment_name", "variation_id", "variation_name", "user_id",
          "anonymous_id", "timestamp"]


def records() -> list[dict[str, object]]:
    """Every timestamp form, user and anonymous ids, a numeric and a blank id, non-ASCII."""
    recs = []
    for i in range(64):
        rec: dict[str, object] = {
            "experiment_id": f"exp_{i % 3}", "experiment_name": f"Expérience {i % 3} ☃",
            "variation_id": f"var_{i % 2}",
            "variation_name": "Variation B" if i % 2 else "Control",
            "timestamp": STAMPS[i % len(STAMPS)]}
        if i % 4 == 0:
            rec["user_id"] = f"user-{i}"
        elif i % 4 == 1:
            rec["anonymous_id"] = f"anon-{i}"
        elif i % 4 == 2:
            rec["user_id"], rec["anonymous_id"] = i * 1000, "a"
        else:
            rec["user_id"], rec["anonymous_id"] = "  ", f"ä-{i}"  # a blank id is no id
        recs.append(rec)
    return recs


def as_csv(recs: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for r in recs:
        writer.writerow([r.get(f, "") for f in FIELDS])
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_message_ids_are_those_of_earlier_releases(cli, enabled, tmp_path, fmt):
    recs = records()
    src = tmp_path / f"e.{fmt}"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
                   if fmt == "jsonl" else as_csv(recs), encoding="utf-8")
    r = cli("segment", "send", str(src), "--json")
    assert r.exit_code == 0, r.output
    ids = [e["messageId"] for e in enabled.events]
    assert ids[:2] == FIRST_TWO
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == ALL_SHA256


@settings(max_examples=500, deadline=None)
@given(when=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       minutes=st.integers(-23 * 60 - 59, 23 * 60 + 59),
       spec=st.sampled_from(["seconds", "milliseconds", "microseconds", "auto"]),
       z=st.booleans(), sep=st.sampled_from(["T", " "]))
def test_every_timestamp_form_is_normalised_as_datetime_would(when, minutes, spec, z, sep):
    """normalise_timestamp (msgspec writing the UTC time, then the fraction cut to
    milliseconds) agrees with the plain formula: parse, convert to UTC, format with Z."""
    aware = when.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    text = aware.isoformat(sep=sep, timespec=spec)
    if z and minutes == 0:
        text = text.replace("+00:00", "Z")
    utc = datetime.fromisoformat(text).astimezone(UTC)  # (the text may drop digits)
    spec = "milliseconds" if utc.microsecond % 1000 == 0 else "microseconds"
    assert backfill.normalise_timestamp(text) == utc.isoformat(timespec=spec)[:-6] + "Z"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from([0, 120, -300, 330]) | st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.integers(0, 59), st.integers(0, 999_999)), min_size=1, max_size=12))
def test_a_chunk_with_many_zones_is_normalised_stamp_by_stamp(stamps):
    """utc_stamps shifts a chunk's stamps by their offsets at once: any mix of
    zones, seconds in an offset included, gives what each stamp alone gives."""
    texts = []
    for when, minutes, seconds, micros in stamps:
        offset = timedelta(minutes=minutes, seconds=seconds if micros % 3 == 0 else 0,
                           microseconds=micros if micros % 5 == 0 else 0)
        texts.append(when.replace(tzinfo=timezone(offset)).isoformat())
    utc = [datetime.fromisoformat(t).astimezone(UTC) for t in texts]
    assert backfill.build.utc_stamps(texts) == [
        u.isoformat(timespec="milliseconds" if u.microsecond % 1000 == 0 else "microseconds"
                    )[:-6] + "Z" for u in utc]
