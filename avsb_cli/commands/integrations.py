"""`avsb integrations ...`: list, and the Segment integration's enable, disable,
status and validate."""

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from avsb_cli.commands.options import (
    JsonOpt,
    LocalOpt,
    NoInputOpt,
    ProjectOpt,
    QuietOpt,
    Region,
    TimeoutOpt,
    group,
    interactive,
    start,
)
from avsb_cli.commands.segment import segment_validate
from avsb_cli.errors import InputError, UsageError

app = group("Turn A vs B's integrations on and off, per project.")
segment_app = group("The Segment integration: enable, disable, status, validate.")
app.add_typer(segment_app, name="segment")


# integrations list -------------------------------------------------------------


@app.command("list")
def integrations_list(
    project: ProjectOpt = "default", json: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """List the project's integrations and their state.

    \b
    Example:
      avsb integrations list --project shop
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    doc = integration.list_integrations(project)
    if json:
        out.document(doc)
        return
    out.table(
        f"Integrations of project {project}",
        ["integration", "enabled", "mode", "region"],
        [[i["name"], i["enabled"], i["mode"], i["region"]] for i in doc["integrations"]],
    )


# integrations segment enable / disable / status / validate ----------------------


def _read_key(
    write_key: str | None, stdin: bool, key_file: Path | None, interactive: bool
) -> tuple[str | None, str]:
    """The key the user gave, normalised, and where it came from."""
    from avsb_cli import writekey

    given = [x for x in (write_key is not None, stdin, key_file is not None) if x]
    if len(given) > 1:
        raise UsageError(
            "give the key one way: --write-key, --write-key-stdin or --write-key-file"
        )
    if write_key is not None:
        return writekey.normalise(write_key, source="--write-key"), "--write-key"
    if stdin:
        if sys.stdin is None:
            raise InputError("standard input is closed; --write-key-stdin has nothing to read")
        if sys.stdin.isatty():
            raise UsageError("--write-key-stdin reads a pipe or a file, not the terminal",
                             hint="e.g. printf %s \"$KEY\" | avsb ... --write-key-stdin")
        data = sys.stdin.read(64 * 1024 + 1)
        if len(data) > 64 * 1024:
            raise InputError("standard input is far too long to be a write key")
        return writekey.normalise(data, source="standard input"), "stdin"
    if key_file is not None:
        try:
            with open(key_file, encoding="utf-8") as fh:
                data = fh.read(64 * 1024 + 1)
        except FileNotFoundError:
            raise InputError(f"key file not found: {key_file}") from None
        except IsADirectoryError:
            raise InputError(f"key file is a folder: {key_file}") from None
        except UnicodeDecodeError:
            raise InputError(f"key file is not UTF-8 text: {key_file}") from None
        except OSError as exc:
            raise InputError(f"cannot read key file {key_file}: {exc.strerror}") from None
        if len(data) > 64 * 1024:
            raise InputError(f"key file {key_file} is far too long to be a write key")
        return writekey.normalise(data, source=str(key_file)), "file"
    if interactive:
        answer = typer.prompt(
            "Segment write key (blank: auto-detect window.analytics)",
            # err=True: on stderr, so `enable --json | jq` shows it and stdout stays JSON.
            default="", show_default=False, hide_input=True, err=True,
        )
        if answer.strip():
            return writekey.normalise(answer, source="the prompt"), "prompt"
        return None, "prompt-blank"
    return None, "none"


def _render_status(out: Any, doc: dict[str, Any], title: str | None = None,
                   local: bool = False) -> None:
    key = doc["key_masked"] or "-"
    state = doc["key_state"]
    if state == "ok":
        key_text = f"{key} (from {doc['key_source']})"
    elif state == "none":
        key_text = "none (auto-detect: the snippet uses the page's window.analytics)"
    elif state == "missing":
        key_text = f"MISSING from the {doc['key_source']} (fingerprint {doc['key_fingerprint']})"
    elif state == "invalid":
        key_text = f"INVALID in {doc['key_source']}: {doc['key_problem']}"
    else:
        key_text = f"UNAVAILABLE: {doc['key_problem']}"
    if doc["key_storage"] == "file" and state == "ok":
        key_text += " [insecure storage: plain file]"
    elif doc.get("insecure_storage"):
        key_text += f" [insecure storage: {doc['insecure_storage']}]"
    if doc.get("key_changed_outside_avsb"):
        key_text += " [changed outside avsb]"
    validation = doc.get("last_validation")
    if validation:
        v_text = ("passed" if validation.get("ok") else
                  "FAILED: " + ", ".join(validation.get("failed", [])))
        v_text += f" at {validation.get('checked_at')}"
    else:
        v_text = "never"
    remote = doc.get("remote")
    if remote:
        same = ("same key as local" if remote["same_key_as_local"]
                else "NOT the local key")
        r_text = (f"{'enabled' if remote['enabled'] else 'disabled'}, {remote['mode']}, key "
                  f"{remote['key_masked'] or 'none'} ({same}), updated "
                  f"{remote['updated_at'] or '-'} [project {remote['project_id']}]")
    else:
        r_text = "not read (--local)" if local else "not logged in (run avsb login)"
    if "changed" in doc and not doc["changed"]:
        title = f"{title} (unchanged)"
    out.fields(
        title or f"Segment integration of project {doc['project']}",
        [
            ("project", doc["project"]),
            ("enabled", doc["enabled"]),
            ("mode", doc["mode"]),
            ("write key", key_text),
            ("region", doc["region"]),
            ("endpoint", f"{doc['endpoint']} ({doc['endpoint_source']})"),
            ("last validation", v_text),
            ("A vs B dashboard", r_text),
            ("config", doc["config_path"]),
        ],
    )


def _note_remote(out: Any, doc: dict[str, Any], local: bool) -> None:
    """Say once that only local state changed when not logged in."""
    if doc.get("remote") is None and not local:
        from avsb_cli.account import NOT_LOGGED_IN

        out.note(f"avsb: {NOT_LOGGED_IN}")


@segment_app.command("enable")
def segment_enable(
    write_key: Annotated[
        str | None,
        typer.Option("--write-key", metavar="KEY",
                     help="The Segment write key. Least safe: it lands in shell history and "
                          "the process list; prefer --write-key-stdin or --write-key-file."),
    ] = None,
    write_key_stdin: Annotated[
        bool, typer.Option("--write-key-stdin", help="Read the write key from standard input.")
    ] = False,
    write_key_file: Annotated[
        Path | None,
        typer.Option("--write-key-file", metavar="PATH", help="Read the write key from a file."),
    ] = None,
    auto_detect: Annotated[
        bool,
        typer.Option("--auto-detect",
                     help="Use no write key: the snippet uses the page's window.analytics. "
                          "Forgets a stored key."),
    ] = False,
    region: Annotated[
        Region | None,
        typer.Option("--region", help="Segment region of the workspace [default: us, "
                                      "or the configured one on a re-run]."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", metavar="URL",
                     help="Custom tracking domain or proxy, with or without /v1; "
                          "'default' goes back to the region's host."),
    ] = None,
    insecure_storage: Annotated[
        bool,
        typer.Option("--insecure-storage",
                     help="Keep the key in an owner-only plain file instead of the OS keyring."),
    ] = False,
    validate: Annotated[
        bool,
        typer.Option("--validate", help="Check the key with Segment first; refuse an unknown key."),
    ] = False,
    timeout: TimeoutOpt = None,
    local: LocalOpt = False,
    project: ProjectOpt = "default",
    no_input: NoInputOpt = False,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn the Segment integration on, optionally with a write key.

    Without a key option, a terminal asks for the key (blank: auto-detect
    mode) and a project with a stored key keeps it; without a terminal, a
    project with no key needs --auto-detect or a key option. Running it
    again updates the settings.

    Logged in to A vs B, the dashboard's Segment card is turned on too, with
    the same key; if A vs B refuses, nothing is stored.

    \b
    Example:
      printf %s "$SEGMENT_WRITE_KEY" |
        avsb integrations segment enable --write-key-stdin
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    if auto_detect and (write_key is not None or write_key_stdin or write_key_file):
        raise UsageError("--auto-detect and a write key option exclude each other")
    store_has_key = False
    if not (auto_detect or write_key is not None or write_key_stdin or write_key_file):
        from avsb_cli.config import ConfigStore

        seg = ConfigStore.segment_of(ConfigStore().load(), project)
        store_has_key = seg.get("key_storage", "none") != "none"
    prompt = interactive(no_input) and not auto_detect and not store_has_key
    if prompt and not insecure_storage:
        # Before anyone types a secret: is there somewhere to keep it?
        from avsb_cli import keystore
        from avsb_cli.errors import KeyringUnavailableError

        try:
            keystore.backend()
        except KeyringUnavailableError as exc:
            exc.hint = f"{exc.hint}; or --auto-detect to use no key"
            raise
    key, source = _read_key(write_key, write_key_stdin, write_key_file, prompt)
    if source == "none" and not (store_has_key or auto_detect):
        # No one to ask: a CI job that forgot its key must not pass in auto-detect mode.
        from avsb_cli.writekey import ENV_KEY

        env = f" ({ENV_KEY} is used by commands but never stored)" if os.environ.get(
            ENV_KEY) else ""
        raise UsageError(
            f"no write key given, and no terminal to ask for one{env}",
            hint="give the key with --write-key-stdin or --write-key-file, "
                 "or choose no key with --auto-detect",
        )
    if source == "--write-key":
        out.warn("--write-key leaves the key in shell history; prefer --write-key-stdin")
    doc = integration.enable(
        project, key=key, auto_detect=auto_detect or source == "prompt-blank",
        region=region.value if region else None, endpoint=endpoint,
        insecure_storage=insecure_storage, validate=validate, timeout=timeout, local=local,
    )
    _note_remote(out, doc, local)
    if json:
        out.document(doc)
        return
    if doc["mode"] == "auto-detect":
        out.note("Auto-detect mode: the snippet will use the page's window.analytics.")
    _render_status(out, doc, f"Segment enabled for project {project}", local)


@segment_app.command("disable")
def segment_disable(
    forget_key: Annotated[
        bool, typer.Option("--forget-key", help="Also delete the stored write key (and, "
                                                "logged in, clear the dashboard's).")
    ] = False,
    timeout: TimeoutOpt = None,
    local: LocalOpt = False,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn the Segment integration off. The key stays stored unless --forget-key.

    Logged in to A vs B, the dashboard's Segment card is turned off too.

    \b
    Example:
      avsb integrations segment disable --project shop \\
        --forget-key
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    doc = integration.disable(project, forget_key=forget_key, local=local, timeout=timeout)
    _note_remote(out, doc, local)
    if json:
        out.document(doc)
        return
    _render_status(out, doc, f"Segment disabled for project {project}", local)


@segment_app.command("status")
def segment_status(
    timeout: TimeoutOpt = None, local: LocalOpt = False,
    project: ProjectOpt = "default", json: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show the Segment integration: enabled, mode, key (masked), region, endpoint.

    Logged in to A vs B, also what the dashboard holds and whether its key
    is the local one.

    \b
    Example:
      avsb integrations segment status --json |
        jq .remote.enabled
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    doc = integration.status(project, local=local, timeout=timeout)
    if json:
        out.document(doc)
    else:
        _render_status(out, doc, local=local)



# The same command as `avsb segment validate`, where people look for it first.
segment_app.command("validate")(segment_validate)
