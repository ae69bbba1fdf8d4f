"""The command line: parse, call a library function, render, exit.

Heavy modules (httpx, keyring, Rich) are imported inside the commands that
need them: every Tab of a shell completion re-runs this program, so the
import path to the completion machinery stays as light as typer itself.

No ``from __future__ import annotations`` here: typer would turn every
string annotation back into an object with eval and compile on each start
(about 150 compiles, most of the start-up time measured in bench/).
"""

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from avsb_cli import __version__
from avsb_cli.completion import COMPLETE_VAR, PROG
from avsb_cli.errors import AvsbError, ExitCode, InputError, Interrupted, UsageError


class Region(str, Enum):
    us = "us"
    eu = "eu"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"


def complete_project(incomplete: str) -> list[str]:
    """Project names from the config file, for --project completion."""
    try:
        from avsb_cli.config import config_path, read_toml

        # read_toml, not ConfigStore.load: a Tab must not print the permissions warning.
        projects = read_toml(config_path()).get("projects")
        names = sorted(projects) if isinstance(projects, dict) else []
        return [p for p in names if p.startswith(incomplete)]
    except Exception:  # a completion must never print a traceback
        return []


# Options shared by the commands ------------------------------------------------
ProjectOpt = Annotated[
    str,
    typer.Option(
        "--project", "-p", envvar="AVSB_PROJECT", autocompletion=complete_project,
        help="A vs B project.", show_default=True,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, errors included.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
NoInputOpt = Annotated[
    bool,
    typer.Option("--no-input", envvar="AVSB_NO_INPUT", help="Never prompt, even on a terminal."),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout", metavar="SECONDS",
        help="Total time for all attempts, retries included [default: 20; env AVSB_TIMEOUT].",
    ),
]


def _start(project: str, json_mode: bool, quiet: bool) -> Any:
    from avsb_cli import render
    from avsb_cli.config import check_project

    out = render.use(json_mode=json_mode, quiet=quiet)
    check_project(project)
    return out


def _raise_after_document(err: AvsbError, quiet: bool) -> None:
    """Fail with ``err`` once the command's own document or table is out: the
    error is the one-line stderr summary, and --json gets no second document."""
    from avsb_cli import render

    render.use(json_mode=False, quiet=quiet)
    raise err


def _interactive(no_input: bool) -> bool:
    return not no_input and sys.stdin.isatty() and sys.stderr.isatty()


# The app --------------------------------------------------------------------------


class AvsbGroup(TyperGroup):
    """The root group: catches AvsbError once, and makes usage errors one line."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_GROUPS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            from typer.main import get_command as build

            group = build(LAZY_GROUPS[cmd_name])
            group.name = cmd_name
            self.add_command(group, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        code = run_guarded(
            lambda: super(AvsbGroup, self).main(
                args=argv, prog_name=prog_name or PROG, complete_var=complete_var or COMPLETE_VAR,
                standalone_mode=False, **extra,
            ),
            argv,
        )
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # typer turns Ctrl-C into a silent exit 130; we say so, in JSON too.
            raise Interrupted("interrupted") from None

    def _main_shell_completion(self, ctx_args: Any, prog_name: str,
                               complete_var: str | None = None) -> None:
        # A Tab: answer with our light completion classes, then exit.
        var = complete_var or COMPLETE_VAR
        instruction = os.environ.get(var)
        if instruction:
            from avsb_cli.completion import complete

            sys.exit(complete(self, ctx_args, prog_name, var, instruction))


def run_guarded(call: Any, argv: list[str]) -> int:
    from typer import exceptions as typer_exc
    from typer._click import exceptions as click_exc

    try:
        try:
            rv = call()
            return rv if isinstance(rv, int) else 0
        except (Exception, KeyboardInterrupt):
            # Imported only on the way out of a failure: --version, --help
            # and a Tab never pay for render's imports (bench/).
            from avsb_cli import render
            raise
    except AvsbError as err:
        render.current().error(err)
        return int(err.exit_code)
    except click_exc.NoArgsIsHelpError as err:
        # `avsb` or `avsb integrations` alone: show the help, not a one-line error.
        sys.stdout.write(err.format_message() + "\n")
        return int(ExitCode.USAGE)
    except click_exc.UsageError as err:
        # Raised before a command ran, so look at argv for --json ourselves.
        out = render.Output(json_mode="--json" in argv)
        where = err.ctx.command_path if err.ctx else PROG
        _mask_key_like(argv)
        out.error(UsageError(err.format_message(), hint=f"see '{where} --help'"))
        return int(ExitCode.USAGE)
    except typer_exc.Abort:  # Ctrl-C or EOF at a prompt (typer's, not in _click)
        sys.stderr.write("\n")
        render.current().error(Interrupted("interrupted"))
        return int(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        render.current().error(Interrupted("interrupted"))
        return int(ExitCode.INTERRUPTED)
    except click_exc.ClickException as err:
        render.current().error(UsageError(err.format_message()))
        return int(err.exit_code)
    except BrokenPipeError:
        # Reader went away (`avsb ... | head`); nothing more to say.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return int(ExitCode.ERROR)
    except Exception as exc:
        if os.environ.get("AVSB_DEBUG"):
            raise
        render.current().error(
            AvsbError(
                f"internal error: {type(exc).__name__}: {exc}",
                hint="please report it; set AVSB_DEBUG=1 to see the traceback",
            )
        )
        return int(ExitCode.ERROR)


def _mask_key_like(argv: list[str]) -> None:
    """Mask key-shaped words in a usage error: `--write-key-stdin KEY` echoes KEY."""
    import re

    from avsb_cli.writekey import remember_secret

    for word in argv:
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        if (len(value) >= 16 and re.fullmatch(r"[A-Za-z0-9_.~+-]+", value)
                and re.search(r"\d", value) and re.search(r"[A-Za-z]", value)):
            remember_secret(value)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name=PROG,
    cls=AvsbGroup,
    # No help= here: the root callback's docstring (with its example) is the help.
    epilog="Docs: https://app.avsb.cloud/docs/integrations/segment",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
integrations_app = typer.Typer(
    help="Turn A vs B's integrations on and off, per project.", no_args_is_help=True,
    rich_markup_mode=None, add_completion=False,
)
integration_segment_app = typer.Typer(
    help="The Segment integration: enable, disable, status, validate.", no_args_is_help=True,
    rich_markup_mode=None, add_completion=False,
)
segment_app = typer.Typer(
    help="Talk to Segment: send test events, validate the key, backfill.", no_args_is_help=True,
    rich_markup_mode=None, add_completion=False,
)
integrations_app.add_typer(integration_segment_app, name="segment")
# The root's sub-groups are built when first named (AvsbGroup.get_command), not
# on every start: typer turns each command's signature into click parameters,
# about 10 ms for all of them, and --version or a Tab needs one branch at most.
LAZY_GROUPS = {"integrations": integrations_app, "segment": segment_app}


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """The command line for A vs B's integrations, starting with Segment.

    Example: avsb integrations segment enable --write-key-stdin < key.txt
    """


# integrations list -------------------------------------------------------------


@integrations_app.command("list")
def integrations_list(
    project: ProjectOpt = "default", json: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """List the project's integrations and their state.

    Example: avsb integrations list --project shop
    """
    from avsb_cli import integration

    out = _start(project, json, quiet)
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


@integration_segment_app.command("enable")
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

    out = _start(project, json, quiet)
    if auto_detect and (write_key is not None or write_key_stdin or write_key_file):
        raise UsageError("--auto-detect and a write key option exclude each other")
    store_has_key = False
    if not (auto_detect or write_key is not None or write_key_stdin or write_key_file):
        from avsb_cli.config import ConfigStore

        seg = ConfigStore.segment_of(ConfigStore().load(), project)
        store_has_key = seg.get("key_storage", "none") != "none"
    prompt = _interactive(no_input) and not auto_detect and not store_has_key
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


@integration_segment_app.command("disable")
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

    out = _start(project, json, quiet)
    doc = integration.disable(project, forget_key=forget_key)
    if json:
        out.document(doc)
        return
    _render_status(out, doc, f"Segment disabled for project {project}")


@integration_segment_app.command("status")
def segment_status(
    project: ProjectOpt = "default", json: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show the Segment integration: enabled, mode, key (masked), region, endpoint.

    Example: avsb integrations segment status --json | jq .enabled
    """
    from avsb_cli import integration

    out = _start(project, json, quiet)
    doc = integration.status(project)
    if json:
        out.document(doc)
    else:
        _render_status(out, doc)


def _validate(project: str, region: Region | None, send_event: bool, timeout: float | None,
              json: bool, quiet: bool) -> None:
    from avsb_cli import integration

    out = _start(project, json, quiet)
    event = None
    if send_event:
        import uuid

        from avsb_cli import segment

        event = segment.experiment_event(
            anonymous_id=f"avsb-test-{uuid.uuid4()}", **_DEFAULT_FIELDS
        )
    doc = integration.validate(
        project, region=region.value if region else None, send_event=event, timeout=timeout
    )
    if json:
        out.document(doc)
    else:
        marks = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}
        # The fix column only when something failed: narrow terminals wrap less.
        fixes = any(c["status"] == "fail" for c in doc["checks"])
        out.table(
            f"Validation of project {project}'s write key {doc['key_masked'] or ''}",
            ["check", "result", "detail"] + (["fix"] if fixes else []),
            [[c["title"], marks[c["status"]], c["detail"]] + ([c["fix"]] if fixes else [])
             for c in doc["checks"]],
        )
    err = integration.checks_error(doc["checks"], "validation failed")
    if err:
        _raise_after_document(err, quiet)
    if event is not None:
        out.line(f"All checks passed. Test event {doc['message_id']} sent as "
                 f"anonymousId {doc['anonymous_id']}.")
    else:
        out.line("All checks passed (delivery probed with an empty batch: no event added).")


