"""Shared fixtures.

Every test runs with its own config folder, an in-memory keyring, no colour,
a fixed width, and no AVSB_* variables from the outside. Sockets may only go
to loopback: a connection or a name lookup for any other host fails as if
the network were down, so no test can depend on (or touch) the internet.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import keyring
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# CI runs the same generated inputs every time (a red CI must be reproducible);
# local runs explore new ones.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

from avsb_cli import keystore  # noqa: E402
from avsb_cli.cli import app  # noqa: E402
from tests.support.fakesegment import FakeSegment  # noqa: E402
from tests.support.memkeyring import MemoryKeyring  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")

# A made-up key of the usual shape; tests scan all output for it.
KEY = "Zq7Xk2LmP9vR4tYw8NcB3hJd6FgS5aQe"
KEY2 = "Hn4Vb8Mc2Xz6Lk9Pq3Wr7Ts5Yu1Io0Ea"


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost",) or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guard(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) else address
        if not _is_loopback(host):
            raise ConnectionRefusedError(f"tests may not connect to {host!r} (loopback only)")


def _connect(self: socket.socket, address: object) -> None:
    _guard(self, address)
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    _guard(self, address)
    return _real_connect_ex(self, address)


def _getaddrinfo(host: object, *args: object, **kw: object):  # type: ignore[no-untyped-def]
    if host is not None and not _is_loopback(host if isinstance(host, str) else ""):
        # As if DNS had no answer; nothing leaves the machine.
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _real_getaddrinfo(host, *args, **kw)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only():
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _connect)
    mp.setattr(socket.socket, "connect_ex", _connect_ex)
    mp.setattr(socket, "getaddrinfo", _getaddrinfo)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AVSB_") or name in ("PYTHON_KEYRING_BACKEND",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AVSB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("AVSB_KEYRING_TIMEOUT", "3")
    return tmp_path


@pytest.fixture(autouse=True)
def _forget_secrets():
    """Keys one test made avsb remember (and mask in all output) don't mask
    another test's output: hypothesis tests remember hundreds of random ones."""
    from avsb_cli import writekey

    writekey._SECRETS.clear()
    yield
    writekey._SECRETS.clear()


@pytest.fixture(autouse=True)
def memory_keyring():
    """An in-memory keyring for each test (the real one is tested separately)."""
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    keystore.reset()
    yield kr
    keyring.set_keyring(previous)
    keystore.reset()


@pytest.fixture(autouse=True)
def _forget_seen_secrets():
    """writekey remembers every key it sees, for the whole process, to redact
    output. Hypothesis feeds it strings from our own source ("endpoint"), which
    a later test would then see masked: start each test with none."""
    from avsb_cli import writekey

    writekey._SECRETS.clear()
    yield
    writekey._SECRETS.clear()


@pytest.fixture
def config_dir(env) -> Path:
    return Path(os.environ["AVSB_CONFIG_DIR"])


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):  # type: ignore[no-untyped-def]
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cli():
    """Run avsb in-process: cli("integrations", "list", input=..., env={...})."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        result = runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


def one_error_line(run: Run, code: int) -> str:
    """Assert exit ``code`` and exactly one error line on stderr; return it."""
    assert run.exit_code == code, run.output
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("avsb: error: ")
    assert "Traceback" not in run.output
    return lines[0]


@pytest.fixture
def enabled(cli, segment):
    """The default project enabled with KEY in the keyring; yields the fake Segment."""
    r = cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY)
    assert r.exit_code == 0, r.output
    return segment


@pytest.fixture
def segment(monkeypatch):
    """A fake Segment (tracking API and settings CDN) on 127.0.0.1, wired in by env."""
    server = FakeSegment().start()
    server.add_key(KEY, "us")
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", server.url)
    monkeypatch.setenv("AVSB_SEGMENT_CDN_URL", server.url)
    monkeypatch.setenv("AVSB_TIMEOUT", "5")
    yield server
    server.stop()


# Real processes ----------------------------------------------------------------


def avsb_env(**extra: str) -> dict[str, str]:
    """The environment for running avsb as a subprocess from a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_avsb(*args: str, env: dict[str, str], input: str | None = None, timeout: float = 60):
    """Run ``python -m avsb_cli`` as a real process; returns a Run."""
    import subprocess

    # Without input, stdin is /dev/null, not whatever pytest had (a terminal
    # under `pytest -s`, where avsb would prompt).
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    proc = subprocess.run(
        [sys.executable, "-m", "avsb_cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, **stdin,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _required(var: str) -> bool:
    return os.environ.get(var, "") not in ("", "0")


@pytest.fixture(scope="session")
def secret_service(tmp_path_factory):
    """A private D-Bus session with an unlocked gnome-keyring; yields its env vars.

    Skipped where gnome-keyring or dbus is missing, unless
    AVSB_REQUIRE_SECRET_SERVICE=1 (CI), where it fails instead.
    """
    from tests.support.secretservice import missing_tools, private_secret_service

    missing = missing_tools(("secret-tool",))
    if missing:
        msg = f"no Secret Service here: {', '.join(missing)} not installed"
        if _required("AVSB_REQUIRE_SECRET_SERVICE"):
            pytest.fail(msg)
        pytest.skip(msg)
    with private_secret_service(tmp_path_factory.mktemp("ss-home")) as env:
        yield env


# A vs B --------------------------------------------------------------------------


@pytest.fixture
def avsb(monkeypatch):
    """A strict A vs B stand-in on 127.0.0.1 with one org, a personal token and
    two projects ("default" and "shop"), wired in by AVSB_API_URL and AVSB_ORG."""
    from tests.support.fakeavsb import ORG, PAT, FakeAvsb

    server = FakeAvsb().start()
    server.add_token(PAT)
    server.add_project("prj_default1", "default", "dflt01")
    server.add_project("prj_shop2222", "shop", "shop22")
    monkeypatch.setenv("AVSB_API_URL", server.url)
    monkeypatch.setenv("AVSB_ORG", ORG)
    monkeypatch.setenv("AVSB_TIMEOUT", "5")
    yield server
    server.stop()


@pytest.fixture
def logged_in(cli, avsb):
    """Logged in to the stand-in with its personal token (kept in the memory keyring)."""
    from tests.support.fakeavsb import PAT

    r = cli("login", "--with-token", input=PAT)
    assert r.exit_code == 0, r.output
    avsb.requests.clear()
    return avsb
