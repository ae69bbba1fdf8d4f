"""Hardening, round two (issue 13): hostile servers, files, descriptors and environments.

Each class of fault is tried with generated inputs, not only the example the
issue names: Retry-After values, hung keyrings, deeply nested TOML, closed and
full standard streams for every command, loopback names and proxies, key
echoes at every offset, permissive umasks and foreign permissions, plaintext
keyrings, and racing `enable` processes.
"""

from __future__ import annotations

import email.utils
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from avsb_cli import segment as seg_mod
from avsb_cli.errors import NetworkError
from tests.conftest import KEY
from tests.support.fakesegment import FakeSegment
from tests.test_segment_client import FakeTime

CLI = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# Retry-After --------------------------------------------------------------------------

def _past_date(seconds_ago: float) -> str:
    return email.utils.formatdate(time.time() - seconds_ago, usegmt=True)


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).filter(lambda s: s.strip() == s)
retry_afters = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 0).map(str),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-0", "0",
                     "0.0", "1e-300", "", "soon", "Wed, 21 Oct 2015 07:28:00 GMT",
                     "Thu, 01 Jan 1970 00:00:00 GMT", "Mon, 32 Foo 99999 99:99:99 GMT"]),
    st.floats(1, 10**9).map(_past_date),
    header_text,
)


def _minimum_backoff(policy: seg_mod.Policy, retry: int) -> float:
    return 0.5 * min(policy.backoff_cap, policy.backoff * 2 ** (retry - 1))


@pytest.fixture(scope="module")
def busy_server():
    with FakeSegment() as server:
        yield server


@settings(max_examples=60, **CLI)
@given(raw=retry_afters)
@example(raw="-5")
@example(raw="nan")
@example(raw="inf")
@example(raw=_past_date(3600))
def test_a_retry_after_asking_for_no_wait_gets_the_normal_backoff(busy_server, raw):
    """Whatever the header says, no wait is shorter than the backoff, and the
    attempts are spread over seconds (the fake clock), never a tight loop."""
    busy_server.down("/v1/batch", status=503, retry_after=raw)
    try:
        policy, ft = seg_mod.Policy(), FakeTime()
        with seg_mod.build_client(policy=policy) as client, pytest.raises(NetworkError) as info:
            seg_mod.request(client, "POST", f"{busy_server.url}/v1/batch", policy=policy,
                            key=KEY, content=b'{"batch":[]}', sleep=ft.sleep, clock=ft.clock)
    finally:
        busy_server.up()
    assert "\n" not in info.value.message
    assert all(math.isfinite(s) and s > 0 for s in ft.sleeps)
    for retry, slept in enumerate(ft.sleeps, 1):
        assert slept >= _minimum_backoff(policy, retry)
    asked = _seconds(raw)
    if "asked to retry after" in info.value.message:  # only a real, long wait stops at once
        assert ft.sleeps == [] and asked is not None and asked > policy.retry_after_cap
    elif asked is not None:  # a usable wait: honoured, until the deadline
        assert ft.sleeps and all(s >= asked for s in ft.sleeps)
    else:
        assert len(ft.sleeps) == policy.attempts - 1
        assert sum(ft.sleeps) >= sum(_minimum_backoff(policy, r) for r in range(1, 6))