ValidateRegionOpt = Annotated[
    Region | None,
    typer.Option("--region", help="Region to check against [default: the configured one]."),
]
SendEventOpt = Annotated[
    bool,
    typer.Option("--send-event", help="Prove delivery with a real test event instead of an "
                                       "empty batch (adds one event to your data)."),
]


@segment_app.command("validate")
def segment_validate(
    region: ValidateRegionOpt = None,
    send_event: SendEventOpt = False,
    timeout: TimeoutOpt = None,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Prove the write key is real, in the right region, and reaches Segment.

    Checks: the key is well-formed; Segment's settings CDN knows it; the
    workspace's region matches; the tracking API accepts it. Exit 0 only if
    every check passes.

    Example: avsb segment validate --project shop --json
    """
    _validate(project, region, send_event, timeout, json, quiet)


# The same command under the integration, where people look for it first.
integration_segment_app.command("validate")(segment_validate)


# segment test-event ---------------------------------------------------------------

_DEFAULT_FIELDS = {
    "experiment_id": "exp_abc123",
    "experiment_name": "Homepage Hero Test",
    "variation_id": "var_xyz789",
    "variation_name": "Variation B",
}


@segment_app.command("test-event")
def segment_test_event(
    experiment_id: Annotated[str, typer.Option("--experiment-id")] = "exp_abc123",
    experiment_name: Annotated[str, typer.Option("--experiment-name")] = "Homepage Hero Test",
    variation_id: Annotated[str, typer.Option("--variation-id")] = "var_xyz789",
    variation_name: Annotated[str, typer.Option("--variation-name")] = "Variation B",
    user_id: Annotated[
        str | None, typer.Option("--user-id", help="Send as this userId.")
    ] = None,
    anonymous_id: Annotated[
        str | None,
        typer.Option("--anonymous-id", help="Send as this anonymousId [default: generated]."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact JSON payload; send nothing.")
    ] = False,
    timeout: TimeoutOpt = None,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Send the avsb_experiment event the A vs B snippet sends, to check the pipe.

    Example: avsb segment test-event --experiment-id exp_abc123 --user-id u_42
    """
    from avsb_cli import integration

    out = _start(project, json, quiet)
    fields = {
        "experiment_id": experiment_id,
        "experiment_name": experiment_name,
        "variation_id": variation_id,
        "variation_name": variation_name,
    }
    doc = integration.send_test_event(
        project, fields=fields, user_id=user_id, anonymous_id=anonymous_id,
        dry_run=dry_run, timeout=timeout,
    )
    if json or dry_run:
        if dry_run and not json:
            out.note(f"Dry run: would POST to {doc['endpoint']}:")
        if not quiet or json:
            out.document(doc if json else doc["payload"])
        return
    out.fields(
        f"Test event sent for project {project}",
        [
            ("messageId", doc["message_id"]),
            ("userId" if doc["user_id"] else "anonymousId",
             doc["user_id"] or doc["anonymous_id"]),
            ("endpoint", doc["endpoint"]),
            ("HTTP status", doc["status"]),
            ("attempts", doc["attempts"]),
            ("latency", f"{doc['latency_ms']:.0f} ms"),
            ("write key", f"{doc['key_masked']} (from {doc['key_source']})"),
        ],
    )
    if doc["anonymous_id_generated"]:
        out.note(f"Find it in Segment's debugger under anonymousId {doc['anonymous_id']}.")


# segment send -----------------------------------------------------------------------


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


@segment_app.command("send")
def segment_send(
    source: Annotated[str, typer.Argument(
        metavar="FILE|-", help="Enrollments: JSON Lines, or CSV with a header; - reads stdin.")],
    fmt: Annotated[Format | None, typer.Option(
        "--format", help="Input format [default: from the extension, else sniffed].")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Stop at the first bad line; send nothing more.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the file and count batches; send nothing.")] = False,
    failed_file: Annotated[Path | None, typer.Option(
        "--failed-file", metavar="PATH",
        help="Where undelivered events go [default: ./avsb-failed-<time>.jsonl].")] = None,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", metavar="N", help="Requests in flight (1-16).")] = 4,
    timeout: TimeoutOpt = None,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Backfill enrollments into Segment as the avsb_experiment events the snippet sends.

    Fields: experiment_id, experiment_name, variation_id, variation_name,
    user_id and/or anonymous_id, timestamp (ISO-8601 with a zone). Each
    messageId is derived from the project and the enrollment, so sending a
    file again sends nothing twice. Exit 8 if bad lines were skipped, 6 if
    events could not be delivered (they are written to --failed-file).

    Example: avsb segment send enrollments.jsonl --project shop
    """
    from avsb_cli import backfill, render

    out = _start(project, json, quiet)
    show = not (json or quiet) and sys.stderr.isatty()
    with render.Progress(backfill.count_lines(source) if show else None, enabled=show,
                         description="Sending") as bar:
        doc = backfill.send(project, source, fmt=fmt.value if fmt else None, strict=strict,
                            dry_run=dry_run, failed_file=failed_file, concurrency=concurrency,
                            progress=bar.advance if show else None, timeout=timeout)
    if json:
        out.document(doc)
    else:
        for text in backfill.problem_lines(doc):
            out.warn(text)
        out.fields(("Dry run" if dry_run else "Sent") + f" for project {project}",
                   backfill.summary_rows(doc))
    err = backfill.outcome_error(doc)
    if err:
        _raise_after_document(err, quiet)


# completion -----------------------------------------------------------------------


@app.command("completion")
def completion(shell: Annotated[Shell, typer.Argument(help="The shell to print a script for.")]
               ) -> None:
    """Print the completion script for SHELL (bash, zsh, fish, powershell).

    Example: avsb completion bash > ~/.local/share/bash-completion/completions/avsb
    """
    from avsb_cli.completion import script

    sys.stdout.write(script(shell.value))


def main() -> None:
    """Console-script entry point."""
    app()
