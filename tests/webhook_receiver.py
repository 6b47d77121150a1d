"""A webhook receiver on localhost that records requests and can fail the first ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    calls: int = 0


@contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(url="", fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.calls += 1
            ok = receiver.calls > receiver.fail_first
            if ok:
                receiver.received.append((dict(self.headers), body))
            self.send_response(204 if ok else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/homeward"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