def _seconds(raw: str) -> float | None:
    """A usable wait in a Retry-After number (dates here are all in the past)."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


@pytest.mark.parametrize("raw,waited", [("3", 3.0), ("9.5", 9.5)])
def test_a_usable_retry_after_is_still_honoured(busy_server, raw, waited):
    busy_server.fault("/v1/batch", status=429, retry_after=raw)
    policy, ft = seg_mod.Policy(), FakeTime()
    with seg_mod.build_client(policy=policy) as client:
        d = seg_mod.request(client, "POST", f"{busy_server.url}/v1/batch", policy=policy,
                            key=KEY, content=b'{"batch":[]}', sleep=ft.sleep, clock=ft.clock)
    assert d.attempts == 2 and ft.sleeps == [waited]


# Deeply nested TOML ---------------------------------------------------------------------

STATUS = ("integrations", "segment", "status")


def _nested(kind: str, depth: int) -> str:
    """A TOML document nested ``depth`` deep, in one of the ways TOML nests."""
    if kind == "array":
        return "a = " + "[" * depth + "]" * depth + "\n"
    if kind == "inline":
        return "a = " + "{b = " * depth + "1" + "}" * depth + "\n"
    if kind == "dotted":
        return ".".join(["k"] * depth) + " = 1\n"
    if kind == "header":
        return "[" + ".".join(["t"] * depth) + "]\nx = 1\n"
    if kind == "array_of_tables":
        return "[[" + ".".join(["t"] * depth) + "]]\nx = 1\n"
    if kind == "inline_dotted":
        return "a = {" + ".".join(["k"] * depth) + " = 1}\n"
    # mixed: a table of arrays of inline tables of dotted keys
    third = max(1, depth // 3)
    return ("a = " + "[" * third + "{" + ".".join(["k"] * third) + " = " + "{b = " * third
            + "1" + "}" * third + "}" + "]" * third + "\n")


KINDS = ["array", "inline", "dotted", "header", "array_of_tables", "inline_dotted", "mixed"]
deep = st.one_of(st.integers(60, 400), st.integers(400, 30_000))


def _config_with(config_dir, body: str, name: str = "config.toml") -> None:
    config_dir.mkdir(mode=0o700, exist_ok=True)
    path = config_dir / name
    path.write_text('[projects.default.segment]\nenabled = true\nkey_storage = "file"\n'
                    if name != "config.toml" else "")
    with path.open("a") as fh:
        fh.write(body)
    path.chmod(0o600)


@settings(max_examples=40, **CLI)
@given(kind=st.sampled_from(KINDS), depth=deep, where=st.sampled_from(["start", "end"]),
       name=st.sampled_from(["config.toml", "secrets.toml"]))
def test_toml_nested_deep_is_exit_7_in_one_line(cli, config_dir, kind, depth, where, name):
    from tests.conftest import one_error_line

    nested = _nested(kind, depth)
    # Ahead of the nesting, or behind a valid table (secrets.toml's is read too).
    body = nested if where == "start" else "[other]\nx = 1\n" + nested.replace("a = ", "z = ")
    if name == "secrets.toml":
        _config_with(config_dir, '[projects.default.segment]\nenabled = true\n'
                     'key_storage = "file"\n')
        (config_dir / "secrets.toml").write_text(body)
        (config_dir / "secrets.toml").chmod(0o600)
    else:
        _config_with(config_dir, body)
    line = one_error_line(cli(*STATUS), 7)
    assert name in line and ("nested" in line or "not valid TOML" in line), line


@pytest.mark.parametrize("kind", KINDS)
def test_toml_nested_within_the_limit_still_reads(config_dir, kind):
    from avsb_cli import config

    _config_with(config_dir, _nested(kind, 12))
    assert config.read_toml(config_dir / "config.toml")


def test_strings_and_comments_do_not_count_as_nesting(config_dir):
    from avsb_cli import config

    body = ('a = "' + "[{." * 400 + '"\nb = \'' + "[" * 400 + "'\n# " + "." * 900 + "\n"
            'c = """\n' + "{" * 300 + '\n"""\nd = \'\'\'' + "." * 100 + "'''\n"
            'e = "\\"[[[[[[[[[[[[[[[[[[[[[[["\n')
    _config_with(config_dir, body)
    assert config.read_toml(config_dir / "config.toml")["b"] == "[" * 400


def test_a_huge_config_is_refused_unread(config_dir):
    from avsb_cli import config
    from avsb_cli.errors import ConfigError

    _config_with(config_dir, "# padding\n" * (config.MAX_TOML_BYTES // 10 + 10))
    with pytest.raises(ConfigError, match="far too big"):
        config.read_toml(config_dir / "config.toml")


# Runs avsb and prints its exit code and peak RSS in KB. A small process of its
# own: a child's peak counts the pages it had before exec, and a child forked
# from pytest would start with pytest's whole memory.
_RSS_WRAPPER = """
import os, subprocess, sys
proc = subprocess.Popen([sys.executable, "-m", "avsb_cli", *sys.argv[1:]],
                        stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """Run avsb as a real process: exit code, its own peak RSS in MB, stderr."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *args], env=env,
                          capture_output=True, text=True, timeout=120)
    code, peak_kb = proc.stdout.split()
    return int(code), int(peak_kb) / 1024, proc.stderr


@pytest.mark.parametrize("kind", ["dotted", "array"])
def test_deep_toml_in_a_real_process_keeps_memory_flat(config_dir, kind):
    from tests.conftest import avsb_env

    _config_with(config_dir, '[projects.default.segment]\nenabled = true\n')
    code, usual, err = _peak_rss_mb(list(STATUS), avsb_env())
    assert code == 0, err
    (config_dir / "config.toml").write_text(_nested(kind, 100_000))
    code, peak, err = _peak_rss_mb(list(STATUS), avsb_env())
    assert code == 7 and "Traceback" not in err and err.count("\n") == 1, err
    # No more than a usual status (tomllib took over 4 GB for the dotted key).
    assert peak < usual + 10, f"peak RSS {peak:.0f} MB, a usual status {usual:.0f} MB"


# Closed and full standard streams --------------------------------------------------------

# Every command, as a user would run it; "{file}" is an enrollments file.
COMMANDS = {
    "version": ["--version"],
    "help": ["--help"],
    "group help": ["integrations"],
    "list": ["integrations", "list"],
    "status": ["integrations", "segment", "status"],
    "status json": ["integrations", "segment", "status", "--json"],
    "enable": ["integrations", "segment", "enable", "--auto-detect"],
    "enable json": ["integrations", "segment", "enable", "--auto-detect", "--json"],
    "disable": ["integrations", "segment", "disable"],
    "test-event": ["segment", "test-event"],
    "test-event dry-run": ["segment", "test-event", "--dry-run", "--json"],
    "validate": ["segment", "validate"],
    "send": ["segment", "send", "{file}"],
    "completion": ["completion", "bash"],
    "usage error": ["integrations", "list", "--no-such-option"],
}
STDIN_READERS = {
    "enable --write-key-stdin": ["integrations", "segment", "enable", "--write-key-stdin"],
    "send -": ["segment", "send", "-"],
}
ENROLLMENT = ('{"experiment_id":"e1","experiment_name":"E","variation_id":"v1",'
              '"variation_name":"V","user_id":"u1","timestamp":"2026-01-02T03:04:05Z"}\n')


def _run_with(args: list[str], env: dict[str, str], *, stdout: str = "pipe",
              stdin: str = "devnull"):
    """Run avsb for real with fd 0 or 1 closed ("closed") or on /dev/full ("full")."""
    import os
    import subprocess
    import sys

    from tests.conftest import Run

    def closing() -> None:
        if stdout == "closed":
            os.close(1)
        if stdin == "closed":
            os.close(0)

    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "avsb_cli", *args], env=env, preexec_fn=closing,
            stdout=full if stdout == "full" else subprocess.PIPE,
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    return Run(proc.returncode, proc.stdout or "", proc.stderr)


@pytest.fixture
def real_env(tmp_path, segment):
    from tests.conftest import avsb_env

    (tmp_path / "in.jsonl").write_text(ENROLLMENT)
    return avsb_env(AVSB_SEGMENT_WRITE_KEY=KEY, AVSB_CONFIG_DIR=str(tmp_path / "cfg"),
                    PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")


def _args(args: list[str], tmp_path) -> list[str]:
    return [a.replace("{file}", str(tmp_path / "in.jsonl")) for a in args]


def _one_clean_error(r) -> str:
    # Notes for people may come first; one error line, and nothing after it.
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("avsb: error: ")]
    assert r.exit_code != 0, r.stderr
    assert len(errors) == 1 and r.stderr.endswith(errors[0] + "\n"), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    return errors[0]


@pytest.mark.parametrize("stdout", ["closed", "full"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_closed_or_full_stdout_is_one_error_line(real_env, tmp_path, name, stdout):
    r = _run_with(_args(COMMANDS[name], tmp_path), real_env, stdout=stdout)
    line = _one_clean_error(r)
    assert "standard output" in line or name == "usage error", line


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_closed_stdin_does_not_matter_to_commands_that_do_not_read_it(real_env, tmp_path,
                                                                       name):
    r = _run_with(_args(COMMANDS[name], tmp_path), real_env, stdin="closed")
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert r.exit_code == (2 if name in ("usage error", "group help") else 0), r.stderr


@pytest.mark.parametrize("name", sorted(STDIN_READERS))
def test_closed_stdin_is_one_error_line_for_commands_that_read_it(real_env, name):
    line = _one_clean_error(_run_with(STDIN_READERS[name], real_env, stdin="closed"))
    assert "standard input" in line


def test_a_closed_stdout_never_lets_a_file_take_its_place(real_env, tmp_path):
    """With fd 1 closed, the config file opened next would be fd 1: nothing may
    write into it by accident."""
    r = _run_with(COMMANDS["enable"], real_env, stdout="closed")
    _one_clean_error(r)
    config = tmp_path / "cfg" / "config.toml"
    assert not config.exists() or "avsb" not in config.read_text()


# The key stays where it belongs --------------------------------------------------------

class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards nothing and records everything it gets."""

    def __init__(self) -> None:
        import socket
        import threading

        self.received: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.received.append(data)
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    self.received.append(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy():
    p = RecordingProxy()
    yield p
    p.close()


PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]


def _closed_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("var", PROXY_VARS)
@pytest.mark.parametrize("command", [("segment", "test-event"), ("segment", "validate"),
                                     ("segment", "send", "{file}")])
def test_a_loopback_endpoint_never_goes_through_a_proxy(cli, monkeypatch, segment, proxy,
                                                       tmp_path, var, command):
    (tmp_path / "in.jsonl").write_text(ENROLLMENT)
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv(var, proxy.url)
    r = cli(*_args(list(command), tmp_path))
    assert r.exit_code == 0, r.output
    assert proxy.received == []
    assert {q.write_key for q in segment.requests if q.path != "/v1/projects"} >= {KEY}


@pytest.mark.parametrize("host", ["127.0.0.2", "127.1.2.3", "127.255.255.254"])
def test_any_loopback_address_goes_direct_too(cli, monkeypatch, proxy, host):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("AVSB_TIMEOUT", "2")
    for var in PROXY_VARS:
        monkeypatch.setenv(var, proxy.url)
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", f"http://{host}:{_closed_port(host)}")
    r = cli("segment", "test-event")
    assert r.exit_code == 6 and "refused" in r.stderr, r.output  # it went there, directly
    assert proxy.received == []


loopback_names = st.one_of(
    st.sampled_from(["localhost", "LOCALHOST", "localhost.", "localhost.localdomain",
                     "foo.localhost", "a.b.localhost", "localhost6", "ip6-localhost",
                     "127.0.0.1.nip.io", "loopback", "0x7f.0.0.1", "2130706433", "127.1",
                     "0177.0.0.1", "[::ffff:127.0.0.1]", "127.0.0.1.", "localhost.evil.com"]),
    st.from_regex(r"[a-z0-9-]{1,12}\.localhost", fullmatch=True),
)


@settings(max_examples=60, **CLI)
@given(host=loopback_names)
def test_plain_http_is_refused_for_any_name(cli, monkeypatch, host):
    """Only a literal loopback address may take plain http: a name (even
    localhost) is resolved and proxied by name, out of avsb's sight."""
    from avsb_cli import endpoints
    from avsb_cli.errors import UsageError

    with pytest.raises(UsageError, match="plain http"):
        endpoints.normalise_url(f"http://{host}:8080")
    r = cli("integrations", "segment", "enable", "--endpoint", f"http://{host}:8080",
            "--auto-detect")
    assert r.exit_code == 2 and "plain http" in r.stderr


@settings(max_examples=40, deadline=None)
@given(address=st.ip_addresses(v=4, network="127.0.0.0/8"), port=st.integers(1, 65535))
def test_plain_http_is_allowed_for_literal_loopback_addresses(address, port):
    from avsb_cli import endpoints

    assert endpoints.normalise_url(f"http://{address}:{port}/v1") == f"http://{address}:{port}"
    assert endpoints.normalise_url(f"http://[::1]:{port}") == f"http://[::1]:{port}"


def _no_part_of_key(text: str, key: str = KEY) -> None:
    """Not the key, nor any 8 characters of it in a row (the mask shows 4)."""
    for i in range(len(key) - 7):
        assert key[i:i + 8] not in text, (key[i:i + 8], text)


@pytest.mark.parametrize("offset", range(0, 240, 3))
def test_server_text_is_redacted_before_it_is_shortened(offset):
    import httpx

    from avsb_cli import writekey

    writekey.remember_secret(KEY)
    for body in (b"x" * offset + KEY.encode() + b" trailing",
                 ('{"message": "' + "y" * offset + KEY + '"}').encode()):
        said = seg_mod.segment_message(httpx.Response(400, content=body))
        _no_part_of_key(said)
        assert len(said) <= 200


def test_a_400_echoing_the_key_late_in_its_text_shows_none_of_it(cli, segment, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    for offset in (150, 165, 170, 190, 196):
        segment.fault("/v1/track", status=400, body=("z" * offset + KEY).encode())
        r = cli("segment", "test-event", "--json")
        assert r.exit_code == 6, r.output
        _no_part_of_key(r.output)


spaces = st.text(" \t\r\n", max_size=4)


@settings(max_examples=30, **CLI)
@given(before=spaces, after=spaces.filter(bool), where=st.sampled_from(["keyring", "file"]))
def test_a_stored_key_with_whitespace_is_used_and_masked_as_the_key(
        cli, config_dir, memory_keyring, segment, before, after, where):
    from avsb_cli import writekey

    flags = ["--insecure-storage"] if where == "file" else []
    assert cli("integrations", "segment", "enable", "--write-key-stdin", *flags,
               input=KEY).exit_code == 0
    if where == "keyring":
        memory_keyring.set_password("avsb", "segment:default", before + KEY + after)
    else:
        (config_dir / "secrets.toml").write_text(
            f'[segment]\ndefault = "{(before + KEY + after).encode("unicode_escape").decode()}"\n')
    writekey._SECRETS.clear()
    doc = cli("integrations", "segment", "status", "--json").json()
    assert doc["key_state"] == "ok" and doc["key_masked"] == writekey.mask(KEY)
    assert doc["key_changed_outside_avsb"] is False
    segment.requests.clear()
    assert cli("segment", "test-event").exit_code == 0
    assert [q.write_key for q in segment.requests] == [KEY]


@settings(max_examples=60, deadline=None)
@given(key=st.text(st.characters(categories=["Lu", "Ll"], max_codepoint=0x7F),
                   min_size=16, max_size=40).filter(
    lambda s: any(c.isupper() for c in s) and any(c.islower() for c in s)))
def test_usage_errors_mask_key_shaped_words_without_digits(key):
    from typer.testing import CliRunner

    from avsb_cli.cli import app

    r = CliRunner().invoke(app, ["integrations", "segment", "enable", "--write-key-stdin", key])
    assert r.exit_code == 2 and key not in r.output


@pytest.mark.parametrize("word", ["my-shop-production", "integrations_segment", "shop.eu.west.1",
                                  "averyveryverylongprojectname", "--write-key-stdin"])
def test_usage_errors_keep_ordinary_words(cli, word):
    r = cli("integrations", "list", word)
    assert r.exit_code == 2 and word in r.stderr, r.stderr


# Owner-only files, whatever the umask -------------------------------------------------

ENABLE_FILE = ["integrations", "segment", "enable", "--write-key-stdin", "--insecure-storage"]


def _umask_run(args: list[str], env: dict[str, str], umask: int, input: str | None = None,
               cwd=None):
    import os
    import subprocess
    import sys

    from tests.conftest import Run

    proc = subprocess.run([sys.executable, "-m", "avsb_cli", *args], env=env, input=input,
                          preexec_fn=lambda: os.umask(umask), capture_output=True, text=True,
                          timeout=60, cwd=cwd)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _modes(top) -> dict[str, int]:
    import os

    found = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, top)] = os.stat(path).st_mode & 0o777
    return found


