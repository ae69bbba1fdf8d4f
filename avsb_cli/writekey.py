"""Segment write keys: normalising, checking, masking, and where one comes from.

``resolve`` is the one place that decides which key a command uses, in this
order: ``AVSB_SEGMENT_WRITE_KEY`` (empty means unset), then the OS keyring,
then the owner-only file that ``--insecure-storage`` writes.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from avsb_cli.errors import AvsbError, InvalidKeyError

ENV_KEY = "AVSB_SEGMENT_WRITE_KEY"
MIN_LEN = 8
MAX_LEN = 256
# ':' would split HTTP Basic credentials; '/', '?', '#', '%' would change the
# settings-CDN URL the key is placed in.
_FORBIDDEN = set(':/?#%')

# Every key avsb has seen in this process; render.redact masks them in all
# output, so a key can't leak through an error message or a URL.
_SECRETS: set[str] = set()


def remember_secret(key: str) -> None:
    if key:
        _SECRETS.add(key)
        # Its HTTP Basic form too, as a header dump would show it.
        import base64

        _SECRETS.add(base64.b64encode(f"{key}:".encode("utf-8", "replace")).decode("ascii"))


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, mask(secret))
    return text


def key_shaped(value: str) -> bool:
    """Whether a word looks like a secret (a write key, a token) rather than a
    name: 16 characters or more of the URL-safe kind, with a digit or (a random
    key need not have one) upper- and lower-case letters; not a lower-case or
    dashed word such as an option, a path segment or a project name."""
    import re

    return len(value) >= 16 and bool(
        re.fullmatch(r"[A-Za-z0-9_.~+-]+", value) and re.search(r"[A-Za-z]", value)
        and (re.search(r"\d", value) or (re.search(r"[a-z]", value)
                                          and re.search(r"[A-Z]", value))))


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, redacted and then cut to ``limit`` characters.

    In that order: cut first, a key echoed near the limit would lose its end
    and no longer match, and most of it would be shown.
    """
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def mask(key: str | None) -> str:
    """At most the last 4 characters, never more than a quarter of the key."""
    if not key:
        return ""
    show = min(4, len(key) // 4)
    return "…" + key[-show:] if show else "…"


def fingerprint(key: str) -> str:
    """A short, non-reversible tag to tell keys apart in config and status."""
    # CPython's builtin SHA-256: hashlib would load OpenSSL first, which every
    # status run would pay (bench/RESULTS.md); the digest is the same.
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            from hashlib import sha256
    return "sha256:" + sha256(key.encode("utf-8")).hexdigest()[:12]


def normalise(raw: str, *, source: str = "input") -> str:
    """Strip surrounding whitespace and check the key; raise InvalidKeyError if bad."""
    key = raw.strip()
    if not key:
        raise InvalidKeyError(f"the write key from {source} is empty")
    # Don't echo any of the key: it may be a real one with a typo.
    if len(key) > MAX_LEN:
        raise InvalidKeyError(
            f"the write key from {source} is {len(key)} characters long; "
            f"Segment write keys are about 32",
            hint="check that you pasted the write key, not something else",
        )
    for ch in key:
        if ch.isspace():
            raise InvalidKeyError(f"the write key from {source} contains whitespace")
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise InvalidKeyError(f"the write key from {source} contains a control character")
        if ord(ch) > 0x7E:
            raise InvalidKeyError(
                f"the write key from {source} contains a non-ASCII character (U+{ord(ch):04X})"
            )
        if ch in _FORBIDDEN:
            raise InvalidKeyError(f"the write key from {source} contains {ch!r}")
    if len(key) < MIN_LEN:
        raise InvalidKeyError(
            f"the write key from {source} is only {len(key)} characters long; "
            f"Segment write keys are about 32"
        )
    remember_secret(key)
    return key


class ResolvedKey(NamedTuple):
    """The key a command will use, or why there is none."""

    key: str | None
    #: "env", "keyring", "file" or "none"
    source: str
    #: "ok", "missing" (configured but gone), "unavailable" (keyring down),
    #: "invalid" (a malformed AVSB_SEGMENT_WRITE_KEY) or "none"
    state: str
    problem: AvsbError | None = None

    @property
    def masked(self) -> str:
        return mask(self.key)


def resolve(project: str, seg: dict[str, Any], *, keystore: Any | None = None) -> ResolvedKey:
    """Find the write key for ``project`` given its segment config table ``seg``.

    ``keystore`` is only touched when the config says the key is in the keyring,
    so an auto-detect project never pays for (or fails on) the keyring.
    """
    env = os.environ.get(ENV_KEY, "")
    if env.strip():
        # A bad variable is reported, not raised: status must still show the
        # rest, and commands that need the key raise ``problem``.
        try:
            return ResolvedKey(normalise(env, source=ENV_KEY), "env", "ok")
        except InvalidKeyError as exc:
            return ResolvedKey(None, "env", "invalid", exc)

    storage = seg.get("key_storage", "none")
    if storage == "keyring":
        if keystore is None:
            from avsb_cli import keystore as keystore_mod

            keystore = keystore_mod
        try:
            key = keystore.get_key(project)
        except AvsbError as exc:
            return ResolvedKey(None, "keyring", "unavailable", exc)
        return _stored(key, "keyring")
    if storage == "file":
        from avsb_cli import keystore as keystore_mod

        return _stored(keystore_mod.FileKeyStore().get(project), "file")
    return ResolvedKey(None, "none", "none")


def _stored(raw: str | None, source: str) -> ResolvedKey:
    """A key read back from a store, normalised like one given on input: a
    ``KEY\n`` stored by another tool is used, and masked, as ``KEY``."""
    if raw is None:
        return ResolvedKey(None, source, "missing")
    remember_secret(raw)  # whatever happens next, never shown whole
    try:
        return ResolvedKey(normalise(raw, source=f"the {source}"), source, "ok")
    except InvalidKeyError as exc:
        return ResolvedKey(None, source, "invalid", exc)
