"""HTML from templates, every value escaped, and the small texts pages and streams share.

The templates (``miniengine/web/templates``) run on Jinja2 with autoescaping on for every file,
so a label, report, extra or traceback holding ``<script>`` shows as text; no template marks
anything safe except the SVG chart this module builds from numbers.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

    from miniengine.storage.interfaces.provenance import LogRow
    from miniengine.storage.interfaces.queries import TreeRow
    from miniengine.storage.interfaces.reads import CheckpointStep

__all__ = [
    "checkpoint_text",
    "finished_chart",
    "iso",
    "render",
    "report_json",
    "state_text",
    "tree_html",
    "tree_json",
    "value_text",
]

TEMPLATES = Path(__file__).parent / "templates"


def state_text(state: str | None, exit_status: int | None, paused: bool) -> str:
    """``running``, ``finished [exit 3]``, ``waiting (paused)``: a process's state on a page."""
    if state is None:
        return ""
    text = state
    if exit_status:
        text += f" [exit {exit_status}]"
    if paused:
        text += " (paused)"
    return text


def iso(timestamp: float | None) -> str:
    """A time in UTC to the second: ``2026-12-05 10:00:00``."""
    if timestamp is None:
        return ""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def value_text(node_type: str, attributes: bytes | None, width: int = 200) -> str:
    """A node's value on one line (Int, Float, Str, Bool, Dict, List), else empty."""
    from miniengine.cli.render import _BASE_TYPES, plain_value, shorten

    if node_type in _BASE_TYPES:
        return shorten(str(plain_value(node_type, attributes)), width)
    from miniengine.storage.interfaces.provenance import unpack_attributes

    value = unpack_attributes(attributes)
    if node_type in ("core.dict", "core.list"):
        return shorten(json.dumps(value, ensure_ascii=False, default=repr), width)
    return ""


def checkpoint_text(step: CheckpointStep | None) -> str:
    """Where a checkpoint says its process stands: ``double (step 3)``; empty without one."""
    if step is None:
        return ""
    if step.step_name is None:
        return "before its first step"
    where = f"{step.step_name}"
    if step.seq is not None:
        where += f" (step {step.seq})"
    return where


def report_json(row: LogRow) -> dict[str, Any]:
    """A log line as the process page's stream sends it."""
    return {"id": row.pk, "time": iso(row.time), "level": row.levelname, "message": row.message}


def tree_json(rows: Sequence[TreeRow]) -> list[dict[str, Any]]:
    """A call tree as the process page's stream sends it (rows in pk order)."""
    return [
        {
            "pk": row.pk,
            "parent": row.parent,
            "depth": row.depth,
            "label": row.process_label,
            "state": state_text(row.process_state, row.exit_status, row.paused),
        }
        for row in rows
    ]


def finished_chart(counts: Sequence[int], width: int = 600, height: int = 120) -> str:
    """An inline SVG bar chart of processes finished per minute (oldest first), from numbers
    only, so it needs no escaping."""
    top = max(max(counts, default=0), 1)
    bar = width / max(len(counts), 1)
    parts = [
        f'<svg id="finished-per-minute" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {height + 20}" width="{width}" height="{height + 20}">',
        f"<title>Processes finished per minute, last {len(counts)} minutes "
        f"(most: {max(counts, default=0)})</title>",
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#888"/>',
    ]
    for index, count in enumerate(counts):
        tall = height * int(count) / top
        parts.append(
            f'<rect x="{index * bar:.1f}" y="{height - tall:.1f}" width="{max(bar - 1, 1):.1f}" '
            f'height="{tall:.1f}" fill="#3a7bd5"><title>{int(count)}</title></rect>'
        )
    parts.append(f'<text x="0" y="{height + 15}" font-size="11" fill="#555">-60 min</text>')
    parts.append(
        f'<text x="{width}" y="{height + 15}" font-size="11" fill="#555" '
        f'text-anchor="end">now (max {top}/min)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def tree_html(rows: Sequence[TreeRow], root: str) -> Markup:
    """A call tree as nested ``ul``/``li[data-pk]`` lists (rows in pk order), each value
    escaped; the same markup the page's script builds from a ``tree`` event."""
    from markupsafe import Markup, escape

    children: dict[int | None, list[TreeRow]] = {}
    pks = {row.pk for row in rows}
    for row in rows:
        parent = row.parent if row.parent in pks else None
        children.setdefault(parent, []).append(row)

    def branch(parent: int | None) -> Markup:
        items = []
        for row in children.get(parent, ()):
            state = state_text(row.process_state, row.exit_status, row.paused)
            inner = Markup(
                '<li data-pk="{pk}"><a class="process-link" href="{root}/process/{pk}">{label}</a>'
                ' <span class="pk">#{pk}</span> <span class="state">{state}</span>'
            ).format(pk=row.pk, root=root, label=row.process_label or "?", state=state)
            if row.pk in children:
                inner += branch(row.pk)
            items.append(inner + Markup("</li>"))
        return Markup("<ul>") + Markup("").join(items) + Markup("</ul>")

    return branch(None) if rows else escape("")


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["iso"] = iso
    environment.globals["state_text"] = state_text
    environment.globals["value_text"] = value_text
    environment.globals["checkpoint_text"] = checkpoint_text
    from miniengine.cli.render import type_name

    environment.globals["type_name"] = type_name
    return environment


def render(template: str, **values: Any) -> str:
    """The page ``template`` filled with ``values`` (escaped)."""
    return _environment().get_template(template).render(**values)
