"""`basin hive serve`: the coordinator over HTTP (Starlette on uvicorn), thin over `Coordinator`.

    GET  /head          the branch head, round, coordinator key and chart (JSON)
    GET  /block/{cid}   a block of the repository (raw bytes, verified on the way out)
    GET  /history/{cid}[?have=CID]
                        a page of that commit's history, down to `have`, as a CAR (at most
                        3 MiB of blocks: the edge asks again from where it ends)
    POST /update        a signed update record (DAG-CBOR body): 202 with its CID and round, or a
                        status and a one-line reason ({"error": ...}) for every refusal
    GET  /status        counts of taken, refused and pending updates, and what was published

Handlers run the coordinator in one thread of its own (it uses SQLite; one thread also keeps the
allocator to one arena, so the memory a round's close takes is reused by the next round's), and a
timer closes rounds after T seconds; a round also closes as soon as it holds M updates.

Updates go through two stages, each taking in a batch of whatever has arrived while it was busy,
in arrival order: decoding and signature verification in two processes of their own, each batch
split between them (`Decoder`, about 40% of an update's cost, beside the GIL of the server's
process; one process had been the intake's bottleneck), then every other check by `submit_many` in
the coordinator's thread, all of a batch journaled in one transaction and each answered only once
that transaction is committed (group commit: one sync to disk per batch, not per update). One
batch is decoded while the one before it is journaled. A round that fills up is closed after its
updates are answered. POST /update is served on ASGI directly, the other routes through
Starlette. Listens on 127.0.0.1 unless told otherwise.

With a remote to publish to (`Publisher`), the branch is pushed there (`remote.push`: blocks,
signed heads record, IPNS, pubsub) at start and after every round that made a new head, in a
thread of its own, outside the path of any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import math
import os
import pickle
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..cid import CID
from ..errors import BasinError
from ..ingest import open_source
from ..repository import Repository
from . import pages
from .coordinator import Coordinator, Refused, decode_many

TICK = 0.2  # seconds between checks of the round timer
BATCH = 256  # the most updates taken in (and journaled) together
DECODE_TIMEOUT = 10.0  # seconds a decoding process may take for a batch (tens of ms) before it is
# killed, its share decoded in the coordinator's thread, and another started (RESTART_SECONDS)
RESTART_SECONDS = 10.0  # a failed decoding process is replaced at most this often
PUBLISH_GRACE = 10.0  # seconds a stopping server waits for a push under way
BODY_SECONDS = 30.0  # an update's body must arrive within this, once its headers have
HEADER_SECONDS = 10.0  # a request's headers must arrive within this (of opening or last answer)
MAX_CONNECTIONS = 4096  # open at once; past it a new connection is answered 503 and closed
MAX_HEAD_BYTES = 16384  # a request's line and headers (h11's bound; httptools has none)
FD_RESERVE = 128  # file descriptors kept for everything but connections (journal, pipes, blocks)
# processes decoding updates beside the coordinator's: two share a batch (Worker._decoded)
DECODERS = 2
GC_THRESHOLD = (50_000, 20, 10)  # gc.set_threshold in the server: _tune_memory
MALLOC_THRESHOLD = 128 * 1024  # glibc's trim and mmap thresholds, fixed: _tune_memory
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


class Decoder:
    """A process of its own that decodes updates and verifies their signatures (`decode_many`,
    about 40% of an update's cost) beside the GIL of the server's process: this
    Python, started afresh (`_decoder_main`), a batch of bodies in on its stdin and their
    decodings out on its stdout (pickled, length-prefixed). It exits at EOF on its stdin: when
    the server stops, even by SIGKILL. Used from the event loop, its pipes non-blocking: a
    batch is written and its answer read as the pipes let them, so a process that stops
    answering (or reading) holds up its own batch, for DECODE_TIMEOUT at most, and nothing
    else: the server goes on serving."""

    def __init__(self):
        root = str(Path(__file__).resolve().parents[2])  # where this basinvcs is imported from
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from basinvcs.hive.server import _decoder_main as m; m()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=path),
        )
        os.set_blocking(self.process.stdin.fileno(), False)
        os.set_blocking(self.process.stdout.fileno(), False)

    async def decode(self, bodies: list[bytes], limit: int) -> list:
        """`decode_many(bodies, limit)` there (one batch at a time: the caller waits for it);
        TimeoutError past DECODE_TIMEOUT, OSError or EOFError if the process went away."""
        async with asyncio.timeout(DECODE_TIMEOUT):
            await _write_all(self.process.stdin.fileno(), _frame((bodies, limit)))
            (size,) = struct.unpack("!Q", await _read_exactly(self.process.stdout.fileno(), 8))
            answer = pickle.loads(await _read_exactly(self.process.stdout.fileno(), size))
        if not isinstance(answer, list) or len(answer) != len(bodies):
            raise ValueError("the decoding process answered something else")
        return answer

    def kill(self) -> None:
        """Stop a process that failed, at once (it may be stopped or stuck: not waited for)."""
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()

    def close(self) -> None:
        self.process.stdin.close()  # EOF: it exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process.stdout.close()


def _frame(value: object) -> bytes:
    """A message between the server and a decoding process: its length, then the pickle."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!Q", len(data)) + data


