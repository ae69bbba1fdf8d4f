"""Config faults (issue 6): hand-broken files, read-only folders, open
permissions, many writers at once, a writer killed mid-write, and Ctrl-C.

The corrupt-TOML cases themselves are in test_config.py; here the file is
valid TOML with values of the wrong type, which must be reported like a
corrupt file (exit 7, naming the field) rather than crash a later reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avsb_cli.errors import ExitCode
from avsb_cli.writekey import fingerprint
from tests.conftest import KEY, KEY2, ROOT, avsb_env, one_error_line

ENABLE = ("integrations", "segment", "enable")
DISABLE = ("integrations", "segment", "disable")
STATUS = ("integrations", "segment", "status")
ITEM = ("avsb", "segment:default")




# Valid TOML, wrong values -----------------------------------------------------------

FIELDS = ["enabled", "mode", "key_storage", "key_fingerprint", "region", "endpoint",
          "validation", "enabled_at", "updated_at"]
toml_scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.text(max_size=30), st.sampled_from(["us", "eu", "write-key", "auto-detect", "keyring",
                                           "file", "none", "https://proxy.example.com",
                                           "http://evil.example.com", "ftp://x", ""]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["ok", "failed", "checked_at", "x"]),
                                            inner, max_size=3)),
    max_leaves=6,
)
COMMANDS = [
    ("integrations", "list", "--json"),
    (*STATUS, "--json"),
    (*STATUS,),
    (*ENABLE, "--auto-detect", "--json"),
    (*DISABLE,),
    ("segment", "test-event", "--dry-run"),
    ("segment", "test-event"),
    ("segment", "validate", "--json"),
]


HAND_EDITED_EXAMPLES = 80


@settings(max_examples=HAND_EDITED_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seg=st.dictionaries(st.sampled_from(FIELDS), toml_values, max_size=5),
       command=st.sampled_from(COMMANDS))
def test_hand_edited_values_never_crash(cli, config_dir, seg, command):
    import tomli_w

    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.toml"
    path.write_text(tomli_w.dumps({"projects": {"default": {"segment": seg}}}))
    path.chmod(0o600)
    before = path.read_bytes()
    r = cli(*command)
    assert r.exit_code != ExitCode.ERROR, (seg, r.output)
    assert "Traceback" not in r.output
    assert r.exit_code in (0, 2, 3, 4, 5, 6, 7), (seg, r.output)
    if r.exit_code == ExitCode.CONFIG:
        assert path.read_bytes() == before  # reported, left as it was
        assert "projects.default.segment." in r.stderr or "config" in r.stderr
    if "--json" in command:
        json.loads(r.stdout)  # one document, error or not


def test_wrong_type_names_the_field(cli, config_dir):
    config_dir.mkdir(parents=True)
    path = config_dir / "config.toml"
    path.write_text('[projects.default.segment]\nenabled = true\nendpoint = 5\n')
    path.chmod(0o600)
    for args in [STATUS, (*ENABLE, "--auto-detect"), DISABLE, ("segment", "validate")]:
        line = one_error_line(cli(*args), ExitCode.CONFIG)
        assert "projects.default.segment.endpoint is 5" in line and str(path) in line
    assert path.read_text() == '[projects.default.segment]\nenabled = true\nendpoint = 5\n'


# Read-only folder -----------------------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` unwritable. chmod stops everyone but root; as root (CI),
    the immutable attribute does the same job, where the file system has it."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"running as root, where chmod does not stop writes, and chattr +i "
                    f"is unavailable here: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_folder_changes_nothing(cli, config_dir, memory_keyring, segment,
                                          monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", "")
    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    path = config_dir / "config.toml"
    before = path.read_bytes()
    with read_only(config_dir):
        # Writers fail with exit 7, one line naming the file; nothing changed.
        line = one_error_line(cli(*ENABLE, "--write-key-stdin", input=KEY2), ExitCode.CONFIG)
        assert str(path) in line
        assert memory_keyring.items[ITEM] == KEY  # the new key was taken back
        one_error_line(cli(*DISABLE), ExitCode.CONFIG)
        one_error_line(cli(*DISABLE, "--forget-key"), ExitCode.CONFIG)
        one_error_line(cli(*ENABLE, "--auto-detect"), ExitCode.CONFIG)
        # Readers work.
        r = cli(*STATUS, "--json")
        assert r.exit_code == 0 and r.json()["enabled"] is True
        # Sending works; only recording the validation outcome is skipped.
        assert cli("segment", "test-event").exit_code == 0
        r = cli("segment", "validate", "--json")
        assert r.exit_code == 0, r.output
        assert r.json()["recorded"] is False
        assert path.read_bytes() == before
        assert sorted(p.name for p in config_dir.iterdir()) == [".lock", "config.toml"]
    # --forget-key and --auto-detect failed on the config write: the key they
    # had deleted was put back, matching the config.
    assert memory_keyring.items[ITEM] == KEY


def test_read_only_folder_without_a_config_yet(cli, config_dir, memory_keyring):
    config_dir.mkdir(mode=0o700)
    with read_only(config_dir):
        r = cli(*ENABLE, "--write-key-stdin", "--json", input=KEY)
        assert r.exit_code == ExitCode.CONFIG, r.output
        assert r.json()["error"]["code"] == "config"
        assert list(config_dir.iterdir()) == []
    assert memory_keyring.items == {}


def test_config_folder_is_a_file(cli, env, monkeypatch, memory_keyring):
    blocker = env / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("AVSB_CONFIG_DIR", str(blocker / "avsb"))
    line = one_error_line(cli(*ENABLE, "--write-key-stdin", input=KEY), ExitCode.CONFIG)
    assert "not-a-folder" in line
    assert memory_keyring.items == {}


# Permissions ------------------------------------------------------------------------


def test_too_open_permissions_warn_and_are_fixed_by_the_next_write(cli, config_dir):
    assert cli(*ENABLE, "--auto-detect").exit_code == 0
    path = config_dir / "config.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    r = cli(*STATUS, "--json")
    assert r.exit_code == 0
    assert r.json()["enabled"] is True  # stdout is still one JSON document
    warnings = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and "644" in warnings[0]
    assert cli(*DISABLE).exit_code == 0
    assert path.stat().st_mode & 0o777 == 0o600
    r = cli(*STATUS)
    assert "warning" not in r.stderr


# Many writers at once --------------------------------------------------------------------


def _spawn(args: list[str], env: dict[str, str], input: str | None = None):
    proc = subprocess.Popen([sys.executable, "-m", "avsb_cli", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, input


def _wait_all(procs) -> None:
    for proc, data in procs:
        out, err = proc.communicate(data, timeout=60)
        assert proc.returncode == 0, err


def test_eight_processes_enabling_and_disabling_lose_no_update(tmp_path, cli, config_dir):
    """Real CLI processes, one project each, all rewriting config.toml at once."""
    n = 8
    old = [f"{KEY[:-2]}{i:02d}" for i in range(n)]
    new = [f"{KEY2[:-2]}{i:02d}" for i in range(n)]
    for i in range(n):
        r = cli(*ENABLE, "--project", f"p{i}", "--write-key", old[i])
        assert r.exit_code == 0, r.output

    def env_for(i: int) -> dict[str, str]:
        # One keyring file per process: the test backend itself has no lock.
        return avsb_env(PYTHON_KEYRING_BACKEND="tests.support.memkeyring.FileKeyring",
                        AVSB_TEST_KEYRING_FILE=str(tmp_path / f"ring{i}.json"))

    _wait_all([
        _spawn([*DISABLE, "--project", f"p{i}"], env_for(i)) if i % 2 == 0 else
        _spawn([*ENABLE, "--project", f"p{i}", "--write-key-stdin", "--region", "eu",
                "--endpoint", f"https://proxy{i}.example.com/v1"], env_for(i), new[i])
        for i in range(n)
    ])
    data = tomllib.loads((config_dir / "config.toml").read_text())
    assert sorted(data["projects"]) == [f"p{i}" for i in range(n)]
    for i in range(n):
        seg = data["projects"][f"p{i}"]["segment"]
        assert seg["mode"] == "write-key" and seg["key_storage"] == "keyring"
        if i % 2:
            assert seg["enabled"] is True and seg["region"] == "eu"
            assert seg["endpoint"] == f"https://proxy{i}.example.com"
            assert seg["key_fingerprint"] == fingerprint(new[i]), i
        else:
            assert seg["enabled"] is False and seg["region"] == "us" and seg["endpoint"] == ""
            assert seg["key_fingerprint"] == fingerprint(old[i]), i


COUNTER_CHILD = """
import sys
from pathlib import Path
from avsb_cli.config import ConfigStore

store = ConfigStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    store.update(lambda d: d.__setitem__("counter", d.get("counter", 0) + 1))
"""


def test_read_modify_write_is_locked_across_processes(tmp_path):
    """Six processes increment one counter 25 times each: every increment counts."""
    path = tmp_path / "c" / "config.toml"
    env = avsb_env()
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER_CHILD, str(path), "25"], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert tomllib.loads(path.read_text())["counter"] == 6 * 25
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


# Killed mid-write --------------------------------------------------------------------------

WRITER_CHILD = """
import sys
from pathlib import Path
from avsb_cli.config import ConfigStore, read_toml

store = ConfigStore(Path(sys.argv[1]))
n = read_toml(store.path).get("n", 0)
# One write before "ready": the first one imports the lock library, and the
# kills below should land in writes, not in that import.
store.update(lambda d, n=n: d.update({"n": n, "pad": "x" * (n * 7919 % 300_000)}))
print("ready", flush=True)
while True:
    n += 1
    # Sizes vary a lot, so a kill lands inside writes of every length.
    store.update(lambda d, n=n: d.update({"n": n, "pad": "x" * (n * 7919 % 300_000)}))
"""


def test_sigkill_mid_write_leaves_the_old_or_the_new_file(tmp_path):
    path = tmp_path / "k" / "config.toml"
    env = avsb_env()
    rng = random.Random(6)
    seen = []
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(path)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        if not path.exists():
            continue  # killed before its first rename: the old (absent) file
        doc = tomllib.loads(path.read_text())  # never partial: always parses
        assert len(doc["pad"]) == doc["n"] * 7919 % 300_000  # and is one whole write
        seen.append(doc["n"])
    assert seen == sorted(seen) and len(seen) >= 8
    # A temp file a killed writer left is cleaned by the next write.
    from avsb_cli.config import ConfigStore

    ConfigStore(path).update(lambda d: d.__setitem__("n", d["n"] + 1))
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


# Ctrl-C -----------------------------------------------------------------------------------

# Python leaves SIGINT ignored if it was ignored when the interpreter started
# (as in a background job); restore Python's handler so the test is meaningful.
SIGINT_LAUNCHER = (
    "import signal, runpy, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'avsb'; runpy.run_module('avsb_cli', run_name='__main__')"
)


@pytest.mark.parametrize(("command", "json_mode"),
                         [("test-event", False), ("test-event", True), ("send", True)])
def test_ctrl_c_during_a_send_exits_130_and_keeps_config(cli, config_dir, segment, tmp_path,
                                                        command, json_mode):
    assert cli(*ENABLE, "--auto-detect").exit_code == 0
    path = config_dir / "config.toml"
    before = path.read_bytes()
    env = avsb_env(AVSB_SEGMENT_WRITE_KEY=KEY)
    if command == "send":
        data = tmp_path / "e.jsonl"
        data.write_text(json.dumps({
            "experiment_id": "e", "experiment_name": "E", "variation_id": "v",
            "variation_name": "V", "user_id": "u", "timestamp": "2024-05-01T00:00:00Z"}) + "\n")
        segment.fault("/v1/batch", delay=5)
        args = ["segment", "send", str(data), "--failed-file", str(tmp_path / "failed.jsonl")]
    else:
        segment.fault("/v1/track", delay=5)
        args = ["segment", "test-event"]
    args += ["--json"] if json_mode else []
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_LAUNCHER, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not segment.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert segment.requests, "the request never arrived"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("avsb: error: interrupted"), err
    if command == "send":  # nothing is lost: the user is told how to finish
        assert "send the file again" in lines[0]
    if json_mode and command == "send":  # the summary, then the error on stderr
        assert json.loads(out)["interrupted"] == "SIGINT"
    elif json_mode:
        assert json.loads(out)["error"]["code"] == "interrupted"
    assert path.read_bytes() == before
    assert len(segment.requests) == 1  # no retry after Ctrl-C


@pytest.mark.parametrize("raised", ["abort", "keyboardinterrupt"])
def test_ctrl_c_at_the_key_prompt_exits_130_and_keeps_config(cli, config_dir, memory_keyring,
                                                             monkeypatch, raised):
    import typer

    from avsb_cli.commands import integrations as cli_mod

    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    before = (config_dir / "config.toml").read_bytes()

    def prompt(*a, **kw):
        raise typer.Abort() if raised == "abort" else KeyboardInterrupt()

    monkeypatch.setattr(cli_mod, "interactive", lambda no_input: True)
    monkeypatch.setattr(typer, "prompt", prompt)
    r = cli(*ENABLE, "--project", "shop")
    assert r.exit_code == ExitCode.INTERRUPTED, r.output
    assert "interrupted" in r.stderr and "Traceback" not in r.output
    assert (config_dir / "config.toml").read_bytes() == before
    assert memory_keyring.items == {ITEM: KEY}


def test_ctrl_c_while_the_keyring_writes_keeps_key_and_config_together(
    cli, config_dir, memory_keyring
):
    """Ctrl-C arrives while the new key is being stored: the change completes
    (key and config agree), then avsb exits 130."""
    assert cli(*ENABLE, "--write-key-stdin", input=KEY).exit_code == 0
    real_set = memory_keyring.set_password

    def set_then_interrupted(service, username, password):
        real_set(service, username, password)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # let the main thread take the signal now

    memory_keyring.set_password = set_then_interrupted
    r = cli(*ENABLE, "--write-key-stdin", input=KEY2)
    assert r.exit_code == ExitCode.INTERRUPTED, r.output
    seg = tomllib.loads((config_dir / "config.toml").read_text())["projects"]["default"]
    assert memory_keyring.items[ITEM] == KEY2
    assert seg["segment"]["key_fingerprint"] == fingerprint(KEY2)


def test_launcher_runs_the_real_entry_point():
    # The Ctrl-C launcher above must run the same program as `python -m avsb_cli`.
    r = subprocess.run([sys.executable, "-c", SIGINT_LAUNCHER, "--version"],
                       env=avsb_env(), capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("avsb ")