@pytest.mark.parametrize("umask", [0o000, 0o002, 0o022, 0o077])
@pytest.mark.parametrize("where", ["AVSB_CONFIG_DIR", "HOME"])
def test_everything_avsb_creates_is_owner_only_whatever_the_umask(tmp_path, umask, where):
    from tests.conftest import avsb_env

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    extra = {"HOME": str(home), "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}
    if where == "AVSB_CONFIG_DIR":
        extra["AVSB_CONFIG_DIR"] = str(home / "a" / "b" / "avsb")
    env = avsb_env(**extra)
    if where == "HOME":  # ~/.config/avsb, ~/.config made by avsb
        env.pop("AVSB_CONFIG_DIR", None)
        env.pop("XDG_CONFIG_HOME", None)
    r = _umask_run(ENABLE_FILE, env, umask, input=KEY, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    modes = _modes(home)
    assert any(name.endswith("secrets.toml") for name in modes), modes
    assert {n: m for n, m in modes.items() if m not in (0o700, 0o600)} == {}
    for name, mode in modes.items():
        assert mode == (0o700 if (home / name).is_dir() else 0o600), (name, oct(mode))


def test_the_shared_private_open_ignores_the_umask_and_symlinks(tmp_path):
    """send's failed-events file can use the same helper."""
    import os

    from avsb_cli import config

    old = os.umask(0)
    try:
        fd = config.open_private(tmp_path / "failed.jsonl")
        os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "failed.jsonl").stat().st_mode & 0o777 == 0o600
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    victim.chmod(0o644)
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError):
        config.open_private(tmp_path / "link")
    assert victim.read_text() == "keep me" and victim.stat().st_mode & 0o777 == 0o644


