"""Rendering prints values as typed: no Rich markup, no emoji codes."""

from avsb_cli import render


def test_values_and_titles_print_literally(capsys):
    out = render.Output()
    out.table("title [b]x[/b] :smile:", ["col"], [["[red]v[/red] :+1:"]])
    out.fields("fields [i]t[/i]", [("name", "[link=x]y[/link] :warning:")])
    text = capsys.readouterr().out
    # (A table's title wraps at the table's width, so its pieces are checked.)
    for literal in ("title [b]x[/b]", ":smile:", "[red]v[/red] :+1:", "fields [i]t[/i]",
                    "[link=x]y[/link] :warning:"):
        assert literal in text
    assert "\x1b[" not in text  # NO_COLOR and a pipe: plain text


def test_quiet_and_json_modes_print_no_tables(capsys):
    render.Output(quiet=True).fields("t", [("a", "b")])
    render.Output(json_mode=True).table("t", ["a"], [["b"]])
    assert capsys.readouterr().out == ""


def test_tables_carry_no_trailing_spaces(capsys):
    # Rich pads every line to the table's width; piped to a file, diff or grep
    # those spaces are noise.
    out = render.Output()
    out.fields("title", [("short", "x"), ("a longer field", "a longer value " * 8)])
    out.table("title", ["a", "b"], [["x", ""], ["a longer cell", "y"]])
    text = capsys.readouterr().out
    assert "a longer value" in text and "a longer cell" in text
    assert [line for line in text.splitlines() if line != line.rstrip()] == []


def test_json_documents_pass_through_redaction(capsys):
    # The last line of defence: a key that reached a document (a server quoting
    # it back, a value copied into a detail) prints masked under --json too.
    import json

    from avsb_cli.writekey import mask, remember_secret
    from tests.conftest import KEY

    remember_secret(KEY)
    render.Output(json_mode=True).document({"detail": f"Segment said: bad key {KEY}"})
    text = capsys.readouterr().out
    assert KEY not in text
    assert json.loads(text) == {"detail": f"Segment said: bad key {mask(KEY)}"}


# Output.fields without Rich ----------------------------------------------------------
# status prints its block on every run, so render lays it out itself (no Rich import)
# for text of one-cell characters, and must print exactly what Rich's grid printed.

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

