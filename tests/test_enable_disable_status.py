"""The foundation commands end to end: integrations list, segment enable /
disable / status, --version, every key source, every refusal, endpoints,
and what status reports when the world changed behind avsb's back.

Every run goes through ``avsb`` (below), which fails the test if a write key
appears whole in stdout or stderr; an autouse fixture checks config.toml too.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from avsb_cli.commands import integrations as cli_mod
from avsb_cli.errors import ExitCode
from tests.conftest import KEY, KEY2, avsb_env, run_avsb

ITEM = ("avsb", "segment:default")
MASKED = "…" + KEY[-4:]
MASKED2 = "…" + KEY2[-4:]
ENABLE = ("integrations", "segment", "enable")
DISABLE = ("integrations", "segment", "disable")
STATUS = ("integrations", "segment", "status")
# Keys of the right shape used somewhere in this file; none may leak.
OTHER_KEY = "Pp0Oo9Ii8Uu7Yy6Tt5Rr4Ee3Ww2Qq1Aa"
SECRETS = (KEY, KEY2, OTHER_KEY)


def _no_leak(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a write key appears whole in {where}"


@pytest.fixture
def avsb(cli):
    """``cli`` that also checks no key appears whole in any output."""

    def run(*args: str, **kw):  # type: ignore[no-untyped-def]
        r = cli(*args, **kw)
        _no_leak(r.stdout, f"stdout of {args}")
        _no_leak(r.stderr, f"stderr of {args}")
        return r

    return run


@pytest.fixture(autouse=True)
def _config_never_holds_a_key(config_dir):
    yield
    for name in ("config.toml",):
        path = config_dir / name
        if path.exists():
            _no_leak(path.read_text(encoding="utf-8"), str(path))


def config_bytes(config_dir: Path) -> bytes | None:
    path = config_dir / "config.toml"
    return path.read_bytes() if path.exists() else None


def snapshot(config_dir: Path, kr) -> tuple[bytes | None, dict, bytes | None]:  # type: ignore[no-untyped-def]
    secrets = config_dir / "secrets.toml"
    return (
        config_bytes(config_dir),
        dict(kr.items),
        secrets.read_bytes() if secrets.exists() else None,
    )


def seg_config(config_dir: Path, project: str = "default") -> dict:
    import tomllib

    data = tomllib.loads((config_dir / "config.toml").read_text(encoding="utf-8"))
    return data["projects"][project]["segment"]


def enable_with(avsb, key: str = KEY, *extra: str):  # type: ignore[no-untyped-def]
    r = avsb(*ENABLE, "--write-key-stdin", *extra, input=key)
    assert r.exit_code == 0, r.output
    return r


# --version, python -m, help -------------------------------------------------------


def test_version(avsb):
    from avsb_cli import __version__

    for flag in ("--version", "-V"):
        r = avsb(flag)
        assert r.exit_code == 0
        assert r.stdout.strip() == f"avsb {__version__}"


def test_python_dash_m_runs_the_same_cli(config_dir):
    r = run_avsb("--version", env=avsb_env())
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("avsb ")
    r = run_avsb(*STATUS, "--json", env=avsb_env())
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["enabled"] is False and doc["configured"] is False
    assert doc["config_path"] == str(config_dir / "config.toml")


def test_no_arguments_prints_help_and_exits_2(avsb):
    # The help, not an error line; but exit 2 (usage), so `avsb $CMD` with an
    # empty $CMD does not pass in a script.
    for args in ((), ("integrations",), ("integrations", "segment"), ("segment",)):
        r = avsb(*args)
        assert r.exit_code == ExitCode.USAGE, args
        assert "Usage: avsb" in r.stdout and "Commands:" in r.stdout
        assert "error" not in r.stderr


def test_enable_help_warns_about_write_key_on_command_line(avsb):
    r = avsb(*ENABLE, "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "shell history" in text
    assert "--write-key-stdin" in text and "--write-key-file" in text
    assert "Example:" in text


# integrations list ------------------------------------------------------------------


def test_list_before_and_after_enable(avsb):
    r = avsb("integrations", "list", "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["project"] == "default"
    assert doc["integrations"] == [
        {"name": "segment", "enabled": False, "mode": None, "region": None}
    ]
    enable_with(avsb, KEY, "--region", "eu")
    doc = avsb("integrations", "list", "--json").json()
    assert doc["integrations"] == [
        {"name": "segment", "enabled": True, "mode": "write-key", "region": "eu"}
    ]
    r = avsb("integrations", "list")
    assert r.exit_code == 0
    assert "segment" in r.stdout and "write-key" in r.stdout and "eu" in r.stdout
    avsb(*DISABLE)
    assert avsb("integrations", "list", "--json").json()["integrations"][0]["enabled"] is False


def test_list_quiet_prints_nothing(avsb):
    r = avsb("integrations", "list", "--quiet")
    assert r.exit_code == 0 and r.stdout == ""


# --project / AVSB_PROJECT ------------------------------------------------------------


def test_projects_are_separate(avsb, memory_keyring, config_dir):
    enable_with(avsb, KEY, "--project", "shop")
    enable_with(avsb, KEY2, "-p", "blog")
    assert memory_keyring.items[("avsb", "segment:shop")] == KEY
    assert memory_keyring.items[("avsb", "segment:blog")] == KEY2
    assert avsb(*STATUS, "--project", "shop", "--json").json()["key_masked"] == MASKED
    assert avsb(*STATUS, "--project", "blog", "--json").json()["key_masked"] == MASKED2
    assert avsb(*STATUS, "--json").json()["configured"] is False
    avsb(*DISABLE, "--project", "shop")
    assert seg_config(config_dir, "shop")["enabled"] is False
    assert seg_config(config_dir, "blog")["enabled"] is True


def test_avsb_project_env(avsb, memory_keyring, monkeypatch):
    monkeypatch.setenv("AVSB_PROJECT", "envproj")
    enable_with(avsb, KEY)
    assert ("avsb", "segment:envproj") in memory_keyring.items
    doc = avsb(*STATUS, "--json").json()
    assert doc["project"] == "envproj" and doc["enabled"] is True
    # The option beats the variable.
    assert avsb(*STATUS, "--project", "other", "--json").json()["project"] == "other"


@pytest.mark.parametrize(
    "name", ["bad name", "", "-x", "a/b", "../up", "x" * 65, "é", "a:b", "semi;colon"]
)
@pytest.mark.parametrize("command", [STATUS, ENABLE, DISABLE, ("integrations", "list")])
def test_invalid_project_is_a_usage_error(avsb, config_dir, command, name):
    r = avsb(*command, "--no-input" if command == ENABLE else "--quiet", "--project", name)
    assert r.exit_code == ExitCode.USAGE, r.output
    assert "invalid project name" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (config_dir / "config.toml").exists()


def test_invalid_project_from_env_json(avsb, monkeypatch):
    monkeypatch.setenv("AVSB_PROJECT", "no spaces")
    r = avsb(*STATUS, "--json")
    assert r.exit_code == ExitCode.USAGE
    assert r.json()["error"]["code"] == "usage"


# Key sources --------------------------------------------------------------------------


def test_write_key_option_works_and_warns(avsb, memory_keyring, config_dir):
    r = avsb(*ENABLE, "--write-key", KEY)
    assert r.exit_code == 0, r.output
    assert "shell history" in r.stderr
    assert memory_keyring.items[ITEM] == KEY
    seg = seg_config(config_dir)
    assert seg["enabled"] is True and seg["mode"] == "write-key"
    assert seg["key_storage"] == "keyring"
    assert seg["key_fingerprint"].startswith("sha256:")
    assert MASKED in r.stdout


def test_write_key_stdin_strips_surrounding_whitespace(avsb, memory_keyring):
    r = avsb(*ENABLE, "--write-key-stdin", "--json", input=f"  \r\n{KEY}\r\n\n")
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[ITEM] == KEY
    doc = r.json()
    assert doc["enabled"] is True and doc["mode"] == "write-key"
    assert doc["key_state"] == "ok" and doc["key_source"] == "keyring"
    assert "shell history" not in r.stderr


def test_write_key_file(avsb, memory_keyring, tmp_path):
    f = tmp_path / "key.txt"
    f.write_text(KEY + "\n", encoding="utf-8")
    r = avsb(*ENABLE, "--write-key-file", str(f))
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[ITEM] == KEY


@pytest.mark.parametrize("kind", ["missing", "folder", "latin1"])
def test_write_key_file_unusable(avsb, memory_keyring, config_dir, tmp_path, kind):
    enable_with(avsb, KEY)
    before = snapshot(config_dir, memory_keyring)
    f = tmp_path / "key.txt"
    if kind == "folder":
        f.mkdir()
    elif kind == "latin1":
        f.write_bytes(b"abc\xe9defgh12345678\n")
    r = avsb(*ENABLE, "--write-key-file", str(f), "--json")
    assert r.exit_code == ExitCode.INPUT, r.output
    err = r.json()["error"]
    assert err["code"] == "input" and str(f) in err["message"]
    assert {"missing": "not found", "folder": "folder", "latin1": "UTF-8"}[kind] in err["message"]
    assert snapshot(config_dir, memory_keyring) == before


def test_prompt_on_terminal_takes_typed_key(avsb, memory_keyring, monkeypatch):
    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    r = avsb(*ENABLE, input=KEY + "\n")
    assert r.exit_code == 0, r.output
    # The prompt was shown, on stderr (stdout may be a pipe to jq)...
    assert "Segment write key" in r.stderr and "Segment write key" not in r.stdout
    assert memory_keyring.items[ITEM] == KEY  # ...and hid what was typed (see avsb)


def test_prompt_blank_answer_means_auto_detect(avsb, memory_keyring, config_dir, monkeypatch):
    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    r = avsb(*ENABLE, input="\n")
    assert r.exit_code == 0, r.output
    assert "Segment write key" in r.output
    assert "Auto-detect" in r.stderr
    assert memory_keyring.items == {}
    seg = seg_config(config_dir)
    assert seg["mode"] == "auto-detect" and seg["key_storage"] == "none"


def test_prompt_refuses_bad_key_and_stores_nothing(avsb, memory_keyring, config_dir,
                                                   monkeypatch):
    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    r = avsb(*ENABLE, input="not a key\n")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert "the prompt" in r.stderr
    assert memory_keyring.items == {} and config_bytes(config_dir) is None


def test_no_keyring_is_said_before_the_prompt_asks_for_a_secret(avsb, config_dir,
                                                                monkeypatch):
    import keyring
    from keyring.backends import fail

    from avsb_cli import keystore

    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    keyring.set_keyring(fail.Keyring())
    keystore.reset()
    r = avsb(*ENABLE, input=KEY + "\n")
    assert r.exit_code == ExitCode.KEYRING_UNAVAILABLE
    assert "Segment write key" not in r.output  # never asked
    assert "--auto-detect" in r.stderr and "--insecure-storage" in r.stderr
    assert config_bytes(config_dir) is None
    # --insecure-storage needs no keyring: the prompt is shown and the key kept in the file.
    r = avsb(*ENABLE, "--insecure-storage", input=KEY + "\n")
    assert r.exit_code == 0, r.output
    assert "Segment write key" in r.stderr


def test_no_input_never_prompts(avsb, memory_keyring, config_dir, monkeypatch):
    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    r = avsb(*ENABLE, "--no-input", input=KEY + "\n")
    assert r.exit_code == ExitCode.USAGE, r.output
    assert "Segment write key" not in r.output
    assert memory_keyring.items == {} and config_bytes(config_dir) is None
    monkeypatch.setenv("AVSB_NO_INPUT", "1")
    r = avsb(*ENABLE, "-p", "p2", input=KEY + "\n")
    assert "Segment write key" not in r.output and memory_keyring.items == {}


@pytest.mark.parametrize(("stdin_tty", "stderr_tty", "no_input", "asks"), [
    (True, True, False, True),
    (True, True, True, False),  # --no-input
    (False, True, False, False),  # a pipe or a file on stdin
    (True, False, False, False),  # stderr, where the prompt goes, redirected
])
def test_interactive_needs_a_terminal_on_both_ends(monkeypatch, stdin_tty, stderr_tty,
                                                   no_input, asks):
    # Set both ends explicitly: under `pytest -s` at a terminal they are real ttys.
    monkeypatch.setattr(cli_mod.sys, "stdin", _Tty(stdin_tty))
    monkeypatch.setattr(cli_mod.sys, "stderr", _Tty(stderr_tty))
    assert cli_mod.interactive(no_input) is asks


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_no_terminal_and_no_key_is_a_usage_error_naming_both_ways(avsb, memory_keyring,
                                                                   config_dir):
    # A CI job that forgot its key must fail, not pass in auto-detect mode.
    for args in ((), ("--json",), ("--no-input", "--region", "eu")):
        r = avsb(*ENABLE, *args)
        assert r.exit_code == ExitCode.USAGE, r.output
        assert "--auto-detect" in r.stderr and "--write-key-stdin" in r.stderr
        assert memory_keyring.items == {} and config_bytes(config_dir) is None
    r = avsb(*ENABLE, "--json")
    assert r.json()["error"]["code"] == "usage"
    # A key in the environment is not one to store: still exit 2, saying so.
    r = avsb(*ENABLE, env={"AVSB_SEGMENT_WRITE_KEY": KEY})
    assert r.exit_code == ExitCode.USAGE and "never stored" in r.stderr


def test_no_terminal_auto_detect_when_asked_for(avsb, memory_keyring, config_dir):
    r = avsb(*ENABLE, "--auto-detect")
    assert r.exit_code == 0, r.output
    assert "Auto-detect" in r.stderr
    assert memory_keyring.items == {}
    seg = seg_config(config_dir)
    assert seg == seg | {"enabled": True, "mode": "auto-detect", "key_storage": "none"}
    doc = avsb(*STATUS, "--json").json()
    assert doc["mode"] == "auto-detect" and doc["key_state"] == "none"
    assert doc["key_masked"] is None and doc["key_source"] == "none"
    r = avsb(*STATUS)
    assert "auto-detect" in r.stdout and "window.analytics" in r.stdout


def test_reenable_without_key_keeps_key_and_updates_settings(avsb, memory_keyring, config_dir):
    enable_with(avsb, KEY)
    fp = seg_config(config_dir)["key_fingerprint"]
    r = avsb(*ENABLE, "--region", "eu", "--json")
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[ITEM] == KEY
    doc = r.json()
    assert doc["mode"] == "write-key" and doc["key_masked"] == MASKED
    assert doc["region"] == "eu" and doc["endpoint"] == "https://events.eu1.segmentapis.com"
    assert seg_config(config_dir)["key_fingerprint"] == fp
    r = avsb(*ENABLE, "--endpoint", "proxy.example.com/v1/", "--json")
    doc = r.json()
    assert doc["region"] == "eu"  # kept
    assert doc["endpoint"] == "https://proxy.example.com"
    assert doc["endpoint_source"] == "custom"
    assert memory_keyring.items[ITEM] == KEY


def test_reenable_on_terminal_with_stored_key_does_not_prompt(avsb, memory_keyring,
                                                              monkeypatch):
    enable_with(avsb, KEY)
    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    r = avsb(*ENABLE, input="\n")
    assert r.exit_code == 0, r.output
    assert "Segment write key" not in r.output
    assert memory_keyring.items[ITEM] == KEY


def test_reenable_with_key_replaces_it(avsb, memory_keyring, config_dir):
    enable_with(avsb, KEY)
    fp1 = seg_config(config_dir)["key_fingerprint"]
    doc = avsb(*ENABLE, "--write-key-stdin", "--json", input=KEY2).json()
    assert memory_keyring.items[ITEM] == KEY2
    assert doc["key_masked"] == MASKED2
    fp2 = seg_config(config_dir)["key_fingerprint"]
    assert fp2 != fp1 and doc["key_fingerprint"] == fp2


def test_reenable_keeps_enabled_at(avsb, config_dir):
    enable_with(avsb, KEY)
    first = seg_config(config_dir)["enabled_at"]
    enable_with(avsb, KEY2)
    assert seg_config(config_dir)["enabled_at"] == first


def test_auto_detect_forgets_the_key(avsb, memory_keyring, config_dir):
    enable_with(avsb, KEY)
    r = avsb(*ENABLE, "--auto-detect", "--json")
    assert r.exit_code == 0, r.output
    assert ITEM not in memory_keyring.items
    doc = r.json()
    assert doc["mode"] == "auto-detect" and doc["key_state"] == "none"
    seg = seg_config(config_dir)
    assert seg["key_storage"] == "none" and "key_fingerprint" not in seg


@pytest.mark.parametrize(
    "options",
    [
        ("--write-key", KEY, "--write-key-stdin"),
        ("--write-key", KEY, "--write-key-file", "k.txt"),
        ("--write-key-stdin", "--write-key-file", "k.txt"),
        ("--auto-detect", "--write-key-stdin"),
        ("--auto-detect", "--write-key", KEY),
    ],
)
def test_two_key_sources_is_a_usage_error(avsb, memory_keyring, config_dir, options):
    enable_with(avsb, KEY2)
    before = snapshot(config_dir, memory_keyring)
    r = avsb(*ENABLE, *options, "--json", input=KEY)
    assert r.exit_code == ExitCode.USAGE, r.output
    assert r.json()["error"]["code"] == "usage"
    assert snapshot(config_dir, memory_keyring) == before


# Refusals --------------------------------------------------------------------------

BAD_KEYS = {
    "empty": ("", "empty"),
    "blank": (" \t\n ", "empty"),
    "inner space": ("abcd efgh12345678", "whitespace"),
    "inner tab": ("abcd\tefgh12345678", "whitespace"),
    "control": ("abcd\x01efgh12345678", "control character"),
    "delete": ("abcd\x7fefgh12345678", "control character"),
    "non-ascii": ("abcdéfgh12345678", "non-ASCII"),
    "zero width": ("abcd\u200befgh12345678", "non-ASCII"),
    "too short": ("abc1234", "only 7 characters"),
    "too long": ("a" * 257, "257 characters"),
    "colon": ("abcd:efgh12345678", "':'"),
    "slash": ("abcd/efgh12345678", "'/'"),
    "hash": ("abcd#efgh12345678", "'#'"),
    "percent": ("abcd%efgh12345678", "'%'"),
    "question": ("abcd?efgh12345678", "'?'"),
}


@pytest.mark.parametrize("source", ["option", "stdin", "file"])
@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_bad_keys_are_refused_and_nothing_changes(
    avsb, memory_keyring, config_dir, tmp_path, case, source
):
    bad, says = BAD_KEYS[case]
    if source == "option" and "\x00" in bad:
        pytest.skip("argv cannot hold NUL")
    enable_with(avsb, KEY, "--region", "eu")
    before = snapshot(config_dir, memory_keyring)
    if source == "option":
        args, stdin = ("--write-key", bad), None
    elif source == "stdin":
        args, stdin = ("--write-key-stdin",), bad
    else:
        f = tmp_path / "bad.txt"
        f.write_text(bad, encoding="utf-8")
        args, stdin = ("--write-key-file", str(f)), None
    r = avsb(*ENABLE, *args, "--region", "us", input=stdin)
    assert r.exit_code == ExitCode.VALIDATION_FAILED, r.output
    assert says in r.stderr
    assert r.stderr.startswith("avsb: error:") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.output
    if len(bad.strip()) >= 4:
        assert bad.strip() not in r.stderr  # the (maybe real) key is not echoed
    assert snapshot(config_dir, memory_keyring) == before
    r = avsb(*ENABLE, *args, "--json", input=stdin)
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert r.json()["error"]["code"] == "invalid_key"
    assert snapshot(config_dir, memory_keyring) == before


def test_refusal_before_anything_was_stored_creates_no_config(avsb, memory_keyring, config_dir):
    r = avsb(*ENABLE, "--write-key", "short")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert memory_keyring.items == {} and not (config_dir / "config.toml").exists()


def test_longest_and_shortest_keys_accepted(avsb, memory_keyring):
    for key in ("a" * 256, "Ab3-_.~9"):
        r = avsb(*ENABLE, "--write-key-stdin", "--json", input=key)
        assert r.exit_code == 0, r.output
        assert memory_keyring.items[ITEM] == key
        assert key not in r.output


# Endpoints --------------------------------------------------------------------------


def test_region_eu(avsb, config_dir):
    doc = avsb(*ENABLE, "--write-key-stdin", "--region", "eu", "--json", input=KEY).json()
    assert doc["region"] == "eu"
    assert doc["endpoint"] == "https://events.eu1.segmentapis.com"
    assert doc["endpoint_source"] == "region"
    assert seg_config(config_dir)["region"] == "eu"
    doc = avsb(*ENABLE, "--region", "us", "--json").json()
    assert doc["endpoint"] == "https://api.segment.io"


def test_unknown_region_is_a_usage_error(avsb, config_dir):
    r = avsb(*ENABLE, "--region", "asia", "--json")
    assert r.exit_code == ExitCode.USAGE
    assert r.json()["error"]["code"] == "usage"
    assert not (config_dir / "config.toml").exists()


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://seg.example.com", "https://seg.example.com"),
        ("https://seg.example.com/", "https://seg.example.com"),
        ("https://seg.example.com/v1", "https://seg.example.com"),
        ("https://seg.example.com/v1/", "https://seg.example.com"),
        ("https://seg.example.com/v1///", "https://seg.example.com"),
        ("seg.example.com/v1", "https://seg.example.com"),
        ("HTTPS://Seg.Example.COM/V1", "https://seg.example.com"),
        ("https://proxy.example.com/segment/v1/", "https://proxy.example.com/segment"),
        ("https://seg.example.com:8443/v1", "https://seg.example.com:8443"),
        ("http://127.0.0.1:9999/v1", "http://127.0.0.1:9999"),
        ("http://127.0.0.2:8080/", "http://127.0.0.2:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_endpoint_normalised(avsb, config_dir, given, stored):
    r = avsb(*ENABLE, "--auto-detect", "--endpoint", given, "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["endpoint"] == stored and doc["endpoint_source"] == "custom"
    assert seg_config(config_dir)["endpoint"] == stored


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("http://seg.example.com", "plain http"),
        ("http://10.0.0.1/v1", "plain http"),
        ("ftp://seg.example.com", "scheme"),
        ("https://user:pw@seg.example.com", "credentials"),
        ("https://seg.example.com/v1?x=1", "query"),
        ("https://seg.example.com:99999", "Port"),
        ("https:///v1", "no host"),
        ("https://seg example.com", "whitespace"),
    ],
)
def test_endpoint_refused(avsb, memory_keyring, config_dir, given, says):
    enable_with(avsb, KEY)
    before = snapshot(config_dir, memory_keyring)
    r = avsb(*ENABLE, "--endpoint", given, "--json")
    assert r.exit_code == ExitCode.USAGE, r.output
    err = r.json()["error"]
    assert err["code"] == "usage" and says in err["message"]
    assert snapshot(config_dir, memory_keyring) == before
    # A refused endpoint does not let a new key through either.
    r = avsb(*ENABLE, "--write-key-stdin", "--endpoint", given, input=KEY2)
    assert r.exit_code == ExitCode.USAGE
    assert snapshot(config_dir, memory_keyring) == before


def test_endpoint_default_goes_back_to_region(avsb):
    avsb(*ENABLE, "--auto-detect", "--endpoint", "https://seg.example.com", "--region", "eu")
    doc = avsb(*ENABLE, "--auto-detect", "--endpoint", "default", "--json").json()
    assert doc["endpoint"] == "https://events.eu1.segmentapis.com"
    assert doc["endpoint_source"] == "region"


def test_endpoint_env_override_shown_in_status(avsb, monkeypatch):
    enable_with(avsb, KEY, "--endpoint", "https://seg.example.com")
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", "https://override.example.com/v1/")
    doc = avsb(*STATUS, "--json").json()
    assert doc["endpoint"] == "https://override.example.com"
    assert doc["endpoint_source"] == "env"
    r = avsb(*STATUS)
    assert "https://override.example.com (env)" in r.stdout


def test_endpoint_env_with_plain_http_is_reported(avsb, monkeypatch):
    enable_with(avsb, KEY)
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", "http://seg.example.com")
    r = avsb(*STATUS, "--json")
    assert r.exit_code == 0
    assert "invalid" in r.json()["endpoint"] and "plain http" in r.json()["endpoint"]


# Status tells the truth -----------------------------------------------------------


def test_status_text(avsb):
    enable_with(avsb, KEY, "--region", "eu")
    r = avsb(*STATUS)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for text in ("project", "default", "enabled", "yes", "write-key", MASKED,
                 "from keyring", "eu", "events.eu1.segmentapis.com"):
        assert text in out


def test_status_json_keys_are_stable(avsb):
    enable_with(avsb, KEY)
    doc = avsb(*STATUS, "--json").json()
    documented = {
        "project", "integration", "configured", "enabled", "mode", "key_state", "key_source",
        "key_storage", "key_masked", "key_fingerprint", "key_changed_outside_avsb",
        "key_problem", "region", "endpoint", "endpoint_source", "last_validation",
        "enabled_at", "updated_at", "config_path",
    }
    assert documented <= set(doc)
    assert isinstance(doc["enabled"], bool) and doc["mode"] in ("write-key", "auto-detect")


def test_status_of_unconfigured_project(avsb):
    r = avsb(*STATUS, "--json")
    assert r.exit_code == 0
    doc = r.json()
    assert doc["configured"] is False and doc["enabled"] is False
    assert doc["key_state"] == "none"


def test_key_deleted_behind_avsbs_back_shows_missing(avsb, memory_keyring):
    enable_with(avsb, KEY)
    del memory_keyring.items[ITEM]
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_state"] == "missing" and doc["key_source"] == "keyring"
    assert doc["key_masked"] is None
    assert doc["enabled"] is True and doc["mode"] == "write-key"
    r = avsb(*STATUS)
    assert "MISSING" in r.stdout


def test_key_changed_behind_avsbs_back_is_flagged(avsb, memory_keyring):
    enable_with(avsb, KEY)
    memory_keyring.items[ITEM] = KEY2
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_state"] == "ok" and doc["key_masked"] == MASKED2
    assert doc["key_changed_outside_avsb"] is True
    assert "changed outside avsb" in avsb(*STATUS).stdout


def test_env_key_shows_source_env(avsb, memory_keyring, monkeypatch):
    enable_with(avsb, KEY)
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", f" {KEY2}\n")
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_source"] == "env" and doc["key_state"] == "ok"
    assert doc["key_masked"] == MASKED2
    assert doc["key_storage"] == "keyring"  # what is stored did not change
    assert "from env" in avsb(*STATUS).stdout
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", "")  # empty means unset
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_source"] == "keyring" and doc["key_masked"] == MASKED


def test_env_key_works_without_any_config_or_keyring(avsb, monkeypatch):
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_source"] == "env" and doc["key_state"] == "ok"


def test_malformed_env_key_is_reported_not_a_crash(avsb, memory_keyring, config_dir,
                                                   monkeypatch):
    enable_with(avsb, KEY)
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", "has space in it")
    r = avsb(*STATUS, "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["key_source"] == "env" and doc["key_state"] == "invalid"
    assert "whitespace" in doc["key_problem"]
    assert "INVALID" in avsb(*STATUS).stdout
    # enable still works (the env variable is not what enable stores) and
    # does not report failure after having changed things.
    r = avsb(*ENABLE, "--write-key-stdin", "--json", input=KEY2)
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[ITEM] == KEY2


def test_insecure_storage(avsb, memory_keyring, config_dir):
    r = avsb(*ENABLE, "--write-key-stdin", "--insecure-storage", "--json", input=KEY)
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["key_storage"] == "file" and doc["key_source"] == "file"
    assert doc["key_masked"] == MASKED
    assert memory_keyring.items == {}
    secrets = config_dir / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert KEY in secrets.read_text(encoding="utf-8")
    assert "insecure storage" in avsb(*STATUS).stdout
    # Back to the keyring: the plain copy goes.
    enable_with(avsb, KEY2)
    assert memory_keyring.items[ITEM] == KEY2
    assert KEY not in secrets.read_text(encoding="utf-8")
    assert avsb(*STATUS, "--json").json()["key_storage"] == "keyring"


def test_moving_to_insecure_storage_leaves_no_copy_in_keyring(avsb, memory_keyring):
    enable_with(avsb, KEY)
    r = avsb(*ENABLE, "--write-key-stdin", "--insecure-storage", input=KEY2)
    assert r.exit_code == 0, r.output
    assert ITEM not in memory_keyring.items
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_storage"] == "file" and doc["key_masked"] == MASKED2


def test_insecure_file_deleted_behind_avsbs_back_shows_missing(avsb, config_dir):
    enable_with(avsb, KEY, "--insecure-storage")
    (config_dir / "secrets.toml").unlink()
    doc = avsb(*STATUS, "--json").json()
    assert doc["key_state"] == "missing" and doc["key_source"] == "file"


# Disable --------------------------------------------------------------------------


def test_disable_keeps_key_unless_forget(avsb, memory_keyring, config_dir):
    enable_with(avsb, KEY)
    r = avsb(*DISABLE, "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert doc["enabled"] is False and doc["key_forgotten"] is False
    assert doc["key_masked"] == MASKED
    assert memory_keyring.items[ITEM] == KEY
    assert "disabled_at" in seg_config(config_dir)
    # Disabling twice is fine and changes nothing that matters.
    r = avsb(*DISABLE, "--json")
    assert r.exit_code == 0 and r.json()["enabled"] is False
    assert memory_keyring.items[ITEM] == KEY
    r = avsb(*DISABLE, "--forget-key", "--json")
    assert r.exit_code == 0
    doc = r.json()
    assert doc["key_forgotten"] is True and doc["key_state"] == "none"
    assert doc["mode"] == "auto-detect"
    assert ITEM not in memory_keyring.items
    seg = seg_config(config_dir)
    assert seg["key_storage"] == "none" and "key_fingerprint" not in seg
    # And once more, with nothing left to forget.
    r = avsb(*DISABLE, "--forget-key", "--json")
    assert r.exit_code == 0 and r.json()["key_forgotten"] is False


def test_disable_text(avsb):
    enable_with(avsb, KEY)
    r = avsb(*DISABLE)
    assert r.exit_code == 0
    assert "disabled" in r.stdout and "enabled" in r.stdout and "no" in r.stdout


def test_disable_unconfigured_project_is_fine_and_writes_nothing(avsb, config_dir):
    r = avsb(*DISABLE, "--json")
    assert r.exit_code == 0
    assert r.json()["enabled"] is False
    assert not (config_dir / "config.toml").exists()


def test_disable_forget_key_in_insecure_storage(avsb, config_dir):
    enable_with(avsb, KEY, "--insecure-storage")
    doc = avsb(*DISABLE, "--forget-key", "--json").json()
    assert doc["key_forgotten"] is True
    assert KEY not in (config_dir / "secrets.toml").read_text(encoding="utf-8")


def test_disable_forget_key_when_already_missing(avsb, memory_keyring):
    enable_with(avsb, KEY)
    del memory_keyring.items[ITEM]
    r = avsb(*DISABLE, "--forget-key", "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["key_forgotten"] is False and r.json()["key_state"] == "none"


def test_enable_after_disable_keeps_key(avsb, memory_keyring):
    enable_with(avsb, KEY)
    avsb(*DISABLE)
    doc = avsb(*ENABLE, "--json").json()
    assert doc["enabled"] is True and doc["key_masked"] == MASKED


# JSON errors and one-line errors -----------------------------------------------------


def test_unknown_option_json_error(avsb):
    r = avsb(*STATUS, "--bogus", "--json")
    assert r.exit_code == ExitCode.USAGE
    assert set(r.json()["error"]) >= {"code", "message"}
    assert r.json()["error"]["code"] == "usage"
    assert len(r.stderr.strip().splitlines()) == 1


def test_json_mode_stdout_is_exactly_one_document(avsb):
    r = avsb(*ENABLE, "--write-key", KEY, "--json")
    assert r.exit_code == 0
    json.loads(r.stdout)  # raises if there is anything else
    assert "shell history" in r.stderr  # the warning went to stderr


# Ctrl-C -----------------------------------------------------------------------------


def test_ctrl_c_in_keyring_set_exits_130_and_changes_nothing(
    avsb, memory_keyring, config_dir, monkeypatch
):
    enable_with(avsb, KEY)
    before = snapshot(config_dir, memory_keyring)

    def interrupted(*_a):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(memory_keyring, "set_password", interrupted)
    r = avsb(*ENABLE, "--write-key-stdin", "--region", "eu", input=KEY2)
    assert r.exit_code == ExitCode.INTERRUPTED, r.output
    assert "interrupted" in r.stderr and "Traceback" not in r.output
    assert snapshot(config_dir, memory_keyring) == before
    r = avsb(*ENABLE, "--write-key-stdin", "--json", input=KEY2)
    assert r.exit_code == ExitCode.INTERRUPTED
    assert r.json()["error"]["code"] == "interrupted"
    assert snapshot(config_dir, memory_keyring) == before


def test_sigint_while_storing_is_held_until_key_and_config_agree(
    avsb, memory_keyring, config_dir, monkeypatch
):
    import signal

    enable_with(avsb, KEY)
    real_set = memory_keyring.set_password

    def set_then_ctrl_c(service, user, password):  # type: ignore[no-untyped-def]
        real_set(service, user, password)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(memory_keyring, "set_password", set_then_ctrl_c)
    r = avsb(*ENABLE, "--write-key-stdin", input=KEY2)
    assert r.exit_code == ExitCode.INTERRUPTED, r.output
    # Both changed, or neither: here the key went in, so the config says so.
    assert memory_keyring.items[ITEM] == KEY2
    from avsb_cli.writekey import fingerprint

    assert seg_config(config_dir)["key_fingerprint"] == fingerprint(KEY2)


def test_eof_at_the_prompt_is_an_interruption_and_stores_nothing(avsb, memory_keyring,
                                                                 config_dir, monkeypatch):
    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: not no_input)
    r = avsb(*ENABLE, "--json", input="")
    assert r.exit_code == ExitCode.INTERRUPTED, r.output
    assert r.json()["error"]["code"] == "interrupted"
    assert memory_keyring.items == {} and config_bytes(config_dir) is None


# Smaller contracts ------------------------------------------------------------------


def test_stdin_far_too_long_is_an_input_error(avsb, memory_keyring):
    r = avsb(*ENABLE, "--write-key-stdin", "--json", input="a" * (64 * 1024 + 10))
    assert r.exit_code == ExitCode.INPUT
    assert r.json()["error"]["code"] == "input" and memory_keyring.items == {}


def test_quiet_enable_prints_nothing_on_stdout(avsb, memory_keyring):
    r = avsb(*ENABLE, "--write-key-stdin", "--quiet", input=KEY)
    assert r.exit_code == 0 and r.stdout == ""
    assert memory_keyring.items[ITEM] == KEY


def test_no_colour_codes_without_a_terminal(config_dir, tmp_path):
    env = avsb_env(TERM="xterm-256color",
                   PYTHON_KEYRING_BACKEND="tests.support.memkeyring.FileKeyring",
                   AVSB_TEST_KEYRING_FILE=str(tmp_path / "kr.json"))
    env.pop("NO_COLOR", None)
    assert run_avsb(*ENABLE, "--write-key-stdin", env=env, input=KEY).exit_code == 0
    for args in (STATUS, ("integrations", "list")):
        r = run_avsb(*args, env=env)
        assert r.exit_code == 0, r.stderr
        assert "\x1b[" not in r.stdout + r.stderr
        _no_leak(r.stdout + r.stderr, f"output of {args}")