@settings(max_examples=40, **CLI)
@given(extra=st.integers(0, 0o077), which=st.sampled_from(["folder", "config.toml",
                                                            "secrets.toml"]))
def test_config_others_may_write_is_refused(cli, config_dir, memory_keyring, extra, which):
    assert cli(*ENABLE_FILE, input=KEY).exit_code == 0
    path = config_dir if which == "folder" else config_dir / which
    base = 0o700 if which == "folder" else 0o600
    path.chmod(base | extra)
    try:
        r = cli("integrations", "segment", "status", "--json")
        if extra & 0o022:
            from tests.conftest import one_error_line

            line = one_error_line(r, 7)
            assert "writable by others" in line and "chmod" in line
            assert r.json()["error"]["code"] == "config"
        else:
            assert r.exit_code == 0 and r.json()["key_state"] == "ok", r.output
    finally:
        path.chmod(base)


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid(),
                    reason="changing a file's owner needs root")
@pytest.mark.parametrize("which", ["folder", "config.toml", "secrets.toml"])
def test_config_owned_by_someone_else_is_refused(cli, config_dir, which):
    import os

    from tests.conftest import one_error_line

    assert cli(*ENABLE_FILE, input=KEY).exit_code == 0
    path = config_dir if which == "folder" else config_dir / which
    before = (config_dir / "config.toml").read_bytes()
    os.chown(path, 65534, 65534)
    try:
        # disable reads no secrets.toml (the key stays where it is)
        for args in (["integrations", "segment", "status"],
                     ["integrations", "segment", "disable", "--forget-key"]):
            line = one_error_line(cli(*args), 7)
            assert "belongs to another user" in line
    finally:
        os.chown(path, 0, 0)
    assert (config_dir / "config.toml").read_bytes() == before


