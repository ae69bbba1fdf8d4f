"""What `pip install .` ships: the README's main job runs from the installed
package, not from this tree, so a module left out of the wheel breaks it for
every user while every other test (run from the tree) stays green."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _clean_copy(dest: Path) -> Path:
    """The files a fresh clone has (tracked or new, not ignored): an egg-info
    left by an editable install would otherwise fill in what the config misses."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def test_the_wheel_ships_every_module_of_the_package(tmp_path):
    src = _clean_copy(tmp_path / "src")
    out = tmp_path / "out"
    # Offline: the test venv carries setuptools and wheel ([test] extra).
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = out.glob("avsb-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "avsb_cli").rglob("*.py")
            if "__pycache__" not in p.parts}
    assert tree - shipped == set()
    assert "avsb_cli/commands/integrations.py" in shipped  # a subpackage, not only the top
