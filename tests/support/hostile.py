"""A misbehaving HTTP server on 127.0.0.1: each instance answers every request
the same bad way (see ``MODES``). It also plays a proxy that trickles its
answer to CONNECT. Bodies are generated as they are sent, never held whole.
"""

from __future__ import annotations

import gzip
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from functools import cache

CHUNK = b"x" * (64 << 10)


@cache
def bomb(mb_out: int) -> bytes:
    """Gzip of ``mb_out`` MB of zeros (about a thousandth of it), members concatenated."""
    member = gzip.compress(b"\0" * (min(mb_out, 200) << 20), 9)
    return member * max(1, mb_out // 200)


def _trickle(first: bytes) -> Iterator[bytes]:
    yield first
    while True:
        time.sleep(1)
        yield b"a"


def _endless() -> Iterator[bytes]:
    yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    line = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
    while True:
        yield line


def _huge(size: int = 1 << 30) -> Iterator[bytes]:
    yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
    for _ in range(size // len(CHUNK)):
        yield CHUNK


def _gzip(body: bytes) -> Iterator[bytes]:
    yield (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body))
    yield body


MODES = {
    # one byte a second, forever: inside the headers, then inside a body
    "trickle-headers": lambda: _trickle(b"HTTP/1.1 200 OK\r\nX-Slow: "),
    "trickle-body": lambda: _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{"),
    "endless": _endless,
    "huge": _huge,
    "bomb-2mb": lambda: _gzip(bomb(2000)),  # 2 MB on the wire, 2 GB inflated
    "bomb-200kb": lambda: _gzip(bomb(200)),  # under the read cap, 200 MB inflated
    # cut off in the headers: half a header line, a whole one, or none
    "cut-header-line": lambda: iter([b"HTTP/1.1 200 OK\r\nContent-Ty"]),
    "cut-after-a-header": lambda: iter([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"]),
    "cut-after-status": lambda: iter([b"HTTP/1.1 200 OK\r\n"]),
    # a proxy that takes a CONNECT and trickles its answer
    "proxy-trickle": lambda: _trickle(b"HTTP/1.1 200 Connection established\r\nX-Slow: "),
}


class Hostile:
    def __init__(self, mode: str) -> None:
        self.make = MODES[mode]
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    more = conn.recv(65536)
                    if not more:
                        return
                    body += more
                self.requests += 1
                for piece in itertools.chain(self.make()):
                    conn.sendall(piece)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
