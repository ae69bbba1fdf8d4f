"""Shell completion: the shipped scripts, real shells loading them, and a light Tab.

The shell tests load the files in completions/ into a real bash, zsh and fish,
with an ``avsb`` on PATH that runs this checkout, and complete real command
lines. zsh and fish are skipped where they are not installed, unless
AVSB_REQUIRE_SHELLS=1 (CI), where a missing shell fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avsb_cli import completion
from tests.conftest import ROOT, avsb_env, run_avsb

SHIPPED = ROOT / "completions"
FORBIDDEN = ("httpx", "keyring", "rich")


# The scripts --------------------------------------------------------------------


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_shipped_script_is_the_regenerated_one(shell):
    shipped = SHIPPED / completion.FILE_NAMES[shell]
    assert shipped.is_file(), f"{shipped} missing: run python -m avsb_cli.completion"
    assert shipped.read_text(encoding="utf-8") == completion.script(shell), (
        f"{shipped} is stale: run python -m avsb_cli.completion"
    )


def test_regenerating_writes_every_shell(tmp_path):
    written = completion.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(completion.FILE_NAMES.values())
    for shell in completion.SHELLS:
        text = (tmp_path / completion.FILE_NAMES[shell]).read_text()
        assert "_AVSB_COMPLETE=complete_" in text or "complete_powershell" in text
        assert text == (SHIPPED / completion.FILE_NAMES[shell]).read_text()


def test_regenerate_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "avsb_cli.completion", str(tmp_path)],
        env=avsb_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "_avsb").read_text() == (SHIPPED / "_avsb").read_text()


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_completion_command_prints_the_shipped_file(cli, shell):
    r = cli("completion", shell)
    assert r.exit_code == 0, r.output
    assert r.stdout == (SHIPPED / completion.FILE_NAMES[shell]).read_text()


def test_completion_bash_as_a_real_process_matches_the_file():
    r = run_avsb("completion", "bash", env=avsb_env())
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (SHIPPED / "avsb.bash").read_text()


def test_the_argument_decides_not_the_shell(cli):
    # Whatever shell we seem to run under, the argument wins.
    for pretend in ("/bin/bash", "/usr/bin/fish", "/bin/zsh"):
        r = cli("completion", "zsh", env={"SHELL": pretend})
        assert r.stdout == (SHIPPED / "_avsb").read_text()
    r = cli("completion")
    assert r.exit_code == 2
    r = cli("completion", "tcsh")
    assert r.exit_code == 2 and "tcsh" in r.stderr


def test_zsh_script_starts_with_compdef():
    # compinit only picks up files from $fpath whose first line says #compdef.
    assert (SHIPPED / "_avsb").read_text().splitlines()[0] == "#compdef avsb"


# The answering side, without a shell ---------------------------------------------


def _tab(env_extra: dict[str, str], config_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = avsb_env(**env_extra)
    if config_dir is not None:
        env["AVSB_CONFIG_DIR"] = str(config_dir)
    return subprocess.run(
        [sys.executable, "-m", "avsb_cli"], env=env, capture_output=True, text=True, timeout=60
    )


def _bash_tab(line: str, **kw):  # type: ignore[no-untyped-def]
    words = line.split(" ")
    return _tab({"_AVSB_COMPLETE": "complete_bash", "COMP_WORDS": "\n".join(words),
                 "COMP_CWORD": str(len(words) - 1)}, **kw)


def test_region_completes_us_and_eu():
    p = _bash_tab("avsb integrations segment enable --region ")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["us", "eu"]
    p = _bash_tab("avsb segment validate --region e")
    assert p.stdout.split() == ["eu"]


def test_project_completes_names_from_the_config(cli, config_dir):
    for name in ("shop", "blog", "shop-eu"):
        assert cli("integrations", "segment", "enable", "--auto-detect", "-q",
                   "--project", name).exit_code == 0
    p = _bash_tab("avsb integrations segment status --project ", config_dir=config_dir)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["blog", "shop", "shop-eu"]
    p = _bash_tab("avsb segment test-event -p sh", config_dir=config_dir)
    assert p.stdout.split() == ["shop", "shop-eu"]
    assert p.stderr == ""


def test_project_completion_survives_a_corrupt_config(config_dir):
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text("[projects\nbroken")
    p = _bash_tab("avsb integrations list --project ", config_dir=config_dir)
    assert p.returncode == 0
    assert p.stdout.strip() == ""
    assert "Traceback" not in p.stderr


def test_powershell_answer():
    p = _tab({"_AVSB_COMPLETE": "complete_powershell",
              "_TYPER_COMPLETE_ARGS": "avsb integrations segment e",
              "_TYPER_COMPLETE_WORD_TO_COMPLETE": "e"})
    assert p.returncode == 0, p.stderr
    assert [line.split(":::")[0] for line in p.stdout.splitlines()] == ["enable"]


_PROBE = """
import json, runpy, sys
try:
    runpy.run_module("avsb_cli", run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("MODULES=" + json.dumps(sorted(sys.modules)) + "\\n")
"""


@pytest.mark.parametrize(
    "env_extra",
    [
        {"_AVSB_COMPLETE": "complete_bash", "COMP_WORDS": "avsb\nintegrations\nsegment\ne",
         "COMP_CWORD": "3"},
        {"_AVSB_COMPLETE": "complete_bash", "COMP_WORDS": "avsb\nsegment\ntest-event\n--project\n",
         "COMP_CWORD": "4"},
        # zsh, fish and PowerShell answers carry help texts: typer's own classes
        # would import Rich for them.
        {"_AVSB_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "avsb integrations segment "},
        {"_AVSB_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
         "_TYPER_COMPLETE_ARGS": "avsb integrations segment "},
        {"_AVSB_COMPLETE": "complete_powershell", "_TYPER_COMPLETE_ARGS": "avsb integrations ",
         "_TYPER_COMPLETE_WORD_TO_COMPLETE": ""},
    ],
    ids=["bash", "bash-project", "zsh", "fish", "powershell"],
)
def test_a_tab_imports_no_httpx_keyring_or_rich(env_extra, config_dir):
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text("[projects.shop.segment]\nenabled = true\n")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=avsb_env(**env_extra),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout.strip(), proc.stderr  # it did complete something
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES="))
    loaded = {m.split(".")[0] for m in json.loads(line[len("MODULES="):])}
    assert "avsb_cli" in loaded
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


# Real shells ----------------------------------------------------------------------


def _need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        msg = f"{shell} is not installed"
        if os.environ.get("AVSB_REQUIRE_SHELLS", "") not in ("", "0"):
            pytest.fail(msg + " (AVSB_REQUIRE_SHELLS=1)")
        pytest.skip(msg)
    return path


@pytest.fixture
def shell_env(tmp_path, config_dir):
    """Environment for a real shell: an `avsb` on PATH running this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "avsb"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m avsb_cli "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = avsb_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        AVSB_CONFIG_DIR=str(config_dir),
    )
    return env


