"""The Segment client on its own: ``segment.request`` and its retry policy.

Unit tests drive ``request`` through httpx.MockTransport with a fake clock
and a fake sleep (so a 20-second policy runs in microseconds): the policy,
and faults a local server can't make. Faults it can make (refused, reset,
slow, 429, 5xx, redirects, DNS) are tested once, through the CLI, in
test_faults_network.py; the proxy tests at the end use a real local server.
"""

from __future__ import annotations

import base64
import json
import socket
import threading

import httpx
import pytest

from avsb_cli import __version__
from avsb_cli import segment as seg
from avsb_cli.errors import NetworkError, UsageError
from tests.conftest import KEY
from tests.support.fakesegment import FakeSegment, closed_port_url

URL = "https://api.segment.io/v1/batch"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def mock(responses, seen=None):
    """A MockTransport answering from ``responses`` in turn (the last one repeats).

    An item is a status, a (status, headers, body) tuple, or an exception to raise.
    """
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, int):
            item = (item, {}, b'{"success": true}' if item < 300 else b'{"message": "nope"}')
        status, headers, body = item
        return httpx.Response(status, headers=headers, content=body)

    return httpx.MockTransport(handler)


def send(transport, policy=None, ft=None, **kw):
    policy = policy or seg.Policy()
    ft = ft or FakeTime()
    with seg.build_client(transport, policy=policy) as client:
        return seg.request(client, "POST", URL, policy=policy, key=KEY,
                           content=b'{"batch":[]}', sleep=ft.sleep, clock=ft.clock, **kw)


# What is retried ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses_are_retried(status):
    seen: list[httpx.Request] = []
    ft = FakeTime()
    d = send(mock([status, status, 200], seen), ft=ft)
    assert (d.status, d.attempts, len(seen)) == (200, 3, 3)
    assert d.causes == [f"HTTP {status}: nope"] * 2
    assert len(ft.sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422, 501, 505])
def test_other_statuses_fail_at_once_with_segments_message(status):
    seen: list[httpx.Request] = []
    ft = FakeTime()
    with pytest.raises(NetworkError) as info:
        send(mock([(status, {}, b'{"message": "Exceed payload limit"}')], seen), ft=ft)
    assert len(seen) == 1 and ft.sleeps == []
    # The facts: which host, which status, and what Segment said.
    msg = info.value.message
    assert "api.segment.io" in msg and f"HTTP {status}: Exceed payload limit" in msg


def test_a_plain_text_error_body_is_shown_in_one_short_line():
    body = ("Bad   request\n" + "x" * 500).encode()
    with pytest.raises(NetworkError) as info:
        send(mock([(400, {}, body)]))
    assert "\n" not in info.value.message and "Bad request x" in info.value.message
    assert info.value.message.endswith("...") and len(info.value.message) < 300


def test_the_key_is_masked_if_segment_echoes_it():
    with pytest.raises(NetworkError) as info:
        send(mock([(400, {}, json.dumps({"message": f"bad key {KEY}"}).encode())]))
    assert KEY not in info.value.message and KEY[-4:] in info.value.message


def test_tls_failure_is_not_retried():
    import ssl

    def handler(request):
        raise httpx.ConnectError("handshake") from ssl.SSLError("bad record mac")

    ft = FakeTime()
    with pytest.raises(NetworkError) as info:
        send(httpx.MockTransport(handler), ft=ft)
    assert ft.sleeps == [] and "TLS handshake failed" in info.value.message


# Faults a local server makes for real (refused, reset, slow, 429, 5xx, redirects, DNS)
# are tested once, through the CLI, in test_faults_network.py. Here: what it can't.
@pytest.mark.parametrize(
    "exc, cause",
    [
        (httpx.ConnectTimeout("t"), "timed out connecting"),
        (httpx.WriteTimeout("t"), "timed out"),
    ],
)
def test_connect_and_write_timeouts_are_retried(exc, cause):
    d = send(mock([exc, 200]))
    assert d.attempts == 2 and d.causes == [cause]


# How long it waits ------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_a_cap():
    p = seg.Policy(backoff=0.5, backoff_cap=8.0)
    for retry, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (12, 8.0)]:
        waits = [p.delay(retry) for _ in range(200)]
        assert all(base * 0.5 <= w <= base for w in waits), (retry, min(waits), max(waits))
        assert len(set(waits)) > 1  # jitter: retries of many clients don't line up


