"""The docs can't silently miss a command or an option.

Every command's --help works and shows an example; every command and every
option appears in README.md; the README's JSON key lists match what the
commands print.
"""

from __future__ import annotations

import re

import pytest
import typer.main
from typer._click import Context

from avsb_cli.cli import app
from tests.conftest import ROOT, avsb_env, run_avsb

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands():  # type: ignore[no-untyped-def]
    """(path, command, is_group) for the root and everything under it."""
    root = typer.main.get_command(app)
    found = []

    def walk(cmd, path):  # type: ignore[no-untyped-def]
        # Through click's API, not .commands: the root builds its groups lazily.
        ctx = Context(cmd)
        names = cmd.list_commands(ctx) if hasattr(cmd, "list_commands") else []
        found.append((path, cmd, bool(names)))
        for name in names:
            walk(cmd.get_command(ctx, name), (*path, name))

    walk(root, ())
    return found


COMMANDS = _commands()
LEAVES = [(path, cmd) for path, cmd, is_group in COMMANDS if not is_group]


def _name(path: tuple[str, ...]) -> str:
    return " ".join(("avsb", *path))


def test_the_tree_is_what_we_think():
    names = {_name(p) for p, _ in LEAVES}
    assert {"avsb integrations list", "avsb integrations segment enable",
            "avsb segment test-event", "avsb segment validate", "avsb completion"} <= names


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS], ids=_name)
def test_help_works(cli, path):
    r = cli(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage: avsb" in r.stdout
    assert r.stderr == ""
    r2 = cli(*path, "-h")
    assert r2.stdout == r.stdout
    # Plain click help everywhere, lazily built groups included: no Rich panels.
    assert not set("╭╮╰╯│─") & set(r.stdout), r.stdout


def _example(cmd) -> list[str]:  # type: ignore[no-untyped-def]
    """The example block of a command's docstring: a \\b (no-rewrap) paragraph
    starting "Example:", as lines without the common indent."""
    import inspect

    for par in inspect.cleandoc(cmd.help or "").split("\n\n"):
        lines = par.splitlines()
        if lines and lines[0] == "\b" and lines[1:2] == ["Example:"]:
            return lines[2:]
    return []


@pytest.mark.parametrize("path", [()] + [p for p, _ in LEAVES], ids=_name)
def test_help_has_an_example(cli, path):
    cmd = dict((p, c) for p, c, _ in COMMANDS)[path]
    example = _example(cmd)
    assert example, f"{_name(path)}: no '\\b' paragraph starting 'Example:' in its docstring"
    assert example[0].lstrip().startswith(("avsb ", "printf ")), example
    assert "avsb " in " ".join(example)


WIDTH = 60


def _narrow_help(path: tuple[str, ...]):  # type: ignore[no-untyped-def]
    # A real process: the test runner forces click's width to 80.
    return run_avsb(*path, "--help", env=avsb_env(COLUMNS=str(WIDTH)))


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS], ids=_name)
def test_help_survives_a_narrow_terminal(path):
    """At 60 columns nothing is cut: no line is wider, no word is split at a
    hyphen, every option name and the example print whole, as written."""
    cmd = dict((p, c) for p, c, _ in COMMANDS)[path]
    r = _narrow_help(path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, r.stdout
    split = [line for line in lines if re.search(r"\w-$", line)]
    assert not split, f"split at a hyphen: {split}"
    assert [line for line in lines if line != line.rstrip()] == []
    for param in cmd.params:
        for opt in param.opts:
            if opt.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", r.stdout), opt
    example = _example(cmd)
    if example:
        # Copy-paste gets what the docstring says, line for line, indent included.
        assert "\n".join("  " + line for line in example) in r.stdout, r.stdout


@pytest.mark.parametrize("path", [p for p, _, is_group in COMMANDS if is_group], ids=_name)
def test_group_listing_shows_each_summary_whole(path):
    cmd = dict((p, c) for p, c, _ in COMMANDS)[path]
    r = _narrow_help(path)
    listing = " ".join(r.stdout.split("Commands:", 1)[1].split())
    assert "..." not in listing
    for name in cmd.list_commands(Context(cmd)):
        first = (cmd.get_command(Context(cmd), name).help or "").strip().split("\n\n")[0]
        assert f"{name} {' '.join(first.split())}" in listing


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=_name)
def test_every_option_has_help_and_says_what_goes_there(cli, path):
    cmd = dict((p, c) for p, c, _ in COMMANDS)[path]
    for param in cmd.params:
        if getattr(param, "param_type_name", "") == "option" and param.opts != ["--help"]:
            assert (param.help or "").strip(), f"{_name(path)} {param.opts[0]} has no help"
    r = cli(*path, "--help")
    # Labels are words (NAME, SHELL) or choices (<us|eu>), never a type or typer's {x}:<y>.
    for bad in ("<str>", "<float>", "<int>", "<path>", "{", ":<"):
        assert bad not in r.stdout, f"{_name(path)} --help shows {bad!r}"


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=_name)
def test_every_command_is_in_the_readme(path):
    assert f"`{_name(path)}" in README, f"README.md does not mention `{_name(path)}`"


def _options():  # type: ignore[no-untyped-def]
    seen: dict[str, str] = {}
    for path, cmd, _ in COMMANDS:
        for param in cmd.params:
            if getattr(param, "param_type_name", "") != "option":
                continue
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    seen.setdefault(opt, _name(path))
    return sorted(seen.items())


OPTIONS = _options()


def test_options_found():
    opts = dict(OPTIONS)
    assert {"--json", "--quiet", "--project", "--region", "--write-key-stdin"} <= set(opts)


@pytest.mark.parametrize("opt,where", OPTIONS, ids=[o for o, _ in OPTIONS])
def test_every_option_is_in_the_readme(opt, where):
    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", README), (
        f"README.md does not mention {opt} (of {where})"
    )


# The README's JSON section lists the keys the commands print --------------------------


def _section(name: str) -> str:
    start = f"<!-- section: {name} -->"
    end = f"<!-- end section: {name} -->"
    assert start in README and end in README, name
    return README.split(start, 1)[1].split(end, 1)[0]


def _documented_keys(heading: str) -> set[str]:
    """The `key` names in the first column of the table under a ### heading."""
    part = _section("json").split(f"### {heading}\n", 1)
    assert len(part) == 2, f"no '### {heading}' in the json section"
    table = part[1].split("\n### ", 1)[0]
    return set(re.findall(r"^\|\s*`([a-z_.\[\]]+)`", table, flags=re.M))


@pytest.mark.parametrize("heading,schema", [
    ("status", "STATUS"), ("enable", "ENABLE"), ("disable", "DISABLE"),
])
def test_json_section_documents_exactly_the_schema(heading, schema):
    from tests import test_contract

    documented = _documented_keys(heading)
    if heading in ("enable", "disable"):
        # These print the status document, plus what their own table lists.
        documented |= _documented_keys("status")
    assert documented == set(getattr(test_contract, schema))


def test_json_section_documents_the_list_document():
    from tests import test_contract

    documented = _documented_keys("list")
    top = {k for k in documented if "." not in k}
    items = {k.split(".", 1)[1] for k in documented if k.startswith("integrations[].")}
    assert top == set(test_contract.LIST)
    assert items == set(test_contract.LIST_ITEM)