def _shell(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr}"
    assert proc.stderr == "", proc.stderr
    return proc.stdout


# bash: source the script, set COMP_WORDS/COMP_CWORD, call the completion function.
_BASH = """
set -e
source "$1"
complete -p avsb
shift
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
func=$(complete -p avsb | sed -E 's/.* -F ([^ ]+) .*/\\1/')
"$func" avsb
printf 'REPLY:%s\\n' "${COMPREPLY[@]}"
"""


def _bash_complete(env: dict[str, str], *words: str) -> tuple[str, list[str]]:
    bash = _need("bash")
    out = _shell([bash, "--norc", "--noprofile", "-c", _BASH, "bash",
                  str(SHIPPED / "avsb.bash"), "avsb", *words], env)
    lines = out.splitlines()
    return lines[0], [x[len("REPLY:"):] for x in lines if x.startswith("REPLY:") and x != "REPLY:"]


def test_bash_completes_subcommand(shell_env):
    registration, replies = _bash_complete(shell_env, "integrations", "segment", "e")
    assert "_avsb_completion" in registration and registration.endswith(" avsb")
    assert replies == ["enable"]


def test_bash_completes_options(shell_env):
    _, replies = _bash_complete(shell_env, "segment", "test-event", "--exp")
    assert sorted(replies) == ["--experiment-id", "--experiment-name"]


