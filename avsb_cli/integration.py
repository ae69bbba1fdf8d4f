"""What the commands do, as plain functions that take arguments and return dicts.

The CLI layer parses options, calls one of these, renders the result and
exits. Nothing here prints. The dicts returned are the documented JSON output.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from avsb_cli import account, endpoints, writekey
from avsb_cli import config as config_mod
from avsb_cli.config import ConfigStore
from avsb_cli.errors import (
    AuthError,
    AvsbError,
    ConflictError,
    NotConfiguredError,
    UsageError,
    ValidationFailedError,
)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so key and config change together."""
    try:
        previous = signal.getsignal(signal.SIGINT)
        hit: list[int] = []
        signal.signal(signal.SIGINT, lambda *_: hit.append(1))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if hit:
            raise KeyboardInterrupt


# Status ------------------------------------------------------------------------


def status(
    project: str, *, store: ConfigStore | None = None, keystore: Any | None = None,
    local: bool = True, transport: Any | None = None, timeout: float | None = None,
) -> dict[str, Any]:
    """The local state, and with a login (unless ``local``) what the dashboard holds."""
    store = store or ConfigStore()
    data = store.load()
    seg = ConfigStore.segment_of(data, project)
    resolved = writekey.resolve(project, seg, keystore=keystore)
    key_fp = writekey.fingerprint(resolved.key) if resolved.key else None
    stored_fp = seg.get("key_fingerprint")
    validation = seg.get("validation") if isinstance(seg.get("validation"), dict) else None
    doc: dict[str, Any] = {
        "project": project,
        "integration": "segment",
        "configured": bool(seg),
        "enabled": bool(seg.get("enabled", False)),
        "mode": seg.get("mode", "auto-detect"),
        "key_state": resolved.state,
        "key_source": resolved.source,
        "key_storage": seg.get("key_storage", "none"),
        "key_masked": resolved.masked or None,
        "key_fingerprint": key_fp or stored_fp,
        "key_changed_outside_avsb": bool(
            resolved.source in ("keyring", "file") and key_fp and stored_fp and key_fp != stored_fp
        ),
        "key_problem": resolved.problem.message if resolved.problem else None,
        # Where the key really is: a plaintext "keyring" is a file like --insecure-storage.
        "insecure_storage": _insecure_storage(seg.get("key_storage", "none"), keystore),
        "region": seg.get("region", endpoints.DEFAULT_REGION),
        "endpoint": _safe_tracking(seg),
        "endpoint_source": endpoints.endpoint_source(seg),
        "last_validation": validation,
        "enabled_at": seg.get("enabled_at"),
        "updated_at": seg.get("updated_at"),
        "config_path": str(store.path),
        "remote": None,
    }
    if not local:
        with account.remote_project(data, project, transport=transport,
                                    timeout=timeout) as remote:
            if remote is not None:
                state = remote.api.get_segment(remote.id)
                doc["remote"] = remote_doc(remote.id, state, doc["key_fingerprint"])
                if remote.resolved_now:
                    with contextlib.suppress(AvsbError):  # a read-only command still works
                        store.update(lambda d: account.remember_id(d, project, remote.id))
    return doc


def remote_doc(project_id: str, state: Any, local_fp: str | None) -> dict[str, Any]:
    """What status shows of the dashboard's state (``remote`` in JSON)."""
    doc = {"project_id": project_id, **state.to_dict()}
    doc["same_key_as_local"] = doc["key_fingerprint"] == local_fp
    return doc


def _insecure_storage(storage: str, keystore: Any) -> str | None:
    """Why the stored key is not safely kept (None: in a real keyring, or none)."""
    if storage == "file":
        return "plain file (--insecure-storage)"
    if storage != "keyring":
        return None
    if keystore is None:
        from avsb_cli import keystore as keystore_mod

        return keystore_mod.loaded_backend_insecurity()
    check = getattr(keystore, "loaded_backend_insecurity", None)
    return check() if check else None


def _safe_tracking(seg: dict[str, Any]) -> str:
    try:
        return endpoints.tracking_base(seg)
    except AvsbError as exc:
        return f"(invalid: {exc.message})"


