"""``Computer``: where external programs run, as AiiDA's ``aiida.orm.Computer``.

A computer is a row of its own table, not a provenance node: its settings (hostname, transport
and scheduler plugins, work folder, ``mpirun`` command, ...) can be edited after it is stored,
and ``configure(**params)`` records how its transport connects (user name, port, key, ...).  A
database has one user, so that configuration is stored with the computer; AiiDA keeps it in an
``AuthInfo`` per user and computer.

A CalcJob reaches the computer with :meth:`Computer.get_transport` (an unopened transport; open
it through a worker's ``TransportPool`` keyed by the computer's uuid) and
:meth:`Computer.get_scheduler`.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from miniengine.core import codec
from miniengine.core.data import check_text
from miniengine.core.ids import new_uuid
from miniengine.exceptions import MiniengineError, NotExistent, ValidationError
from miniengine.plugins import MissingEntryPointError

# The Data types above the core (codes, file data, RemoteData) all import this module; importing
# the nodes module installs how Data is stored, so that they can be stored however they were
# imported (``from miniengine.orm import SinglefileData``, or by the command line).
from miniengine.runtime import nodes as _nodes  # noqa: F401
from miniengine.storage.interfaces.computers import ComputerRow
from miniengine.storage.open import reopened

if TYPE_CHECKING:
    # The plugin packages are imported when a plugin is first needed: they cost ~15 ms, and
    # file data and codes import this module without needing them.
    from miniengine.schedulers.scheduler import Scheduler
    from miniengine.storage.interfaces import Backend
    from miniengine.transports.transport import Transport

__all__ = [
    "AuthInfo",
    "Computer",
    "ComputerNotConfiguredError",
    "FieldTypeError",
    "load_computer",
    "localhost_computer",
]

#: AiiDA's defaults.
DEFAULT_WORKDIR = "/scratch/{username}/miniengine/"
DEFAULT_MPIRUN_COMMAND = "mpirun -np {tot_num_mpiprocs}"
DEFAULT_SHEBANG = "#!/bin/bash"
#: Seconds between two scheduler queries for the jobs on one computer (AiiDA's default).
DEFAULT_MINIMUM_JOB_POLL_INTERVAL = 10.0

#: The placeholders ``mpirun_command`` may use (AiiDA's), with the values it is checked with.
_MPIRUN_PLACEHOLDERS = {
    "tot_num_mpiprocs": 1,
    "num_machines": 1,
    "num_mpiprocs_per_machine": 1,
    "num_cores_per_machine": 1,
    "num_cores_per_mpiproc": 1,
}


class FieldTypeError(MiniengineError, TypeError):
    """A computer, code or file data field of the wrong type (AiiDA raises ``TypeError``)."""


class ComputerNotConfiguredError(NotExistent):
    """The computer's transport was never configured (``Computer.configure`` /
    ``miniengine computer configure``); AiiDA raises ``NotExistent`` for its missing AuthInfo."""


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise FieldTypeError(f"the computer's {name} must be a str, not {type(value).__name__}")
    check_text(value, f"the computer's {name}")
    return value


def _check_workdir(workdir: Any) -> str:
    _check_str(workdir, "workdir")
    try:
        formatted = workdir.format(username="user")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(
            f"the workdir {workdir!r} may only use the placeholder {{username}} ({exc!r})"
        ) from None
    if not posixpath.isabs(formatted):
        raise ValidationError(f"the workdir must be an absolute path, not {workdir!r}")
    return str(workdir)


def _check_mpirun_command(command: Any) -> list[str]:
    if isinstance(command, str):
        parts = shlex.split(command)
    elif isinstance(command, list | tuple) and all(isinstance(part, str) for part in command):
        parts = list(command)
    else:
        raise FieldTypeError(
            f"mpirun_command must be a str or a list of str, not {type(command).__name__}"
        )
    for part in parts:
        check_text(part, "the computer's mpirun_command")
        try:
            part.format(**_MPIRUN_PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(
                f"the mpirun_command part {part!r} uses an unknown placeholder ({exc!r}); "
                f"known: {', '.join('{' + name + '}' for name in _MPIRUN_PLACEHOLDERS)}"
            ) from None
    return parts


def _check_positive(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldTypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value <= 0:
        raise ValidationError(f"{name} must be positive, not {value}")
    return value


def _check_plugin(kind: str, name: Any) -> str:
    _check_str(name, f"{kind}_type")
    try:
        if kind == "transport":
            from miniengine.transports.plugins import TransportFactory

            TransportFactory(name)
        else:
            from miniengine.schedulers.plugins import SchedulerFactory

            SchedulerFactory(name)
    except MissingEntryPointError as exc:
        raise ValidationError(f"the {kind}_type {name!r} is not a {kind} plugin: {exc}") from None
    return str(name)


class _ComputerCollection:
    """``Computer.collection``: the computers of the default database (or of ``db``)."""

    def __call__(self, db: Backend | str | os.PathLike[str] | None = None) -> _ComputerCollection:
        collection = _ComputerCollection()
        collection._db = db
        return collection

    _db: Backend | str | os.PathLike[str] | None = None

    def _store(self) -> Backend:
        from miniengine.runtime.context import current_store, store_for

        return store_for(self._db) if self._db is not None else current_store()

    def all(self) -> list[Computer]:
        """Every stored computer, oldest first."""
        store = self._store()
        return [Computer._from_row(row, store) for row in store.computers.read_computers()]

    def get(
        self, *, label: str | None = None, pk: int | None = None, uuid: str | None = None
    ) -> Computer:
        """The computer with this label, pk or uuid (exactly one); ``NotExistent`` if none."""
        if [label, pk, uuid].count(None) != 2:
            raise ValueError("Computer.collection.get() takes exactly one of label=, pk=, uuid=")
        store = self._store()
        if pk is not None:
            return load_computer(pk=pk, db=store)
        computer = (
            load_computer(label=label, db=store) if label else load_computer(uuid=uuid, db=store)
        )
        if uuid is not None and computer.uuid != uuid.lower():
            raise NotExistent(f"no computer with the uuid {uuid!r}")
        return computer

    def get_or_create(self, label: str, **kwargs: Any) -> tuple[bool, Computer]:
        """``(created, computer)``: the computer labelled ``label``, stored first if missing."""
        try:
            return False, self.get(label=label)
        except NotExistent:
            return True, Computer(label, **kwargs).store()

    def delete(self, pk: int) -> None:
        """Delete a computer; refused while codes or ``RemoteData`` use it."""
        self._store().computers.delete_computer(pk)

    def __iter__(self) -> Iterator[Computer]:
        return iter(self.all())


class Computer:
    """A computer to run jobs on, with its transport and scheduler plugins."""

    collection: ClassVar[_ComputerCollection] = _ComputerCollection()

    def __init__(
        self,
        label: str,
        hostname: str = "localhost",
        description: str = "",
        transport_type: str = "core.local",
        scheduler_type: str = "core.direct",
        workdir: str = DEFAULT_WORKDIR,
        mpirun_command: str | Sequence[str] = DEFAULT_MPIRUN_COMMAND,
        default_mpiprocs_per_machine: int | None = None,
        default_memory_per_machine: int | None = None,
        shebang: str = DEFAULT_SHEBANG,
        prepend_text: str = "",
        append_text: str = "",
        use_double_quotes: bool = False,
    ) -> None:
        if not _check_str(label, "label").strip():
            raise ValidationError("a computer needs a non-empty label")
        if not _check_str(hostname, "hostname").strip():
            raise ValidationError("a computer needs a hostname")
        self._label = label
        self._hostname = hostname
        self._description = _check_str(description, "description")
        self._transport_type = _check_plugin("transport", transport_type)
        self._scheduler_type = _check_plugin("scheduler", scheduler_type)
        if not isinstance(use_double_quotes, bool):
            raise FieldTypeError("use_double_quotes must be a bool")
        if not _check_str(shebang, "shebang").startswith("#!"):
            raise ValidationError(f"the shebang must start with '#!', not {shebang!r}")
        self._metadata: dict[str, Any] = {
            "workdir": _check_workdir(workdir),
            "mpirun_command": _check_mpirun_command(mpirun_command),
            "default_mpiprocs_per_machine": _check_positive(
                default_mpiprocs_per_machine, "default_mpiprocs_per_machine"
            ),
            "default_memory_per_machine": _check_positive(
                default_memory_per_machine, "default_memory_per_machine"
            ),
            "shebang": shebang,
            "prepend_text": _check_str(prepend_text, "prepend_text"),
            "append_text": _check_str(append_text, "append_text"),
            "use_double_quotes": use_double_quotes,
            "minimum_job_poll_interval": DEFAULT_MINIMUM_JOB_POLL_INTERVAL,
        }
        self._configuration: dict[str, Any] | None = None
        self._uuid = new_uuid()
        self._pk: int | None = None
        self._store: Backend | None = None

    @classmethod
    def _unloaded(cls, uuid: str) -> Computer:
        """A computer known by its uuid only (decoded from a checkpoint): its fields are loaded
        from the current database when first used."""
        computer = cls.__new__(cls)
        computer.__dict__["_uuid"] = uuid
        return computer

    def __getattr__(self, name: str) -> Any:
        # only called for a field missing from an unloaded computer (see ``_unloaded``)
        fields = self.__dict__
        if name not in _ROW_FIELDS or "_uuid" not in fields or "_label" in fields:
            raise AttributeError(f"'Computer' object has no attribute {name!r}")
        loaded = load_computer(uuid=fields["_uuid"])
        fields.update(loaded.__dict__)
        return fields[name]

    @classmethod
    def _from_row(cls, row: ComputerRow, store: Backend) -> Computer:
        computer = cls.__new__(cls)
        computer._label = row.label
        computer._hostname = row.hostname
        computer._description = row.description
        computer._transport_type = row.transport_type
        computer._scheduler_type = row.scheduler_type
        computer._metadata = dict(row.metadata)
        computer._configuration = row.configuration
        computer._uuid = row.uuid
        computer._pk = row.pk
        computer._store = store
        return computer

    # identity ----------------------------------------------------------------------------------

    @property
    def pk(self) -> int | None:
        return self._pk

    @property
    def id(self) -> int | None:
        return self._pk

    @property
    def uuid(self) -> str:
        return self._uuid

    @property
    def is_stored(self) -> bool:
        return self._pk is not None

    @property
    def store_handle(self) -> Backend | None:
        """The store the computer lives in (``None`` while unstored); a closed store (e.g. by
        ``close_all_stores``) is opened again."""
        if self._store is not None and self._store.closed:
            self._store = reopened(self._store)
        return self._store

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Computer) and other._uuid == self._uuid

    def __hash__(self) -> int:
        return hash(self._uuid)

    def __str__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"{self._label} ({self._hostname}), pk: {pk}"

    def __repr__(self) -> str:
        return f"<Computer: {self}>"

    # fields ------------------------------------------------------------------------------------

    def _set(self, **fields: Any) -> None:
        """Write changed columns through to the database when the computer is stored."""
        store = self.store_handle
        if self._pk is not None and store is not None:
            store.computers.update_computer(self._pk, fields)

    def _set_metadata(self, key: str, value: Any) -> None:
        metadata = {**self._metadata, key: value}
        self._set(metadata=metadata)
        self._metadata = metadata

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        if not _check_str(value, "label").strip():
            raise ValidationError("a computer needs a non-empty label")
        self._set(label=value)
        self._label = value

    @property
    def hostname(self) -> str:
        return self._hostname

    @hostname.setter
    def hostname(self, value: str) -> None:
        if not _check_str(value, "hostname").strip():
            raise ValidationError("a computer needs a hostname")
        self._set(hostname=value)
        self._hostname = value

    @property
    def description(self) -> str:
        return self._description

    @description.setter
    def description(self, value: str) -> None:
        self._set(description=_check_str(value, "description"))
        self._description = value

    @property
    def transport_type(self) -> str:
        return self._transport_type

    @property
    def scheduler_type(self) -> str:
        return self._scheduler_type

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def get_workdir(self) -> str:
        """The work folder pattern, with AiiDA's ``{username}`` placeholder unreplaced."""
        return str(self._metadata["workdir"])

    def set_workdir(self, workdir: str) -> None:
        self._set_metadata("workdir", _check_workdir(workdir))

    def get_mpirun_command(self) -> list[str]:
        """The ``mpirun`` command as a list, placeholders (``{tot_num_mpiprocs}``) unreplaced."""
        return list(self._metadata["mpirun_command"])

    def set_mpirun_command(self, command: str | Sequence[str]) -> None:
        self._set_metadata("mpirun_command", _check_mpirun_command(command))

    def get_default_mpiprocs_per_machine(self) -> int | None:
        return self._metadata.get("default_mpiprocs_per_machine")

    def set_default_mpiprocs_per_machine(self, value: int | None) -> None:
        self._set_metadata(
            "default_mpiprocs_per_machine", _check_positive(value, "default_mpiprocs_per_machine")
        )

    def get_default_memory_per_machine(self) -> int | None:
        """Memory per machine in kB, as AiiDA."""
        return self._metadata.get("default_memory_per_machine")

    def set_default_memory_per_machine(self, value: int | None) -> None:
        self._set_metadata(
            "default_memory_per_machine", _check_positive(value, "default_memory_per_machine")
        )

    def get_shebang(self) -> str:
        return str(self._metadata["shebang"])

    def set_shebang(self, shebang: str) -> None:
        if not _check_str(shebang, "shebang").startswith("#!"):
            raise ValidationError(f"the shebang must start with '#!', not {shebang!r}")
        self._set_metadata("shebang", shebang)

    def get_prepend_text(self) -> str:
        return str(self._metadata["prepend_text"])

    def set_prepend_text(self, text: str) -> None:
        self._set_metadata("prepend_text", _check_str(text, "prepend_text"))

    def get_append_text(self) -> str:
        return str(self._metadata["append_text"])

    def set_append_text(self, text: str) -> None:
        self._set_metadata("append_text", _check_str(text, "append_text"))

    def get_use_double_quotes(self) -> bool:
        return bool(self._metadata["use_double_quotes"])

    def set_use_double_quotes(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise FieldTypeError("use_double_quotes must be a bool")
        self._set_metadata("use_double_quotes", value)

    def get_minimum_job_poll_interval(self) -> float:
        """Least seconds between two scheduler queries for this computer's jobs."""
        return float(
            self._metadata.get("minimum_job_poll_interval", DEFAULT_MINIMUM_JOB_POLL_INTERVAL)
        )

    def set_minimum_job_poll_interval(self, interval: float) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ValidationError(
                f"the minimum job poll interval must be a non-negative number, not {interval!r}"
            )
        self._set_metadata("minimum_job_poll_interval", float(interval))

    # storing -----------------------------------------------------------------------------------

    def store(self, db: Backend | str | os.PathLike[str] | None = None) -> Computer:
        """Store the computer (once) in ``db`` (default: the current database) and return it.

        A label another computer has is refused (``ValidationError``) and nothing is stored.
        """
        if self._pk is not None:
            return self
        from miniengine.runtime.context import current_store, store_for

        store = store_for(db) if db is not None else current_store()
        pk, _ = store.computers.insert_computer(
            self._uuid,
            self._label,
            self._hostname,
            self._description,
            self._transport_type,
            self._scheduler_type,
            self._metadata,
            self._configuration,
        )
        self._pk = pk
        self._store = store
        return self

    # transport and scheduler -------------------------------------------------------------------

    def transport_class(self) -> type[Transport]:
        from miniengine.transports.plugins import TransportFactory

        return TransportFactory(self._transport_type)

    def configure(self, user: Any = None, **params: Any) -> None:
        """Record how the transport connects (``username``, ``port``, ``key_filename``, ...).

        The settings are checked by the transport's ``validate_params`` (a ``ValueError`` names
        a bad one) and replace any earlier configuration; settings left out take the plugin's
        defaults when the transport is made.  ``user`` is accepted for AiiDA's signature: a
        database has one user.
        """
        del user
        try:
            self.transport_class().validate_params(params)
        except MiniengineError:
            raise
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"cannot configure the computer {self._label!r}: {exc}") from None
        for name, value in params.items():
            if isinstance(value, str):
                check_text(value, f"the setting {name!r} of the computer {self._label!r}")
        configuration = {name: value for name, value in params.items() if value is not None}
        self._set(configuration=configuration)
        self._configuration = configuration

    def get_configuration(self, user: Any = None) -> dict[str, Any]:
        """The settings given to :meth:`configure` (empty if it was never configured)."""
        del user
        return dict(self._configuration or {})

    @property
    def is_configured(self) -> bool:
        return self._configuration is not None

    def is_user_configured(self, user: Any = None) -> bool:
        """AiiDA's name for :attr:`is_configured`."""
        del user
        return self.is_configured

    def get_transport(self, user: Any = None) -> Transport:
        """An unopened transport to this computer, made from its configuration.

        Open it with ``async with`` or, in a worker, through ``TransportPool.request(computer.uuid,
        computer.get_transport)`` so that all jobs on the computer share one connection.
        """
        del user
        if self._configuration is None:
            raise ComputerNotConfiguredError(
                f"the computer {self._label!r} is not configured: run `miniengine computer "
                f"configure {self._transport_type} {self._label}` or call computer.configure()"
            )
        return self.transport_class()(self._hostname, **self._configuration)

    def get_authinfo(self, user: Any = None) -> AuthInfo:
        """AiiDA's ``AuthInfo`` of this computer: its configuration, and a transport from it."""
        del user
        if self._configuration is None:
            self.get_transport()  # raises ComputerNotConfiguredError, naming the fix
        return AuthInfo(self)

    def get_scheduler(self) -> Scheduler:
        """A new instance of the computer's scheduler plugin."""
        from miniengine.schedulers.plugins import SchedulerFactory

        return SchedulerFactory(self._scheduler_type)()