# A plaintext "keyring" ------------------------------------------------------------------

PLAIN = "tests.support.plainkeyring.PlaintextKeyring"


@pytest.mark.parametrize("json_mode", [False, True])
def test_a_plaintext_keyring_is_shown_as_insecure_storage(tmp_path, json_mode):
    import json

    from tests.conftest import avsb_env, run_avsb

    env = avsb_env(PYTHON_KEYRING_BACKEND=PLAIN, AVSB_CONFIG_DIR=str(tmp_path / "cfg"))
    flags = ["--json"] if json_mode else []
    for args, stdin in ((["integrations", "segment", "enable", "--write-key-stdin"], KEY),
                        (["integrations", "segment", "status"], None)):
        r = run_avsb(*args, *flags, env=env, input=stdin)
        assert r.exit_code == 0, r.output
        if json_mode:
            doc = json.loads(r.stdout)
            assert doc["key_state"] == "ok"
            assert "PlaintextKeyring" in doc["insecure_storage"]
            assert "plain file" in doc["insecure_storage"]
        else:
            assert "insecure storage" in r.stdout and "PlaintextKeyring" in r.stdout
        assert KEY not in r.output


def test_a_real_keyring_is_not_called_insecure(cli, enabled):
    doc = cli("integrations", "segment", "status", "--json").json()
    assert doc["key_state"] == "ok" and doc["insecure_storage"] is None


