"""Lint as a test: ruff's banned-api keeps Rich inside render.py, like typer does."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed (pip install -e '.[test]')")


def test_ruff_passes_on_the_package():
    proc = subprocess.run([*_ruff(), "check", "avsb_cli", "tests", "bench"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rich_is_imported_only_by_render():
    offenders = [
        p.name
        for p in (ROOT / "avsb_cli").glob("*.py")
        if p.name != "render.py"
        and ("import rich" in p.read_text() or "from rich" in p.read_text())
    ]
    assert offenders == []