#: The fields a loaded computer has (an unloaded one has only ``_uuid``).
_ROW_FIELDS = frozenset(
    {
        "_label",
        "_hostname",
        "_description",
        "_transport_type",
        "_scheduler_type",
        "_metadata",
        "_configuration",
        "_pk",
        "_store",
    }
)


def _computer_to_plain(computer: Computer) -> str:
    if not computer.is_stored:
        from miniengine.exceptions import CheckpointError

        raise CheckpointError(
            f"the computer {computer.label!r} is not stored: store it before a checkpoint holds it"
        )
    return computer.uuid


def _computer_from_plain(uuid: Any) -> Computer:
    if not isinstance(uuid, str):
        from miniengine.exceptions import CheckpointError

        raise CheckpointError(f"corrupt checkpoint: a computer named by {uuid!r}")
    return Computer._unloaded(uuid)


# A stored computer in a WorkChain's context is checkpointed by its uuid, as AiiDA's checkpoints
# hold computers; the tag is the codec's for this module (see codec._ENGINE_TYPES_ELSEWHERE).
codec.register_engine_type(Computer, 31, _computer_to_plain, _computer_from_plain)


class AuthInfo:
    """What AiiDA keeps per user and computer; here a view of the computer's configuration
    (a database has one user), for plugins that call ``computer.get_authinfo(user)``."""

    def __init__(self, computer: Computer) -> None:
        self.computer = computer

    @property
    def enabled(self) -> bool:
        return True

    def get_auth_params(self) -> dict[str, Any]:
        return self.computer.get_configuration()

    def get_transport(self) -> Transport:
        return self.computer.get_transport()

    def get_workdir(self) -> str:
        return self.computer.get_workdir()


