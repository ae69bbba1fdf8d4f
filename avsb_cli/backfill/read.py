"""Reading ``segment send``'s input: JSON Lines or CSV, from a file or a pipe.

Records come out as raw JSON lines (bytes) or CSV rows (dicts) with their
line numbers; ``build`` decodes and checks them. A UTF-8 BOM and CRLF line
ends are accepted; a line longer than MAX_LINE_BYTES is skipped unread, so
memory stays bounded whatever the input.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
import os
import stat
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from avsb_cli.backfill.limits import BOM, FIELDS, FORMATS, IDS, MAX_LINE_BYTES, REQUIRED, SUFFIXES
from avsb_cli.errors import InputError, UsageError

#: (line number, a JSON line or a CSV row, what is wrong with it already)
Row = tuple[int, "bytes | dict[str, Any] | None", "str | None"]


def too_long() -> str:
    """The problem of a line over MAX_LINE_BYTES."""
    return f"longer than {MAX_LINE_BYTES >> 20} MiB"


def detect_format(source: str, fmt: str | None, stream: Any) -> str:
    # JSON Lines and CSV are text: a NUL byte first is a binary file (or
    # /dev/zero, one endless line), refused at once rather than skipped forever.
    # A NUL further on is a bad line, like any other that is not an enrollment.
    if stream.peek(4)[:4].removeprefix(BOM)[:1] == b"\0":
        raise InputError(f"{'standard input' if source == '-' else source} is not a text "
                         "file (it has NUL bytes)", hint="pass a JSON Lines or CSV file")
    if fmt:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}", hint="use jsonl or csv")
        return fmt
    if source != "-":
        found = SUFFIXES.get(Path(source).suffix.lower())
        if found:
            return found
    # No telling extension: JSON Lines start with '{', CSV with a header.
    head = stream.peek(4096)[:4096].removeprefix(BOM).lstrip()
    return "jsonl" if head.startswith(b"{") else "csv"


def open_input(source: str) -> tuple[Any, bool]:
    """The input as a peekable binary stream, and whether we opened it."""
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise InputError("standard input is not readable as bytes")
        if sys.stdin.isatty():
            raise UsageError("'-' reads enrollments from a pipe or a file, not the terminal",
                             hint="e.g. avsb segment send enrollments.jsonl, or cat f | avsb "
                                  "segment send -")
        return (stream if hasattr(stream, "peek") else io.BufferedReader(stream)), False
    try:
        return open(source, "rb"), True  # noqa: SIM115
    except FileNotFoundError:
        raise InputError(f"file not found: {source}") from None
    except IsADirectoryError:
        raise InputError(f"{source} is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None


def count_lines(source: str) -> int | None:
    """Lines in a regular file, for a progress bar's total; None for a pipe."""
    if source == "-":
        return None
    try:
        # Checked before opening: opening a FIFO waits for a writer, and reading
        # it would take the lines away from the send itself.
        if not os.path.isfile(source):
            return None
        with open(source, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped meanwhile
                return None
            n, last = 0, b"\n"
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                n += chunk.count(b"\n")
                last = chunk[-1:]
            return n + (last != b"\n")
    except OSError:
        return None


def read_jsonl(stream: IO[bytes], start: int = 0) -> Iterator[Row]:
    """JSON Lines one at a time; ``start`` lines came before the stream."""
    readline = stream.readline
    line_no = start
    while raw := readline(MAX_LINE_BYTES + 1):
        line_no += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of it
                raw = readline(MAX_LINE_BYTES)
            yield line_no, None, too_long()
            continue
        if line_no == 1 and raw.startswith(BOM):  # (jsonl_chunks strips it itself)
            raw = raw[3:]
        if not raw.lstrip().startswith(b"{"):  # blank (in Unicode's terms too), or no object
            try:
                blank = not raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                yield line_no, None, "not UTF-8 text"
                continue
            if blank:
                continue  # blank lines separate nothing in JSON Lines
        yield line_no, raw, None


def jsonl_chunks(stream: IO[bytes], size: int) -> Iterator[tuple[int, int, bytes | None]]:
    """JSON Lines as chunks of whole lines, about ``size`` bytes each.

    Yields ``(lines before the chunk, lines in it, chunk)``; every chunk
    but a last line without a newline ends with one. A line longer than
    MAX_LINE_BYTES comes as one line, ``None``, and its bytes are skipped.
    """
    read = getattr(stream, "read1", stream.read)  # what a pipe has, without waiting
    done = 0
    tail = b""
    first = True
    while True:
        data = read(size)
        if not data:
            if tail:
                yield done, 1, tail
            return
        if first:
            first = False
            while len(data) < 3 and BOM.startswith(data) and (more := read(size)):
                data += more
            data = data.removeprefix(BOM)
            if not data:
                continue
        buf = tail + data if tail else data
        cut = buf.rfind(b"\n") + 1
        if not cut:
            tail = buf
            if len(tail) > MAX_LINE_BYTES:
                yield done, 1, None
                done += 1
                while (nl := data.find(b"\n")) < 0:
                    data = read(size)
                    if not data:
                        return
                tail = data[nl + 1:]
            continue
        chunk, tail = (buf, b"") if cut == len(buf) else (buf[:cut], buf[cut:])
        n = chunk.count(b"\n")
        yield done, n, chunk
        done += n


def read_csv(stream: IO[bytes], size: int) -> Iterator[tuple[list[str], list[Row]]]:
    """CSV rows about ``size`` bytes at a time, with the header's names (lower-cased).

    A row is a list in the header's order, "" added for a missing id column;
    the reader's own problems (a bad row, a wrong field count) come with the
    rows, in line order. A chunk without a quote or a lone CR is one row a
    line, split on commas as csv would; any other goes through csv.reader,
    which takes further chunks while a quoted field goes on.
    """
    chunks = jsonl_chunks(stream, size)  # whole lines
    pending: deque[str] = deque()  # lines of the chunk csv.reader is on

    def feed() -> Iterator[str]:
        while True:
            while not pending:
                done, _, data = next(chunks, (0, 0, b""))
                if not data:
                    if data is None:  # a line over MAX_LINE_BYTES: an empty row for csv
                        pending.append("\n")
                        continue
                    return
                # surrogateescape: a stray non-UTF-8 byte spoils its record, not the file.
                pending.extend(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
            yield pending.popleft()

    reader = csv.reader(feed())
    _row = operator.itemgetter(1)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"cannot read the CSV header (line 1): {exc}") from None
    names = [h.strip().lower() for h in header]
    missing = [f for f in REQUIRED if f not in names]
    if not any(f in names for f in IDS):
        missing.append("user_id or anonymous_id")
    if missing:
        raise InputError(
            f"the CSV header (line 1) has no column {', '.join(missing)}",
            hint="columns: " + ", ".join(FIELDS) + " (user_id and/or anonymous_id)",
        )
    width = len(names)
    pad = [f for f in IDS if f not in names][:1]
    offset = 0  # line number = offset + reader.line_num while csv.reader reads
    while True:
        part: list[Row] = []
        if not pending:
            done, n, data = next(chunks, (0, 0, b""))
            if data is None:
                yield names + pad, [(done + 1, None, too_long())]
                continue
            if not data:
                return
            text = data.decode("utf-8", "surrogateescape")
            plain = '"' not in text
            if plain and "\r" in text:  # CRLF line ends; a lone CR is csv.reader's
                plain = text.count("\r") == text.count("\r\n")
                text = text.replace("\r\n", "\n") if plain else text
            if plain:  # one row a line
                lines = text.split("\n")
                if lines[-1] == "":
                    lines.pop()
                rows = [line.split(",") for line in lines]
                part = list(zip(range(done + 1, done + n + 2), rows, itertools.repeat(None)))
                if set(map(len, rows)) == {width} and not pad:  # the usual chunk: all good
                    yield names, part
                    continue
                # blank lines ([""] here, [] for csv.reader)
                part = [(n, r if r != [""] else [], p) for n, r, p in part]
            else:
                pending.extend(io.StringIO(text, newline=""))
                offset = done - reader.line_num
        last = offset + reader.line_num
        while pending:  # csv.reader up to the end of a chunk, and on inside a quoted field
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                part.append((last + 1, None, f"not valid CSV ({exc})"))
            else:
                part.append((last + 1, row, None))  # type: ignore[arg-type]
            last = offset + reader.line_num
        values = list(map(_row, part))
        if [] in values or set(map(len, filter(None, values))) - {width}:
            part = [(n, None, f"has {len(r)} fields; the header has {width}")
                    if r is not None and len(r) != width else (n, r, p)
                    for n, r, p in part if r != []]  # (a blank line is no row)
        if pad:
            for _, r, _ in part:
                if r is not None:
                    r.append("")
        if part:
            yield names + pad, part
