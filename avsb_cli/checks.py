"""Checking the key and the pipe: the use cases that send to Segment.

``usable_key`` (the key a sending command must have), ``validate`` and
``validate_key`` (the checks of ``avsb segment validate``, also run by
``enable --validate``), and ``send_test_event``. Like integration.py, these
return the documented JSON dicts and print nothing.
"""

from __future__ import annotations

from typing import Any

from avsb_cli import account, endpoints, writekey
from avsb_cli import config as config_mod
from avsb_cli.config import ConfigStore
from avsb_cli.errors import (
    AuthError,
    AvsbError,
    NotConfiguredError,
    ValidationFailedError,
)


def usable_key(project: str, *, store: ConfigStore | None = None, keystore: Any | None = None):
    """The segment config and the key for a command that must send something."""
    store = store or ConfigStore()
    seg = ConfigStore.segment_of(store.load(), project)
    if seg and not seg.get("enabled", False):
        raise NotConfiguredError(
            f"the Segment integration is disabled for project {project!r}",
            hint=f"run: avsb integrations segment enable --project {project}",
        )
    resolved = writekey.resolve(project, seg, keystore=keystore)
    if resolved.key:
        return seg, resolved
    if resolved.problem:
        raise resolved.problem
    if not seg:
        raise NotConfiguredError(
            f"the Segment integration is not enabled for project {project!r}",
            hint=f"run: avsb integrations segment enable --project {project}, "
            f"or set {writekey.ENV_KEY}",
        )
    if resolved.state == "missing":
        raise NotConfiguredError(
            f"the write key of project {project!r} is missing from the {resolved.source}",
            hint="store it again: avsb integrations segment enable --write-key-stdin",
        )
    raise NotConfiguredError(
        f"project {project!r} is in auto-detect mode and has no write key to send with",
        hint=f"store one with: avsb integrations segment enable --write-key-stdin, "
        f"or set {writekey.ENV_KEY}",
    )


def checks_error(checks: list[dict[str, Any]], prefix: str) -> AvsbError | None:
    """The error (exit 5) naming the first failed check, or None if none failed."""
    failed = [c for c in checks if c["status"] == "fail"]
    if not failed:
        return None
    first = failed[0]
    more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
    return ValidationFailedError(f"{prefix}: {first['title']}: {first['detail']}{more}",
                                 hint=first["fix"] or None)


def validate_error(doc: dict[str, Any]) -> AvsbError | None:
    """The error a failed validation exits with. No key to check is
    NOT_CONFIGURED (3), as for test-event; any other failed check is
    VALIDATION_FAILED (5)."""
    err = checks_error(doc["checks"], "validation failed")
    if err and doc["key_state"] in ("none", "missing"):
        return NotConfiguredError(err.message, hint=err.hint)
    return err


def validation_record(checks: list[dict[str, Any]], key: str | None,
                      checked_at: str | None = None) -> dict[str, Any]:
    """What config keeps of a validation (shown by status as last_validation)."""
    return {
        "ok": all(c["status"] != "fail" for c in checks),
        "checked_at": checked_at or config_mod.now(),
        "failed": [c["name"] for c in checks if c["status"] == "fail"],
        "key_fingerprint": writekey.fingerprint(key) if key else "",
    }


