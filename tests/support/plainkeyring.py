"""A stand-in for keyrings.alt's PlaintextKeyring: a "keyring" that is one plain file.

Named like the real one (avsb recognises such backends by name) and usable by
real processes via PYTHON_KEYRING_BACKEND=tests.support.plainkeyring.PlaintextKeyring;
it keeps its items in $AVSB_CONFIG_DIR/../plain-keyring.json, in clear.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend


class PlaintextKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @property
    def path(self) -> Path:
        return Path(os.environ["AVSB_CONFIG_DIR"]).parent / "plain-keyring.json"

    def _load(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        items = self._load()
        items[f"{service}/{username}"] = password
        self.path.write_text(json.dumps(items))

    def delete_password(self, service: str, username: str) -> None:
        items = self._load()
        items.pop(f"{service}/{username}", None)
        self.path.write_text(json.dumps(items))
