"""Keyring faults (issue 6): every way the OS keyring can fail loses nothing.

The pattern of each test: store a key with a working keyring, switch to a
broken one, try to change the key (and forget it), switch back. The old key
is still there, config.toml is byte-for-byte what it was, and each failure
was exit 4 with one line that names the ways out.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keyring
import keyring.backends.fail
import keyring.backends.null
import pytest

from avsb_cli import keystore
from avsb_cli.errors import ConfigError, ExitCode
from tests.conftest import KEY, KEY2, avsb_env, one_error_line, run_avsb
from tests.support.memkeyring import (
    HangingKeyring,
    LockedKeyring,
    MemoryKeyring,
    RuntimeKeyring,
)

ITEM = ("avsb", "segment:default")


def use(kr) -> None:
    keyring.set_keyring(kr)
    keystore.reset()


@pytest.fixture
def hanging(monkeypatch):
    monkeypatch.setenv("AVSB_KEYRING_TIMEOUT", "0.2")
    HangingKeyring.release.clear()  # another file's fixture may have left it set
    yield HangingKeyring()
    # Let the abandoned worker threads finish.
    HangingKeyring.release.set()
    HangingKeyring.release.clear()


class SetFailsKeyring(MemoryKeyring):
    """Reads work, writes fail: a collection that went read-only."""

    def set_password(self, service, username, password):
        raise keyring.errors.PasswordSetError("write refused by the collection")

    def delete_password(self, service, username):
        raise keyring.errors.PasswordDeleteError("delete refused by the collection")


class ForgetfulKeyring(MemoryKeyring):
    """Accepts a write and keeps the old value (worse than null: it reads)."""

    def set_password(self, service, username, password):
        pass


BROKEN = {
    "no backend": lambda: keyring.backends.fail.Keyring(),
    "null": lambda: keyring.backends.null.Keyring(),
    "locked": LockedKeyring,
    "secretservice-runtimeerror": RuntimeKeyring,
    "write-refused": None,  # built from the memory keyring's items below
    "forgetful": None,
}




def broken_backend(name: str, memory: MemoryKeyring, hanging_kr=None):
    if name == "hanging":
        return hanging_kr
    if name in ("write-refused", "forgetful"):
        kr = SetFailsKeyring() if name == "write-refused" else ForgetfulKeyring()
        kr.items = dict(memory.items)  # the same collection, now misbehaving
        return kr
    return BROKEN[name]()


@pytest.mark.parametrize("name", [*BROKEN, "hanging"])
def test_a_broken_keyring_loses_nothing(cli, memory_keyring, config_dir, request, name):
    r = cli("integrations", "segment", "enable", "--write-key-stdin", "--region", "eu",
            input=KEY)
    assert r.exit_code == 0, r.output
    config = (config_dir / "config.toml").read_bytes()
    hanging_kr = request.getfixturevalue("hanging") if name == "hanging" else None
    use(broken_backend(name, memory_keyring, hanging_kr))

    attempts = {
        "new key": ("integrations", "segment", "enable", "--write-key-stdin"),
        "auto-detect": ("integrations", "segment", "enable", "--auto-detect"),
        "forget": ("integrations", "segment", "disable", "--forget-key"),
    }
    for what, args in attempts.items():
        if name == "forgetful" and what != "new key":
            continue  # it deletes fine; only its writes are lost
        r = cli(*args, input=KEY2)
        line = one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)
        assert "no usable OS keyring" in line, what
        assert "AVSB_SEGMENT_WRITE_KEY" in line and "--insecure-storage" in line
        assert (config_dir / "config.toml").read_bytes() == config, what
        assert KEY2 not in r.output

    # Status tells the truth instead of failing: the key is unavailable.
    r = cli("integrations", "segment", "status", "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    if name in ("forgetful", "write-refused"):  # reads still work
        assert doc["key_state"] == "ok" and doc["key_masked"] == "…" + KEY[-4:]
    else:
        assert doc["key_state"] == "unavailable" and doc["key_problem"]
    assert doc["enabled"] is True and doc["region"] == "eu"

    use(memory_keyring)
    assert memory_keyring.items[ITEM] == KEY
    assert (config_dir / "config.toml").read_bytes() == config
    r = cli("integrations", "segment", "status", "--json")
    assert r.json()["key_state"] == "ok" and r.json()["key_masked"] == "…" + KEY[-4:]


@pytest.mark.parametrize("name", ["no backend", "null", "locked", "hanging"])
def test_sending_with_a_broken_keyring_is_exit_4(cli, memory_keyring, segment, request, name):
    assert cli("integrations", "segment", "enable", "--write-key", KEY).exit_code == 0
    hanging_kr = request.getfixturevalue("hanging") if name == "hanging" else None
    use(broken_backend(name, memory_keyring, hanging_kr))
    one_error_line(cli("segment", "test-event"), ExitCode.KEYRING_UNAVAILABLE)
    assert segment.requests == []
    # The way out the message offers works: the env key goes first, no keyring call.
    r = cli("segment", "test-event", "--json", env={"AVSB_SEGMENT_WRITE_KEY": KEY})
    assert r.exit_code == 0, r.output
    assert r.json()["key_source"] == "env"


def test_hanging_keyring_is_bounded_by_the_timeout(cli, hanging, config_dir):
    use(hanging)
    r = cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY)
    line = one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)
    assert "did not answer within 0.2s" in line
    assert not (config_dir / "config.toml").exists()


def test_insecure_storage_is_the_way_out(cli, config_dir):
    use(keyring.backends.fail.Keyring())
    r = cli("integrations", "segment", "enable", "--write-key-stdin", "--insecure-storage",
            input=KEY)
    assert r.exit_code == 0, r.output
    r = cli("integrations", "segment", "status", "--json")
    assert r.json()["key_source"] == "file" and r.json()["key_state"] == "ok"
    assert oct((config_dir / "secrets.toml").stat().st_mode & 0o777) == "0o600"


def test_config_write_failure_puts_the_old_key_back(cli, memory_keyring, monkeypatch):
    assert cli("integrations", "segment", "enable", "--write-key", KEY).exit_code == 0
    from avsb_cli import config

    def fail(path, text):
        raise ConfigError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(config, "write_atomic", fail)
    r = cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY2)
    one_error_line(r, ExitCode.CONFIG)
    assert memory_keyring.items[ITEM] == KEY


def test_config_write_failure_removes_a_first_key(cli, memory_keyring, monkeypatch):
    from avsb_cli import config

    def fail(path, text):
        raise ConfigError(f"cannot write {path}: Read-only file system")

    monkeypatch.setattr(config, "write_atomic", fail)
    r = cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY)
    one_error_line(r, ExitCode.CONFIG)
    assert ITEM not in memory_keyring.items


# Real processes, real backends -------------------------------------------------------


def test_real_secretservice_without_a_bus_loses_nothing(tmp_path):
    """keyring's own SecretService backend with no D-Bus raises RuntimeError."""
    ring = tmp_path / "ring.json"
    base = {k: v for k, v in avsb_env().items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    good = dict(base, PYTHON_KEYRING_BACKEND="tests.support.memkeyring.FileKeyring",
                AVSB_TEST_KEYRING_FILE=str(ring))
    r = run_avsb("integrations", "segment", "enable", "--write-key-stdin", env=good, input=KEY)
    assert r.exit_code == 0, r.output
    config = (tmp_path / "cfg" / "config.toml").read_bytes()
    ring_before = ring.read_bytes()

    # (the fail and null backends are the same story in-process, above)
    for backend in ("keyring.backends.SecretService.Keyring",):
        bad = dict(base, PYTHON_KEYRING_BACKEND=backend)
        r = run_avsb("integrations", "segment", "enable", "--write-key-stdin", env=bad,
                     input=KEY2)
        line = one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)
        if "SecretService" in backend:
            assert "RuntimeError" in line or "DBUS" in line, line
        assert (tmp_path / "cfg" / "config.toml").read_bytes() == config
    assert ring.read_bytes() == ring_before
    r = run_avsb("integrations", "segment", "status", "--json", env=good)
    assert r.json()["key_state"] == "ok" and r.json()["key_masked"] == "…" + KEY[-4:]


