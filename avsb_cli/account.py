"""Logging in to A vs B: where the token is kept, and login, logout, whoami,
projects list as functions returning dicts.

config.toml keeps the login under ``[avsb]`` (``api_url``, ``org``,
``token_storage``) and, per project, the A vs B project id it resolved to
(``[projects.<name>] avsb_project_id``); never the token. The token lives
in the OS keyring (service ``avsb``, user ``token:<api host>``) or, with
``--insecure-storage``, in secrets.toml. ``find_token`` is the one place
that decides which token a command uses.

httpx is imported only once a token is found: ``status`` without a login
pays nothing for A vs B.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from avsb_cli.config import ConfigStore
from avsb_cli.errors import (
    AuthError,
    AvsbError,
    ConfigError,
    KeyringUnavailableError,
    UsageError,
)
from avsb_cli.writekey import mask, remember_secret

TOKEN_ENV = "AVSB_TOKEN"
ORG_ENV = "AVSB_ORG"
API_URL_ENV = "AVSB_API_URL"
TABLE = "avsb"
PROJECT_ID = "avsb_project_id"
NOT_LOGGED_IN = "A vs B was not changed: not logged in (run avsb login); local settings only"


@dataclass
class Login:
    """Who avsb talks to A vs B as, and where that came from."""

    api_url: str
    org: str | None
    token: str | None
    #: "env", "keyring", "file" or "none"
    source: str

    @property
    def kind(self) -> str | None:
        from avsb_cli.avsb_api import token_kind

        return token_kind(self.token) if self.token else None

    def summary(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "org": self.org,
            "token_kind": self.kind,
            "token_masked": mask(self.token) or None,
            "token_source": self.source,
        }


def record(data: dict[str, Any]) -> dict[str, Any]:
    """The ``[avsb]`` table of config.toml, checked."""
    rec = data.get(TABLE, {})
    if not isinstance(rec, dict):
        raise ConfigError(f"'{TABLE}' in the config file is not a table")
    for name in ("api_url", "org", "token_storage"):
        if name in rec and not isinstance(rec[name], str):
            raise ConfigError(f"'{TABLE}.{name}' in the config file is not a string",
                              hint="fix or move the file; avsb left it untouched")
    return rec


def _api_url(rec: dict[str, Any], given: str | None = None) -> str:
    from avsb_cli.endpoints import normalise_url

    raw = given or os.environ.get(API_URL_ENV, "").strip() or rec.get("api_url") or ""
    if not raw:
        return "https://app.avsb.cloud"
    base = normalise_url(raw, what="A vs B API", secret="the A vs B token")
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def _host(api_url: str) -> str:
    return api_url.split("://", 1)[1]


def _check_org(org: str) -> str:
    org = org.strip()
    if not org or len(org) > 128 or any(c.isspace() or c in "/?#%" for c in org):
        raise UsageError(f"invalid organisation id {org[:40]!r}",
                         hint="copy it from the dashboard's URL: /orgs/<ORG_ID>/...")
    return org


def find_token(data: dict[str, Any], *, keystore: Any | None = None) -> Login:
    """The token a command uses: AVSB_TOKEN (empty means unset), else the one
    stored at login (keyring, then the file)."""
    rec = record(data)
    api_url = _api_url(rec)
    org = os.environ.get(ORG_ENV, "").strip() or rec.get("org") or None
    env = os.environ.get(TOKEN_ENV, "")
    if env.strip():
        from avsb_cli.avsb_api import check_token

        return Login(api_url, org, check_token(env, source=TOKEN_ENV), "env")
    storage = rec.get("token_storage")
    if storage not in ("keyring", "file"):
        return Login(api_url, org, None, "none")  # not logged in: no keyring touched
    host = _host(api_url)
    token, source, problem = None, "none", None
    if storage == "keyring":
        if keystore is None:
            from avsb_cli import keystore
        try:
            token, source = keystore.get_token(host), "keyring"
        except AvsbError as exc:
            problem = exc
    if token is None:
        from avsb_cli.keystore import FileKeyStore

        token = FileKeyStore.tokens().get(host)
        source = "file" if token else "none"
    if token is None and problem is not None:
        raise problem
    if token:
        remember_secret(token)
    return Login(api_url, org, token or None, source)


def api(login: Login, *, transport: Any | None = None, timeout: float | None = None) -> Any:
    """An avsb_api.Api for ``login``; needs a token and an org."""
    from avsb_cli import avsb_api

    if not login.token:
        raise AuthError("not logged in to A vs B", hint=f"run: avsb login (or set {TOKEN_ENV})")
    if not login.org:
        raise UsageError("no A vs B organisation given",
                         hint=f"avsb login --org ORG_ID, or set {ORG_ENV}")
    return avsb_api.Api(login.api_url, _check_org(login.org), login.token,
                         token_source=login.source, transport=transport, timeout=timeout)


# login / logout / whoami / projects ------------------------------------------------


def login(token: str, *, source: str, org: str | None, api_url: str | None,
          insecure_storage: bool = False, store: ConfigStore | None = None,
          keystore: Any | None = None, transport: Any | None = None,
          timeout: float | None = None) -> dict[str, Any]:
    """Check the token's shape, verify it with A vs B, and only then store it."""
    from avsb_cli import avsb_api
    from avsb_cli import keystore as keystore_mod
    from avsb_cli.keystore import FileKeyStore

    keystore = keystore or keystore_mod
    store = store or ConfigStore()
    rec = record(store.load())  # a corrupt config stops us before any request
    base = _api_url(rec, api_url)
    org = org or os.environ.get(ORG_ENV, "").strip() or rec.get("org")
    if not org:
        raise UsageError("give the organisation: --org ORG_ID (or set AVSB_ORG)",
                         hint="copy it from the dashboard's URL: /orgs/<ORG_ID>/...")
    org = _check_org(org)
    token = avsb_api.check_token(token, source=source)
    the_login = Login(base, org, token, "given")
    with api(the_login, transport=transport, timeout=timeout) as client:
        client.projects_page(limit=1)  # proves the token, the org and projects:read
        count = len(client.projects())
    host = _host(base)
    storage = "file" if insecure_storage else "keyring"
    files = FileKeyStore.tokens()
    try:
        old = files.get(host) if insecure_storage else keystore.get_token(host)
        if insecure_storage:
            files.set(host, token)
        else:
            keystore.set_token(host, token)
    except KeyringUnavailableError as exc:
        exc.hint = ("unlock or install a Secret Service (e.g. gnome-keyring), or pass "
                    f"--insecure-storage to keep the token in an owner-only file, or set "
                    f"{TOKEN_ENV} (CI)")
        raise

    def change(data: dict[str, Any]) -> None:
        target = data.setdefault(TABLE, {})
        if not isinstance(target, dict):
            raise ConfigError(f"'{TABLE}' in the config file is not a table")
        target.update({"api_url": base, "org": org, "token_storage": storage})

    try:
        store.update(change)
    except BaseException:
        with contextlib.suppress(AvsbError):  # put the old token back
            if old:
                files.set(host, old) if insecure_storage else keystore.set_token(host, old)
            else:
                files.delete(host) if insecure_storage else keystore.delete_token(host)
        raise
    if rec.get("token_storage") not in (None, storage):
        # The token moved between keyring and file: no stale copy left behind.
        with contextlib.suppress(AvsbError):
            files.delete(host) if storage == "keyring" else keystore.delete_token(host)
    doc = the_login.summary()
    doc.update(token_source=storage, projects=count,
               env_token_overrides=bool(os.environ.get(TOKEN_ENV, "").strip()))
    return doc