def list_integrations(project: str, *, store: ConfigStore | None = None) -> dict[str, Any]:
    store = store or ConfigStore()
    seg = ConfigStore.segment_of(store.load(), project)
    return {
        "project": project,
        "integrations": [
            {
                "name": "segment",
                "enabled": bool(seg.get("enabled", False)),
                "mode": seg.get("mode", "auto-detect") if seg else None,
                "region": seg.get("region", endpoints.DEFAULT_REGION) if seg else None,
            }
        ],
    }


# Enable / disable ---------------------------------------------------------------


def enable(
    project: str,
    *,
    key: str | None,
    auto_detect: bool = False,
    region: str | None = None,
    endpoint: str | None = None,
    insecure_storage: bool = False,
    validate: bool = False,
    store: ConfigStore | None = None,
    keystore: Any | None = None,
    transport: Any | None = None,
    timeout: float | None = None,
    local: bool = True,
    api_transport: Any | None = None,
) -> dict[str, Any]:
    """Turn Segment on for ``project``; store ``key`` if given.

    Without a key the stored key (if any) is kept; ``auto_detect`` forgets it.
    Unless ``local``, and when logged in, the dashboard's integration is
    turned on too, with the same key. Nothing is stored unless everything
    succeeds: the local store is written first and put back if A vs B
    refuses or cannot be reached.
    """
    store = store or ConfigStore()
    if keystore is None:
        from avsb_cli import keystore as keystore_mod

        keystore = keystore_mod
    data = store.load()
    current = ConfigStore.segment_of(data, project)  # a corrupt file stops us here
    new_region = endpoints.check_region(region) if region else current.get("region", "us")
    new_endpoint = (
        endpoints.normalise_url(endpoint) if endpoint else current.get("endpoint", "")
    )
    if endpoint is not None and endpoint.strip() in ("", "default"):
        new_endpoint = ""

    record: dict[str, Any] | None = None
    if validate:
        # Check before anything is stored. Without a new key, check the key
        # that commands would use now; auto-detect mode has none to check.
        checked = key
        if checked is None and not auto_detect:
            resolved = writekey.resolve(project, current, keystore=keystore)
            if resolved.problem:
                raise resolved.problem
            checked = resolved.key
        if checked is None:
            raise UsageError(
                "--validate needs a write key to check, and there is none",
                hint="give one with --write-key-stdin or --write-key-file",
            )
        checks = validate_key(
            checked, region=new_region, tracking=endpoints.tracking_base(
                {"region": new_region, "endpoint": new_endpoint}
            ), transport=transport, timeout=timeout,
        )
        err = checks_error(checks, "key not stored" if key else "nothing changed")
        if err:
            raise err
        record = validation_record(checks, checked)

    storage = old_storage = current.get("key_storage", "none")
    new_storage = ("file" if insecure_storage else "keyring") if key else (
        "none" if auto_detect else storage)
    local_changed = bool(
        not current.get("enabled")
        or new_storage != storage
        or (key and (writekey.fingerprint(key) != current.get("key_fingerprint")
                     or _stored_key(project, new_storage, keystore) != key))
        or new_region != current.get("region", "us")
        or new_endpoint != current.get("endpoint", "")
        or record is not None
    )
    with account.remote_project(data, project, local=local, transport=api_transport,
                                timeout=timeout) as remote:
        state = remote_key = None
        if remote is not None:
            state = remote.api.get_segment(remote.id)
            if key or auto_detect:
                remote_key = key
            else:  # the stored key, else whatever the dashboard has now
                remote_key = _stored_key(project, storage, keystore) or state.write_key
        before = _project_table(data, project)
        # Under the config lock: concurrent enables of one project take turns,
        # so none reads back another's key and takes it for a broken keyring.
        with deferred_interrupt(), store.lock():
            undo = None
            if key and local_changed:
                undo = _store_key(project, key, insecure_storage, keystore)
                storage = new_storage
            elif auto_detect and storage != "none":
                undo = _forget_key_undoable(project, storage, keystore)[1]
                storage = "none"

            def change(data: dict[str, Any]) -> None:
                if remote is not None:
                    account.remember_id(data, project, remote.id)
                if not local_changed:
                    return
                seg = ConfigStore.segment_for_update(data, project)
                stamp = config_mod.now()
                if not seg.get("enabled"):
                    seg["enabled_at"] = stamp
                seg["enabled"] = True
                seg["mode"] = "write-key" if storage != "none" else "auto-detect"
                seg["key_storage"] = storage
                if key:
                    seg["key_fingerprint"] = writekey.fingerprint(key)
                    seg.pop("validation", None)
                elif storage == "none":
                    seg.pop("key_fingerprint", None)
                    seg.pop("validation", None)
                if record is not None:
                    seg["validation"] = record
                seg["region"] = new_region
                seg["endpoint"] = new_endpoint
                seg["updated_at"] = stamp

            if local_changed or (remote is not None and remote.resolved_now):
                _update_or_undo(store, change, undo)
        remote_changed = False
        if remote is not None:
            state, remote_changed = _write_remote(
                remote, state, True, remote_key, lambda: _undo_local(store, project, before, undo)
            )
        if key and old_storage not in ("none", storage):
            # The key moved between keyring and file: the old copy would
            # outlive --forget-key. Best effort: the keyring may be why it moved.
            with contextlib.suppress(AvsbError):
                _forget_key(project, old_storage, keystore)
    doc = status(project, store=store, keystore=keystore)
    if remote is not None:
        doc["remote"] = remote_doc(remote.id, state, doc["key_fingerprint"])
    doc["changed"] = local_changed or remote_changed
    return doc


