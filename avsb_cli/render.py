"""Rendering: the one module that imports Rich.

People get Rich tables on stdout and notes on stderr; scripts get exactly one
JSON document on stdout under ``--json``, errors included. Everything printed
passes through ``redact`` so a write key never appears whole. Rich itself
honours NO_COLOR, TERM=dumb and non-terminals (no colour, no markup codes).
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

    # Machine output -------------------------------------------------------
    def document(self, doc: Any) -> None:
        import json  # only JSON mode pays for it (status: bench/)

        text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
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
        """A two-column table of field and value."""
        if self.quiet or self.json_mode:
            return
        from rich.table import Table
        from rich.text import Text

        # A grid (no box, no header) measures and renders faster than a full
        # Table, which status pays on every run (bench/RESULTS.md).
        table = Table.grid(padding=(0, 2))
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in rows:
            table.add_row(name, _text(value))
        _print(Text(title, style="bold"), table)

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


def _text(value: Any) -> Any:
    from rich.text import Text

    if value is None:
        return Text("-")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    return Text(redact(str(value)))


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
