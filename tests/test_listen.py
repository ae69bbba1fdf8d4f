"""`avsb segment listen`: the judging, Segment's answers, and the real listener over HTTP.

The judge and the request handler are pure functions tested directly; the
rest runs the real command as a process on a free loopback port and talks
HTTP to it, as a page or a server library would.
"""

from __future__ import annotations

import base64
import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from avsb_cli import listen, segment
from tests.conftest import KEY, KEY2, ROOT, avsb_env, one_error_line

GOOD = {
    "experiment_id": "exp_abc123",
    "experiment_name": "Homepage Hero Test",
    "variation_id": "var_xyz789",
    "variation_name": "Variation B",
    "event_name": "experiment_viewed",
}


def track(props=None, event="avsb_experiment", **extra):  # type: ignore[no-untyped-def]
    msg = {"type": "track", "event": event, "anonymousId": "anon-1",
           "properties": dict(GOOD) if props is None else props}
    msg.update(extra)
    return msg


# The judge -----------------------------------------------------------------------


def test_the_expected_properties_are_the_ones_test_event_sends():
    sent = segment.experiment_event(anonymous_id="a", experiment_id="e", experiment_name="n",
                                    variation_id="v", variation_name="w")
    assert set(listen.EXPECTED) == set(sent["properties"]) == set(GOOD)
    assert listen.FIXED == {"event_name": segment.EVENT_NAME}


def test_the_snippets_event_passes():
    v = listen.judge(track())
    assert v["verdict"] == "pass" and v["problems"] == []
    # What avsb segment test-event sends passes too: one definition of the event.
    sent = segment.experiment_event(user_id="u", **{k: GOOD[k] for k in list(GOOD)[:4]})
    assert listen.judge(sent)["verdict"] == "pass"


def test_missing_and_extra_properties_are_named():
    props = {k: v for k, v in GOOD.items() if k != "variation_name"} | {"color": "red"}
    v = listen.judge(track(props))
    assert v["verdict"] == "fail"
    assert v["missing"] == ["variation_name"] and v["extra"] == ["color"]
    assert v["problems"] == ["missing variation_name", "extra color"]


@pytest.mark.parametrize("sent,expected", [
    ("experiment_nme", "experiment_name"),
    ("experimentId", "experiment_id"),
    ("Variation_Name", "variation_name"),
    ("variation-id", "variation_id"),
    ("eventName", "event_name"),
])
def test_a_misspelt_property_is_named_with_what_it_should_be(sent, expected):
    props = {k: v for k, v in GOOD.items() if k != expected} | {sent: GOOD[expected]}
    v = listen.judge(track(props))
    assert v["verdict"] == "fail"
    assert v["misspelt"] == [{"got": sent, "expected": expected}]
    assert v["missing"] == [] and v["extra"] == []
    assert v["problems"] == [f"{sent} should be {expected}"]


def test_wrong_types_and_the_fixed_value_are_named():
    props = GOOD | {"experiment_id": 123, "variation_name": None,
                    "event_name": "experiment_started"}
    v = listen.judge(track(props))
    assert v["wrong_type"] == [
        {"name": "experiment_id", "got": "number", "expected": "string"},
        {"name": "variation_name", "got": "null", "expected": "string"},
    ]
    assert v["problems"] == [
        "experiment_id is a number, should be a string",
        "variation_name is a null, should be a string",
        "event_name is 'experiment_started', should be 'experiment_viewed'",
    ]


@pytest.mark.parametrize("name", ["avsb_experiments", "Avsb_Experiment", "avsb experiment",
                                  "avsbExperiment", "avsb-experiment", "avsb_experimnet"])
def test_a_near_miss_event_name_fails_and_says_so(name):
    v = listen.judge(track(event=name))
    assert v is not None and v["verdict"] == "fail"
    assert v["problems"] == [f"event name {name!r} should be 'avsb_experiment'"]


@pytest.mark.parametrize("name", ["Order Completed", "experiment_viewed", "Page Viewed",
                                  "avsb", "", None])
def test_other_events_are_not_judged(name):
    assert listen.judge(track(event=name)) is None
    assert listen.judge({"type": "page", "name": "Home"}) is None
    assert listen.judge({"type": "identify", "event": "avsb_experiment"}) is None


