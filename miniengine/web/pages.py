"""The pages and their JSON twins: the process list, a process, a node, its graph, the daemon.

Each handler reads through :class:`~miniengine.web.reads.PageReads` (never on the loop's
thread) and renders an escaping template.  Nothing here imports or runs anything a request
names: pks are numbers, and the few words a request may choose (a state, a direction) are
checked against fixed lists.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from miniengine.core.states import ProcessState
from miniengine.storage.interfaces.reads import ProcessDetail, ProcessSummary
from miniengine.web import graph
from miniengine.web.filters import BadRequest, ProcessFilters, parse_filters, parse_pk
from miniengine.web.reads import TREE_DEPTH, TREE_ROWS
from miniengine.web.render import (
    checkpoint_text,
    finished_chart,
    render,
    state_text,
    tree_html,
    value_text,
)
from miniengine.web.state import web_state
from miniengine.web.stream import summary_json

__all__ = [
    "api_process",
    "api_processes",
    "daemon_page",
    "graph_svg",
    "node_page",
    "process_list",
    "process_page",
]

#: The most reports a process page shows (the latest).
REPORT_ROWS = 1000
#: Processes on one page of the list.
PAGE_SIZE = 50
MAX_PAGE = 500


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"cache-control": "no-store"})


def _filters(request: Request) -> tuple[ProcessFilters, int | None, int]:
    params = request.query_params
    filters = parse_filters(params, params.getlist("state"))
    before = parse_pk("before", params.get("before"))
    limit = parse_pk("limit", params.get("limit")) or PAGE_SIZE
    if limit > MAX_PAGE:
        raise BadRequest(f"limit: at most {MAX_PAGE}")
    return filters, before, limit


async def _page(
    request: Request,
) -> tuple[ProcessFilters, int | None, list[ProcessSummary], int | None]:
    filters, before, limit = _filters(request)
    rows = await web_state(request).reads.process_page(filters, before, limit + 1)
    next_before = rows[limit - 1].pk if len(rows) > limit else None
    return filters, before, rows[:limit], next_before


#: How many pages back the "newer" link remembers (in the URL's ``back``).
MAX_TRAIL = 50


def _trail(text: str | None) -> list[int]:
    """The ``before`` of each page that led here (0: the first page), from ``back=``."""
    if not text:
        return []
    parts = text.split(".")
    if len(parts) > MAX_TRAIL or not all(part.isdigit() and len(part) <= 18 for part in parts):
        raise BadRequest(f"back: expected up to {MAX_TRAIL} pks joined by dots")
    return [int(part) for part in parts]


def _paging(
    request: Request, filters: ProcessFilters, before: int | None, next_before: int | None
) -> tuple[str | None, str | None]:
    """The query strings of the older and the newer page (None where there is none).

    Keyset paging goes one way only, so each "older" link carries the trail of the pages
    before it, and "newer" goes back one step of that trail."""
    limit = request.query_params.get("limit")
    more: dict[str, str | int] = {"limit": limit} if limit else {}
    back = _trail(request.query_params.get("back"))
    older = None
    if next_before is not None:
        trail = [*back, before or 0][-MAX_TRAIL:]
        older = filters.query(before=next_before, back=".".join(map(str, trail)), **more)
    newer = None
    if before is not None:
        previous = back[-1] if back else 0
        params: dict[str, str | int] = dict(more)
        if previous:
            params["before"] = previous
        if back[:-1]:
            params["back"] = ".".join(map(str, back[:-1]))
        newer = filters.query(**params)
    return older, newer


async def process_list(request: Request) -> Response:
    """``/``: the newest processes matching the filters, a page at a time, kept live."""
    web = web_state(request)
    filters, before, rows, next_before = await _page(request)
    older, newer = _paging(request, filters, before, next_before)
    root = request.scope.get("root_path", "")
    context = web.context(
        request,
        "processes",
        "Processes",
        processes=rows,
        filters=filters,
        raw=dict(filters.raw),
        states=[state.value for state in ProcessState],
        older=older,
        newer=newer,
        live=before is None,
    )
    context["raw"].setdefault("since", "")
    context["raw"].setdefault("until", "")
    page: dict[str, str | int] = {
        "limit": parse_pk("limit", request.query_params.get("limit")) or PAGE_SIZE
    }
    if before is not None:
        page["before"] = before
    context["events"] = f"{root}/events?{filters.query(**page)}"
    return _html(render("processes.html", **context))


async def api_processes(request: Request) -> Response:
    """``/api/processes``: the list's page as JSON (``next_before`` continues it)."""
    _, _, rows, next_before = await _page(request)
    return JSONResponse(
        {"processes": [summary_json(row) for row in rows], "next_before": next_before}
    )


async def _detail(request: Request) -> tuple[int, ProcessDetail]:
    pk = int(request.path_params["pk"])
    return pk, await web_state(request).reads.process_detail(pk)


