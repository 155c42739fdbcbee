"""`hdc serve`: a small HTTP JSON service around a model, on the standard library.

    GET  /health     {"status": "ok", ...}                     (also HEAD)
    GET  /labels     {"labels": [...], "multilabel": false}    (also HEAD)
    POST /classify   {"text": "..."}                   -> one record
                     {"texts": ["...", "..."]}         -> {"results": [records]}
                     {"documents": [{"id", "text"}]}   -> {"results": [records]}

A record is the one `hdc predict` prints. Every answer is JSON, errors included: 400 for bad JSON
or a bad shape, 401 without the token (when --token or HDC_SERVE_TOKEN sets one), 404, 405 with
an Allow header, 408 for a request that takes too long to arrive, 411, 413, 503 when the server
is full. Nothing a client sends can stop the server.

How load is bounded:
- Connections are read by one asyncio loop, so a slow client costs a socket and a coroutine,
  not a thread. Each request must arrive whole within REQUEST_SECONDS of its first wait.
- At most MAX_CONNECTIONS are open at once; a connection beyond that gets 503 and is closed.
  The listen backlog (BACKLOG) holds a burst of new connections until they are accepted.
- Classification runs in a pool of `workers` threads; bodies waiting for it are held at most
  `workers` x 4 at a time, so memory is bounded by max_bytes times that.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from . import __version__
from .config import InferenceConfig
from .data import Document
from .errors import UsageError
from .predictor import Predictor, dumps, load_predictor, result_record

MAX_DOCUMENTS = 1000  # per request
BACKLOG = 1024  # connections the kernel queues before they are accepted
MAX_CONNECTIONS = 2048  # open at once; more get 503
REQUEST_SECONDS = 20.0  # a request (line, headers and body) must arrive within this
LINGER_SECONDS = 2.0  # after an answer that closes, how long the rest of a request is read and dropped
LINE_BYTES = 16384  # the request line and each header line
MAX_HEADERS = 100
TOKEN_VARIABLE = "HDC_SERVE_TOKEN"
ENDPOINTS = {"/health": ("GET", "HEAD"), "/labels": ("GET", "HEAD"), "/classify": ("POST",)}


class Reply(Exception):
    """An answer other than success: its status and message become the JSON error body."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.headers, self.close = status, headers or {}, close


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return connection != "close" if self.version == "HTTP/1.1" else connection == "keep-alive"


def documents_of(payload) -> tuple[list[Document], bool]:
    """The documents of a request body, and whether it was a batch."""
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return [Document("id", str(payload.get("id", "0")), text=payload["text"])], False
    if isinstance(payload, dict) and isinstance(payload.get("texts"), list):
        items = payload["texts"]
        if not all(isinstance(t, str) for t in items):
            raise Reply(HTTPStatus.BAD_REQUEST, '"texts" must be a list of strings')
        documents = [Document("id", str(i), text=t) for i, t in enumerate(items)]
    elif isinstance(payload, dict) and isinstance(payload.get("documents"), list):
        items = payload["documents"]
        if not all(isinstance(d, dict) and isinstance(d.get("text"), str) for d in items):
            raise Reply(HTTPStatus.BAD_REQUEST, '"documents" must be a list of {"id": ..., "text": "..."}')
        documents = [Document("id", str(d.get("id", i)), text=d["text"]) for i, d in enumerate(items)]
    else:
        raise Reply(HTTPStatus.BAD_REQUEST, 'expected {"text": "..."}, {"texts": [...]} or {"documents": [...]}')
    if len(documents) > MAX_DOCUMENTS:
        raise Reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_DOCUMENTS} documents per request")
    return documents, True


