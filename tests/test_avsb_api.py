"""avsb against a strict local A vs B stand-in (tests/support/fakeavsb.py):
login and the token, the integration changed at A vs B, all or nothing,
retries, conflicts, rate limits, bad answers, doctor."""

from __future__ import annotations

import json

import pytest

from avsb_cli import __version__, avsb_api
from avsb_cli import segment as seg
from avsb_cli.errors import ExitCode
from tests.conftest import KEY, KEY2, one_error_line
from tests.support.fakeavsb import ORG, PAT, PAT2, SERVICE, FakeAvsb
from tests.support.fakesegment import closed_port_url
from tests.test_contract import (
    DOCTOR,
    ENABLE,
    LOGIN,
    LOGOUT,
    PROJECT_ITEM,
    PROJECTS,
    REMOTE,
    STATUS,
    WHOAMI,
    assert_schema,
)

ENABLE_CMD = ("integrations", "segment", "enable")
DISABLE_CMD = ("integrations", "segment", "disable")
STATUS_CMD = ("integrations", "segment", "status")
SECRETS = (PAT, PAT2, SERVICE, KEY, KEY2)


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(seg, "_sleep", lambda s: None)
    monkeypatch.setattr(avsb_api, "_sleep", waits.append)
    return waits


def no_secrets(r, *more: str) -> None:  # type: ignore[no-untyped-def]
    for s in (*SECRETS, *more):
        assert s not in r.output, "a secret leaked"


def config_text(config_dir) -> str:  # type: ignore[no-untyped-def]
    path = config_dir / "config.toml"
    return path.read_text(encoding="utf-8") if path.exists() else ""


# Logging in ------------------------------------------------------------------------


def test_login_verifies_then_stores_in_the_keyring(cli, avsb, memory_keyring, config_dir):
    r = cli("login", "--with-token", input=PAT + "\n")
    assert r.exit_code == 0, r.output
    no_secrets(r)
    assert f"org {ORG}" in r.stdout and "personal" in r.stdout and "…" + PAT[-4:] in r.stdout
    assert "sees 2 projects" in r.stdout
    assert memory_keyring.get_password("avsb", f"token:{avsb.host}") == PAT
    text = config_text(config_dir)
    assert PAT not in text and PAT[-8:] not in text
    assert ORG in text and avsb.url in text
    # Verified with a one-item page first, as the Bearer token, as avsb.
    first = avsb.requests[0]
    assert first.method == "GET" and first.path.endswith("/projects")
    assert first.headers["authorization"] == f"Bearer {PAT}"
    assert first.headers["user-agent"] == f"avsb/{__version__}"


def test_login_json_and_service_token(cli, avsb):
    avsb.add_token(SERVICE)
    r = cli("login", "--with-token", "--json", input=SERVICE)
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert_schema(doc, LOGIN)
    assert doc["token_kind"] == "service" and doc["token_masked"] == "…" + SERVICE[-4:]
    assert doc["projects"] == 2 and doc["token_source"] == "keyring"
    no_secrets(r)


@pytest.mark.parametrize("bad", ["pat_123", "pat_" + "g" * 64, "hello world token",
                                 "avsb_svc_", PAT + "0", ""])
def test_malformed_token_is_refused_before_any_request(cli, avsb, config_dir, bad):
    r = cli("login", "--with-token", input=bad)
    line = one_error_line(r, ExitCode.AUTH)
    assert "token" in line
    if len(bad) > 8:
        assert bad not in r.output
    assert avsb.requests == []
    assert config_text(config_dir) == ""


def test_token_a_vs_b_refuses_is_not_stored(cli, avsb, memory_keyring, config_dir):
    r = cli("login", "--with-token", input=PAT2)
    line = one_error_line(r, ExitCode.AUTH)
    assert "401" in line and "avsb login" in line
    no_secrets(r)
    assert memory_keyring.get_password("avsb", f"token:{avsb.host}") is None
    assert config_text(config_dir) == ""


def test_unknown_org_is_an_error_and_nothing_is_stored(cli, avsb, memory_keyring, config_dir):
    r = cli("login", "--with-token", "--org", "org_other", input=PAT)
    line = one_error_line(r, ExitCode.USAGE)
    assert "org_other" in line
    assert memory_keyring.get_password("avsb", f"token:{avsb.host}") is None
    assert config_text(config_dir) == ""


