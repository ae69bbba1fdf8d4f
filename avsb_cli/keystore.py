"""The key store: write keys in the OS keyring, one item per project.

Service ``avsb``, user name ``segment:<project>``. The keyring library picks
the backend (``PYTHON_KEYRING_BACKEND`` and keyringrc.cfg are honoured). Three
things the library does not do for us, done here:

- every call is bounded by a timeout (``AVSB_KEYRING_TIMEOUT``, seconds): a
  locked Secret Service collection on a desktop waits forever for a dialog;
- every write is read back, because the null backend drops writes silently;
- every failure, including the SecretService backend's bare RuntimeError
  when there is no D-Bus, becomes one KeyringUnavailableError that says
  what to do instead.

``FileKeyStore`` is the explicit, insecure alternative (``--insecure-storage``):
an owner-only TOML file next to the config.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from avsb_cli.errors import AvsbError, KeyringUnavailableError

SERVICE = "avsb"
TIMEOUT_ENV = "AVSB_KEYRING_TIMEOUT"
DEFAULT_TIMEOUT = 15.0
SECRETS_NAME = "secrets.toml"

WAYS_OUT = (
    "unlock or install a Secret Service (e.g. gnome-keyring), "
    "or set AVSB_SEGMENT_WRITE_KEY (CI), "
    "or pass --insecure-storage to keep the key in an owner-only file"
)

T = TypeVar("T")


def username(project: str) -> str:
    return f"segment:{project}"


def token_username(host: str) -> str:
    """The keyring item of an A vs B API token: one per API host."""
    return f"token:{host}"


def _timeout() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    if math.isnan(value):
        return DEFAULT_TIMEOUT
    # Thread.join overflows on inf; a day is "forever" enough.
    return min(max(0.1, value), 86400.0)


class _KeyringTimeout(KeyringUnavailableError):
    """The keyring did not answer in time: final, no fallback will do better."""


def _unavailable(
    reason: str, cls: type[KeyringUnavailableError] = KeyringUnavailableError
) -> KeyringUnavailableError:
    return cls(f"no usable OS keyring: {reason}", hint=WAYS_OUT)


# One deadline for a whole key operation (fast path, backend discovery, the
# call, the read-back): each step alone bounded by the timeout added up to
# two or three timeouts (6 s became 11 s). (end, the timeout it came from)
_deadline: tuple[float, float] | None = None


@contextlib.contextmanager
def _one_deadline() -> Iterator[None]:
    """Every keyring call inside shares one AVSB_KEYRING_TIMEOUT; nested: the outer's."""
    global _deadline
    if _deadline is not None:
        yield
        return
    timeout = _timeout()
    _deadline = (time.monotonic() + timeout, timeout)
    try:
        yield
    finally:
        _deadline = None


def _bounded(what: str, fn: Callable[[], T]) -> T:
    """Run a keyring call in a daemon thread and give up at the deadline."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    end, total = _deadline or (time.monotonic() + _timeout(), _timeout())
    worker = threading.Thread(target=run, name=f"keyring-{what}", daemon=True)
    worker.start()
    worker.join(max(0.0, end - time.monotonic()))
    if worker.is_alive():
        raise _unavailable(
            f"the keyring did not answer within {total:g}s "
            "(a locked collection waiting for an unlock prompt?)",
            _KeyringTimeout,
        )
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, AvsbError):
            raise exc
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        name = type(exc).__name__
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else name
        raise _unavailable(f"{what} failed: {detail} ({name})")
    return result["value"]


_backend: Any = None


def backend() -> Any:
    """The keyring backend the keyring library chose, checked to be usable."""
    with _one_deadline():
        return _backend_within_deadline()


def _backend_within_deadline() -> Any:
    global _backend
    if _backend is not None:
        return _backend

    def pick() -> Any:
        import keyring

        return keyring.get_keyring()

    kr = _bounded("finding a keyring backend", pick)
    kind = f"{type(kr).__module__}.{type(kr).__qualname__}"
    if kind.startswith("keyring.backends.fail."):
        raise _unavailable("no keyring backend is installed or reachable (no D-Bus session?)")
    if kind.startswith("keyring.backends.null."):
        raise _unavailable("the keyring backend is the null backend, which stores nothing")
    _backend = kr
    return kr


def insecure_reason(kr: Any) -> str | None:
    """Why a backend is a keyring in name only, or None for a real one.

    keyrings.alt's PlaintextKeyring (and its pyfs twin) keeps keys
    base64-encoded in a file under ~/.local/share: no better than
    --insecure-storage, and keyring picks it by itself when no Secret Service
    answers. A chainer is as weak as the weakest backend in its chain.
    """
    for each in getattr(kr, "backends", None) or [kr]:
        cls = type(each)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if "plaintext" in cls.__qualname__.lower() or "unencrypted" in name.lower():
            return f"{name} keeps keys in a plain file"
    return None


def loaded_backend_insecurity() -> str | None:
    """insecure_reason of the backend this process already uses, if it loaded one.

    A read answered by the Secret Service fast path loads none (and is secure).
    """
    return insecure_reason(_backend) if _backend is not None else None


def backend_name() -> str:
    """The keyring backend's dotted name, as `avsb doctor` shows it."""
    kr = backend()
    return f"{type(kr).__module__}.{type(kr).__qualname__}"


