"""A private Secret Service: its own D-Bus session with an unlocked gnome-keyring.

Used by the tests' fixtures and by bench/. Nothing touches the user's own
keyring: HOME and the XDG folders point into ``home``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

TOOLS = ("dbus-daemon", "gnome-keyring-daemon")


def missing_tools(extra: tuple[str, ...] = ()) -> list[str]:
    return [t for t in (*TOOLS, *extra) if shutil.which(t) is None]


@contextlib.contextmanager
def private_secret_service(home: Path, password: str = "test-password") -> Iterator[dict[str, str]]:
    """Yield the environment (HOME, XDG_*, DBUS_SESSION_BUS_ADDRESS, PATH) to reach it."""
    (home / "run").mkdir(parents=True, mode=0o700, exist_ok=True)
    env = {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", ""),
    }
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1", "--nopidfile"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        assert bus.stdout is not None
        env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().strip()
        subprocess.run(
            ["gnome-keyring-daemon", "--unlock", "--components=secrets"],
            input=password, env=env, capture_output=True, text=True, timeout=30, check=True,
        )
        yield env
    finally:
        bus.terminate()  # gnome-keyring-daemon leaves with its bus
        bus.wait(timeout=10)
        if bus.stdout is not None:
            bus.stdout.close()  # else an unclosed-file warning (an error in the tests)
