"""`basin hive serve`: the coordinator over HTTP (Starlette on uvicorn), thin over `Coordinator`.

    GET  /head          the branch head, round, coordinator key and chart (JSON)
    GET  /block/{cid}   a block of the repository (raw bytes, verified on the way out)
    POST /update        a signed update record (DAG-CBOR body): 202 with its CID and round, or a
                        status and a one-line reason ({"error": ...}) for every refusal
    GET  /status        counts of taken, refused and pending updates

Handlers run the coordinator in a worker thread (it uses SQLite), and a timer closes rounds after
T seconds; a round also closes as soon as it holds M updates. Listens on 127.0.0.1 unless told
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BasinError
from .coordinator import Coordinator, Refused

TICK = 0.2  # seconds between checks of the round timer


def make_app(coordinator: Coordinator) -> Starlette:
    async def head(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(coordinator.head_info))

    async def status(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(coordinator.status))

    async def block(request: Request) -> Response:
        try:
            data = await run_in_threadpool(coordinator.block, request.path_params["cid"])
        except Refused as exc:
            return _refusal(exc)
        return Response(data, media_type="application/octet-stream")

    async def update(request: Request) -> Response:
        try:
            body = await _bounded_body(request, coordinator.max_update_bytes)
            accepted = await run_in_threadpool(coordinator.submit, body)
        except Refused as exc:
            return _refusal(exc)
        return JSONResponse(accepted, status_code=202)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        task = asyncio.create_task(_rounds(coordinator))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route("/head", head),
        Route("/status", status),
        Route("/block/{cid}", block),
        Route("/update", update, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _rounds(coordinator: Coordinator) -> None:
    """Close rounds whose time is up; a failure is reported and the timer goes on."""
    while True:
        await asyncio.sleep(TICK)
        try:
            await run_in_threadpool(coordinator.maybe_close)
        except BasinError as exc:
            coordinator.log(f"round not closed: {exc}")


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"update of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"update is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(exc: Refused) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def serve(coordinator: Coordinator, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the coordinator's server until interrupted."""
    import uvicorn

    uvicorn.run(make_app(coordinator), host=host, port=port, log_level="warning")
