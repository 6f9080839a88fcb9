"""The ``CalcJob`` class: AiiDA's process that runs an external program through a transport and
a scheduler, with AiiDA's ports, options and exit codes.

A plugin subclasses :class:`CalcJob`, declares its inputs and outputs in ``define`` and writes its
input files in ``prepare_for_submission``; the engine (:mod:`.executor`) uploads, submits,
waits, retrieves and parses.  The instance sees ``self.inputs``, ``self.options``, ``self.node``,
``self.exit_codes``, ``self.logger`` and ``self.report``; what the engine keeps about the run lives
on the executor (``_me``), so the plugin's attribute namespace stays its own.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from miniengine.core.attribute_dict import AttributeDict, FrozenAttributeDict
from miniengine.core.builder import ProcessBuilder
from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCodesNamespace
from miniengine.core.function_spec import Metadata, parse_metadata
from miniengine.core.ports import UNSPECIFIED, InputPort, PortNamespace
from miniengine.core.spec import ProcessSpec
from miniengine.exceptions import InputValidationError, InvalidOperation, MiniengineError
from miniengine.runtime.workchain import SPEC_LOCK
from miniengine.runtime.workchain.process import defined_spec

if TYPE_CHECKING:
    from miniengine.core.calcinfo import CalcInfo
    from miniengine.folders import Folder
    from miniengine.runtime.calcjob.executor import CalcJobExecutor
    from miniengine.runtime.computers import Computer
    from miniengine.runtime.nodes import CalcJobNode
    from miniengine.runtime.process_logger import ProcessLogger

__all__ = ["CalcJob", "CalcJobDefinitionError", "CalcJobOptions", "bind_calcjob_inputs"]


class CalcJobDefinitionError(MiniengineError, TypeError):
    """A CalcJob class is not usable as written (``define`` did not call ``super().define``)."""


#: ``metadata.options``: name -> (valid type, default, help).  AiiDA's names and defaults.
OPTIONS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "resources": (dict, UNSPECIFIED, "resources the scheduler needs (num_machines, ...)"),
    "max_wallclock_seconds": (int, UNSPECIFIED, "wallclock time limit of the job, in seconds"),
    "max_memory_kb": (int, UNSPECIFIED, "memory limit of the job, in kB"),
    "queue_name": (str, UNSPECIFIED, "the scheduler queue (partition)"),
    "account": (str, UNSPECIFIED, "the account to charge"),
    "qos": (str, UNSPECIFIED, "the quality of service"),
    "withmpi": (bool, False, "run the code through the computer's mpirun command"),
    "mpirun_extra_params": ((list, tuple), (), "more arguments for mpirun"),
    "prepend_text": (str, "", "shell text before the programs run"),
    "append_text": (str, "", "shell text after the programs ran"),
    "custom_scheduler_commands": (str, "", "lines added to the scheduler header"),
    "environment_variables": (dict, None, "environment variables exported by the script"),
    "environment_variables_double_quotes": (bool, False, 'quote their values with ""'),
    "input_filename": (str, UNSPECIFIED, "the main input file (for the plugin)"),
    "output_filename": (str, UNSPECIFIED, "the main output file (for the plugin)"),
    "scheduler_stdout": (str, "_scheduler-stdout.txt", "where the job's stdout goes"),
    "scheduler_stderr": (str, "_scheduler-stderr.txt", "where the job's stderr goes"),
    "parser_name": (str, UNSPECIFIED, "the Parser: entry point name or module:Class"),
    "additional_retrieve_list": ((list, tuple), (), "more files to retrieve"),
    "submit_script_filename": (str, "_aiidasubmit.sh", "the name of the submit script"),
    "import_sys_environment": (bool, True, "let the job inherit the submitting environment"),
    "priority": (str, UNSPECIFIED, "the job's priority, as the scheduler spells it"),
    "rerunnable": (bool, UNSPECIFIED, "whether the scheduler may rerun the job"),
}


def _non_negative(name: str) -> Any:
    def check(value: Any, port: Any) -> str | None:
        if isinstance(value, bool) or value < 0:
            return f"'metadata.options.{name}' must be a non-negative integer, not {value!r}"
        return None

    return check


def _options_namespace() -> PortNamespace:
    namespace = PortNamespace("options", required=False, populate_defaults=False, non_db=True)
    for name, (valid_type, default, help_text) in OPTIONS.items():
        validator = _non_negative(name) if valid_type is int else None
        namespace.add_port(
            InputPort(
                name,
                valid_type=valid_type,
                required=False,
                default=default,
                help=help_text,
                validator=validator,
                non_db=True,
            )
        )
    return namespace


def _check_computer(value: Any, port: Any) -> str | None:
    from miniengine.runtime.computers import Computer

    if not isinstance(value, Computer):
        return f"'metadata.computer' must be a Computer, not {type(value).__name__}"
    return None


@dataclass
class CalcJobOptions:
    """The options of one run, with every default filled in (also the node's attributes)."""

    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _exit_codes(owner: type[CalcJob]) -> ExitCodesNamespace:
    return ExitCodesNamespace(owner.spec().exit_codes)


class _ExitCodes:
    def __get__(self, instance: Any, owner: type[CalcJob]) -> ExitCodesNamespace:
        building: ProcessSpec | None = owner.__dict__.get("_me_spec_building")
        if building is not None:
            return ExitCodesNamespace(building.exit_codes)
        return _exit_codes(owner)


_BASE_DEFINED: weakref.WeakSet[ProcessSpec] = weakref.WeakSet()


class _SpecOptions:
    """``Proc.spec_options``: the ``metadata.options`` namespace (AiiDA's class property)."""

    def __get__(self, instance: Any, owner: type[CalcJob]) -> PortNamespace:
        metadata = owner.spec().inputs.ports["metadata"]
        assert isinstance(metadata, PortNamespace)
        options = metadata.ports["options"]
        assert isinstance(options, PortNamespace)
        return options


class CalcJob:
    """Base class of processes that run an external program on a computer.

    Subclasses implement ``define(spec)`` (calling ``super().define(spec)`` first) and
    ``prepare_for_submission(folder) -> CalcInfo``.
    """

    exit_codes = _ExitCodes()

    _me: CalcJobExecutor

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        """The ports, options and exit codes every CalcJob has (AiiDA's numbers)."""
        from miniengine.runtime.codes import AbstractCode
        from miniengine.runtime.file_data import FolderData
        from miniengine.runtime.remote_data import RemoteData

        _BASE_DEFINED.add(spec)
        metadata = spec.inputs.ports["metadata"]
        assert isinstance(metadata, PortNamespace)
        metadata.add_port(
            InputPort(
                "computer",
                valid_type=None,
                required=False,
                validator=_check_computer,
                non_db=True,
                help="the computer to run on when no code is given (else the code's)",
            )
        )
        metadata.add_port(
            InputPort(
                "dry_run",
                valid_type=bool,
                required=False,
                non_db=True,
                help="prepare the input files in a local folder and submit nothing",
            )
        )
        metadata.add_port(_options_namespace())
        spec.input(
            "code",
            valid_type=AbstractCode,
            required=False,
            help="the code to run (optional when metadata.computer is given)",
        )
        spec.output(
            "remote_folder",
            valid_type=RemoteData,
            help="the working folder of the job on the computer",
        )
        spec.output(
            "retrieved",
            valid_type=FolderData,
            help="the files retrieved from the working folder once the job ended",
        )
        spec.exit_code(1, "ERROR_UNSPECIFIED", "The process has failed with an unspecified error.")
        spec.exit_code(
            10, "ERROR_INVALID_OUTPUT", "The process returned an invalid output: {message}"
        )
        spec.exit_code(
            11, "ERROR_MISSING_OUTPUT", "The process did not register a required output."
        )
        spec.exit_code(
            100,
            "ERROR_NO_RETRIEVED_FOLDER",
            "The process did not have the required `retrieved` output.",
        )
        spec.exit_code(110, "ERROR_SCHEDULER_OUT_OF_MEMORY", "The job ran out of memory.")
        spec.exit_code(120, "ERROR_SCHEDULER_OUT_OF_WALLTIME", "The job ran out of walltime.")
        spec.exit_code(131, "ERROR_SCHEDULER_INVALID_ACCOUNT", "The specified account is invalid.")
        spec.exit_code(140, "ERROR_SCHEDULER_NODE_FAILURE", "The node running the job failed.")
        spec.exit_code(150, "STOPPED_BY_MONITOR", "{message}")
        spec.exit_code(
            170,
            "ERROR_PROGRAM_FAILED",
            "The program exited with a non-zero status and no parser decided: {message}",
        )

    @classmethod
    def spec(cls) -> ProcessSpec:
        """The spec of this class, built on first use and kept."""
        spec: ProcessSpec | None = cls.__dict__.get("_me_spec")
        if spec is not None:
            return spec
        with SPEC_LOCK:  # several step threads may use a new class at once
            spec = cls.__dict__.get("_me_spec")
            if spec is None:
                spec = defined_spec(cls)
                if spec not in _BASE_DEFINED:
                    raise CalcJobDefinitionError(
                        f"{cls.__qualname__}.define() did not call super().define(spec): call "
                        "it first, so that the code, metadata.options and the standard exit "
                        "codes exist"
                    )
                type.__setattr__(cls, "_me_spec", spec)
        return spec

    @classmethod
    def get_builder(cls) -> ProcessBuilder:
        return ProcessBuilder(cls)

    spec_options = _SpecOptions()

    # what plugins use --------------------------------------------------------------------------

    @property
    def inputs(self) -> FrozenAttributeDict:
        return self._me.inputs

    @property
    def options(self) -> AttributeDict:
        """``metadata.options`` with every default filled in."""
        return AttributeDict(self._me.options)

    @property
    def node(self) -> CalcJobNode:
        return self._me.node

    @property
    def logger(self) -> ProcessLogger:
        return self._me.get_logger()

    def report(self, message: str) -> None:
        self._me.report(str(message))

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        """Write the input files into ``folder`` and say what to run and retrieve."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement prepare_for_submission(self, folder)"
        )


@dataclass
class BoundCalcJob:
    """A CalcJob's inputs after binding: the Data inputs, options, computer and metadata."""

    inputs: dict[str, Any]
    metadata: Metadata
    options: dict[str, Any]
    computer: Computer
    dry_run: bool


def _resolve_options(cls: type[CalcJob], given: Mapping[str, Any]) -> dict[str, Any]:
    namespace = cls.spec_options
    options: dict[str, Any] = {}
    for name, port in namespace.ports.items():
        if name in given:
            options[name] = given[name]
        elif isinstance(port, InputPort) and port.has_default:
            default = port.get_default()
            if default is not None:
                options[name] = default
    for name, value in given.items():
        options.setdefault(name, value)
    for key in ("mpirun_extra_params", "additional_retrieve_list"):
        if key in options:
            options[key] = list(options[key])
    if "environment_variables" in options:
        for key, value in options["environment_variables"].items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InputValidationError(
                    f"{cls.__qualname__}: 'metadata.options.environment_variables' needs str "
                    f"names and values, got {key!r}: {value!r}"
                )
    return options


def bind_calcjob_inputs(cls: type[CalcJob], raw: Mapping[str, Any]) -> BoundCalcJob:
    """Fill defaults, validate inputs and options, find the computer: ``InputValidationError``
    (a ``ValueError``) names the port, before anything is stored."""
    from miniengine.runtime.codes import AbstractCode
    from miniengine.runtime.workchain.inputs import validated_inputs

    inputs = validated_inputs(cls, raw)
    metadata_in = dict(inputs.get("metadata") or {})
    computer = metadata_in.pop("computer", None)
    dry_run = bool(metadata_in.pop("dry_run", False))
    options = _resolve_options(cls, metadata_in.pop("options", None) or {})
    metadata = parse_metadata(metadata_in, cls.__qualname__)
    code = inputs.get("code")
    if code is not None:
        assert isinstance(code, AbstractCode)
        code_computer = code.computer
        if computer is None:
            computer = code_computer
        elif code_computer is not None and not code.can_run_on_computer(computer):
            raise InputValidationError(
                f"{cls.__qualname__}: the code {code.full_label} cannot run on the computer "
                f"{computer.label} given as metadata.computer"
            )
    if computer is None:
        raise InputValidationError(
            f"{cls.__qualname__}: no computer: give a 'code' input, or 'metadata.computer' "
            "when the job runs no code of its own"
        )
    if not metadata.store_provenance and not dry_run:
        raise InvalidOperation(
            f"{cls.__qualname__}: a CalcJob must store its provenance (store_provenance=False "
            "is only for process functions and dry runs)"
        )
    if not computer.is_stored:
        raise InputValidationError(
            f"{cls.__qualname__}: the computer {computer.label} is not stored; call .store()"
        )
    scheduler = computer.get_scheduler()
    if "resources" not in options:
        raise InputValidationError(
            f"{cls.__qualname__}: 'metadata.options.resources' is required "
            "(e.g. {'num_machines': 1})"
        )
    resources = dict(options["resources"])
    scheduler.preprocess_resources(resources, computer.get_default_mpiprocs_per_machine())
    try:
        scheduler.validate_resources(**resources)
    except (ValueError, TypeError) as exc:
        raise InputValidationError(
            f"{cls.__qualname__}: invalid 'metadata.options.resources' for {scheduler}: {exc}"
        ) from exc
    options["resources"] = resources
    if "parser_name" in options:
        from miniengine.runtime.calcjob.parser import load_parser_class

        try:
            load_parser_class(options["parser_name"])
        except MiniengineError as exc:
            raise InputValidationError(
                f"{cls.__qualname__}: 'metadata.options.parser_name': {exc}"
            ) from exc
    data_inputs = {key: value for key, value in inputs.items() if key != "metadata"}
    _check_data(data_inputs)
    return BoundCalcJob(data_inputs, metadata, options, computer, dry_run)


def _check_data(values: Mapping[str, Any]) -> None:
    for value in values.values():
        if isinstance(value, Mapping):
            _check_data(value)
        elif not isinstance(value, Data):
            raise InputValidationError(f"a CalcJob input must be Data, not {type(value).__name__}")
