"""The PostgreSQL backend: the concerns of :mod:`miniengine.storage.interfaces` on psycopg 3.

:class:`~miniengine.storage.postgres.store.PostgresStore` is one open database (a writer
connection behind a lock, a pool of readers, a listener for the commit signal, the lease
heartbeat); the SQL lives in this package's ``*_rows`` modules as functions of a connection, and
the concern classes bind them to a store as named :class:`PostgresTransaction` writes and plain
reads.  Importing this package does not import psycopg: only opening a store does.
"""

from __future__ import annotations

from miniengine.storage.postgres.transaction import PostgresTransaction

__all__ = ["PostgresTransaction"]
