"""`avsb segment listen` as people meet it: a real browser running the real
analytics.js, Segment's own Python library, and a terminal (tmux).

The browser tests need Chromium and `npm ci --prefix tests/web` (the pinned
@segment/analytics-next, test-only); the terminal test needs tmux. Each skips
when its tool is missing, unless AVSB_REQUIRE_BROWSER=1 / AVSB_REQUIRE_TMUX=1
(CI, via .ci/run), where it fails instead.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from tests import test_listen
from tests.conftest import KEY, avsb_env
from tests.test_listen import GOOD, track

listening = test_listen.listening  # the fixture: the real command on a free port

WEB = Path(__file__).resolve().parent / "web"
ANALYTICS_JS = WEB / "node_modules/@segment/analytics-next/dist/umd/standalone.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What this sandbox (and CI) needs: no sandbox as root, no GPU, nothing
# fetched in the background (no network beyond loopback), a fresh profile.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]


def _need(missing: str | None, var: str) -> None:
    if missing:
        if os.environ.get(var, "") not in ("", "0"):
            pytest.fail(f"{missing} ({var}=1)")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def page_server():
    """tests/web over HTTP on another port than the listener: a cross-origin
    page, as a real site is, so CORS is part of the test."""
    _need(None if CHROMIUM else "chromium is not installed", "AVSB_REQUIRE_BROWSER")
    _need(None if ANALYTICS_JS.exists() else
          "analytics-next is not installed: run npm ci --prefix tests/web",
          "AVSB_REQUIRE_BROWSER")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(WEB)))
    httpd.handle_error = lambda *a: None  # type: ignore[method-assign]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def load_page(page_server: str, listener: str, props: dict, tmp_path: Path,
              event: str = "avsb_experiment") -> str:
    """Open the test page in headless Chromium; returns the DOM after the track call."""
    query = urllib.parse.urlencode({"listener": listener, "key": KEY, "event": event,
                                    "props": json.dumps(props)})
    proc = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         f"{page_server}/page.html?{query}"],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.browser
def test_the_real_analytics_js_snippet_call_is_received_and_passes(page_server, listening,
                                                                  tmp_path):
    lis = listening("--count", "1", "--timeout", "60")
    dom = load_page(page_server, lis.url, GOOD, tmp_path)
    assert '<p id="status">ready</p>' in dom  # analytics.js loaded its settings from us
    code, recs, _, err = lis.finish()
    assert code == 0, err
    events = [r for r in recs if r.get("kind") == "event"]
    assert len(events) == 1, recs
    ev = events[0]
    # Sent by analytics.js itself: its short path, its ids.
    assert ev["path"] == "/v1/t" and ev["message_id"].startswith("ajs-")
    assert ev["anonymous_id"] and ev["verdict"] == "pass"
    assert (ev["experiment_id"], ev["variation_name"]) == ("exp_abc123", "Variation B")
    assert "Traceback" not in err  # Chromium drops its keep-alive connections


@pytest.mark.browser
def test_a_page_sending_a_wrong_shape_fails(page_server, listening, tmp_path):
    lis = listening("--count", "1", "--timeout", "60")
    props = {k: v for k, v in GOOD.items() if k not in ("event_name", "experiment_id")}
    props |= {"experimentId": "exp_abc123", "variation_id": 7}
    load_page(page_server, lis.url, props, tmp_path, event="Avsb_Experiment")
    code, recs, _, err = lis.finish()
    assert code == 5, err
    ev = [r for r in recs if r.get("kind") == "event"][0]
    assert ev["verdict"] == "fail"
    assert ev["problems"] == [
        "event name 'Avsb_Experiment' should be 'avsb_experiment'",
        "missing event_name",
        "experimentId should be experiment_id",
        "variation_id is a number, should be a string",
    ]


# Segment's Python library ----------------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_analytics_python_delivers_to_the_listener(listening, gzip):
    from segment.analytics import Client

    lis = listening("--count", "1", "--timeout", "30")
    client = Client(write_key=KEY, host=lis.url, sync_mode=True, gzip=gzip, max_retries=1)
    client.identify("u_7", {"plan": "pro"})
    client.track("u_7", "avsb_experiment", dict(GOOD))
    client.flush()
    code, recs, out, err = lis.finish()
    assert code == 0, err
    events = [r for r in recs if r.get("kind") == "event"]
    assert [(e["type"], e["event"], e["user_id"], e["verdict"], e["path"]) for e in events] == [
        ("identify", None, "u_7", None, "/v1/batch"),
        ("track", "avsb_experiment", "u_7", "pass", "/v1/batch"),
    ]
    assert KEY not in out + err


# The terminal ---------------------------------------------------------------------------


@pytest.fixture
def tmux(tmp_path):
    """A private tmux server (its own socket) with one 160x40 window."""
    _need(None if shutil.which("tmux") else "tmux is not installed", "AVSB_REQUIRE_TMUX")
    sock = str(tmp_path / "tmux.sock")

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True,
                              check=True, timeout=20).stdout

    yield run
    subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, timeout=20)


def _screen(tmux, until: str, timeout: float = 20) -> str:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        text = tmux("capture-pane", "-p", "-J", "-t", "listen")
        if until in text or time.monotonic() > end:
            assert until in text, text
            return text
        time.sleep(0.1)


@pytest.mark.tmux
def test_the_terminal_shows_a_line_per_event_and_the_summary_on_ctrl_c(tmux, tmp_path):
    env = avsb_env()
    env.pop("NO_COLOR", None)  # a terminal, colours and all
    env["TERM"] = "xterm-256color"
    script = tmp_path / "run.sh"
    script.write_text(
        "".join(f"export {k}={_sh(v)}\n" for k, v in env.items() if k.isidentifier())
        + f"{_sh(sys.executable)} -m avsb_cli segment listen --port 0\n"
        + "echo EXIT=$?\nsleep 60\n")
    tmux("new-session", "-d", "-s", "listen", "-x", "160", "-y", "40", f"bash {script}")
    screen = _screen(tmux, "Waiting for events")
    url = next(w for w in screen.split() if w.startswith("http://127.0.0.1:"))
    url = url.rstrip('";')
    post = functools.partial(httpx.post, auth=(KEY, ""))
    post(url + "/v1/t", json=track(userId="u_1"))
    _screen(tmux, "PASS")
    post(url + "/v1/t", json=track(GOOD | {"variation_nam": "x"}))
    post(url + "/v1/t", json=track(event="Order Completed"))
    screen = _screen(tmux, "Order Completed")
    lines = [ln for ln in screen.splitlines() if " track " in f" {ln[10:]} "]
    assert len(lines) == 3, screen
    assert "avsb_experiment  user u_1  exp_abc123 / var_xyz789  PASS" in lines[0]
    assert lines[1].endswith("FAIL: extra variation_nam")
    tmux("send-keys", "-t", "listen", "C-c")
    screen = _screen(tmux, "EXIT=")
    assert "Summary: 3 events seen, 2 avsb_experiment: 1 passed, 1 failed." in screen
    assert "avsb: error: interrupted" in screen and "EXIT=130" in screen
    assert "Traceback" not in screen


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