def _send(fd: int, value: object) -> None:
    view = memoryview(_frame(value))
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> object:
    """One message from `fd` (blocking until it is whole); EOFError at the end."""

    def exactly(n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError("the pipe closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack("!Q", exactly(8))
    return pickle.loads(exactly(size))


async def _write_all(fd: int, data: bytes) -> None:
    """All of `data` into the non-blocking pipe `fd`, waiting (in the loop) while it is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(fd, writing=True)


async def _read_exactly(fd: int, n: int) -> bytes:
    """`n` bytes from the non-blocking pipe `fd`, waiting (in the loop) while it is empty."""
    chunks = []
    while n:
        try:
            chunk = os.read(fd, min(n, 1 << 20))
        except BlockingIOError:
            await _ready(fd, writing=False)
            continue
        if not chunk:
            raise EOFError("the pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


async def _ready(fd: int, writing: bool) -> None:
    """Until `fd` can be written (or read) without blocking."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    add, remove = (
        (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    )
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


def _decoder_main() -> None:
    """The decoding process: a batch of bodies in, `decode_many`'s answer out, until EOF (Nones
    for a batch it could not decode: the coordinator's thread then decodes it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server; EOF stops this
    answers = os.dup(1)
    os.dup2(2, 1)  # nothing else may write into the answers' pipe
    while True:
        try:
            bodies, limit = _receive(0)
        except (EOFError, OSError):
            return
        try:
            decoded = decode_many(bodies, limit)
        except Exception:  # the coordinator's thread decodes them again and reports the error
            decoded = [None] * len(bodies)
        try:
            _send(answers, decoded)
        except OSError:
            return


class Worker:
    """The coordinator's one thread, the processes that decode updates for it, and the updates
    on their way: a pipeline of two stages, so that one batch is decoded while the one before it
    is journaled. Both keep arrival order."""

    def __init__(self, coordinator: Coordinator, decoders: int = DECODERS):
        self.coordinator = coordinator
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hive-coordinator")
        self.wanted = decoders
        self.decoders: list[Decoder] = []
        self.restart_after = 0.0  # time.monotonic() from when failed processes may be replaced
        self.arrived: list[tuple[bytes, asyncio.Future]] = []  # waiting to be decoded
        self.decoded: list[tuple[bytes, asyncio.Future, object]] = []  # waiting to go in
        self.decoding: asyncio.Task | None = None
        self.taking: asyncio.Task | None = None

    def start(self) -> None:
        """Start the decoding processes; without any, the coordinator's thread decodes."""
        try:
            while len(self.decoders) < self.wanted:
                self.decoders.append(Decoder())
        except OSError as exc:
            self.coordinator.log(f"{len(self.decoders)} decoding processes ({exc})")

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, body: bytes) -> dict | BasinError:
        """The update's answer: its CID and round, or why it was refused (Refused) or not
        journaled (BasinError), as a value: an exception raised through a future keeps its
        traceback, its frames and the future in a cycle, garbage that only the collector's
        rare full pass frees (a flood of refused requests grew the server by 1.5 MiB/s)."""
        future = asyncio.get_running_loop().create_future()
        self.arrived.append((body, future))
        if self.decoding is None or self.decoding.done():
            self.decoding = asyncio.create_task(self._decode())
        return await future

    async def _decode(self) -> None:
        """Stage one: decode the updates that arrived, a batch at a time, split between the
        decoding processes (or not: None, and the coordinator's thread decodes)."""
        while self.arrived:
            batch, self.arrived = self.arrived[:BATCH], self.arrived[BATCH:]
            bodies = [body for body, _ in batch]
            decoded = await self._decoded(bodies)
            self.decoded += [(b, f, d) for (b, f), d in zip(batch, decoded, strict=True)]
            if self.taking is None or self.taking.done():
                self.taking = asyncio.create_task(self._take())

    async def _decoded(self, bodies: list[bytes]) -> list:
        """`decode_many(bodies)`, a share of them in each decoding process at once; Nones where
        a process failed (it is killed, the coordinator's thread decodes its share, and another
        process takes its place, at most every RESTART_SECONDS)."""
        if len(self.decoders) < self.wanted and time.monotonic() >= self.restart_after:
            self.restart_after = time.monotonic() + RESTART_SECONDS
            self.start()
            self.coordinator.log(f"decoding processes started again: {len(self.decoders)}")
        decoders = list(self.decoders)
        if not decoders:
            return [None] * len(bodies)
        size = -(-len(bodies) // len(decoders))
        shares = [bodies[i : i + size] for i in range(0, len(bodies), size)]
        limit = self.coordinator.max_update_bytes
        answers = await asyncio.gather(
            *(d.decode(share, limit) for d, share in zip(decoders, shares, strict=False)),
            return_exceptions=True,
        )
        out: list = []
        for decoder, share, answer in zip(decoders, shares, answers, strict=False):
            if isinstance(answer, BaseException):  # EOF, a broken pipe, a timeout, a bad answer
                self.coordinator.log(f"a decoding process failed ({answer!r}): decoding here")
                decoder.kill()
                self.decoders.remove(decoder)
                answer = [None] * len(share)
            out += answer
        return out

    async def _take(self) -> None:
        """Stage two: take the decoded updates in (`submit_many`, in the coordinator's thread),
        a batch at a time, answering each as soon as its batch is journaled; a round that fills
        up is closed after that, and the updates past its end go in after the close."""
        coordinator = self.coordinator
        while self.decoded:
            size = min(BATCH, max(1, coordinator.room()))
            batch, self.decoded = self.decoded[:size], self.decoded[size:]
            bodies, decoded = [b for b, _, _ in batch], [d for _, _, d in batch]
            try:
                answers = await self.call(coordinator.submit_many, bodies, False, decoded)
            except BaseException as exc:  # not one of them is acknowledged
                for _, future, _ in batch:
                    if future.done():
                        continue
                    if isinstance(exc, BasinError):
                        future.set_result(exc.with_traceback(None))
                    else:
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            later = []
            for item, answer in zip(batch, answers, strict=True):
                future = item[1]
                if answer is None:
                    later.append(item)
                elif not future.done():  # (done: the client went away)
                    future.set_result(answer)
            self.decoded[:0] = later
            if coordinator.room() == 0:
                try:
                    await self.call(coordinator.close_if_full)
                except Exception as exc:  # the round stays full; the next batch tries again
                    coordinator.log(f"round not closed: {exc}")

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for decoder in self.decoders:
            decoder.close()


class Pages:
    """Pages of history (GET /history) read in a thread of their own, on a connection of their
    own to the repository, one at a time: a page takes tens of milliseconds (50 ms for 3 MiB
    here), which the coordinator's thread, where updates are taken in, must not spend for anyone
    who asks. A request while a page is being read, or within as long again after (so that pages
    take at most half of one core, however many ask), is refused 503 at once; the edge asks
    again a little later (edge.history_source)."""

    def __init__(self, basin_dir: Path | None):
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hive-history")
        self.basin_dir = basin_dir  # None: an in-memory repository, which serves no pages
        self.repo: Repository | None = None
        self.busy = False
        self.rest_until = 0.0  # monotonic time before which no page is read

    async def read(self, text: str, have: str | None) -> bytes:
        if self.busy or time.monotonic() < self.rest_until:
            raise Refused(503, "pages of history are being read for others: retry")
        self.busy = True
        started = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self._read, text, have
            )
        finally:
            self.busy = False
            self.rest_until = 2 * time.monotonic() - started

    def _read(self, text: str, have: str | None) -> bytes:
        if self.basin_dir is None:
            raise Refused(404, "this coordinator's repository is in memory: no pages of history")
        if self.repo is None:  # opened in this thread, which it stays in
            self.repo = open_source(self.basin_dir)
        return pages.page(self.repo, text, have)

    def close(self) -> None:
        def shut() -> None:
            if self.repo is not None:
                self.repo.close()

        self.executor.submit(shut)
        self.executor.shutdown(wait=True)


class Publisher:
    """Pushes the coordinator's branch to a remote after each round that made a new head, in a
    thread of its own, so that intake never waits for an IPFS node. One push at a time: a head
    made while one runs marks the branch dirty, and the latest head is pushed right after it. A
    push that fails is logged as one line and tried again after the next round; the server goes
    on either way."""

    def __init__(self, repo: Repository, remote: str, branch: str, log: Callable[[str], None]):
        self.repo, self.remote, self.branch, self.log = repo, remote, branch, log
        # what /status says: the last head pushed, its IPNS name, or the last push's error
        self.state: dict = {"remote": remote, "head": None, "name": None, "error": None}
        self._lock = threading.Lock()
        self._dirty = False
        self._thread: threading.Thread | None = None

    def head_moved(self, _head: CID | None = None) -> None:
        """A new head (the coordinator's `on_head`): push it, now or after the push under way."""
        with self._lock:
            self._dirty = True
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="hive-publish", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        from ..remote import push

        while True:
            with self._lock:
                if not self._dirty:
                    self._thread = None
                    return
                self._dirty = False
            try:
                result = push(self.repo, self.remote, self.branch)
            except Exception as exc:  # a node down or refusing, anything: the server goes on
                error = " ".join(str(exc).split()) or type(exc).__name__
                self.log(f"publishing {self.branch} to {self.remote} failed: {error}")
                self.state = {**self.state, "error": error}
            else:
                head = str(result.branches[self.branch])
                self.state = {
                    "remote": self.remote,
                    "head": head,
                    "name": result.name,
                    "error": None,
                }

    def close(self) -> None:
        """Push no more; wait a little for the push under way (the thread dies with the server
        otherwise, and the next start pushes again)."""
        with self._lock:
            self._dirty = False
            thread = self._thread
        if thread is not None:
            thread.join(PUBLISH_GRACE)


def make_app(
    coordinator: Coordinator,
    publisher: Publisher | None = None,
    body_seconds: float = BODY_SECONDS,
) -> Callable[..., Awaitable[None]]:
    """The server's ASGI application; with `publisher`, each new head is published through it.
    `body_seconds`: how long an update's body may take to arrive (`_bounded_body`)."""
    worker = Worker(coordinator)
    history_pages = Pages(coordinator.repo.basin_dir)

    async def head(_: Request) -> Response:
        return JSONResponse(await worker.call(coordinator.head_info))

    async def status(_: Request) -> Response:
        answer = await worker.call(coordinator.status)
        answer["published"] = publisher.state if publisher is not None else None
        return JSONResponse(answer)

    async def block(request: Request) -> Response:
        try:
            data = await worker.call(coordinator.block, request.path_params["cid"])
        except Refused as exc:
            return _refusal(exc)
        return Response(data, media_type="application/octet-stream")

    async def history(request: Request) -> Response:
        if request.method != "GET":  # Starlette routes HEAD here too: a page's work for no page
            return _refusal(Refused(405, f"{request.method} is not served on {request.url.path}"))
        have = request.query_params.get("have")
        try:
            data = await history_pages.read(request.path_params["cid"], have)
        except Refused as exc:
            return _refusal(exc)
        except BasinError as exc:  # the repository unreadable: said, as every refusal is
            return _refusal(Refused(500, f"the coordinator cannot read its history: {exc}"))
        return Response(data, media_type="application/vnd.ipld.car")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        asyncio.get_running_loop().set_exception_handler(_quiet_accept_errors(coordinator.log))
        worker.start()
        if publisher is not None:
            coordinator.on_head = publisher.head_moved
            publisher.head_moved()  # the head it starts with
        task = asyncio.create_task(_rounds(worker))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            worker.close()
            history_pages.close()
            if publisher is not None:
                coordinator.on_head = None
                publisher.close()

    routes = [
        Route("/head", head),
        Route("/status", status),
        Route("/block/{cid}", block),
        Route("/history/{cid}", history),
    ]
    handlers = {404: _not_served, 405: _not_served}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.router.redirect_slashes = False  # /head/ is not /head: 404 in JSON, not a bare 307
    limit = coordinator.max_update_bytes

    async def hive(scope, receive, send) -> None:
        """POST /update straight on ASGI, the rest through Starlette: the hot path skips its
        middleware, routing, request and response objects (a fifth of a request's cost), not
        one of the coordinator's checks."""
        if scope["type"] != "http" or scope["path"] != "/update":
            return await app(scope, receive, send)
        if scope["method"] != "POST":
            status, answer = 405, {"error": "POST an update record to /update"}
        else:
            try:
                body = await _bounded_body(scope, receive, limit, body_seconds)
            except Refused as exc:  # too large, or too slow to arrive
                status, answer = exc.status, {"error": str(exc)}
            else:
                result = await worker.submit(body)
                if isinstance(result, Refused):
                    status, answer = result.status, {"error": str(result)}
                elif isinstance(result, BasinError):  # the journal failed: none acknowledged
                    status, answer = 500, {"error": str(result)}
                else:
                    status, answer = 202, result
        data = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return hive


async def _rounds(worker: Worker) -> None:
    """Close rounds whose time is up; a failure is reported and the timer goes on."""
    while True:
        await asyncio.sleep(TICK)
        try:
            await worker.call(worker.coordinator.maybe_close)
        except BasinError as exc:
            worker.coordinator.log(f"round not closed: {exc}")


async def _bounded_body(scope, receive, limit: int, seconds: float = BODY_SECONDS) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading the rest, and (408)
    unless it has all arrived within `seconds`: a client that trickles its body, or stops
    sending it, holds its connection no longer than that."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            declared = value.decode("latin-1")
            raise Refused(413, f"update of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Refused(400, "the client went away before its update arrived")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"update is over the {limit}-byte limit")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise Refused(408, f"the update did not arrive within {seconds:g} s") from None


def _refusal(exc: Refused) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _not_served(request: Request, exc: Exception) -> Response:
    """404 and 405 as every other refusal: a status and a one-line reason in JSON."""
    if getattr(exc, "status_code", 404) == 405:
        return JSONResponse({"error": f"{request.method} is not served on {request.url.path}"}, 405)
    return JSONResponse({"error": f"nothing is served at {request.url.path}"}, 404)


def _closing_answer(status: str, error: str) -> bytes:
    """A whole HTTP/1.1 answer with the JSON refusal every route gives, for the connection
    layer below the routes (which then closes the connection)."""
    body = json.dumps({"error": error}).encode()
    head = (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % (status.encode(), len(body))
    )
    return head + body


def guarded_protocol(header_seconds: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol on httptools (a C parser: about a tenth more intake than its
    pure-Python h11 one) with the bounds it lacks, so that clients cannot hold the server's
    connections, file descriptors or memory: a request's headers must all arrive within
    `header_seconds` of the connection opening or of the last answer on it (else it is closed:
    uvicorn times out only idle keep-alive connections, and a client that trickles a header
    byte now and then resets that), and be at most MAX_HEAD_BYTES with the request line (else
    431: httptools buffers them whole, without a bound); and with `max_connections` open, a new
    one is answered 503 with a one-line reason and closed at once. A request the parser cannot
    read is answered 400 in JSON, as every other refusal is, not in uvicorn's plain text, and
    so is one that asks for an HTTP upgrade (`curl --http2` on http://): the parser stops at
    it and would never hand the app the body."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Guarded(HttpToolsProtocol):
        _headers_due: asyncio.TimerHandle | None = None
        _in_head = True  # the bytes arriving are a request's line and headers
        _head_bytes = 0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                busy = f"the coordinator has {max_connections} connections open: retry"
                self._refuse("503 Service Unavailable", busy)
                return
            self._expect_headers()

        def data_received(self, data: bytes) -> None:
            if self._in_head:  # counted whole: headers that end in it set the count to 0
                self._head_bytes += len(data)
            super().data_received(data)
            over = self._in_head and self._head_bytes > MAX_HEAD_BYTES
            if over and not self.transport.is_closing():
                too_long = f"a request line and headers over {MAX_HEAD_BYTES:,} bytes"
                self._refuse("431 Request Header Fields Too Large", too_long)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0  # the next request's, if any

        def send_400_response(self, msg: str) -> None:  # what the HTTP parser could not read
            unreadable = f"not an HTTP request the coordinator can read: {msg.rstrip('.')}"
            self._refuse("400 Bad Request", unreadable)

        def _unsupported_upgrade_warning(self) -> None:  # the parser stopped at an upgrade
            self._refuse(
                "400 Bad Request",
                "HTTP upgrades (an Upgrade header) are not supported: send the request without "
                "one (curl: --http1.1)",
            )

        def _refuse(self, status: str, error: str) -> None:
            self.transport.write(_closing_answer(status, error))
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
            super().connection_lost(exc)

        def _expect_headers(self) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
            self._headers_due = self.loop.call_later(header_seconds, self._headers_late)

        def _headers_late(self) -> None:
            if self.cycle is None or self.cycle.response_complete:  # no request under way
                self.timeout_keep_alive_handler()  # closes the connection, as for idle ones

    return Guarded


def _quiet_accept_errors(log: Callable[[str], None], every: float = 10.0):
    """The event loop's error handler: a failure to accept a connection for want of file
    descriptors (a burst past the limit) is logged as one line at most every `every` seconds,
    not a traceback per attempt (which had written 250 MB of log in 45 s); anything else as the
    loop would."""
    last, missed = -math.inf, 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        nonlocal last, missed
        if not context.get("message", "").startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        missed += 1
        if time.monotonic() - last >= every:
            attempts = f"{missed} attempt{'s' if missed != 1 else ''} since the last such line"
            log(f"cannot accept connections: out of file descriptors ({attempts})")
            last, missed = time.monotonic(), 0

    return handler


def connection_limit(wanted: int = MAX_CONNECTIONS) -> int:
    """How many connections the server may hold: `wanted`, within this process's limit on open
    files, raised to its hard limit first (past the limit, accepting fails and asyncio logs it
    for every attempt)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


def _tune_memory() -> None:
    """Memory settings for a server that holds a round of decoded updates and answers thousands
    of requests a second, both measured (scripts/bench/hive, and floods of refused requests):

    - Python's cycle collector leaves what is loaded at start out of every collection
      (gc.freeze) and collects young objects every GC_THRESHOLD[0] allocations instead of 700.
      A round holds some 200,000 objects until it closes, without cycles; at the default
      thresholds the collector went through them again and again while updates came in
      (unpickling a batch took 2.5 times as long). Full collections keep Python's default rate.
    - glibc's malloc returns freed memory above MALLOC_THRESHOLD to the system, and serves
      allocations above it by mmap, fixed: by default it raises both thresholds as large blocks
      (a decoded batch's pickle) are freed, and then kept what it freed: a flood of refused
      requests grew the server by 0.1 MiB/s (80 → 146 MiB in ten minutes; flat with this)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_THRESHOLD)
            libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_THRESHOLD)


class ServeError(BasinError):
    """The coordinator cannot start: its address cannot be bound."""


def listening(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening: bound before the coordinator starts or
    anything is printed, so an address in use is one line, not a start line and a traceback.

    Made with the protocol given as IPPROTO_TCP, not 0 as `socket.create_server` makes it:
    asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections whose socket says
    IPPROTO_TCP, and with it on, a response written in two parts (headers, body) waited for the
    client's delayed ACK: 44 ms per request on one connection instead of about 1 ms
    (scripts/bench/hive)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def serve(
    coordinator: Coordinator,
    sock: socket.socket,
    publish: str | None = None,
    *,
    body_seconds: float = BODY_SECONDS,
    header_seconds: float = HEADER_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Run the coordinator's server on `sock` (`listening`) until interrupted; with `publish` (a
    remote's name), push the branch there after every round. The coordinator's log lines go to
    stderr. Ctrl-C ends it with KeyboardInterrupt once the server has stopped. The timeouts and
    the connection limit: `_bounded_body`, `guarded_protocol`, `connection_limit`."""
    import uvicorn

    def echo(line: str) -> None:
        print(f"hive: {line}", file=sys.stderr, flush=True)

    for line in coordinator.messages:  # what it logged while starting (a recovered round)
        echo(line)
    coordinator.echo = echo
    publisher = None
    if publish is not None:
        publisher = Publisher(
            coordinator.repo, publish, coordinator.settings.branch, coordinator.log
        )
    app = make_app(coordinator, publisher, body_seconds)
    _tune_memory()
    protocol = guarded_protocol(header_seconds, connection_limit(max_connections))
    config = uvicorn.Config(app, http=protocol, ws="none", log_level="warning")  # no upgrades
    uvicorn.Server(config).run(sockets=[sock])
