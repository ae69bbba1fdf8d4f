"""The scripting contract: JSON shapes, exit codes, quiet, plain output, no prompts.

A failing test here means a script somewhere may break: change the schema,
the README and the code together, on purpose.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time

import keyring
import keyring.backends.fail
import pytest
import typer.main
from typer._click import Context

from avsb_cli import keystore
from avsb_cli.cli import app
from avsb_cli.errors import ExitCode
from tests.conftest import KEY, ROOT, avsb_env, run_avsb
from tests.support.fakesegment import closed_port_url

# Golden schemas -----------------------------------------------------------------
# top-level key -> the JSON types its value may have. OPTIONAL keys may be absent.

S, B, N, NULL, OBJ, ARR = "string", "boolean", "number", "null", "object", "array"

STATUS = {
    "project": {S}, "integration": {S}, "configured": {B}, "enabled": {B}, "mode": {S},
    "key_state": {S}, "key_source": {S}, "key_storage": {S}, "key_masked": {S, NULL},
    "key_fingerprint": {S, NULL}, "key_changed_outside_avsb": {B}, "key_problem": {S, NULL},
    "insecure_storage": {S, NULL},
    "region": {S}, "endpoint": {S}, "endpoint_source": {S}, "last_validation": {OBJ, NULL},
    "enabled_at": {S, NULL}, "updated_at": {S, NULL}, "config_path": {S},
    "remote": {OBJ, NULL},
}
# status's "remote" when logged in to A vs B (tests/test_avsb_api.py)
REMOTE = {"project_id": {S}, "enabled": {B}, "mode": {S}, "key_masked": {S, NULL},
          "key_fingerprint": {S, NULL}, "same_key_as_local": {B}, "updated_at": {S, NULL}}
ENABLE = {**STATUS, "changed": {B}}
DISABLE = {**STATUS, "key_forgotten": {B}, "changed": {B}}
LOGIN = {"api_url": {S}, "org": {S}, "token_kind": {S}, "token_masked": {S},
         "token_source": {S}, "projects": {N}, "env_token_overrides": {B}}
LOGOUT = {"api_url": {S}, "token_deleted": {B}, "env_token_set": {B}}
WHOAMI = {"api_url": {S}, "org": {S, NULL}, "token_kind": {S, NULL}, "token_masked": {S, NULL},
          "token_source": {S}, "logged_in": {B}, "accepted": {B, NULL}, "projects": {N, NULL},
          "problem": {S, NULL}}
PROJECTS = {"org": {S, NULL}, "api_url": {S}, "projects": {ARR}}
PROJECT_ITEM = {"id": {S}, "shortId": {S, NULL}, "name": {S, NULL}}
DOCTOR = {"ok": {B}, "checks": {ARR}}
LIST = {"project": {S}, "integrations": {ARR}}
LIST_ITEM = {"name": {S}, "enabled": {B}, "mode": {S, NULL}, "region": {S, NULL}}
TEST_EVENT = {
    "project": {S}, "dry_run": {B}, "message_id": {S}, "user_id": {S, NULL},
    "anonymous_id": {S, NULL}, "anonymous_id_generated": {B}, "endpoint": {S}, "status": {N},
    "attempts": {N}, "retry_causes": {ARR}, "latency_ms": {N}, "key_masked": {S},
    "key_source": {S},
}
DRY_RUN = {"project": {S}, "dry_run": {B}, "message_id": {S}, "user_id": {S, NULL},
           "anonymous_id": {S, NULL}, "anonymous_id_generated": {B}, "endpoint": {S},
           "payload": {OBJ}}
VALIDATE = {
    "project": {S}, "ok": {B}, "key_masked": {S, NULL}, "key_source": {S}, "key_state": {S},
    "region": {S},
    "endpoint": {S}, "delivery_probe": {S}, "checks": {ARR}, "checked_at": {S},
    "recorded": {B},
    # with --send-event:
    "message_id": {S}, "anonymous_id": {S, NULL},
    # when the outcome could not be written to config:
    "record_problem": {S},
}
VALIDATE_OPTIONAL = {"message_id", "anonymous_id", "record_problem"}
SEND = {
    "project": {S}, "source": {S}, "format": {S, NULL}, "dry_run": {B}, "endpoint": {S},
    "key_masked": {S, NULL}, "key_source": {S, NULL}, "read": {N}, "valid": {N}, "sent": {N},
    "skipped": {N}, "failed": {N}, "unsent": {N}, "batches": {N}, "batches_failed": {N},
    "retries": {N}, "seconds": {N}, "events_per_second": {N}, "bad_lines": {ARR},
    "stopped_at_line": {N, NULL}, "failed_file": {S, NULL}, "failed_file_error": {S, NULL},
    "gave_up": {S, NULL}, "failures": {ARR},
    "failed_file_appended": {B}, "interrupted": {S, NULL}, "last_line_read": {N},
}
BAD_LINE = {"line": {N}, "error": {S}}
CHECK = {"name": {S}, "title": {S}, "status": {S}, "detail": {S}, "fix": {S}}
ERROR = {"error": {OBJ}}
ERROR_BODY = {"code": {S}, "message": {S}, "hint": {S}}
ERROR_CODES = {"usage", "not_configured", "keyring_unavailable", "invalid_key",
               "validation_failed", "network", "config", "input", "interrupted", "error",
               "auth", "conflict", "not_found", "output"}


def json_type(value: object) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return B
    if isinstance(value, int | float):
        return N
    if isinstance(value, str):
        return S
    if isinstance(value, list):
        return ARR
    if isinstance(value, dict):
        return OBJ
    raise AssertionError(f"not a JSON value: {value!r}")


def assert_schema(doc: dict, schema: dict, optional: set[str] = frozenset()) -> None:
    assert isinstance(doc, dict), doc
    keys = set(doc)
    assert keys <= set(schema), f"undocumented keys: {sorted(keys - set(schema))}"
    assert set(schema) - optional <= keys, f"missing keys: {sorted(set(schema) - optional - keys)}"
    for key, value in doc.items():
        assert json_type(value) in schema[key], f"{key}: {json_type(value)} not in {schema[key]}"


def test_schema_checker_can_fail():
    with pytest.raises(AssertionError):
        assert_schema({"a": 1}, {"a": {S}})
    with pytest.raises(AssertionError):
        assert_schema({"a": "x", "b": 1}, {"a": {S}})
    with pytest.raises(AssertionError):
        assert_schema({}, {"a": {S}})


def _json(r) -> dict:  # type: ignore[no-untyped-def]
    """Exactly one JSON document on stdout."""
    return json.loads(r.stdout)


# Schemas per command ----------------------------------------------------------------


def test_list_schema(cli):
    for setup in ([], ["integrations", "segment", "enable", "--auto-detect", "-q"]):
        if setup:
            assert cli(*setup).exit_code == 0
        r = cli("integrations", "list", "--json")
        assert r.exit_code == 0, r.output
        doc = _json(r)
        assert_schema(doc, LIST)
        assert [i["name"] for i in doc["integrations"]] == ["segment"]
        for item in doc["integrations"]:
            assert_schema(item, LIST_ITEM)


def test_status_schema_fresh_and_configured(cli):
    r = cli("integrations", "segment", "status", "--json")
    assert r.exit_code == 0, r.output
    assert_schema(_json(r), STATUS)
    assert _json(r)["configured"] is False
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli("integrations", "segment", "status", "--json")
    doc = _json(r)
    assert_schema(doc, STATUS)
    assert doc["key_state"] == "ok" and doc["key_masked"].endswith(KEY[-4:])


def test_enable_schema(cli):
    r = cli("integrations", "segment", "enable", "--auto-detect", "--json")
    assert r.exit_code == 0, r.output
    assert_schema(_json(r), ENABLE)
    r = cli("integrations", "segment", "enable", "--write-key-stdin", "--region", "eu",
            "--json", input=KEY)
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, ENABLE)
    assert doc["region"] == "eu" and doc["mode"] == "write-key"


def test_disable_schema(cli):
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli("integrations", "segment", "disable", "--forget-key", "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, DISABLE)
    assert doc["key_forgotten"] is True and doc["enabled"] is False


def test_test_event_schema(cli, segment):
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli("segment", "test-event", "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, TEST_EVENT)
    assert doc["anonymous_id_generated"] is True and doc["status"] == 200
    r = cli("segment", "test-event", "--user-id", "u_42", "--json")
    doc = _json(r)
    assert_schema(doc, TEST_EVENT)
    assert doc["user_id"] == "u_42" and doc["anonymous_id"] is None
    assert len(segment.events) == 2


def test_test_event_dry_run_schema(cli, segment):
    r = cli("segment", "test-event", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, DRY_RUN)
    assert doc["dry_run"] is True and doc["payload"]["event"] == "avsb_experiment"
    assert segment.events == []


@pytest.mark.parametrize("cmd", [["segment", "validate"],
                                 ["integrations", "segment", "validate"]])
def test_validate_schema(cli, segment, cmd):
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli(*cmd, "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, VALIDATE, VALIDATE_OPTIONAL)
    assert doc["ok"] is True
    for check in doc["checks"]:
        assert_schema(check, CHECK)
        assert check["status"] in ("pass", "fail", "skip")


def test_validate_send_event_schema(cli, segment):
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli("segment", "validate", "--send-event", "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, VALIDATE, VALIDATE_OPTIONAL)
    assert doc["delivery_probe"] == "event" and doc["message_id"]
    assert [e["messageId"] for e in segment.events] == [doc["message_id"]]


def test_failed_validation_is_the_validate_document_and_exit_5(cli, segment):
    # An unknown key: the JSON is still the validate document (ok: false), not an error one.
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q",
        input="Unknownkey1234567890abcdef")
    r = cli("segment", "validate", "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    doc = _json(r)
    assert_schema(doc, VALIDATE, VALIDATE_OPTIONAL)
    assert doc["ok"] is False
    assert [c["name"] for c in doc["checks"] if c["status"] == "fail"]
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("avsb: error:")


ENROLLMENT = {"experiment_id": "exp_abc123", "experiment_name": "Homepage Hero Test",
              "variation_id": "var_xyz789", "variation_name": "Variation B",
              "timestamp": "2024-05-01T12:00:00Z"}


def _enrollments(path, users=("u_1", "u_2"), bad=False):  # type: ignore[no-untyped-def]
    lines = [json.dumps({**ENROLLMENT, "user_id": u}) for u in users]
    if bad:
        lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_send_schema(cli, segment, tmp_path):
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli("segment", "send", _enrollments(tmp_path / "e.jsonl"), "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, SEND)
    assert doc["sent"] == 2 and doc["bad_lines"] == []
    assert len(segment.unique_events) == 2


def test_send_with_bad_lines_is_the_send_document_and_exit_8(cli, segment, tmp_path):
    cli("integrations", "segment", "enable", "--write-key-stdin", "-q", input=KEY)
    r = cli("segment", "send", _enrollments(tmp_path / "e.jsonl", bad=True), "--json")
    assert r.exit_code == ExitCode.INPUT, r.output
    doc = _json(r)
    assert_schema(doc, SEND)
    assert doc["skipped"] == 1 and doc["sent"] == 2
    for bad in doc["bad_lines"]:
        assert_schema(bad, BAD_LINE)
    assert r.stderr.startswith("avsb: error:")


def test_send_dry_run_schema(cli, segment, tmp_path):
    r = cli("segment", "send", _enrollments(tmp_path / "e.jsonl"), "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = _json(r)
    assert_schema(doc, SEND)
    assert doc["dry_run"] is True and doc["valid"] == 2
    assert segment.events == []


def test_error_document_schema(cli):
    r = cli("segment", "test-event", "--json")
    assert r.exit_code == ExitCode.NOT_CONFIGURED
    doc = _json(r)
    assert_schema(doc, ERROR)
    assert_schema(doc["error"], ERROR_BODY, {"hint"})
    assert doc["error"]["code"] == "not_configured"


# Exit codes ------------------------------------------------------------------------


def _corrupt_config(config_dir):  # type: ignore[no-untyped-def]
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text("[projects.default.segment\nenabled = true\n")


def _fail_keyring(config_dir):  # type: ignore[no-untyped-def]
    keyring.set_keyring(keyring.backends.fail.Keyring())
    keystore.reset()


def _network(config_dir, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", closed_port_url())
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    monkeypatch.setenv("AVSB_TIMEOUT", "0.3")


# name -> (expected code, error code in JSON, argv, stdin, setup)
FAILURES = {
    "usage": (2, "usage", ["integrations", "list", "--bogus"], None, None),
    "not_configured": (3, "not_configured", ["segment", "test-event"], None, None),
    "keyring": (4, "keyring_unavailable",
                ["integrations", "segment", "enable", "--write-key-stdin"], KEY, _fail_keyring),
    "validation": (5, "invalid_key",
                   ["integrations", "segment", "enable", "--write-key-stdin"], "short", None),
    "network": (6, "network", ["segment", "test-event"], None, "network"),
    "config": (7, "config", ["integrations", "segment", "status"], None, _corrupt_config),
    "input": (8, "input", ["integrations", "segment", "enable", "--write-key-file",
                           "/nonexistent/avsb/key.txt"], None, None),
    "auth": (9, "auth", ["login", "--with-token", "--org", "org_1"], "not-a-token", None),
    "conflict": (10, "conflict", ["integrations", "segment", "enable", "--auto-detect"], None,
                 "a vs b conflict"),
}


def test_the_table_covers_every_exit_code_and_error_code():
    # A new ExitCode or AvsbError without a row above (or without a place in
    # the README) fails here. OK, ERROR, INTERRUPTED and TERMINATED (signals
    # to a real send: test_faults_bounds.py) have tests of their own.
    from avsb_cli import errors

    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.AvsbError)]
    assert {c.code for c in classes} == ERROR_CODES
    assert {spec[0] for spec in FAILURES.values()} == (
        set(ExitCode) - {ExitCode.OK, ExitCode.ERROR, ExitCode.INTERRUPTED,
                         ExitCode.TERMINATED})
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code in ERROR_CODES:
        assert f"`{code}`" in readme, code
    for exit_code in ExitCode:
        assert f"| {exit_code.value} | {exit_code.name} |" in readme, exit_code


@pytest.mark.parametrize("mode", ["text", "json"])
@pytest.mark.parametrize("name", list(FAILURES))
def test_exit_code_table(cli, config_dir, monkeypatch, request, name, mode):
    code, err_code, argv, stdin, setup = FAILURES[name]
    if setup == "network":
        _network(config_dir, monkeypatch)
    elif setup == "a vs b conflict":
        from tests.support.fakeavsb import PAT

        server = request.getfixturevalue("avsb")
        monkeypatch.setenv("AVSB_TOKEN", PAT)
        server.fault(f"PUT {server.seg_path('prj_default1')}", status=409)
    elif setup:
        setup(config_dir)
    r = cli(*argv, *(["--json"] if mode == "json" else []), input=stdin)
    assert r.exit_code == code, r.output
    assert ExitCode(code).value == r.exit_code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avsb: error: "), r.stderr
    assert "Traceback" not in r.output
    if mode == "json":
        doc = _json(r)
        assert_schema(doc, ERROR)
        assert_schema(doc["error"], ERROR_BODY, {"hint"})
        assert doc["error"]["code"] == err_code
    else:
        assert r.stdout == ""


@pytest.mark.parametrize("mode", ["text", "json"])
def test_exit_codes_of_a_real_process(config_dir, mode):
    # The same codes out of a real interpreter, through sys.exit in AvsbGroup.main.
    extra = ["--json"] if mode == "json" else []
    env = avsb_env()
    r = run_avsb("integrations", "list", "--bogus", *extra, env=env)
    assert r.exit_code == 2, r.stderr
    _corrupt_config(config_dir)
    r = run_avsb("integrations", "segment", "status", *extra, env=env)
    assert r.exit_code == 7, r.stderr
    if mode == "json":
        assert _json(r)["error"]["code"] == "config"


def _readme_exit_codes() -> dict[str, int]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|", section, flags=re.M)
    return {name: int(code) for code, name in rows}


def test_exit_codes_match_the_readme_table():
    table = _readme_exit_codes()
    assert table, "no exit-code table found in README.md"
    assert table == {e.name: e.value for e in ExitCode}


# Every reporting command takes --json and --quiet --------------------------------

NOT_REPORTING = {("completion",)}  # prints a shell script, nothing to report
# About the A vs B login, not a project: no --project (quiet runs in test_avsb_api.py).
ACCOUNT = {("login",), ("logout",), ("whoami",), ("projects", "list"), ("doctor",)}


def _leaf_commands():  # type: ignore[no-untyped-def]
    root = typer.main.get_command(app)

    def walk(cmd, path):  # type: ignore[no-untyped-def]
        # Through click's API, not .commands: the root builds its groups lazily.
        ctx = Context(cmd)
        names = cmd.list_commands(ctx) if hasattr(cmd, "list_commands") else []
        if names:
            for name in names:
                yield from walk(cmd.get_command(ctx, name), (*path, name))
        else:
            yield path, cmd

    return list(walk(root, ()))


def test_every_reporting_command_has_json_and_quiet():
    leaves = _leaf_commands()
    assert len(leaves) >= 8
    for path, cmd in leaves:
        if path in NOT_REPORTING:
            continue
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        wanted = {"--json", "--quiet"} | (set() if path in ACCOUNT else {"--project"})
        assert wanted <= opts, f"avsb {' '.join(path)}: {opts}"


def _enabled(cli):  # type: ignore[no-untyped-def]
    assert cli("integrations", "segment", "enable", "--write-key-stdin", "-q",
               input=KEY).exit_code == 0


# What each reporting command needs to succeed; a new command must be added here.
QUIET_RUNS = {
    ("integrations", "list"): ([], None),
    ("integrations", "segment", "status"): ([], None),
    ("integrations", "segment", "enable"): (["--write-key", KEY], None),
    ("integrations", "segment", "disable"): ([], None),
    ("integrations", "segment", "validate"): ([], None),
    ("segment", "validate"): ([], None),
    ("segment", "test-event"): ([], None),
    ("segment", "test-event", "--dry-run"): ([], None),
    ("segment", "send"): (["{enrollments}"], None),
    ("segment", "send", "--dry-run"): (["{enrollments}"], None),
    ("segment", "listen"): (["--port", "0", "--timeout", "0.3"], None),
}


def test_quiet_runs_cover_every_reporting_command():
    leaves = {path for path, _ in _leaf_commands()} - NOT_REPORTING - ACCOUNT
    covered = {tuple(p for p in key if not p.startswith("-")) for key in QUIET_RUNS}
    assert leaves <= covered, f"add to QUIET_RUNS: {sorted(leaves - covered)}"


@pytest.mark.parametrize("key", list(QUIET_RUNS), ids=" ".join)
def test_quiet_prints_nothing_on_success(cli, segment, key, tmp_path):
    _enabled(cli)
    extra, stdin = QUIET_RUNS[key]
    enrollments = _enrollments(tmp_path / "e.jsonl")
    extra = [enrollments if x == "{enrollments}" else x for x in extra]
    r = cli(*key, *extra, "--quiet", input=stdin)
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and r.stderr == ""
    r = cli(*key, *extra, "-q", input=stdin)
    assert r.output == ""


def test_quiet_still_prints_errors(cli, config_dir):
    _corrupt_config(config_dir)
    r = cli("integrations", "segment", "status", "--quiet")
    assert r.exit_code == ExitCode.CONFIG
    assert r.stdout == "" and r.stderr.startswith("avsb: error: ")


def test_quiet_and_json_still_print_the_document(cli):
    r = cli("integrations", "segment", "status", "--quiet", "--json")
    assert r.exit_code == 0
    assert_schema(_json(r), STATUS)
    assert r.stderr == ""


# Terminals: plain output and no prompts ---------------------------------------------


def _pty_run(argv: list[str], env: dict[str, str], answer: str | None = None,
             deadline: float = 30.0) -> tuple[int, bytes]:
    """Run avsb with stdin, stdout and stderr on a pseudo-terminal.

    ``answer`` is typed once a prompt (output ending in ': ') shows. The
    deadline is only a guard against a hang (a prompt nobody answers).
    """
    import pty

    master, slave = pty.openpty()
    # A new session has no controlling terminal, so a hidden prompt (getpass)
    # reads this pty through stdin instead of opening the runner's /dev/tty.
    proc = subprocess.Popen([sys.executable, "-m", "avsb_cli", *argv], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    out = b""
    end = time.monotonic() + deadline
    try:
        while True:
            if time.monotonic() > end:
                proc.kill()
                proc.wait(timeout=10)
                raise AssertionError(f"avsb still waiting after {deadline}s: {out!r}")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                # typer writes "...:" then getpass turns echo off (flushing input)
                # and writes " ": answer only after the space.
                if answer is not None and out.endswith(b": "):
                    os.write(master, answer.encode() + b"\r")
                    answer = None
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    return proc.wait(timeout=10), out


def _terminal_env(**extra: str) -> dict[str, str]:
    env = avsb_env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


@pytest.mark.parametrize("extra", [{"NO_COLOR": "1"}, {"TERM": "dumb"}],
                         ids=["NO_COLOR", "TERM=dumb"])
def test_plain_output_on_a_terminal(extra):
    code, out = _pty_run(["integrations", "segment", "status"], _terminal_env(**extra))
    assert code == 0, out
    assert b"project" in out
    assert b"\x1b" not in out


def test_colour_on_a_real_terminal_so_the_plain_tests_can_fail():
    code, out = _pty_run(["integrations", "segment", "status"], _terminal_env())
    assert code == 0
    assert b"\x1b[" in out


def test_plain_output_without_a_terminal():
    env = _terminal_env()
    for argv in (["integrations", "segment", "status"], ["integrations", "list"],
                 ["segment", "test-event"]):
        proc = subprocess.run([sys.executable, "-m", "avsb_cli", *argv], env=env,
                              capture_output=True, timeout=60)
        assert b"\x1b" not in proc.stdout + proc.stderr
        assert proc.stdout or proc.stderr


def test_no_input_never_prompts_even_on_a_terminal(config_dir):
    # No prompt: with no key to keep, a usage error that names the ways to give one.
    code, out = _pty_run(["integrations", "segment", "enable", "--no-input"], _terminal_env())
    assert code == ExitCode.USAGE, out
    assert b"Segment write key (blank" not in out
    assert b"--auto-detect" in out
    # AVSB_NO_INPUT=1 is the same.
    code, out = _pty_run(["integrations", "segment", "enable", "--project", "p2"],
                         _terminal_env(AVSB_NO_INPUT="1"))
    assert code == ExitCode.USAGE and b"Segment write key (blank" not in out


def test_a_terminal_without_no_input_does_prompt(config_dir, tmp_path):
    # The counterpart: the prompt exists, so the test above can fail.
    env = _terminal_env(PYTHON_KEYRING_BACKEND="tests.support.memkeyring.FileKeyring",
                        AVSB_TEST_KEYRING_FILE=str(tmp_path / "keyring.json"))
    code, out = _pty_run(["integrations", "segment", "enable"], env, answer=KEY)
    assert code == 0, out
    assert b"Segment write key (blank" in out
    assert KEY.encode() not in out  # hidden input, masked output
    r = run_avsb("integrations", "segment", "status", "--json", env=env)
    doc = r.json()
    assert doc["mode"] == "write-key" and doc["key_masked"] == "…" + KEY[-4:]


def test_no_prompt_without_a_terminal(cli):
    r = cli("integrations", "segment", "enable", input="")
    assert r.exit_code == ExitCode.USAGE, r.output
    assert "Segment write key" not in r.output
    assert "--auto-detect" in r.stderr and "--write-key-stdin" in r.stderr
