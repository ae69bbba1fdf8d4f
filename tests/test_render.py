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
