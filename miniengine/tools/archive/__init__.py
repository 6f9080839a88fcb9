"""Archives: a part of the provenance graph in one portable file, and importing it elsewhere
(AiiDA's ``aiida.tools.archive``: ``create_archive``, ``import_archive``, and
``inspect_archive`` for ``verdi archive info``).

Imported lazily: ``import miniengine.tools.archive`` costs nothing until a function is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.storage.interfaces.archive import ImportReport
    from miniengine.tools.archive.create import create_archive
    from miniengine.tools.archive.importer import import_archive
    from miniengine.tools.archive.inspect import ArchiveInfo, inspect_archive

__all__ = ["ArchiveInfo", "ImportReport", "create_archive", "import_archive", "inspect_archive"]

_WHERE = {
    "create_archive": "miniengine.tools.archive.create",
    "import_archive": "miniengine.tools.archive.importer",
    "inspect_archive": "miniengine.tools.archive.inspect",
    "ArchiveInfo": "miniengine.tools.archive.inspect",
    "ImportReport": "miniengine.storage.interfaces.archive",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
