"""The WorkChain: a process whose steps follow an outline, checkpointed after every step.

The subpackage holds everything about it, one module per concern:

- :mod:`~miniengine.runtime.workchain.process`: the :class:`WorkChain` class and its spec checks;
- :mod:`~miniengine.runtime.workchain.inputs`: binding inputs and describing the node to create;
- :mod:`~miniengine.runtime.workchain.executor`: the lifecycle from the first step to the end;
- :mod:`~miniengine.runtime.workchain.launch`: launching and resuming in run mode.

Importing the package loads only the class module; the executor and the launch functions are
imported where a WorkChain is run.
"""

from __future__ import annotations

from miniengine.runtime.workchain.process import (
    EVICTED,
    OVERRIDABLE,
    RESERVED_STEP_NAMES,
    SPEC_LOCK,
    IncompleteDefinitionError,
    NotImportableError,
    WorkChain,
    WorkChainDefinitionError,
    check_importable,
    class_path,
    import_by_process_type,
    import_process_class,
    outline_of,
)

__all__ = [
    "EVICTED",
    "OVERRIDABLE",
    "RESERVED_STEP_NAMES",
    "SPEC_LOCK",
    "IncompleteDefinitionError",
    "NotImportableError",
    "WorkChain",
    "WorkChainDefinitionError",
    "check_importable",
    "class_path",
    "import_by_process_type",
    "import_process_class",
    "outline_of",
]