def logout(*, store: ConfigStore | None = None, keystore: Any | None = None) -> dict[str, Any]:
    """Delete the stored token of the configured host; fine when there is none."""
    from avsb_cli import keystore as keystore_mod
    from avsb_cli.keystore import FileKeyStore

    keystore = keystore or keystore_mod
    store = store or ConfigStore()
    rec = record(store.load())
    base = _api_url(rec)
    host = _host(base)
    deleted = FileKeyStore.tokens().delete(host)
    if rec.get("token_storage") == "keyring" or not deleted:
        try:
            deleted = keystore.delete_token(host) or deleted
        except AvsbError:
            if rec.get("token_storage") == "keyring":
                raise
    if "token_storage" in rec:
        store.update(lambda data: record(data).pop("token_storage", None))
    return {"api_url": base, "token_deleted": deleted,
            "env_token_set": bool(os.environ.get(TOKEN_ENV, "").strip())}


def whoami(*, store: ConfigStore | None = None, transport: Any | None = None,
           timeout: float | None = None) -> tuple[dict[str, Any], AvsbError | None]:
    """Who avsb is logged in as, and whether A vs B accepts it now (the error if not)."""
    store = store or ConfigStore()
    the_login = find_token(store.load())
    doc = the_login.summary()
    doc.update(logged_in=bool(the_login.token), accepted=None, projects=None, problem=None)
    if not the_login.token:
        return doc, AuthError("not logged in to A vs B",
                              hint=f"run: avsb login (or set {TOKEN_ENV})")
    try:
        with api(the_login, transport=transport, timeout=timeout) as client:
            doc["projects"] = len(client.projects())
        doc["accepted"] = True
        return doc, None
    except AvsbError as exc:
        doc["accepted"] = False if isinstance(exc, AuthError) else None
        doc["problem"] = exc.message
        return doc, exc


