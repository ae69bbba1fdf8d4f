"""A D-Bus session bus that hangs: it authenticates clients and answers Hello,
then never answers anything else (or, silent=True, never even authenticates).

Like a Secret Service stuck behind an unlock prompt, as seen from the bus.
``with HungBus(path) as address:`` gives a DBUS_SESSION_BUS_ADDRESS.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from jeepney import new_method_return
from jeepney.low_level import HeaderFields, Parser


class HungBus:
    def __init__(self, path: Path, *, silent: bool = False) -> None:
        self.path, self.silent = path, silent
        self.sock = socket.socket(socket.AF_UNIX)
        self.conns: list[socket.socket] = []
        self.calls: list[str] = []

    def __enter__(self) -> str:
        self.sock.bind(str(self.path))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return f"unix:path={self.path}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.silent:
                while conn.recv(4096):
                    pass
                return
            buf = b""
            while b"BEGIN\r\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                if b"AUTH" in data:
                    conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            parser, serial = Parser(), 1
            parser.add_data(buf.split(b"BEGIN\r\n", 1)[1])
            while True:
                msg = parser.get_next_message()
                while msg is not None:
                    member = msg.header.fields.get(HeaderFields.member)
                    self.calls.append(str(member))
                    if member == "Hello":
                        conn.sendall(new_method_return(msg, "s", (":1.1",)).serialise(serial))
                        serial += 1
                    msg = parser.get_next_message()
                data = conn.recv(4096)
                if not data:
                    return
                parser.add_data(data)
        except OSError:
            return
