"""`avsb segment validate` and `enable --validate` against the fake Segment.

The fake plays both roles: the settings CDN (which knows a key, and its
workspace's region) and the tracking API (which accepts any non-empty key).
"""

from __future__ import annotations

import base64
import json
import tomllib

import keyring
import keyring.backends.fail
import pytest

from avsb_cli import keystore
from avsb_cli import segment as seg
from avsb_cli.errors import ExitCode
from tests.conftest import KEY, KEY2
from tests.support.fakesegment import closed_port_url

NAMES = ["key_format", "key_known", "region", "delivery"]
ENABLE = ("integrations", "segment", "enable")
ITEM = ("avsb", "segment:default")


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(seg, "_sleep", lambda s: None)


def validate(cli, *args):
    return cli("segment", "validate", *args)


def checks_of(r) -> dict[str, dict]:
    doc = r.json()
    assert [c["name"] for c in doc["checks"]] == NAMES
    return {c["name"]: c for c in doc["checks"]}


def stored(config_dir) -> dict:
    path = config_dir / "config.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("avsb: error: "), r.stderr
    return lines[0]


# All good -------------------------------------------------------------------------------------


def test_all_checks_pass(cli, enabled):
    r = validate(cli, "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["ok"] is True and doc["delivery_probe"] == "empty batch"
    assert {c["status"] for c in doc["checks"]} == {"pass"}
    assert all(c["fix"] == "" for c in doc["checks"])
    assert doc["region"] == "us" and doc["endpoint"] == enabled.url
    assert doc["key_masked"] == "…" + KEY[-4:] and doc["key_source"] == "keyring"
    assert doc["recorded"] is True
    assert KEY not in r.output and r.stderr == ""


def test_the_probe_is_an_empty_batch_that_adds_no_event(cli, enabled):
    r = validate(cli, "--json")
    assert r.exit_code == 0, r.output
    cdn, probe = enabled.requests
    assert (cdn.method, cdn.path) == ("GET", f"/v1/projects/{KEY}/settings")
    assert "authorization" not in cdn.headers
    assert (probe.method, probe.path, probe.json) == ("POST", "/v1/batch", {"batch": []})
    assert probe.headers["authorization"] == "Basic " + base64.b64encode(
        f"{KEY}:".encode()).decode()
    assert enabled.events == []


def test_send_event_sends_one_real_event(cli, enabled):
    r = validate(cli, "--send-event", "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["delivery_probe"] == "event"
    [ev] = enabled.events
    assert ev["event"] == "avsb_experiment" and ev["type"] == "track"
    assert set(ev["properties"]) == {"experiment_id", "experiment_name", "variation_id",
                                     "variation_name", "event_name"}
    assert ev["messageId"] == doc["message_id"] and ev["anonymousId"] == doc["anonymous_id"]
    assert "sentAt" in ev and [r.path for r in enabled.requests][-1] == "/v1/track"
    assert doc["message_id"] in checks_of(r)["delivery"]["detail"]


def test_people_output(cli, enabled):
    r = validate(cli)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("PASS") == 4
    assert "All checks passed (delivery probed with an empty batch: no event added)." in r.stdout
    assert KEY not in r.output and KEY[-4:] in r.stdout


def test_integrations_segment_validate_is_the_same(cli, enabled):
    r = cli("integrations", "segment", "validate", "--json")
    assert r.exit_code == 0, r.output
    assert [c["status"] for c in r.json()["checks"]] == ["pass"] * 4


def test_env_key_without_config_is_checked_but_not_recorded(cli, segment, monkeypatch,
                                                            config_dir):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    r = validate(cli, "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["key_source"] == "env" and r.json()["recorded"] is False
    assert stored(config_dir) == {}


# The outcome is kept and shown ---------------------------------------------------------------


def test_outcome_and_time_are_stored_and_shown_by_status(cli, enabled, config_dir):
    doc = validate(cli, "--json").json()
    v = stored(config_dir)["projects"]["default"]["segment"]["validation"]
    assert v["ok"] is True and v["checked_at"] == doc["checked_at"] and v["failed"] == []
    assert v["key_fingerprint"].startswith("sha256:") and KEY not in json.dumps(v)
    st = cli("integrations", "segment", "status", "--json").json()
    assert st["last_validation"] == v
    people = cli("integrations", "segment", "status").stdout
    assert f"passed at {doc['checked_at']}" in people


def test_a_failure_is_stored_and_shown_too(cli, enabled, config_dir):
    enabled.keys.clear()  # Segment forgot the source
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    v = cli("integrations", "segment", "status", "--json").json()["last_validation"]
    assert v["ok"] is False and v["failed"] == ["key_known"]
    assert v["checked_at"] == r.json()["checked_at"]
    assert "FAILED: key_known at" in cli("integrations", "segment", "status").stdout


def test_another_key_from_the_env_does_not_overwrite_the_outcome(cli, enabled, monkeypatch):
    validate(cli)
    before = cli("integrations", "segment", "status", "--json").json()["last_validation"]
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY2)  # unknown to Segment
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED and r.json()["recorded"] is False
    after = cli("integrations", "segment", "status", "--json").json()["last_validation"]
    assert after == before and after["ok"] is True
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)  # the stored key, from the env
    assert validate(cli, "--json").json()["recorded"] is True


def test_a_new_key_clears_the_old_outcome(cli, enabled):
    validate(cli)
    cli(*ENABLE, "--write-key-stdin", input=KEY2)
    assert cli("integrations", "segment", "status", "--json").json()["last_validation"] is None


# Failures, each with its fix -----------------------------------------------------------------


def test_unknown_key(cli, segment, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY2)  # the fake knows only KEY
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED, r.output
    doc = r.json()
    assert doc["ok"] is False
    c = checks_of(r)
    assert c["key_format"]["status"] == "pass"
    assert c["key_known"]["status"] == "fail"
    assert "404" in c["key_known"]["detail"]
    assert "no source with this key" in c["key_known"]["detail"]
    assert "Connections > Sources" in c["key_known"]["fix"]
    assert c["region"]["status"] == "skip"
    assert c["delivery"]["status"] == "pass"  # the edge takes any key: why the CDN matters
    line = error_line(r)
    assert "validation failed: Segment knows the write key" in line and "Connections" in line
    assert KEY2 not in r.output


def test_unknown_key_people_output(cli, segment, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY2)
    r = validate(cli)
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert "FAIL" in r.stdout and "skip" in r.stdout and "Connections > Sources" in r.stdout
    assert "All checks passed" not in r.stdout
    assert r.stderr.startswith("avsb: error: validation failed")


def test_eu_key_with_the_us_region(cli, segment, monkeypatch):
    segment.add_key(KEY2, "eu")
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY2)
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED, r.output
    c = checks_of(r)
    assert c["key_known"]["status"] == "pass"
    assert c["region"]["status"] == "fail"
    assert "EU" in c["region"]["detail"] and "events.eu1.segmentapis.com" in c["region"]["detail"]
    assert "--region eu" in c["region"]["fix"]
    assert "--region eu" in error_line(r)
    # Checked against the region it really is in, it passes.
    r = validate(cli, "--region", "eu", "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["region"] == "eu"


def test_us_key_with_the_eu_region(cli, enabled):
    cli(*ENABLE, "--region", "eu")
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert "--region us" in checks_of(r)["region"]["fix"]


def test_custom_endpoint_still_checks_the_region(cli, segment, monkeypatch):
    # A proxy on a custom domain forwards to one region's host: the CDN still
    # says which region the workspace is in, and it must match.
    monkeypatch.delenv("AVSB_SEGMENT_ENDPOINT")
    segment.add_key(KEY2, "eu")
    r = cli(*ENABLE, "--write-key-stdin", "--endpoint", f"{segment.url}/v1", input=KEY2)
    assert r.exit_code == 0, r.output
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED, r.output
    assert r.json()["endpoint"] == segment.url
    c = checks_of(r)
    assert c["region"]["status"] == "fail" and "--region eu" in c["region"]["fix"]
    assert c["delivery"]["status"] == "pass"
    assert segment.paths()[-1] == "/v1/batch"  # the probe went to the proxy
    r = cli(*ENABLE, "--region", "eu")
    assert r.exit_code == 0, r.output
    r = validate(cli, "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["endpoint"] == segment.url  # --region did not replace the proxy


def test_no_key_fails_the_first_check_with_the_fix(cli, segment):
    r = cli(*ENABLE, "--auto-detect")
    assert r.exit_code == 0, r.output
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.NOT_CONFIGURED
    assert r.json()["key_state"] == "none"
    c = checks_of(r)
    assert c["key_format"]["status"] == "fail" and "auto-detect" in c["key_format"]["detail"]
    assert "--write-key-stdin" in c["key_format"]["fix"]
    assert [c[n]["status"] for n in NAMES[1:]] == ["skip"] * 3
    assert segment.requests == []


@pytest.mark.parametrize("situation", ["never enabled", "auto-detect", "key gone"])
def test_no_usable_key_is_not_configured_for_validate_and_test_event_alike(
        cli, segment, memory_keyring, situation):
    if situation == "auto-detect":
        assert cli(*ENABLE, "--auto-detect").exit_code == 0
    elif situation == "key gone":
        assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
        memory_keyring.items.clear()
    for command in ("validate", "test-event"):
        r = cli("segment", command, "--json")
        assert r.exit_code == ExitCode.NOT_CONFIGURED, (command, r.output)
        assert "--write-key-stdin" in r.stderr or "enable" in r.stderr
    assert segment.requests == []


def test_keyring_unavailable_gives_the_keyrings_ways_out(cli, enabled):
    keyring.set_keyring(keyring.backends.fail.Keyring())
    keystore.reset()
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    c = checks_of(r)["key_format"]
    assert c["status"] == "fail" and "keyring" in c["detail"]
    assert "--insecure-storage" in c["fix"] and "AVSB_SEGMENT_WRITE_KEY" in c["fix"]


def test_delivery_refused(cli, enabled):
    enabled.fault("/v1/batch", status=400,
                  body=b'{"success":false,"message":"An invalid write key was provided"}')
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    c = checks_of(r)["delivery"]
    assert c["status"] == "fail" and "HTTP 400: An invalid write key was provided" in c["detail"]


def test_cdn_unreachable(cli, enabled, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_CDN_URL", closed_port_url())
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    c = checks_of(r)
    assert c["key_known"]["status"] == "fail" and "refused" in c["key_known"]["detail"]
    assert c["key_known"]["fix"]
    assert c["delivery"]["status"] == "pass"


def test_slow_cdn_gets_half_the_timeout_and_the_probe_the_rest(cli, enabled, monkeypatch):
    # --timeout bounds the whole validation, not each of its requests.
    monkeypatch.setenv("AVSB_TIMEOUT", "1")
    enabled.fault(f"/v1/projects/{KEY}/settings", delay=0.8)
    r = validate(cli, "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    c = checks_of(r)
    assert "timed out" in c["key_known"]["detail"] and "after 1 attempt" in c["key_known"]["detail"]
    assert c["delivery"]["status"] == "pass"
    assert enabled.wait_idle()


def test_run_checks_share_one_deadline(monkeypatch):
    import httpx

    now = [100.0]
    monkeypatch.setattr(seg, "_clock", lambda: now[0])
    timeouts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        if request.url.path.endswith("/settings"):
            now[0] += 3.0  # a slow CDN
            return httpx.Response(200, json={"integrations": {"Segment.io": {
                "apiHost": "api.segment.io/v1"}}})
        return httpx.Response(200, json={"success": True})

    policy = seg.Policy(deadline=8.0)
    with seg.build_client(httpx.MockTransport(handler), policy=policy) as client:
        checks = seg.run_checks(client, key=KEY, key_problem=None, region="us",
                                tracking="https://api.segment.io", cdn="https://cdn.segment.com",
                                policy=policy)
    assert [c.ok for c in checks] == [True] * 4
    assert timeouts == [4.0, 5.0]  # half of 8 for the CDN; 8 - 3 spent for the probe


def test_the_cdn_is_retried_like_the_api(cli, enabled):
    enabled.fault(f"/v1/projects/{KEY}/settings", status=503, times=2)
    r = validate(cli, "--json")
    assert r.exit_code == 0, r.output
    assert enabled.paths().count(f"/v1/projects/{KEY}/settings") == 3


# enable --validate ------------------------------------------------------------------------------


def test_enable_validate_refuses_an_unknown_key(cli, segment, memory_keyring, config_dir):
    r = cli(*ENABLE, "--validate", "--write-key-stdin", input=KEY2)
    assert r.exit_code == ExitCode.VALIDATION_FAILED, r.output
    line = error_line(r)
    assert "key not stored" in line and "Segment knows the write key" in line
    assert memory_keyring.items == {}
    assert stored(config_dir) == {}
    assert KEY2 not in r.output


def test_enable_validate_refusal_keeps_the_old_key(cli, enabled, memory_keyring, config_dir):
    before = stored(config_dir)
    r = cli(*ENABLE, "--validate", "--write-key-stdin", "--json", input=KEY2)
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert r.json()["error"]["code"] == "validation_failed"
    assert memory_keyring.items[ITEM] == KEY
    assert stored(config_dir) == before


def test_enable_validate_accepts_a_known_key_and_records_it(cli, segment, memory_keyring):
    r = cli(*ENABLE, "--validate", "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[ITEM] == KEY
    doc = r.json()
    assert doc["enabled"] is True and doc["mode"] == "write-key"
    assert doc["last_validation"]["ok"] is True
    assert segment.paths() == [f"/v1/projects/{KEY}/settings", "/v1/batch"]
    assert segment.events == []


def test_enable_validate_refuses_the_wrong_region(cli, segment, memory_keyring):
    segment.add_key(KEY2, "eu")
    r = cli(*ENABLE, "--validate", "--write-key-stdin", input=KEY2)
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert "--region eu" in error_line(r) and memory_keyring.items == {}
    r = cli(*ENABLE, "--validate", "--region", "eu", "--write-key-stdin", input=KEY2)
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[ITEM] == KEY2


def test_enable_validate_without_a_new_key_checks_the_stored_one(cli, enabled):
    enabled.requests.clear()
    r = cli(*ENABLE, "--validate", "--no-input", "--json")
    assert r.exit_code == 0, r.output
    assert enabled.paths()[0] == f"/v1/projects/{KEY}/settings"
    assert r.json()["last_validation"]["ok"] is True


def test_enable_validate_with_nothing_to_check_is_a_usage_error(cli, segment, config_dir):
    r = cli(*ENABLE, "--validate", "--auto-detect")
    assert r.exit_code == ExitCode.USAGE
    assert "--validate needs a write key" in error_line(r)
    assert stored(config_dir) == {} and segment.requests == []
