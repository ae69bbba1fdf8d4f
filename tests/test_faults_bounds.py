"""Hardening, round two, part two (issue 13): every answer bounded in time and
size, an answer cut in its headers never a delivery, hostile input files,
and signals during `send`.

Servers are tests/support/hostile.py on 127.0.0.1; commands run as real
processes where the bound is the process's (time, peak RSS).
"""

from __future__ import annotations

import json
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
    """Through a proxy (HTTPS_PROXY), the request is bounded the same way."""
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


# Bad input is a bad line, never a crash ---------------------------------------------------

@pytest.fixture
def keyed(monkeypatch, segment):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    return segment


def _nested_records(depth: int) -> list[str]:
    """Records nested ``depth`` deep, in the places JSON can nest."""
    return [
        '{"a":' * depth + "1" + "}" * depth,
        "[" * depth + "]" * depth,
        '{"experiment_id":' + "[" * depth + "]" * depth + "}",
        (ENROLLMENT % 0)[:-2] + ',"extra":' + '{"b":' * depth + "1" + "}" * depth + "}",
    ]


@pytest.mark.parametrize("depth", [1000, 20_000, 200_000])
def test_a_record_nested_deep_is_a_bad_line_and_the_rest_is_sent(cli, keyed, tmp_path, depth):
    segment = keyed
    bad = _nested_records(depth)
    lines = [ENROLLMENT % 1] + [b + "\n" for b in bad] + [ENROLLMENT % 2]
    (tmp_path / "deep.jsonl").write_text("".join(lines))
    r = cli("segment", "send", str(tmp_path / "deep.jsonl"), "--json")
    assert r.exit_code == 8, r.output
    import json

    doc = json.loads(r.stdout)
    # The last record nests only in a field avsb ignores; msgspec may or may not take it.
    assert {b["line"] for b in doc["bad_lines"]} >= {2, 3, 4}
    assert doc["sent"] + doc["skipped"] == doc["read"] == 6
    assert {e["userId"] for e in segment.unique_events.values()} >= {"u1", "u2"}


def _rss_send(path: str, tmp_path, env: dict[str, str]) -> tuple[int, float, str]:
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, "segment", "send", path,
                           "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
    code, kb = proc.stdout.split()
    return int(code), int(kb) / 1024, proc.stderr


HEADER = "experiment_id,experiment_name,variation_id,variation_name,user_id,timestamp\n"
ROW = "e1,E,v1,V,u1,2026-01-02T03:04:05Z\n"


@pytest.mark.parametrize("shape", ["plain", "quoted", "quoted-lines"])
def test_a_csv_line_of_hundreds_of_mb_keeps_memory_flat(tmp_path, shape):
    env = _env(tmp_path, "http://127.0.0.1:9")
    small = tmp_path / "small.csv"
    small.write_text(HEADER + ROW)
    code, usual, err = _rss_send(str(small), tmp_path, env)
    assert code == 0, err
    big = tmp_path / "big.csv"
    with open(big, "w") as fh:
        fh.write(HEADER + ROW)
        fh.write('"' if shape != "plain" else "")
        piece = ("a" * 1023 + "\n") if shape == "quoted-lines" else "a" * 1024
        for _ in range(200 << 10):  # 200 MB
            fh.write(piece)
        fh.write('"' if shape != "plain" else "")
        fh.write("\n" + ROW)
    code, peak, err = _rss_send(str(big), tmp_path, env)
    assert code == 8 and "Traceback" not in err, err
    assert peak < usual + 20, f"{peak:.0f} MB, a small file {usual:.0f} MB"


@pytest.mark.parametrize("fmt", [[], ["--format", "jsonl"], ["--format", "csv"]])
def test_dev_zero_is_one_clean_error(tmp_path, fmt):
    env = _env(tmp_path, "http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "avsb_cli", "segment", "send", "/dev/zero",
                           "--dry-run", *fmt], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 8 and "not a text file" in _one_error(proc)


