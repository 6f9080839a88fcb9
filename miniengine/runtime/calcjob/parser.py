"""``Parser``: turns a finished job's retrieved files into output nodes (AiiDA's ``Parser``).

The engine calls ``parse(**kwargs)`` once the files are retrieved; ``self.out(name, value)``
attaches an output (validated against the CalcJob's spec at once), and the returned exit code,
if any, decides the job's exit status.  ``Parser.parse_from_node(node)`` parses a finished job
again, as a calcfunction, so that the new outputs have provenance.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCode, ExitCodesNamespace
from miniengine.exceptions import MiniengineError, OutputValidationError
from miniengine.plugins import load_plugin
from miniengine.runtime.process_logger import ProcessLogger

if TYPE_CHECKING:
    from miniengine.runtime.nodes import CalcJobNode

__all__ = ["CalculationFactory", "Parser", "ParserFactory", "load_parser_class"]


class Parser:
    """Base class of parsers: implement ``parse(self, **kwargs)``."""

    def __init__(self, node: CalcJobNode) -> None:
        self._node = node
        self._outputs: dict[str, Data] = {}
        self._process_class: Any = None
        self._sink: Callable[[str, str], None] | None = None
        self._logger: ProcessLogger | None = None

    @property
    def node(self) -> CalcJobNode:
        return self._node

    @property
    def process_class(self) -> Any:
        if self._process_class is None:
            self._process_class = self._node.process_class
        return self._process_class

    @property
    def exit_codes(self) -> ExitCodesNamespace:
        """The exit codes of the CalcJob that ran (``self.exit_codes.ERROR_X``)."""
        return self.process_class.exit_codes  # type: ignore[no-any-return]

    @property
    def retrieved(self) -> Any:
        """The ``retrieved`` FolderData of the job."""
        return self._node.outputs.retrieved

    @property
    def outputs(self) -> dict[str, Data]:
        return self._outputs

    @property
    def logger(self) -> ProcessLogger:
        """Lines logged here go to the job's log (and to Python's ``miniengine.process``)."""
        if self._logger is None:
            sink = self._sink or _python_only
            self._logger = ProcessLogger(sink, self._node.pk, type(self).__name__)
        return self._logger

    def out(self, link_label: str, node: Data) -> None:
        """Attach an output; it is checked against the CalcJob's spec now (``ValueError``)."""
        from miniengine.runtime.workchain.executor import _output_port

        spec = self.process_class.spec()
        port, dynamic = _output_port(spec.outputs, link_label)
        if port is None and dynamic is None:
            raise OutputValidationError(
                f"{type(self).__name__}: the output '{link_label}' is not declared by "
                f"{self.process_class.__name__}"
            )
        if port is not None:
            message = port.validate(node, link_label)
            if message:
                raise OutputValidationError(f"{type(self).__name__}: {message}")
        if not isinstance(node, Data):
            raise OutputValidationError(
                f"{type(self).__name__}: the output '{link_label}' must be Data, "
                f"not {type(node).__name__}"
            )
        if link_label in self._outputs:
            raise OutputValidationError(f"the output '{link_label}' is already set")
        self._outputs[link_label] = node

    def parse(self, **kwargs: Any) -> ExitCode | None:
        """Read ``self.retrieved``, attach outputs with ``self.out``, return an exit code."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement parse(**kwargs)")

    @classmethod
    def parse_from_node(
        cls,
        node: CalcJobNode,
        store_provenance: bool = True,
        retrieved_temporary_folder: str | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """Parse a finished job's ``retrieved`` folder again, as a calcfunction whose input is
        that folder: returns ``(outputs, calcfunction node)``."""
        from miniengine.runtime.functions import calcfunction
        from miniengine.runtime.launch import run_get_node

        parser_class = cls

        def parse_calcfunction(**kwargs: Any) -> Any:
            parser = parser_class(node)
            extra = {}
            if retrieved_temporary_folder is not None:
                extra["retrieved_temporary_folder"] = retrieved_temporary_folder
            exit_code = parser.parse(**extra)
            if exit_code is not None and exit_code.status:
                return exit_code
            return dict(parser.outputs)

        parse_calcfunction.__name__ = parse_calcfunction.__qualname__ = (
            f"{cls.__name__}_parse_from_node"
        )
        function = calcfunction(parse_calcfunction)
        result, call_node = run_get_node(
            function,
            retrieved=node.outputs.retrieved,
            metadata={"store_provenance": store_provenance},
        )
        outputs = result if isinstance(result, dict) else {"result": result}
        return outputs, call_node


def _python_only(levelname: str, message: str) -> None:
    """Where a parser's lines go outside a running job: nowhere but Python's logging."""


#: Parsers and calculations that ship with miniengine: none; plugins bring their own.
_BUILT_IN: dict[str, str] = {}


def load_parser_class(name: str) -> type[Parser]:
    """The Parser named by an entry point (group ``miniengine.parsers``) or ``module:Class``."""
    if not isinstance(name, str) or not name:
        raise MiniengineError(f"a parser name must be a non-empty str, not {name!r}")
    return _load_parser_class(name)


@functools.lru_cache(maxsize=256)
def _load_parser_class(name: str) -> type[Parser]:
    # cached: looking through the entry points reads every installed package's metadata
    # (milliseconds), and every job of a worker names its parser
    return load_plugin("miniengine.parsers", name, _BUILT_IN, Parser)


def ParserFactory(entry_point_name: str) -> type[Parser]:
    """AiiDA's ``ParserFactory``: the Parser plugin of that name."""
    return load_parser_class(entry_point_name)


def CalculationFactory(entry_point_name: str) -> Any:
    """AiiDA's ``CalculationFactory``: the CalcJob (or calcfunction) plugin of that name
    (group ``miniengine.calculations``, or ``module:Class``)."""
    from miniengine.runtime.calcjob.process import CalcJob

    return load_plugin("miniengine.calculations", entry_point_name, _BUILT_IN, CalcJob)
