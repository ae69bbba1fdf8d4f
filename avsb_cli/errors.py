"""Errors and exit codes.

Every failure avsb expects is an ``AvsbError``; the CLI catches the base class
once, prints one line (or one JSON document) and exits with the error's code.
The codes are part of the scripting contract: they are documented in the
README and pinned by tests, so change them only on purpose.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: An unexpected failure (a bug), or a closed or failing standard output:
    #: reported in one line, never a traceback.
    ERROR = 1
    #: Bad command line: unknown option, bad value, conflicting options.
    USAGE = 2
    #: The integration is not enabled, or has no write key where one is needed.
    NOT_CONFIGURED = 3
    #: No usable OS keyring (none installed, locked, null backend, timed out).
    KEYRING_UNAVAILABLE = 4
    #: The write key is malformed, or Segment does not know it, or a check failed.
    VALIDATION_FAILED = 5
    #: Segment or A vs B could not be reached, or answered with an error.
    NETWORK = 6
    #: The config file is corrupt or cannot be written.
    CONFIG = 7
    #: Input data (an enrollments file) had records that were not sent.
    INPUT = 8
    #: A vs B refused the token (401: missing, invalid, expired, revoked) or a
    #: scope it needs (403), or a token is malformed.
    AUTH = 9
    #: The dashboard changed meanwhile (412) to something else than asked, or
    #: an Idempotency-Key was reused with another body (409).
    CONFLICT = 10
    #: Interrupted by Ctrl-C (128 + SIGINT).
    INTERRUPTED = 130
    #: ``segment send`` stopped by SIGTERM (128 + SIGTERM), after saving what it read.
    TERMINATED = 143


class AvsbError(Exception):
    """Base of every error avsb reports to the user.

    ``message`` is one sentence; ``hint`` tells what to do about it.
    """

    exit_code: ExitCode = ExitCode.ERROR
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"code": self.code, "message": self.message}
        if self.hint:
            doc["hint"] = self.hint
        return doc


class UsageError(AvsbError):
    exit_code = ExitCode.USAGE
    code = "usage"


class NotFoundError(UsageError):
    """A vs B has no such project or org (404): a usage error with its own code."""

    code = "not_found"


class NotConfiguredError(AvsbError):
    exit_code = ExitCode.NOT_CONFIGURED
    code = "not_configured"


class KeyringUnavailableError(AvsbError):
    exit_code = ExitCode.KEYRING_UNAVAILABLE
    code = "keyring_unavailable"


class InvalidKeyError(AvsbError):
    exit_code = ExitCode.VALIDATION_FAILED
    code = "invalid_key"


class ValidationFailedError(AvsbError):
    exit_code = ExitCode.VALIDATION_FAILED
    code = "validation_failed"


class NetworkError(AvsbError):
    exit_code = ExitCode.NETWORK
    code = "network"


class ListenTimeoutError(NetworkError):
    """`segment listen --count N --timeout S`: fewer than N events came in time.
    Exit 6 (code ``network``), like a delivery that never happened."""


class ConfigError(AvsbError):
    exit_code = ExitCode.CONFIG
    code = "config"


class InputError(AvsbError):
    exit_code = ExitCode.INPUT
    code = "input"


class OutputError(AvsbError):
    """Standard output is closed or a write to it failed (a full disk)."""

    exit_code = ExitCode.ERROR
    code = "output"


class Interrupted(AvsbError):
    exit_code = ExitCode.INTERRUPTED
    code = "interrupted"


class Terminated(Interrupted):
    """SIGTERM: an interruption too (same JSON code), with the exit code a shell expects."""

    exit_code = ExitCode.TERMINATED


class AuthError(AvsbError):
    exit_code = ExitCode.AUTH
    code = "auth"


class ConflictError(AvsbError):
    exit_code = ExitCode.CONFLICT
    code = "conflict"
