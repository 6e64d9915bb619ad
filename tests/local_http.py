"""A local HTTP server for tests that drive real partner clients (``ChatOpenAI``...).

It keeps every request body and answers with what the test queued, so what is checked
is what the partner package really sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingServer(ThreadingHTTPServer):
    bodies: list[dict[str, Any]]
    answers: list[tuple[int, dict[str, Any]]]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class JSONHandler(BaseHTTPRequestHandler):
    """Records the body, answers the next queued ``(status, JSON body)``."""

    server: RecordingServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.answer()

    def answer(self) -> None:
        status, body = self.server.answers.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler] = JSONHandler) -> Iterator[RecordingServer]:
    """A :class:`RecordingServer` on a free loopback port, for the ``with`` block."""
    server = RecordingServer(("127.0.0.1", 0), handler)
    server.bodies, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
