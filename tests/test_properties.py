"""Bad input, tried with hypothesis (issue 6): no input produces a traceback.

Write keys, experiment fields, endpoint URLs, project names, and the JSON
Lines files of `segment send` are generated, including whitespace, control
characters, unicode, empty and huge values. Each is either accepted (and
then round-trips exactly) or refused with its documented exit code and one
line, with nothing stored or sent. The example counts are in EXAMPLES; the
README's Reliability section quotes them.
"""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from avsb_cli import endpoints, writekey
from avsb_cli.config import check_project
from avsb_cli.errors import ExitCode, InvalidKeyError, UsageError
from tests.conftest import KEY

EXAMPLES = {
    "normalise": 200,
    "cli_key_stdin": 80,
    "cli_key_option": 50,
    "cli_key_file": 50,
    "fields": 60,
    "urls_structured": 200,
    "urls_text": 200,
    "projects": 200,
    "projects_cli": 50,
}
CLI = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ITEM = ("avsb", "segment:default")
ENABLE = ("integrations", "segment", "enable")

# Text that stresses a key: printable ASCII, whitespace, controls, unicode,
# characters that would break HTTP Basic or a URL, and huge repeats.
key_alphabet = st.one_of(
    st.sampled_from(string.ascii_letters + string.digits),
    st.sampled_from(" \t\n\r\x0b\x0c\x00\x1b\x7f\x85\xa0\u2028\u3000"),
    st.sampled_from(":/?#%@&=+\"'\\<>"),
    st.characters(codec="utf-8"),
)
key_like = st.one_of(
    st.text(key_alphabet, max_size=300),
    st.builds(lambda core, pad: pad + core + pad,
              st.text(string.ascii_letters + string.digits + "-_", min_size=6, max_size=40),
              st.sampled_from(["", " ", "\n", "\r\n", "\t", "  \n\n"])),
    st.builds(lambda ch, n: ch * n, st.sampled_from(["a", " ", "é", "\n"]),
              st.integers(250, 70_000)),
)


def is_good_key(key: str) -> bool:
    return (8 <= len(key) <= 256 and all(0x21 <= ord(c) <= 0x7E for c in key)
            and not set(key) & set(":/?#%"))


@settings(max_examples=EXAMPLES["normalise"], deadline=None)
@given(raw=key_like)
@example(raw="")
@example(raw=" " + KEY + "\n")
@example(raw=KEY[:7])
@example(raw="a" * 257)
def test_normalise_accepts_exactly_the_good_keys(raw):
    try:
        key = writekey.normalise(raw, source="test")
    except InvalidKeyError as exc:
        assert not is_good_key(raw.strip())
        assert "\n" not in exc.message
        stripped = raw.strip()
        if len(stripped) >= 12:
            assert stripped not in exc.message  # the key is never echoed
        return
    assert key == raw.strip() and is_good_key(key)
    assert writekey.normalise(key) == key  # idempotent
    masked = writekey.mask(key)
    assert len(masked) <= 5 and key not in masked
    assert writekey.fingerprint(key) == writekey.fingerprint(raw.strip())


def _expect_key_outcome(r, raw_read: str, memory_keyring, config_dir):
    """Accepted and stored exactly, or refused (5; 8 over 64 KB) with nothing stored."""
    assert "Traceback" not in r.output
    try:
        expected = writekey.normalise(raw_read)
    except InvalidKeyError:
        expected = None
    if expected is None:
        assert r.exit_code in (ExitCode.VALIDATION_FAILED, ExitCode.INPUT), r.output
        if r.exit_code == ExitCode.INPUT:
            assert len(raw_read) > 64 * 1024
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("avsb: error: the write key") or (
            r.exit_code == ExitCode.INPUT), r.stderr
        assert memory_keyring.items == {}
        assert not (config_dir / "config.toml").exists()
    else:
        assert r.exit_code == 0, r.output
        assert memory_keyring.items == {ITEM: expected}
        assert expected not in r.output


@settings(max_examples=EXAMPLES["cli_key_stdin"], **CLI)
@given(raw=key_like)
def test_enable_write_key_stdin(cli, memory_keyring, config_dir, raw):
    memory_keyring.items.clear()
    (config_dir / "config.toml").unlink(missing_ok=True)
    r = cli(*ENABLE, "--write-key-stdin", input=raw)
    # Standard input is text with universal newlines: a lone CR reads as LF.
    read = raw.replace("\r\n", "\n").replace("\r", "\n")
    _expect_key_outcome(r, read, memory_keyring, config_dir)