def test_login_needs_an_org(cli, avsb, monkeypatch):
    monkeypatch.delenv("AVSB_ORG")
    r = cli("login", "--with-token", input=PAT)
    assert "--org" in one_error_line(r, ExitCode.USAGE)
    assert avsb.requests == []


def test_plain_http_only_for_loopback(cli, avsb):
    r = cli("login", "--with-token", "--api-url", "http://avsb.example.com", input=PAT)
    assert "plain http" in one_error_line(r, ExitCode.USAGE)
    no_secrets(r)


@pytest.mark.parametrize("fault,what", [
    ({"status": 200, "body": b"<html><body>Sign in</body></html>"}, "HTML page"),
    ({"status": 200, "body": b'{"data": [1, 2'}, "truncated or invalid JSON"),
    ({"status": 200, "body": b'{"items": []}'}, "without 'data'"),
    ({"status": 200, "body": b'{"data": "' + b"x" * (300 << 10) + b'"}'}, "more than avsb reads"),
    ({"status": 502, "body": b"<html>Bad gateway</html>"}, "gave up"),
])
def test_answers_that_are_not_the_envelope(cli, avsb, memory_keyring, config_dir, fault, what):
    avsb.fault("*", times=10, **fault)
    r = cli("login", "--with-token", input=PAT)
    line = one_error_line(r, ExitCode.NETWORK)
    assert what in line
    assert memory_keyring.get_password("avsb", f"token:{avsb.host}") is None
    assert config_text(config_dir) == ""


def test_redirect_is_not_followed_and_the_token_stays_home(cli, avsb):
    other = FakeAvsb().start()
    try:
        avsb.fault("*", status=302, location=f"{other.url}/api/orgs/{ORG}/projects")
        r = cli("login", "--with-token", input=PAT)
        line = one_error_line(r, ExitCode.NETWORK)
        assert "redirect" in line and "not followed" in line
        assert other.requests == []
    finally:
        other.stop()


def test_insecure_storage_keeps_the_token_in_the_owner_only_file(cli, avsb, memory_keyring,
                                                                 config_dir):
    r = cli("login", "--with-token", "--insecure-storage", input=PAT)
    assert r.exit_code == 0, r.output
    secrets = config_dir / "secrets.toml"
    assert PAT in secrets.read_text() and secrets.stat().st_mode & 0o077 == 0
    assert memory_keyring.get_password("avsb", f"token:{avsb.host}") is None
    doc = cli("whoami", "--json").json()
    assert doc["token_source"] == "file" and doc["accepted"] is True


def test_whoami_logout_and_env_token(cli, logged_in, monkeypatch, memory_keyring):
    doc = cli("whoami", "--json").json()
    assert_schema(doc, WHOAMI)
    assert doc == {**doc, "org": ORG, "token_kind": "personal", "token_source": "keyring",
                   "accepted": True, "logged_in": True, "token_masked": "…" + PAT[-4:]}
    r = cli("whoami")
    assert "keyring" in r.stdout and "yes" in r.stdout
    no_secrets(r)
    # AVSB_TOKEN wins; empty means unset.
    logged_in.add_token(SERVICE)
    monkeypatch.setenv("AVSB_TOKEN", SERVICE)
    assert cli("whoami", "--json").json()["token_source"] == "env"
    monkeypatch.setenv("AVSB_TOKEN", "")
    assert cli("whoami", "--json").json()["token_source"] == "keyring"
    out = cli("logout", "--json")
    assert_schema(out.json(), LOGOUT)
    assert out.json()["token_deleted"] is True
    assert memory_keyring.get_password("avsb", f"token:{logged_in.host}") is None
    again = cli("logout", "--json")
    assert again.exit_code == 0 and again.json()["token_deleted"] is False
    r = cli("whoami", "--json")
    assert r.exit_code == ExitCode.AUTH and r.json()["logged_in"] is False


def test_whoami_says_when_the_token_is_revoked(cli, logged_in):
    del logged_in.tokens[PAT]
    r = cli("whoami", "--json")
    assert r.exit_code == ExitCode.AUTH
    assert r.json()["accepted"] is False and "401" in r.json()["problem"]


