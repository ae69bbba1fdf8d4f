"""What enable, disable and status do, as plain functions that return dicts.

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
from avsb_cli.checks import checks_error, validate_key, validation_record
from avsb_cli.config import ConfigStore
from avsb_cli.errors import (
    AvsbError,
    ConflictError,
    UsageError,
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
