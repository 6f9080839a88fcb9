"""Codes: the programs a CalcJob runs, as AiiDA's ``InstalledCode`` and ``PortableCode``.

A code is a Data node (it is an input of every job that runs it).  An ``InstalledCode`` names an
executable already on a computer by its absolute path; a ``PortableCode`` carries a folder of
files in the repository, uploaded into each job's working folder, and names its executable
relative to that folder.  ``load_code('label@computer')`` finds one by its full label.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Self

from miniengine.core.data import StorageNeeds, check_text
from miniengine.exceptions import MultipleObjectsError, NotExistent, ValidationError
from miniengine.runtime.computers import Computer, FieldTypeError, load_computer
from miniengine.runtime.file_data import NodeRepository, RepositoryData

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["AbstractCode", "InstalledCode", "PortableCode", "load_code"]

_CODE_FIELDS = (
    "default_calc_job_plugin",
    "prepend_text",
    "append_text",
    "use_double_quotes",
    "with_mpi",
)


def _check_label(label: Any) -> None:
    if not isinstance(label, str):
        raise FieldTypeError(f"a code's label must be a str, not {type(label).__name__}")
    if "@" in label:
        raise ValidationError(
            f"the code label {label!r} contains '@', which separates a code's label from its "
            "computer's in a full label"
        )


class AbstractCode(RepositoryData, type_name="core.code"):
    """What every code has: the text around its command, MPI, and its default CalcJob plugin."""

    def __init__(
        self,
        default_calc_job_plugin: str | None = None,
        append_text: str = "",
        prepend_text: str = "",
        use_double_quotes: bool = False,
        with_mpi: bool | None = None,
        **kwargs: Any,
    ) -> None:
        _check_label(kwargs.get("label", ""))
        super().__init__(**kwargs)
        for name, value, kind in (
            ("default_calc_job_plugin", default_calc_job_plugin, (str, type(None))),
            ("append_text", append_text, (str,)),
            ("prepend_text", prepend_text, (str,)),
            ("use_double_quotes", use_double_quotes, (bool,)),
            ("with_mpi", with_mpi, (bool, type(None))),
        ):
            if isinstance(value, str):
                check_text(value, f"the code's {name}")
            if not isinstance(value, kind):
                raise FieldTypeError(
                    f"the code's {name} must be "
                    f"{' or '.join('None' if k is type(None) else k.__name__ for k in kind)}, "
                    f"not {type(value).__name__}"
                )
        self._fields: dict[str, Any] = {
            "default_calc_job_plugin": default_calc_job_plugin,
            "append_text": append_text,
            "prepend_text": prepend_text,
            "use_double_quotes": use_double_quotes,
            "with_mpi": with_mpi,
        }

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        _check_label(value)
        RepositoryData.label.fset(self, value)  # type: ignore[attr-defined]

    @property
    def default_calc_job_plugin(self) -> str | None:
        return self._fields["default_calc_job_plugin"]  # type: ignore[no-any-return]

    @property
    def prepend_text(self) -> str:
        return str(self._fields["prepend_text"])

    @property
    def append_text(self) -> str:
        return str(self._fields["append_text"])

    @property
    def use_double_quotes(self) -> bool:
        return bool(self._fields["use_double_quotes"])

    @property
    def with_mpi(self) -> bool | None:
        return self._fields["with_mpi"]  # type: ignore[no-any-return]

    def get_prepend_text(self) -> str:
        return self.prepend_text

    def get_append_text(self) -> str:
        return self.append_text

    @property
    def computer(self) -> Computer | None:
        return None

    @property
    def full_label(self) -> str:
        return self.label

    def can_run_on_computer(self, computer: Computer) -> bool:
        return True

    def get_executable(self) -> PurePosixPath:
        raise NotImplementedError

    def get_executable_cmdline_params(self, cmdline_params: list[str] | None = None) -> list[str]:
        """The command line: the executable, then ``cmdline_params``."""
        return [str(self.get_executable()), *(cmdline_params or [])]

    def _code_attributes(self) -> dict[str, Any]:
        return {}

    def _restore_code_attributes(self, attributes: dict[str, Any]) -> None:
        pass

    def _own_attributes(self) -> dict[str, Any]:
        return {**self._fields, **self._code_attributes()}

    def _restore_own_attributes(self, attributes: dict[str, Any]) -> None:
        self._fields = {name: attributes.get(name) for name in _CODE_FIELDS}
        self._fields["append_text"] = self._fields["append_text"] or ""
        self._fields["prepend_text"] = self._fields["prepend_text"] or ""
        self._fields["use_double_quotes"] = bool(self._fields["use_double_quotes"])
        self._restore_code_attributes(attributes)

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<{type(self).__name__}: {self.full_label!r} (pk: {pk})>"

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.full_label!r}"


class InstalledCode(AbstractCode, type_name="core.code.installed"):
    """An executable installed on a computer: ``InstalledCode(computer=, filepath_executable=)``."""

    def __init__(
        self,
        computer: Computer,
        filepath_executable: str | os.PathLike[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(computer, Computer):
            raise FieldTypeError(
                f"InstalledCode needs a Computer as computer=, not {type(computer).__name__}"
            )
        self._computer: Computer | None = computer
        self._computer_uuid: str | None = computer.uuid
        self._filepath_executable = self._checked_executable(filepath_executable)

    @staticmethod
    def _checked_executable(path: Any) -> str:
        if not isinstance(path, str | os.PathLike):
            raise FieldTypeError(
                f"filepath_executable must be a str or a path, not {type(path).__name__}"
            )
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise ValidationError("filepath_executable must be a non-empty path")
        check_text(text, "filepath_executable")
        if not posixpath.isabs(text):
            raise ValidationError(
                f"the filepath_executable {text!r} of an InstalledCode must be an absolute path "
                "on the computer"
            )
        return text

    @property
    def filepath_executable(self) -> PurePosixPath:
        return PurePosixPath(self._filepath_executable)

    @filepath_executable.setter
    def filepath_executable(self, value: str | os.PathLike[str]) -> None:
        self._check_mutable()
        self._filepath_executable = self._checked_executable(value)

    def get_executable(self) -> PurePosixPath:
        return self.filepath_executable

    @property
    def computer(self) -> Computer | None:
        if self._computer is None and self._computer_uuid is not None:
            self._computer = load_computer(uuid=self._computer_uuid, db=self._store)
        return self._computer

    @property
    def full_label(self) -> str:
        computer = self.computer
        return f"{self.label}@{computer.label if computer is not None else '?'}"

    def can_run_on_computer(self, computer: Computer) -> bool:
        return computer.uuid == self._computer_uuid

    def store(self) -> Self:
        """Store the node, and its computer first if that is not stored yet."""
        if self._pk is None and self._computer is not None and not self._computer.is_stored:
            self._computer.store()
        return super().store()

    def _storage_needs(self) -> StorageNeeds | None:
        # called inside the storing transaction: it must not write (an unstored computer is
        # refused there by name)
        return StorageNeeds(computer_uuid=self._computer_uuid)

    def _code_attributes(self) -> dict[str, Any]:
        return {"filepath_executable": self._filepath_executable}

    def _to_attributes(self) -> Any:
        attributes = super()._to_attributes()
        attributes["_computer"] = self._computer_uuid
        return attributes

    def _restore_code_attributes(self, attributes: dict[str, Any]) -> None:
        self._filepath_executable = str(attributes.get("filepath_executable", ""))
        self._computer = None
        self._computer_uuid = attributes.get("_computer")

    async def avalidate_filepath_executable(self, transport: Any = None) -> None:
        """Check on the computer that the executable is a file (``ValidationError`` if not)."""
        computer = self.computer
        assert computer is not None
        if transport is None:
            async with computer.get_transport() as opened:
                found = await opened.isfile(self._filepath_executable)
        else:
            found = await transport.isfile(self._filepath_executable)
        if not found:
            raise ValidationError(
                f"the executable {self._filepath_executable} is not a file on {computer.label}"
            )

    def validate_filepath_executable(self) -> None:
        """Check on the computer, through its transport, that the executable is a file."""
        from miniengine.runtime.remote_data import run_with_transport

        computer = self.computer
        assert computer is not None
        run_with_transport(
            computer, lambda transport: self.avalidate_filepath_executable(transport)
        )


class PortableCode(AbstractCode, type_name="core.code.portable"):
    """A folder of files (with the executable) uploaded with each job:
    ``PortableCode(filepath_files=local_folder, filepath_executable='relative/path')``."""

    def __init__(
        self,
        filepath_files: str | os.PathLike[str],
        filepath_executable: str | os.PathLike[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(filepath_files, str | os.PathLike):
            raise FieldTypeError(
                f"filepath_files must be a local folder path, not {type(filepath_files).__name__}"
            )
        files = Path(filepath_files)
        if not files.is_dir():
            raise ValidationError(f"filepath_files {files} is not a folder")
        executable = self._checked_executable(filepath_executable)
        if not (files / executable).is_file():
            raise ValidationError(
                f"the filepath_executable {executable!r} is not a file in {files}"
            )
        self._filepath_executable = executable
        NodeRepository(self).put_object_from_tree(files)

    @staticmethod
    def _checked_executable(path: Any) -> str:
        if not isinstance(path, str | os.PathLike):
            raise FieldTypeError(
                f"filepath_executable must be a str or a path, not {type(path).__name__}"
            )
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise ValidationError("filepath_executable must be a non-empty path")
        pure = PurePosixPath(text)
        if pure.is_absolute() or ".." in pure.parts:
            raise ValidationError(
                f"the filepath_executable {text!r} of a PortableCode must be relative to its "
                "folder of files"
            )
        return str(pure)

    @property
    def filepath_executable(self) -> PurePosixPath:
        return PurePosixPath(self._filepath_executable)

    def get_executable(self) -> PurePosixPath:
        """The executable, relative to the job's working folder (where the files are put)."""
        return self.filepath_executable

    def get_executable_cmdline_params(self, cmdline_params: list[str] | None = None) -> list[str]:
        return [f"./{self._filepath_executable}", *(cmdline_params or [])]

    def _code_attributes(self) -> dict[str, Any]:
        return {"filepath_executable": self._filepath_executable}

    def _restore_code_attributes(self, attributes: dict[str, Any]) -> None:
        self._filepath_executable = str(attributes.get("filepath_executable", ""))


