"""Shell completion: the scripts, and the code that answers each Tab.

The scripts are typer's templates with our program name and ``_AVSB_COMPLETE``.
The shipped files in ``completions/`` are these scripts; a test regenerates
them and compares, so they can't drift from the code. After changing the
commands or typer, regenerate them with::

    python -m avsb_cli.completion        # rewrites completions/*

Every Tab re-runs avsb, so the answering side stays light: no httpx, no
keyring, and no Rich. Typer's own zsh/fish/PowerShell classes pass each help
text through Rich (to strip markup) whenever Rich is installed, which costs
more than the rest of a completion; our help texts carry no markup
(``rich_markup_mode=None``), so the classes below format them plainly.
"""

from __future__ import annotations

import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

PROG = "avsb"
COMPLETE_VAR = "_AVSB_COMPLETE"
SHELLS = ("bash", "zsh", "fish", "powershell")
FILE_NAMES = {"bash": "avsb.bash", "zsh": "_avsb", "fish": "avsb.fish", "powershell": "avsb.ps1"}


def script(shell: str) -> str:
    """The completion script for ``shell``, exactly as shipped in completions/."""
    if shell not in SHELLS:
        raise ValueError(f"unsupported shell {shell!r}; one of {', '.join(SHELLS)}")
    from typer._completion_shared import get_completion_script

    text = get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)
    return text if text.endswith("\n") else text + "\n"


def shipped_dir() -> Path:
    """completions/ of the source tree (next to the avsb_cli package)."""
    return Path(__file__).resolve().parent.parent / "completions"


def write_all(folder: Path | None = None) -> list[Path]:
    """(Re)write every shell's script into ``folder`` (default: completions/)."""
    folder = folder or shipped_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for shell in SHELLS:
        path = folder / FILE_NAMES[shell]
        path.write_text(script(shell), encoding="utf-8", newline="\n")
        written.append(path)
    return written


# Answering a Tab --------------------------------------------------------------------

_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from typer import _completion_classes as tc
    from typer._click.shell_completion import add_completion_class

    def zsh_escape(s: str) -> str:
        return (s.replace('"', '""').replace("'", "''").replace("$", "\\$")
                .replace("`", "\\`").replace(":", r"\\:"))

    class ZshComplete(tc.ZshComplete):
        def format_completion(self, item: Any) -> str:
            if item.help:
                return f'"{zsh_escape(item.value)}":"{zsh_escape(item.help)}"'
            return f'"{zsh_escape(item.value)}"'

    class FishComplete(tc.FishComplete):
        def format_completion(self, item: Any) -> str:
            if item.help:
                return item.value + "\t" + re.sub(r"\s", " ", item.help)
            return str(item.value)

    class PowerShellComplete(tc.PowerShellComplete):
        def format_completion(self, item: Any) -> str:
            return f"{item.value}:::{item.help if item.help else ' '}"

    add_completion_class(tc.BashComplete, "bash")  # bash shows no help texts
    add_completion_class(ZshComplete, "zsh")
    add_completion_class(FishComplete, "fish")
    add_completion_class(PowerShellComplete, "powershell")
    add_completion_class(PowerShellComplete, "pwsh")
    _registered = True


def complete(cli: Any, ctx_args: MutableMapping[str, Any], prog_name: str,
             complete_var: str, instruction: str) -> int:
    """Answer one completion request (``_AVSB_COMPLETE=complete_bash`` etc.)."""
    _register()
    from typer.completion import shell_complete

    return shell_complete(cli, ctx_args, prog_name, complete_var, instruction)


def main(argv: list[str] | None = None) -> int:
    """``python -m avsb_cli.completion [FOLDER]``: regenerate the shipped scripts."""
    args = sys.argv[1:] if argv is None else argv
    for path in write_all(Path(args[0]) if args else None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
