"""`hdc serve`: a small HTTP JSON service around a model, on the standard library.

    GET  /health     {"status": "ok", ...}
    GET  /labels     {"labels": [...], "multilabel": false}
    POST /classify   {"text": "..."}                   -> one record
                     {"texts": ["...", "..."]}         -> {"results": [records]}
                     {"documents": [{"id", "text"}]}   -> {"results": [records]}

A record is the one `hdc predict` prints. Bodies larger than --max-bytes get 413, bad JSON or a
bad shape 400 with a message; nothing a client sends can stop the server. It binds to
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import __version__
from .data import Document
from .predict import Predictor, load_predictor, result_record

MAX_DOCUMENTS = 1000  # per request


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def _documents(payload) -> tuple[list[Document], bool]:
    """The documents of a request body, and whether it was a batch."""
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return [Document("id", str(payload.get("id", "0")), text=payload["text"])], False
    if isinstance(payload, dict) and isinstance(payload.get("texts"), list):
        items = payload["texts"]
        if not all(isinstance(t, str) for t in items):
            raise BadRequest(HTTPStatus.BAD_REQUEST, '"texts" must be a list of strings')
        documents = [Document("id", str(i), text=t) for i, t in enumerate(items)]
    elif isinstance(payload, dict) and isinstance(payload.get("documents"), list):
        items = payload["documents"]
        if not all(isinstance(d, dict) and isinstance(d.get("text"), str) for d in items):
            raise BadRequest(HTTPStatus.BAD_REQUEST, '"documents" must be a list of {"id": ..., "text": "..."}')
        documents = [Document("id", str(d.get("id", i)), text=d["text"]) for i, d in enumerate(items)]
    else:
        raise BadRequest(HTTPStatus.BAD_REQUEST, 'expected {"text": "..."}, {"texts": [...]} or {"documents": [...]}')
    if len(documents) > MAX_DOCUMENTS:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_DOCUMENTS} documents per request")
    return documents, True


def make_handler(predictor: Predictor, max_bytes: int, k: int, threshold: float, timeout: float = 30.0):
    info = predictor.info

    class Handler(BaseHTTPRequestHandler):
        server_version = f"hdc/{__version__}"
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            self.timeout = timeout  # a client that stops sending does not hold a thread forever
            super().setup()

        def _send(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, {"error": message, "status": int(status)})

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(
                    HTTPStatus.OK,
                    {"status": "ok", "model": predictor.source, "version": __version__, "labels": len(info.labels)},
                )
            elif self.path == "/labels":
                self._send(HTTPStatus.OK, {"labels": list(info.labels), "multilabel": info.multilabel})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {self.path}; use /classify, /health or /labels")

        def do_POST(self) -> None:
            if self.path != "/classify":
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {self.path}; POST to /classify")
                return
            try:
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
                if int(length) > max_bytes:
                    self.close_connection = True  # the body is not read: do not reuse the connection
                    raise BadRequest(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"body of {int(length):,} bytes is over the limit of {max_bytes:,}",
                    )
                body = self.rfile.read(int(length))
                try:
                    payload = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {e}") from None
                documents, batch = _documents(payload)
                records = [
                    result_record(o, info.labels, info.multilabel, k, threshold)
                    for o in predictor.run(documents, progress=False)
                ]
            except BadRequest as e:
                self._error(e.status, str(e))
                return
            except Exception as e:  # a bug must cost one request, never the server
                self.log_error("classify failed: %r", e)
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"classification failed: {e}")
                return
            self._send(HTTPStatus.OK, {"results": records} if batch else records[0])

        def log_message(self, format: str, *args) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Handler


def make_server(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 0,
    max_bytes: int = 10 << 20,
    k: int = 3,
    threshold: float = 0.5,
) -> ThreadingHTTPServer:
    predictor = load_predictor(model, threads)
    server = ThreadingHTTPServer((host, port), make_handler(predictor, max_bytes, k, threshold))
    server.daemon_threads = True
    return server


def serve(model: str | Path, **options) -> None:
    """Serve until SIGTERM or Ctrl-C; `options` are those of `make_server`."""
    server = make_server(model, **options)
    stop = threading.Event()

    def shutdown(*_):
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    host, port = server.server_address[:2]
    print(
        f"serving {model} on http://{host}:{port} (POST /classify, GET /health, GET /labels); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
