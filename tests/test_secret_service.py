"""avsb against a real Secret Service: gnome-keyring on a private D-Bus.

Each test runs avsb as a real process (``python -m avsb_cli``) whose keyring
library picks the SecretService backend on its own, and checks the result
with ``secret-tool``, the way a user would. Projects differ per test because
the Secret Service is shared by the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from avsb_cli.errors import ExitCode
from tests.conftest import KEY, KEY2, avsb_env, run_avsb

pytestmark = pytest.mark.secret_service

ENABLE = ("integrations", "segment", "enable")
DISABLE = ("integrations", "segment", "disable")
STATUS = ("integrations", "segment", "status")


@pytest.fixture
def ss_env(secret_service, tmp_path):
    env = avsb_env(**secret_service)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # no stray keyringrc.cfg
    env.pop("PYTHON_KEYRING_BACKEND", None)
    return env


def lookup(env: dict[str, str], project: str) -> str | None:
    r = subprocess.run(
        ["secret-tool", "lookup", "service", "avsb", "username", f"segment:{project}"],
        env=env, capture_output=True, text=True, timeout=20,
    )
    return r.stdout if r.returncode == 0 else None


def avsb(env: dict[str, str], *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    r = run_avsb(*args, env=env, input=input)
    for key in (KEY, KEY2):
        assert key not in r.stdout and key not in r.stderr
    return r


def test_backend_is_secret_service(ss_env):
    code = "import keyring; kr = keyring.get_keyring(); print(type(kr).__module__)"
    r = subprocess.run([sys.executable, "-c", code], env=ss_env, capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == "keyring.backends.SecretService", r.stderr


def test_enable_stores_in_secret_service_and_status_masks_it(ss_env, config_dir):
    p = "ss-enable"
    r = avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, "--json", input=KEY + "\n")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["key_storage"] == "keyring"
    assert lookup(ss_env, p) == KEY
    assert KEY not in (config_dir / "config.toml").read_text(encoding="utf-8")
    doc = json.loads(avsb(ss_env, *STATUS, "-p", p, "--json").stdout)
    assert doc["key_state"] == "ok" and doc["key_source"] == "keyring"
    assert doc["key_masked"] == "…" + KEY[-4:]
    r = avsb(ss_env, *STATUS, "-p", p)
    assert "…" + KEY[-4:] in r.stdout and "keyring" in r.stdout


def test_enable_again_replaces_the_item(ss_env):
    p = "ss-replace"
    assert avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input=KEY).exit_code == 0
    assert avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input=KEY2).exit_code == 0
    assert lookup(ss_env, p) == KEY2


def test_item_cleared_outside_avsb_shows_missing(ss_env):
    p = "ss-clear"
    assert avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input=KEY).exit_code == 0
    subprocess.run(["secret-tool", "clear", "service", "avsb", "username", f"segment:{p}"],
                   env=ss_env, check=True, timeout=20)
    assert lookup(ss_env, p) is None
    doc = json.loads(avsb(ss_env, *STATUS, "-p", p, "--json").stdout)
    assert doc["key_state"] == "missing" and doc["key_masked"] is None
    assert "MISSING" in avsb(ss_env, *STATUS, "-p", p).stdout


def test_disable_keeps_key_and_forget_key_removes_it(ss_env):
    p = "ss-forget"
    assert avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input=KEY).exit_code == 0
    r = avsb(ss_env, *DISABLE, "-p", p, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["enabled"] is False
    assert lookup(ss_env, p) == KEY
    r = avsb(ss_env, *DISABLE, "-p", p, "--forget-key", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["key_forgotten"] is True
    assert lookup(ss_env, p) is None


def test_auto_detect_forgets_the_keyring_item(ss_env):
    p = "ss-auto"
    assert avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input=KEY).exit_code == 0
    r = avsb(ss_env, *ENABLE, "-p", p, "--auto-detect", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["mode"] == "auto-detect"
    assert lookup(ss_env, p) is None


def test_refused_key_leaves_the_item_alone(ss_env, config_dir):
    p = "ss-refuse"
    assert avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input=KEY).exit_code == 0
    before = (config_dir / "config.toml").read_bytes()
    r = avsb(ss_env, *ENABLE, "--write-key-stdin", "-p", p, input="two words here")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert lookup(ss_env, p) == KEY
    assert (config_dir / "config.toml").read_bytes() == before


def test_secret_service_backend_without_a_bus(config_dir):
    """Forcing SecretService with no D-Bus raises a bare RuntimeError: exit 4, one line."""
    env = avsb_env(PYTHON_KEYRING_BACKEND="keyring.backends.SecretService.Keyring")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env["XDG_RUNTIME_DIR"] = str(config_dir.parent / "no-run")
    r = avsb(env, *ENABLE, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE, r.stderr
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "keyring_unavailable" and "--insecure-storage" in err["hint"]
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (config_dir / "config.toml").exists()


@pytest.fixture
def locked_secret_service(tmp_path):
    """A private gnome-keyring whose default collection is locked (no display to unlock)."""
    from tests.support.secretservice import missing_tools, private_secret_service

    if missing_tools():
        if os.environ.get("AVSB_REQUIRE_SECRET_SERVICE", "") not in ("", "0"):
            pytest.fail("gnome-keyring or dbus not installed")
        pytest.skip("gnome-keyring or dbus not installed")
    with private_secret_service(tmp_path / "locked-home", "pw") as env:
        lock = ("import secretstorage; c = secretstorage.dbus_init(); "
                "col = secretstorage.get_default_collection(c); col.lock(); "
                "assert col.is_locked()")
        subprocess.run([sys.executable, "-c", lock], env=env, check=True, timeout=30,
                       capture_output=True)
        yield env


def test_locked_collection_is_exit_4(locked_secret_service, config_dir):
    env = avsb_env(**locked_secret_service)
    env.pop("PYTHON_KEYRING_BACKEND", None)
    env.pop("DISPLAY", None)
    env["AVSB_KEYRING_TIMEOUT"] = "10"
    assert avsb(env, *ENABLE, "--auto-detect").exit_code == 0
    before = (config_dir / "config.toml").read_bytes()
    r = avsb(env, *ENABLE, "--write-key-stdin", input=KEY)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE, r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("avsb:")]
    assert len(error) == 1 and "--insecure-storage" in error[0]
    assert "Traceback" not in r.stderr
    assert (config_dir / "config.toml").read_bytes() == before


def test_login_keeps_the_token_in_secret_service(ss_env, config_dir):
    """login stores the A vs B token as a Secret Service item (one per API host);
    status finds it there and reads the dashboard; logout deletes it."""
    from tests.support.fakeavsb import ORG, PAT, FakeAvsb

    with FakeAvsb() as server:
        server.add_token(PAT)
        server.add_project("prj_ss000001", "ss-login")
        env = {**ss_env, "AVSB_API_URL": server.url, "AVSB_ORG": ORG, "AVSB_TIMEOUT": "10"}

        def token() -> str | None:
            r = subprocess.run(["secret-tool", "lookup", "service", "avsb", "username",
                                f"token:{server.host}"],
                               env=env, capture_output=True, text=True, timeout=20)
            return r.stdout if r.returncode == 0 else None

        r = avsb(env, "login", "--with-token", input=PAT)
        assert r.exit_code == 0, r.stderr
        assert PAT not in r.stdout + r.stderr
        assert token() == PAT
        assert PAT not in (config_dir / "config.toml").read_text(encoding="utf-8")
        who = json.loads(avsb(env, "whoami", "--json").stdout)
        assert who["token_source"] == "keyring" and who["accepted"] is True
        r = avsb(env, *ENABLE, "-p", "ss-login", "--write-key-stdin", "--json", input=KEY)
        assert r.exit_code == 0, r.stderr
        doc = json.loads(avsb(env, *STATUS, "-p", "ss-login", "--json").stdout)
        assert doc["remote"]["enabled"] is True and doc["remote"]["same_key_as_local"] is True
        assert server.integration("prj_ss000001")["writeKey"] == KEY
        assert all(q.headers["authorization"] == f"Bearer {PAT}" for q in server.requests)
        assert avsb(env, "logout").exit_code == 0
        assert token() is None
        assert avsb(env, "logout").exit_code == 0  # idempotent
