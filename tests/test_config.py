"""The config store: where it lives, its modes, atomic writes, the lock,
unknown keys, and what a corrupt file does (exit 7, untouched, keyring too)."""

from __future__ import annotations

import os
import stat
import threading
import tomllib
from pathlib import Path

import pytest

from avsb_cli import config
from avsb_cli.config import ConfigStore
from avsb_cli.errors import ConfigError, ExitCode, UsageError
from avsb_cli.writekey import fingerprint
from tests.conftest import KEY, KEY2

ITEM = ("avsb", "segment:default")
ENABLE = ("integrations", "segment", "enable")
DISABLE = ("integrations", "segment", "disable")
STATUS = ("integrations", "segment", "status")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Where ------------------------------------------------------------------------------


def test_avsb_config_dir_moves_the_config(cli, tmp_path, monkeypatch):
    where = tmp_path / "deep" / "er" / "avsb-here"
    monkeypatch.setenv("AVSB_CONFIG_DIR", str(where))
    r = cli(*ENABLE, "--write-key-stdin", input=KEY)
    assert r.exit_code == 0, r.output
    assert (where / "config.toml").is_file()
    assert cli(*STATUS, "--json").json()["config_path"] == str(where / "config.toml")


def test_default_location_is_typer_app_dir(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("AVSB_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    r = cli(*ENABLE, "--auto-detect", "--json")
    assert r.exit_code == 0, r.output
    import typer

    expected = Path(typer.get_app_dir("avsb")) / "config.toml"
    assert expected.is_file()
    assert str(expected).startswith(str(tmp_path))
    assert r.json()["config_path"] == str(expected)


def test_blank_avsb_config_dir_means_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("AVSB_CONFIG_DIR", "  ")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.config_dir() != Path("  ")
    assert str(config.config_dir()).startswith(str(tmp_path / "xdg"))


# Modes and atomic writes -----------------------------------------------------------


def test_folder_0700_file_0600(cli, config_dir):
    old = os.umask(0o022)
    try:
        r = cli(*ENABLE, "--write-key-stdin", input=KEY)
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert mode(config_dir) == 0o700
    assert mode(config_dir / "config.toml") == 0o600


def test_loose_file_mode_is_warned_about_and_tightened_on_write(cli, config_dir):
    cli(*ENABLE, "--auto-detect")
    path = config_dir / "config.toml"
    path.chmod(0o644)
    config._warned.clear()
    r = cli(*STATUS)
    assert r.exit_code == 0
    assert "readable by others" in r.stderr and "chmod 600" in r.stderr
    cli(*DISABLE)
    assert mode(path) == 0o600


def test_no_temp_files_left_behind(cli, config_dir):
    for i in range(3):
        cli(*ENABLE, "--write-key-stdin", "-p", f"p{i}", input=KEY)
        cli(*DISABLE, "-p", f"p{i}")
    names = {p.name for p in config_dir.iterdir()}
    assert names == {"config.toml", ".lock"}


def test_write_atomic_fsyncs_the_file_before_rename_and_the_folder_after(tmp_path,
                                                                         monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):  # type: ignore[no-untyped-def]
        # The folder's fsync is what makes the rename itself survive a power cut.
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        return real_fsync(fd)

    def replace(a, b):  # type: ignore[no-untyped-def]
        calls.append("replace")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "c" / "config.toml"
    config.write_atomic(target, "a = 1\n")
    assert calls == ["fsync file", "replace", "fsync folder"]
    assert target.read_text() == "a = 1\n"
    assert mode(target) == 0o600


def test_failed_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "config.toml"
    config.write_atomic(target, "old = true\n")

    def fail(*_a):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ConfigError, match="No space left"):
        config.write_atomic(target, "new = true\n")
    assert target.read_text() == "old = true\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_unwritable_config_is_exit_7_and_keyring_restored(cli, config_dir, memory_keyring,
                                                          monkeypatch):
    cli(*ENABLE, "--write-key-stdin", input=KEY)
    before = (config_dir / "config.toml").read_bytes()

    def fail(*_a):  # type: ignore[no-untyped-def]
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", fail)
    r = cli(*ENABLE, "--write-key-stdin", "--json", input=KEY2)
    assert r.exit_code == ExitCode.CONFIG, r.output
    assert r.json()["error"]["code"] == "config"
    assert "Read-only" in r.json()["error"]["message"]
    # The key went into the keyring first; it is put back when the config fails.
    assert memory_keyring.items[ITEM] == KEY
    assert (config_dir / "config.toml").read_bytes() == before


# Content --------------------------------------------------------------------------


def test_only_non_secret_state_is_stored(cli, config_dir):
    cli(*ENABLE, "--write-key-stdin", "--region", "eu", input=KEY)
    text = (config_dir / "config.toml").read_text(encoding="utf-8")
    assert KEY not in text and KEY[:8] not in text and KEY[-8:] not in text
    seg = tomllib.loads(text)["projects"]["default"]["segment"]
    assert set(seg) == {
        "enabled", "mode", "key_storage", "key_fingerprint", "region", "endpoint",
        "enabled_at", "updated_at",
    }
    assert seg["key_fingerprint"] == fingerprint(KEY)
    assert seg["enabled_at"].endswith("Z")


