"""The WorkChain: a process whose steps follow an outline, checkpointed after every step.

A WorkChain class declares its ports, exit codes and outline in ``define(cls, spec)``; the spec is
built on first use.  Running one is the job of an executor
(:mod:`miniengine.runtime.workchain.executor`; launching and resuming:
:mod:`miniengine.runtime.workchain.launch`), so that the WorkChain instance that steps see
keeps a small attribute namespace: ``ctx``, ``inputs``, ``node``, ``out``, ``out_many``,
``report``, ``logger``, ``submit``, ``to_context``, ``exposed_inputs``, ``exposed_outputs``,
``exit_codes``.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from miniengine.core.attribute_dict import AttributeDict, FrozenAttributeDict
from miniengine.core.builder import ProcessBuilder
from miniengine.core.exit_code import ExitCodesNamespace
from miniengine.core.outline import (
    Block,
    step_names,
)
from miniengine.core.spec import ProcessSpec
from miniengine.exceptions import (
    MiniengineError,
)
from miniengine.runtime.nodes import (
    ProcessNode,
    WorkChainNode,
)

if TYPE_CHECKING:
    from miniengine.runtime.process_logger import ProcessLogger
    from miniengine.runtime.workchain.executor import _Executor

__all__ = [
    "EVICTED",
    "IncompleteDefinitionError",
    "NotImportableError",
    "WorkChain",
    "WorkChainDefinitionError",
    "check_importable",
    "class_path",
    "import_process_class",
    "outline_of",
]

#: Step names AiiDA reserves, plus ``step`` (AiiDA's silent pitfall).
RESERVED_STEP_NAMES = frozenset({"run", "on_run", "to_context", "on_exiting", "on_wait", "step"})

#: Engine methods a subclass is expected to override.
OVERRIDABLE = frozenset({"define"})


class NotImportableError(MiniengineError, ValueError):
    """A process class handed to the daemon cannot be imported by its module path."""


#: What a lifecycle returns instead of outputs when the process was evicted to its checkpoint.
EVICTED: Any = "evicted"


def check_importable(cls: type) -> None:
    """Refuse (before anything is stored) a class that a daemon worker could not import."""
    path = class_path(cls)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise NotImportableError(
            f"{cls.__qualname__} is defined in {'a function' if '<locals>' in path else '__main__'}"
            ", so a daemon worker cannot import it; put it in a module (a .py file on the "
            "Python path) and import it from there, or use run() instead of submit()"
        )
    try:
        found = import_process_class(path)
    except MiniengineError as exc:
        raise NotImportableError(f"{exc}; a daemon worker must be able to import it") from None
    if found is not cls:
        raise NotImportableError(
            f"importing {path} gives another class than the one submitted; a daemon worker "
            "would run that one"
        )


class WorkChainDefinitionError(MiniengineError, TypeError):
    """A WorkChain class is malformed: a reserved step name, an outline naming a missing method."""


class IncompleteDefinitionError(WorkChainDefinitionError, AssertionError):
    """``define()`` left out something a WorkChain needs: the call to ``super().define(spec)``,
    or (found when the class is launched, as AiiDA does) the outline.  AiiDA raises an
    ``AssertionError`` for both; this is one too."""


def outline_of(cls: type[WorkChain]) -> Block:
    """The outline of ``cls``; a class without one can be inspected and can make a builder,
    but launching it fails here, before anything is stored."""
    outline = cls.spec().get_outline()
    if outline is None:
        raise IncompleteDefinitionError(
            f"{cls.__qualname__} cannot be launched: its define() sets no outline; call "
            "spec.outline(...) in define() with the steps to run"
        )
    return outline


def class_path(cls: type) -> str:
    """``module:qualname``, how a checkpoint names its process class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_process_class(path: str) -> type[WorkChain]:
    """Import the process class named by ``module:qualname``; a clear error if that fails."""
    module_name, _, qualname = path.partition(":")
    if "<locals>" in qualname:
        raise MiniengineError(
            f"the process class {path} was defined inside a function, so it cannot be imported "
            "again; define it at module level in an importable module"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise MiniengineError(f"cannot import the process class {path}: {exc}") from exc
    from miniengine.runtime.calcjob.process import CalcJob

    if not (isinstance(obj, type) and issubclass(obj, WorkChain | CalcJob)):
        raise MiniengineError(f"{path} is not a WorkChain or CalcJob class")
    return obj  # type: ignore[return-value]  # a CalcJob class too: the worker tells them apart


def import_by_process_type(process_type: str) -> Any:
    """The class or function named by a node's ``process_type`` (``module.qualname``)."""
    parts = process_type.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise MiniengineError(f"cannot import {process_type}: no importable module path")


#: The specs that ``WorkChain.define`` has filled: a spec missing here after ``define()`` means
#: a ``define`` did not call ``super().define(spec)`` (or ``WorkChain.define(spec)``).
#: Held while a process class's spec is built: the first use of a class may come from several
#: step threads at once (a worker claims many processes of one class together), and ``define``
#: may build other classes' specs (``expose_inputs``), hence reentrant.
SPEC_LOCK = threading.RLock()

_BASE_DEFINED: weakref.WeakSet[ProcessSpec] = weakref.WeakSet()


class _ExitCodes:
    """``Proc.exit_codes`` on the class and on instances."""

    def __get__(self, instance: Any, owner: type[WorkChain]) -> ExitCodesNamespace:
        building: ProcessSpec | None = owner.__dict__.get("_me_spec_building")
        if building is not None:  # read inside define(): the codes declared so far, as AiiDA
            return ExitCodesNamespace(building.exit_codes)
        return ExitCodesNamespace(owner.spec().exit_codes)


class WorkChain:
    """Base class of workflows made of steps; subclass it and implement ``define``."""

    exit_codes = _ExitCodes()

    _me: _Executor

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__:
            if name in OVERRIDABLE or name.startswith("__"):
                continue
            if name in RESERVED_STEP_NAMES or name in _ENGINE_NAMES:
                raise WorkChainDefinitionError(
                    f"{cls.__qualname__} defines {name!r}, which is reserved by the WorkChain "
                    "engine; rename that method (any other name, e.g. 'setup', 'finalize', "
                    "'result', works)"
                )

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        """Declare ports, exit codes and the outline; call ``super().define(spec)`` first."""
        _BASE_DEFINED.add(spec)  # checked by spec()
        spec.exit_code(1, "ERROR_UNSPECIFIED", "The process has failed with an unspecified error.")
        spec.exit_code(
            10, "ERROR_INVALID_OUTPUT", "The process returned an invalid output: {message}"
        )
        spec.exit_code(
            11, "ERROR_MISSING_OUTPUT", "The process did not register a required output."
        )

    @classmethod
    def spec(cls) -> ProcessSpec:
        """The spec of this class, built on first use and kept."""
        spec: ProcessSpec | None = cls.__dict__.get("_me_spec")
        if spec is not None:
            return spec
        with SPEC_LOCK:
            spec = cls.__dict__.get("_me_spec")
            if spec is None:
                spec = _build_spec(cls)
                type.__setattr__(cls, "_me_spec", spec)
        return spec

    @classmethod
    def get_builder(cls) -> ProcessBuilder:
        """A builder for this class's inputs: ``builder.x = Int(1); run(builder)``."""
        return ProcessBuilder(cls)

    # the API of steps ------------------------------------------------------------------------

    @property
    def ctx(self) -> AttributeDict:
        """The context: what steps keep for later steps (checkpointed after every step)."""
        return self._me.ctx

    @property
    def inputs(self) -> FrozenAttributeDict:
        """The inputs, read-only."""
        return self._me.inputs

    @property
    def node(self) -> WorkChainNode:
        return self._me.node

    def out(self, name: str, value: Any) -> None:
        """Attach an output (validated now; stored, if needed, when the step ends)."""
        self._me.add_output(name, value)

    def out_many(self, values: Mapping[str, Any]) -> None:
        """Attach several outputs."""
        for name, value in values.items():
            self._me.add_output(name, value)

    def report(self, message: str) -> None:
        """Log a message on this process (``process report``), dated now, written when the step
        ends."""
        self._me.report(str(message))

    @property
    def logger(self) -> ProcessLogger:
        """A ``logging.Logger``-like object: records at ``REPORT`` and above (``warning``,
        ``error``, ...; lower ones after ``self.logger.setLevel(...)``) go to the node's log at
        their own level, as with AiiDA's ``self.logger``."""
        return self._me.get_logger()

    def submit(self, process: Any, *args: Any, **inputs: Any) -> ProcessNode:
        """Launch a child process and return its node at once; wait for it with ToContext."""
        return self._me.submit(process, args, inputs)

    def to_context(self, **awaitables: Any) -> None:
        """Wait for these children at the end of the step and put their nodes in the context."""
        self._me.to_context(awaitables)

    def exposed_inputs(
        self, process_class: Any, namespace: str | None = None, agglomerate: bool = True
    ) -> AttributeDict:
        """The inputs of this process that were exposed from ``process_class``."""
        return self._me.exposed_inputs(process_class, namespace, agglomerate)

    def exposed_outputs(
        self,
        node: ProcessNode,
        process_class: Any,
        namespace: str | None = None,
        agglomerate: bool = True,
    ) -> AttributeDict:
        """The outputs of ``node`` (a finished ``process_class``) as exposed by this process."""
        return self._me.exposed_outputs(node, process_class, namespace, agglomerate)


_ENGINE_NAMES = frozenset(
    name for name in WorkChain.__dict__ if not name.startswith("__") and name not in OVERRIDABLE
) | {"ctx", "_me"}


def defined_spec(cls: Any) -> ProcessSpec:
    """A new spec that ``cls.define`` (a WorkChain's or a CalcJob's) filled; while it runs the
    spec under construction is ``cls._me_spec_building``."""
    spec = ProcessSpec()
    type.__setattr__(cls, "_me_spec_building", spec)
    try:
        cls.define(spec)
    finally:
        type.__delattr__(cls, "_me_spec_building")
    return spec


def _build_spec(cls: type[WorkChain]) -> ProcessSpec:
    """Run ``cls.define`` on a new spec and check what it declared."""
    spec = defined_spec(cls)
    if spec not in _BASE_DEFINED:
        raise IncompleteDefinitionError(
            f"{cls.__qualname__}.define() did not call super().define(spec) (WorkChain."
            "define was never reached): call it first in define(), and in the define() of "
            "each class in between, so that the engine's own ports and exit codes exist"
        )
    for name in sorted(step_names(spec.get_outline() or ())):
        if not callable(getattr(cls, name, None)):
            raise WorkChainDefinitionError(
                f"the outline of {cls.__qualname__} names {name!r}, which is not a "
                "method of the class"
            )
    return spec
