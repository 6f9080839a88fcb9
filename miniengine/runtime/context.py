"""Which process is running here, and which store a launch uses.

The running process is kept in a context variable: a child launched from a body (in the same
thread, or in a task or worker thread that copied the context) finds its parent there, and with it
the parent's store.  A top-level launch resolves the database from its argument or
``$MINIENGINE_DB`` each time.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from miniengine.storage.interfaces.provenance import CallMemo
from miniengine.storage.open import shared_backend
from miniengine.storage.paths import resolve_db
from miniengine.storage.store import Store, shared_store

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["RunningProcess", "current_process", "current_store", "store_for"]


@dataclass
class RunningProcess:
    """What children need to know about the process whose body is running."""

    store: Backend
    pk: int | None  # None when the process is not stored (store_provenance=False)
    epoch: int
    kind: str  # "calcfunction", "workfunction" or "workchain"
    label: str
    call_count: int = field(default=0)
    node: Any = None
    tree: Any = None  # the run-mode process tree (task group) of a WorkChain
    seq: int = 0  # the step being run (WorkChains), for memoising the calls it makes
    replayable: bool = False  # a WorkChain: its steps can be replayed from a checkpoint

    def memo_key(self, fingerprint: str) -> CallMemo | None:
        """The memo key of the next call this process makes (None if it cannot be replayed)."""
        if not self.replayable or self.pk is None:
            return None
        return CallMemo(self.pk, self.seq, self.call_count, fingerprint)

    @property
    def parent_fence(self) -> tuple[int, str, int] | None:
        """``(pk, owner, epoch)`` that a child's creation checks, or None if not stored."""
        if self.pk is None:
            return None
        return self.pk, self.store.owner, self.epoch


_current: contextvars.ContextVar[RunningProcess | None] = contextvars.ContextVar(
    "miniengine_current_process", default=None
)


def current_process() -> RunningProcess | None:
    return _current.get()


def set_current(process: RunningProcess | None) -> contextvars.Token[RunningProcess | None]:
    return _current.set(process)


def reset_current(token: contextvars.Token[RunningProcess | None]) -> None:
    _current.reset(token)


def check_same_database(store: Backend, inputs: Any, owner: str) -> None:
    """Refuse stored Data from another database file: its pk means another node here."""
    for label, data in inputs:
        other = getattr(data, "_store", None)
        # the same store object is the common case: no location strings built for it
        if (
            data.pk is not None
            and other is not None
            and other is not store
            and other.location != store.location
        ):
            from miniengine.exceptions import InputValidationError

            raise InputValidationError(
                f"{owner}: the input '{label}' is stored in another database ({other.location}), "
                f"not in {store.location}; pass a copy made with .clone()"
            )


#: The database of the ``async with Worker(db=...)`` block this code runs in, if any.
_worker_db: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "miniengine_worker_db", default=None
)


def serve_in_block(db: str) -> contextvars.Token[str | None]:
    """Make ``db`` the default database of the code that runs in a worker's ``async with``
    block (and in the tasks started from it): what it submits goes where the worker runs it."""
    return _worker_db.set(db)


def end_block(token: contextvars.Token[str | None]) -> None:
    try:
        _worker_db.reset(token)
    except ValueError:  # left in another task than it was entered in (an async fixture)
        old = token.old_value
        _worker_db.set(None if old is contextvars.Token.MISSING else old)


def store_for(db: Backend | str | os.PathLike[str] | None = None) -> Store:
    """The store for an explicit ``db`` (an open backend, a path or a PostgreSQL URL), else the
    database of the worker block this runs in, else the default database."""
    if isinstance(db, Store):
        return db
    if db is not None and hasattr(db, "provenance"):
        return cast(Store, db)  # another backend (PostgreSQL): see below
    if db is None:
        db = _worker_db.get()
    location = resolve_db(db)
    if isinstance(location, str):
        # A PostgreSQL store serves the Backend part of Store, which is all the runtime may
        # use; the cast goes once the runtime's hints name Backend.
        return cast(Store, shared_backend(location))
    return shared_store(location)


def current_store() -> Store:
    """The store of the running process, else the default database."""
    process = _current.get()
    if process is not None:
        return cast(Store, process.store)  # as in store_for
    return store_for(None)
