"""Hardening, round two, part two (issue 13): every answer bounded in time and
size, an answer cut in its headers never a delivery, hostile input files,
and signals during `send`.

Servers are tests/support/hostile.py on 127.0.0.1; commands run as real
processes where the bound is the process's (time, peak RSS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from avsb_cli import segment as seg_mod
from avsb_cli.errors import NetworkError
from tests.conftest import KEY, avsb_env
from tests.support.fakeavsb import ORG, PAT
from tests.support.hostile import Hostile

SLOW = ["trickle-headers", "trickle-body"]
BIG = ["endless", "huge", "bomb-2mb", "bomb-200kb"]
CUT = ["cut-header-line", "cut-after-a-header", "cut-after-status"]
ENROLLMENT = ('{"experiment_id":"e1","experiment_name":"E","variation_id":"v1",'
              '"variation_name":"V","user_id":"u%d","timestamp":"2026-01-02T03:04:05Z"}\n')
# Slack for a process's start and end on a busy machine: never a speed claim.
SLACK = 12


def _request(url: str, timeout: float = 2.0) -> NetworkError:
    policy = seg_mod.Policy.from_env(timeout)
    with seg_mod.build_client(policy=policy, tls=url.startswith("http:")) as client, \
            pytest.raises(NetworkError) as info:
        seg_mod.request(client, "POST", f"{url}/v1/batch", policy=policy, key=KEY,
                        content=b'{"batch":[]}')
    return info.value


# Time: --timeout is a total deadline -------------------------------------------------

@pytest.mark.parametrize("mode", SLOW)
def test_a_trickling_server_ends_at_the_deadline(mode):
    with Hostile(mode) as server:
        start = time.monotonic()
        err = _request(server.url, 2.0)
        took = time.monotonic() - start
    assert "timed out" in err.message and "\n" not in err.message
    assert took < 2.0 + SLACK / 2, took


def test_a_trickling_proxy_ends_at_the_deadline_too(monkeypatch):
    """httpx's own transport (a proxy is configured) is bounded the same way."""
    for var in ("HTTP_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY",
                "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    with Hostile("proxy-trickle") as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        start = time.monotonic()
        err = _request("https://api.segment.invalid", 2.0)
        took = time.monotonic() - start
        assert proxy.requests == 1  # it did go through the proxy
    assert "timed out" in err.message
    assert took < 2.0 + SLACK / 2, took


def _env(tmp_path, server_url: str, **extra: str) -> dict[str, str]:
    return avsb_env(AVSB_SEGMENT_WRITE_KEY=KEY, AVSB_CONFIG_DIR=str(tmp_path / "cfg"),
                    AVSB_SEGMENT_ENDPOINT=server_url, AVSB_SEGMENT_CDN_URL=server_url,
                    AVSB_API_URL=server_url, AVSB_ORG=ORG,
                    PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", **extra)


COMMANDS = {
    "test-event": (["segment", "test-event", "--timeout", "3"], None),
    "validate": (["segment", "validate", "--timeout", "3"], None),
    "send": (["segment", "send", "{file}", "--timeout", "3", "--failed-file", "{failed}"],
             None),
    "login (A vs B)": (["login", "--with-token", "--insecure-storage"], PAT),
}


def _run(name: str, tmp_path, env: dict[str, str], timeout: float = 120):
    args, stdin = COMMANDS[name]
    (tmp_path / "in.jsonl").write_text("".join(ENROLLMENT % i for i in range(5)))
    args = [a.replace("{file}", str(tmp_path / "in.jsonl"))
            .replace("{failed}", str(tmp_path / "failed.jsonl")) for a in args]
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "avsb_cli", *args], env=env, input=stdin,
                          stdin=None if stdin else subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - start


def _one_error(proc) -> str:
    assert proc.returncode not in (0, 1), proc.stderr  # 1: an internal error
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("avsb: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.parametrize("mode", SLOW)
@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_ends_at_its_timeout_against_a_trickle(tmp_path, mode, name):
    with Hostile(mode) as server:
        env = _env(tmp_path, server.url, AVSB_TIMEOUT="3")
        proc, took = _run(name, tmp_path, env)
    line = _one_error(proc)
    assert "timed out" in line or "timed out" in proc.stderr, proc.stderr
    if name == "send":
        # --timeout is per batch; one batch here, and its events are kept.
        saved = (tmp_path / "failed.jsonl").read_text().splitlines()
        assert len(saved) == 5
    assert took < 3 + SLACK, took


# Size: answers read up to a cap, before and after decompression ------------------------

@pytest.mark.parametrize("mode", BIG)
def test_a_huge_answer_is_one_network_error(mode):
    with Hostile(mode) as server:
        err = _request(server.url, 20.0)
        assert server.requests == 1  # not worth another attempt: it would be as big
    assert "more than avsb reads" in err.message and "\n" not in err.message


_RSS_WRAPPER = """
import os, subprocess, sys
proc = subprocess.Popen([sys.executable, "-m", "avsb_cli", *sys.argv[1:]],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.PIPE)
proc.stdin.write(os.environ.get("STDIN_TEXT", "").encode()); proc.stdin.close()
err = proc.stderr.read().decode()
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
sys.stderr.write(err)
"""


def _peak(name: str, tmp_path, env: dict[str, str]) -> tuple[int, float, str]:
    """Exit code, the avsb process's own peak RSS in MB, and its stderr."""
    args, stdin = COMMANDS[name]
    (tmp_path / "in.jsonl").write_text(ENROLLMENT % 1)
    args = [a.replace("{file}", str(tmp_path / "in.jsonl"))
            .replace("{failed}", str(tmp_path / "failed.jsonl")) for a in args]
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *args],
                          env={**env, "STDIN_TEXT": stdin or ""}, capture_output=True,
                          text=True, timeout=120)
    code, kb = proc.stdout.split()
    return int(code), int(kb) / 1024, proc.stderr


