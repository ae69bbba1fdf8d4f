"""The retry policy every request avsb makes goes through (segment.request).

Kept apart from the HTTP client so that a command that sends nothing, a
``segment send --dry-run``, can check ``--timeout`` and AVSB_TIMEOUT without
importing httpx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from avsb_cli.errors import UsageError

TIMEOUT_ENV = "AVSB_TIMEOUT"


@dataclass
class Policy:
    attempts: int = 6
    backoff: float = 0.5
    backoff_cap: float = 8.0
    retry_after_cap: float = 10.0
    #: total seconds for all attempts and waits
    deadline: float = 20.0
    connect_timeout: float = 5.0
    read_timeout: float = 10.0

    @classmethod
    def from_env(cls, timeout: float | None = None) -> Policy:
        if timeout is None:
            raw = os.environ.get(TIMEOUT_ENV, "").strip()
            if raw:
                try:
                    timeout = float(raw)
                except ValueError:
                    raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds") from None
        policy = cls()
        if timeout is not None:
            if not 0 < timeout <= 3600:
                raise UsageError("the timeout must be between 0 and 3600 seconds")
            policy.deadline = timeout
            policy.read_timeout = min(policy.read_timeout, timeout)
            policy.connect_timeout = min(policy.connect_timeout, timeout)
        return policy

    def delay(self, retry: int) -> float:
        """Wait before retry number ``retry`` (1-based), with jitter."""
        import random  # (only when a request is retried)

        base = min(self.backoff_cap, self.backoff * 2 ** (retry - 1))
        return base * random.uniform(0.5, 1.0)