@settings(max_examples=EXAMPLES["cli_key_option"], **CLI)
@given(raw=st.text(key_alphabet, max_size=300))
def test_enable_write_key_option(cli, memory_keyring, config_dir, raw):
    assume("\x00" not in raw)  # argv can't carry NUL
    memory_keyring.items.clear()
    (config_dir / "config.toml").unlink(missing_ok=True)
    r = cli(*ENABLE, f"--write-key={raw}")
    assert "Traceback" not in r.output
    try:
        expected = writekey.normalise(raw)
    except InvalidKeyError:
        assert r.exit_code == ExitCode.VALIDATION_FAILED, r.output
        assert memory_keyring.items == {}
        return
    assert r.exit_code == 0, r.output
    assert memory_keyring.items == {ITEM: expected}


@settings(max_examples=EXAMPLES["cli_key_file"], **CLI)
@given(raw=st.one_of(st.binary(max_size=300), key_like.map(lambda s: s.encode("utf-8"))))
def test_enable_write_key_file(cli, memory_keyring, config_dir, tmp_path_factory, raw):
    memory_keyring.items.clear()
    (config_dir / "config.toml").unlink(missing_ok=True)
    path = tmp_path_factory.mktemp("kf") / "key.txt"
    path.write_bytes(raw)
    r = cli(*ENABLE, "--write-key-file", str(path))
    assert "Traceback" not in r.output
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert r.exit_code == ExitCode.INPUT, r.output
        assert memory_keyring.items == {}
        return
    # open() in text mode translates newlines too.
    _expect_key_outcome(r, text.replace("\r\n", "\n").replace("\r", "\n"), memory_keyring,
                        config_dir)


def test_refusal_keeps_what_was_stored(cli, memory_keyring, config_dir):
    assert cli(*ENABLE, "--write-key-stdin", "--region", "eu", input=KEY).exit_code == 0
    before = (config_dir / "config.toml").read_bytes()
    for bad in ["", "   ", "short", "a b c d e f g h", "é" * 20, "x" * 257, KEY + "\x00",
                KEY[:10] + ":" + KEY[10:], "x" * 70_000]:
        r = cli(*ENABLE, "--write-key-stdin", input=bad)
        assert r.exit_code in (ExitCode.VALIDATION_FAILED, ExitCode.INPUT), (bad[:20], r.output)
        assert memory_keyring.items == {ITEM: KEY}
        assert (config_dir / "config.toml").read_bytes() == before


# Experiment fields ----------------------------------------------------------------------

field_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", "😀", "\u0000"]),
              st.integers(2_000, 12_000)),
)


@settings(max_examples=EXAMPLES["fields"], **CLI)
@given(fields=st.tuples(field_text, field_text, field_text, field_text))
@example(fields=("", "", "", ""))
@example(fields=("x" * 33_000, "a", "b", "c"))
def test_experiment_fields_round_trip_or_are_refused(cli, segment, monkeypatch, fields):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    assume(all("\x00" not in f for f in fields))  # argv can't carry NUL
    names = ["experiment_id", "experiment_name", "variation_id", "variation_name"]
    args = [f"--{n.replace('_', '-')}={v}" for n, v in zip(names, fields, strict=True)]
    before = len(segment.requests)
    r = cli("segment", "test-event", "--json", "--anonymous-id=a1", *args)
    assert "Traceback" not in r.output
    doc = json.loads(r.stdout)
    size = len(json.dumps(fields, ensure_ascii=False).encode())
    if r.exit_code == 0:
        sent = segment.requests[-1].json
        assert sent["properties"] == {**dict(zip(names, fields, strict=True)),
                                      "event_name": "experiment_viewed"}
        assert sent["messageId"] == doc["message_id"]
        assert size < 32 * 1024
    else:
        assert r.exit_code == ExitCode.USAGE, r.output
        assert "32 KB" in doc["error"]["message"] or "empty" in doc["error"]["message"]
        assert len(segment.requests) == before  # refused locally, nothing sent
        if size > 33 * 1024:
            assert "32 KB" in doc["error"]["message"]


def test_fields_that_are_not_utf8_are_refused_cleanly(cli, segment, monkeypatch):
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    # An argv byte that isn't UTF-8 reaches Python as a lone surrogate.
    for extra in (["--experiment-id=\udcff"], ["--experiment-id=\udcff", "--dry-run"]):
        r = cli("segment", "test-event", *extra)
        assert r.exit_code == ExitCode.USAGE, r.output
        assert "not valid UTF-8" in r.stderr and "internal error" not in r.stderr
    assert segment.requests == []


# Endpoint URLs ----------------------------------------------------------------------------

hosts = st.sampled_from(["localhost", "127.0.0.1", "127.9.9.9", "[::1]", "LOCALHOST",
                         "api.segment.io", "Proxy.Example.com", "events.eu1.segmentapis.com",
                         "foo.localhost", "localhost.evil.com", "127.0.0.1.nip.io", "10.0.0.1"])
paths = st.lists(st.sampled_from(["v1", "V1", "", "segment", "api", "v2", "v1 "]),
                 max_size=4).map("/".join)
