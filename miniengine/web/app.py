"""The web view as an ASGI app: :func:`create_app` wires routes, token, headers and lifespan.

The app's lifespan runs the one commit watcher that feeds every live page; a host app that
mounts this one runs that lifespan too (see :func:`create_app`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from miniengine.exceptions import DatabaseLockedError, DatabaseUnavailableError, NotExistent
from miniengine.web import actions, pages
from miniengine.web.auth import ASGIApp, Receive, Scope, Send, TokenAuth, new_token
from miniengine.web.filters import BadRequest
from miniengine.web.reads import PageReads
from miniengine.web.state import WebState
from miniengine.web.stream import Broadcaster

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"

#: Headers of every answer: no framing, no inline script, no referrer leaving the site.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def _with_headers(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(key).lower() for key, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


async def _bad_request(request: Request, exc: Exception) -> Response:
    return pages.error_page(request, 400, "Bad request", str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return pages.error_page(request, 404, "Not found", str(exc) or "no such page")


async def _database_error(request: Request, exc: Exception) -> Response:
    """The database could not be read or written for now (its server away for longer than a
    read waits, a file locked by another program): the page says so, and when to try again,
    instead of a bare Internal Server Error."""
    response = pages.error_page(request, 503, "Database unavailable", str(exc))
    response.headers["retry-after"] = "5"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return pages.error_page(request, exc.status_code, "Error", str(exc.detail))


def create_app(
    db: Backend | str | os.PathLike[str] | None = None,
    token: str | None = None,
    read_only: bool = False,
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """The web view of database ``db`` (an open backend, a path or a ``postgresql://`` URL;
    the default database if None) as an ASGI app.

    Every request needs ``token`` (a new random one if None; it is ``app.state.token``).  With
    ``read_only`` nothing can be changed from the pages.  With ``allowed_hosts`` (names, or
    addresses), a request whose ``Host`` header names another is refused (``miniengine web``
    on loopback allows the loopback names only: a defence against DNS rebinding).

    To mount it in another Starlette or FastAPI app, run its lifespan there as well, which
    starts the commit watcher of the live pages: ``Starlette(routes=[Mount("/engine", web)],
    lifespan=lambda _: web.router.lifespan_context(web))``.
    """
    from miniengine.runtime.context import store_for

    backend: Backend = store_for(db)
    auth = TokenAuth(token or new_token(), allowed_hosts)
    reads = PageReads(backend)
    broadcaster = Broadcaster(backend, reads)
    web = WebState(backend, reads, auth, broadcaster, bool(read_only))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            await tasks.start(broadcaster.run)
            try:
                yield
            finally:
                broadcaster.stop()
                tasks.cancel_scope.cancel()

    routes = [
        Route("/", pages.process_list),
        Route("/processes", pages.process_list),
        Route("/api/processes", pages.api_processes),
        Route("/events", actions.events),
        Route("/process/{pk:int}", pages.process_page),
        Route("/api/process/{pk:int}", pages.api_process),
        Route("/process/{pk:int}/{action:str}", actions.control, methods=["POST"]),
        Route("/node/{pk:int}", pages.node_page),
        Route("/node/{pk:int}/graph.svg", pages.graph_svg),
        Route("/daemon", pages.daemon_page),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            BadRequest: _bad_request,
            NotExistent: _not_found,
            DatabaseUnavailableError: _database_error,
            DatabaseLockedError: _database_error,
            HTTPException: _http_error,
        },
    )
    app.state.miniengine = web
    app.state.token = auth.token
    app.add_middleware(_Guard, auth=auth)
    return app


class _Guard:
    """The token check and the security headers, outermost (before routing and errors)."""

    def __init__(self, app: ASGIApp, auth: TokenAuth) -> None:
        self._app = _with_headers(auth.middleware(app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