AWKWARD = [
    ("short", "x"),
    ("a longer field", "a longer value " * 9),
    ("long word", "Averyveryverylongwordwithoutanyspacesthatmustfoldacrossseverallinesofoutput"
                  "andthensomemoretobesureitfoldsattwentycolumns end"),
    ("spaces", "  leading and    inner   spaces   and trailing   "),
    ("empty", ""),
    ("newlines", "first line\n\nthird line after a blank one\n"),
    ("markup", "[b]not bold[/b] :smile: [link=x]y[/link]"),
    ("masked", "\u2026" + "5aQe (from env) \u2192 \u20ac \u2014 \u201cquoted\u201d"),
    ("latin", "Jos\u00e9 M\u00fcller \u0159 \u00e6\u00f8\u00e5 " * 5),
    ("none", None),
    ("flag", True),
    ("off", False),
    ("number", 42),
]
WIDE = [("wide", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 " * 6),
        ("combining", "e\u0301te\u0301 " * 10), ("emoji", "\U0001f600 ok " * 8),
        ("tab", "a\tb"), ("control", "a\x1b[31mred\rb")]


def rich_fields(capsys, title, rows):
    """What Rich's grid prints for the same fields (the layout before this change)."""
    render._rich_fields(title, [(n, render._plain(v)) for n, v in rows])
    return capsys.readouterr().out


def our_fields(capsys, title, rows):
    render.Output().fields(title, rows)
    return capsys.readouterr().out


@pytest.mark.parametrize("width", [20, 40, 60, 80, 120])
def test_fields_match_rich_across_widths(capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    title = "Segment integration for project prj_0123456789 (a title that wraps)"
    for rows in ([r] for r in AWKWARD + WIDE):
        assert our_fields(capsys, title, rows) == rich_fields(capsys, title, rows), rows
    assert our_fields(capsys, title, AWKWARD) == rich_fields(capsys, title, AWKWARD)
    assert our_fields(capsys, "", []) == rich_fields(capsys, "", [])
    # One-cell text is laid out without Rich; the rest is Rich's own output.
    assert render._plain_fields(title, [(n, render._plain(v)) for n, v in AWKWARD])
    for name, value in WIDE:
        assert render._plain_fields(title, [(name, value)]) is None


_one_cell = st.text(st.sampled_from("ab c  -_/.:\u00e9\u00df\u2026\n"), max_size=120)


@given(title=_one_cell, values=st.lists(_one_cell, min_size=1, max_size=4),
       width=st.integers(12, 130))
def test_fields_match_rich_for_any_one_cell_text(title, values, width):
    rows = [(f"label{i}" * (i + 1), v) for i, v in enumerate(values)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", str(width))
        ours = render._plain_fields(title, rows)
        console = render._console()
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in rows:
            table.add_row(name, Text(value))
        with console.capture() as cap:
            console.print(Text(title), table)
    expected = "".join(line.rstrip(" ") + "\n" for line in cap.get().splitlines())
    if ours is None:  # labels wider than the terminal: left to Rich
        assert width < max(len(n) for n, _ in rows) + 3
    else:
        assert ours == expected


def test_fields_are_bold_only_on_a_terminal_that_takes_colour(capsys, monkeypatch):
    rows = [("name", "value"), ("longer name", "v")]
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")  # as a terminal, the way Rich reads it
    ours, theirs = our_fields(capsys, "Title", rows), rich_fields(capsys, "Title", rows)
    assert "\x1b[1mTitle\x1b[0m\n\x1b[1mname\x1b[0m" in ours
    # Rich also bolds the padding; the visible text is the same.
    strip = re.compile(r"\x1b\[[0-9;]*m")
    assert strip.sub("", ours) == strip.sub("", theirs) and "\x1b[1m" in theirs
    for var, value in (("NO_COLOR", "1"), ("TERM", "dumb"), ("FORCE_COLOR", "")):
        with monkeypatch.context() as mp:
            mp.setenv(var, value)
            assert "\x1b" not in our_fields(capsys, "Title", rows)
            assert "\x1b" not in rich_fields(capsys, "Title", rows)


def test_width_comes_from_columns_else_80(capsys, monkeypatch):
    rows = [("k", "word " * 30)]
    monkeypatch.delenv("COLUMNS")
    # Under pytest no standard stream is a terminal: Rich and avsb fall back to 80.
    assert max(map(len, our_fields(capsys, "t", rows).splitlines())) <= 80
    assert our_fields(capsys, "t", rows) == rich_fields(capsys, "t", rows)
    monkeypatch.setenv("COLUMNS", "50")
    assert max(map(len, our_fields(capsys, "t", rows).splitlines())) <= 50


def _imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}


def test_status_does_not_import_rich(tmp_path):
    """status's text output, unlogged and logged in (reading the A vs B stand-in),
    never imports Rich: it is most of status's start-up (bench/)."""
    from tests.conftest import KEY, avsb_env
    from tests.support.fakeavsb import ORG, PAT, FakeAvsb

    server = FakeAvsb().start()
    try:
        server.add_token(PAT)
        server.add_project("prj_rich001", "default")
        env = avsb_env(AVSB_CONFIG_DIR=str(tmp_path / "cfg"), AVSB_SEGMENT_WRITE_KEY=KEY,
                       AVSB_API_URL=server.url, AVSB_ORG=ORG)
        argv = [sys.executable, "-X", "importtime", "-m", "avsb_cli", "integrations",
                "segment", "status", "--project", "prj_rich001"]
        for token, expect in (("", "not logged in"), (PAT, "key none (not the local key)")):
            proc = subprocess.run(argv, env=env | {"AVSB_TOKEN": token}, capture_output=True,
                                  text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert proc.returncode == 0, proc.stderr[-2000:]
            imported = _imported(proc)
            assert "avsb_cli.render" in imported and "typer" in imported
            assert {m for m in imported if m == "rich" or m.startswith("rich.")} == set()
            assert expect in proc.stdout.lower() + proc.stderr.lower(), proc.stdout
            assert KEY not in proc.stdout and PAT not in proc.stdout
    finally:
        server.stop()


def test_one_cell_characters_are_one_cell_for_rich():
    from rich.cells import cell_len
    from rich.control import strip_control_codes

    for char in render._SIMPLE:
        assert cell_len(char) == 1 and char.isprintable(), hex(ord(char))
        assert not re.match(r"\s", char) or char == " ", hex(ord(char))
        assert strip_control_codes(char) == char
