"""miniengine: a durable workflow engine for Python.

Decorate functions with ``@calcfunction``/``@workfunction`` and run them; every call is recorded in
a provenance graph in one sqlite file.  The public names are imported lazily, so that
``import miniengine`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

_EXPORTS: dict[str, str] = {
    # launching
    "run": "miniengine.runtime.launch",
    "run_get_node": "miniengine.runtime.launch",
    "run_get_pk": "miniengine.runtime.launch",
    "arun": "miniengine.runtime.launch",
    "arun_get_node": "miniengine.runtime.launch",
    "find_processes": "miniengine.runtime.launch",
    "load_node": "miniengine.runtime.nodes",
    "aload_node": "miniengine.runtime.async_reads",
    "afind_processes": "miniengine.runtime.async_reads",
    "QueryBuilder": "miniengine.runtime.querybuilder",
    "resume": "miniengine.runtime.launch",
    "submit": "miniengine.runtime.submit",
    "asubmit": "miniengine.runtime.submit",
    "await_node": "miniengine.runtime.submit",
    # nodes
    "ProcessNode": "miniengine.runtime.nodes",
    "CalcFunctionNode": "miniengine.runtime.nodes",
    "WorkFunctionNode": "miniengine.runtime.nodes",
    "WorkChainNode": "miniengine.runtime.nodes",
    "CalcJobNode": "miniengine.runtime.nodes",
    "Node": "miniengine.runtime.nodes",
    # groups
    "Group": "miniengine.runtime.groups",
    "load_group": "miniengine.runtime.groups",
    # processes
    "CalcJob": "miniengine.runtime.calcjob.process",
    "Parser": "miniengine.runtime.calcjob.parser",
    "calcfunction": "miniengine.runtime.functions",
    "workfunction": "miniengine.runtime.functions",
    "enable_caching": "miniengine.runtime.caching",
    "disable_caching": "miniengine.runtime.caching",
    "WorkChain": "miniengine.runtime.workchain",
    "BaseRestartWorkChain": "miniengine.runtime.restart",
    "process_handler": "miniengine.runtime.restart",
    "ProcessHandlerReport": "miniengine.runtime.restart",
    "ToContext": "miniengine.core.awaitables",
    "append_": "miniengine.core.awaitables",
    "assign_": "miniengine.core.awaitables",
    "if_": "miniengine.core.outline",
    "while_": "miniengine.core.outline",
    "return_": "miniengine.core.outline",
    "ExitCode": "miniengine.core.exit_code",
    "ProcessState": "miniengine.core.states",
    "ProcessBuilder": "miniengine.core.builder",
    # data
    "Data": "miniengine.core.data",
    "Int": "miniengine.core.data",
    "Float": "miniengine.core.data",
    "Str": "miniengine.core.data",
    "Bool": "miniengine.core.data",
    "Dict": "miniengine.core.data",
    "List": "miniengine.core.data",
    "SinglefileData": "miniengine.runtime.file_data",
    "FolderData": "miniengine.runtime.file_data",
    "RemoteData": "miniengine.runtime.remote_data",
    # computers and codes
    "Computer": "miniengine.runtime.computers",
    "load_computer": "miniengine.runtime.computers",
    "InstalledCode": "miniengine.runtime.codes",
    "PortableCode": "miniengine.runtime.codes",
    "load_code": "miniengine.runtime.codes",
    # errors
    "MiniengineError": "miniengine.exceptions",
    "InputValidationError": "miniengine.exceptions",
    "OutputValidationError": "miniengine.exceptions",
    "InvalidOperation": "miniengine.exceptions",
    "InvalidTransition": "miniengine.exceptions",
    "ModificationNotAllowed": "miniengine.exceptions",
    "NotExistent": "miniengine.exceptions",
    "MultipleObjectsError": "miniengine.exceptions",
    "EventLoopError": "miniengine.exceptions",
    "ProcessKilledError": "miniengine.exceptions",
    "CheckpointError": "miniengine.exceptions",
    "UnknownDataTypeError": "miniengine.exceptions",
    "ValidationError": "miniengine.exceptions",
    "StoreError": "miniengine.exceptions",
    "SubmitError": "miniengine.exceptions",
    "IncompatibleDatabaseError": "miniengine.exceptions",
    "DatabaseLockedError": "miniengine.exceptions",
    "DatabaseUnavailableError": "miniengine.exceptions",
    "LeaseLostError": "miniengine.exceptions",
}

__all__ = [
    "BaseRestartWorkChain",
    "Bool",
    "CalcFunctionNode",
    "CalcJob",
    "CalcJobNode",
    "CheckpointError",
    "Computer",
    "Data",
    "DatabaseLockedError",
    "DatabaseUnavailableError",
    "Dict",
    "EventLoopError",
    "ExitCode",
    "Float",
    "FolderData",
    "Group",
    "IncompatibleDatabaseError",
    "InputValidationError",
    "InstalledCode",
    "Int",
    "InvalidOperation",
    "InvalidTransition",
    "LeaseLostError",
    "List",
    "MiniengineError",
    "ModificationNotAllowed",
    "MultipleObjectsError",
    "Node",
    "NotExistent",
    "OutputValidationError",
    "Parser",
    "PortableCode",
    "ProcessBuilder",
    "ProcessHandlerReport",
    "ProcessKilledError",
    "ProcessNode",
    "ProcessState",
    "QueryBuilder",
    "RemoteData",
    "SinglefileData",
    "StoreError",
    "Str",
    "SubmitError",
    "ToContext",
    "UnknownDataTypeError",
    "ValidationError",
    "WorkChain",
    "WorkChainNode",
    "WorkFunctionNode",
    "afind_processes",
    "aload_node",
    "append_",
    "arun",
    "arun_get_node",
    "assign_",
    "asubmit",
    "await_node",
    "calcfunction",
    "disable_caching",
    "enable_caching",
    "find_processes",
    "if_",
    "load_code",
    "load_computer",
    "load_group",
    "load_node",
    "process_handler",
    "resume",
    "return_",
    "run",
    "run_get_node",
    "run_get_pk",
    "submit",
    "while_",
    "workfunction",
]

if TYPE_CHECKING:
    from miniengine.core.awaitables import ToContext, append_, assign_
    from miniengine.core.builder import ProcessBuilder
    from miniengine.core.data import Bool, Data, Dict, Float, Int, List, Str
    from miniengine.core.exit_code import ExitCode
    from miniengine.core.outline import if_, return_, while_
    from miniengine.core.states import ProcessState
    from miniengine.exceptions import (
        CheckpointError,
        DatabaseLockedError,
        DatabaseUnavailableError,
        EventLoopError,
        IncompatibleDatabaseError,
        InputValidationError,
        InvalidOperation,
        InvalidTransition,
        LeaseLostError,
        MiniengineError,
        ModificationNotAllowed,
        MultipleObjectsError,
        NotExistent,
        OutputValidationError,
        ProcessKilledError,
        StoreError,
        SubmitError,
        UnknownDataTypeError,
        ValidationError,
    )
    from miniengine.runtime.async_reads import afind_processes, aload_node
    from miniengine.runtime.caching import disable_caching, enable_caching
    from miniengine.runtime.calcjob.parser import Parser
    from miniengine.runtime.calcjob.process import CalcJob
    from miniengine.runtime.codes import InstalledCode, PortableCode, load_code
    from miniengine.runtime.computers import Computer, load_computer
    from miniengine.runtime.file_data import FolderData, SinglefileData
    from miniengine.runtime.functions import calcfunction, workfunction
    from miniengine.runtime.groups import Group, load_group
    from miniengine.runtime.launch import (
        arun,
        arun_get_node,
        find_processes,
        resume,
        run,
        run_get_node,
        run_get_pk,
    )
    from miniengine.runtime.nodes import (
        CalcFunctionNode,
        CalcJobNode,
        Node,
        ProcessNode,
        WorkChainNode,
        WorkFunctionNode,
        load_node,
    )
    from miniengine.runtime.querybuilder import QueryBuilder
    from miniengine.runtime.remote_data import RemoteData
    from miniengine.runtime.restart import (
        BaseRestartWorkChain,
        ProcessHandlerReport,
        process_handler,
    )
    from miniengine.runtime.submit import asubmit, await_node, submit
    from miniengine.runtime.workchain import WorkChain


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'miniengine' has no attribute {name!r}")
    if module == "miniengine.core.data":
        # the pure Data types are stored by the runtime, which the core itself never imports
        importlib.import_module("miniengine.runtime.nodes")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
