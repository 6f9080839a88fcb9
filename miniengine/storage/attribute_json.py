"""Node attributes as queries see them: AiiDA's attribute names over the stored content.

A node's attributes are stored as the msgpack of its content (``Data._to_attributes``), which is
not always a mapping: an ``Int`` stores its number alone, a ``List`` its list.  Queries name
attributes as AiiDA does, so the content is read through one rule, the same on every backend
(the sqlite SQL functions, PostgreSQL's ``jsonb`` copy and the runtime's projections):

- a mapping is the attributes themselves (``Dict``, files, codes: ``attributes.KEY``);
- a list is AiiDA's ``list`` attribute (``List``: ``attributes.list``);
- anything else is AiiDA's ``value`` attribute (``Int``, ``Float``, ``Str``, ``Bool``);
- no content (``None``) has no attributes.

Only what JSON can hold is queryable: a byte string, a NaN or infinite float, a key that is
not a string or a value msgpack alone knows is left out of the JSON copy, with the whole list
holding it (an element left out would shift the others).  Projections read the stored content
itself, so they still return such values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["MISSING", "attribute_at", "attributes_json_text", "jsonable", "view"]

#: returned where a path names nothing (or something JSON cannot hold)
MISSING: Final = object()

_PLAIN = (str, bool, type(None))
_DUMPS = json.JSONEncoder(ensure_ascii=False).encode
#: one encoder for every node (``json.dumps`` with options builds one per call)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def view(content: Any) -> Any:
    """The attributes (a dict) of stored ``content`` under AiiDA's names; ``None`` for none."""
    if content is None or isinstance(content, dict):
        return content
    if isinstance(content, list):
        return {"list": content}
    return {"value": content}


def attribute_at(content: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` (``()``: all the attributes) in stored ``content``, or
    :data:`MISSING` (the path goes through something that is not a mapping, or ends nowhere)."""
    if content is None:
        return MISSING
    if not isinstance(content, dict):
        if not path:
            return view(content)
        head = "list" if isinstance(content, list) else "value"
        if path[0] != head:
            return MISSING
        content, path = content, path[1:]
    value = content
    for key in path:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(key, MISSING)
        if value is MISSING:
            return MISSING
    return value


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it, or :data:`MISSING` (see the module's docstring)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else MISSING
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if isinstance(key, str):
                item = jsonable(item)
                if item is not MISSING:
                    found[key] = item
        return found
    if isinstance(value, (list, tuple)):
        items = [jsonable(item) for item in value]
        return MISSING if any(item is MISSING for item in items) else items
    return MISSING


def attributes_json_text(content: Any) -> str | None:
    """The JSON text of the attributes of stored ``content`` (``None``: it has none).

    PostgreSQL writes it with every node, so the base types (an ``Int``, a ``Str``...) take a
    short path: a third of the time of the general one."""
    kind = type(content)
    if kind is int:
        return f'{{"value":{content}}}'
    if kind is bool:
        return '{"value":true}' if content else '{"value":false}'
    if kind is float:
        return f'{{"value":{content!r}}}' if math.isfinite(content) else "{}"
    if kind is str:
        return f'{{"value":{_DUMPS(content)}}}'
    attributes = jsonable(view(content))
    if attributes is MISSING or attributes is None:
        return None
    return _COMPACT(attributes)
