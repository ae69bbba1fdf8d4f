"""The A vs B client: its REST API, as far as avsb uses it.

One ``httpx.Client`` is built in ``Api.__init__`` (through
``segment.build_client``: timeouts, no redirects, the ``transport`` seam;
User-Agent ``avsb/<version>`` so A vs B's audit log names the CLI). Every
call goes through ``Api.call``, which:

- sends the token as ``Authorization: Bearer`` to the configured host only
  (redirects are never followed, so it never reaches another host);
- retries 5xx, 408, connection cuts and timeouts with segment.py's policy,
  resending the same body and Idempotency-Key, so A vs B replays a write
  that had in fact arrived instead of applying it twice;
- waits out a 429 for ``Retry-After`` (or until ``X-RateLimit-Reset``) while
  that fits in ``--timeout``, saying so on stderr, else fails saying when to
  try again;
- reads at most ``MAX_ANSWER`` bytes of an answer, before and after
  decompression (transport.Bounded, as for Segment), and accepts only the
  published envelope (``{"data": ...}`` / ``{"error": {...}}``);
- maps refusals to exit codes: 401/403 AUTH, 404 USAGE (not in this org),
  409/412 CONFLICT, the rest NETWORK.

The integration endpoints are not published: the paths and field names
below are the contract avsb assumes (../shared/AVSB_API.md, README), kept
in this one place so a change in the live OpenAPI is a one-place edit.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from avsb_cli import __version__, segment
from avsb_cli.errors import (
    AuthError,
    AvsbError,
    ConflictError,
    NetworkError,
    NotFoundError,
)
from avsb_cli.writekey import mask, redact, remember_secret

# The contract ----------------------------------------------------------------------

DEFAULT_API_URL = "https://app.avsb.cloud"
USER_AGENT = f"avsb/{__version__}"
OPENAPI_PATH = "/api/openapi.json"
PROJECTS_PATH = "/api/orgs/{orgId}/projects"
SEGMENT_PATH = "/api/orgs/{orgId}/projects/{projectId}/integrations/segment"
#: (method, path template, scope) of the operations avsb uses; doctor looks
#: for each in the live OpenAPI document.
OPERATIONS = (
    ("get", PROJECTS_PATH, "projects:read"),
    ("get", SEGMENT_PATH, "integrations:read"),
    ("put", SEGMENT_PATH, "integrations:write"),
)
# Field names of the assumed answers and request body.
F_ENABLED, F_WRITE_KEY, F_UPDATED_AT = "enabled", "writeKey", "updatedAt"
F_ID, F_SHORT_ID, F_NAME = "id", "shortId", "name"

#: Largest answer avsb reads (a project list page is a few KB); the OpenAPI
#: document gets more.
MAX_ANSWER = 256 << 10
MAX_OPENAPI = 8 << 20
PAGE_SIZE = 100
MAX_PAGES = 1000

_PAT = re.compile(r"pat_[0-9a-fA-F]{64}")
_SERVICE = re.compile(r"avsb_svc_[A-Za-z0-9_-]{8,}")

# Seams for tests (the CLI path takes no arguments).
_sleep: Callable[[float], None] = time.sleep


def _notify(text: str) -> None:
    from avsb_cli import render

    render.current().note(f"avsb: {text}")


notify: Callable[[str], None] = _notify


# Tokens ---------------------------------------------------------------------------


def check_token(raw: str, *, source: str) -> str:
    """The token, stripped, if it has a token's shape; AuthError otherwise (no request made)."""
    token = raw.strip()
    if len(token) >= 8:
        remember_secret(token)  # masked in any output, even when malformed
    if not token:
        raise AuthError(f"the token from {source} is empty",
                        hint="paste a personal access token (pat_...) or a service token")
    if not (_PAT.fullmatch(token) or _SERVICE.fullmatch(token)):
        # Never echo any of it: it may be a real token with a typo.
        raise AuthError(
            f"the token from {source} is not an A vs B token: expected pat_ and 64 hex "
            "characters (personal) or avsb_svc_... (service)",
            hint="copy it again from the dashboard: Settings > Personal access tokens",
        )
    return token


def token_kind(token: str) -> str:
    return "service" if token.startswith("avsb_svc_") else "personal"


def host_of(base: str) -> str:
    return urlsplit(base).netloc


# Answers --------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    data: Any
    doc: dict[str, Any]
    etag: str | None
    headers: Any


@dataclass
class Integration:
    """The Segment integration as the dashboard holds it."""

    enabled: bool
    write_key: str | None
    updated_at: str | None
    etag: str | None

    def matches(self, enabled: bool, write_key: str | None) -> bool:
        return self.enabled == enabled and self.write_key == write_key

    def to_dict(self) -> dict[str, Any]:
        from avsb_cli import writekey

        return {
            "enabled": self.enabled,
            "mode": "write-key" if self.write_key else "auto-detect",
            "key_masked": mask(self.write_key) or None,
            "key_fingerprint": writekey.fingerprint(self.write_key) if self.write_key else None,
            "updated_at": self.updated_at,
        }