def load_computer(
    identifier: int | str | None = None,
    *,
    pk: int | None = None,
    uuid: str | None = None,
    label: str | None = None,
    db: Backend | str | os.PathLike[str] | None = None,
) -> Computer:
    """A stored computer by label, pk, uuid (or unique uuid prefix), as AiiDA's ``load_computer``.

    A string of digits is a pk when a computer has it, else a label or uuid prefix.
    ``NotExistent`` when nothing matches.
    """
    from miniengine.runtime.context import current_store, store_for
    from miniengine.runtime.nodes import LoadNodeArgumentError, LoadNodeTypeError

    given = [value is not None for value in (identifier, pk, uuid, label)].count(True)
    if given != 1:
        raise LoadNodeArgumentError(
            "load_computer() needs exactly one of identifier, pk=, uuid= and label="
        )
    value = next(item for item in (identifier, pk, uuid, label) if item is not None)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LoadNodeTypeError(
            f"load_computer needs a pk (int) or a label or uuid (str), not {value!r}"
        )
    if pk is not None and not isinstance(pk, int):
        raise LoadNodeTypeError(f"load_computer(pk=...) needs an int, not {pk!r}")
    store = store_for(db) if db is not None else current_store()
    if isinstance(value, str) and identifier is not None and value.strip().isdecimal():
        try:
            row = store.computers.read_computer(int(value))
            return Computer._from_row(row, store)
        except NotExistent:
            pass
    row = store.computers.read_computer(value)
    if label is not None and row.label != label:
        raise NotExistent(f"no computer labelled {label!r}")
    return Computer._from_row(row, store)


def localhost_computer(
    workdir: str | os.PathLike[str],
    label: str = "localhost",
    scheduler_type: str = "core.direct",
    db: Backend | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Computer:
    """This machine as a stored, configured computer (``core.local``), in one call.

    Returns the computer labelled ``label`` when one is stored already, so tests and scripts can
    call it every time.  ``workdir`` is where jobs get their folders.
    """
    try:
        return load_computer(label=label, db=db)
    except NotExistent:
        pass
    computer = Computer(
        label,
        "localhost",
        description="this machine",
        transport_type="core.local",
        scheduler_type=scheduler_type,
        workdir=os.fspath(workdir),
        **kwargs,
    ).store(db)
    computer.configure(use_login_shell=False)
    return computer
