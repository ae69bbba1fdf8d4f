"""`avsb segment ...`: talk to Segment: test-event, validate, send."""

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from avsb_cli.commands.options import (
    FromDashboardOpt,
    JsonOpt,
    LocalOpt,
    ProjectOpt,
    QuietOpt,
    Region,
    TimeoutOpt,
    group,
    raise_after_document,
    start,
)

app = group("Talk to Segment: send test events, validate the key, backfill.")

# The test event's properties when no option names them: the example in A vs
# B's docs. validate --send-event sends the same.
DEFAULT_FIELDS = {
    "experiment_id": "exp_abc123",
    "experiment_name": "Homepage Hero Test",
    "variation_id": "var_xyz789",
    "variation_name": "Variation B",
}


def _validate(project: str, region: Region | None, send_event: bool, timeout: float | None,
              from_dashboard: bool, local: bool, json: bool, quiet: bool) -> None:
    from avsb_cli import checks

    out = start(project, json, quiet)
    event = None
    if send_event:
        import uuid

        from avsb_cli import segment

        event = segment.experiment_event(
            anonymous_id=f"avsb-test-{uuid.uuid4()}", **DEFAULT_FIELDS
        )
    doc = checks.validate(
        project, region=region.value if region else None, send_event=event, timeout=timeout,
        from_dashboard=from_dashboard, local=local,
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
    err = checks.validate_error(doc)
    if err:
        raise_after_document(err, quiet)
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


@app.command("validate")
def segment_validate(
    region: ValidateRegionOpt = None,
    send_event: SendEventOpt = False,
    timeout: TimeoutOpt = None,
    from_dashboard: FromDashboardOpt = False,
    local: LocalOpt = False,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Prove the write key is real, in the right region, and reaches Segment.

    Checks: the key is well-formed; Segment's settings CDN knows it; the
    workspace's region matches; the tracking API accepts it. Exit 0 only if
    every check passes. With no local key and a login to A vs B, or with
    --from-dashboard, the key checked is the one the dashboard holds.

    \b
    Example:
      avsb segment validate --project shop --json
    """
    _validate(project, region, send_event, timeout, from_dashboard, local, json, quiet)



# segment test-event ---------------------------------------------------------------


@app.command("test-event")
def segment_test_event(
    experiment_id: Annotated[str, typer.Option(
        "--experiment-id", metavar="ID", help="The experiment_id property.")
    ] = DEFAULT_FIELDS["experiment_id"],
    experiment_name: Annotated[str, typer.Option(
        "--experiment-name", metavar="NAME", help="The experiment_name property.")
    ] = DEFAULT_FIELDS["experiment_name"],
    variation_id: Annotated[str, typer.Option(
        "--variation-id", metavar="ID", help="The variation_id property.")
    ] = DEFAULT_FIELDS["variation_id"],
    variation_name: Annotated[str, typer.Option(
        "--variation-name", metavar="NAME", help="The variation_name property.")
    ] = DEFAULT_FIELDS["variation_name"],
    user_id: Annotated[
        str | None, typer.Option("--user-id", metavar="ID", help="Send as this userId.")
    ] = None,
    anonymous_id: Annotated[
        str | None,
        typer.Option("--anonymous-id", metavar="ID",
                     help="Send as this anonymousId [default: generated]."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact JSON payload; send nothing.")
    ] = False,
    timeout: TimeoutOpt = None,
    from_dashboard: FromDashboardOpt = False,
    local: LocalOpt = False,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Send the avsb_experiment event the A vs B snippet sends, to check the pipe.

    \b
    Example:
      avsb segment test-event --experiment-id exp_abc123 \\
        --user-id u_42
    """
    from avsb_cli import checks

    out = start(project, json, quiet)
    fields = {
        "experiment_id": experiment_id,
        "experiment_name": experiment_name,
        "variation_id": variation_id,
        "variation_name": variation_name,
    }
    doc = checks.send_test_event(
        project, fields=fields, user_id=user_id, anonymous_id=anonymous_id,
        dry_run=dry_run, timeout=timeout, from_dashboard=from_dashboard, local=local,
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


@app.command("send")
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
        help="Where undelivered events go; an existing file is appended to "
             "[default: ./avsb-failed-<time>.jsonl].")] = None,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", metavar="N", help="Requests in flight (1-16).")] = 4,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="SECONDS",
        help="Time for each batch, its retries and a slow answer included; not for the "
             "whole file [default: 20; env AVSB_TIMEOUT].")] = None,
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

    \b
    Example:
      avsb segment send enrollments.jsonl --project shop
    """
    from avsb_cli import backfill, render

    out = start(project, json, quiet)
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
        raise_after_document(err, quiet)



# segment listen ---------------------------------------------------------------------


@app.command("listen")
def segment_listen(
    port: Annotated[int, typer.Option(
        "--port", metavar="PORT", help="Port to listen on; 0 picks a free one.")] = 8787,
    host: Annotated[str, typer.Option(
        "--host", metavar="HOST",
        help="Address to bind; anything but loopback is reachable from other machines.",
    )] = "127.0.0.1",
    write_key: Annotated[str | None, typer.Option(
        "--write-key", metavar="KEY",
        help="The key the page uses [default: the project's]; events with another key "
             "are flagged.")] = None,
    only_avsb: Annotated[bool, typer.Option(
        "--only-avsb", help="Hide events other than avsb_experiment.")] = False,
    count: Annotated[int | None, typer.Option(
        "--count", metavar="N",
        help="Exit once N avsb_experiment events have arrived (0 if all passed, 5 if not).",
    )] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="SECONDS",
        help="Stop after this long; with --count, too few events is exit 6.")] = None,
    forward: Annotated[bool, typer.Option(
        "--forward", help="Also relay every accepted batch to the project's Segment endpoint "
                          "with its stored key.")] = False,
    project: ProjectOpt = "default",
    json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line (NDJSON) per event, on stdout.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Be Segment on this machine and judge the avsb_experiment events a page sends.

    Point a page's analytics.js at the printed URL: each event shows up as a
    line, and the snippet's avsb_experiment events get PASS, or FAIL naming the
    missing, extra, misspelt or wrongly typed properties. Ctrl-C prints a
    summary (exit 130).

    \b
    Example:
      avsb segment listen --count 1 --timeout 60
    """
    from avsb_cli import listen, render

    # Under --json an error is one more NDJSON line, not an indented document.
    start(project, json, quiet).compact = True
    listen.run(project=project, host=host, port=port, write_key=write_key, forward=forward,
               count=count, timeout=timeout,
               view=render.EventView(json_mode=json, only_avsb=only_avsb, quiet=quiet))
