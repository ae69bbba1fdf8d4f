"""`avsb segment test-event` against the fake Segment on 127.0.0.1.

The payload is checked field by field against what the A vs B snippet sends:
a track of ``avsb_experiment`` whose properties are exactly the five keys.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

import pytest

from avsb_cli import __version__
from avsb_cli import segment as seg
from avsb_cli.errors import ExitCode
from tests import conftest
from tests.conftest import KEY, KEY2
from tests.support.fakesegment import FakeSegment, closed_port_url

PROPS = {"experiment_id", "experiment_name", "variation_id", "variation_name", "event_name"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def sleeps(monkeypatch):
    """Retries wait on a fake: the policy's clock moves on, no time is spent."""
    import time

    waits: list[float] = []
    monkeypatch.setattr(seg, "_sleep", waits.append)
    monkeypatch.setattr(seg, "_clock", lambda: time.monotonic() + sum(waits))
    return waits


def event(*args, cli):
    return cli("segment", "test-event", *args)


def one_error_line(r, code):
    assert KEY not in r.output
    return conftest.one_error_line(r, code)


def parse_utc(text: str) -> datetime:
    assert ISO_UTC.match(text), text
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert when.utcoffset().total_seconds() == 0
    return when


# The payload ------------------------------------------------------------------------------


def test_payload_field_by_field(cli, enabled):
    before = datetime.now(UTC)
    r = event("--experiment-id", "exp_42", "--experiment-name", "Pricing page",
              "--variation-id", "var_7", "--variation-name", "Control",
              "--user-id", "user_9", "--json", cli=cli)
    after = datetime.now(UTC)
    assert r.exit_code == 0, r.output
    doc = r.json()
    [req] = enabled.requests
    assert (req.method, req.path) == ("POST", "/v1/track")
    assert req.headers["content-type"] == "application/json"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(
        f"{KEY}:".encode()).decode()  # the key as user name, empty password
    assert req.write_key == KEY
    assert req.headers["user-agent"].startswith(f"avsb/{__version__}")
    body = req.json
    assert set(body) == {"type", "event", "messageId", "timestamp", "sentAt", "properties",
                         "context", "userId"}
    assert body["type"] == "track" and body["event"] == "avsb_experiment"
    assert body["properties"] == {
        "experiment_id": "exp_42",
        "experiment_name": "Pricing page",
        "variation_id": "var_7",
        "variation_name": "Control",
        "event_name": "experiment_viewed",
    }
    assert list(body["properties"]) == [
        "experiment_id", "experiment_name", "variation_id", "variation_name", "event_name"]
    assert body["userId"] == "user_9" and "anonymousId" not in body
    assert body["context"] == {"library": {"name": "avsb", "version": __version__}}
    assert body["messageId"] == doc["message_id"] and 0 < len(body["messageId"]) < 100
    stamp, sent = parse_utc(body["timestamp"]), parse_utc(body["sentAt"])
    slack = 0.002  # millisecond rounding
    assert before.timestamp() - slack <= stamp.timestamp() <= sent.timestamp()
    assert sent.timestamp() <= after.timestamp() + slack
    assert "writeKey" not in req.body.decode()


def test_defaults_are_the_docs_example_and_an_anonymous_id_is_generated(cli, enabled):
    r = event(cli=cli)
    assert r.exit_code == 0, r.output
    [body] = enabled.events
    assert body["properties"] == {
        "experiment_id": "exp_abc123", "experiment_name": "Homepage Hero Test",
        "variation_id": "var_xyz789", "variation_name": "Variation B",
        "event_name": "experiment_viewed",
    }
    anon = body["anonymousId"]
    assert "userId" not in body and anon.startswith("avsb-test-")
    # printed, so the user can find the event in Segment's debugger
    assert anon in r.stdout and anon in r.stderr
    assert body["messageId"] in r.stdout
    assert "HTTP status" in r.stdout and "200" in r.stdout
    assert KEY not in r.output and KEY[-4:] in r.stdout


def test_anonymous_id_option(cli, enabled):
    r = event("--anonymous-id", "anon-123", "--json", cli=cli)
    doc = r.json()
    assert doc["anonymous_id"] == "anon-123" and doc["anonymous_id_generated"] is False
    assert doc["user_id"] is None
    [body] = enabled.events
    assert body["anonymousId"] == "anon-123" and "userId" not in body


