"""The exception tree of miniengine.

Every error the engine raises derives from :class:`MiniengineError` and, where AiiDA raises a
built-in exception in the same situation, from that built-in too, so that code written against
``aiida.engine`` (``except ValueError``) keeps working.  Low-level errors (``sqlite3``, ``msgpack``)
are mapped to these classes at the IO boundary; a user never sees them bare.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "CheckpointError",
    "CorruptArchive",
    "DatabaseFullError",
    "DatabaseLockedError",
    "EventLoopError",
    "IncompatibleArchiveVersionError",
    "IncompatibleDatabaseError",
    "InputValidationError",
    "InvalidOperation",
    "InvalidTransition",
    "LeaseLostError",
    "MiniengineError",
    "ModificationNotAllowed",
    "MultipleObjectsError",
    "NotExistent",
    "OutputValidationError",
    "ProcessKilledError",
    "ReadOnlyDatabaseError",
    "StoreError",
    "SubmitError",
    "UnknownDataTypeError",
    "UnsafeDatabaseError",
    "ValidationError",
]


class MiniengineError(Exception):
    """Base class of every error raised by miniengine."""


class InvalidTransition(MiniengineError, RuntimeError):
    """A process was asked to make a state change that the transition table does not allow."""


class InputValidationError(MiniengineError, ValueError):
    """An input is missing, unknown, of the wrong type, or rejected by a validator.

    Raised before any node is created, and the message names the port.
    """


class OutputValidationError(MiniengineError, ValueError):
    """An output is undeclared, of the wrong type, or a process returned the wrong kind of data."""


class InvalidOperation(MiniengineError, ValueError):
    """An operation that the process model forbids, e.g. a calcfunction calling another process."""


class SubmitError(MiniengineError, RuntimeError):
    """``submit()`` was refused: called inside a step (use ``self.submit``), or with
    ``store_provenance=False``, or for a process that a daemon cannot run."""


class ModificationNotAllowed(MiniengineError):
    """A stored (and therefore immutable) node was asked to change."""


class NotExistent(MiniengineError):
    """No node matches the given pk or uuid."""


class ValidationError(MiniengineError, ValueError):
    """A computer, code or data node with a field AiiDA refuses (a relative executable path, an
    unknown scheduler, a label that is taken): raised before anything is stored."""


class MultipleObjectsError(MiniengineError):
    """An identifier (a uuid prefix) matches more than one node: give more of it.

    AiiDA's ``load_node`` raises its ``MultipleObjectsError`` in the same case.
    """


class EventLoopError(MiniengineError, RuntimeError):
    """A blocking call was made where it would block or nest a running event loop."""


class ProcessKilledError(MiniengineError):
    """The process was killed (by a user, a parent, or Ctrl-C) before it finished."""


class CheckpointError(MiniengineError, ValueError):
    """A value cannot be encoded into, or decoded from, a checkpoint."""


class UnknownDataTypeError(CheckpointError):
    """Stored data names a Data type that is not registered in this interpreter."""


class StoreError(MiniengineError):
    """The database could not be opened, read or written."""


class IncompatibleDatabaseError(StoreError):
    """The file is not a miniengine database, or was written by a newer miniengine."""


class DatabaseLockedError(StoreError):
    """The database stayed locked by another connection beyond every retry."""


class DatabaseUnavailableError(StoreError):
    """The database server stopped answering (a restart, a failover, the network) and did not
    answer again within every retry; the read or the write was not done.  (If the connection
    was lost at a write's ``COMMIT``, the message says that whether it was committed is
    unknown.)

    It says nothing about the process that was running: a daemon worker hands the process back
    to the queue, to run again from its last checkpoint once the server answers.
    """


class ReadOnlyDatabaseError(StoreError):
    """The database, or the folder that must hold its write-ahead log, cannot be written by
    this user; what it holds can still be read, nothing can be added."""


class DatabaseFullError(StoreError):
    """A write found the disk (or the database's page limit) full; it was rolled back whole,
    so everything stored before is intact."""


class UnsafeDatabaseError(StoreError):
    """The database file or its folder belongs to another user or is writable by others.

    Whoever can write the file can make a worker import any module on its path, so such a file
    is refused (as ssh refuses a key file that others can change), with the command that fixes it.
    """


class LeaseLostError(StoreError):
    """This owner no longer holds the lease of a process; its write was refused whole.

    This is the fencing guarantee: a stale owner (paused, partitioned, or presumed dead) can never
    overwrite the work of the owner that took the process over.
    """


class ArchiveError(MiniengineError):
    """An archive could not be written or imported (as AiiDA's ``ExportImportException``, which
    derives from no other built-in); nothing was imported, and no half-written file is left."""


class CorruptArchive(ArchiveError):
    """The file is not a miniengine archive, or is truncated or was changed after it was
    written (a member's checksum, a missing or unexpected member, a broken zip or database)."""


class IncompatibleArchiveVersionError(ArchiveError):
    """The archive was written in a format version this miniengine cannot read (a newer one)."""
