"""`avsb doctor`: one table of what works and what to do about what does not."""

from avsb_cli.commands.options import JsonOpt, QuietOpt, TimeoutOpt, command, raise_after_document
from avsb_cli.errors import ValidationFailedError

app = command()


@app.command("doctor")
def doctor(timeout: TimeoutOpt = None, json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Check config, keyring, login, A vs B's API and Segment's hosts; exit 0 only if none failed.

    \b
    Example:
      avsb doctor --json |
        jq '.checks[] | select(.status == "fail")'
    """
    from avsb_cli import doctor as diagnose
    from avsb_cli import render

    out = render.use(json_mode=json, quiet=quiet)
    doc = diagnose.run(timeout=timeout)
    marks = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}
    if json:
        out.document(doc)
    else:
        out.table("avsb doctor", ["check", "result", "detail", "fix"],
                  [[c["title"], marks[c["status"]], c["detail"], c["fix"]] for c in doc["checks"]])
    failed = [c for c in doc["checks"] if c["status"] == "fail"]
    if failed:
        raise_after_document(ValidationFailedError(
            f"{len(failed)} check{'s' if len(failed) > 1 else ''} failed: "
            + ", ".join(c["name"] for c in failed), hint=failed[0]["fix"] or None), quiet)