def test_properties_that_are_not_an_object_or_no_ids_fail():
    v = listen.judge(track(props=["x"]))
    assert v["problems"][0] == "properties is an array, should be an object"
    assert v["missing"] == list(GOOD)
    v = listen.judge({"type": "track", "event": "avsb_experiment", "properties": GOOD})
    assert v["problems"] == ["no userId or anonymousId"]


def test_the_event_record_carries_the_experiment_and_the_key_match():
    rec = listen.event_record(track(userId="u_42"), path="/v1/t", received_at="t",
                              expected_key=KEY, key=KEY2)
    assert rec["user_id"] == "u_42" and rec["experiment_id"] == "exp_abc123"
    assert rec["variation_name"] == "Variation B" and rec["verdict"] == "pass"
    assert rec["write_key_matches"] is False
    other = listen.event_record({"type": "page", "anonymousId": "a"}, path="/v1/p",
                                received_at="t")
    assert other["avsb"] is False and other["verdict"] is None
    assert "experiment_id" not in other and other["write_key_matches"] is None


# Segment's answers (pure) ----------------------------------------------------------

AUTH = {"authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
        "content-type": "application/json"}


def _handle(path, body, headers=AUTH, method="POST"):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return listen.handle(method, path, headers, raw, host="127.0.0.1:9")


def test_the_settings_answer_keeps_analytics_js_on_the_listener():
    a = _handle("/v1/projects/" + KEY + "/settings", b"", method="GET")
    doc = json.loads(a.body)
    seg = doc["integrations"]["Segment.io"]
    assert a.status == 200 and seg["apiHost"] == "127.0.0.1:9/v1" and seg["protocol"] == "http"
    assert seg["apiKey"] == KEY
    assert doc["metrics"]["sampleRate"] == 0


@pytest.mark.parametrize("path,kind", [("/v1/t", "track"), ("/v1/track", "track"),
                                       ("/v1/i", "identify"), ("/v1/p", "page")])
def test_single_calls_are_accepted_with_their_type(path, kind):
    msg = {k: v for k, v in track().items() if k != "type"}
    a = _handle(path, msg)
    assert (a.status, a.body) == (200, b'{"success":true}')
    assert a.messages[0]["type"] == kind and a.key == KEY


def test_a_batch_with_the_key_in_the_body_and_gzip():
    body = gzip.compress(json.dumps({"batch": [track(), track()], "writeKey": KEY}).encode())
    a = _handle("/v1/batch", body, {"content-type": "application/json",
                                    "content-encoding": "gzip"})
    assert a.status == 200 and len(a.messages) == 2 and a.key == KEY


@pytest.mark.parametrize("path,body,headers,status,message", [
    ("/v1/batch", b"{not json", AUTH, 400, "Invalid JSON"),
    ("/v1/batch", b"[1]", AUTH, 400, "Invalid JSON"),
    ("/v1/batch", b'{"batch": 1}', AUTH, 400, "Invalid batch"),
    ("/v1/track", json.dumps(track()).encode(), {"content-type": "application/json"}, 400,
     "An invalid write key was provided"),
    ("/v1/track", json.dumps(track()).encode(), AUTH | {"content-type": "text/html"}, 400,
     "Invalid content type"),
    ("/v1/track", json.dumps(track(GOOD | {"x": "y" * 33_000})).encode(), AUTH, 400,
     "Exceed payload limit"),
    ("/v1/batch", json.dumps({"batch": [track(GOOD | {"x": "y" * 33_000})]}).encode(), AUTH,
     400, "Exceed payload limit"),
    ("/v1/batch", json.dumps({"batch": [track()] * 3000}).encode(), AUTH, 400,
     "Exceed payload limit"),
    ("/v1/batch", b"\x1f\x8b not gzip", AUTH | {"content-encoding": "gzip"}, 400,
     "Invalid gzip body"),
    ("/v1/nope", b"{}", AUTH, 404, "Not found"),
])
def test_bad_traffic_gets_segments_answer_and_a_reason(path, body, headers, status, message):
    a = _handle(path, body, headers)
    assert a.status == status
    assert json.loads(a.body) == {"success": False, "message": message}
    assert a.reason and a.messages == []


