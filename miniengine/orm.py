"""AiiDA-shaped names for data and nodes: ``from miniengine.orm import Int, Dict, load_node``.

It mirrors ``aiida.orm`` for every name miniengine has, so that porting a script means changing
``aiida`` to ``miniengine`` in its imports.  The names are imported on first use (as in the
package itself), so ``import miniengine.orm`` costs nothing until one is used.
"""

from __future__ import annotations

from typing import Any

from miniengine._lazy import resolve

_EXPORTS: dict[str, tuple[str, str]] = {
    # data
    "Data": ("miniengine.core.data", "Data"),
    "BaseType": ("miniengine.core.data", "BaseType"),
    "NumericType": ("miniengine.core.data", "NumericType"),
    "Int": ("miniengine.core.data", "Int"),
    "Float": ("miniengine.core.data", "Float"),
    "Str": ("miniengine.core.data", "Str"),
    "Bool": ("miniengine.core.data", "Bool"),
    "Dict": ("miniengine.core.data", "Dict"),
    "List": ("miniengine.core.data", "List"),
    # ``spec.input(..., serializer=to_aiida_type)`` wraps plain values in their Data type
    "to_aiida_type": ("miniengine.core.data", "to_data"),
    # nodes
    "ProcessNode": ("miniengine.runtime.nodes", "ProcessNode"),
    "CalcFunctionNode": ("miniengine.runtime.nodes", "CalcFunctionNode"),
    "CalcJobNode": ("miniengine.runtime.nodes", "CalcJobNode"),
    "WorkFunctionNode": ("miniengine.runtime.nodes", "WorkFunctionNode"),
    "WorkChainNode": ("miniengine.runtime.nodes", "WorkChainNode"),
    "load_node": ("miniengine.runtime.nodes", "load_node"),
    "QueryBuilder": ("miniengine.runtime.querybuilder", "QueryBuilder"),
    "Node": ("miniengine.runtime.nodes", "Node"),
    # groups and comments
    "Group": ("miniengine.runtime.groups", "Group"),
    "load_group": ("miniengine.runtime.groups", "load_group"),
    "Comment": ("miniengine.runtime.extras", "Comment"),
    # the awaitable twin, for code on an event loop
    "aload_node": ("miniengine.runtime.async_reads", "aload_node"),
    # files, computers and codes
    "SinglefileData": ("miniengine.runtime.file_data", "SinglefileData"),
    "FolderData": ("miniengine.runtime.file_data", "FolderData"),
    "RemoteData": ("miniengine.runtime.remote_data", "RemoteData"),
    "Computer": ("miniengine.runtime.computers", "Computer"),
    "load_computer": ("miniengine.runtime.computers", "load_computer"),
    "AbstractCode": ("miniengine.runtime.codes", "AbstractCode"),
    "InstalledCode": ("miniengine.runtime.codes", "InstalledCode"),
    "PortableCode": ("miniengine.runtime.codes", "PortableCode"),
    "load_code": ("miniengine.runtime.codes", "load_code"),
    # caching (also in ``miniengine.manage.caching``, AiiDA's module)
    "enable_caching": ("miniengine.runtime.caching", "enable_caching"),
    "disable_caching": ("miniengine.runtime.caching", "disable_caching"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return resolve(__name__, _EXPORTS, name, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
