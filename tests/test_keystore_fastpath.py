"""The Secret Service fast path of keystore.get_key agrees with keyring.

Reads run as real processes against gnome-keyring on a private D-Bus (the
``secret_service`` fixture): the fast path only runs where keyring has not
been imported, which is never the case inside the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from avsb_cli import keystore
from tests.conftest import KEY, KEY2, avsb_env, run_avsb

AGREE = """
import json, sys
from avsb_cli import keystore
project = sys.argv[1]
fast = keystore.secret_service_lookup(project)
import keyring
kr = keyring.get_keyring()
slow = kr.get_password("avsb", "segment:" + project)
print(json.dumps({"fast_found": fast is not None, "agree": fast == slow,
                  "tail": (slow or "")[-4:], "backend": type(kr).__module__}))
"""


@pytest.fixture
def ss_env(secret_service, tmp_path):
    env = avsb_env(**secret_service)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # no stray keyringrc.cfg
    env["AVSB_CONFIG_DIR"] = str(tmp_path / "cfg")
    for name in ("PYTHON_KEYRING_BACKEND", "XDG_CURRENT_DESKTOP"):
        env.pop(name, None)
    return env


def enable(project: str, env: dict[str, str]) -> None:
    """Store KEY for ``project`` through a real avsb process (keyring's write path)."""
    r = run_avsb("integrations", "segment", "enable", "--project", project,
                 "--write-key-stdin", env=env, input=KEY)
    assert r.exit_code == 0, r.stderr


def agree(env: dict[str, str], project: str) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", AGREE, project], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.secret_service
def test_fast_path_reads_what_keyring_stored_and_what_changed_outside(ss_env):
    p = "ss-fast"
    enable(p, ss_env)
    doc = agree(ss_env, p)
    assert doc == {"fast_found": True, "agree": True, "tail": KEY[-4:],
                   "backend": "keyring.backends.SecretService"}
    # Replaced outside avsb, the way a user might: both read the new value.
    subprocess.run(["secret-tool", "store", "--label", "x", "service", "avsb",
                    "username", f"segment:{p}"], input=KEY2, env=ss_env, check=True,
                   capture_output=True, text=True, timeout=20)
    doc = agree(ss_env, p)
    assert doc["fast_found"] is True and doc["agree"] is True and doc["tail"] == KEY2[-4:]


@pytest.mark.secret_service
def test_missing_item_leaves_the_answer_to_keyring(ss_env):
    doc = agree(ss_env, "ss-never-stored")
    # The fast path answers None ("ask keyring"), and keyring finds nothing either.
    assert doc == {"fast_found": False, "agree": True, "tail": "",
                   "backend": "keyring.backends.SecretService"}


@pytest.mark.secret_service
def test_status_reads_the_key_without_importing_keyring(ss_env):
    p = "ss-fast-status"
    enable(p, ss_env)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "avsb_cli", "integrations", "segment",
         "status", "--project", p, "--json"],
        env=ss_env, capture_output=True, text=True, timeout=60,
    )
    doc = json.loads(proc.stdout)
    assert (doc["key_state"], doc["key_source"], doc["key_masked"]) == ("ok", "keyring",
                                                                      "…" + KEY[-4:])
    assert doc["key_changed_outside_avsb"] is False
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert "jeepney" in imported and "keyring" not in imported
    assert "secretstorage" not in imported and "cryptography" not in imported
    assert KEY not in proc.stdout + proc.stderr


@pytest.mark.parametrize("setting", [
    {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"},
    {"KEYRING_PROPERTY_SCHEME": "KeePassXC"},
    {"XDG_CURRENT_DESKTOP": "ubuntu:KDE"},
    {"DBUS_SESSION_BUS_ADDRESS": ""},
    {"keyringrc.cfg": "[backend]\ndefault-keyring=keyring.backends.null.Keyring\n"},
])
def test_fast_path_steps_aside_when_keyring_is_steered(monkeypatch, tmp_path, setting):
    monkeypatch.delitem(sys.modules, "keyring")  # as in a fresh avsb process
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("PYTHON_KEYRING_BACKEND", "XDG_CURRENT_DESKTOP"):
        monkeypatch.delenv(name, raising=False)
    assert keystore._keyring_would_pick_secret_service() is True
    for name, value in setting.items():
        if name == "keyringrc.cfg":
            (tmp_path / "python_keyring").mkdir()
            (tmp_path / "python_keyring" / name).write_text(value)
        else:
            monkeypatch.setenv(name, value)
    assert keystore._keyring_would_pick_secret_service() is False
    assert keystore.secret_service_lookup("any") is None


def test_fast_path_is_off_once_keyring_is_loaded(monkeypatch):
    # The test process has imported keyring (and set an in-memory backend).
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    assert "keyring" in sys.modules
    assert keystore._keyring_would_pick_secret_service() is False


def test_a_dead_bus_falls_back_to_keyring(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "keyring")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CURRENT_DESKTOP", raising=False)
    assert keystore._keyring_would_pick_secret_service() is True
    assert keystore.secret_service_lookup("any") is None  # an error, not a crash
