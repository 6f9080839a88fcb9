"""``RemoteData``: a folder on a computer (a CalcJob's working folder), as AiiDA's.

The node records the computer and the absolute path; its files stay on the computer and are
read through the computer's transport.  ``listdir``/``getfile`` are synchronous as in AiiDA (they
run the transport on a private event loop); inside a running event loop use the awaitable twins
``alistdir``/``agetfile``, or pass an open transport (a worker's pooled one).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar

from miniengine.core.data import Data, StorageNeeds, check_text
from miniengine.exceptions import EventLoopError
from miniengine.runtime.computers import Computer, FieldTypeError, load_computer

if TYPE_CHECKING:
    from miniengine.transports.transport import Transport

__all__ = ["ComputerData", "RemoteData", "run_with_transport"]

_T = TypeVar("_T")

#: The attribute key of the computer's uuid (hidden from ``node.base.attributes``).
COMPUTER_KEY = "_computer"


def run_with_transport(computer: Computer, action: Callable[[Transport], Awaitable[_T]]) -> _T:
    """Open the computer's transport, run ``action`` with it, close it, from synchronous code.

    Refused inside a running event loop (it would block it): await the action there instead.
    """
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise EventLoopError(
            "this call opens a transport and would block the running event loop: use its "
            "awaitable twin (alistdir, agetfile, aclean) instead"
        )

    async def main() -> _T:
        async with computer.get_transport() as transport:
            return await action(transport)

    import anyio

    return anyio.run(main)


class ComputerData(Data, type_name="core.computer_data"):
    """A Data node tied to a computer (codes, ``RemoteData``): AiiDA's ``node.computer``."""

    def __init__(self, computer: Computer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._computer: Computer | None = None
        self._computer_uuid: str | None = None
        if computer is not None:
            self.computer = computer

    def __eq__(self, other: object) -> bool:
        """The same node (same uuid), as AiiDA compares nodes; content is not compared."""
        return isinstance(other, Data) and type(other) is type(self) and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    @property
    def computer(self) -> Computer | None:
        """The computer (loaded from the node's database on first access)."""
        if self._computer is None and self._computer_uuid is not None:
            self._computer = load_computer(uuid=self._computer_uuid, db=self._store)
        return self._computer

    @computer.setter
    def computer(self, computer: Computer | None) -> None:
        self._check_mutable()
        if computer is not None and not isinstance(computer, Computer):
            raise FieldTypeError(f"computer must be a Computer, not {type(computer).__name__}")
        self._computer = computer
        self._computer_uuid = computer.uuid if computer is not None else None

    def store(self) -> Self:
        """Store the node, and its computer first if that is not stored yet."""
        if self._pk is None and self._computer is not None and not self._computer.is_stored:
            self._computer.store()
        return super().store()

    def _storage_needs(self) -> StorageNeeds | None:
        # called inside the storing transaction: it must not write (an unstored computer is
        # refused there by name)
        return StorageNeeds(computer_uuid=self._computer_uuid)

    def _own_attributes(self) -> dict[str, Any]:
        return {}

    def _restore_own_attributes(self, attributes: dict[str, Any]) -> None:
        """Set what :meth:`_own_attributes` returned (subclasses)."""

    def _to_attributes(self) -> Any:
        return {**self._own_attributes(), COMPUTER_KEY: self._computer_uuid}

    def _attributes_view(self) -> dict[str, Any]:
        return dict(self._own_attributes())

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        obj = cls.__new__(cls)
        ComputerData.__init__(obj)
        content = dict(attributes or {})
        obj._computer_uuid = content.pop(COMPUTER_KEY, None)
        obj._restore_own_attributes(content)
        return obj


class RemoteData(ComputerData, type_name="core.remote"):
    """A folder on a computer: ``RemoteData(remote_path='/abs/path', computer=computer)``."""

    def __init__(
        self, remote_path: str | None = None, computer: Computer | None = None, **kwargs: Any
    ) -> None:
        super().__init__(computer=computer, **kwargs)
        self._remote_path: str | None = None
        if remote_path is not None:
            self.set_remote_path(remote_path)

    def get_remote_path(self) -> str:
        if self._remote_path is None:
            raise FieldTypeError("this RemoteData has no remote_path")
        return self._remote_path

    def set_remote_path(self, path: str) -> None:
        self._check_mutable()
        if not isinstance(path, str):
            raise FieldTypeError(f"remote_path must be a str, not {type(path).__name__}")
        check_text(path, "remote_path")
        if not posixpath.isabs(path):
            from miniengine.exceptions import ValidationError

            raise ValidationError(f"remote_path must be an absolute path, not {path!r}")
        self._remote_path = path

    def _own_attributes(self) -> dict[str, Any]:
        return {"remote_path": self._remote_path} if self._remote_path is not None else {}

    def _restore_own_attributes(self, attributes: dict[str, Any]) -> None:
        self._remote_path = attributes.get("remote_path")

    def _require_computer(self) -> Computer:
        computer = self.computer
        if computer is None:
            raise FieldTypeError("this RemoteData has no computer")
        return computer

    def _path(self, relpath: str) -> str:
        if posixpath.isabs(relpath):
            raise FieldTypeError(f"the path {relpath!r} must be relative to the remote folder")
        return posixpath.normpath(posixpath.join(self.get_remote_path(), relpath))

    # through the transport ---------------------------------------------------------------------

    async def alistdir(self, relpath: str = ".", transport: Transport | None = None) -> list[str]:
        """The names in the remote folder (or ``relpath`` in it), through ``transport`` (open)
        or a transport opened for this call."""
        path = self._path(relpath)
        if transport is not None:
            return await transport.listdir(path)
        async with self._require_computer().get_transport() as opened:
            return await opened.listdir(path)

    def listdir(self, relpath: str = ".") -> list[str]:
        """The names in the remote folder (or ``relpath`` in it)."""
        path = self._path(relpath)
        return run_with_transport(self._require_computer(), lambda t: t.listdir(path))

    async def agetfile(
        self, relpath: str, destpath: str | os.PathLike[str], transport: Transport | None = None
    ) -> None:
        """Copy the remote file ``relpath`` to the local ``destpath``."""
        path = self._path(relpath)
        if transport is not None:
            await transport.get(path, destpath)
            return
        async with self._require_computer().get_transport() as opened:
            await opened.get(path, destpath)

    def getfile(self, relpath: str, destpath: str | os.PathLike[str]) -> None:
        """Copy the remote file ``relpath`` to the local ``destpath``."""
        path = self._path(relpath)
        run_with_transport(self._require_computer(), lambda t: t.get(path, destpath))

    def get_computer_name(self) -> str:
        """The label of the computer the folder is on."""
        return self._require_computer().label

    async def aclean(self, transport: Transport | None = None) -> None:
        """Remove the remote folder and everything in it (a missing folder is not an error),
        through ``transport`` (open) or a transport opened for this call."""
        path = posixpath.normpath(self.get_remote_path())
        if path == "/":
            from miniengine.exceptions import ValidationError

            raise ValidationError("refusing to clean the root folder of a computer")
        if transport is not None:
            await transport.rmtree(path)
            return
        async with self._require_computer().get_transport() as opened:
            await opened.rmtree(path)

    def _clean(self, transport: Transport | None = None) -> None:
        """AiiDA's name: remove the remote folder (``clean_workdir``); :meth:`aclean` in a loop."""
        if transport is not None:
            raise EventLoopError("an open transport is async: use 'await remote.aclean(transport)'")
        run_with_transport(self._require_computer(), lambda opened: self.aclean(opened))

    @property
    def is_empty(self) -> bool:
        """Whether the remote folder is empty (or gone)."""
        path = self.get_remote_path()

        async def empty(transport: Transport) -> bool:
            if not await transport.isdir(path):
                return True
            return not await transport.listdir(path)

        return run_with_transport(self._require_computer(), empty)

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<RemoteData: uuid: {self.uuid} (pk: {pk}) {self._remote_path!r}>"
