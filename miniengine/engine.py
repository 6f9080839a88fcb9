"""AiiDA-shaped names for launching and writing processes: ``from miniengine.engine import run``.

It mirrors ``aiida.engine`` for every name miniengine has, so that porting a script means changing
``aiida`` to ``miniengine`` in its imports.  The names are imported on first use (as in the
package itself), so ``import miniengine.engine`` costs nothing until one is used.
"""

from __future__ import annotations

from typing import Any

from miniengine._lazy import resolve

_EXPORTS: dict[str, tuple[str, str]] = {
    # launchers
    "run": ("miniengine.runtime.launch", "run"),
    "run_get_node": ("miniengine.runtime.launch", "run_get_node"),
    "run_get_pk": ("miniengine.runtime.launch", "run_get_pk"),
    "submit": ("miniengine.runtime.submit", "submit"),
    # processes
    "calcfunction": ("miniengine.runtime.functions", "calcfunction"),
    "workfunction": ("miniengine.runtime.functions", "workfunction"),
    "WorkChain": ("miniengine.runtime.workchain", "WorkChain"),
    "CalcJob": ("miniengine.runtime.calcjob.process", "CalcJob"),
    "Parser": ("miniengine.runtime.calcjob.parser", "Parser"),
    "CalculationFactory": ("miniengine.runtime.calcjob.parser", "CalculationFactory"),
    "ParserFactory": ("miniengine.runtime.calcjob.parser", "ParserFactory"),
    "CalcInfo": ("miniengine.core.calcinfo", "CalcInfo"),
    "CodeInfo": ("miniengine.core.calcinfo", "CodeInfo"),
    "BaseRestartWorkChain": ("miniengine.runtime.restart", "BaseRestartWorkChain"),
    "process_handler": ("miniengine.runtime.restart", "process_handler"),
    "ProcessHandlerReport": ("miniengine.runtime.restart", "ProcessHandlerReport"),
    "ToContext": ("miniengine.core.awaitables", "ToContext"),
    "append_": ("miniengine.core.awaitables", "append_"),
    "assign_": ("miniengine.core.awaitables", "assign_"),
    "if_": ("miniengine.core.outline", "if_"),
    "while_": ("miniengine.core.outline", "while_"),
    "return_": ("miniengine.core.outline", "return_"),
    "ExitCode": ("miniengine.core.exit_code", "ExitCode"),
    "ExitCodesNamespace": ("miniengine.core.exit_code", "ExitCodesNamespace"),
    "ProcessBuilder": ("miniengine.core.builder", "ProcessBuilder"),
    "ProcessBuilderNamespace": ("miniengine.core.builder", "ProcessBuilderNamespace"),
    "ProcessSpec": ("miniengine.core.spec", "ProcessSpec"),
    "ProcessState": ("miniengine.core.states", "ProcessState"),
    "PortNamespace": ("miniengine.core.ports", "PortNamespace"),
    "InputPort": ("miniengine.core.ports", "InputPort"),
    "OutputPort": ("miniengine.core.ports", "OutputPort"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return resolve(__name__, _EXPORTS, name, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