def reset() -> None:
    """Forget the cached backend (tests switch backends)."""
    global _backend
    _backend = None


def get_key(project: str) -> str | None:
    return _get(username(project))


def _get(user: str, what: str = "the key") -> str | None:
    with _one_deadline():
        found = _secret_service_lookup(user, what)
        if found is not None:
            return found
        kr = backend()
        return _bounded(f"reading {what}", lambda: kr.get_password(SERVICE, user))


def get_token(host: str) -> str | None:
    """The A vs B token stored for ``host``, or None."""
    return _get(token_username(host), "the token")


def set_token(host: str, token: str) -> None:
    _set(token_username(host), token, "the token")


def delete_token(host: str) -> bool:
    """Delete the token of ``host``; False when there was none."""
    return _delete(token_username(host), "the token")


def _keyring_would_pick_secret_service() -> bool:
    """Whether keyring, left alone, reads this key from the Secret Service.

    True only when nothing steers keyring elsewhere: not yet imported here
    (a test or a host program may have set a backend), Linux with a session
    bus, no PYTHON_KEYRING_BACKEND, no keyringrc.cfg, no KEYRING_PROPERTY_*
    (another attribute scheme or collection), and not KDE, where KWallet
    outranks the Secret Service.
    """
    import sys

    env = os.environ
    if "keyring" in sys.modules or not sys.platform.startswith("linux"):
        return False
    if not env.get("DBUS_SESSION_BUS_ADDRESS") or env.get("PYTHON_KEYRING_BACKEND"):
        return False
    if any(k.startswith("KEYRING_PROPERTY_") for k in env):
        return False
    if "KDE" in env.get("XDG_CURRENT_DESKTOP", "").split(":"):
        return False
    config = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return not os.path.exists(os.path.join(config, "python_keyring", "keyringrc.cfg"))


def secret_service_lookup(project: str) -> str | None:
    return _secret_service_lookup(username(project), "the key")


