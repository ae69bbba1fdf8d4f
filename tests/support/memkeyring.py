"""Keyring backends for tests.

``MemoryKeyring``: in-process. ``FileKeyring``: a JSON file named by
``AVSB_TEST_KEYRING_FILE``, so subprocesses (PYTHON_KEYRING_BACKEND=
tests.support.memkeyring.FileKeyring) share it. ``HangingKeyring`` never
answers; ``RuntimeKeyring`` raises like SecretService without a bus;
``LockedKeyring`` raises KeyringLocked.
"""

from __future__ import annotations

import json
import os
import threading

from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked, PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.items.pop((service, username), None) is None:
            raise PasswordDeleteError("not found")


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _path(self) -> str:
        return os.environ["AVSB_TEST_KEYRING_FILE"]

    def _load(self) -> dict[str, str]:
        try:
            with open(self._path()) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, str]) -> None:
        with open(self._path(), "w") as fh:
            json.dump(data, fh)

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError("not found")
        self._save(data)


class HangingKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]
    release = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.release.wait(60)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait(60)

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait(60)


class RuntimeKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("The Secret Service daemon is neither running nor activatable")

    set_password = delete_password = get_password  # type: ignore[assignment]


class LockedKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked("Failed to unlock the collection!")

    set_password = delete_password = get_password  # type: ignore[assignment]

