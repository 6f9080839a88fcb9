"""Opening a database by where it lives: a sqlite file by its path, PostgreSQL by its URL.

``MINIENGINE_DB``, ``--db`` and ``db=`` take either; :func:`open_backend` returns the matching
:class:`~miniengine.storage.interfaces.Backend`.  A PostgreSQL URL is handed to libpq as it is,
so a password may sit in it, in ``PGPASSWORD`` or in a ``~/.pgpass`` / ``$PGPASSFILE`` file,
and is never put on a command line; messages show the URL without it.  psycopg is imported
only when a URL is opened.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniengine.storage.paths import resolve_db
from miniengine.storage.store import Store, close_all_stores, shared_store

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["close_all_backends", "open_backend", "reopened", "shared_backend"]


def open_backend(db: str | os.PathLike[str] | None = None, **options: Any) -> Backend:
    """A new store for ``db`` (a path or a ``postgresql://`` URL; ``None``: ``$MINIENGINE_DB``,
    else the default file); ``options`` go to the store (``lease_timeout``, ``owner``, and
    ``synchronous`` for sqlite).  The caller closes it."""
    location = resolve_db(db)
    if isinstance(location, Path):
        store: Backend = Store(location, **options)
        return store
    from miniengine.storage.postgres.store import PostgresStore

    return PostgresStore(location, **options)


_shared: dict[str, Backend] = {}
_shared_lock = threading.Lock()


def shared_backend(db: str | os.PathLike[str] | None = None) -> Backend:
    """The store for ``db`` shared by every launch in this process, opened on first use (a
    file's is :func:`~miniengine.storage.store.shared_store`'s)."""
    location = resolve_db(db)
    if isinstance(location, Path):
        store: Backend = shared_store(location)
        return store
    backend = _shared.get(location)
    if backend is not None and not backend.closed:
        return backend
    with _shared_lock:
        backend = _shared.get(location)
        if backend is None or backend.closed:
            backend = _shared[location] = open_backend(location)
    return backend


def reopened(backend: Backend) -> Backend:
    """``backend`` while it is open, else the shared store of the same database, opened again
    (a node keeps working after ``close_all_backends``, as it does for a sqlite file)."""
    if not backend.closed:
        return backend
    if isinstance(backend, Store):
        store: Backend = shared_store(backend.path)
        return store
    from miniengine.storage.postgres.store import PostgresStore

    if isinstance(backend, PostgresStore):
        return shared_backend(backend.url)  # the URL as given: with its password, if any
    return backend


def close_all_backends() -> None:
    """Close every shared store, files and servers alike (at exit, and by test fixtures)."""
    with _shared_lock:
        backends = list(_shared.values())
        _shared.clear()
    for backend in backends:
        backend.close()
    close_all_stores()


atexit.register(close_all_backends)
