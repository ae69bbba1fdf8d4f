"""The event A vs B's snippet sends through Segment, as a Segment message.

    analytics.track('avsb_experiment', {experiment_id, experiment_name,
      variation_id, variation_name, event_name: 'experiment_viewed'})

Kept apart from the HTTP client (segment.py) so that what only builds
messages, a ``segment send --dry-run``, needs no httpx.
"""

from __future__ import annotations

import uuid
from typing import Any

from avsb_cli import __version__
from avsb_cli.errors import UsageError

EVENT = "avsb_experiment"
EVENT_NAME = "experiment_viewed"
MAX_MESSAGE_BYTES = 32 << 10


def now_iso() -> str:
    """UTC now for timestamp and sentAt (a seam tests replace)."""
    from avsb_cli.config import now

    return now()


def library_context() -> dict[str, Any]:
    return {"library": {"name": "avsb", "version": __version__}}


def experiment_event(
    *,
    experiment_id: str,
    experiment_name: str,
    variation_id: str,
    variation_name: str,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    timestamp: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The track call the A vs B snippet makes, as a Segment message."""
    if not (user_id or anonymous_id):
        raise UsageError("an event needs a user id or an anonymous id")
    msg: dict[str, Any] = {
        "type": "track",
        "event": EVENT,
        "messageId": message_id or f"avsb-{uuid.uuid4()}",
        "timestamp": timestamp or now_iso(),
        "properties": {
            "experiment_id": experiment_id,
            "experiment_name": experiment_name,
            "variation_id": variation_id,
            "variation_name": variation_name,
            "event_name": EVENT_NAME,
        },
        "context": library_context(),
    }
    if user_id:
        msg["userId"] = user_id
    if anonymous_id:
        msg["anonymousId"] = anonymous_id
    return msg


def encode(msg: dict[str, Any]) -> bytes:
    import json  # (only test-event's one message: a dry run of many needs none)

    try:
        body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: an argument with bytes that were not UTF-8.
        raise UsageError(
            "the event has text that is not valid UTF-8",
            hint="check the encoding of the experiment, variation and user fields",
        ) from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise UsageError(
            f"the event is {len(body):,} bytes; Segment refuses messages over 32 KB",
            hint="shorten the experiment or variation fields",
        )
    return body