def test_a_chain_holding_a_plaintext_keyring_is_insecure():
    from avsb_cli import keystore
    from tests.support.memkeyring import MemoryKeyring
    from tests.support.plainkeyring import PlaintextKeyring

    class Chain:
        backends = [MemoryKeyring(), PlaintextKeyring()]

    assert keystore.insecure_reason(MemoryKeyring()) is None
    assert "PlaintextKeyring" in (keystore.insecure_reason(Chain()) or "")


# A hung keyring: one deadline in total ---------------------------------------------------

@pytest.mark.parametrize("silent", [False, True], ids=["answers-hello-only", "silent"])
@pytest.mark.parametrize("args", [["integrations", "segment", "status", "--json"],
                                  ["segment", "test-event", "--dry-run", "--json"],
                                  ["integrations", "segment", "disable", "--forget-key"]])
def test_a_hung_secret_service_ends_within_the_keyring_timeout_in_total(tmp_path, silent, args):
    """The fast path (jeepney) and keyring's own backend share one deadline: a
    bus that answers Hello and then nothing took 5 s of the fast path's own
    timeout plus the whole keyring timeout (6 s became 11 s)."""
    import json
    import subprocess
    import sys

    from tests.conftest import avsb_env
    from tests.support.fakebus import HungBus

    timeout = 6.0
    cfg = tmp_path / "cfg"
    cfg.mkdir(mode=0o700)
    (cfg / "config.toml").write_text('[projects.default.segment]\nenabled = true\n'
                                     'mode = "write-key"\nkey_storage = "keyring"\n')
    (cfg / "config.toml").chmod(0o600)
    with HungBus(tmp_path / "bus", silent=silent) as address:
        env = avsb_env(AVSB_CONFIG_DIR=str(cfg), DBUS_SESSION_BUS_ADDRESS=address,
                       HOME=str(tmp_path), AVSB_KEYRING_TIMEOUT=f"{timeout:g}")
        for name in ("PYTHON_KEYRING_BACKEND", "XDG_CONFIG_HOME", "XDG_CURRENT_DESKTOP"):
            env.pop(name, None)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "avsb_cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    assert "Traceback" not in proc.stderr
    # The deadline, plus start-up and exit on a loaded machine; never a second timeout.
    assert took < timeout + 3.5, f"{took:.1f}s for a {timeout:g}s keyring timeout"
    # A silent bus fails authentication within a second: no keyring, not a hang.
    said = "no keyring backend" if silent else f"within {timeout:g}s"
    if args[-1] == "--forget-key":
        assert proc.returncode == 4 and said in proc.stderr, proc.stderr
    elif "status" in args:
        doc = json.loads(proc.stdout)
        assert doc["key_state"] == "unavailable" and said in doc["key_problem"]
    else:
        assert proc.returncode == 0, proc.stderr  # a dry run needs no key


