"""A threaded HTTP server on 127.0.0.1, port 0: the part every fake server shares."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A client that gave up (timeout, Ctrl-C) makes the handler's write fail;
        # that is the point of those tests, not an error worth a traceback.
        self.httpd.handle_error = lambda *a: None  # type: ignore[method-assign]
        self.httpd.daemon_threads = True
        # A short poll interval makes stop() quick (the default waits up to 0.5 s).
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