async def process_page(request: Request) -> Response:
    """``/process/<pk>``: a process, its inputs, outputs, reports, calls and provenance."""
    web = web_state(request)
    pk, detail = await _detail(request)
    reports = await web.reads.reports(pk)
    earlier = max(len(reports) - REPORT_ROWS, 0)
    reports = reports[earlier:]
    tree = await web.reads.call_tree(pk)
    root = request.scope.get("root_path", "")
    last_log = reports[-1].pk if reports else 0
    context = web.context(
        request,
        "process",
        f"{detail.node.process_label or 'process'} {pk}",
        detail=detail,
        reports=reports,
        tree_html=tree_html(tree, root),
        tree_depth=TREE_DEPTH,
        tree_rows=TREE_ROWS,
        tree_count=len(tree),
        earlier_reports=earlier,
        graph_pk=pk,
        graph_missing=graph.missing(),
        outcome=request.query_params.get("outcome", "")[:200],
    )
    context["events"] = f"{root}/events?pk={pk}&after={last_log}"
    context["shown_state"] = detail.node.process_state
    return _html(render("process.html", **context))


def _link_json(link: Any) -> dict[str, Any]:
    return {
        "label": link.link_label,
        "link_type": link.link_type,
        "pk": link.pk,
        "node_type": link.node_type,
        "process_label": link.process_label,
        "state": state_text(link.process_state, link.exit_status, link.paused),
        "value": value_text(link.node_type, link.attributes),
    }


async def api_process(request: Request) -> Response:
    """``/api/process/<pk>``: the process page's data as JSON."""
    web = web_state(request)
    pk, detail = await _detail(request)
    node = detail.node
    reports = await web.reads.reports(pk)
    tree = await web.reads.call_tree(pk)
    from miniengine.web.render import iso, tree_json

    return JSONResponse(
        {
            "pk": node.pk,
            "uuid": node.uuid,
            "process_label": node.process_label,
            "process_type": node.process_type,
            "process_state": node.process_state,
            "state": state_text(node.process_state, node.exit_status, bool(node.paused)),
            "paused": bool(node.paused),
            "exit_status": node.exit_status,
            "exit_message": node.exit_message,
            "exception": node.exception,
            "ctime": node.ctime,
            "mtime": node.mtime,
            "caller": detail.caller,
            "checkpoint": None if detail.checkpoint is None else detail.checkpoint._asdict(),
            "checkpoint_step": checkpoint_text(detail.checkpoint),
            "owner": None if detail.owner is None else detail.owner._asdict(),
            "inputs": [_link_json(link) for link in detail.inputs],
            "outputs": [_link_json(link) for link in detail.outputs],
            "reports": [
                {"id": r.pk, "time": iso(r.time), "level": r.levelname, "message": r.message}
                for r in reports
            ],
            "call_tree": tree_json(tree),
            "calcjob": None if detail.calcjob is None else detail.calcjob._asdict(),
        }
    )


async def node_page(request: Request) -> Response:
    """``/node/<pk>``: a Data node's type, value, attributes, extras and links (a process
    node's page is ``/process/<pk>``)."""
    web = web_state(request)
    pk = int(request.path_params["pk"])
    row = await web.reads.node(pk)
    root = request.scope.get("root_path", "")
    if row.process_state is not None:
        return RedirectResponse(f"{root}/process/{pk}", status_code=303)
    from miniengine.cli.render import type_name
    from miniengine.storage.interfaces.provenance import unpack_attributes

    attributes = unpack_attributes(row.attributes)
    extras = await web.reads.extras(pk)
    context = web.context(
        request,
        "node",
        f"{type_name(row.node_type)} {pk}",
        n=row,
        type_name=type_name(row.node_type),
        value=value_text(row.node_type, row.attributes, 2000),
        attributes=json.dumps(attributes, indent=2, ensure_ascii=False, default=repr),
        extras=[
            (key, json.dumps(value, ensure_ascii=False, default=repr))
            for key, value in sorted(extras.items())
        ],
        incoming=await web.reads.links(pk, incoming=True),
        outgoing=await web.reads.links(pk, incoming=False),
        graph_pk=pk,
        graph_missing=graph.missing(),
    )
    return _html(render("node.html", **context))


async def graph_svg(request: Request) -> Response:
    """``/node/<pk>/graph.svg?depth=N&direction=both``: the provenance around a node."""
    web = web_state(request)
    pk = int(request.path_params["pk"])
    depth = graph.parse_depth(request.query_params.get("depth"))
    direction = request.query_params.get("direction", "both")
    await web.reads.node(pk)  # NotExistent: 404
    try:
        body = await graph.svg(web.backend, pk, depth, direction)
    except graph.GraphUnavailable as exc:
        return Response(str(exc), status_code=503, media_type="text/plain; charset=utf-8")
    return Response(
        body,
        media_type="image/svg+xml",
        headers={
            "cache-control": "no-store",
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


async def daemon_page(request: Request) -> Response:
    """``/daemon``: workers and their slots, the queue, and processes finished per minute."""
    web = web_state(request)
    view = await web.reads.daemon()
    context = web.context(
        request,
        "daemon",
        "Daemon",
        view=view,
        chart=Markup(finished_chart(view.finished_per_minute)),
    )
    return _html(render("daemon.html", **context))


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    """A short page (or JSON, for ``/api``) saying what was wrong."""
    path = request.scope.get("path", "")
    if "/api/" in path or request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse({"error": message}, status_code=status)
    web = web_state(request)
    return _html(
        render("error.html", **web.context(request, "error", title, message=message)), status
    )
