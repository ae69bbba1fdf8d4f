"""The key store and the key lookup: keyring backends that are missing,
null, lossy, hanging, broken or locked (exit 4, one line, the ways out,
nothing changed), the backend chosen by PYTHON_KEYRING_BACKEND and
keyringrc.cfg in a real process, the insecure file, and writekey's checks."""

from __future__ import annotations

import json
import stat

import keyring
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keyring.backend import KeyringBackend
from keyring.backends import fail, null

from avsb_cli import keystore, writekey
from avsb_cli.errors import ExitCode, InvalidKeyError, KeyringUnavailableError
from tests.conftest import KEY, KEY2, avsb_env, run_avsb
from tests.support.memkeyring import HangingKeyring, LockedKeyring, RuntimeKeyring

ITEM = ("avsb", "segment:default")
ENABLE = ("integrations", "segment", "enable")
DISABLE = ("integrations", "segment", "disable")
STATUS = ("integrations", "segment", "status")


class LossyKeyring(KeyringBackend):
    """Accepts every write and keeps none of them (what null does, undetected by name)."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        pass

    def delete_password(self, service: str, username: str) -> None:
        pass


@pytest.fixture
def hanging():
    HangingKeyring.release.clear()
    yield HangingKeyring()
    HangingKeyring.release.set()  # let the abandoned threads finish


def use_backend(kr) -> None:  # type: ignore[no-untyped-def]
    keyring.set_keyring(kr)
    keystore.reset()


def config_bytes(config_dir) -> bytes | None:  # type: ignore[no-untyped-def]
    path = config_dir / "config.toml"
    return path.read_bytes() if path.exists() else None


# Unusable backends -------------------------------------------------------------------

BROKEN = {
    "none": (lambda: fail.Keyring(), "no keyring backend"),
    "null": (lambda: null.Keyring(), "null backend"),
    "lossy": (LossyKeyring, "did not keep it"),
    "runtime": (RuntimeKeyring, "neither running nor activatable"),
    "locked": (LockedKeyring, "Failed to unlock"),
}


@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("source", ["option", "stdin"])
def test_unusable_keyring_exit_4_with_ways_out(cli, config_dir, memory_keyring, case, source):
    # A project already enabled in auto-detect mode: the refusal must not touch it.
    assert cli(*ENABLE, "--auto-detect").exit_code == 0
    before = config_bytes(config_dir)
    make, says = BROKEN[case]
    use_backend(make())
    args = ("--write-key", KEY) if source == "option" else ("--write-key-stdin",)
    r = cli(*ENABLE, *args, "--region", "eu", input=KEY)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE, r.output
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and says in errors[0]
    assert "AVSB_SEGMENT_WRITE_KEY" in errors[0] and "--insecure-storage" in errors[0]
    assert "Traceback" not in r.output and KEY not in r.output
    assert config_bytes(config_dir) == before
    r = cli(*ENABLE, *args, "--json", input=KEY)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE
    err = r.json()["error"]
    assert err["code"] == "keyring_unavailable" and says in err["message"]
    assert "AVSB_SEGMENT_WRITE_KEY" in err["hint"] and "--insecure-storage" in err["hint"]
    assert config_bytes(config_dir) == before


def test_hanging_keyring_times_out(cli, config_dir, hanging, monkeypatch):
    cli(*ENABLE, "--auto-detect")
    before = config_bytes(config_dir)
    monkeypatch.setenv("AVSB_KEYRING_TIMEOUT", "0.5")
    use_backend(hanging)
    r = cli(*ENABLE, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE, r.output
    err = r.json()["error"]
    assert "did not answer within 0.5s" in err["message"]
    assert "--insecure-storage" in err["hint"]
    assert len(r.stderr.strip().splitlines()) == 1
    assert config_bytes(config_dir) == before


def test_status_with_hanging_keyring_reports_unavailable(cli, memory_keyring, hanging,
                                                         monkeypatch):
    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    monkeypatch.setenv("AVSB_KEYRING_TIMEOUT", "0.3")
    use_backend(hanging)
    r = cli(*STATUS, "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["key_state"] == "unavailable" and doc["key_masked"] is None
    assert "did not answer" in doc["key_problem"]
    assert "UNAVAILABLE" in cli(*STATUS).stdout


@pytest.mark.parametrize("case", ["none", "null", "runtime", "locked"])
def test_status_with_unusable_keyring_reports_unavailable(cli, memory_keyring, case):
    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    make, says = BROKEN[case]
    use_backend(make())
    r = cli(*STATUS, "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["key_state"] == "unavailable" and doc["enabled"] is True
    assert says in doc["key_problem"]


@pytest.mark.parametrize("case", ["none", "runtime", "locked"])
def test_disable_forget_key_with_unusable_keyring(cli, config_dir, memory_keyring, case):
    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    before = config_bytes(config_dir)
    use_backend(BROKEN[case][0]())
    r = cli(*DISABLE, "--forget-key", "--json")
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE
    assert r.json()["error"]["code"] == "keyring_unavailable"
    assert config_bytes(config_dir) == before
    # Without --forget-key the keyring is not needed to turn it off.
    r = cli(*DISABLE, "--json")
    assert r.exit_code == 0 and r.json()["enabled"] is False


def test_auto_detect_needs_no_keyring(cli, config_dir):
    use_backend(fail.Keyring())
    r = cli(*ENABLE, "--auto-detect", "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["mode"] == "auto-detect"
    assert cli(*STATUS, "--json").json()["key_state"] == "none"


def test_insecure_storage_is_the_way_out(cli, config_dir):
    use_backend(fail.Keyring())
    r = cli(*ENABLE, "--write-key-stdin", "--insecure-storage", "--json", input=KEY)
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["key_storage"] == "file" and doc["key_state"] == "ok"
    secrets = config_dir / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700


def test_env_key_is_the_way_out_in_ci(cli, monkeypatch):
    use_backend(fail.Keyring())
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    cli(*ENABLE, "--auto-detect")
    doc = cli(*STATUS, "--json").json()
    assert doc["key_source"] == "env" and doc["key_masked"] == "…" + KEY[-4:]


def test_readback_failure_keeps_old_key(cli, memory_keyring):
    """A backend that drops one write: the stored key stays what it was."""
    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    real_set = memory_keyring.set_password
    calls = []

    def drop_first(service, user, password):  # type: ignore[no-untyped-def]
        calls.append(password)
        if len(calls) > 1:
            real_set(service, user, password)

    memory_keyring.set_password = drop_first
    r = cli(*ENABLE, "--write-key-stdin", input=KEY2)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE
    assert memory_keyring.items[ITEM] == KEY


# The keystore module -----------------------------------------------------------------


def test_roundtrip_and_username(memory_keyring):
    keystore.set_key("shop", KEY)
    assert memory_keyring.items == {("avsb", "segment:shop"): KEY}
    assert keystore.get_key("shop") == KEY
    assert keystore.get_key("other") is None
    assert keystore.delete_key("shop") is True
    assert keystore.delete_key("shop") is False
    assert memory_keyring.items == {}


def test_backend_is_the_chosen_backend(memory_keyring):
    assert keystore.backend() is memory_keyring


@pytest.mark.parametrize("value", ["abc", "", "-1", "nan", "inf", "1e400"])
def test_bad_timeout_value_falls_back(monkeypatch, value):
    monkeypatch.setenv("AVSB_KEYRING_TIMEOUT", value)
    t = keystore._timeout()
    assert 0.1 <= t <= 86400
    use_backend(keyring.get_keyring())
    keystore.set_key("p", KEY)  # Thread.join accepts the timeout
    assert keystore.get_key("p") == KEY


def test_keyring_errors_are_one_keyring_unavailable_error():
    use_backend(RuntimeKeyring())
    with pytest.raises(KeyringUnavailableError) as info:
        keystore.get_key("default")
    assert "RuntimeError" in info.value.message
    assert info.value.hint == keystore.WAYS_OUT


def test_file_keystore(config_dir):
    files = keystore.FileKeyStore()
    assert files.get("p") is None
    files.set("p", KEY)
    files.set("q", KEY2)
    assert files.get("p") == KEY and files.get("q") == KEY2
    assert stat.S_IMODE(files.path.stat().st_mode) == 0o600
    assert files.delete("p") is True and files.delete("p") is False
    assert files.get("q") == KEY2


# Backend chosen outside avsb, in real processes --------------------------------------


def test_python_keyring_backend_is_honoured(tmp_path):
    store = tmp_path / "kr.json"
    env = avsb_env(PYTHON_KEYRING_BACKEND="tests.support.memkeyring.FileKeyring",
                   AVSB_TEST_KEYRING_FILE=str(store))
    r = run_avsb(*ENABLE, "--write-key-stdin", "--json", env=env, input=KEY + "\n")
    assert r.exit_code == 0, r.stderr
    assert json.loads(store.read_text()) == {"avsb/segment:default": KEY}
    assert KEY not in r.stdout + r.stderr
    r = run_avsb(*STATUS, "--json", env=env)
    doc = json.loads(r.stdout)
    assert doc["key_state"] == "ok" and doc["key_masked"] == "…" + KEY[-4:]
    # Deleted behind avsb's back: status says so.
    store.write_text("{}")
    doc = json.loads(run_avsb(*STATUS, "--json", env=env).stdout)
    assert doc["key_state"] == "missing"


def test_keyringrc_cfg_is_honoured(tmp_path):
    store = tmp_path / "kr.json"
    rc = tmp_path / "xdg" / "python_keyring" / "keyringrc.cfg"
    rc.parent.mkdir(parents=True)
    rc.write_text("[backend]\ndefault-keyring = tests.support.memkeyring.FileKeyring\n")
    env = avsb_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), AVSB_TEST_KEYRING_FILE=str(store))
    env.pop("PYTHON_KEYRING_BACKEND", None)
    r = run_avsb(*ENABLE, "--write-key-stdin", env=env, input=KEY)
    assert r.exit_code == 0, r.stderr
    assert json.loads(store.read_text()) == {"avsb/segment:default": KEY}


@pytest.mark.parametrize(
    ("backend", "says"),
    [
        ("keyring.backends.fail.Keyring", "no keyring backend"),
        ("keyring.backends.null.Keyring", "null backend"),
        ("no.such.module.Keyring", "No module named"),
    ],
)
def test_unusable_backend_in_a_real_process(tmp_path, config_dir, backend, says):
    env = avsb_env(PYTHON_KEYRING_BACKEND=backend)
    assert run_avsb(*ENABLE, "--auto-detect", env=env).exit_code == 0
    before = config_bytes(config_dir)
    r = run_avsb(*ENABLE, "--write-key-stdin", env=env, input=KEY)
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE, r.stderr
    assert says in r.stderr and "--insecure-storage" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert config_bytes(config_dir) == before


# writekey: normalise, mask, fingerprint, redact, resolve -----------------------------

VALID = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":/?#%"),
    min_size=writekey.MIN_LEN, max_size=writekey.MAX_LEN,
)
PAD = st.text(alphabet=" \t\r\n", max_size=5)


@given(VALID, PAD, PAD)
def test_normalise_strips_and_accepts_valid_keys(key, before, after):
    assert writekey.normalise(before + key + after) == key


@given(VALID)
def test_mask_shows_at_most_a_quarter_and_four(key):
    masked = writekey.mask(key)
    shown = masked.removeprefix("…")
    assert masked.startswith("…") and key.endswith(shown)
    assert len(shown) <= min(4, len(key) // 4)


_MESSAGE_WORDS = (
    " the write key from input is only characters long; Segment write keys are about 32"
    " contains whitespace a control character a non-ASCII character (U+ is empty ':'"
    " check that you pasted the write key, not something else"
)


@given(st.text(min_size=1, max_size=300))
def test_normalise_never_returns_a_bad_key(raw):
    try:
        key = writekey.normalise(raw)
    except InvalidKeyError as exc:
        stripped = raw.strip()
        # Never echoed; a short key may of course be a word of the message itself.
        if len(stripped) >= 4 and stripped not in writekey.normalise.__doc__ + _MESSAGE_WORDS:
            assert stripped not in exc.message
        return
    assert writekey.MIN_LEN <= len(key) <= writekey.MAX_LEN
    assert all(0x21 <= ord(c) <= 0x7E and c not in ":/?#%" for c in key)


def test_fingerprint_is_short_and_stable():
    assert writekey.fingerprint(KEY) == writekey.fingerprint(KEY)
    assert writekey.fingerprint(KEY) != writekey.fingerprint(KEY2)
    assert len(writekey.fingerprint(KEY)) == len("sha256:") + 12
    assert KEY not in writekey.fingerprint(KEY)


def test_redact_masks_every_seen_key():
    writekey.remember_secret(KEY)
    text = writekey.redact(f"url /v1/projects/{KEY}/settings and {KEY}")
    assert KEY not in text and text.count("…" + KEY[-4:]) == 2


def test_resolve_order(monkeypatch, memory_keyring, config_dir):
    seg_keyring = {"key_storage": "keyring"}
    memory_keyring.items[ITEM] = KEY
    r = writekey.resolve("default", seg_keyring)
    assert (r.key, r.source, r.state) == (KEY, "keyring", "ok")
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY2)
    r = writekey.resolve("default", seg_keyring)
    assert (r.key, r.source) == (KEY2, "env")
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", "   ")  # blank means unset
    assert writekey.resolve("default", seg_keyring).source == "keyring"
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", "")
    keystore.FileKeyStore().set("default", KEY2)
    r = writekey.resolve("default", {"key_storage": "file"})
    assert (r.key, r.source) == (KEY2, "file")
    r = writekey.resolve("default", {})
    assert (r.key, r.source, r.state) == (None, "none", "none")


def test_resolve_does_not_touch_keyring_in_auto_detect_mode():
    use_backend(RuntimeKeyring())
    r = writekey.resolve("default", {"key_storage": "none"})
    assert r.state == "none" and r.problem is None


def test_resolve_reports_malformed_env_key(monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", "bad key")
    r = writekey.resolve("default", {})
    assert r.key is None and r.source == "env" and r.state == "invalid"
    assert isinstance(r.problem, InvalidKeyError)
    assert r.problem.message.startswith("the write key from AVSB_SEGMENT_WRITE_KEY")