def test_malformed_env_token_is_an_auth_error(cli, avsb, monkeypatch):
    monkeypatch.setenv("AVSB_TOKEN", "not-a-token-at-all-1234")
    r = cli(*STATUS_CMD)
    assert "AVSB_TOKEN" in one_error_line(r, ExitCode.AUTH)
    assert "not-a-token-at-all-1234" not in r.output


def test_a_token_in_a_usage_error_is_masked(cli):
    r = cli("login", "--bogus", PAT)
    assert r.exit_code == ExitCode.USAGE
    assert PAT not in r.output


def test_projects_list_follows_every_page(cli, logged_in):
    for i in range(230):
        logged_in.add_project(f"prj_{i:08d}", f"p{i}", f"s{i:05d}")
    r = cli("projects", "list", "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert_schema(doc, PROJECTS)
    for item in doc["projects"]:
        assert_schema(item, PROJECT_ITEM)
    assert len(doc["projects"]) == 232
    assert len(logged_in.of("GET", "/projects")) == 3
    table = cli("projects", "list")
    assert "prj_shop2222" in table.stdout and "shop22" in table.stdout


# The integration at A vs B -----------------------------------------------------------


def test_enable_turns_the_dashboard_on_with_the_key(cli, logged_in, config_dir):
    r = cli(*ENABLE_CMD, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == 0, r.output
    no_secrets(r)
    doc = r.json()
    assert_schema(doc, ENABLE)
    assert_schema(doc["remote"], REMOTE)
    assert doc["changed"] is True
    assert doc["remote"]["enabled"] and doc["remote"]["same_key_as_local"]
    state = logged_in.integration("prj_default1")
    assert state["enabled"] is True and state["writeKey"] == KEY
    put = logged_in.of("PUT")[0]
    get = logged_in.of("GET", "/integrations/segment")[0]
    assert put.json == {"enabled": True, "writeKey": KEY}
    assert put.headers["if-match"] == '"v1"' and put.headers["idempotency-key"]
    assert put.headers["user-agent"] == f"avsb/{__version__}"
    assert get.headers["authorization"] == f"Bearer {PAT}"
    # The id is remembered: the next command lists no projects.
    assert 'avsb_project_id = "prj_default1"' in config_text(config_dir)
    logged_in.requests.clear()
    again = cli(*ENABLE_CMD, "--write-key-stdin", "--json", input=KEY)
    assert again.json()["changed"] is False
    assert logged_in.of("PUT") == []
    assert [q for q in logged_in.requests if q.path.endswith("/projects")] == []
    assert "unchanged" in cli(*ENABLE_CMD, "--write-key-stdin", input=KEY).stdout


def test_project_named_by_name_short_id_or_id(cli, logged_in):
    for name in ("shop", "shop22", "prj_shop2222"):
        r = cli(*ENABLE_CMD, "--auto-detect", "-p", name, "--json")
        assert r.exit_code == 0, r.output
        assert r.json()["remote"]["project_id"] == "prj_shop2222"


def test_unknown_or_ambiguous_project_lists_what_exists(cli, logged_in, config_dir):
    before = config_text(config_dir)
    r = cli(*ENABLE_CMD, "--auto-detect", "-p", "nope")
    line = one_error_line(r, ExitCode.USAGE)
    assert "'shop'" in line and "prj_default1" in line
    logged_in.add_project("prj_twin0001", "twin")
    logged_in.add_project("prj_twin0002", "twin")
    line = one_error_line(cli(*STATUS_CMD, "-p", "twin"), ExitCode.USAGE)
    assert "ambiguous" in line and "prj_twin0001" in line and "prj_twin0002" in line
    assert config_text(config_dir) == before
    assert logged_in.of("PUT") == []


def test_disable_keeps_the_dashboard_key_unless_forget_key(cli, logged_in, memory_keyring):
    assert cli(*ENABLE_CMD, "--write-key-stdin", input=KEY).exit_code == 0
    r = cli(*DISABLE_CMD, "--json")
    assert r.exit_code == 0 and r.json()["changed"] is True
    assert logged_in.integration("prj_default1")["enabled"] is False
    assert logged_in.integration("prj_default1")["writeKey"] == KEY
    assert logged_in.of("PUT")[-1].json == {"enabled": False, "writeKey": KEY}
    r = cli(*DISABLE_CMD, "--json")
    assert r.json()["changed"] is False
    assert "unchanged" in cli(*DISABLE_CMD).stdout
    r = cli(*DISABLE_CMD, "--forget-key", "--json")
    assert r.json()["changed"] is True and r.json()["key_forgotten"] is True
    assert logged_in.integration("prj_default1")["writeKey"] is None
    assert memory_keyring.get_password("avsb", "segment:default") is None


def test_status_shows_the_dashboard_and_compares_keys(cli, logged_in):
    assert cli(*ENABLE_CMD, "--write-key-stdin", input=KEY).exit_code == 0
    logged_in.edit("prj_default1", writeKey=KEY2)
    doc = cli(*STATUS_CMD, "--json").json()
    assert_schema(doc, STATUS)
    assert doc["remote"]["same_key_as_local"] is False
    assert doc["remote"]["key_masked"] == "…" + KEY2[-4:]
    r = cli(*STATUS_CMD)
    assert "NOT the local key" in r.stdout
    no_secrets(r)
    logged_in.requests.clear()
    local = cli(*STATUS_CMD, "--local", "--json").json()
    assert local["remote"] is None and logged_in.requests == []


def test_without_a_token_local_only_and_said_once(cli, avsb):
    r = cli(*ENABLE_CMD, "--write-key-stdin", input=KEY)
    assert r.exit_code == 0
    assert r.stderr.count("A vs B was not changed") == 1 and "avsb login" in r.stderr
    doc = cli(*DISABLE_CMD, "--json").json()
    assert doc["remote"] is None
    assert avsb.requests == []
    r = cli(*ENABLE_CMD, "--local", "--json", input=KEY)
    assert "A vs B was not changed" not in r.stderr


def test_local_flag_touches_nothing_remote_when_logged_in(cli, logged_in):
    r = cli(*ENABLE_CMD, "--write-key-stdin", "--local", "--json", input=KEY)
    assert r.exit_code == 0 and r.json()["remote"] is None
    assert logged_in.requests == []


# All or nothing ------------------------------------------------------------------------


def _snapshot(config_dir, memory_keyring):  # type: ignore[no-untyped-def]
    return config_text(config_dir), dict(memory_keyring.items)


@pytest.mark.parametrize("fault", [
    {"status": 503}, {"reset": True}, {"status": 401}, {"status": 400},
])
def test_a_refused_or_failed_write_leaves_local_state_as_it_was(cli, logged_in, config_dir,
                                                                 memory_keyring, fault):
    assert cli(*ENABLE_CMD, "--write-key-stdin", input=KEY).exit_code == 0
    before = _snapshot(config_dir, memory_keyring)
    logged_in.fault(f"PUT {logged_in.seg_path('prj_default1')}", times=20, **fault)
    r = cli(*ENABLE_CMD, "--write-key-stdin", "--region", "eu", input=KEY2)
    assert r.exit_code in (ExitCode.NETWORK, ExitCode.AUTH), r.output
    one_error_line(r, r.exit_code)
    no_secrets(r)
    assert _snapshot(config_dir, memory_keyring) == before
    assert logged_in.integration("prj_default1")["writeKey"] == KEY


def test_disable_refused_leaves_local_state(cli, logged_in, config_dir, memory_keyring):
    assert cli(*ENABLE_CMD, "--write-key-stdin", input=KEY).exit_code == 0
    before = _snapshot(config_dir, memory_keyring)
    logged_in.fault(f"PUT {logged_in.seg_path('prj_default1')}", times=20, status=500)
    r = cli(*DISABLE_CMD, "--forget-key")
    one_error_line(r, ExitCode.NETWORK)
    assert _snapshot(config_dir, memory_keyring) == before


def test_a_failed_local_store_writes_nothing_at_a_vs_b(cli, logged_in, config_dir):
    import keyring
    import keyring.backends.fail

    from avsb_cli import keystore

    keyring.set_keyring(keyring.backends.fail.Keyring())
    keystore.reset()
    r = cli(*ENABLE_CMD, "--write-key-stdin", input=KEY)
    one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)  # the stored token is unreadable too
    logged_in.add_token(SERVICE)
    r = cli(*ENABLE_CMD, "--write-key-stdin", env={"AVSB_TOKEN": SERVICE}, input=KEY)
    one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)
    assert logged_in.of("PUT") == []
    assert logged_in.integration("prj_default1")["enabled"] is False


