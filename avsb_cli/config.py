"""The config store: non-secret state in one TOML file.

Where: ``$AVSB_CONFIG_DIR/config.toml``, else ``typer.get_app_dir("avsb")``.
What: per project, whether Segment is enabled, its mode, region, endpoint,
where the key is kept and a short fingerprint of it, timestamps. Never a key.

Writes are atomic (temp file in the same folder, fsync, rename) and happen
under an exclusive lock around read-modify-write, so concurrent avsb processes
lose no update and a crash leaves the old file or the new one. A corrupt file
is reported with its line and left byte-for-byte as it was. Keys this version
does not know are carried through untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from avsb_cli.errors import ConfigError, UsageError

CONFIG_DIR_ENV = "AVSB_CONFIG_DIR"
CONFIG_NAME = "config.toml"
LOCK_NAME = ".lock"
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def config_dir() -> Path:
    env = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import typer  # already imported by the CLI; kept lazy for library use

    return Path(typer.get_app_dir("avsb"))


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


def now() -> str:
    """UTC time as ISO-8601 with milliseconds, the format Segment uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_project(name: str) -> str:
    if not PROJECT_RE.fullmatch(name or ""):  # not match: '$' lets "a\n" through
        raise UsageError(
            f"invalid project name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def _ensure_dir(path: Path) -> None:
    """Create the config folder, and any missing parent, owner-only (0700)
    whatever the umask; refuse one that others could change."""
    missing = []
    cur = path
    while not os.path.lexists(cur) and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)  # mkdir's mode passes through the umask
        except FileExistsError:
            pass  # another avsb made it first; it is checked below
        except OSError as exc:
            raise ConfigError(f"cannot create config folder {path}: {exc.strerror}") from None
    check_private(path)


def check_private(path: Path) -> None:
    """Refuse a config folder or file that someone else owns or may write.

    Anyone who can write there can change which endpoint gets the key, or
    swap the files under avsb. Root's files are trusted, like ssh does.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    what = "folder" if stat.S_ISDIR(st.st_mode) else "file"
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"config {what} {path} belongs to another user (uid {st.st_uid}); avsb "
            "refuses to use it",
            hint="set AVSB_CONFIG_DIR to a folder of your own, or fix the owner",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = "700" if what == "folder" else "600"
        raise ConfigError(
            f"config {what} {path} is writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}); avsb refuses to use it",
            hint=f"run: chmod {mode} {path}",
        )


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open a file avsb writes for its user alone: created 0600 whatever the
    umask, never through a symlink (O_NOFOLLOW). Returns the descriptor;
    raises OSError like os.open."""
    fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


# avsb's own files hold a few hundred bytes per project. Beyond these limits a
# file is not one avsb wrote, and tomllib would pay for it: nesting recurses
# (RecursionError), and every dotted key keeps all its prefixes (memory
# quadratic in the key's depth: 10,000 dots in 20 KB took 400 MB).
MAX_TOML_BYTES = 256 << 10
MAX_TOML_NESTING = 16


def _nesting(text: str) -> tuple[int, int]:
    """The deepest ``[``/``{`` nesting, or the most dots on one line, outside
    strings and comments, and its line; the scan stops past the limit."""
    depth = worst = line = where = dots = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else ch
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if text[i] == "\\" and quote[0] == '"':
                    i += 1  # an escape: the next character can't close the string
                elif text[i] == "\n":
                    if len(quote) == 1:
                        break  # one-line strings end at the line's end (tomllib says why)
                    line += 1
                i += 1
            i += len(quote)
            continue
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "\n":
            line, dots = line + 1, 0
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == ".":
            dots += 1
        if max(depth, dots) > worst:
            worst, where = max(depth, dots), line + 1
            if worst > MAX_TOML_NESTING:
                break  # enough to refuse it; the rest may be megabytes of it
        i += 1
    return worst, where


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file is empty, a corrupt one a ConfigError."""
    hint = "fix or move the file; avsb left it untouched"
    if os.path.lexists(path):
        check_private(path.parent)
        check_private(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_TOML_BYTES:
        raise ConfigError(f"{path} is over {MAX_TOML_BYTES >> 10} KB, far too big for an "
                          "avsb file", hint=hint)
    import tomllib

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path} is not valid UTF-8 (line {line}, byte {exc.start})", hint=hint
        ) from None
    # Counting first keeps the character-by-character scan off small files.
    few = sum(text.count(c) for c in "[{.") <= MAX_TOML_NESTING
    depth, line = (0, 0) if few else _nesting(text)
    if depth > MAX_TOML_NESTING:
        raise ConfigError(f"{path} is nested more than {MAX_TOML_NESTING} levels deep at line "
                          f"{line}; avsb reads at most {MAX_TOML_NESTING}", hint=hint)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        detail = str(exc)
        if "(at end of document)" in detail:
            # tomllib names no line here (a truncated file); name the last one.
            last = raw.rstrip(b"\n").count(b"\n") + 1
            detail = detail.replace("(at end of document)", f"(at end of document, line {last})")
        raise ConfigError(f"{path} is not valid TOML: {detail}", hint=hint) from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        # What the limits above did not foresee: tomllib's other crash
        # classes are still a bad file, not a bug of avsb's.
        raise ConfigError(f"{path} cannot be read as TOML ({type(exc).__name__})",
                          hint=hint) from None


def _remove_stale_temps(path: Path) -> None:
    """Temp files a killed writer left behind (callers hold the lock, so no
    live writer owns one)."""
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (call under ``locked``)."""
    _ensure_dir(path.parent)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            data = memoryview(text.encode("utf-8"))
            while data:  # os.write may write less than asked (a full disk)
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# Locks this thread holds: a use case holding the config lock around a key
# store and a config write takes it again in ``update``, and a second flock on
# a new descriptor of the same file would wait for itself. Per thread, so
# threads still exclude each other.
_held = threading.local()


