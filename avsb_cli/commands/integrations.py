"""`avsb integrations ...`: list, and the Segment integration's enable, disable,
status and validate."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from avsb_cli.commands.options import (
    JsonOpt,
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

    Example: avsb integrations list --project shop
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


def _render_status(out: Any, doc: dict[str, Any], title: str | None = None) -> None:
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
            ("config", doc["config_path"]),
        ],
    )


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
        typer.Option("--region", help="Segment region of the workspace [default: us]."),
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
    project: ProjectOpt = "default",
    no_input: NoInputOpt = False,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn the Segment integration on, optionally with a write key.

    Without a key option, a terminal asks for the key (blank: auto-detect
    mode); without a terminal, a new project gets auto-detect mode and a
    configured one keeps its key. Running it again updates the settings.

    Example: printf %s "$SEGMENT_WRITE_KEY" | avsb integrations segment enable --write-key-stdin
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
    if source == "--write-key":
        out.warn("--write-key leaves the key in shell history; prefer --write-key-stdin")
    doc = integration.enable(
        project, key=key, auto_detect=auto_detect or source == "prompt-blank",
        region=region.value if region else None, endpoint=endpoint,
        insecure_storage=insecure_storage, validate=validate, timeout=timeout,
    )
    if json:
        out.document(doc)
        return
    if doc["mode"] == "auto-detect":
        reason = "no terminal to ask for a key; " if source == "none" and not auto_detect else ""
        out.note(f"Auto-detect mode: {reason}the snippet will use the page's window.analytics.")
    _render_status(out, doc, f"Segment enabled for project {project}")


@segment_app.command("disable")
def segment_disable(
    forget_key: Annotated[
        bool, typer.Option("--forget-key", help="Also delete the stored write key.")
    ] = False,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn the Segment integration off. The key stays stored unless --forget-key.

    Example: avsb integrations segment disable --project shop --forget-key
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    doc = integration.disable(project, forget_key=forget_key)
    if json:
        out.document(doc)
        return
    _render_status(out, doc, f"Segment disabled for project {project}")


@segment_app.command("status")
def segment_status(
    project: ProjectOpt = "default", json: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show the Segment integration: enabled, mode, key (masked), region, endpoint.

    Example: avsb integrations segment status --json | jq .enabled
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    doc = integration.status(project)
    if json:
        out.document(doc)
    else:
        _render_status(out, doc)



# The same command as `avsb segment validate`, where people look for it first.
segment_app.command("validate")(segment_validate)
