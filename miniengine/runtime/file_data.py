"""Data with files: ``SinglefileData`` and ``FolderData``, and ``node.base.repository``.

A node's files are objects of the content-addressed repository beside the database
(:mod:`miniengine.storage.repository`); the node itself holds only its *tree*, the names of its
files and folders with the key (sha256) of each file, in its attributes.

When content goes in: at once.  ``put_object_from_*`` (and the constructors) write the bytes into
the repository of the current database (the running process's, else ``$MINIENGINE_DB``) while
the node is still unstored, so the transaction that later stores the node only checks the
objects are there (copying them first if the node is stored in another database), and a
committed node never names a missing file.  Consequences:

- an unstored file node in a checkpoint (a WorkChain's context, a CalcJob's state) is encoded
  by value like any unstored Data: its tree of keys, not its bytes; decoded, it reads the same
  objects from the repository of the database the process runs in;
- an unstored file node given to ``self.out`` is stored with the process's outputs, like any
  Data, and its objects are checked in that commit;
- a node never stored leaves unreferenced objects, which repository maintenance removes after its
  grace period.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Protocol, Self, TypeAlias

from miniengine.core.data import Data, StorageNeeds, check_text
from miniengine.exceptions import MiniengineError
from miniengine.runtime.computers import FieldTypeError
from miniengine.storage.repository import Repository

__all__ = [
    "FolderData",
    "NodeRepository",
    "RepositoryHolder",
    "RepositoryPathError",
    "SinglefileData",
]

#: A folder of the tree: names to the key of a file (a str) or to a sub-folder (a dict).
Tree: TypeAlias = dict[str, Any]

#: The attribute key that holds the tree (hidden from ``node.base.attributes``).
_TREE = "_repository"


class RepositoryPathError(MiniengineError, TypeError):
    """A repository path that is absolute or leaves the node's folder (AiiDA raises TypeError)."""


class _ObjectNotFound(MiniengineError, FileNotFoundError):
    """No object at that path in the node's repository."""


class _IsAFolder(MiniengineError, IsADirectoryError):
    """The path names a folder where a file was expected."""


class _NotAFolder(MiniengineError, NotADirectoryError):
    """The path names a file where a folder was expected."""