def test_bash_completes_region_and_projects(shell_env, cli):
    _, replies = _bash_complete(shell_env, "integrations", "segment", "enable", "--region", "")
    assert replies == ["us", "eu"]
    assert cli("integrations", "segment", "enable", "--auto-detect", "-q",
               "--project", "web").exit_code == 0
    _, replies = _bash_complete(shell_env, "segment", "validate", "--project", "w")
    assert replies == ["web"]


# zsh: without a pty, stub _arguments (compsys's builtin-backed helper) to print
# what the shipped function hands it, and set words/CURRENT as compsys would.
_ZSH = """
compdef() { print -r -- "COMPDEF:$*" }
source "$1"
shift
_arguments() { print -r -- "ARGS:$*" }
_files() { print -r -- "FILES" }
words=("$@")
CURRENT=${#words}
_avsb_completion
"""


def _zsh_complete(env: dict[str, str], *words: str) -> list[str]:
    zsh = _need("zsh")
    out = _shell([zsh, "-f", "-c", _ZSH, "zsh", str(SHIPPED / "_avsb"), "avsb", *words], env)
    assert "COMPDEF:_avsb_completion avsb" in out
    args = [x for x in out.splitlines() if x.startswith("ARGS:")]
    assert len(args) == 1, out
    spec = args[0][len("ARGS:"):]
    # _arguments '*: :(("value":"help" "value2"))': pull out the values in order.
    assert spec.startswith("*: :((") and spec.endswith("))"), spec
    import re

    return re.findall(r'"([^"]*)"(?::"[^"]*")?', spec[len("*: :(("):-2])


def test_zsh_completes_subcommand_options_and_region(shell_env):
    assert _zsh_complete(shell_env, "integrations", "segment", "e") == ["enable"]
    assert sorted(_zsh_complete(shell_env, "segment", "test-event", "--exp")) == [
        "--experiment-id", "--experiment-name"]
    assert _zsh_complete(shell_env, "integrations", "segment", "enable", "--region", "") == [
        "us", "eu"]


def test_zsh_script_loads_under_compinit(shell_env, tmp_path):
    zsh = _need("zsh")
    fpath_dir = tmp_path / "zfunc"
    fpath_dir.mkdir()
    shutil.copy(SHIPPED / "_avsb", fpath_dir / "_avsb")
    # Sourced after compinit (what the README suggests) ...
    out = _shell([zsh, "-f", "-c", "autoload -U compinit; compinit -u -D; "
                  f"source {SHIPPED / '_avsb'}; print -r -- $_comps[avsb]"], shell_env)
    assert out.strip() == "_avsb_completion"
    # ... and found through $fpath by its #compdef line.
    out = _shell([zsh, "-f", "-c", f"fpath=({fpath_dir} $fpath); autoload -U compinit; "
                  "compinit -u -D; print -r -- $_comps[avsb]"], shell_env)
    assert out.strip() == "_avsb"


def _fish_complete(env: dict[str, str], line: str) -> list[str]:
    fish = _need("fish")
    out = _shell([fish, "--no-config", "-c",
                  f'source {SHIPPED / "avsb.fish"}; complete -C "{line}"'], env)
    return [x.split("\t")[0] for x in out.splitlines()]


def test_fish_completes_subcommand_options_and_region(shell_env):
    assert _fish_complete(shell_env, "avsb integrations segment e") == ["enable"]
    assert sorted(_fish_complete(shell_env, "avsb segment test-event --exp")) == [
        "--experiment-id", "--experiment-name"]
    # fish sorts what it is given
    assert sorted(_fish_complete(shell_env, "avsb integrations segment enable --region ")) == [
        "eu", "us"]


def test_fish_shows_help_texts(shell_env):
    fish = _need("fish")
    out = _shell([fish, "--no-config", "-c",
                  f'source {SHIPPED / "avsb.fish"}; complete -C "avsb integrations segment "'],
                 shell_env)
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert set(rows) >= {"enable", "disable", "status", "validate"}
    assert rows["enable"].startswith("Turn the Segment integration on")
