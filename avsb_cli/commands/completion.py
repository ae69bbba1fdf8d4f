"""`avsb completion SHELL`."""

import sys
from enum import Enum
from typing import Annotated

import typer

app = typer.Typer(rich_markup_mode=None, add_completion=False)


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"



@app.command("completion")
def completion(shell: Annotated[Shell, typer.Argument(
        metavar="SHELL", help="bash, zsh, fish or powershell.")]) -> None:
    """Print the completion script for SHELL (bash, zsh, fish, powershell).

    \b
    Example:
      avsb completion bash \\
        > ~/.local/share/bash-completion/completions/avsb
    """
    from avsb_cli.completion import script

    sys.stdout.write(script(shell.value))

