"""`avsb login`, `avsb logout`, `avsb whoami`: the A vs B token.

Three root-level commands, one Typer app each (cli.LAZY_COMMANDS maps each
name to its app here).
"""

import sys
from typing import Annotated

import typer

from avsb_cli.commands.options import (
    ApiUrlOpt,
    JsonOpt,
    NoInputOpt,
    OrgOpt,
    QuietOpt,
    TimeoutOpt,
    command,
    interactive,
    raise_after_document,
)
from avsb_cli.errors import InputError, UsageError

login_app = command()
logout_app = command()
whoami_app = command()


def _out(json: bool, quiet: bool):  # type: ignore[no-untyped-def]
    from avsb_cli import render

    return render.use(json_mode=json, quiet=quiet)


def _read_token(with_token: bool, no_input: bool) -> tuple[str, str]:
    if with_token:
        if sys.stdin.isatty():
            raise UsageError("--with-token reads a pipe or a file, not the terminal",
                             hint='e.g. printf %s "$AVSB_TOKEN" | avsb login --with-token')
        data = sys.stdin.read(4096 + 1)
        if len(data) > 4096:
            raise InputError("standard input is far too long to be an A vs B token")
        return data, "standard input"
    if not interactive(no_input):
        raise UsageError("no terminal to paste a token in",
                         hint="pipe it: printf %s \"$TOKEN\" | avsb login --with-token")
    return typer.prompt("Paste your personal access token", hide_input=True, err=True), \
        "the prompt"


@login_app.command("login")
def login(
    with_token: Annotated[
        bool, typer.Option("--with-token", help="Read the token from standard input (CI).")
    ] = False,
    org: OrgOpt = None,
    api_url: ApiUrlOpt = None,
    insecure_storage: Annotated[
        bool,
        typer.Option("--insecure-storage",
                     help="Keep the token in an owner-only plain file instead of the OS keyring."),
    ] = False,
    timeout: TimeoutOpt = None,
    no_input: NoInputOpt = False,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Log in to A vs B with a personal access token (or a service token).

    The token is checked with A vs B (it must list the org's projects) and
    only then stored: in the OS keyring, one item per API host.

    \b
    Example:
      printf %s "$TOKEN" |
        avsb login --with-token --org org_123
    """
    from avsb_cli import account

    out = _out(json, quiet)
    token, source = _read_token(with_token, no_input)
    doc = account.login(token, source=source, org=org, api_url=api_url,
                        insecure_storage=insecure_storage, timeout=timeout)
    if json:
        out.document(doc)
        return
    out.line(f"Logged in to org {doc['org']} at {doc['api_url']} with a {doc['token_kind']} "
             f"token {doc['token_masked']}; it sees {doc['projects']} project"
             f"{'' if doc['projects'] == 1 else 's'}. Stored in the {doc['token_source']}.")
    if doc["env_token_overrides"]:
        out.warn("AVSB_TOKEN is set and overrides the stored token")


@logout_app.command("logout")
def logout(json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Delete the stored A vs B token. Running it again is fine.

    \b
    Example:
      avsb logout
    """
    from avsb_cli import account

    out = _out(json, quiet)
    doc = account.logout()
    if json:
        out.document(doc)
        return
    out.line(f"Logged out of {doc['api_url']}." if doc["token_deleted"]
             else f"No token was stored for {doc['api_url']}.")
    if doc["env_token_set"]:
        out.warn("AVSB_TOKEN is still set: commands keep using it")


@whoami_app.command("whoami")
def whoami(timeout: TimeoutOpt = None, json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show who avsb talks to A vs B as, and whether A vs B accepts the token now.

    \b
    Example:
      avsb whoami --json
    """
    from avsb_cli import account

    out = _out(json, quiet)
    doc, err = account.whoami(timeout=timeout)
    if json:
        out.document(doc)
    else:
        accepted = {True: "yes", False: "NO", None: "unknown"}[doc["accepted"]]
        out.fields("A vs B login", [
            ("host", doc["api_url"]),
            ("org", doc["org"]),
            ("token", f"{doc['token_masked']} ({doc['token_kind']}, from {doc['token_source']})"
             if doc["logged_in"] else "none: not logged in"),
            ("accepted", accepted + (f": {doc['problem']}" if doc["problem"] else "")),
            ("projects", doc["projects"]),
        ])
    if err:
        raise_after_document(err, quiet)
