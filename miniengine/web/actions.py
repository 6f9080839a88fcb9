"""The live and the changing endpoints: ``/events`` and pause/play/kill.

A control action is one of three fixed words mapped to :mod:`miniengine.control`'s functions;
it runs in a worker thread (the control calls are blocking) and answers with a redirect back to
the process page, or JSON when the request came from a script or ``fetch()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from miniengine.web.auth import AUTH_KEY
from miniengine.web.filters import parse_filters, parse_pk
from miniengine.web.pages import MAX_PAGE, PAGE_SIZE, error_page
from miniengine.web.state import web_state
from miniengine.web.stream import list_events, process_events

__all__ = ["control", "events"]


def _actions() -> dict[str, Callable[..., Any]]:
    from miniengine import control as engine_control

    return {
        "pause": engine_control.pause,
        "play": engine_control.play,
        "kill": engine_control.kill,
    }


#: The most a control form's body may hold (it holds one hidden field).
_MAX_FORM = 4096


async def _form_csrf(request: Request) -> str | None:
    """The ``csrf`` field of a urlencoded form body (no multipart: the forms send none)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return None
    from urllib.parse import parse_qs

    try:
        values = parse_qs(body.decode("latin-1"), max_num_fields=10).get("csrf")
    except ValueError:  # more fields than any form of ours sends
        return None
    return values[-1] if values else None


async def events(request: Request) -> Response:
    """``/events``: server-sent events for the list (with its filters) or, with ``pk``, for
    one process's page.  The first event is ``hello``."""
    web = web_state(request)
    params = request.query_params
    pk = parse_pk("pk", params.get("pk"))
    if pk is not None:
        await web.reads.node(pk)  # NotExistent: 404 before the stream starts
        body = process_events(web.broadcaster, pk, parse_pk("after", params.get("after")))
    else:
        filters = parse_filters(params, params.getlist("state"))
        before = parse_pk("before", params.get("before"))
        limit = min(parse_pk("limit", params.get("limit")) or PAGE_SIZE, MAX_PAGE)
        body = list_events(web.broadcaster, filters, before, limit)
    if not web.broadcaster.running:
        return error_page(
            request,
            503,
            "Live updates are off",
            "The app's lifespan did not start its commit watcher: when mounting it, run its "
            "lifespan too (see the web view's guide).",
        )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def control(request: Request) -> Response:
    """``POST /process/<pk>/pause|play|kill``: ask for the action, answer where it stands."""
    web = web_state(request)
    if web.read_only:
        return error_page(request, 403, "Read-only", "This server is read-only: nothing changes.")
    wants_json = "application/json" in request.headers.get("accept", "")
    if request.scope.get("state", {}).get(AUTH_KEY) != "header":
        given = request.headers.get("x-csrf-token")
        if given is None:
            given = await _form_csrf(request)
        if not web.auth.csrf_ok(given):
            return error_page(request, 403, "Refused", "The form's CSRF value is missing or wrong.")
        if not web.auth.same_origin(request.scope):
            return error_page(request, 403, "Refused", "The request's Origin is not this server's.")
    action = request.path_params["action"]
    function = _actions().get(action)
    if function is None:
        return error_page(request, 404, "Not found", f"no action {action[:20]!r}")
    pk = int(request.path_params["pk"])
    await web.reads.node(pk)  # NotExistent: 404
    outcome = await anyio.to_thread.run_sync(lambda: str(function(pk, db=web.backend)))
    if wants_json:
        return JSONResponse({"pk": pk, "action": action, "outcome": outcome})
    root = request.scope.get("root_path", "")
    from urllib.parse import urlencode

    return RedirectResponse(
        f"{root}/process/{pk}?{urlencode({'outcome': outcome})}", status_code=303
    )
