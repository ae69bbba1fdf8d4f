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


@pytest.mark.parametrize("heading,schema", [("test-event", "TEST_EVENT"), ("validate", "VALIDATE")])
def test_json_section_documents_the_segment_documents(heading, schema):
    from tests import test_contract

    assert _documented_keys(heading) == set(getattr(test_contract, schema))


def test_send_documents_its_summary():
    from tests import test_contract

    table = _section("send").split("| key | type | meaning |", 1)[1]
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            documented |= set(re.findall(r"`([a-z_]+)`", row.split(" | ", 1)[0]))
    assert documented == set(test_contract.SEND)


@pytest.mark.parametrize("command,schema", [
    ("login", "LOGIN"), ("logout", "LOGOUT"), ("whoami", "WHOAMI"),
    ("projects list", "PROJECTS"), ("doctor", "DOCTOR"),
])
def test_json_section_names_every_key_of_the_login_commands(command, schema):
    from tests import test_contract

    part = _section("json").split("### login, logout, whoami, projects list, doctor\n", 1)[1]
    said = part.split(f"`avsb {command} --json`:", 1)[1].split("`avsb ", 1)[0]
    assert set(getattr(test_contract, schema)) <= set(re.findall(r"`([a-z_A-Z]+)`", said))


def test_json_section_documents_the_list_document():
    from tests import test_contract

    documented = _documented_keys("list")
    top = {k for k in documented if "." not in k}
    items = {k.split(".", 1)[1] for k in documented if k.startswith("integrations[].")}
    assert top == set(test_contract.LIST)
    assert items == set(test_contract.LIST_ITEM)


# The README's structure and claims that can be checked -----------------------------------