def _keys() -> list[str]:
    """Fresh keys of the shapes a page may carry: Segment's (letters and
    digits), URL-safe base64, letters only."""
    import secrets
    import string

    return [secrets.token_hex(16), secrets.token_urlsafe(24),
            "".join(secrets.choice(string.ascii_letters) for _ in range(32)) + "Aa"]


# A key wherever a page or a script might put it in the request line.
KEY_PATHS = [
    ("GET", "/v1/projects/{k}/settings.json"),   # a settings URL gone wrong
    ("GET", "/v1/projects/{k}/settings/extra"),
    ("GET", "/v1/projects/{k}"),
    ("PUT", "/v1/projects/{k}/settings"),
    ("POST", "/v1/projects/{k}/settings"),
    ("POST", "/v1/{k}/track"),
    ("POST", "/v1/track/{k}"),
    ("POST", "/{k}"),
    ("POST", "/v1/batch?writeKey={k}"),
    ("GET", "/v1/x?key={k}&a=b"),
]


@pytest.mark.parametrize("method,path", KEY_PATHS)
@pytest.mark.parametrize("shape", range(3))
def test_a_refusal_never_echoes_a_key_in_the_path(method, path, shape):
    key = _keys()[shape]
    a = _handle(path.format(k=key), b"{oops", method=method)
    assert a.reason and a.status >= 400
    assert key not in a.reason and key[:12] not in a.reason
    assert key not in listen.shown_path(path.format(k=key))


def test_the_key_after_projects_is_masked_whatever_its_shape():
    # Lower-case, no digit: not key-shaped, but the settings path says what it is.
    assert listen.shown_path("/v1/projects/abcdefghijklmnop/settings.json") == (
        "/v1/projects/…mnop/settings.json")
    assert listen.shown_path("/v1/projects/ab%43defghijklmnop/x") == "/v1/projects/…mnop/x"
    # Names that are not keys stay readable.
    assert listen.shown_path("/v1/batch?writeKey=x") == "/v1/batch"
    assert listen.shown_path("/v1/not-a-segment-path") == "/v1/not-a-segment-path"


def test_a_refused_request_carries_its_key_to_be_masked():
    a = _handle("/v1/nope", b"{}")
    assert a.status == 404 and a.key == KEY
    a = _handle("/v1/batch", {"batch": 1, "writeKey": KEY2},
                {"content-type": "application/json"})
    assert a.reason and a.key == KEY2


def test_a_gzip_bomb_stops_at_the_batch_limit():
    body = gzip.compress(b"{" + b" " * 50_000_000 + b"}")
    a = _handle("/v1/batch", body, AUTH | {"content-encoding": "gzip"})
    assert a.status == 400 and json.loads(a.body)["message"] == "Exceed payload limit"


