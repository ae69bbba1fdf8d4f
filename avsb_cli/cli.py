"""The command line: parse, call a library function, render, exit.

Heavy modules (httpx, keyring, Rich) are imported inside the commands that
need them: every Tab of a shell completion re-runs this program, so the
import path to the completion machinery stays as light as typer itself.

No ``from __future__ import annotations`` here: typer would turn every
string annotation back into an object with eval and compile on each start,
most of the start-up time (figures: bench/RESULTS.md).
"""

import importlib
import os
import sys
from typing import Annotated, Any

import typer
from typer._click import Context, HelpFormatter
from typer.core import TyperGroup

from avsb_cli import __version__
from avsb_cli.completion import COMPLETE_VAR, PROG
from avsb_cli.errors import AvsbError, ExitCode, Interrupted, OutputError, UsageError

# The root's commands and groups, each built when first named
# (AvsbGroup.get_command), not on every start: typer turns each command's
# signature into click parameters, and --version or a Tab needs one branch at
# most. name -> module in avsb_cli.commands whose ``app`` it is, or
# (module, attribute) for a module holding several root commands.
LAZY_COMMANDS: dict[str, str | tuple[str, str]] = {
    "completion": "completion",
    "doctor": "doctor",
    "integrations": "integrations",
    "login": ("auth", "login_app"),
    "logout": ("auth", "logout_app"),
    "projects": "projects",
    "segment": "segment",
    "whoami": ("auth", "whoami_app"),
}


# Help text ------------------------------------------------------------------------

# Stands in for "-" while click wraps help: textwrap breaks after a hyphen
# (`--write-key-` / `stdin`), which no copy-paste survives. Same width, never
# a break point; getvalue() puts the hyphens back.
_HYPHEN = "\x00"


class AvsbHelpFormatter(HelpFormatter):
    """click's help layout, wrapping only at spaces. Examples sit in ``\\b``
    paragraphs (click's no-rewrap marker), so they print exactly as written."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        # A required argument reads `SHELL`, as in click, not typer's `{SHELL}`.
        args = args.replace("{", "").replace("}", "")
        super().write_usage(prog, args.replace("-", _HYPHEN), prefix)

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _HYPHEN))

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = [tuple(col.replace("-", _HYPHEN) for col in row) for row in rows]
        super().write_dl(rows, col_max, col_spacing)

    def getvalue(self) -> str:
        # No trailing spaces either (click leaves one after a long usage prefix).
        text = super().getvalue().replace(_HYPHEN, "-")
        return "\n".join(line.rstrip(" ") for line in text.split("\n"))


class AvsbContext(Context):
    formatter_class = AvsbHelpFormatter


def _polish(command: Any) -> None:
    """Give a command built by typer, and everything under it, avsb's help:
    the formatter above, and its docstring's first paragraph whole as the
    one-line summary in group listings (click cuts it at about 45 characters)."""
    command.context_class = AvsbContext
    if not command.short_help and command.help:
        command.short_help = " ".join(command.help.strip().split("\n\n")[0].split())
    for sub in getattr(command, "commands", {}).values():
        _polish(sub)


# The app --------------------------------------------------------------------------


class AvsbGroup(TyperGroup):
    """The root group: catches AvsbError once, and makes usage errors one line."""

    context_class = AvsbContext

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            from typer.main import get_command as build

            where = LAZY_COMMANDS[cmd_name]
            name, attr = where if isinstance(where, tuple) else (where, "app")
            module = importlib.import_module(f"avsb_cli.commands.{name}")
            # A Typer app of one command builds as that command, else as a group.
            command = build(getattr(module, attr))
            command.name = cmd_name
            _polish(command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        from avsb_cli.streams import reserve_closed_descriptors

        reserve_closed_descriptors()
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

    from avsb_cli import streams

    saved = sys.stdout
    try:
        try:
            closed = streams.closed_stdout()
            if closed:
                raise closed
            sys.stdout = streams.GuardedStdout(sys.stdout)
            rv = call()
            sys.stdout.flush()  # a full disk shows here, inside the guard
            return rv if isinstance(rv, int) else 0
        except (Exception, KeyboardInterrupt):
            # Imported only on the way out of a failure: --version, --help
            # and a Tab never pay for render's imports (bench/).
            from avsb_cli import render
            raise
        finally:
            if isinstance(sys.stdout, streams.GuardedStdout):
                sys.stdout = saved
    except AvsbError as err:
        if isinstance(err, OutputError):
            streams.drop_stdout()
        render.current().error(err)
        return int(err.exit_code)
    except click_exc.NoArgsIsHelpError as err:
        # `avsb` or `avsb integrations` alone: show the help, not a one-line error.
        try:
            out = streams.GuardedStdout(sys.stdout)
            out.write(err.format_message() + "\n")
            out.flush()
        except OutputError as failed:
            streams.drop_stdout()
            render.current().error(failed)
            return int(failed.exit_code)
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
    """Mask key-shaped words in a usage error: `--write-key-stdin KEY` echoes KEY,
    and A vs B tokens (pat_..., avsb_svc_...) are key-shaped too."""
    from avsb_cli.writekey import key_shaped, remember_secret

    for word in argv:
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        if key_shaped(value):
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


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """The command line for A vs B's integrations, starting with Segment.

    \b
    Example:
      avsb integrations segment enable \\
        --write-key-stdin < key.txt
    """


def main() -> None:
    """Console-script entry point."""
    app()
