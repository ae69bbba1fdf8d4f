"""Shell completion scripts, generated from typer's templates.

The shipped files in ``completions/`` are these scripts; a test regenerates
them and compares, so they can't drift from the code.
"""

from __future__ import annotations

SHELLS = ("bash", "zsh", "fish", "powershell")
FILE_NAMES = {"bash": "avsb.bash", "zsh": "_avsb", "fish": "avsb.fish", "powershell": "avsb.ps1"}


def script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    text = get_completion_script(prog_name="avsb", complete_var="_AVSB_COMPLETE", shell=shell)
    return text if text.endswith("\n") else text + "\n"