def _parts(path: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The parts of a relative repository path; ``None`` and ``''`` are the root."""
    if path is None:
        return ()
    text = os.fspath(path)
    if not isinstance(text, str):
        raise RepositoryPathError(f"a repository path must be a str, not {type(text).__name__}")
    check_text(text, "a repository path")
    pure = PurePosixPath(text)
    if pure.is_absolute():
        raise RepositoryPathError(f"the repository path {text!r} is not a relative path")
    parts = tuple(part for part in pure.parts if part != ".")
    if ".." in parts:
        raise RepositoryPathError(f"the repository path {text!r} leaves the node's folder")
    return parts


def _copy_tree(tree: Tree) -> Tree:
    return {
        name: _copy_tree(item) if isinstance(item, dict) else item for name, item in tree.items()
    }


def _keys(tree: Tree) -> Iterator[str]:
    for item in tree.values():
        if isinstance(item, dict):
            yield from _keys(item)
        else:
            yield item


class RepositoryHolder(Protocol):
    """What :class:`NodeRepository` needs of a node: its tree, where its objects are, and
    whether it may change.  File data implements it; a process node with files (a CalcJob's
    submitted inputs) can too."""

    _tree: Tree

    def _check_mutable(self) -> None: ...

    def _repository(self) -> Repository: ...

    def _repository_for_writing(self) -> Repository: ...


class NodeRepository:
    """``node.base.repository``: the files of one node, as AiiDA's ``NodeRepository``.

    Paths are relative POSIX paths inside the node.  Writing is allowed while the node is
    unstored; a stored node's files are immutable (``ModificationNotAllowed``).
    """

    def __init__(self, node: RepositoryHolder) -> None:
        self._node = node

    # reading -----------------------------------------------------------------------------------

    def _lookup(self, path: str | os.PathLike[str] | None) -> Any:
        item: Any = self._node._tree
        walked: list[str] = []
        for part in _parts(path):
            if not isinstance(item, dict):
                raise _NotAFolder(f"{'/'.join(walked)} is a file, not a folder, in {self._node!r}")
            if part not in item:
                raise _ObjectNotFound(f"{self._node!r} has no object {os.fspath(path or '')!r}")
            walked.append(part)
            item = item[part]
        return item

    def _folder(self, path: str | os.PathLike[str] | None) -> Tree:
        item = self._lookup(path)
        if not isinstance(item, dict):
            raise _NotAFolder(f"{os.fspath(path or '')!r} is a file, not a folder")
        return item

    def _key(self, path: str | os.PathLike[str]) -> str:
        item = self._lookup(path)
        if isinstance(item, dict):
            raise _IsAFolder(f"{os.fspath(path)!r} is a folder in {self._node!r}, not a file")
        return str(item)

    def list_object_names(self, path: str | os.PathLike[str] | None = None) -> list[str]:
        """The names of the files and folders in ``path`` (default: the top), sorted."""
        return sorted(self._folder(path))

    def list_objects(self, path: str | os.PathLike[str] | None = None) -> list[tuple[str, bool]]:
        """``(name, is_folder)`` for each object in ``path``, sorted by name."""
        return [(name, isinstance(item, dict)) for name, item in sorted(self._folder(path).items())]

    def has_object(self, path: str | os.PathLike[str]) -> bool:
        try:
            self._lookup(path)
        except (_ObjectNotFound, _NotAFolder):
            return False
        return True

    def is_file(self, path: str | os.PathLike[str]) -> bool:
        return self.has_object(path) and not isinstance(self._lookup(path), dict)

    def is_dir(self, path: str | os.PathLike[str]) -> bool:
        return self.has_object(path) and isinstance(self._lookup(path), dict)

    def open(self, path: str | os.PathLike[str], mode: str = "r") -> IO[Any]:
        """The file at ``path`` for reading (``'r'`` text, UTF-8; ``'rb'`` bytes); use ``with``."""
        if mode not in ("r", "rb"):
            raise ValueError(
                f"the repository opens files for reading only ('r' or 'rb'), not {mode!r}"
            )
        stream = self._node._repository().open(self._key(path))
        return stream if mode == "rb" else io.TextIOWrapper(stream, encoding="utf-8")

    def get_object_content(self, path: str | os.PathLike[str], mode: str = "r") -> Any:
        """The content of the file at ``path``: a str (``'r'``) or bytes (``'rb'``)."""
        with self.open(path, mode) as stream:
            return stream.read()

    def get_object_size(self, path: str | os.PathLike[str]) -> int:
        return self._node._repository().get_object_size(self._key(path))

    def get_object_key(self, path: str | os.PathLike[str]) -> str:
        """The repository key (sha256 of the content) of the file at ``path``."""
        return self._key(path)

    def walk(
        self, path: str | os.PathLike[str] | None = None
    ) -> Iterator[tuple[PurePosixPath, list[str], list[str]]]:
        """``(folder path, folder names, file names)`` for ``path`` and every folder under it,
        top down, as ``os.walk``."""
        top = PurePosixPath(*_parts(path))
        folder = self._folder(path)
        folders = sorted(name for name, item in folder.items() if isinstance(item, dict))
        files = sorted(name for name, item in folder.items() if not isinstance(item, dict))
        yield top, folders, files
        for name in folders:
            yield from self.walk(top / name)

    def copy_tree(
        self, target: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
    ) -> None:
        """Write the files under ``path`` (default: all) into the local folder ``target``."""
        repository = self._node._repository()
        root = Path(target)
        for folder, _, files in self.walk(path):
            relative = folder.relative_to(PurePosixPath(*_parts(path)))
            destination = root.joinpath(*relative.parts)
            destination.mkdir(parents=True, exist_ok=True)
            for name in files:
                repository.copy_object_to(self._key(folder / name), destination / name)

    # writing -----------------------------------------------------------------------------------

    def _place(self, path: str | os.PathLike[str], item: Any) -> None:
        self._node._check_mutable()
        parts = _parts(path)
        if not parts:
            raise RepositoryPathError("a file needs a name: the repository path is empty")
        folder = self._node._tree
        for part in parts[:-1]:
            child = folder.setdefault(part, {})
            if not isinstance(child, dict):
                raise _NotAFolder(f"{part!r} is a file in {self._node!r}, not a folder")
            folder = child
        if isinstance(folder.get(parts[-1]), dict) and not isinstance(item, dict):
            raise _IsAFolder(f"{os.fspath(path)!r} is a folder in {self._node!r}")
        folder[parts[-1]] = item

    def put_object_from_filelike(self, handle: IO[Any], path: str | os.PathLike[str]) -> None:
        """Store the rest of a binary (or text, encoded as UTF-8) stream as the file ``path``."""
        self._node._check_mutable()
        _parts(path)
        if isinstance(handle, io.TextIOBase):
            key = self._node._repository_for_writing().put_object_from_bytes(
                handle.read().encode("utf-8")
            )
        else:
            key = self._node._repository_for_writing().put_object_from_filelike(handle)  # type: ignore[arg-type]
        self._place(path, key)

    def put_object_from_bytes(self, content: bytes, path: str | os.PathLike[str]) -> None:
        self.put_object_from_filelike(io.BytesIO(content), path)

    def put_object_from_file(
        self, filepath: str | os.PathLike[str], path: str | os.PathLike[str]
    ) -> None:
        """Store a copy of the local file ``filepath`` as the file ``path``."""
        self._node._check_mutable()
        _parts(path)
        source = Path(filepath)
        if not source.is_file():
            raise _ObjectNotFound(f"no file at {source} to put in the repository")
        with source.open("rb") as stream:
            self.put_object_from_filelike(stream, path)

    def put_object_from_tree(
        self, filepath: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
    ) -> None:
        """Store a copy of everything in the local folder ``filepath`` under ``path``."""
        self._node._check_mutable()
        source = Path(filepath)
        if not source.is_dir():
            raise _ObjectNotFound(f"no folder at {source} to put in the repository")
        base = PurePosixPath(*_parts(path))
        if base.parts:
            self._ensure_folder(base)
        for folder, folders, files in os.walk(source):
            relative = PurePosixPath(*Path(folder).relative_to(source).parts)
            for name in sorted(folders):
                self._ensure_folder(base / relative / name)
            for name in sorted(files):
                self.put_object_from_file(Path(folder) / name, base / relative / name)

    def _ensure_folder(self, path: PurePosixPath) -> None:
        folder = self._node._tree
        for part in path.parts:
            child = folder.setdefault(part, {})
            if not isinstance(child, dict):
                raise _NotAFolder(f"{part!r} is a file in {self._node!r}, not a folder")
            folder = child

    def delete_object(self, path: str | os.PathLike[str]) -> None:
        """Remove the file (or folder) ``path`` from the unstored node."""
        self._node._check_mutable()
        parts = _parts(path)
        if not parts:
            raise RepositoryPathError("the repository path is empty")
        parent = self._folder(PurePosixPath(*parts[:-1]) if parts[:-1] else None)
        if parts[-1] not in parent:
            raise _ObjectNotFound(f"{self._node!r} has no object {os.fspath(path)!r}")
        del parent[parts[-1]]


class RepositoryBase:
    """``node.base`` of a node with files: ``attributes``, ``links`` and ``repository``."""

    def __init__(self, base: Any, node: RepositoryData) -> None:
        self._base = base
        self._node = node

    @property
    def repository(self) -> NodeRepository:
        return NodeRepository(self._node)

    @property
    def attributes(self) -> Any:
        return self._base.attributes

    @property
    def links(self) -> Any:
        return self._base.links


class RepositoryData(Data, type_name="core.repository_data"):
    """A Data node whose content includes files in the repository (base of the file types)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tree: Tree = {}
        #: where the unstored node's objects were written (None: not yet, or decoded)
        self._repository_root: str | None = None

    # the repository ----------------------------------------------------------------------------

    def _repository(self) -> Repository:
        """The repository holding this node's objects."""
        if self._store is not None:
            return self._store.provenance.repository()  # type: ignore[no-any-return]
        if self._repository_root is not None:
            return Repository(self._repository_root)
        from miniengine.runtime.context import current_store

        return current_store().provenance.repository()

    def _repository_for_writing(self) -> Repository:
        repository = self._repository()
        self._repository_root = str(repository.root)
        return repository

    @property
    def base(self) -> RepositoryBase:
        return RepositoryBase(super().base, self)

    def _storage_needs(self) -> StorageNeeds | None:
        return StorageNeeds(
            object_keys=tuple(dict.fromkeys(_keys(self._tree))),
            source_repository=self._repository_root,
        )

    # attributes --------------------------------------------------------------------------------

    def _own_attributes(self) -> dict[str, Any]:
        """The node's attributes besides its tree (AiiDA's attribute names)."""
        return {}

    def _to_attributes(self) -> Any:
        return {**self._own_attributes(), _TREE: self._tree}

    def _attributes_view(self) -> dict[str, Any]:
        return _copy_tree(self._own_attributes())

    def _restore_own_attributes(self, attributes: dict[str, Any]) -> None:
        """Set what :meth:`_own_attributes` returned (subclasses)."""

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        obj = cls.__new__(cls)
        RepositoryData.__init__(obj)
        content = dict(attributes or {})
        obj._tree = _copy_tree(content.pop(_TREE, {}))
        obj._restore_own_attributes(content)
        return obj

    def __eq__(self, other: object) -> bool:
        """The same node (same uuid), as AiiDA compares nodes; content is not compared."""
        return isinstance(other, Data) and type(other) is type(self) and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    def clone(self) -> Self:
        copy = super().clone()
        copy._repository_root = str(self._repository().root)
        return copy


class SinglefileData(RepositoryData, type_name="core.singlefile"):
    """One file, as AiiDA's ``SinglefileData``: ``SinglefileData(file=path_or_stream)``."""

    DEFAULT_FILENAME = "file.txt"

    def __init__(
        self,
        file: str | os.PathLike[str] | IO[Any] | None,
        filename: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._filename: str | None = None
        if file is not None:
            self.set_file(file, filename)

    @classmethod
    def from_string(cls, content: str, filename: str | None = None, **kwargs: Any) -> Self:
        """A node whose file holds ``content`` (UTF-8)."""
        return cls(io.BytesIO(content.encode("utf-8")), filename=filename, **kwargs)

    @property
    def filename(self) -> str:
        """The name of the file (``ValueError`` while the node holds no file)."""
        if self._filename is None:
            raise _ObjectNotFound("this SinglefileData holds no file yet")
        return self._filename

    def set_file(
        self, file: str | os.PathLike[str] | IO[Any], filename: str | os.PathLike[str] | None = None
    ) -> None:
        """Replace the file with a copy of ``file`` (a local path or a stream)."""
        self._check_mutable()
        if filename is not None:
            name = os.fspath(filename)
        elif isinstance(file, str | os.PathLike):
            name = Path(file).name
        else:
            stream_name = getattr(file, "name", None)
            name = Path(stream_name).name if isinstance(stream_name, str) else self.DEFAULT_FILENAME
        if not isinstance(name, str) or len(_parts(name)) != 1:
            raise RepositoryPathError(f"the filename {name!r} must be a plain file name")
        repository = NodeRepository(self)
        if isinstance(file, str | os.PathLike):
            path = Path(file)
            if not path.is_file():
                raise _ObjectNotFound(f"no file at {path} for the SinglefileData")
            tree_before = self._tree
            self._tree = {}
            try:
                repository.put_object_from_file(path, name)
            except BaseException:
                self._tree = tree_before
                raise
        elif hasattr(file, "read"):
            self._tree = {}
            repository.put_object_from_filelike(file, name)
        else:
            raise FieldTypeError(
                f"SinglefileData needs a file path or a stream, not {type(file).__name__}"
            )
        self._filename = name

    def open(self, path: str | None = None, mode: str = "r") -> IO[Any]:
        """The file (``path`` defaults to :attr:`filename`), for reading; use ``with``."""
        return NodeRepository(self).open(path if path is not None else self.filename, mode)

    def get_content(self, mode: str = "r") -> Any:
        """The file's content: a str (``'r'``) or bytes (``'rb'``)."""
        return NodeRepository(self).get_object_content(self.filename, mode)

    def _own_attributes(self) -> dict[str, Any]:
        return {"filename": self._filename} if self._filename is not None else {}

    def _restore_own_attributes(self, attributes: dict[str, Any]) -> None:
        self._filename = attributes.get("filename")

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<SinglefileData: uuid: {self.uuid} (pk: {pk}) filename: {self._filename!r}>"


class FolderData(RepositoryData, type_name="core.folder"):
    """A folder of files, as AiiDA's ``FolderData``: ``FolderData(tree=local_folder)``."""

    def __init__(self, tree: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tree is not None:
            if not isinstance(tree, str | os.PathLike):
                raise FieldTypeError(f"FolderData(tree=...) needs a folder path, not {tree!r}")
            NodeRepository(self).put_object_from_tree(tree)

    # AiiDA's FolderData exposes the repository methods on the node itself
    def list_object_names(self, path: str | None = None) -> list[str]:
        return NodeRepository(self).list_object_names(path)

    def open(self, path: str, mode: str = "r") -> IO[Any]:
        return NodeRepository(self).open(path, mode)

    def get_object_content(self, path: str, mode: str = "r") -> Any:
        return NodeRepository(self).get_object_content(path, mode)

    def put_object_from_file(self, filepath: str | os.PathLike[str], path: str) -> None:
        NodeRepository(self).put_object_from_file(filepath, path)

    def put_object_from_filelike(self, handle: IO[Any] | BinaryIO, path: str) -> None:
        NodeRepository(self).put_object_from_filelike(handle, path)

    def put_object_from_tree(
        self, filepath: str | os.PathLike[str], path: str | None = None
    ) -> None:
        NodeRepository(self).put_object_from_tree(filepath, path)

    def walk(self, path: str | None = None) -> Iterator[tuple[PurePosixPath, list[str], list[str]]]:
        return NodeRepository(self).walk(path)

    def copy_tree(self, target: str | os.PathLike[str], path: str | None = None) -> None:
        NodeRepository(self).copy_tree(target, path)

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<FolderData: uuid: {self.uuid} (pk: {pk})>"