@contextlib.contextmanager
def locked(folder: Path, name: str = LOCK_NAME) -> Iterator[None]:
    """An exclusive lock on the config folder, for read-modify-write.

    Re-entrant within a thread."""
    held: set[str] = _held.__dict__.setdefault("paths", set())
    path = str(folder / name)
    if path in held:
        yield
        return
    with _lock_file(folder, name):
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)


@contextlib.contextmanager
def _lock_file(folder: Path, name: str) -> Iterator[None]:
    """filelock: flock on Linux and macOS, msvcrt on Windows. The lock file stays
    (owner-only): deleting it on release would let a waiter and a newcomer
    each lock a different file of the same name.
    """
    import filelock  # only writers pay for the import

    _ensure_dir(folder)
    lock = filelock.FileLock(folder / name, mode=0o600, preserve_lock_file=True)
    try:
        lock.acquire()
    except OSError as exc:
        raise ConfigError(f"cannot lock config folder {folder}: {exc.strerror}") from None
    try:
        yield
    finally:
        lock.release()


_warned: set[Path] = set()


def _warn_permissions(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and path not in _warned:
        _warned.add(path)
        print(
            f"avsb: warning: {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}",
            file=sys.stderr,
        )


# What avsb reads from [projects.<name>.segment]: field -> allowed values (a
# tuple) or type. A hand edit that breaks one is reported here, as a config
# error naming the field, instead of crashing whatever reads it later.
_SEGMENT_FIELDS: dict[str, Any] = {
    "enabled": bool,
    "mode": ("write-key", "auto-detect"),
    "key_storage": ("keyring", "file", "none"),
    "key_fingerprint": str,
    "region": ("us", "eu"),
    "endpoint": str,
    "validation": dict,
}
_KIND = {bool: "true or false", str: "a string", dict: "a table", list: "a list"}
_VALIDATION_FIELDS: dict[str, Any] = {
    "ok": bool, "checked_at": str, "failed": list, "key_fingerprint": str,
}


def check_segment(seg: dict[str, Any], project: str) -> None:
    """Raise ConfigError if a field avsb reads has a value it can't use."""

    def bad(name: str, value: Any, want: str) -> ConfigError:
        from avsb_cli.writekey import shorten

        shown = shorten(repr(value), 40)  # a key pasted into a field is masked first
        return ConfigError(
            f"{config_path()}: projects.{project}.segment.{name} is {shown}; expected {want}",
            hint="fix or move the file; avsb left it untouched",
        )

    for name, want in _SEGMENT_FIELDS.items():
        if name not in seg:
            continue
        value = seg[name]
        if isinstance(want, tuple):
            if value not in want:
                raise bad(name, value, "one of " + ", ".join(want))
        elif not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise bad(name, value, _KIND[want])
    validation = seg.get("validation")
    if isinstance(validation, dict):
        for name, want in _VALIDATION_FIELDS.items():
            value = validation.get(name)
            if value is not None and not isinstance(value, want):
                raise bad(f"validation.{name}", value, _KIND[want])
        if not all(isinstance(x, str) for x in validation.get("failed") or []):
            raise bad("validation.failed", validation["failed"], "a list of check names")


class ConfigStore:
    """The TOML config file, read whole and written whole."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_path()

    def load(self) -> dict[str, Any]:
        data = read_toml(self.path)
        if data:
            _warn_permissions(self.path)
        return data

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The lock ``update`` takes, for a caller that changes the key store
        and the config together (concurrent enables of one project)."""
        return locked(self.path.parent)

    def update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Apply ``change`` to the current document under the lock, then save it."""
        import tomli_w

        with locked(self.path.parent):
            data = read_toml(self.path)
            result = change(data)
            write_atomic(self.path, tomli_w.dumps(data))
        return result

    # Views on the document -------------------------------------------------

    @staticmethod
    def segment_of(data: dict[str, Any], project: str) -> dict[str, Any]:
        """The ``[projects.<project>.segment]`` table, or {} when absent."""
        projects = data.get("projects")
        if not isinstance(projects, dict):
            return {}
        proj = projects.get(project)
        if not isinstance(proj, dict):
            return {}
        seg = proj.get("segment")
        if not isinstance(seg, dict):
            return {}
        check_segment(seg, project)
        return seg

    @staticmethod
    def segment_for_update(data: dict[str, Any], project: str) -> dict[str, Any]:
        """The segment table of ``project``, created if needed (for ``update``)."""
        projects = data.setdefault("projects", {})
        if not isinstance(projects, dict):
            raise ConfigError("'projects' in the config file is not a table")
        proj = projects.setdefault(project, {})
        if not isinstance(proj, dict):
            raise ConfigError(f"'projects.{project}' in the config file is not a table")
        seg = proj.setdefault("segment", {})
        if not isinstance(seg, dict):
            raise ConfigError(f"'projects.{project}.segment' in the config file is not a table")
        return seg