def _project_table(data: dict[str, Any], project: str) -> Any:
    import copy

    projects = data.get("projects")
    return copy.deepcopy(projects.get(project)) if isinstance(projects, dict) else None


def _undo_local(store: ConfigStore, project: str, before: Any, undo_key: Any) -> None:
    """Put config's project table and the key store back as they were (A vs B
    refused the change that was stored first). Best effort: an error is on its way."""

    def restore(data: dict[str, Any]) -> None:
        projects = data.get("projects")
        if not isinstance(projects, dict):
            return
        if before is None:
            projects.pop(project, None)
            if not projects:
                data.pop("projects")
        else:
            projects[project] = before

    with deferred_interrupt():
        with contextlib.suppress(AvsbError):
            store.update(restore)
        if undo_key:
            undo_key()


def _write_remote(remote: Any, state: Any, enabled: bool, write_key: str | None,
                  undo: Any) -> tuple[Any, bool]:
    """PUT the dashboard's state unless it already is what is asked; returns the
    state and whether it changed. On any failure ``undo`` runs first."""
    if state.matches(enabled, write_key):
        return state, False
    import uuid

    from avsb_cli.avsb_api import PreconditionFailed

    try:
        try:
            # One key for this change: every retry of it resends it with the same body.
            return remote.api.put_segment(remote.id, enabled=enabled, write_key=write_key,
                                          etag=state.etag,
                                          idempotency_key=str(uuid.uuid4())), True
        except PreconditionFailed:
            again = remote.api.get_segment(remote.id)
            if again.matches(enabled, write_key):
                return again, False
            now = again.to_dict()
            raise ConflictError(
                "the dashboard changed while avsb was writing; it now holds: "
                f"enabled {'yes' if now['enabled'] else 'no'}, mode {now['mode']}"
                + (f", key {now['key_masked']}" if now["key_masked"] else "")
                + (f", updated {now['updated_at']}" if now["updated_at"] else "")
                + "; nothing was changed",
                hint="look at it (avsb integrations segment status), then run the command again",
            ) from None
    except BaseException:
        undo()
        raise


def _update_or_undo(store: ConfigStore, change: Any, undo: Any) -> None:
    """Write the config; if that fails, put the key store back as it was."""
    try:
        store.update(change)
    except BaseException:
        if undo:
            undo()
        raise


def _stored_key(project: str, storage: str, keystore: Any) -> str | None:
    from avsb_cli.keystore import FileKeyStore

    if storage == "file":
        return FileKeyStore().get(project)
    if storage == "keyring":
        return keystore.get_key(project)
    return None