def validate_key(
    key: str | None,
    *,
    region: str,
    tracking: str,
    key_problem: str | AvsbError | None = None,
    send_event: dict[str, Any] | None = None,
    transport: Any | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    from avsb_cli import segment

    policy = segment.Policy.from_env(timeout)
    with segment.build_client(transport, policy=policy) as client:
        checks = segment.run_checks(
            client,
            key=key,
            key_problem=key_problem,
            region=region,
            tracking=tracking,
            cdn=endpoints.cdn_base(),
            policy=policy,
            send_event=send_event,
        )
    return [c.to_dict() for c in checks]


def validate(
    project: str,
    *,
    region: str | None = None,
    send_event: dict[str, Any] | None = None,
    store: ConfigStore | None = None,
    keystore: Any | None = None,
    transport: Any | None = None,
    timeout: float | None = None,
    from_dashboard: bool = False,
    local: bool = True,
    api_transport: Any | None = None,
) -> dict[str, Any]:
    """Check the key commands use; with ``from_dashboard`` (or no local key and
    a login, unless ``local``) the key the dashboard holds for the project."""
    store = store or ConfigStore()
    data = store.load()
    seg = ConfigStore.segment_of(data, project)
    key: str | None = None
    problem: str | AvsbError | None = None
    try:
        resolved = writekey.resolve(project, seg, keystore=keystore)
    except AvsbError as exc:  # an unreadable key store (a corrupt secrets.toml)
        resolved, problem = None, exc
    dashboard = _dashboard(
        data, project, from_dashboard,
        wanted=not local and resolved is not None and resolved.source == "none",
        transport=api_transport, timeout=timeout,
    )
    if dashboard is not None:
        resolved = writekey.ResolvedKey(dashboard.write_key, "dashboard",
                                        "ok" if dashboard.write_key else "none")
        key = dashboard.write_key
        problem = None if key else (
            "the dashboard has no write key for this project (auto-detect mode)")
    elif resolved is not None:
        key = resolved.key
        if resolved.problem:
            problem = resolved.problem
        elif resolved.state == "missing":
            problem = f"the write key is missing from the {resolved.source}"
        elif not key:
            problem = "no write key: the project is in auto-detect mode or not enabled"
    the_region = endpoints.check_region(region) if region else seg.get("region", "us")
    # --region means "as if configured for that region": its host, unless a
    # custom endpoint (a proxy forwarding to that region) is configured.
    tracking = endpoints.tracking_base({**seg, "region": the_region})
    checks = validate_key(
        key,
        region=the_region,
        tracking=tracking,
        key_problem=problem,
        send_event=send_event,
        transport=transport,
        timeout=timeout,
    )
    record = validation_record(checks, key)
    doc = {
        "project": project,
        "ok": record["ok"],
        "key_masked": writekey.mask(key) or None,
        "key_source": resolved.source if resolved else "env",
        "key_state": resolved.state if resolved else "unavailable",
        "region": the_region,
        "endpoint": tracking,
        "delivery_probe": "event" if send_event is not None else "empty batch",
        "checks": checks,
        "checked_at": record["checked_at"],
    }
    if send_event is not None:
        doc["message_id"] = send_event["messageId"]
        doc["anonymous_id"] = send_event.get("anonymousId")
    # Config keeps the outcome for the project's own key: a CI run checking
    # some other key from AVSB_SEGMENT_WRITE_KEY must not overwrite it.
    foreign = bool(
        resolved is None
        or (resolved.source in ("env", "dashboard") and key
            and writekey.fingerprint(key) != seg.get("key_fingerprint"))
    )
    if seg and not foreign:

        def change(data: dict[str, Any]) -> None:
            target = ConfigStore.segment_for_update(data, project)
            target["validation"] = record

        try:
            store.update(change)
            doc["recorded"] = True
        except AvsbError as exc:
            doc["recorded"] = False
            doc["record_problem"] = exc.message
    else:
        doc["recorded"] = False
    return doc


def _dashboard(data: dict[str, Any], project: str, required: bool, *, wanted: bool,
               transport: Any | None, timeout: float | None) -> Any:
    """The dashboard's Segment integration for --from-dashboard (``required``:
    an error without a login), or when ``wanted`` and logged in; else None."""
    if not (required or wanted):
        return None
    with account.remote_project(data, project, transport=transport,
                                timeout=timeout) as remote:
        if remote is None:
            if required:
                raise AuthError("--from-dashboard needs a login to A vs B",
                                hint="run: avsb login (or set AVSB_TOKEN)")
            return None
        return remote.api.get_segment(remote.id)


def send_test_event(
    project: str,
    *,
    fields: dict[str, str],
    user_id: str | None,
    anonymous_id: str | None,
    dry_run: bool = False,
    store: ConfigStore | None = None,
    keystore: Any | None = None,
    transport: Any | None = None,
    timeout: float | None = None,
    from_dashboard: bool = False,
    local: bool = True,
    api_transport: Any | None = None,
) -> dict[str, Any]:
    from avsb_cli import segment

    generated = False
    if not user_id and not anonymous_id:
        import uuid

        anonymous_id, generated = f"avsb-test-{uuid.uuid4()}", True
    msg = segment.experiment_event(user_id=user_id, anonymous_id=anonymous_id, **fields)
    msg["sentAt"] = segment.now_iso()
    segment.encode(msg)  # size check before any key lookup
    if dry_run:
        store = store or ConfigStore()
        seg = ConfigStore.segment_of(store.load(), project)
        return {
            "project": project,
            "dry_run": True,
            "message_id": msg["messageId"],
            "user_id": msg.get("userId"),
            "anonymous_id": msg.get("anonymousId"),
            "anonymous_id_generated": generated,
            "endpoint": f"{endpoints.tracking_base(seg)}/v1/track",
            "payload": msg,
        }
    store = store or ConfigStore()
    data = store.load()
    seg = ConfigStore.segment_of(data, project)
    local_key = writekey.resolve(project, seg, keystore=keystore) if not from_dashboard else None
    dashboard = _dashboard(
        data, project, from_dashboard,
        wanted=not local and local_key is not None and local_key.source == "none",
        transport=api_transport, timeout=timeout,
    )
    if dashboard is not None and dashboard.write_key:
        resolved = writekey.ResolvedKey(dashboard.write_key, "dashboard", "ok")
    elif from_dashboard:
        raise NotConfiguredError(
            f"the dashboard has no write key for project {project!r} (auto-detect mode)",
            hint="store one: avsb integrations segment enable --write-key-stdin",
        )
    else:
        seg, resolved = usable_key(project, store=store, keystore=keystore)
    base = endpoints.tracking_base(seg)
    policy = segment.Policy.from_env(timeout)
    with segment.build_client(transport, policy=policy) as client:
        delivery = segment.send_track(client, base, resolved.key, msg, policy)
    return {
        "project": project,
        "dry_run": False,
        "message_id": msg["messageId"],
        "user_id": msg.get("userId"),
        "anonymous_id": msg.get("anonymousId"),
        "anonymous_id_generated": generated,
        "endpoint": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "retry_causes": delivery.causes,
        "latency_ms": delivery.latency_ms,
        "key_masked": resolved.masked,
        "key_source": resolved.source,
    }