def test_the_deadline_is_shared_by_every_step(monkeypatch, hanging_after_fast_path):
    """In-process: a fast path that used up part of the time leaves only the rest."""
    from avsb_cli import keystore
    from avsb_cli.errors import KeyringUnavailableError

    monkeypatch.setenv("AVSB_KEYRING_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(KeyringUnavailableError, match="within 1s"):
        keystore.get_key("default")
    assert time.monotonic() - started < 1.5


@pytest.fixture
def hanging_after_fast_path(monkeypatch):
    """A fast path that takes 0.6 s to say "not there", then a keyring that hangs."""
    import keyring

    from avsb_cli import keystore
    from tests.support.memkeyring import HangingKeyring

    def slow_lookup(project):
        return keystore._bounded("reading the key", lambda: time.sleep(0.6))

    monkeypatch.setattr(keystore, "secret_service_lookup", slow_lookup)
    HangingKeyring.release.clear()
    keyring.set_keyring(HangingKeyring())
    keystore.reset()
    yield
    HangingKeyring.release.set()


# Racing `enable`s of one project --------------------------------------------------------

KEYS = [f"Rk{i}x" + "Zq7Xk2LmP9vR4tYw8NcB3hJd6Fg"[: 27] for i in range(6)]


def _race(env: dict[str, str], extra: list[str], project: str, tmp_path, n: int = 6):
    """``n`` real processes enabling ``project``, each with its own key, at once."""
    import subprocess
    import sys

    procs = []
    for i, key in enumerate(KEYS[:n]):
        (tmp_path / f"key{i}").write_text(key)
        with open(tmp_path / f"key{i}") as stdin:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "avsb_cli", "integrations", "segment", "enable",
                 "--write-key-stdin", "-p", project, "--json", *extra],
                env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
    outs = [proc.communicate(timeout=120) for proc in procs]
    return [(proc.returncode, *out) for proc, out in zip(procs, outs, strict=True)]


