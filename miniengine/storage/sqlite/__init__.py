"""The sqlite backend: the concerns of :mod:`miniengine.storage.interfaces` on a :class:`Store`.

The SQL itself lives in the ``*_rows`` modules as functions of a connection; the classes here
bind them to one store as named :class:`SqliteTransaction` writes and plain reads, so nothing
above storage ever sees a connection.
"""

from __future__ import annotations

from miniengine.storage.sqlite.transaction import SqliteTransaction

__all__ = ["SqliteTransaction"]