def printable(text: str) -> str:
    """Text for the log: control characters escaped, so a request cannot forge log lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class Server:
    """The service on a listening socket. serve_forever() runs it until shutdown() (from another
    thread) or a signal; the interface of socketserver's servers, on asyncio."""

    def __init__(
        self,
        predictor: Predictor,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_bytes: int = 10 << 20,
        workers: int = 0,
        token: str | None = None,
        log: bool = True,
    ):
        self.predictor, self.max_bytes, self.token, self.log = predictor, max_bytes, token, log
        try:
            self.socket = socket.create_server((host, port), backlog=BACKLOG)
        except OSError as e:
            raise UsageError(
                f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                "pass another --port, or --port 0 for a free one"
            ) from None
        self.server_address = self.socket.getsockname()[:2]
        self.workers = workers or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="hdc-classify")
        self.open = 0  # connections open now (read on the loop only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started, self._stopped = threading.Event(), threading.Event()

    # -- running

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (from another thread) and wait until serve_forever has returned."""
        self._started.wait(timeout=10)
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._stopped.wait(timeout=30)

    def server_close(self) -> None:
        self.socket.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._bodies = asyncio.Semaphore(self.workers * 4)
        server = await asyncio.start_server(self._connection, sock=self.socket, backlog=BACKLOG, limit=LINE_BYTES)
        self._started.set()
        async with server:
            await self._stop.wait()

    # -- one connection: requests one after another (HTTP/1.1 keep-alive)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = "{}:{}".format(*(writer.get_extra_info("peername") or ("?", "?"))[:2])
        if self.open >= MAX_CONNECTIONS:
            await self._send(writer, HTTPStatus.SERVICE_UNAVAILABLE, {"error": "server busy; retry"}, close=True)
            await self._linger(reader, writer)
            return
        self.open += 1
        try:
            while True:
                try:  # an idle keep-alive connection is closed without an answer
                    first = await asyncio.wait_for(reader.read(1), REQUEST_SECONDS)
                except (asyncio.TimeoutError, TimeoutError, ConnectionError):
                    break
                if not first:
                    break  # the client closed the connection
                start, request = time.perf_counter(), None
                try:
                    request = await asyncio.wait_for(self._read(first, reader, writer), REQUEST_SECONDS)
                    status, body, headers = await self._answer(request)
                    close = not request.keep_alive
                except Reply as e:
                    status, body, headers = e.status, {"error": str(e), "status": int(e.status)}, e.headers
                    close = e.close or request is None or not request.keep_alive
                except (asyncio.TimeoutError, TimeoutError):
                    status, body, headers, close = HTTPStatus.REQUEST_TIMEOUT, {"error": "request too slow"}, {}, True
                except (ConnectionError, asyncio.IncompleteReadError):
                    break
                head = request is not None and request.method == "HEAD"
                await self._send(writer, status, body, headers, close, head)
                self._access(client, request, status, start)
                if close:
                    await self._linger(reader, writer)
                    break
        except Exception as e:  # a bug costs one connection, never the server
            print(f"{client}: connection failed: {printable(repr(e))}", file=sys.stderr)
        finally:
            self.open -= 1
            writer.close()

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close our side, then read what the client still sends for a moment: closing a socket
        with unread data makes the kernel reset the connection, and the client would lose the
        answer it has not read yet (a 413 sent before the body, a 503)."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            deadline = time.perf_counter() + LINGER_SECONDS
            while time.perf_counter() < deadline and await asyncio.wait_for(reader.read(65536), LINGER_SECONDS):
                pass
        except (asyncio.TimeoutError, TimeoutError, ConnectionError, OSError):
            pass
        writer.close()

    async def _read(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request:
        """The request whose first byte is `first`."""
        try:
            line = first + await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise Reply(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {LINE_BYTES} bytes") from None
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise Reply(HTTPStatus.BAD_REQUEST, "not an HTTP/1.x request line")
        method, target, version = parts
        headers = {}
        for _ in range(MAX_HEADERS + 1):
            try:
                header = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise Reply(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"a header over {LINE_BYTES} bytes") from None
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise Reply(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_HEADERS} headers")
        request = Request(method, target.split("?", 1)[0], version, headers)
        if method == "POST":
            request.body = await self._body(request, reader, writer)
        return request

    async def _body(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise Reply(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required (chunked bodies are not read)")
        if int(length) > self.max_bytes:  # the body is not read, so the connection cannot be reused
            message = f"body of {int(length):,} bytes is over the limit of {self.max_bytes:,}"
            raise Reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, message, close=True)
        if request.headers.get("expect", "").lower() == "100-continue":  # curl asks before large bodies
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        async with self._bodies:
            return await reader.readexactly(int(length))

    # -- answers

    async def _answer(self, request: Request) -> tuple[HTTPStatus, dict, dict[str, str]]:
        allowed = ENDPOINTS.get(request.path)
        if allowed is None:
            endpoints = ", ".join(f"{' or '.join(m)} {p}" for p, m in ENDPOINTS.items())
            raise Reply(HTTPStatus.NOT_FOUND, f"no such endpoint {printable(request.path)}; use {endpoints}")
        if request.method not in allowed:
            raise Reply(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{printable(request.method)} is not allowed on {request.path}; use {' or '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        if request.path == "/health":
            health = {"status": "ok", "version": __version__}
            if not self.token:  # what is served says nothing without the token
                health |= {"model": self.predictor.source, "labels": len(self.predictor.labels)}
            return HTTPStatus.OK, health, {}
        self._authorize(request)
        if request.path == "/labels":
            return (
                HTTPStatus.OK,
                {"labels": list(self.predictor.labels), "multilabel": self.predictor.info.multilabel},
                {},
            )
        try:
            payload = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise Reply(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {e}") from None
        except RecursionError:
            raise Reply(HTTPStatus.BAD_REQUEST, "body is JSON nested too deeply") from None
        documents, batch = documents_of(payload)
        records = await asyncio.get_running_loop().run_in_executor(self.pool, self._classify, documents)
        return HTTPStatus.OK, ({"results": records} if batch else records[0]), {}

    def _authorize(self, request: Request) -> None:
        if not self.token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise Reply(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <token>",
                {"WWW-Authenticate": "Bearer"},
            )

    def _classify(self, documents: list[Document]) -> list[dict]:
        info, settings = self.predictor.info, self.predictor.settings
        return [result_record(o, info, settings) for o in self.predictor.run(documents, progress=False)]

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: dict,
        headers: dict[str, str] | None = None,
        close: bool = False,
        head: bool = False,
    ) -> None:
        data = dumps(body).encode("utf-8")
        lines = [
            f"HTTP/1.1 {int(status)} {status.phrase}",
            f"Server: hdc/{__version__}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(data)}",
            f"Connection: {'close' if close else 'keep-alive'}",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else data))
        try:
            await writer.drain()
        except ConnectionError:
            pass

    def _access(self, client: str, request: Request | None, status: HTTPStatus, start: float) -> None:
        if self.log:
            what = f"{request.method} {request.path}" if request else "-"
            ms = 1000 * (time.perf_counter() - start)
            print(f"{client} {printable(what)} {int(status)} {ms:.1f} ms", file=sys.stderr)


def make_server(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: InferenceConfig = InferenceConfig(),
    max_bytes: int = 10 << 20,
    workers: int = 0,
    token: str | None = None,
    log: bool = True,
) -> Server:
    """The server for `model`; token: None reads HDC_SERVE_TOKEN (unset or empty: no token)."""
    token = os.environ.get(TOKEN_VARIABLE) if token is None else token
    return Server(load_predictor(model, settings), host, port, max_bytes, workers, token or None, log)


def serve(model: str | Path, **options) -> None:
    """Serve until SIGTERM or Ctrl-C; `options` are those of `make_server`."""
    server = make_server(model, **options)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address
    locked = " (token required)" if server.token else ""
    print(
        f"serving {model} on http://{host}:{port}{locked} (POST /classify, GET /health, GET /labels); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