def test_retries_resend_the_same_idempotency_key_and_body(cli, logged_in):
    path = logged_in.seg_path("prj_default1")
    logged_in.fault(f"PUT {path}", status=503)
    logged_in.fault(f"PUT {path}", reset=True)
    # Applied, then the answer is cut: the retry must be a replay, not a second write.
    logged_in.fault(f"PUT {path}", truncate=True)
    r = cli(*ENABLE_CMD, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == 0, r.output
    puts = logged_in.of("PUT")
    assert len(puts) == 4
    assert len({p.headers["idempotency-key"] for p in puts}) == 1
    assert len({p.body for p in puts}) == 1
    assert len({p.headers["if-match"] for p in puts}) == 1
    assert logged_in.writes == 1
    assert r.json()["remote"]["enabled"] is True


def test_412_someone_changed_it_is_a_conflict_and_nothing_changes(cli, logged_in, config_dir,
                                                                 memory_keyring):
    before = _snapshot(config_dir, memory_keyring)
    path = logged_in.seg_path("prj_default1")
    logged_in.before("PUT", path, lambda: logged_in.edit("prj_default1", writeKey=KEY2))
    r = cli(*ENABLE_CMD, "--write-key-stdin", input=KEY)
    line = one_error_line(r, ExitCode.CONFLICT)
    assert "…" + KEY2[-4:] in line and "nothing was changed" in line
    no_secrets(r)
    assert _snapshot(config_dir, memory_keyring)[1] == before[1]
    assert "enabled = true" not in config_text(config_dir)
    assert logged_in.integration("prj_default1")["writeKey"] == KEY2


def test_412_already_as_asked_is_unchanged_success(cli, logged_in):
    path = logged_in.seg_path("prj_default1")
    logged_in.before("PUT", path, lambda: logged_in.edit("prj_default1", enabled=True,
                                                          writeKey=KEY))
    r = cli(*ENABLE_CMD, "--write-key-stdin", "--json", input=KEY)
    assert r.exit_code == 0, r.output
    assert r.json()["remote"]["enabled"] is True and logged_in.writes == 0


def test_409_reused_idempotency_key_is_a_conflict(cli, logged_in, config_dir, memory_keyring):
    before = _snapshot(config_dir, memory_keyring)
    logged_in.fault(f"PUT {logged_in.seg_path('prj_default1')}", status=409)
    r = cli(*ENABLE_CMD, "--write-key-stdin", input=KEY)
    assert "Idempotency-Key" in one_error_line(r, ExitCode.CONFLICT)
    assert _snapshot(config_dir, memory_keyring) == before


def test_403_names_the_missing_scope(cli, avsb, monkeypatch):
    avsb.add_token(SERVICE, scopes={"projects:read", "integrations:read"})
    monkeypatch.setenv("AVSB_TOKEN", SERVICE)
    r = cli(*ENABLE_CMD, "--auto-detect")
    line = one_error_line(r, ExitCode.AUTH)
    assert "integrations:write" in line
    assert "AVSB_TOKEN" in cli(*STATUS_CMD, env={"AVSB_TOKEN": PAT2}).stderr


def test_404_remembered_project_gone(cli, logged_in):
    assert cli(*ENABLE_CMD, "--auto-detect").exit_code == 0
    del logged_in.integrations[(ORG, "prj_default1")]
    r = cli(*STATUS_CMD)
    assert "404" in one_error_line(r, ExitCode.USAGE)


def test_429_waits_within_the_timeout_and_says_so(cli, logged_in, _no_waits):
    logged_in.fault("*", status=429, retry_after="2")
    r = cli(*STATUS_CMD, "--json")
    assert r.exit_code == 0, r.output
    assert _no_waits == [2.0]
    assert "rate limit" in r.stderr and "waiting 2s" in r.stderr


def test_429_past_the_timeout_says_when_to_try_again(cli, logged_in, _no_waits):
    logged_in.fault("*", status=429, retry_after="120")
    r = cli(*STATUS_CMD, "--timeout", "3")
    line = one_error_line(r, ExitCode.NETWORK)
    assert "try again in 120s" in line
    assert _no_waits == []


def test_429_without_retry_after_uses_the_reset_header(cli, logged_in, _no_waits):
    import time

    logged_in.fault("*", status=429, headers={"X-RateLimit-Reset": str(int(time.time()) + 3)})
    assert cli(*STATUS_CMD).exit_code == 0
    assert len(_no_waits) == 1 and 1 <= _no_waits[0] <= 3.5


def test_unreachable_a_vs_b_is_a_network_error(cli, logged_in, monkeypatch, config_dir):
    before = config_text(config_dir)
    logged_in.stop()
    monkeypatch.setenv("AVSB_TIMEOUT", "0.5")
    r = cli(*ENABLE_CMD, "--auto-detect")
    assert "refused" in one_error_line(r, ExitCode.NETWORK)
    assert config_text(config_dir) == before


# The key the dashboard holds ------------------------------------------------------------


def test_validate_and_test_event_from_the_dashboard(cli, logged_in, segment):
    logged_in.edit("prj_default1", enabled=True, writeKey=KEY)
    r = cli("segment", "validate", "--from-dashboard", "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["key_source"] == "dashboard"
    # No local key and a login: that is where the key comes from.
    r = cli("segment", "validate", "--json")
    assert r.json()["key_source"] == "dashboard"
    r = cli("segment", "test-event", "--from-dashboard", "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["key_source"] == "dashboard"
    # The token went to A vs B only, never to Segment.
    assert all("bearer" not in (q.headers.get("authorization") or "").lower()
               for q in segment.requests)
    no_secrets(r)


def test_from_dashboard_needs_a_login(cli, avsb, segment):
    r = cli("segment", "validate", "--from-dashboard")
    assert "avsb login" in one_error_line(r, ExitCode.AUTH)


# doctor ---------------------------------------------------------------------------------


def test_doctor_passes_against_the_stand_ins(cli, logged_in, segment):
    r = cli("doctor", "--json")
    assert r.exit_code == 0, r.output
    doc = r.json()
    assert_schema(doc, DOCTOR)
    assert {c["name"]: c["status"] for c in doc["checks"]} == {
        "config": "pass", "keyring": "pass", "login": "pass", "openapi": "pass",
        "segment_api": "pass", "segment_cdn": "pass"}
    assert "PASS" in cli("doctor").stdout


def test_doctor_says_when_the_api_moved(cli, logged_in, segment):
    del logged_in.openapi_paths["/api/orgs/{orgId}/projects/{projectId}/integrations/segment"]
    r = cli("doctor", "--json")
    assert r.exit_code != 0
    failed = [c for c in r.json()["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["openapi"]
    assert "PUT /api/orgs/{orgId}/projects/{projectId}/integrations/segment" in failed[0]["detail"]
    assert failed[0]["fix"]


def test_doctor_without_login_and_segment_down(cli, avsb, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_ENDPOINT", closed_port_url())
    monkeypatch.setenv("AVSB_SEGMENT_CDN_URL", closed_port_url())
    monkeypatch.setenv("AVSB_TIMEOUT", "1")
    r = cli("doctor", "--json")
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    status = {c["name"]: c["status"] for c in r.json()["checks"]}
    assert status["login"] == "fail" and status["openapi"] == "pass"
    assert status["segment_api"] == "fail" and status["segment_cdn"] == "fail"


def test_quiet_prints_nothing_for_the_account_commands(cli, logged_in, segment):
    for argv in (("whoami",), ("projects", "list"), ("doctor",), ("logout",)):
        r = cli(*argv, "--quiet")
        assert r.exit_code == 0 and r.output == "", (argv, r.output)
    r = cli("login", "--with-token", "-q", input=PAT)
    assert r.exit_code == 0 and r.output == ""


def test_the_json_error_document(cli, avsb):
    r = cli("login", "--with-token", "--json", input="pat_nope")
    assert r.exit_code == ExitCode.AUTH
    assert json.loads(r.stdout)["error"]["code"] == "auth"


def test_a_slow_a_vs_b_times_out_within_the_timeout(cli, logged_in):
    logged_in.fault("*", times=5, delay=2.0)
    r = cli(*STATUS_CMD, "--timeout", "0.6")
    assert "timed out" in one_error_line(r, ExitCode.NETWORK)



def test_login_prompts_for_the_token_on_a_terminal_and_hides_it(avsb, config_dir):
    from tests.test_contract import _pty_run, _terminal_env

    env = _terminal_env(AVSB_API_URL=avsb.url, AVSB_ORG=ORG, NO_COLOR="1",
                        AVSB_CONFIG_DIR=str(config_dir))
    code, out = _pty_run(["login", "--insecure-storage"], env, answer=PAT)
    text = out.decode("utf-8", "replace")
    assert code == 0, text
    assert "Paste your personal access token: " in text
    assert PAT not in text and "…" + PAT[-4:] in text
    assert PAT in (config_dir / "secrets.toml").read_text(encoding="utf-8")


def test_no_terminal_and_no_with_token_is_a_usage_error(cli, avsb):
    r = cli("login")
    assert "--with-token" in one_error_line(r, ExitCode.USAGE)
    assert avsb.requests == []


def test_login_without_a_keyring_stores_nothing_and_says_what_to_do(cli, avsb, config_dir):
    import keyring
    import keyring.backends.fail

    from avsb_cli import keystore

    keyring.set_keyring(keyring.backends.fail.Keyring())
    keystore.reset()
    r = cli("login", "--with-token", input=PAT)
    line = one_error_line(r, ExitCode.KEYRING_UNAVAILABLE)
    assert "--insecure-storage" in line and "AVSB_TOKEN" in line
    assert config_text(config_dir) == ""
    assert not (config_dir / "secrets.toml").exists()


def test_doctor_openapi_that_is_not_a_document(cli, logged_in, segment):
    logged_in.fault("/api/openapi.json", status=200, body=b"<html>maintenance</html>")
    r = cli("doctor", "--json")
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert r.exit_code == ExitCode.VALIDATION_FAILED
    assert checks["openapi"]["status"] == "fail" and "HTML" in checks["openapi"]["detail"]
    assert checks["login"]["status"] == "pass"


def test_ci_service_token_from_the_environment_needs_no_keyring(cli, avsb, monkeypatch,
                                                                config_dir):
    import keyring
    import keyring.backends.fail

    from avsb_cli import keystore

    keyring.set_keyring(keyring.backends.fail.Keyring())
    keystore.reset()
    avsb.add_token(SERVICE)
    monkeypatch.setenv("AVSB_TOKEN", SERVICE)
    r = cli(*ENABLE_CMD, "--auto-detect", "-p", "shop", "--json")
    assert r.exit_code == 0, r.output
    assert r.json()["remote"]["enabled"] is True
    assert avsb.integration("prj_shop2222")["enabled"] is True
    doc = cli(*STATUS_CMD, "-p", "shop", "--json").json()
    assert doc["remote"]["mode"] == "auto-detect" and doc["remote"]["same_key_as_local"]
    assert all(q.headers["authorization"] == f"Bearer {SERVICE}" for q in avsb.requests)
    assert SERVICE not in config_text(config_dir)


def test_status_remembers_the_project_it_resolved(cli, logged_in, config_dir):
    assert cli(*STATUS_CMD, "-p", "shop22").exit_code == 0
    assert 'avsb_project_id = "prj_shop2222"' in config_text(config_dir)
    logged_in.requests.clear()
    assert cli(*STATUS_CMD, "-p", "shop22").exit_code == 0
    assert [q.path for q in logged_in.requests] == [logged_in.seg_path("prj_shop2222")]


def test_the_stand_in_keeps_idempotency_keys_as_a_vs_b_does(avsb):
    """Same key and body: the cached answer (one write); another body: 409 (CONFLICT)."""
    from avsb_cli.errors import ConflictError

    with avsb_api.Api(avsb.url, ORG, PAT) as api:
        state = api.get_segment("prj_shop2222")
        first = api.put_segment("prj_shop2222", enabled=True, write_key=KEY, etag=state.etag,
                                idempotency_key="k-1")
        again = api.put_segment("prj_shop2222", enabled=True, write_key=KEY, etag=state.etag,
                                idempotency_key="k-1")
        assert again == first and avsb.writes == 1
        with pytest.raises(ConflictError, match="Idempotency-Key"):
            api.put_segment("prj_shop2222", enabled=False, write_key=KEY, etag=first.etag,
                            idempotency_key="k-1")
        with pytest.raises(avsb_api.PreconditionFailed):
            api.put_segment("prj_shop2222", enabled=False, write_key=KEY, etag=state.etag,
                            idempotency_key="k-2")
    assert avsb.writes == 1
