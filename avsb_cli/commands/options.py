"""Options and helpers shared by every command module.

They live here, not in cli.py, so that cli.py can import the command modules
lazily without the two importing each other.
"""

import sys
from enum import Enum
from typing import Annotated, Any

import typer

from avsb_cli.errors import AvsbError


class Region(str, Enum):
    us = "us"
    eu = "eu"


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


ProjectOpt = Annotated[
    str,
    typer.Option(
        "--project", "-p", metavar="NAME", envvar="AVSB_PROJECT",
        autocompletion=complete_project, help="A vs B project.", show_default=True,
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


def group(help: str) -> typer.Typer:
    """A command group as every group of avsb is built."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None,
                       add_completion=False)


def start(project: str, json_mode: bool, quiet: bool) -> Any:
    """Set up output for a command and check the project name; returns the Output."""
    from avsb_cli import render
    from avsb_cli.config import check_project

    out = render.use(json_mode=json_mode, quiet=quiet)
    check_project(project)
    return out


def raise_after_document(err: AvsbError, quiet: bool) -> None:
    """Fail with ``err`` once the command's own document or table is out: the
    error is the one-line stderr summary, and --json gets no second document."""
    from avsb_cli import render

    render.use(json_mode=False, quiet=quiet)
    raise err


def interactive(no_input: bool) -> bool:
    return not no_input and sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()


LocalOpt = Annotated[
    bool,
    typer.Option("--local", help="Local settings only: do not read or change A vs B, "
                                 "even when logged in."),
]
FromDashboardOpt = Annotated[
    bool,
    typer.Option("--from-dashboard",
                 help="Use the write key A vs B holds for the project (the one the snippet "
                      "uses in production); needs a login."),
]
OrgOpt = Annotated[
    str | None,
    typer.Option("--org", metavar="ORG_ID", envvar="AVSB_ORG",
                 help="A vs B organisation id [default: the one logged in to]."),
]
ApiUrlOpt = Annotated[
    str | None,
    typer.Option("--api-url", metavar="URL", envvar="AVSB_API_URL",
                 help="A vs B host [default: https://app.avsb.cloud]; plain http only for "
                      "loopback."),
]


def command(help: str | None = None) -> typer.Typer:
    """A Typer app holding one root-level command (login, doctor, ...)."""
    return typer.Typer(help=help, rich_markup_mode=None, add_completion=False)
