"""The write key never appears whole (issue 6).

One test runs every command with a known key, in text and JSON modes, on
success and on failure, and scans stdout, stderr, config.toml, every other
file avsb wrote outside the one insecure key file, and any log for the key
and for its HTTP Basic form. Another turns httpx/httpcore logging on at
DEBUG and checks that Authorization and the key-bearing CDN URL are masked.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from avsb_cli import segment as seg_mod
from tests.conftest import KEY, run_avsb
from tests.support.fakesegment import FakeSegment, closed_port_url

B64 = base64.b64encode(f"{KEY}:".encode()).decode()
FORBIDDEN = (KEY, B64, KEY[:20], KEY[-20:])


def assert_clean(text: str, where: str) -> None:
    for secret in FORBIDDEN:
        assert secret not in text, f"{secret[:6]}... leaked in {where}:\n{text[:2000]}"


def scan_files(folder: Path, *, allow: tuple[str, ...] = ("secrets.toml",)) -> int:
    n = 0
    for path in folder.rglob("*"):
        if path.is_file() and path.name not in allow:
            assert_clean(path.read_bytes().decode("utf-8", "replace"), str(path))
            n += 1
    return n


ENROLLMENTS = (
    '{"experiment_id":"exp_1","experiment_name":"Hero","variation_id":"var_1",'
    '"variation_name":"B","user_id":"u1","timestamp":"2024-05-01T10:00:00Z"}\n'
    '{"experiment_id":"exp_1","experiment_name":"Hero","variation_id":"var_1",'
    '"variation_name":"B","anonymous_id":"a2","timestamp":"2024-05-01T10:00:01Z"}\n'
    'not json\n'
)


def commands(tmp: Path, scenario: str) -> list[tuple[str, ...]]:
    """Every command for "ok"; the fault scenarios get the ones that talk to Segment."""
    key_file = tmp / "key.txt"
    key_file.write_text(KEY + "\n")
    data = tmp / "enrollments.jsonl"
    data.write_text(ENROLLMENTS)
    network = [
        ("segment", "test-event"),
        ("segment", "validate", "--send-event"),
        ("segment", "send", str(data), "--failed-file", str(tmp / "failed.jsonl")),
        ("integrations", "segment", "enable", "--write-key-stdin", "--validate"),
    ]
    more_network = [
        ("segment", "test-event", "--user-id", "u_42"),
        ("segment", "validate"),
        ("integrations", "segment", "validate"),
        ("segment", "send", str(data)),  # failed events to the default file
    ]
    local = [
        ("integrations", "list"),
        ("integrations", "segment", "status"),
        ("segment", "test-event", "--dry-run"),
        ("segment", "send", str(data), "--dry-run"),
    ]
    enable = ("integrations", "segment", "enable")
    if scenario != "ok":
        return [(*enable, "--write-key-stdin"), *network]
    return [
        (*enable, "--write-key", KEY),
        (*enable, "--write-key-file", str(key_file)),
        (*enable, "--write-key", KEY + " x"),  # refused
        (*enable, "--write-key", KEY + "é"),  # refused
        (*enable, "--write-key-stdin"), *local, *network, *more_network,
        (*enable, "--write-key-stdin", "--insecure-storage"), *local, *network,
        ("integrations", "segment", "disable"),
        ("integrations", "segment", "disable", "--forget-key"),
        ("integrations", "segment", "status"),
        ("segment", "test-event"),  # now fails: no key
    ]


SCENARIOS = ["ok", "server-500", "closed-port", "unknown-key", "eu-key", "echo-key",
             "redirect-with-key"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_command_prints_or_stores_the_key(cli, tmp_path, config_dir, monkeypatch,
                                             scenario, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)  # a default failed-events file lands here, and is scanned
    server = FakeSegment().start()
    codes = set()
    try:
        if scenario != "unknown-key":
            server.add_key(KEY, "eu" if scenario == "eu-key" else "us")
        base = closed_port_url() if scenario == "closed-port" else server.url
        monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", base)
        monkeypatch.setenv("AVSB_SEGMENT_CDN_URL", base)
        monkeypatch.setenv("AVSB_TIMEOUT", "2")
        monkeypatch.setattr(seg_mod.Policy, "delay", lambda self, retry: 0.001)
        if scenario == "server-500":
            server.fault("*", status=500, times=10_000)
        if scenario == "echo-key":
            # A server (or proxy) that quotes the key back in its errors.
            server.fault("*", status=401, times=10_000,
                         body=f'{{"message":"invalid write key {KEY} ({B64})"}}'.encode())
        if scenario == "redirect-with-key":
            server.fault("*", status=302, times=10_000,
                         location=f"https://evil.example/{KEY}?auth={B64}")
        todo = commands(tmp_path, scenario)
        for args in todo:
            for json_mode in (False, True):
                full = (*args, "--json") if json_mode else args
                r = cli(*full, input=KEY + "\n")
                codes.add(r.exit_code)
                assert "Traceback" not in r.output, (full, r.output)
                assert "internal error" not in r.output, (full, r.output)
                assert_clean(r.stdout, f"stdout of {full}")
                assert_clean(r.stderr, f"stderr of {full}")
        # The environment as the key source.
        monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
        for args in todo[:3]:
            r = cli(*args, "--json")
            assert_clean(r.output, f"{args} with the key in the environment")
    finally:
        server.stop()
    assert scan_files(config_dir) >= 1  # config.toml at least
    scan_files(tmp_path, allow=("secrets.toml", "key.txt"))  # key.txt: the user's own
    assert_clean(caplog.text, "the log")
    if scenario == "ok":
        assert 0 in codes and len(codes) >= 3, codes  # success and failure paths both ran
    else:
        assert codes - {0}, codes  # the fault was felt


def test_http_debug_logging_never_shows_the_key(cli, segment, caplog, monkeypatch):
    """httpx logs request URLs at INFO (the CDN's holds the key). With debug
    logging on, the log has no key and no Basic credential."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AVSB_DEBUG", "1")
    settings = b'{"integrations": {"Segment.io": {"apiHost": "api.segment.io/v1"}}}'
    segment.fault(f"/v1/projects/{KEY}/settings", status=200, body=settings,
                  headers={"X-Echo": f"Basic {B64}", "X-Key": KEY})
    assert cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY).exit_code == 0
    assert cli("segment", "test-event").exit_code == 0
    cli("segment", "validate")
    text = caplog.text
    assert "HTTP Request: GET" in text and "/settings" in text  # logging was really on
    assert_clean(text, "httpx debug log")
    assert "/v1/projects/…" in text  # masked, not dropped


