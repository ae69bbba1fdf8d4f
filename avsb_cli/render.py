"""Rendering: the one module that imports Rich.

People get tables on stdout (Rich's; ``fields`` blocks of one-cell text are
laid out here as Rich would, so status never imports Rich) and notes on stderr;
scripts get exactly one JSON document on stdout under ``--json``, errors
included. Everything printed passes through ``redact`` so a write key never
appears whole. Rich itself honours NO_COLOR, TERM=dumb and non-terminals (no
colour, no markup codes); ``fields`` follows the same rules.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from avsb_cli.errors import AvsbError
from avsb_cli.writekey import redact


def _console(stderr: bool = False) -> Any:
    import os

    from rich.console import Console

    # Rich's own NO_COLOR handling drops colours but keeps bold and italic
    # escapes; NO_COLOR here means plain text, like TERM=dumb and pipes.
    plain = os.environ.get("NO_COLOR", "") != ""
    # No markup or emoji codes: values come from users and Segment, and
    # "[b]" or ":x:" in an experiment name must print as typed.
    return Console(stderr=stderr, highlight=False, soft_wrap=False, markup=False, emoji=False,
                   **({"color_system": None} if plain else {}))


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        #: one line per document (NDJSON streams: segment listen --json)
        self.compact = False

    # Machine output -------------------------------------------------------
    def document(self, doc: Any) -> None:
        import json  # only JSON mode pays for it (status: bench/)

        text = json.dumps(doc, indent=None if self.compact else 2, ensure_ascii=False,
                          default=str)
        sys.stdout.write(redact(text) + "\n")
        sys.stdout.flush()

    # People output ----------------------------------------------------------
    def note(self, text: str) -> None:
        """A line for people on stderr (never in JSON mode's stdout)."""
        if not self.quiet:
            sys.stderr.write(redact(text) + "\n")

    def warn(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write("avsb: warning: " + redact(text) + "\n")

    def line(self, text: str) -> None:
        """A result line for people on stdout."""
        if not self.quiet and not self.json_mode:
            sys.stdout.write(redact(text) + "\n")

    def fields(self, title: str, rows: Iterable[tuple[str, Any]]) -> None:
        """A two-column block of field and value under a bold title."""
        if self.quiet or self.json_mode:
            return
        pairs = [(name, _plain(value)) for name, value in rows]
        # Plain text is laid out here, as Rich would, without importing Rich:
        # status prints this on every run and Rich is most of its start-up
        # (bench/RESULTS.md). Anything else (wide or combining characters,
        # tabs, control codes, a terminal narrower than the labels) goes
        # through Rich, which measures it properly.
        text = _plain_fields(title, pairs)
        if text is None:
            _rich_fields(title, pairs)
        else:
            sys.stdout.write(text)

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        if self.quiet or self.json_mode:
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(_text(v) for v in row))
        _print(table)

    def error(self, err: AvsbError) -> None:
        line = f"avsb: error: {err.message}"
        if err.hint:
            line += f" ({err.hint})"
        sys.stderr.write(redact(" ".join(line.split())) + "\n")
        if self.json_mode:
            self.document({"error": err.to_dict()})


def _print(*renderables: Any) -> None:
    """Print on stdout without the spaces Rich pads each line with to the
    table's width: a file, diff or grep downstream would carry them."""
    console = _console()
    with console.capture() as captured:
        console.print(*renderables)
    sys.stdout.write("".join(line.rstrip(" ") + "\n" for line in captured.get().splitlines()))


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return redact(str(value))


def _text(value: Any) -> Any:
    from rich.text import Text

    return Text(_plain(value))


def _rich_fields(title: str, pairs: list[tuple[str, str]]) -> None:
    from rich.table import Table
    from rich.text import Text

    # A grid (no box, no header) measures and renders faster than a full Table.
    table = Table.grid(padding=(0, 2))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in pairs:
        table.add_row(name, Text(value))
    _print(Text(title, style="bold"), table)


# Printable characters one cell wide that Rich neither strips nor treats as
# whitespace (tests/test_render.py checks each against Rich): ASCII, Latin-1 and
# Latin Extended up to the combining marks at U+0300 (not the soft hyphen),
# general punctuation (the "…" of masked keys), currency signs, arrows.
_SIMPLE = frozenset(map(chr, [*range(0x20, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x300),
                              *range(0x2010, 0x2028), *range(0x2030, 0x205F),
                              *range(0x20A0, 0x20C1), *range(0x2190, 0x2200)]))


def _plain_fields(title: str, pairs: list[tuple[str, str]]) -> str | None:
    """``fields`` laid out as Rich's grid would, or None when only Rich can."""
    if not all(set(s.replace("\n", "")) <= _SIMPLE for s in (title, *(v for _, v in pairs))):
        return None
    if not all(set(name) <= _SIMPLE for name, _ in pairs):
        return None
    width = _terminal_width()
    label_width = max((len(name) for name, _ in pairs), default=0)
    value_width = width - label_width - 2
    if value_width < 1:
        return None
    bold = _styled()
    out = [bold(line) for line in _wrap(title, width)]
    if pairs:
        # Rich's grid only grows the value column as far as the longest line.
        value_width = min(value_width, max(len(line) for _, v in pairs for line in
                                           v.split("\n")) or 1)
    for name, value in pairs:
        lead = bold(name) + " " * (label_width - len(name) + 2)
        for line in _wrap(value, value_width):
            out.append(lead + line if line else lead.rstrip(" "))
            lead = " " * (label_width + 2)
    return "".join(line.rstrip(" ") + "\n" for line in out)


def _wrap(text: str, width: int) -> list[str]:
    """Rich's word wrap (rich._wrap.divide_line, overflow "fold") for text of
    one-cell characters: words keep their trailing spaces, a word too long
    for any line is cut every ``width`` characters."""
    import re

    lines: list[str] = []
    for para in text.split("\n"):
        breaks: list[int] = []
        offset = 0
        for match in re.finditer(r"\s*\S+\s*", para):
            start, word = match.start(), match.group()
            length = len(word.rstrip())
            if width - offset >= length:
                offset += len(word)
            elif length > width:
                pieces = [word[i:i + width] for i in range(0, len(word), width)]
                for piece in pieces[:-1]:
                    if start:
                        breaks.append(start)
                    start += len(piece)
                if start:
                    breaks.append(start)
                offset = len(pieces[-1])
            elif offset and start:
                breaks.append(start)
                offset = len(word)
        bounds = [0, *breaks, len(para)]
        lines.extend(para[a:b].rstrip(" ") for a, b in zip(bounds, bounds[1:], strict=False))
    return lines


def _terminal(env: Any) -> bool:
    """Rich's Console.is_terminal for stdout."""
    compatible = env.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    if env.get("FORCE_COLOR") is not None:
        return env["FORCE_COLOR"] != ""
    try:
        return sys.stdout.isatty()
    except ValueError:
        return False


def _dumb(env: Any) -> bool:
    return env.get("TERM", "").lower() in ("dumb", "unknown")


def _terminal_width() -> int:
    """The width Rich's Console would use: COLUMNS, else the terminal's, else 80."""
    import os

    env = os.environ
    if _terminal(env) and _dumb(env):
        return 80
    columns = env.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    for fd in (0, 1, 2):
        try:
            return os.get_terminal_size(fd).columns or 80
        except (AttributeError, ValueError, OSError):
            continue
    return 80


def _styled() -> Any:
    """Bold (as Rich prints it) on a terminal that takes colour, else plain."""
    import os

    env = os.environ
    if _terminal(env) and not _dumb(env) and env.get("NO_COLOR", "") == "":
        return lambda text: f"\x1b[1m{text}\x1b[0m" if text else text
    return lambda text: text


_current = Output()


def use(*, json_mode: bool = False, quiet: bool = False) -> Output:
    """The Output for this command; the top-level error handler uses it too."""
    global _current
    _current = Output(json_mode=json_mode, quiet=quiet)
    return _current


def current() -> Output:
    return _current


class Progress:
    """A Rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, total: int | None, *, enabled: bool, description: str) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=_console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total, rate="")

    def __enter__(self) -> Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def advance(self, n: int, rate: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, rate=f"{rate:,.0f} ev/s")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


class EventView:
    """``avsb segment listen``'s output: a line per record as it arrives.

    People get a Rich line per event on stdout (PASS green, FAIL red, other
    events dimmed) and the setup lines on stderr; ``--json`` gets one compact
    JSON object per line (NDJSON), each with a ``kind``: ``listening``,
    ``event``, ``rejected``, ``forward``, ``summary``.
    """

    def __init__(self, *, json_mode: bool = False, only_avsb: bool = False,
                 quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.only_avsb = only_avsb
        # --quiet: nothing but errors (the exit code says the rest); --json still prints.
        self.silent = quiet and not json_mode
        self._out: Any = None if json_mode else _console()
        self._err: Any = None if json_mode else _console(stderr=True)

    def _json(self, rec: dict[str, Any]) -> None:
        import json

        sys.stdout.write(redact(json.dumps(rec, ensure_ascii=False, default=str)) + "\n")
        sys.stdout.flush()

    def started(self, info: dict[str, Any]) -> None:
        if self.silent:
            return
        if not info["loopback"]:
            sys.stderr.write(f"avsb: warning: listening on {info['url']}: other machines "
                             "can send events to it\n")
        if self.json_mode:
            self._json(info)
            return
        from rich.text import Text

        self._err.print(Text(f"Listening on {info['url']}", style="bold"))
        if info["forward"]:
            self._err.print(f"Relaying every accepted batch to {info['forward']}.")
        else:
            self._err.print("Nothing leaves this machine (--forward relays to Segment).")
        for line in info["setup"]:
            self._err.print(redact(line), soft_wrap=True)
        self._err.print("Waiting for events; Ctrl-C stops.")
        self._err.file.flush()

    def record(self, rec: dict[str, Any]) -> None:
        kind = rec["kind"]
        if self.silent or (kind == "event" and self.only_avsb and not rec["avsb"]):
            return
        if self.json_mode:
            self._json(rec)
            return
        from rich.text import Text

        line = Text(rec["received_at"][11:19] + "  ")
        if kind == "event":
            who = (f"user {rec['user_id']}" if rec["user_id"]
                   else f"anon {rec['anonymous_id'] or '-'}")
            head = f"{rec['type'] or '-':<8} {rec['event'] or '-'}  {who}"
            if not rec["avsb"]:
                line.append(head, style="dim")
            else:
                line.append(head + f"  {rec['experiment_id'] or '-'} / "
                                   f"{rec['variation_id'] or '-'}  ")
                if rec["verdict"] == "pass":
                    line.append("PASS", style="bold green")
                else:
                    line.append("FAIL", style="bold red")
                    line.append(": " + "; ".join(rec["problems"]), style="red")
            if rec["write_key_matches"] is False:
                line.append("  (sent with another write key)", style="yellow")
        elif kind == "rejected":
            line.append(f"{'refused':<8} HTTP {rec['status']}  {rec['reason']}", style="yellow")
        elif kind == "forward":
            n = rec["events"]
            what = f"{'relayed':<8} {n} event{'s' if n != 1 else ''} to {rec['endpoint']}: "
            if rec["ok"]:
                line.append(what + f"HTTP {rec['status']}", style="green")
            else:
                line.append(what + f"failed: {rec['message']}", style="red")
        plain = redact(line.plain)
        # One line per event, however long: the terminal wraps it, not Rich.
        self._out.print(line if plain == line.plain else Text(plain), soft_wrap=True)
        self._out.file.flush()

    def summary(self, doc: dict[str, Any]) -> None:
        if self.silent:
            return
        if self.json_mode:
            self._json(doc)
            return
        text = (f"Summary: {doc['events']} events seen, {doc['avsb_events']} avsb_experiment: "
                f"{doc['passed']} passed, {doc['failed']} failed")
        if doc["rejected"]:
            text += f"; {doc['rejected']} requests refused"
        if doc["forwarded"] or doc["forward_failed"]:
            text += f"; {doc['forwarded']} relayed to Segment, {doc['forward_failed']} not"
        self._out.print(text + ".")
        self._out.file.flush()