def _restorer(project: str, storage: str, old: str | None, keystore: Any) -> Any:
    """A function that puts ``old`` back in ``storage`` (or removes the key if
    there was none), best effort: it runs while another error is on its way."""
    from avsb_cli.keystore import FileKeyStore

    def undo() -> None:
        with contextlib.suppress(AvsbError):
            if not old:
                _forget_key(project, storage, keystore)
            elif storage == "file":
                FileKeyStore().set(project, old)
            else:
                keystore.set_key(project, old)

    return undo


def _store_key(project: str, key: str, insecure: bool, keystore: Any) -> Any:
    """Store ``key``; return a function that puts back what was there before."""
    from avsb_cli.keystore import FileKeyStore

    storage = "file" if insecure else "keyring"
    old = _stored_key(project, storage, keystore)
    if insecure:
        FileKeyStore().set(project, key)
    else:
        keystore.set_key(project, key)
    return _restorer(project, storage, old, keystore)


def _forget_key(project: str, storage: str, keystore: Any) -> bool:
    from avsb_cli.keystore import FileKeyStore

    if storage == "file":
        return FileKeyStore().delete(project)
    if storage == "keyring":
        return keystore.delete_key(project)
    return False


def _forget_key_undoable(project: str, storage: str, keystore: Any) -> tuple[bool, Any]:
    """Delete the key; also return a function that puts it back, for when the
    config write that must follow fails (else the key is gone, config says keyring)."""
    old = _stored_key(project, storage, keystore)
    deleted = _forget_key(project, storage, keystore)
    return deleted, _restorer(project, storage, old, keystore) if old else None


def disable(
    project: str,
    *,
    forget_key: bool = False,
    store: ConfigStore | None = None,
    keystore: Any | None = None,
    local: bool = True,
    api_transport: Any | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Turn Segment off; with a login (unless ``local``) on the dashboard too,
    which keeps its key unless ``forget_key``. All or nothing, as enable."""
    store = store or ConfigStore()
    if keystore is None:
        from avsb_cli import keystore as keystore_mod

        keystore = keystore_mod
    data = store.load()
    current = ConfigStore.segment_of(data, project)
    forgot, undo = False, None
    with account.remote_project(data, project, local=local, transport=api_transport,
                                timeout=timeout) as remote:
        state = None
        if remote is not None:
            state = remote.api.get_segment(remote.id)
        before = _project_table(data, project)
        # Under the config lock: concurrent enables of one project take turns,
        # so none reads back another's key and takes it for a broken keyring.
        with deferred_interrupt(), store.lock():
            if forget_key:
                forgot, undo = _forget_key_undoable(
                    project, current.get("key_storage", "none"), keystore
                )
            local_changed = bool(current.get("enabled") or forgot or (
                forget_key and current.get("key_storage", "none") != "none"))
            if current or (remote is not None and remote.resolved_now):

                def change(data: dict[str, Any]) -> None:
                    if remote is not None:
                        account.remember_id(data, project, remote.id)
                    if not current:
                        return
                    seg = ConfigStore.segment_for_update(data, project)
                    stamp = config_mod.now()
                    if seg.get("enabled"):
                        seg["disabled_at"] = stamp
                    seg["enabled"] = False
                    if forget_key:
                        seg["key_storage"] = "none"
                        seg["mode"] = "auto-detect"
                        seg.pop("key_fingerprint", None)
                        seg.pop("validation", None)
                    if local_changed:
                        seg["updated_at"] = stamp

                _update_or_undo(store, change, undo)
        remote_changed = False
        if remote is not None:
            state, remote_changed = _write_remote(
                remote, state, False, None if forget_key else state.write_key,
                lambda: _undo_local(store, project, before, undo),
            )
    doc = status(project, store=store, keystore=keystore)
    if remote is not None:
        doc["remote"] = remote_doc(remote.id, state, doc["key_fingerprint"])
    doc["key_forgotten"] = forgot
    doc["changed"] = local_changed or remote_changed
    return doc


# Talking to Segment ---------------------------------------------------------------


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
