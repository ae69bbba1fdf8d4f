"""Where Segment lives: regions, custom endpoints, the settings CDN.

Segment's SDKs take a host without ``/v1`` while raw HTTP needs it, and users
mix the two up; avsb accepts both and stores the base URL without ``/v1``.
Plain http is refused except for a literal loopback address (local relays
and tests), which is then never sent through a proxy: the write key travels
in every request.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

from avsb_cli.errors import UsageError

REGIONS = {
    "us": "https://api.segment.io",
    "eu": "https://events.eu1.segmentapis.com",
}
DEFAULT_REGION = "us"
DEFAULT_CDN = "https://cdn.segment.com"
ENDPOINT_ENV = "AVSB_SEGMENT_ENDPOINT"
CDN_ENV = "AVSB_SEGMENT_CDN_URL"


def region_of_api_host(api_host: str) -> str | None:
    """The region named by a settings-CDN ``apiHost`` such as ``api.segment.io/v1``."""
    host = api_host.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host.startswith("events.eu1.") or ".eu1." in host or host.startswith("eu1."):
        return "eu"
    if host in ("api.segment.io", "events.segmentapis.com") or host.endswith(".segment.io"):
        return "us"
    return None


def is_loopback(host: str) -> bool:
    """A literal loopback address (127.0.0.0/8, ::1), never a name.

    Names, ``localhost`` included, are resolved through /etc/hosts, NSS or
    DNS, and proxies match them by name: ``foo.localhost`` and
    ``localhost.localdomain`` were trusted and sent the key in clear to
    HTTP_PROXY. Only an address says where the connection goes.
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_url(raw: str, *, what: str = "endpoint", secret: str = "the write key") -> str:
    """``https://host[:port][/path]`` without a trailing ``/v1`` or slash."""
    text = raw.strip()
    if not text:
        raise UsageError(f"the {what} URL is empty")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        raise UsageError(f"the {what} URL contains whitespace or control characters")
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"invalid {what} URL {raw!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"invalid {what} URL {raw!r}: the scheme must be https")
    if not host:
        raise UsageError(f"invalid {what} URL {raw!r}: no host")
    if parts.username or parts.password:
        raise UsageError(f"invalid {what} URL: credentials in the URL are not allowed")
    if parts.query or parts.fragment:
        raise UsageError(f"invalid {what} URL {raw!r}: no query or fragment allowed")
    if scheme == "http" and not is_loopback(host):
        raise UsageError(
            f"refusing plain http for {host}: {secret} would travel unencrypted",
            hint="use https (plain http is allowed only for a loopback address such as "
            "127.0.0.1 or [::1], not for a name, localhost included)",
        )
    path = parts.path.rstrip("/")
    # A loop, not an if: ".../v1/v1" once stripped would still end in /v1,
    # and avsb appends /v1 itself, so a stored base never ends with it.
    while path.lower().endswith("/v1"):
        path = path[:-3].rstrip("/")
    netloc = parts.netloc.lower() if not parts.port else parts.netloc
    return f"{scheme}://{netloc}{path}"


def check_region(region: str) -> str:
    region = region.strip().lower()
    if region not in REGIONS:
        raise UsageError(f"unknown region {region!r}", hint="use us or eu")
    return region


def tracking_base(seg: dict[str, Any]) -> str:
    """The tracking API base URL (without /v1) for a project's segment config."""
    env = os.environ.get(ENDPOINT_ENV, "")
    if env.strip():
        return normalise_url(env, what=ENDPOINT_ENV)
    custom = seg.get("endpoint") or ""
    if custom:
        return normalise_url(custom)
    return REGIONS.get(seg.get("region", DEFAULT_REGION), REGIONS[DEFAULT_REGION])


def endpoint_source(seg: dict[str, Any]) -> str:
    if os.environ.get(ENDPOINT_ENV, "").strip():
        return "env"
    return "custom" if seg.get("endpoint") else "region"


def cdn_base() -> str:
    env = os.environ.get(CDN_ENV, "")
    return normalise_url(env, what=CDN_ENV) if env.strip() else DEFAULT_CDN