def test_preflight_allows_authorization_and_content_type():
    h = listen.preflight_headers({"origin": "http://page.test",
                                  "access-control-request-headers": "authorization,content-type"})
    assert h["Access-Control-Allow-Origin"] == "http://page.test"
    allowed = {x.strip() for x in h["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in h["Access-Control-Allow-Methods"]


# The real command, as a process ------------------------------------------------------


class Listening:
    """``avsb segment listen --port 0 ...`` as a process; the URL from its output."""

    def __init__(self, *args: str, json_mode: bool = True, env: dict[str, str] | None = None):
        argv = [sys.executable, "-m", "avsb_cli", "segment", "listen", "--port", "0", *args]
        if json_mode:
            argv.append("--json")
        self.json_mode = json_mode
        self.proc = subprocess.Popen(argv, env=env or avsb_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []  # the banner on stderr
        if json_mode:
            first = self.proc.stdout.readline()
            self.start = json.loads(first)
            assert "url" in self.start, (first, self.proc.stderr.read())
            self.url = self.start["url"]
        else:
            while True:  # the banner, up to its last line
                line = self.proc.stderr.readline()
                assert line, "listen exited before it was ready: " + "".join(self.lines)
                self.lines.append(line)
                if line.startswith("Listening on "):
                    self.url = line.split()[2]
                if line.startswith("Waiting for events"):
                    break
        self.port = int(self.url.rsplit(":", 1)[1])

    def post(self, path: str, body: object, *, key: str = KEY, **headers: str) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **headers}
        return httpx.post(self.url + path, content=raw, headers=headers, auth=(key, ""))

    def finish(self, timeout: float = 30) -> tuple[int, list[dict], str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        recs = [json.loads(x) for x in out.splitlines() if x.startswith("{")] if (
            self.json_mode) else []
        return self.proc.returncode, recs, out, err

    def interrupt(self) -> tuple[int, list[dict], str, str]:
        self.proc.send_signal(signal.SIGINT)
        return self.finish()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def listening():
    started: list[Listening] = []

    def run(*args: str, **kw: object) -> Listening:
        started.append(Listening(*args, **kw))  # type: ignore[arg-type]
        return started[-1]

    yield run
    for s in started:
        s.kill()


def test_count_1_of_a_passing_event_exits_0(listening):
    lis = listening("--count", "1", "--timeout", "30")
    assert lis.start["kind"] == "listening" and lis.port > 0
    r = lis.post("/v1/track", track(userId="u_42"))
    assert r.status_code == 200 and r.json() == {"success": True}
    code, recs, _, err = lis.finish()
    assert code == 0, err
    events = [x for x in recs if x.get("kind") == "event"]
    assert [(e["event"], e["verdict"], e["user_id"]) for e in events] == [
        ("avsb_experiment", "pass", "u_42")]
    assert recs[-1] == {"kind": "summary", "events": 1, "avsb_events": 1, "passed": 1,
                        "failed": 0, "rejected": 0, "forwarded": 0, "forward_failed": 0}


def test_a_failing_event_exits_5_naming_the_problem(listening):
    lis = listening("--count", "2", "--timeout", "30")
    lis.post("/v1/batch", {"batch": [track(), track(GOOD | {"experiment_id": 1})]})
    code, recs, _, err = lis.finish()
    assert code == 5
    assert [e["verdict"] for e in recs if e.get("kind") == "event"] == ["pass", "fail"]
    # The summary, then the error, each one NDJSON line.
    assert recs[-2]["kind"] == "summary" and recs[-1]["error"]["code"] == "validation_failed"
    line = [ln for ln in err.splitlines() if ln.startswith("avsb: error:")]
    assert line == ["avsb: error: 1 of 2 avsb_experiment events failed: "
                    "experiment_id is a number, should be a string"]


def test_too_few_events_is_a_timeout_error(listening):
    lis = listening("--count", "2", "--timeout", "1")
    lis.post("/v1/t", track())
    code, recs, _, err = lis.finish()
    assert code == 6
    assert "timed out after 1s: 1 of 2 avsb_experiment events arrived" in err
    assert "Traceback" not in err


def test_ctrl_c_prints_the_summary_and_exits_130(listening):
    lis = listening()
    lis.post("/v1/t", track())
    lis.post("/v1/t", track(event="Order Completed"))
    time.sleep(0.3)
    code, recs, _, err = lis.interrupt()
    assert code == 130
    assert recs[-1] == {"error": {"code": "interrupted", "message": "interrupted"}}
    assert recs[-2]["kind"] == "summary"
    assert (recs[-2]["events"], recs[-2]["passed"], recs[-2]["failed"]) == (2, 1, 0)
    assert "avsb: error: interrupted" in err and "Traceback" not in err


def test_bad_traffic_never_stops_it_and_each_gets_a_line(listening):
    lis = listening("--count", "1", "--timeout", "30")
    assert lis.post("/v1/batch", b"{oops").status_code == 400
    assert lis.post("/v1/batch", track(), **{"Content-Type": "image/png"}).status_code == 400
    r = httpx.post(lis.url + "/v1/track", json=track())  # no key
    assert r.status_code == 400 and r.json()["message"] == "An invalid write key was provided"
    assert lis.post("/v1/batch", b"x" * (MB := 600 * 1024)).status_code == 400
    assert MB > listen.MAX_BATCH_BYTES
    # A client that sends half a request and hangs up, then one that resets.
    with socket.create_connection(("127.0.0.1", lis.port)) as s:
        s.sendall(b"POST /v1/t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    s = socket.create_connection(("127.0.0.1", lis.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(b"GET /v1/projects/k/settings HTTP/1.1\r\nHost: x\r\n\r\n")
    s.close()
    # Still listening, and it still judges.
    assert lis.post("/v1/t", track()).status_code == 200
    code, recs, _, err = lis.finish()
    assert code == 0, err
    reasons = [x["reason"] for x in recs if x.get("kind") == "rejected"]
    assert len(reasons) == 4, reasons
    assert "malformed JSON" in reasons[0] and "image/png" in reasons[1]
    assert "no write key" in reasons[2] and "500 KB" in reasons[3]
    assert "Traceback" not in err


@pytest.mark.parametrize("json_mode", [True, False])
def test_keys_in_refused_requests_are_masked_in_every_line(listening, json_mode):
    lis = listening("--timeout", "4", json_mode=json_mode)
    keys = _keys()
    shown = []
    for i, (method, path) in enumerate(KEY_PATHS):
        key = keys[i % len(keys)]
        shown.append(key)
        httpx.request(method, lis.url + path.format(k=key), content=b"{oops",
                      headers={"Content-Type": "application/json"})
    # No Content-Length: refused before the body, the query and all.
    with socket.create_connection(("127.0.0.1", lis.port)) as s:
        s.sendall(f"POST /v1/batch?writeKey={keys[0]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(1000)
    # A key that is not key-shaped, known only from the Authorization of a
    # refused request, and one from the body of a refused batch: masked where
    # they show up.
    plain, body_key = "wkeyonlylowercase", "anotherlowercasekey"
    shown += [plain, body_key]
    lis.post(f"/v1/{plain}/track", {}, key=plain)
    lis.post("/v1/batch", {"batch": 1, "writeKey": body_key}, key="")
    lis.post(f"/v1/{body_key}", b"{}", key="")
    code, recs, out, err = lis.finish()
    assert code == 0, err
    for key in shown:
        assert key not in out + err and key[-12:] not in out + err
    if json_mode:
        refused = [r for r in recs if r.get("kind") == "rejected"]
        assert len(refused) == len(KEY_PATHS) + 4
        assert refused[0]["path"] == f"/v1/projects/…{keys[0][-4:]}/settings.json"
        assert refused[0]["reason"] == (f"GET /v1/projects/…{keys[0][-4:]}/settings.json: "
                                        "not a Segment path")
        assert refused[-3]["path"] == f"/v1/…{plain[-4:]}/track"
    else:
        assert f"/v1/projects/…{keys[0][-4:]}/settings.json: not a Segment path" in out


def test_cors_preflight_and_answers_over_http(listening):
    lis = listening("--timeout", "3")
    r = httpx.options(lis.url + "/v1/t", headers={
        "Origin": "http://shop.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://shop.test"
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = httpx.get(f"{lis.url}/v1/projects/{KEY}/settings", headers={"Origin": "http://shop.test"})
    assert r.headers["access-control-allow-origin"] == "http://shop.test"
    assert r.json()["integrations"]["Segment.io"]["apiHost"] == f"127.0.0.1:{lis.port}/v1"
    body = gzip.compress(json.dumps({"batch": [track()]}).encode())
    r = lis.post("/v1/batch", body, **{"Content-Encoding": "gzip", "Origin": "http://shop.test"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://shop.test"
    code, recs, _, _ = lis.finish()
    assert code == 0
    assert [x["verdict"] for x in recs if x.get("kind") == "event"] == ["pass"]


def test_the_terminal_view_shows_a_line_per_event_and_hides_others_with_only_avsb(listening):
    lis = listening("--count", "2", "--timeout", "30", "--only-avsb", json_mode=False)
    lis.post("/v1/t", track(event="Order Completed"))
    lis.post("/v1/t", track(userId="u_1"))
    lis.post("/v1/t", track(event="avsb_experiments"))
    code, _, out, err = lis.finish()
    assert code == 5
    lines = out.splitlines()
    assert "Order Completed" not in out
    assert "avsb_experiment  user u_1  exp_abc123 / var_xyz789  PASS" in lines[0]
    assert ("avsb_experiments  anon anon-1  exp_abc123 / var_xyz789  FAIL: event name "
            "'avsb_experiments' should be 'avsb_experiment'") in lines[1]
    # The hidden event still counts as seen.
    assert lines[2] == "Summary: 3 events seen, 2 avsb_experiment: 1 passed, 1 failed."
    assert '  analytics._cdn = "' + lis.url + '";\n' in lis.lines


def test_quiet_prints_nothing_but_the_error(tmp_path):
    env = avsb_env()
    proc = subprocess.Popen([sys.executable, "-m", "avsb_cli", "segment", "listen", "--quiet",
                             "--port", "0", "--count", "1", "--timeout", "3"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 6 and out == ""
    assert err.splitlines() == ["avsb: error: timed out after 3s: 0 of 1 avsb_experiment event "
                                "arrived (check that the page loads analytics.js with the lines "
                                "printed at start, or allow more time with --timeout)"]


def test_other_events_are_dimmed_not_hidden_by_default(listening):
    lis = listening("--timeout", "2", json_mode=False)
    lis.post("/v1/t", track(event="Order Completed"))
    code, _, out, _ = lis.finish()
    assert code == 0
    assert "track    Order Completed  anon anon-1" in out


def test_forward_relays_to_segment_with_the_stored_key(cli, enabled):
    # The process can't see this test's in-memory keyring: the key comes from the env.
    env = avsb_env(AVSB_SEGMENT_WRITE_KEY=KEY)
    lis = Listening("--count", "1", "--timeout", "30", "--forward", env=env)
    try:
        assert lis.start["forward"] == enabled.url + "/v1/batch"
        lis.post("/v1/t", track(), key=KEY2)
        code, recs, out, err = lis.finish()
    finally:
        lis.kill()
    assert code == 0, err
    fwd = [x for x in recs if x.get("kind") == "forward"]
    assert fwd and fwd[0]["ok"] and fwd[0]["status"] == 200 and fwd[0]["events"] == 1
    got = [r for r in enabled.requests if r.path == "/v1/batch"]
    assert got[-1].write_key == KEY  # the project's key, not the page's
    assert got[-1].json["batch"][0]["event"] == "avsb_experiment"
    assert recs[-1]["forwarded"] == 1
    assert KEY not in out + err and KEY2 not in out + err


def test_a_forward_segment_refuses_is_a_line_and_listening_goes_on(cli, enabled):
    enabled.down("/v1/batch", status=400, body=b'{"message":"Exceed payload limit"}')
    lis = Listening("--count", "2", "--timeout", "30", "--forward",
                    env=avsb_env(AVSB_SEGMENT_WRITE_KEY=KEY))
    try:
        lis.post("/v1/t", track())
        lis.post("/v1/t", track())
        code, recs, _, err = lis.finish()
    finally:
        lis.kill()
    assert code == 0, err  # the events passed; Segment's answer is reported, not fatal
    fwd = [x for x in recs if x.get("kind") == "forward"]
    assert len(fwd) == 2 and not any(f["ok"] for f in fwd)
    assert "HTTP 400: Exceed payload limit" in fwd[0]["message"]
    assert (recs[-1]["forwarded"], recs[-1]["forward_failed"]) == (0, 2)


def test_ctrl_c_while_the_last_relay_is_slow_still_prints_the_summary(cli, enabled):
    enabled.down("/v1/batch", delay=30.0)  # Segment answers long after the policy's deadline
    lis = Listening("--count", "1", "--forward", env=avsb_env(AVSB_SEGMENT_WRITE_KEY=KEY))
    try:
        lis.post("/v1/t", track())
        event = json.loads(lis.proc.stdout.readline())
        assert event["kind"] == "event"  # --count 1 is met: now waiting for the relay
        deadline = time.monotonic() + 10
        while not [r for r in enabled.requests if r.path == "/v1/batch"]:
            assert time.monotonic() < deadline, "the relay never reached Segment"
            time.sleep(0.05)
        code, recs, _, err = lis.interrupt()
    finally:
        lis.kill()
        enabled.up()
    assert code == 130, err
    assert recs[-1] == {"error": {"code": "interrupted", "message": "interrupted"}}
    summary = recs[-2]
    assert summary["kind"] == "summary" and summary["events"] == 1
    # It stopped waiting: the relay neither succeeded nor timed out.
    assert (summary["forwarded"], summary["forward_failed"]) == (0, 0)
    assert "Traceback" not in err and "Exception in thread" not in err


def test_forward_without_a_key_is_an_error_before_listening(cli):
    r = cli("segment", "listen", "--forward", "--port", "0")
    one_error_line(r, 3)


def test_without_forward_nothing_leaves_the_machine(cli, enabled, listening):
    lis = listening("--count", "1", "--timeout", "30")
    assert lis.start["forward"] is None
    lis.post("/v1/t", track())
    assert lis.finish()[0] == 0
    assert enabled.requests == [r for r in enabled.requests if r.path != "/v1/batch"]
    assert not [r for r in enabled.requests if r.method == "POST"]


def test_a_page_with_another_write_key_is_flagged(listening):
    lis = listening("--count", "1", "--timeout", "30", "--write-key", KEY)
    lis.post("/v1/t", track(), key=KEY2)
    code, recs, out, err = lis.finish()
    assert code == 0
    assert [x["write_key_matches"] for x in recs if x.get("kind") == "event"] == [False]
    assert KEY not in out + err and KEY2 not in out + err


def test_a_port_in_use_is_one_clear_line(cli):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        r = cli("segment", "listen", "--port", str(s.getsockname()[1]))
    finally:
        s.close()
    assert "is in use" in one_error_line(r, 2)


def test_another_host_than_loopback_warns(listening):
    lis = listening("--host", "0.0.0.0", "--timeout", "1")
    assert lis.start["loopback"] is False
    code, _, _, err = lis.finish()
    assert code == 0
    assert "avsb: warning: listening on http://0.0.0.0:" in err


@pytest.mark.parametrize("args", [["--count", "0"], ["--timeout", "-1"], ["--port", "70000"]])
def test_bad_options_are_usage_errors(cli, args):
    one_error_line(cli("segment", "listen", *args), 2)


def test_the_listener_in_a_thread_hands_over_records():
    with listen.Listener("127.0.0.1", 0) as lis:
        done = threading.Event()
        got: list[dict] = []
        tally = listen.Tally()

        def consume() -> None:
            got.append(listen.wait(lis, lambda r: None, tally, count=1, timeout=10))
            done.set()

        threading.Thread(target=consume, daemon=True).start()
        httpx.post(lis.url + "/v1/t", json=track(), auth=(KEY, ""))
        assert done.wait(10)
    assert got == [True] and tally.passed == 1


def documented_keys() -> set[str]:
    """Every `key` in the first column of the README's ### listen table."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("\n### listen\n", 1)[1].split("<!-- end section: json -->", 1)[0]
    keys: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+)`", row.split(" | ", 1)[0]))
    return keys


def test_every_ndjson_key_is_documented():
    doc = documented_keys()
    assert {"kind", "verdict", "judgement", "passed", "write_key_matches"} <= doc
    records = [
        listen.event_record(track(), path="/v1/t", received_at="t"),
        listen.event_record({"type": "page"}, path="/v1/p", received_at="t"),
        listen.Tally().summary(),
        {"kind": "listening", "url": "", "port": 1, "loopback": True, "forward": None,
         "setup": []},
    ]
    with listen.Listener("127.0.0.1", 0) as lis:
        lis._record(listen.Answer(400, b"", reason="x"), "/v1/t")
        records.append(lis.records.get_nowait())
        fwd = listen.Forwarder(lis.records, base="http://127.0.0.1:9", key=KEY,
                               policy=segment.Policy(attempts=1, deadline=1))
        records.append(fwd.send([track()]))
        fwd.close()
    for rec in records:
        assert set(rec) <= doc, (rec["kind"], set(rec) - doc)


def test_default_port_is_the_documented_one(cli):
    # The option's default is written out (listen.py loads only when it runs).
    assert "[default: 8787]" in " ".join(cli("segment", "listen", "--help").stdout.split())
    assert listen.DEFAULT_PORT == 8787
    assert "http://127.0.0.1:8787" in (ROOT / "README.md").read_text(encoding="utf-8")
