"""`avsb projects list`: the A vs B projects the token can see."""

from avsb_cli.commands.options import JsonOpt, QuietOpt, TimeoutOpt, group

app = group("A vs B projects of the organisation logged in to.")


@app.callback()
def projects() -> None:
    """A vs B projects of the organisation logged in to (a group: more verbs may come)."""


@app.command("list")
def projects_list(timeout: TimeoutOpt = None, json: JsonOpt = False,
                  quiet: QuietOpt = False) -> None:
    """List the organisation's projects: id, shortId, name (every page).

    \b
    Example:
      avsb projects list --json |
        jq -r '.projects[].id'
    """
    from avsb_cli import account, render

    out = render.use(json_mode=json, quiet=quiet)
    doc = account.list_projects(timeout=timeout)
    if json:
        out.document(doc)
        return
    out.table(f"Projects of org {doc['org']}", ["id", "shortId", "name"],
              [[p["id"], p["shortId"], p["name"]] for p in doc["projects"]])