@pytest.fixture(scope="module")
def usual_peak(tmp_path_factory):
    """Peak RSS of test-event and login against servers that answer normally."""
    from tests.support.fakeavsb import FakeAvsb
    from tests.support.fakesegment import FakeSegment

    tmp = tmp_path_factory.mktemp("usual")
    seg = FakeSegment().start()
    seg.add_key(KEY, "us")
    avsb = FakeAvsb().start()
    avsb.add_token(PAT)
    try:
        peaks = {}
        for name, url in (("test-event", seg.url), ("login (A vs B)", avsb.url)):
            code, peaks[name], err = _peak(name, tmp, _env(tmp, url))
            assert code == 0, err
    finally:
        seg.stop()
        avsb.stop()
    return peaks


@pytest.mark.parametrize("mode", BIG)
@pytest.mark.parametrize("name", ["test-event", "login (A vs B)"])
def test_huge_answers_keep_memory_flat_in_a_real_process(tmp_path, usual_peak, mode, name):
    with Hostile(mode) as server:
        code, peak, err = _peak(name, tmp_path, _env(tmp_path, server.url))
    assert code == 6, err
    lines = [ln for ln in err.splitlines() if ln.startswith("avsb: error:")]
    assert len(lines) == 1 and "more than avsb reads" in lines[0], err
    assert "Traceback" not in err
    assert peak < usual_peak[name] + 15, f"{peak:.0f} MB, usually {usual_peak[name]:.0f} MB"


# An answer cut in its headers is a failed attempt ---------------------------------------

@pytest.mark.parametrize("mode", CUT)
def test_an_answer_cut_in_its_headers_is_retried_then_fails(mode):
    with Hostile(mode) as server:
        err = _request(server.url, 3.0)
        assert server.requests > 1  # retried, like any cut connection
    assert "gave up" in err.message


@pytest.mark.parametrize("mode", CUT)
def test_send_never_counts_a_cut_answer_as_delivered(tmp_path, mode):
    with Hostile(mode) as server:
        proc, _ = _run("send", tmp_path, _env(tmp_path, server.url, AVSB_TIMEOUT="3"))
    line = _one_error(proc)
    assert proc.returncode == 6 and "5 of 5 events were not delivered" in line, proc.stderr
    assert len((tmp_path / "failed.jsonl").read_text().splitlines()) == 5


def test_a_whole_answer_still_counts(tmp_path, segment):
    """The checks above are not simply refusing everything."""
    proc, _ = _run("send", tmp_path, _env(tmp_path, segment.url))
    assert proc.returncode == 0, proc.stderr
    assert len(segment.unique_events) == 5
    assert not os.path.exists(tmp_path / "failed.jsonl")