urls = st.builds(
    lambda scheme, host, port, path, slashes: f"{scheme}{host}{port}/{path}{slashes}",
    st.sampled_from(["", "http://", "https://", "HTTPS://", "Http://", "ftp://", "//"]),
    hosts,
    st.sampled_from(["", ":8080", ":443", ":0", ":99999", ":x"]),
    paths,
    st.sampled_from(["", "/", "//", "/v1", "/v1/", "?q=1", "#f"]),
)


def _check_normalised(out: str) -> None:
    assert out == endpoints.normalise_url(out)  # idempotent
    assert not out.endswith("/") and not out.lower().endswith("/v1")
    assert out.startswith(("https://", "http://"))
    from urllib.parse import urlsplit

    parts = urlsplit(out)
    if parts.scheme == "http":
        assert endpoints.is_loopback(parts.hostname or "")
    # With or without /v1 and trailing slashes: the same base.
    assert endpoints.normalise_url(out + "/v1") == out
    assert endpoints.normalise_url(out + "/v1/") == out
    assert endpoints.normalise_url(out + "//") == out


@settings(max_examples=EXAMPLES["urls_structured"], deadline=None)
@given(raw=urls)
@example(raw="https://proxy.example.com/v1/v1")
@example(raw="https://proxy.example.com/v1//v1/")
@example(raw="api.segment.io")
@example(raw="http://api.segment.io/v1")
def test_endpoint_urls(raw):
    try:
        out = endpoints.normalise_url(raw)
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    _check_normalised(out)


@settings(max_examples=EXAMPLES["urls_text"], deadline=None)
@given(raw=st.text(max_size=60))
def test_endpoint_urls_from_any_text(raw):
    try:
        out = endpoints.normalise_url(raw)
    except UsageError:
        return
    _check_normalised(out)


def test_http_is_refused_for_remote_hosts():
    for raw in ["http://api.segment.io", "http://localhost.evil.com", "http://10.0.0.1/v1",
                "http://127.0.0.1.nip.io"]:
        with pytest.raises(UsageError, match="plain http"):
            endpoints.normalise_url(raw)


# Project names --------------------------------------------------------------------------

PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
projects = st.one_of(
    st.text(max_size=70),
    st.from_regex(PROJECT_RE, fullmatch=True),
    st.from_regex(PROJECT_RE, fullmatch=True).map(lambda s: s + "\n"),
    st.sampled_from(["default", "a.b", "1", "true", "inf", "-x", ".hidden", "a" * 64,
                     "a" * 65, "a b", "é", "projects", "segment", "a..b", "a/b"]),
)


@settings(max_examples=EXAMPLES["projects"], deadline=None)
@given(name=projects)
def test_project_names(name):
    try:
        assert check_project(name) == name
    except UsageError as exc:
        assert not PROJECT_RE.fullmatch(name)
        assert "\n" not in exc.message.replace("\\n", "")
        return
    assert PROJECT_RE.fullmatch(name)


@settings(max_examples=EXAMPLES["projects_cli"], **CLI)
@given(name=projects)
def test_project_names_through_the_cli(cli, config_dir, memory_keyring, name):
    assume("\x00" not in name)
    r = cli(*ENABLE, "--auto-detect", "--json", f"--project={name}")
    assert "Traceback" not in r.output and r.exit_code != ExitCode.ERROR, r.output
    doc = json.loads(r.stdout)
    if PROJECT_RE.fullmatch(name):
        assert r.exit_code == 0 and doc["project"] == name
        r = cli("integrations", "segment", "status", "--json", f"--project={name}")
        assert r.json()["enabled"] is True and r.json()["project"] == name
        import tomllib

        data = tomllib.loads((config_dir / "config.toml").read_text())
        assert data["projects"][name]["segment"]["mode"] == "auto-detect"
    else:
        assert r.exit_code == ExitCode.USAGE and doc["error"]["code"] == "usage"


# JSON Lines for `segment send` ------------------------------------------------------------

EXAMPLES["send_jsonl"] = 50
# Any text, line separators included: JSON escapes \r and \n, but U+2028 and
# U+0085 stay raw under ensure_ascii=False and must not split a line.
nonblank = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
    lambda s: s.strip())
moments = st.datetimes(min_value=__import__("datetime").datetime(2000, 1, 1),
                       max_value=__import__("datetime").datetime(2099, 1, 1))


@st.composite
def good_records(draw):
    when = draw(moments).replace(microsecond=draw(st.integers(0, 999)) * 1000)
    canonical = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    ts = draw(st.sampled_from([canonical, canonical[:-1] + "+00:00"]))
    rec = {name: draw(nonblank) for name in
           ("experiment_id", "experiment_name", "variation_id", "variation_name")}
    who = draw(st.sampled_from(["user_id", "anonymous_id", "both"]))
    if who in ("user_id", "both"):
        rec["user_id"] = draw(nonblank)
    if who in ("anonymous_id", "both"):
        rec["anonymous_id"] = draw(nonblank)
    rec["timestamp"] = ts
    identity = (rec["experiment_id"], rec["variation_id"],
                "u:" + rec["user_id"] if "user_id" in rec else "a:" + rec["anonymous_id"],
                canonical)
    return rec, identity


