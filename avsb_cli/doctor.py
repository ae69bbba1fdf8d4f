"""`avsb doctor`: is everything avsb needs in place? One check per row.

Config readable; keyring usable; logged in and the token accepted; the live
OpenAPI document still lists the operations avsb assumes (so a moved API
shows at once); Segment's tracking API and settings CDN reachable.
"""

from __future__ import annotations

import re
from typing import Any

from avsb_cli.errors import AvsbError


def run(*, transport: Any | None = None, timeout: float | None = None) -> dict[str, Any]:
    from avsb_cli import account, avsb_api, endpoints, keystore, segment
    from avsb_cli.config import ConfigStore

    Check = segment.Check
    config = Check("config", "config file readable", None)
    keyring = Check("keyring", "OS keyring usable", None)
    login = Check("login", "logged in to A vs B, token accepted", None)
    openapi = Check("openapi", "A vs B's API lists the operations avsb uses", None)
    tracking = Check("segment_api", "Segment's tracking API reachable", None)
    cdn = Check("segment_cdn", "Segment's settings CDN reachable", None)
    checks = [config, keyring, login, openapi, tracking, cdn]

    store = ConfigStore()
    data: dict[str, Any] = {}
    try:
        data = store.load()
        account.record(data)
        config.ok, config.detail = True, str(store.path)
    except AvsbError as exc:
        config.fail(exc.message, exc.hint or "fix or move the file")

    the_login = None
    try:
        the_login = account.find_token(data)
    except AvsbError as exc:
        login.fail(exc.message, exc.hint or "run: avsb login")
    if the_login is not None and the_login.source == "env":
        keyring.detail = "skipped: the token comes from AVSB_TOKEN"
    else:
        try:
            keyring.ok, keyring.detail = True, keystore.backend_name()
        except AvsbError as exc:
            keyring.fail(exc.message, exc.hint or "")

    if the_login is not None and not the_login.token:
        login.fail("no token: not logged in",
                   f"run: avsb login (or set {account.TOKEN_ENV} in CI)")
    elif the_login is not None:
        try:
            with account.api(the_login, transport=transport, timeout=timeout) as client:
                client.projects_page(limit=1)
            login.ok = True
            login.detail = (f"{the_login.kind} token {the_login.summary()['token_masked']} "
                            f"from {the_login.source}, org {the_login.org}")
        except AvsbError as exc:
            login.fail(exc.message, exc.hint or "run: avsb login")

    api_url = the_login.api_url if the_login else avsb_api.DEFAULT_API_URL
    try:
        with avsb_api.Api(api_url, "", None, transport=transport, timeout=timeout) as client:
            doc = client.openapi()
        missing = _missing_operations(doc)
        if missing:
            openapi.fail(
                f"{api_url}{avsb_api.OPENAPI_PATH} does not list: {', '.join(missing)}",
                "A vs B's API moved away from what avsb assumes (README: Logging in to "
                "A vs B); update avsb, or report it",
            )
        else:
            openapi.ok = True
            openapi.detail = ", ".join(f"{m.upper()} {p}" for m, p, _ in avsb_api.OPERATIONS)
    except AvsbError as exc:
        openapi.fail(exc.message, exc.hint or "check --api-url / AVSB_API_URL and the network")

    policy = segment.Policy.from_env(timeout)
    policy.attempts = 1
    with segment.build_client(transport, policy=policy) as client:
        for check, url, fix in (
            (tracking, endpoints.tracking_base({}) + "/v1/batch",
             "check the network, a proxy (HTTPS_PROXY), or AVSB_SEGMENT_ENDPOINT"),
            (cdn, endpoints.cdn_base() + "/v1/projects/avsb-doctor/settings",
             "check the network, a proxy (HTTPS_PROXY), or AVSB_SEGMENT_CDN_URL"),
        ):
            try:
                # Any HTTP answer proves the host is reachable (no key is sent).
                d = segment.request(client, "GET", url, policy=policy,
                                    ok_statuses=frozenset(range(300, 500)))
                check.ok, check.detail = True, f"{segment._host(url)}: HTTP {d.status}"
            except AvsbError as exc:
                check.fail(exc.message, exc.hint or fix)
    rows = [c.to_dict() for c in checks]
    return {"ok": all(r["status"] != "fail" for r in rows), "checks": rows}


def _shape(path: str) -> str:
    """A path with its parameters unnamed: {orgId} and {org_id} are the same."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/"))


def _missing_operations(doc: dict[str, Any]) -> list[str]:
    from avsb_cli.avsb_api import OPERATIONS

    paths = {_shape(p): ops for p, ops in doc["paths"].items() if isinstance(ops, dict)}
    missing = []
    for method, path, _scope in OPERATIONS:
        ops = paths.get(_shape(path), {})
        if method not in {k.lower() for k in ops}:
            missing.append(f"{method.upper()} {path}")
    return missing