class PreconditionFailed(ConflictError):
    """412: the ETag sent with If-Match is stale (the dashboard changed it)."""


def _short(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return redact(text if len(text) <= limit else text[: limit - 3] + "...")


# The client ------------------------------------------------------------------------


class Api:
    """A vs B for one token and organisation. Use as a context manager."""

    def __init__(self, base: str, org: str, token: str | None, *, token_source: str = "",
                 transport: Any | None = None, timeout: float | None = None) -> None:
        self.base, self.org, self.token = base, org, token
        self.token_source = token_source
        self.host = host_of(base)
        if token:
            remember_secret(token)
        self.policy = segment.Policy.from_env(timeout)
        self.client = segment.build_client(transport, policy=self.policy,
                                           tls=base.startswith("https:"))
        self.client.headers["User-Agent"] = USER_AGENT

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    # One call ------------------------------------------------------------------------

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
             body: Any = None, if_match: str | None = None,
             idempotency_key: str | None = None, auth: bool = True,
             cap: int = MAX_ANSWER, envelope: bool = True) -> Answer:
        url = self.base + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if auth:
            if not self.token:
                raise AuthError("not logged in to A vs B", hint="run: avsb login")
            headers["Authorization"] = f"Bearer {self.token}"
        # Built once: every retry sends the same bytes and the same key.
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if if_match:
            headers["If-Match"] = if_match
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        start = segment._clock()
        while True:
            left = self.policy.deadline - (segment._clock() - start)
            policy = replace(self.policy, deadline=max(0.05, left))
            d = segment.request(self.client, method, url, policy=policy, content=content,
                                headers=headers, ok_statuses=_OWN_STATUSES, cap=cap)
            if d.status != 429:
                break
            wait = _rate_limit_wait(d.headers)
            elapsed = segment._clock() - start
            if wait is None:
                wait = self.policy.delay(1)
            if elapsed + wait > self.policy.deadline:
                when = time.strftime("%H:%M:%S", time.gmtime(time.time() + wait))
                raise NetworkError(
                    f"A vs B is rate limiting this token (HTTP 429): try again in "
                    f"{math.ceil(wait)}s (after {when} UTC)",
                    hint="or allow more time with --timeout or AVSB_TIMEOUT",
                )
            notify(f"A vs B rate limit reached; waiting {math.ceil(wait)}s as it asks")
            _sleep(wait)
        return self._answer(d, envelope)

    def _answer(self, d: Any, envelope: bool) -> Answer:
        status, body = d.status, d.body
        if 300 <= status < 400:
            target = host_of(d.headers.get("Location", "")) or "elsewhere"
            raise NetworkError(
                f"{self.host} answered HTTP {status}, a redirect to {_short(target, 80)}; "
                "not followed, so the token is not sent to another host",
                hint="check --api-url / AVSB_API_URL",
            )
        try:
            doc = json.loads(body) if body else None
            problem = None if isinstance(doc, dict) else "not a JSON object"
        except (ValueError, UnicodeDecodeError):
            doc = None
            problem = ("an HTML page" if body.lstrip()[:1] == b"<"
                       else "truncated or invalid JSON")
        if not body:
            problem = "an empty body"
        if status >= 400:
            raise self._refusal(status, doc if isinstance(doc, dict) else {})
        if problem is None and envelope and "data" not in doc:
            problem = "JSON without 'data'"
        if problem:
            raise NetworkError(
                f"{self.host} answered HTTP {status} with {problem}, not A vs B's JSON envelope",
                hint="check --api-url / AVSB_API_URL; if it is right, A vs B's API may have "
                     "changed: run avsb doctor",
            )
        return Answer(status, doc["data"] if envelope else doc, doc, d.headers.get("ETag"),
                      d.headers)

    def _refusal(self, status: int, doc: dict[str, Any]) -> AvsbError:
        err = doc.get("error") if isinstance(doc.get("error"), dict) else {}
        details = err.get("details") if isinstance(err.get("details"), dict) else {}
        message = _short(err.get("message") or f"HTTP {status}")
        if status == 401:
            who = "AVSB_TOKEN" if self.token_source == "env" else f"the token {mask(self.token)}"
            return AuthError(
                f"A vs B refused {who} (HTTP 401: {message}): missing, invalid, expired or revoked",
                hint=("set AVSB_TOKEN to a valid token" if self.token_source == "env"
                      else "log in again: avsb login"),
            )
        if status == 403:
            scope = details.get("missingScope")
            if isinstance(scope, str) and scope:
                return AuthError(
                    f"the token lacks the scope {_short(scope, 60)} (HTTP 403)",
                    hint=f"create a token with {_short(scope, 60)}, then run avsb login "
                         "(or set AVSB_TOKEN)",
                )
            return AuthError(f"A vs B refused the request (HTTP 403: {message})",
                             hint="check the token's role and scopes, then avsb login")
        if status == 404:
            return NotFoundError(
                f"A vs B has no such thing in org {self.org} (HTTP 404: {message})",
                hint="check --org and --project: avsb projects list")
        if status == 409:
            return ConflictError(
                f"A vs B refused a retried change (HTTP 409: {message}): its Idempotency-Key "
                "was used with another body", hint="run the command again")
        if status == 412:
            return PreconditionFailed(f"the dashboard changed meanwhile (HTTP 412: {message})")
        return NetworkError(f"{self.host} refused the request: HTTP {status}: {message}")

    # The operations ----------------------------------------------------------------

    def _org_path(self, template: str, project_id: str | None = None) -> str:
        path = template.replace("{orgId}", quote(self.org, safe=""))
        if project_id is not None:
            path = path.replace("{projectId}", quote(project_id, safe=""))
        return path

    def projects_page(self, limit: int = PAGE_SIZE,
                      cursor: str | None = None) -> tuple[list[dict[str, str]], str | None]:
        query: dict[str, Any] = {"limit": limit}
        if cursor:
            query["cursor"] = cursor
        ans = self.call("GET", self._org_path(PROJECTS_PATH), query=query)
        if not isinstance(ans.data, list):
            raise self._shape("the project list is not a list")
        items = []
        for item in ans.data:
            if not isinstance(item, dict) or not isinstance(item.get(F_ID), str):
                raise self._shape("a project without an id")
            items.append({"id": item[F_ID], "shortId": _str_or_none(item.get(F_SHORT_ID)),
                          "name": _str_or_none(item.get(F_NAME))})
        nxt = ans.doc.get("next_cursor")
        more = ans.doc.get("has_more")
        if not isinstance(nxt, str) or not nxt or more is False:
            nxt = None
        return items, nxt

    def projects(self) -> list[dict[str, str]]:
        """Every project of the org, following next_cursor to the end."""
        found: list[dict[str, str]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            items, cursor = self.projects_page(PAGE_SIZE, cursor)
            found += items
            if cursor is None:
                return found
            if cursor in seen:
                raise self._shape("the project list repeats a cursor")
            seen.add(cursor)
        raise self._shape(f"the project list goes on past {MAX_PAGES} pages")

    def get_segment(self, project_id: str) -> Integration:
        return self._integration(self.call("GET", self._org_path(SEGMENT_PATH, project_id)))

    def put_segment(self, project_id: str, *, enabled: bool, write_key: str | None,
                    etag: str | None, idempotency_key: str) -> Integration:
        ans = self.call("PUT", self._org_path(SEGMENT_PATH, project_id),
                        body={F_ENABLED: enabled, F_WRITE_KEY: write_key},
                        if_match=etag, idempotency_key=idempotency_key)
        return self._integration(ans)

    def openapi(self) -> dict[str, Any]:
        """The live OpenAPI document (unauthenticated; not in the envelope)."""
        doc = self.call("GET", OPENAPI_PATH, auth=False, cap=MAX_OPENAPI, envelope=False).data
        if not isinstance(doc.get("paths"), dict):
            raise NetworkError(f"{self.base}{OPENAPI_PATH} is not an OpenAPI document "
                               "(no 'paths')")
        return doc

    def _integration(self, ans: Answer) -> Integration:
        data = ans.data
        if not isinstance(data, dict) or not isinstance(data.get(F_ENABLED), bool):
            raise self._shape(f"the Segment integration has no boolean '{F_ENABLED}'")
        key = data.get(F_WRITE_KEY)
        if key is not None and not isinstance(key, str):
            raise self._shape(f"'{F_WRITE_KEY}' is neither a string nor null")
        if key:
            remember_secret(key)
        return Integration(data[F_ENABLED], key or None, _str_or_none(data.get(F_UPDATED_AT)),
                           ans.etag)

    def _shape(self, what: str) -> NetworkError:
        return NetworkError(
            f"{self.host} answered in an unexpected shape: {what}",
            hint="A vs B's API may have moved away from what avsb assumes: run avsb doctor",
        )


# Statuses the client interprets itself; segment.request retries 408, 5xx and cuts.
_OWN_STATUSES = frozenset(range(300, 500)) - {408}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _rate_limit_wait(headers: Any) -> float | None:
    raw = headers.get("Retry-After")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return None