def test_a_nul_byte_after_the_start_is_a_bad_line_not_a_binary_file(cli, tmp_path):
    # (hypothesis found it: a NUL anywhere in the first 4 KB refused the whole file)
    path = tmp_path / "e.jsonl"
    path.write_bytes((ENROLLMENT % 1).encode() + b'{"experiment_id": "\x00"}\n'
                     + (ENROLLMENT % 3).encode())
    r = cli("segment", "send", str(path), "--dry-run", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 8 and doc["valid"] == 2, r.output
    assert [b["line"] for b in doc["bad_lines"]] == [2]


def test_a_fifo_is_never_opened_for_the_progress_count(tmp_path):
    from avsb_cli import backfill

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    # open() of a FIFO with no writer would block here for good.
    assert backfill.count_lines(str(fifo)) is None
    regular = tmp_path / "in.jsonl"
    regular.write_text(ENROLLMENT % 1 * 3)
    assert backfill.count_lines(str(regular)) == 3


# Nothing read is lost: real signals to a real send ---------------------------------------

def _send_process(tmp_path, env, source: str, *extra: str, stdin=subprocess.DEVNULL):
    return subprocess.Popen(
        [sys.executable, "-m", "avsb_cli", "segment", "send", source, "--json",
         "--failed-file", str(tmp_path / "failed.jsonl"), *extra],
        env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_nothing_lost(doc: dict, server, tmp_path, total: int) -> None:
    import json

    delivered = {e["userId"] for e in server.unique_events.values()}
    failed_path = tmp_path / "failed.jsonl"
    saved = [json.loads(ln)["user_id"] for ln in failed_path.read_text().splitlines()] \
        if failed_path.exists() else []
    assert len(delivered) == doc["sent"], (len(delivered), doc)
    assert len(saved) == doc["failed"] == len(set(saved)), doc
    assert not delivered & set(saved)
    read = {f"u{i}" for i in range(doc["read"])}
    assert delivered | set(saved) == read, (len(read), len(delivered), len(saved))
    assert doc["read"] == doc["sent"] + doc["failed"] and doc["read"] <= total


@pytest.mark.parametrize("round_", range(3))
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_send_loses_nothing_read(tmp_path, sig, code, round_):
    import json
    import random
    import signal

    from tests.support.fakesegment import FakeSegment

    total = 40_000
    (tmp_path / "in.jsonl").write_text("".join(ENROLLMENT % i for i in range(total)))
    with FakeSegment() as server:
        server.down("/v1/batch", delay=0.25)  # slow, but every batch is taken
        env = _env(tmp_path, server.url)
        proc = _send_process(tmp_path, env, str(tmp_path / "in.jsonl"), "--concurrency", "2")
        time.sleep(random.uniform(0.8, 2.5))
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
        assert server.wait_idle()
        assert proc.returncode == code, err
        assert "Traceback" not in err and f"interrupted by {sig}" in err, err
        doc = json.loads(out)
        assert doc["interrupted"] == sig
        _check_nothing_lost(doc, server, tmp_path, total)


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_a_pipe_is_quiet_ends_the_send(tmp_path, sig, code):
    """Reading waits on a pipe that says nothing more: the signal still ends it,
    with what came through the pipe delivered."""
    import json
    import signal

    from tests.support.fakesegment import FakeSegment

    with FakeSegment() as server:
        env = _env(tmp_path, server.url)
        proc = _send_process(tmp_path, env, "-", stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write("".join(ENROLLMENT % i for i in range(10)))
        proc.stdin.flush()
        time.sleep(1.5)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        doc = json.loads(out)
        assert doc["read"] == 10
        _check_nothing_lost(doc, server, tmp_path, 10)


# --failed-file ----------------------------------------------------------------------------

def _failing_send(cli, segment, tmp_path, failed) -> object:
    segment.down("/v1/batch", status=400)
    (tmp_path / "in.jsonl").write_text("".join(ENROLLMENT % i for i in range(3)))
    return cli("segment", "send", str(tmp_path / "in.jsonl"), "--failed-file", str(failed))


@pytest.mark.parametrize("before", ["", "earlier\n", "no newline at the end"])
def test_an_existing_failed_file_is_appended_to(cli, keyed, tmp_path, before):
    segment = keyed
    failed = tmp_path / "failed.jsonl"
    failed.write_text(before)
    r = _failing_send(cli, segment, tmp_path, failed)
    assert r.exit_code == 6, r.output
    lines = failed.read_text().splitlines()
    assert lines[: len(before.splitlines())] == before.splitlines()
    assert len(lines) == len(before.splitlines()) + 3
    assert ("(appended)" in r.output) == bool(before)


def test_a_failed_file_symlink_is_refused_and_its_target_untouched(cli, keyed, tmp_path):
    segment = keyed
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "failed.jsonl"
    link.symlink_to(target)
    r = _failing_send(cli, segment, tmp_path, link)
    assert r.exit_code == 2 and "symbolic link" in r.output, r.output
    assert target.read_text() == "keep me\n"
    assert segment.paths().count("/v1/batch") == 0  # refused before sending anything


@pytest.mark.parametrize("named", [True, False])
def test_the_failed_file_is_owner_only_under_umask_000(tmp_path, segment, named):
    segment.down("/v1/batch", status=400)
    (tmp_path / "in.jsonl").write_text(ENROLLMENT % 1)
    args = [sys.executable, "-m", "avsb_cli", "segment", "send", str(tmp_path / "in.jsonl")]
    if named:
        args += ["--failed-file", str(tmp_path / "failed.jsonl")]
    proc = subprocess.run(args, env=_env(tmp_path, segment.url), cwd=tmp_path,
                          preexec_fn=lambda: os.umask(0), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 6, proc.stderr
    made = [p for p in tmp_path.iterdir() if p.name.startswith(("failed", "avsb-failed"))]
    assert len(made) == 1
    assert made[0].stat().st_mode & 0o777 == 0o600