def test_generated_ids_differ_per_run(cli, enabled):
    event(cli=cli)
    event(cli=cli)
    a, b = enabled.events
    assert a["anonymousId"] != b["anonymousId"] and a["messageId"] != b["messageId"]


def test_json_document(cli, enabled):
    r = event("--json", cli=cli)
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc == {
        "project": "default",
        "dry_run": False,
        "message_id": enabled.events[0]["messageId"],
        "user_id": None,
        "anonymous_id": enabled.events[0]["anonymousId"],
        "anonymous_id_generated": True,
        "endpoint": f"{enabled.url}/v1/track",
        "status": 200,
        "attempts": 1,
        "retry_causes": [],
        "latency_ms": doc["latency_ms"],
        "key_masked": "…" + KEY[-4:],
        "key_source": "keyring",
    }
    assert isinstance(doc["latency_ms"], float) and doc["latency_ms"] >= 0
    assert r.stderr == "" and KEY not in r.output


def test_quiet_prints_nothing_but_sends(cli, enabled):
    r = event("--quiet", cli=cli)
    assert r.exit_code == 0 and r.output == ""
    assert len(enabled.events) == 1


# --dry-run ----------------------------------------------------------------------------------


def test_dry_run_prints_the_exact_payload_and_sends_nothing(cli, enabled):
    r = event("--user-id", "u1", "--dry-run", cli=cli)
    assert r.exit_code == 0, r.output
    assert enabled.requests == []
    payload = json.loads(r.stdout)
    assert set(payload) == {"type", "event", "messageId", "timestamp", "sentAt", "properties",
                            "context", "userId"}
    assert payload["event"] == "avsb_experiment" and set(payload["properties"]) == PROPS
    assert payload["context"]["library"] == {"name": "avsb", "version": __version__}
    assert f"would POST to {enabled.url}/v1/track" in r.stderr


def test_dry_run_json_needs_no_key(cli, segment):
    r = event("--dry-run", "--json", cli=cli)  # nothing configured at all
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["dry_run"] is True and doc["endpoint"] == f"{segment.url}/v1/track"
    assert doc["payload"]["messageId"] == doc["message_id"]
    assert doc["payload"]["anonymousId"] == doc["anonymous_id"]
    assert doc["anonymous_id_generated"] is True
    assert segment.requests == []


# Where the key comes from ---------------------------------------------------------------------


