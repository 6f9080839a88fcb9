"""SQL functions that let sqlite look into node attributes (msgpack blobs).

Every connection the store opens registers them (:func:`register`), so that a QueryBuilder
filter, order or expression index on ``attributes.KEY`` runs inside sqlite:

- ``msgpack_extract(blob, '$.a.b')``: the value at the path as ``json_extract`` gives a JSON
  value (numbers, text, ``1``/``0`` for booleans, JSON text for arrays and objects, ``NULL``
  for JSON null and for a path that names nothing);
- ``msgpack_type(blob, '$.a.b')``: its type as ``json_type`` names it (``integer``, ``real``,
  ``text``, ``true``, ``false``, ``null``, ``array``, ``object``), ``NULL`` where it names
  nothing.

Paths name AiiDA's attributes (:mod:`miniengine.storage.attribute_json`): ``$.value`` is an
``Int``'s number.  Both are deterministic, which sqlite requires of a function in an index.
A database holding such an index cannot have its nodes written by a connection without the
functions (the sqlite3 shell says "no such function: msgpack_extract", older sqlite "unknown
function"); ``miniengine db index --drop attributes.KEY`` removes the index.  The engine's
backups (``VACUUM INTO``), ``db vacuum`` and ``db copy`` run on connections that have them.

Each call decodes the blob with msgpack's C decoder; a filter calls both functions on the same
row one after the other, so the last blob decoded is kept and reused.
"""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache
from typing import Any

import msgpack

from miniengine.storage.attribute_json import MISSING, attribute_at, jsonable

__all__ = ["parse_path", "register"]

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


@lru_cache(maxsize=256)
def parse_path(path: str) -> tuple[str, ...] | None:
    """The keys of a ``$.a.b`` path (a key may be quoted: ``$."a b"``); ``None`` if malformed."""
    if not isinstance(path, str) or not path.startswith("$"):
        return None
    keys: list[str] = []
    at = 1
    while at < len(path):
        if path[at] != ".":
            return None
        at += 1
        if at < len(path) and path[at] == '"':
            at += 1
            key: list[str] = []
            while at < len(path) and path[at] != '"':
                if path[at] == "\\" and at + 1 < len(path):
                    at += 1
                key.append(path[at])
                at += 1
            if at >= len(path):
                return None
            at += 1
            keys.append("".join(key))
        else:
            end = path.find(".", at)
            end = len(path) if end < 0 else end
            if end == at:
                return None
            keys.append(path[at:end])
            at = end
    return tuple(keys)


_unpack = msgpack.unpackb
_VALUE = ("value",)
#: the paths seen, parsed (a query names a few; bounded against a generated flood)
_PATHS: dict[str, tuple[str, ...]] = {}


class _Decoder:
    """Decodes blobs, keeping the last one (a filter reads a row's type, then its value)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[bytes | None, Any] = (None, None)  # one tuple: replaced at once

    def at(self, blob: Any, path: str) -> Any:
        """The JSON value at ``path`` in ``blob``, or :data:`MISSING`.  Runs once per row and
        call, so the common cases (a base type's ``$.value``, a key of a mapping holding a
        number or a string) take the short way."""
        if blob.__class__ is not bytes:
            return MISSING
        keys = _PATHS.get(path)
        if keys is None:
            keys = parse_path(path)
            if keys is None:
                raise ValueError(f"malformed attribute path {path!r} (write it as $.key.key)")
            if len(_PATHS) < 1024:
                _PATHS[path] = keys
        last_blob, content = self.last
        if blob != last_blob:
            try:
                content = _unpack(blob, raw=False, strict_map_key=False)
            except Exception:
                return MISSING  # not msgpack: nothing a query can name
            self.last = (blob, content)
        kind = content.__class__
        if kind is dict and len(keys) == 1:
            value = content.get(keys[0], MISSING)
        elif kind is not dict and kind is not list and keys == _VALUE and content is not None:
            value = content
        else:
            value = attribute_at(content, keys)
        kind = value.__class__
        if kind is int or kind is str or kind is bool or value is None or value is MISSING:
            return value
        return jsonable(value)

    def extract(self, blob: Any, path: str) -> Any:
        value = self.at(blob, path)
        kind = value.__class__
        if kind is str or kind is float:
            return value
        if kind is int:
            return value if _INT64_MIN <= value <= _INT64_MAX else float(value)
        if value is MISSING or value is None:
            return None
        if kind is bool:
            return int(value)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def type(self, blob: Any, path: str) -> str | None:
        value = self.at(blob, path)
        if value is MISSING:
            return None
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, int):
            return "integer" if _INT64_MIN <= value <= _INT64_MAX else "real"
        if isinstance(value, float):
            return "real"
        if isinstance(value, str):
            return "text"
        return "array" if isinstance(value, list) else "object"


def register(connection: sqlite3.Connection) -> None:
    """Make ``msgpack_extract`` and ``msgpack_type`` known to ``connection`` (each connection
    has its own decoder, as a connection is used by one thread at a time)."""
    decoder = _Decoder()
    connection.create_function("msgpack_extract", 2, decoder.extract, deterministic=True)
    connection.create_function("msgpack_type", 2, decoder.type, deterministic=True)