def list_projects(*, store: ConfigStore | None = None, transport: Any | None = None,
                  timeout: float | None = None) -> dict[str, Any]:
    store = store or ConfigStore()
    the_login = find_token(store.load())
    with api(the_login, transport=transport, timeout=timeout) as client:
        items = client.projects()
    return {"org": the_login.org, "api_url": the_login.api_url, "projects": items}


# The project at A vs B ---------------------------------------------------------------


@dataclass
class RemoteProject:
    api: Any
    id: str
    #: resolved by this command (config does not remember it yet)
    resolved_now: bool


def remembered_id(data: dict[str, Any], project: str) -> str | None:
    projects = data.get("projects")
    proj = projects.get(project) if isinstance(projects, dict) else None
    value = proj.get(PROJECT_ID) if isinstance(proj, dict) else None
    return value if isinstance(value, str) and value else None


def remember_id(data: dict[str, Any], project: str, project_id: str) -> None:
    """Set the project's A vs B id in a config document (inside ``ConfigStore.update``)."""
    projects = data.setdefault("projects", {})
    if isinstance(projects, dict):
        proj = projects.setdefault(project, {})
        if isinstance(proj, dict):
            proj[PROJECT_ID] = project_id


def resolve_project(items: list[dict[str, Any]], name: str) -> str:
    """The id of the project named ``name``: by id or shortId first, then by name."""
    for field in ("id", "shortId"):
        hits = [p for p in items if p.get(field) == name]
        if len(hits) == 1:
            return hits[0]["id"]
    hits = [p for p in items if p.get("name") == name] or [
        p for p in items if (p.get("name") or "").lower() == name.lower()]
    if len(hits) == 1:
        return hits[0]["id"]

    def show(ps: list[dict[str, Any]]) -> str:
        listed = ", ".join(f"{p.get('name')!r} (id {p['id']}"
                           + (f", shortId {p['shortId']})" if p.get("shortId") else ")")
                           for p in ps[:10])
        return listed + (f" and {len(ps) - 10} more" if len(ps) > 10 else "")

    if hits:
        raise UsageError(f"project name {name!r} is ambiguous at A vs B: {show(hits)}",
                         hint="name it by id or shortId with --project")
    raise UsageError(
        f"A vs B has no project {name!r} in this org"
        + (f"; it has {show(items)}" if items else "; it has no projects"),
        hint="name one by id, shortId or name with --project (avsb projects list), "
             "or pass --local",
    )


@contextlib.contextmanager
def remote_project(data: dict[str, Any], project: str, *, local: bool = False,
                   transport: Any | None = None,
                   timeout: float | None = None) -> Iterator[RemoteProject | None]:
    """The project at A vs B, or None when not logged in (or --local)."""
    if local:
        yield None
        return
    the_login = find_token(data)
    if not the_login.token:
        yield None
        return
    with api(the_login, transport=transport, timeout=timeout) as client:
        known = remembered_id(data, project)
        if known:
            yield RemoteProject(client, known, False)
        else:
            yield RemoteProject(client, resolve_project(client.projects(), project), True)
