"""avsb's HTTP client (httpx's transport under transport.Bounded), against real
sockets on 127.0.0.1.

The fault tests (test_faults_network.py, test_send.py) already run every
command through it against the fake Segment; these pin down what only shows
at the socket: connections kept and reused, errors as avsb words them, and
the answer decoded within Bounded's cap.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from avsb_cli import segment


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection ``handle`` serves."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.handle = handle
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.handle(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One request (head and Content-Length body) off ``conn``; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    buf[:] = rest[length:]
    return head


def keep_alive(answer: bytes) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        buf = bytearray()
        while read_request(conn, buf) is not None:
            conn.sendall(answer)
    return handle


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"success\":true}"


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def client(**timeouts: float) -> httpx.Client:
    policy = segment.Policy(**timeouts) if timeouts else None
    c = segment.build_client(policy=policy, tls=False)
    assert isinstance(c._transport.inner, httpx.HTTPTransport)  # type: ignore[attr-defined]
    return c


def test_one_connection_carries_many_requests(serve):
    server = serve(keep_alive(OK))
    with client() as c:
        for _ in range(20):
            r = c.post(f"{server.url}/v1/batch", content=b"x" * 70_000)
            assert r.status_code == 200 and r.json() == {"success": True}
    assert server.connections == 1


def test_threads_share_the_pool_without_mixing_answers(serve):
    def echo_path(conn: socket.socket) -> None:
        buf = bytearray()
        while (head := read_request(conn, buf)) is not None:
            path = head.split(b" ")[1]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))

    server = serve(echo_path)
    wrong: list[str] = []
    with client() as c:
        def work(n: int) -> None:
            for i in range(15):
                path = f"/t{n}/{i}"
                if c.get(server.url + path).text != path:
                    wrong.append(path)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(work, range(6)))
    assert wrong == []
    assert server.connections <= 6


def test_connection_close_is_not_reused(serve):
    server = serve(keep_alive(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2"
                              b"\r\n\r\nok"))
    with client() as c:
        assert [c.get(server.url).text for _ in range(3)] == ["ok"] * 3
    assert server.connections == 3


def test_a_chunked_gzip_answer_is_decoded(serve):
    body = gzip.compress(b'{"success":true}')
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    server = serve(keep_alive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                              b"Content-Encoding: gzip\r\n\r\n" + chunked))
    with client() as c:
        assert c.get(server.url).json() == {"success": True}


def test_answer_headers_keep_their_bytes(serve):
    server = serve(keep_alive(b"HTTP/1.1 200 OK\r\nX-Odd: caf\xe9\r\nContent-Length: 2\r\n\r\nok"))
    with client() as c:
        r = c.get(server.url)
    assert r.text == "ok" and r.headers.raw[0] == (b"X-Odd", b"caf\xe9")
    assert r.http_version == "HTTP/1.1"


def test_an_http_1_0_answer_says_so_and_closes(serve):
    server = serve(keep_alive(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    with client() as c:
        assert [c.get(server.url).http_version for _ in range(2)] == ["HTTP/1.0"] * 2
    assert server.connections == 2  # HTTP/1.0 without keep-alive: not reused


def test_headers_and_body_arrive_as_httpx_built_them(serve):
    seen: list[bytes] = []

    def record(conn: socket.socket) -> None:
        buf = bytearray()
        head = read_request(conn, buf)
        seen.append(head or b"")
        conn.sendall(OK)

    server = serve(record)
    with client() as c:
        c.post(f"{server.url}/v1/batch?x=1", content=b"abc", auth=("key", ""),
               headers={"Content-Encoding": "gzip"})
    lines = seen[0].split(b"\r\n")
    assert lines[0] == b"POST /v1/batch?x=1 HTTP/1.1"
    names = [h.split(b":")[0].lower() for h in lines[1:]]
    assert names.count(b"host") == 1 and names.count(b"accept-encoding") == 1
    assert b"content-length: 3" in [h.lower() for h in lines[1:]]
    assert any(h.lower().startswith(b"authorization: basic ") for h in lines[1:])
    assert any(h.startswith(b"User-Agent: avsb/") for h in lines[1:])


# Failures, each as httpx raises it and as avsb words it --------------------------------


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def failure(url: str, **timeouts: float) -> tuple[httpx.HTTPError, str, bool]:
    with client(**timeouts) as c, pytest.raises(httpx.HTTPError) as info:
        c.get(url)
    return (info.value, *segment.describe_error(info.value))


def test_refused(serve):
    exc, cause, retry = failure(f"http://127.0.0.1:{closed_port()}/")
    assert isinstance(exc, httpx.ConnectError)
    assert (cause, retry) == ("connection refused", True)


def test_no_answer_in_time(serve):
    server = serve(lambda conn: conn.recv(65536) and threading.Event().wait(3))
    exc, cause, retry = failure(server.url, read_timeout=0.3)
    assert isinstance(exc, httpx.ReadTimeout)
    assert (cause, retry) == ("timed out waiting for the response", True)


def test_closed_without_an_answer(serve):
    server = serve(lambda conn: conn.recv(65536))
    exc, cause, retry = failure(server.url)
    assert isinstance(exc, httpx.RemoteProtocolError)
    assert retry is True and ("closed" in cause or "reset" in cause)


def test_an_answer_cut_short(serve):
    server = serve(lambda conn: conn.recv(65536) and conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"))
    exc, cause, retry = failure(server.url)
    assert isinstance(exc, httpx.RemoteProtocolError)
    assert retry is True


def test_not_http_at_all(serve):
    server = serve(lambda conn: conn.recv(65536) and conn.sendall(b"SSH-2.0-OpenSSH\r\n"))
    exc, _, retry = failure(server.url)
    assert isinstance(exc, httpx.RemoteProtocolError) and retry is True


def test_https_to_a_plain_port_is_a_tls_failure(serve):
    server = serve(lambda conn: conn.recv(65536) and conn.sendall(OK))
    exc, cause, retry = failure(f"https://127.0.0.1:{server.port}/")
    assert isinstance(exc, httpx.ConnectError)
    assert (cause, retry) == ("TLS handshake failed", False)


def test_a_failed_connection_is_not_pooled(serve):
    calls = [0]

    def flaky(conn: socket.socket) -> None:
        calls[0] += 1
        buf = bytearray()
        if calls[0] == 1:
            read_request(conn, buf)
            return  # the first connection dies without answering
        keep_alive(OK)(conn)

    server = serve(flaky)
    with client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(server.url)
        assert c.get(server.url).status_code == 200
    assert server.connections == 2


def test_a_proxy_in_the_environment_carries_https_never_plain_http(monkeypatch):
    for name in ("HTTP_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with segment.build_client() as c:
        via_proxy = c._transport_for_url(httpx.URL("https://api.segment.io/v1/batch"))
        direct = c._transport_for_url(httpx.URL("http://127.0.0.1:8080/v1/batch"))
    assert via_proxy is not c._transport and via_proxy.inner._pool._proxy_url is not None  # type: ignore[attr-defined]
    assert direct is c._transport  # (the write key never goes through a proxy in clear)


def test_a_nearer_deadline_armed_later_still_fires_first():
    """The watchdog is woken only for a new first deadline (not one a request):
    a near deadline armed after a far one must still fire on time."""
    from avsb_cli.transport import _Watchdog

    dog = _Watchdog()
    fired: list[str] = []
    near = threading.Event()
    dog.arm(time.monotonic() + 30, lambda: fired.append("far"))
    time.sleep(0.2)  # the watchdog thread is now asleep until the far deadline
    later = dog.arm(time.monotonic() + 60, lambda: fired.append("later"))
    dog.arm(time.monotonic() + 0.2, lambda: (fired.append("near"), near.set()))
    dog.disarm(later)
    assert near.wait(10), "the near deadline did not fire"
    assert fired == ["near"]
