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


def _validate(project: str, region: Region | None, send_event: bool, timeout: float | None,
              from_dashboard: bool, local: bool, json: bool, quiet: bool) -> None:
    from avsb_cli import integration

    out = start(project, json, quiet)
    event = None
    if send_event:
        import uuid

        from avsb_cli import segment

        event = segment.experiment_event(
            anonymous_id=f"avsb-test-{uuid.uuid4()}", **_DEFAULT_FIELDS
        )
    doc = integration.validate(
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
    err = integration.checks_error(doc["checks"], "validation failed")
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

    Example: avsb segment validate --project shop --json
    """
    _validate(project, region, send_event, timeout, from_dashboard, local, json, quiet)



# segment test-event ---------------------------------------------------------------

_DEFAULT_FIELDS = {
    "experiment_id": "exp_abc123",
    "experiment_name": "Homepage Hero Test",
    "variation_id": "var_xyz789",
    "variation_name": "Variation B",
}


@app.command("test-event")
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
    from_dashboard: FromDashboardOpt = False,
    local: LocalOpt = False,
    project: ProjectOpt = "default",
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Send the avsb_experiment event the A vs B snippet sends, to check the pipe.

    Example: avsb segment test-event --experiment-id exp_abc123 --user-id u_42
    """
    from avsb_cli import integration

    out = start(project, json, quiet)
    fields = {
        "experiment_id": experiment_id,
        "experiment_name": experiment_name,
        "variation_id": variation_id,
        "variation_name": variation_name,
    }
    doc = integration.send_test_event(
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