def test_keyring_library_choice_of_backend_is_honoured(tmp_path):
    """keyringrc.cfg (not only the env var) picks the backend."""
    cfg_home = tmp_path / "xdg"
    (cfg_home / "python_keyring").mkdir(parents=True)
    (cfg_home / "python_keyring" / "keyringrc.cfg").write_text(
        "[backend]\ndefault-keyring=keyring.backends.null.Keyring\n"
    )
    env = {k: v for k, v in avsb_env().items() if k != "PYTHON_KEYRING_BACKEND"}
    env["XDG_CONFIG_HOME"] = str(cfg_home)
    r = run_avsb("integrations", "segment", "enable", "--write-key-stdin", env=env, input=KEY)
    line = one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)
    assert "null backend" in line


def test_no_hang_without_a_display(tmp_path):
    """A process whose keyring hangs still ends, by the keyring timeout."""
    env = avsb_env(PYTHON_KEYRING_BACKEND="tests.support.memkeyring.HangingKeyring",
                   AVSB_KEYRING_TIMEOUT="0.5")
    proc = subprocess.run(
        [sys.executable, "-m", "avsb_cli", "integrations", "segment", "enable",
         "--write-key-stdin"],
        input=KEY, env=env, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == ExitCode.KEYRING_UNAVAILABLE, proc.stderr
    assert "did not answer within 0.5s" in proc.stderr
    assert not os.path.exists(tmp_path / "cfg" / "config.toml")