def _check_race(outs, stored_key: str | None, config_dir, project: str) -> None:
    import tomllib

    from avsb_cli.writekey import fingerprint

    for _, _out, err in outs:
        assert "Traceback" not in err
    for code, _out, err in outs:
        assert "Traceback" not in err
        # A lost race is not a broken keyring: never exit 4 with "--insecure-storage".
        assert code == 0, err
    seg = tomllib.loads((config_dir / "config.toml").read_text())["projects"][project]["segment"]
    assert stored_key in KEYS
    assert seg["key_fingerprint"] == fingerprint(stored_key)  # config and store agree


@pytest.mark.parametrize("round_", range(3))
def test_racing_enables_with_the_file_store_all_succeed(tmp_path, round_):
    import tomllib

    from tests.conftest import avsb_env

    cfg = tmp_path / "cfg"
    env = avsb_env(AVSB_CONFIG_DIR=str(cfg), PYTHON_KEYRING_BACKEND=PLAIN)
    outs = _race(env, ["--insecure-storage"], "shop", tmp_path)
    stored = tomllib.loads((cfg / "secrets.toml").read_text())["segment"]["shop"]
    _check_race(outs, stored, cfg, "shop")


@pytest.mark.secret_service
@pytest.mark.parametrize("round_", range(3))
def test_racing_enables_with_the_secret_service_all_succeed(secret_service, tmp_path, round_):
    import subprocess

    from tests.conftest import avsb_env

    cfg = tmp_path / "cfg"
    env = avsb_env(**secret_service, AVSB_CONFIG_DIR=str(cfg))
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env.pop("PYTHON_KEYRING_BACKEND", None)
    project = f"race{round_}"
    outs = _race(env, [], project, tmp_path)
    stored = subprocess.run(["secret-tool", "lookup", "service", "avsb", "username",
                             f"segment:{project}"], env=env, capture_output=True, text=True,
                            timeout=20).stdout
    _check_race(outs, stored, cfg, project)