@st.composite
def bad_lines(draw):
    rec, _ = draw(good_records())
    kind = draw(st.sampled_from(["truncated", "wrong type", "missing", "array", "scalar",
                                 "not utf-8", "bad timestamp", "no zone", "no ids",
                                 "not json", "impossible date"]))
    if kind == "truncated":
        text = json.dumps(rec, ensure_ascii=draw(st.booleans()))
        return text[: draw(st.integers(1, len(text) - 1))].encode()
    if kind == "wrong type":
        field = draw(st.sampled_from(["experiment_id", "variation_name", "timestamp"]))
        rec[field] = draw(st.sampled_from([[1], {"a": 1}, True, 1.5]))
    elif kind == "missing":
        del rec[draw(st.sampled_from(["experiment_id", "experiment_name", "variation_id",
                                      "variation_name", "timestamp"]))]
    elif kind == "array":
        return json.dumps([rec]).encode()
    elif kind == "scalar":
        return draw(st.sampled_from([b"5", b'"x"', b"null", b"true"]))
    elif kind == "not utf-8":
        return b"\xff\xfe" + json.dumps(rec).encode()
    elif kind == "bad timestamp":
        rec["timestamp"] = draw(st.sampled_from(["yesterday", "2024-13-01T00:00:00Z", "0"]))
    elif kind == "no zone":
        rec["timestamp"] = rec["timestamp"][:19]
    elif kind == "impossible date":
        rec["timestamp"] = "2024-02-30T00:00:00.000Z"
    elif kind == "no ids":
        rec.pop("user_id", None)
        rec.pop("anonymous_id", None)
    elif kind == "not json":
        # One line: a value holding a line break would make two bad lines of it.
        value = " ".join(rec["experiment_id"].splitlines())
        return b"{experiment_id: " + value.encode() + b"}"
    return json.dumps(rec).encode()


@st.composite
def jsonl_files(draw):
    items = draw(st.lists(st.one_of(good_records().map(lambda g: ("good", g)),
                                    bad_lines().map(lambda b: ("bad", b)),
                                    st.just(("blank", None))), min_size=1, max_size=12))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    chunks, good, bad_at = [], [], []
    for n, (kind, item) in enumerate(items, start=1):
        if kind == "good":
            rec, identity = item
            chunks.append(json.dumps(rec, ensure_ascii=draw(st.booleans())).encode())
            good.append((rec, identity))
        elif kind == "bad":
            chunks.append(item)
            bad_at.append(n)
        else:
            chunks.append(draw(st.sampled_from([b"", b"   ", b"\t"])))
    data = eol.join(chunks) + (eol if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, good, bad_at


@settings(max_examples=EXAMPLES["send_jsonl"], **CLI)
@given(case=jsonl_files())
def test_send_jsonl_reports_bad_lines_and_sends_the_rest(cli, segment, monkeypatch,
                                                        tmp_path_factory, case):
    data, good, bad_at = case
    monkeypatch.setenv("AVSB_SEGMENT_WRITE_KEY", KEY)
    folder = tmp_path_factory.mktemp("send")
    path = folder / "enrollments.jsonl"
    path.write_bytes(data)
    segment.events.clear()
    r = cli("segment", "send", str(path), "--json", "--failed-file", str(folder / "f.jsonl"))
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    doc = json.loads(r.stdout)
    assert r.exit_code == (ExitCode.INPUT if bad_at else 0), r.output
    assert doc["skipped"] == len(bad_at) and doc["valid"] == len(good)
    assert [b["line"] for b in doc["bad_lines"]] == bad_at[:len(doc["bad_lines"])]
    assert doc["sent"] == len(good) and doc["failed"] == 0
    # What arrived is exactly the good records, each enrollment once.
    identities = {identity for _, identity in good}
    assert len(segment.unique_events) == len(identities)
    sent_props = sorted(json.dumps(e["properties"], sort_keys=True)
                        for e in segment.unique_events.values())
    want_props = {}
    for rec, identity in good:
        want_props[identity] = json.dumps(
            {**{k: rec[k] for k in ("experiment_id", "experiment_name", "variation_id",
                                    "variation_name")}, "event_name": "experiment_viewed"},
            sort_keys=True)
    # Same enrollment twice in a file: the first one's names win; compare ids only then.
    if len(want_props) == len(good):
        assert sent_props == sorted(want_props.values())
    assert not (folder / "f.jsonl").exists()