def test_env_key_needs_no_config(cli, segment, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    r = event("--json", cli=cli)
    assert r.exit_code == 0, r.output
    assert r.json()["key_source"] == "env"
    assert segment.requests[0].write_key == KEY


def test_env_key_wins_over_the_stored_key(cli, enabled, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY2)
    r = event("--json", cli=cli)
    assert r.exit_code == 0 and r.json()["key_source"] == "env"
    assert enabled.requests[0].write_key == KEY2


def test_disabled_integration_is_exit_3_with_what_to_do(cli, enabled):
    cli("integrations", "segment", "disable")
    line = one_error_line(event(cli=cli), ExitCode.NOT_CONFIGURED)
    assert "disabled" in line and "avsb integrations segment enable" in line
    r = event("--json", cli=cli)
    assert r.exit_code == ExitCode.NOT_CONFIGURED
    assert r.json()["error"]["code"] == "not_configured"
    assert enabled.requests == []


def test_auto_detect_without_a_key_is_exit_3(cli, segment):
    r = cli("integrations", "segment", "enable", "--auto-detect")
    assert r.exit_code == 0, r.output
    line = one_error_line(event(cli=cli), ExitCode.NOT_CONFIGURED)
    assert "auto-detect" in line
    assert "--write-key-stdin" in line and "AVSB_SEGMENT_WRITE_KEY" in line
    assert segment.requests == []


def test_never_enabled_without_a_key_is_exit_3(cli, segment):
    line = one_error_line(event("--project", "shop", cli=cli), ExitCode.NOT_CONFIGURED)
    assert "not enabled" in line and "--project shop" in line


def test_the_key_missing_from_the_keyring_is_exit_3(cli, enabled, memory_keyring):
    memory_keyring.items.clear()
    line = one_error_line(event(cli=cli), ExitCode.NOT_CONFIGURED)
    assert "missing" in line


# A bad network ----------------------------------------------------------------------------------


def test_5xx_burst_then_success_one_event_same_message_id(cli, enabled, sleeps):
    enabled.fault("/v1/track", status=502)
    enabled.fault("/v1/track", status=503, times=2)
    r = event("--json", cli=cli)
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["attempts"] == 4 and len(sleeps) == 3
    assert doc["retry_causes"] == ["HTTP 502: fault 502"] + ["HTTP 503: fault 503"] * 2
    bodies = [req.json for req in enabled.requests]
    assert [b["messageId"] for b in bodies] == [doc["message_id"]] * 4
    # Only sentAt may change between attempts; the message is the same.
    assert len({json.dumps({**b, "sentAt": None}, sort_keys=True) for b in bodies}) == 1
    assert len(enabled.events) == 1 and enabled.events[0]["messageId"] == doc["message_id"]


def test_5xx_retries_are_shown_to_people(cli, enabled, sleeps):
    enabled.fault("/v1/track", status=500)
    r = event(cli=cli)
    assert r.exit_code == 0, r.output
    assert re.search(r"attempts\s+2", r.stdout)


def test_429_retry_after_is_honoured(cli, enabled, sleeps):
    enabled.fault("/v1/track", status=429, retry_after="1")
    r = event("--json", cli=cli)
    assert r.exit_code == 0, r.output
    assert sleeps == [1.0] and r.json()["attempts"] == 2
    assert len(enabled.events) == 1


def test_400_with_a_message_is_not_retried(cli, enabled, sleeps):
    enabled.fault("/v1/track", status=400,
                  body=b'{"success":false,"message":"Exceed payload limit"}')
    line = one_error_line(event(cli=cli), ExitCode.NETWORK)
    host = enabled.url.split("//")[1]
    assert f"{host} refused the request: HTTP 400: Exceed payload limit" in line
    assert len(enabled.requests) == 1 and sleeps == [] and enabled.events == []


def test_400_under_json(cli, enabled):
    enabled.fault("/v1/track", status=400, body=b'{"message":"Invalid JSON"}')
    r = event("--json", cli=cli)
    assert r.exit_code == ExitCode.NETWORK
    err = r.json()["error"]
    assert err["code"] == "network" and "HTTP 400: Invalid JSON" in err["message"]


def test_slower_than_the_timeout(cli, enabled, monkeypatch):
    monkeypatch.setenv("AVSB_TIMEOUT", "1")
    enabled.fault("/v1/track", delay=1.2)
    line = one_error_line(event(cli=cli), ExitCode.NETWORK)
    host = enabled.url.split("//")[1]
    assert host in line and "timed out" in line and "after 1 attempt" in line
    assert enabled.wait_idle()


def test_timeout_option_beats_the_variable(cli, enabled, monkeypatch):
    monkeypatch.setenv("AVSB_TIMEOUT", "30")
    enabled.fault("/v1/track", delay=0.5)
    line = one_error_line(event("--timeout", "0.3", cli=cli), ExitCode.NETWORK)
    assert "timed out" in line
    assert enabled.wait_idle()


def test_closed_port(cli, enabled, monkeypatch, sleeps):
    url = closed_port_url()
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", url)
    line = one_error_line(event(cli=cli), ExitCode.NETWORK)
    assert url.split("//")[1] in line and "refused" in line
    # Retried with backoff until the attempts or the 5 s deadline ran out.
    assert 2 <= len(sleeps) <= seg.Policy().attempts - 1 and sum(sleeps) < 5
    assert f"after {len(sleeps) + 1} attempts" in line


def test_dns_failure(cli, enabled, monkeypatch, sleeps):
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", "https://segment.invalid")
    line = one_error_line(event(cli=cli), ExitCode.NETWORK)
    assert "segment.invalid" in line and "DNS" in line
    assert sleeps == []  # not retried


def test_redirect_to_another_host_is_not_followed(cli, enabled):
    with FakeSegment() as other:
        other.add_key(KEY)
        enabled.fault("/v1/track", status=302, location=f"{other.url}/v1/track")
        line = one_error_line(event(cli=cli), ExitCode.NETWORK)
        assert other.requests == []  # the key never reached the other host
    assert "HTTP 302" in line and "not followed" in line
    assert enabled.events == []


def test_bad_timeout_value_is_a_usage_error(cli, enabled, monkeypatch):
    monkeypatch.setenv("AVSB_TIMEOUT", "soon")
    line = one_error_line(event(cli=cli), ExitCode.USAGE)
    assert "AVSB_TIMEOUT" in line
    assert enabled.requests == []


def test_oversize_event_is_refused_before_any_request(cli, enabled):
    line = one_error_line(event("--experiment-name", "x" * 40000, cli=cli), ExitCode.USAGE)
    assert "32 KB" in line and enabled.requests == []