def _secret_service_lookup(user: str, what: str) -> str | None:
    """The key read straight from the Secret Service, or None to ask keyring.

    A fast path for reads (status and every command that sends): keyring's
    import and backend discovery cost several times this lookup (figures:
    bench/RESULTS.md). Same item keyring's SecretService backend reads:
    attributes service and username in the default collection. Anything
    unexpected (no default collection, locked, an error) falls back to
    keyring, which can prompt to unlock and report the problem; only a hang
    is final, as keyring would hang the same way.
    """
    if not _keyring_would_pick_secret_service():
        return None

    def lookup() -> str | None:
        # Plain jeepney calls instead of secretstorage: its encrypted transfer
        # session imports cryptography and runs a DH exchange, a large share of
        # a status run (bench/RESULTS.md). The "plain" algorithm of the Secret Service spec
        # carries the secret over the user's own session bus, which only the
        # user's processes can reach, and they can ask for the secret anyway.
        # (Segment write keys are also shipped in web pages by analytics.js.)
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(bus="SESSION")

        def call(path: str, iface: str, method: str, sig: str, body: tuple) -> Any:
            addr = DBusAddress(path, bus_name="org.freedesktop.secrets", interface=iface)
            # Bounded by what is left of the one deadline (its own 5 s used to
            # come on top of the keyring's whole timeout).
            left = (_deadline[0] - time.monotonic()) if _deadline else 5.0
            reply = conn.send_and_get_reply(new_method_call(addr, method, sig, body),
                                            timeout=max(0.01, min(5.0, left)))
            return reply.body

        try:
            collection = "/org/freedesktop/secrets/aliases/default"  # never creates one
            ((_, locked),) = call(collection, "org.freedesktop.DBus.Properties", "Get", "ss",
                                  ("org.freedesktop.Secret.Collection", "Locked"))
            if locked:
                return None
            (items,) = call(collection, "org.freedesktop.Secret.Collection", "SearchItems",
                            "a{ss}", ({"service": SERVICE, "username": user},))
            if not items:
                return None
            _, session = call("/org/freedesktop/secrets", "org.freedesktop.Secret.Service",
                              "OpenSession", "sv", ("plain", ("s", "")))
            (secret,) = call(items[0], "org.freedesktop.Secret.Item", "GetSecret", "o",
                             (session,))
            return bytes(secret[2]).decode("utf-8")
        finally:
            conn.close()

    try:
        return _bounded(f"reading {what}", lookup)
    except _KeyringTimeout:
        raise
    except KeyringUnavailableError:
        return None


def set_key(project: str, key: str) -> None:
    _set(username(project), key, "the key")


def _set(user: str, value: str, what: str) -> None:
    with _one_deadline():
        kr = backend()
        _bounded(f"storing {what}", lambda: kr.set_password(SERVICE, user, value))
        if _get(user, what) != value:
            raise _unavailable(
                f"the keyring backend ({type(kr).__name__}) accepted {what} but did not keep it"
            )


def delete_key(project: str) -> bool:
    """Delete the project's key; False when there was none."""
    return _delete(username(project), "the key")


def _delete(user: str, what: str) -> bool:

    def delete(kr: Any) -> bool:
        from keyring.errors import PasswordDeleteError

        try:
            kr.delete_password(SERVICE, user)
        except PasswordDeleteError as exc:
            # Backends raise this for "no such item" and for a refused delete
            # alike; only the first is fine, so look.
            if kr.get_password(SERVICE, user) is None:
                return False
            raise _unavailable(f"deleting {what} failed: {exc}") from None
        return True

    with _one_deadline():
        kr = backend()
        return _bounded(f"deleting {what}", lambda: delete(kr))


class FileKeyStore:
    """Keys in ``secrets.toml`` beside the config, mode 0600 (``--insecure-storage``):
    write keys under ``[segment]`` by project, A vs B tokens under ``[tokens]``
    by API host."""

    def __init__(self, table: str = "segment") -> None:
        from avsb_cli.config import config_dir

        self.path = config_dir() / SECRETS_NAME
        self.table = table

    @classmethod
    def tokens(cls) -> FileKeyStore:
        return cls("tokens")

    def get(self, project: str) -> str | None:
        from avsb_cli.config import _warn_permissions, read_toml

        data = read_toml(self.path)
        if data:
            _warn_permissions(self.path)  # readable by others: the secret is exposed
        seg = data.get(self.table, {})
        value = seg.get(project) if isinstance(seg, dict) else None
        return value if isinstance(value, str) and value else None

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        import tomli_w

        from avsb_cli.config import locked, read_toml, write_atomic

        with locked(self.path.parent, ".secrets.lock"):
            data = read_toml(self.path)
            seg = data.setdefault(self.table, {})
            change(seg)
            write_atomic(self.path, tomli_w.dumps(data))

    def set(self, project: str, key: str) -> None:
        self._update(lambda seg: seg.__setitem__(project, key))

    def delete(self, project: str) -> bool:
        existed = self.get(project) is not None
        if existed:
            self._update(lambda seg: seg.pop(project, None))
        return existed