def test_retry_after_seconds_is_honoured_instead_of_the_backoff():
    ft = FakeTime()
    d = send(mock([(429, {"Retry-After": "7"}, b""), 200]), ft=ft)
    assert d.attempts == 2 and ft.sleeps == [7.0]


def test_retry_after_as_a_date_in_the_past_gets_the_normal_backoff():
    ft = FakeTime()
    d = send(mock([(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b""), 200]), ft=ft)
    assert d.attempts == 2 and 0.25 <= ft.sleeps[0] <= 0.5


def test_unparsable_retry_after_falls_back_to_the_backoff():
    ft = FakeTime()
    d = send(mock([(429, {"Retry-After": "soon"}, b""), 200]), ft=ft)
    assert d.attempts == 2 and 0.25 <= ft.sleeps[0] <= 0.5


def test_retry_after_beyond_the_cap_stops_at_once():
    ft = FakeTime()
    seen: list[httpx.Request] = []
    with pytest.raises(NetworkError) as info:
        send(mock([(429, {"Retry-After": "11"}, b"")], seen), seg.Policy(retry_after_cap=10),
             ft=ft)
    assert len(seen) == 1 and ft.sleeps == []
    assert "retry after 11s" in info.value.message and "10s" in info.value.message


def test_attempts_are_bounded():
    seen: list[httpx.Request] = []
    with pytest.raises(NetworkError) as info:
        send(mock([503], seen), seg.Policy(attempts=4))
    assert len(seen) == 4
    assert info.value.message.startswith("gave up on api.segment.io after 4 attempts")
    assert info.value.message.endswith("HTTP 503: nope")


def test_the_total_deadline_bounds_attempts_and_waits():
    ft = FakeTime()
    seen: list[httpx.Request] = []
    policy = seg.Policy(attempts=100, deadline=20.0)
    with pytest.raises(NetworkError):
        send(mock([503], seen), policy, ft=ft)
    assert sum(ft.sleeps) < 20.0
    assert len(seen) == len(ft.sleeps) + 1 >= 4
    # The next wait would have crossed the deadline, so it was not taken.


def test_a_retry_after_past_the_deadline_is_not_waited_for():
    ft = FakeTime()
    with pytest.raises(NetworkError) as info:
        send(mock([(503, {"Retry-After": "9"}, b"")]), seg.Policy(deadline=5), ft=ft)
    assert ft.sleeps == [] and "after 1 attempt in" in info.value.message


def test_each_attempts_timeouts_are_cut_to_the_time_left():
    ft = FakeTime()
    seen: list[httpx.Request] = []
    policy = seg.Policy(deadline=3.0, read_timeout=10.0, connect_timeout=5.0,
                        retry_after_cap=10)
    send(mock([(503, {"Retry-After": "2"}, b""), 200], seen), policy, ft=ft)
    first, second = (r.extensions["timeout"] for r in seen)
    assert first["read"] == 3.0 and first["connect"] == 3.0
    assert second["read"] == pytest.approx(1.0) and second["connect"] == pytest.approx(1.0)


def test_default_policy_gives_up_well_under_30_seconds():
    p = seg.Policy()
    assert p.deadline <= 20 and p.retry_after_cap < p.deadline


# Policy from the environment ----------------------------------------------------------------


def test_timeout_from_env_and_option(monkeypatch):
    monkeypatch.setenv("AVSB_TIMEOUT", "1.5")
    p = seg.Policy.from_env()
    assert (p.deadline, p.read_timeout, p.connect_timeout) == (1.5, 1.5, 1.5)
    p = seg.Policy.from_env(40)  # the option wins over the variable
    assert (p.deadline, p.read_timeout, p.connect_timeout) == (40, 10.0, 5.0)
    monkeypatch.delenv("AVSB_TIMEOUT")
    assert seg.Policy.from_env().deadline == 20.0


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "nan", "inf", "7200"])
def test_bad_timeouts_are_usage_errors(monkeypatch, raw):
    monkeypatch.setenv("AVSB_TIMEOUT", raw)
    with pytest.raises(UsageError):
        seg.Policy.from_env()


# The request itself --------------------------------------------------------------------------


def test_basic_auth_user_agent_and_no_key_in_the_url():
    seen: list[httpx.Request] = []
    send(mock([200], seen))
    req = seen[0]
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(
        f"{KEY}:".encode()).decode()
    assert req.headers["User-Agent"].startswith(f"avsb/{__version__} ")
    assert KEY not in str(req.url)