def test_httpcore_debug_logging_never_shows_the_key(segment, caplog):
    """httpx's transport (httpcore), which carries every request, logs response
    headers at DEBUG: they are masked too."""
    import httpx

    from avsb_cli import segment as client_module

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    client_module.remember_secret(KEY)
    segment.fault("/v1/track", status=200, body=b"{}",
                  headers={"X-Echo": f"Basic {B64}", "X-Key": KEY})
    with client_module.build_client(httpx.HTTPTransport()) as client:
        client.post(f"{segment.url}/v1/track", json={}, auth=(KEY, ""))
    text = caplog.text
    assert "X-Echo" in text  # the response headers were logged
    assert_clean(text, "httpcore debug log")


def test_a_real_process_with_debug_env_leaks_nothing(tmp_path):
    """AVSB_DEBUG=1 in a real process: failures still don't print the key."""
    from tests.conftest import avsb_env

    env = avsb_env(AVSB_DEBUG="1", AVSB_SEGMENT_WRITE_KEY=KEY,
                   AVSB_SEGMENT_ENDPOINT=closed_port_url(), AVSB_SEGMENT_CDN_URL=closed_port_url(),
                   AVSB_TIMEOUT="0.5")
    for args in (("segment", "test-event"), ("segment", "validate", "--json"),
                 ("integrations", "segment", "status")):
        r = run_avsb(*args, env=env)
        assert r.exit_code != 0 or args[-1] == "status", r.output
        assert_clean(r.output, f"{args} under AVSB_DEBUG")
    scan_files(tmp_path, allow=("secrets.toml", "key.txt"))


def test_a_stray_key_in_a_usage_error_is_masked(cli):
    # The parser echoes unexpected arguments; a key pasted in the wrong place
    # must not come back whole.
    key = "Zq7Xk2LmP9vR4tYw8NcB3hJd6FgS5aQe"
    r = cli("integrations", "segment", "enable", "--write-key-stdin", key)
    assert r.exit_code == 2
    assert key not in r.output
    assert "…" + key[-4:] in r.output


TOKEN_SCENARIOS = ["ok", "server-500", "echo-token", "redirect-with-token", "html-error"]


@pytest.mark.parametrize("scenario", TOKEN_SCENARIOS)
def test_no_command_prints_or_stores_the_a_vs_b_token(cli, avsb, segment, tmp_path, config_dir,
                                                     monkeypatch, scenario, caplog):
    """The A vs B token (issue 10), like the write key: never whole in output,
    logs or files (secrets.toml with --insecure-storage aside), whatever A vs B
    answers, even when it quotes the token back."""
    from tests.support.fakeavsb import PAT

    forbidden = (PAT, PAT[:20], PAT[-20:], KEY)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(seg_mod.Policy, "delay", lambda self, retry: 0.001)
    assert cli("login", "--with-token", input=PAT).exit_code == 0
    if scenario == "server-500":
        avsb.fault("*", status=500, times=10_000)
    elif scenario == "echo-token":
        avsb.fault("*", status=401, times=10_000,
                   body=f'{{"error":{{"code":"x","message":"bad token {PAT}"}}}}'.encode())
    elif scenario == "redirect-with-token":
        avsb.fault("*", status=302, times=10_000, location=f"https://evil.example/?t={PAT}")
    elif scenario == "html-error":
        avsb.fault("*", status=200, times=10_000, body=f"<html>{PAT}</html>".encode())
    enable = ("integrations", "segment", "enable")
    codes = set()
    for args in [("whoami",), ("projects", "list"), ("doctor",),
                 (*enable, "--write-key-stdin"), ("integrations", "segment", "status"),
                 ("segment", "validate", "--from-dashboard"),
                 ("integrations", "segment", "disable", "--forget-key"),
                 ("login", "--with-token", "--insecure-storage"), ("logout",)]:
        for extra in ((), ("--json",)):
            r = cli(*args, *extra, input=(PAT if args[0] == "login" else KEY) + "\n")
            codes.add(r.exit_code)
            assert "Traceback" not in r.output and "internal error" not in r.output, r.output
            for secret in forbidden:
                assert secret not in r.output, (args, r.output)
    for path in config_dir.rglob("*"):
        if path.is_file() and path.name != "secrets.toml":
            text = path.read_text(encoding="utf-8", errors="replace")
            assert all(s not in text for s in forbidden), path
    assert all(s not in caplog.text for s in forbidden)
    assert (0 in codes) if scenario == "ok" else (codes - {0}), codes
