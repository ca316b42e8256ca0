"""The market-data page's web server: stdlib ``http.server`` on a thread of its own (no extra dependency).

Routes::

    GET /                         the page (static/marketdata.html)
    GET /static/NAME              its JS and CSS
    GET /api/snapshot             the latest snapshot (JSON; 503 with a reason before the first one)
    GET /api/stream               Server-Sent Events: one ``snapshot`` event per new sample, ``end`` at the end
    GET /api/symbols              the instruments the feed has named so far [{instrument_id, symbol}]
    POST /api/choose              {"symbols": ["AAPL", ...]}: the tickers to sample (at most 16)

Every JSON answer is ``{"code": 0, "msg": "ok", "data": ...}`` or an error ``code`` with a readable ``msg``
(the exchange's convention). The server only reads snapshots the sampler built on the consumer thread.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from feedhandler.serve.sampler import BookSampler

STATIC_DIR = Path(__file__).with_name("static")
_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8"}
_NAME = re.compile(r"^[a-z0-9_\-]+\.(js|css|html)$")
MAX_BODY = 4096
STREAM_KEEPALIVE_S = 10.0


def serve_address(spec: str) -> tuple[str, int]:
    """``--serve`` value: ``PORT`` or ``HOST:PORT`` (default host 127.0.0.1) -> (host, port); ValueError."""
    host, sep, port = str(spec).rpartition(":")
    if not sep:
        host, port = "127.0.0.1", str(spec)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--serve {spec!r}: a port (0-65535) or HOST:PORT")
    return host or "127.0.0.1", int(port)


class MarketDataServer:
    """Serves ``sampler``'s snapshots until :meth:`stop`."""

    def __init__(self, sampler: BookSampler, host: str = "127.0.0.1", port: int = 8081, title: str = ""):
        self.sampler = sampler
        self.title = title
        self.requests = 0
        self.errors = 0
        handler = _handler_class(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)      # OSError when the port is taken
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.host = host
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "MarketDataServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="md-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.sampler.cond:                       # release the streams
            self.sampler.done = True
            self.sampler.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _handler_class(srv: MarketDataServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "feedhandler-md"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):          # quiet: the replay prints its own summary
            return

        def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, data, status: int = 200, code=0, msg: str = "ok") -> None:
            if status >= 400:
                srv.errors += 1
            self._send(status, json.dumps({"code": code, "msg": msg, "data": data}).encode(), "application/json")

        def do_GET(self):
            srv.requests += 1
            path = self.path.split("?", 1)[0]
            s = srv.sampler
            if path in ("/", "/index.html"):
                return self._static("marketdata.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/api/snapshot":
                if s.latest is None:
                    return self._json(None, 503, "NOT_READY", "no snapshot yet: the feed has not started")
                return self._json(s.latest)
            if path == "/api/symbols":
                return self._json([{"instrument_id": i, "symbol": n} for i, n in sorted(s.known.items())])
            if path == "/api/stream":
                return self._stream()
            return self._json(None, 404, "NOT_FOUND", f"no endpoint {path[:80]!r}")

        def do_POST(self):
            srv.requests += 1
            path = self.path.split("?", 1)[0]
            if path != "/api/choose":
                return self._json(None, 404, "NOT_FOUND", f"no endpoint {path[:80]!r}")
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._json(None, 400, "INVALID_PARAMETER", "Content-Length is not a number")
            if n > MAX_BODY:
                return self._json(None, 413, "PAYLOAD_TOO_LARGE", f"the body exceeds {MAX_BODY} bytes")
            try:
                body = json.loads(self.rfile.read(n) or b"null")
            except ValueError:
                return self._json(None, 400, "INVALID_JSON", "the body is not valid JSON")
            syms = body.get("symbols") if isinstance(body, dict) else None
            if not isinstance(syms, list) or not all(isinstance(x, str) and re.match(r"^[A-Za-z0-9 ._\-]{1,16}$", x)
                                                     for x in syms):
                return self._json(None, 400, "INVALID_PARAMETER", "symbols must be a list of tickers")
            return self._json({"chosen": srv.sampler.choose(syms)})

        def _static(self, name: str):
            if not _NAME.match(name) or not (STATIC_DIR / name).is_file():
                return self._json(None, 404, "NOT_FOUND", f"no file {name[:60]!r}")
            self._send(200, (STATIC_DIR / name).read_bytes(), _TYPES[Path(name).suffix])

        def _stream(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            s = srv.sampler
            seen = 0
            try:
                if s.latest is not None:
                    seen = s.latest["seq"]
                    self._event("snapshot", s.latest)
                while not srv._stopping.is_set():
                    snap = s.wait(seen, STREAM_KEEPALIVE_S)
                    if snap is not None and snap["seq"] > seen:
                        seen = snap["seq"]
                        self._event("snapshot", snap)
                    elif s.done:
                        self._event("end", {"seq": seen})
                        return
                    else:
                        self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return                                  # the browser left

        def _event(self, kind: str, data) -> None:
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

    return Handler