def test_unknown_keys_are_preserved(cli, config_dir, memory_keyring):
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(
        'schema = 7\n'
        '[future]\nflag = true\nlist = [1, 2, 3]\n'
        '[projects.default]\nowner = "ana"\n'
        '[projects.default.segment]\nenabled = false\ncustom_thing = "keep me"\n'
        '[projects.default.segment.nested]\nx = 1.5\n'
        '[projects.other.segment]\nenabled = true\nmode = "auto-detect"\n'
        '[projects.default.mixpanel]\nenabled = true\n',
        encoding="utf-8",
    )
    r = cli(*ENABLE, "--write-key-stdin", "--region", "eu", input=KEY)
    assert r.exit_code == 0, r.output
    cli(*DISABLE, "--forget-key")
    data = tomllib.loads((config_dir / "config.toml").read_text(encoding="utf-8"))
    assert data["schema"] == 7
    assert data["future"] == {"flag": True, "list": [1, 2, 3]}
    assert data["projects"]["default"]["owner"] == "ana"
    assert data["projects"]["default"]["mixpanel"] == {"enabled": True}
    seg = data["projects"]["default"]["segment"]
    assert seg["custom_thing"] == "keep me" and seg["nested"] == {"x": 1.5}
    assert seg["region"] == "eu" and seg["enabled"] is False
    assert data["projects"]["other"]["segment"] == {"enabled": True, "mode": "auto-detect"}


def test_concurrent_updates_lose_nothing(tmp_path):
    store = ConfigStore(tmp_path / "config.toml")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                store.update(
                    lambda data, i=i, j=j: ConfigStore.segment_for_update(data, f"p{i}")
                    .__setitem__("n", j)
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = store.load()
    assert {name: p["segment"]["n"] for name, p in data["projects"].items()} == {
        f"p{i}": 4 for i in range(8)
    }


def test_wrong_table_type_is_a_config_error_and_keyring_unchanged(cli, config_dir,
                                                                 memory_keyring):
    config_dir.mkdir(parents=True)
    path = config_dir / "config.toml"
    path.write_text('projects = "oops"\n', encoding="utf-8")
    memory_keyring.items[ITEM] = KEY2
    r = cli(*ENABLE, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == ExitCode.CONFIG, r.output
    assert "projects" in r.json()["error"]["message"]
    assert path.read_bytes() == b'projects = "oops"\n'
    assert memory_keyring.items == {ITEM: KEY2}


# Corrupt files ----------------------------------------------------------------------

CORRUPT = {
    "bad value": (b'[projects.default.segment]\nenabled = tru\n', "line 2"),
    "no equals": (b'[projects.default.segment]\nenabled = true\nmode\n', "line 3"),
    "unclosed table": (b'[projects.default\nenabled = true\n', "line 1"),
    "duplicate key": (b'a = 1\na = 2\n', "line 2"),
    "unterminated array": (b'x = [1,\n2,\n', "line 2"),
    "half written": (b'[projects.default.segment]\nenabled = true\nmode = "write-', "line 3"),
}


@pytest.mark.parametrize(
    "command",
    [
        (*ENABLE, "--write-key-stdin"),
        (*ENABLE, "--no-input"),
        (*ENABLE, "--auto-detect"),
        DISABLE,
        (*DISABLE, "--forget-key"),
        STATUS,
        ("integrations", "list"),
    ],
)
@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_config(cli, config_dir, memory_keyring, command, case):
    content, line = CORRUPT[case]
    config_dir.mkdir(parents=True)
    path = config_dir / "config.toml"
    path.write_bytes(content)
    memory_keyring.items[ITEM] = KEY2
    r = cli(*command, input=KEY)
    assert r.exit_code == ExitCode.CONFIG, r.output
    assert str(path) in r.stderr and line in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert path.read_bytes() == content
    assert memory_keyring.items == {ITEM: KEY2}
    assert sorted(p.name for p in config_dir.iterdir()) in (
        ["config.toml"], [".lock", "config.toml"]
    )
    r = cli(*command, "--json", input=KEY)
    assert r.exit_code == ExitCode.CONFIG
    err = r.json()["error"]
    assert err["code"] == "config" and str(path) in err["message"] and line in err["message"]
    assert path.read_bytes() == content
    assert memory_keyring.items == {ITEM: KEY2}


def test_non_utf8_config(cli, config_dir, memory_keyring):
    config_dir.mkdir(parents=True)
    path = config_dir / "config.toml"
    content = b'[projects.default.segment]\nnote = "caf\xe9"\n'
    path.write_bytes(content)
    memory_keyring.items[ITEM] = KEY2
    r = cli(*ENABLE, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == ExitCode.CONFIG
    msg = r.json()["error"]["message"]
    assert str(path) in msg and "UTF-8" in msg and "line 2" in msg
    assert path.read_bytes() == content
    assert memory_keyring.items == {ITEM: KEY2}


def test_unreadable_config_is_a_config_error(cli, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").mkdir()  # a folder where the file should be
    r = cli(*STATUS, "--json")
    assert r.exit_code == ExitCode.CONFIG
    assert r.json()["error"]["code"] == "config"


# Project names -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "a", "shop-2", "A.b_c", "9lives", "x" * 64])
def test_valid_project_names(name):
    assert config.check_project(name) == name


@pytest.mark.parametrize("name", ["", " ", "-a", ".a", "_a", "a b", "a/b", "x" * 65, "ü",
                                  "a\n", "a.b\x00"])
def test_invalid_project_names(name):
    with pytest.raises(UsageError):
        config.check_project(name)