def test_same_body_on_every_attempt():
    seen: list[httpx.Request] = []
    send(mock([500, 502, 200], seen))
    assert len({r.content for r in seen}) == 1


def test_send_track_keeps_the_message_id_and_refreshes_sent_at(monkeypatch):
    stamps = iter(["2030-01-01T00:00:00.000Z", "2030-01-01T00:00:01.000Z",
                   "2030-01-01T00:00:02.000Z"])
    monkeypatch.setattr(seg, "now_iso", lambda: next(stamps))
    msg = seg.experiment_event(experiment_id="e", experiment_name="E", variation_id="v",
                               variation_name="V", anonymous_id="a",
                               timestamp="2029-12-31T23:59:59.000Z")
    seen: list[httpx.Request] = []
    policy = seg.Policy()
    ft = FakeTime()
    with seg.build_client(mock([503, 200], seen), policy=policy) as client:
        d = seg.send_track(client, "https://api.segment.io", KEY, msg, policy,
                           sleep=ft.sleep, clock=ft.clock)
    bodies = [json.loads(r.content) for r in seen]
    assert d.attempts == 2 and str(seen[0].url) == "https://api.segment.io/v1/track"
    assert [b["sentAt"] for b in bodies] == ["2030-01-01T00:00:00.000Z",
                                             "2030-01-01T00:00:01.000Z"]
    assert {b["messageId"] for b in bodies} == {msg["messageId"]}
    assert {b["timestamp"] for b in bodies} == {"2029-12-31T23:59:59.000Z"}
    assert msg["sentAt"] == bodies[-1]["sentAt"]


def test_an_oversize_event_is_refused_before_sending():
    seen: list[httpx.Request] = []
    msg = seg.experiment_event(experiment_id="e", experiment_name="x" * (33 << 10),
                               variation_id="v", variation_name="V", anonymous_id="a")
    policy = seg.Policy()
    with seg.build_client(mock([200], seen), policy=policy) as client, \
            pytest.raises(UsageError) as info:
        seg.send_track(client, "https://api.segment.io", KEY, msg, policy)
    assert seen == [] and "32 KB" in info.value.message


def test_experiment_event_needs_someone():
    with pytest.raises(UsageError):
        seg.experiment_event(experiment_id="e", experiment_name="E", variation_id="v",
                             variation_name="V")


# Against the real fake server on 127.0.0.1 --------------------------------------------------


@pytest.fixture
def server():
    with FakeSegment() as s:
        s.add_key(KEY)
        yield s


def _track(server_url, policy, ft=None, **fields):
    msg = seg.experiment_event(experiment_id="exp_1", experiment_name="E", variation_id="v",
                               variation_name="V", anonymous_id="anon-1", **fields)
    ft = ft or FakeTime()
    with seg.build_client(policy=policy) as client:
        return msg, seg.send_track(client, server_url, KEY, msg, policy, sleep=ft.sleep,
                                   clock=ft.clock)


def test_loopback_never_goes_through_a_proxy_from_the_environment(server, monkeypatch):
    dead = closed_port_url()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead)
    _, d = _track(server.url, seg.Policy(attempts=1))
    assert d.status == 200 and len(server.events) == 1


def test_https_proxy_is_honoured_for_other_hosts(monkeypatch):
    # A one-shot "proxy" on 127.0.0.1 that records the request line and refuses.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            seen.append(conn.recv(4096).split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{lsock.getsockname()[1]}")
    try:
        with pytest.raises(NetworkError) as info:
            _track("https://api.segment.invalid", seg.Policy(attempts=1))
    finally:
        t.join(5)
        lsock.close()
    assert seen == [b"CONNECT api.segment.invalid:443 HTTP/1.1"]
    assert "proxy" in info.value.message


def test_certificates_are_checked_and_made_once():
    import ssl

    a = seg._ssl_context()
    assert a.verify_mode == ssl.CERT_REQUIRED and a.check_hostname
    assert seg._ssl_context() is a


def test_a_bad_ssl_cert_file_is_one_clear_error(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nope.pem"))
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    r = cli("segment", "test-event")
    assert r.exit_code == 6, r.output
    assert r.stderr.startswith("avsb: error: cannot load CA certificates from SSL_CERT_FILE=")
    assert "internal error" not in r.output and len(r.stderr.splitlines()) == 1