def load_code(
    identifier: int | str | None = None,
    *,
    pk: int | None = None,
    uuid: str | None = None,
    label: str | None = None,
    db: Backend | str | os.PathLike[str] | None = None,
) -> AbstractCode:
    """A stored code by full label (``'label@computer'``), label (if unique), pk or uuid.

    ``NotExistent`` when none matches, ``MultipleObjectsError`` when a label is ambiguous.
    """
    from miniengine.runtime.context import current_store, store_for
    from miniengine.runtime.nodes import LoadNodeArgumentError, load_node

    given = [value is not None for value in (identifier, pk, uuid, label)].count(True)
    if given != 1:
        raise LoadNodeArgumentError(
            "load_code() needs exactly one of identifier, pk=, uuid=, label="
        )
    store = store_for(db) if db is not None else current_store()
    node: Any = None
    if pk is not None or uuid is not None:
        node = load_node(pk=pk, uuid=uuid, db=store)
    else:
        text = identifier if label is None else label
        if isinstance(text, int) and not isinstance(text, bool):
            node = load_node(pk=text, db=store)
        elif isinstance(text, str):
            code_label, at, computer_label = text.partition("@")
            pks = store.computers.code_pks(code_label, computer_label if at else None)
            if len(pks) > 1:
                raise MultipleObjectsError(
                    f"{len(pks)} codes are labelled {text!r} (pks "
                    f"{', '.join(map(str, pks[:5]))}): give 'label@computer' or a pk"
                )
            if pks:
                node = load_node(pk=pks[0], db=store)
            elif label is None and not at:
                try:
                    node = load_node(text, db=store)  # a pk or a uuid (prefix)
                except NotExistent:
                    node = None
        else:
            raise FieldTypeError(f"load_code needs a label, pk or uuid, not {text!r}")
    if node is None:
        raise NotExistent(f"no code with the label, pk or uuid {identifier or label!r}")
    if not isinstance(node, AbstractCode):
        raise NotExistent(f"node {node.pk} is a {type(node).__name__}, not a code")
    return node