def _outside_code(text: str) -> list[str]:
    """The lines of ``text`` that are not inside a ``` fence."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped
    (hyphens and underscores kept), spaces to hyphens, -1, -2 on repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _outside_code(text):
        m = re.match(r"#{1,6} (.*)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_the_anchor_rule_is_githubs():
    assert _github_anchors("## Backfilling enrollments: `avsb segment send`\n## A vs B\n"
                           "## A vs B\n```\n# not a heading\n```\n") == {
        "backfilling-enrollments-avsb-segment-send", "a-vs-b", "a-vs-b-1"}


def test_every_link_in_the_readme_points_at_a_heading():
    anchors = _github_anchors(README)
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert len(links) > 20
    assert sorted({a for a in links if a not in anchors}) == []


def test_the_contents_list_every_section():
    contents = README.split("**Contents**", 1)[1].split("\n## ", 1)[0]
    linked = set(re.findall(r"\]\(#([^)]+)\)", contents))
    sections = [line[3:] for line in _outside_code(README) if line.startswith("## ")]
    missing = [s for s in sections if _github_anchors(f"## {s}\n").pop() not in linked]
    assert missing == []


def _readme_part(heading: str) -> str:
    return README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_command_table_is_the_command_tree():
    rows = re.findall(r"^\| `(avsb [^`]*)` \|", _readme_part("Commands"), flags=re.M)
    # Arguments are written in capitals (FILE, SHELL); the command is what precedes them.
    table = {" ".join(w for w in row.split() if not w.isupper()) for row in rows}
    assert table == {_name(p) for p, _ in LEAVES} | {"avsb --version"}


def test_the_readme_names_the_commands_without_project():
    sentence = _readme_part("Commands").split("Every command but ", 1)[1].split("takes", 1)[0]
    named = {"avsb " + n for n in re.findall(r"`([a-z -]+)`", sentence)}
    without = {_name(p) for p, cmd in LEAVES
               if not any("--project" in param.opts for param in cmd.params)}
    assert named == without


# Environment variables: every one avsb reads is in the table, and nothing else
# but what its libraries read on its behalf.
READ_BY_LIBRARIES = {"TERM", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"}


def _variables_the_code_reads() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "avsb_cli").rglob("*.py"):
        src = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"\b(?:environ|env)\.get\(\s*\"([A-Z][A-Z0-9_]+)\"", src))
        names |= set(re.findall(r"envvar=\"([A-Z][A-Z0-9_]+)\"", src))
        names |= set(re.findall(r"^[A-Z_]*(?:ENV|VAR)[A-Z_]* = \"([A-Z_][A-Z0-9_]+)\"", src, re.M))
        # A family read by prefix: k.startswith("KEYRING_PROPERTY_") for k in env.
        prefix = r"startswith\(\"([A-Z][A-Z0-9_]+_)\"\) for \w+ in env"
        names |= {p + "*" for p in re.findall(prefix, src)}
    return names


def test_every_environment_variable_is_documented_and_read():
    table = _readme_part("Environment variables")
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first = row.split(" | ", 1)[0]
            documented |= {n.split("=")[0] for n in re.findall(r"`([A-Z_][A-Z0-9_]*\*?(?:=\w+)?)`",
                                                               first)}
    read = _variables_the_code_reads()
    assert {"AVSB_TOKEN", "AVSB_PROJECT", "AVSB_TIMEOUT", "NO_COLOR", "_AVSB_COMPLETE",
            "KEYRING_PROPERTY_*"} <= read
    assert sorted(read - documented) == [], "read by avsb, not in the README's table"
    assert sorted(documented - read - READ_BY_LIBRARIES) == [], "in the table, not read"


# The quick start ---------------------------------------------------------------------------

CI_RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_quick_start_says_what_ci_run_installs_and_runs():
    quick = _readme_part("Quick start")
    assert "```sh\nbash .ci/run\n```" in quick
    packages = re.search(r'^pkgs="([^"]+)"', CI_RUN, flags=re.M)
    assert packages
    for pkg in [*packages.group(1).split(), "nodejs", "npm"]:
        assert pkg in quick, pkg
    assert "npm ci --prefix tests/web" in CI_RUN and "npm ci --prefix tests/web" in quick
    assert "pip install -q --disable-pip-version-check -e '.[test]'" in CI_RUN
    assert "pip install -e '.[test]'" in quick
    last = CI_RUN.strip().splitlines()[-1]
    assert last == ".venv/bin/python -m pytest" and f"`{last}`" in quick


def test_the_quick_start_command_works(config_dir):
    """The one line, less the install (done here already), in a real process."""
    line = re.search(r"```sh\n(python3 -m venv .*)\n```", _readme_part("Quick start"))
    assert line
    steps = line.group(1).split(" && ")
    assert steps[:2] == ["python3 -m venv .venv", ".venv/bin/pip install -q ."]
    env = avsb_env()
    env.pop("AVSB_TOKEN", None)
    for step in steps[2:]:
        argv = step.split()
        assert argv[0] == ".venv/bin/avsb"
        r = run_avsb(*argv[1:], env=env)
        assert r.exit_code == 0, r.stderr
    assert "auto-detect" in r.stdout
    # Not logged in: local state only, and it says so, as the README does.
    assert "A vs B was not changed: not logged in" in r.stderr + run_avsb(
        "integrations", "segment", "enable", "--auto-detect", env=env).stderr


# Troubleshooting quotes the errors as the code writes them ---------------------------------


def test_troubleshooting_quotes_real_errors_and_covers_every_code():
    from avsb_cli import errors

    part = _readme_part("Troubleshooting")
    quoted = re.findall(r"\*\*`([^`]+)`\*\*", part)
    assert len(quoted) > 20
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "avsb_cli").rglob("*.py"))
    assert sorted(q for q in quoted if q not in source) == []
    codes = {c.code for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.AvsbError)}
    listed = set(re.findall(r"^\|[^|]*\| \d+, `([a-z_]+)` \|", part, flags=re.M))
    assert codes - listed <= {"error", "output"}, codes - listed


def test_development_names_every_module():
    bullet = README.split("- One module per concern", 1)[1].split("\n- ", 1)[0]
    named = set(re.findall(r"`([a-z_]+(?:\.py|/))`", bullet))
    modules = {p.name + ("/" if p.is_dir() else "")
               for p in (ROOT / "avsb_cli").iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
               or (p / "__init__.py").exists()}
    assert modules == named - {"avsb_cli/"}
