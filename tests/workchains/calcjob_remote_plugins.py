"""CalcJob plugins for the tests against a real sshd and a real SLURM, importable by daemon workers.

- :class:`PortableAddCalculation` runs the add script as a :class:`~miniengine.PortableCode`
  (uploaded with each job) and is parsed by the add parser.
- :class:`UnparsedAddCalculation` is the add job with no parser, so that only the scheduler's
  verdict (walltime) or the program's exit status decides its exit code.
"""

from __future__ import annotations

from typing import Any

from miniengine import Int, Str
from miniengine.core.calcinfo import CalcInfo, CodeInfo
from miniengine.engine import CalcJob
from miniengine.folders import Folder
from tests.workchains.calcjob_plugins import ADD_SCRIPT


def _environment(inputs: Any) -> dict[str, str]:
    return {
        variable: inputs[name].value
        for name, variable in (("counter", "COUNTER"), ("gate", "GATE"))
        if name in inputs
    }


class PortableAddCalculation(CalcJob):
    """Adds ``x`` and ``y`` with a portable code whose executable reads ``aiida.in``."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("counter", valid_type=Str, required=False)
        options = spec.inputs["metadata"]["options"]
        options["parser_name"].default = "tests.workchains.calcjob_plugins:ArithmeticAddParser"
        options["output_filename"].default = "aiida.out"
        spec.output("sum", valid_type=Int)
        spec.exit_code(310, "ERROR_READING_OUTPUT_FILE", message="No output file.")
        spec.exit_code(320, "ERROR_INVALID_OUTPUT", message="Invalid output.")

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        with folder.open("aiida.in", "w") as handle:
            handle.write(f"{self.inputs.x.value} {self.inputs.y.value}\n")
        calcinfo = CalcInfo(
            codes_info=[CodeInfo(code_uuid=self.inputs.code.uuid)], retrieve_list=["aiida.out"]
        )
        calcinfo.job_environment = _environment(self.inputs)
        return calcinfo


#: The portable code's executable: the add script.
PORTABLE_SCRIPT = "#!/bin/bash\n" + ADD_SCRIPT


class UnparsedAddCalculation(CalcJob):
    """The add script run by ``bash`` with no parser: the scheduler's verdict decides."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("counter", valid_type=Str, required=False)
        spec.input("gate", valid_type=Str, required=False)

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        with folder.open("aiida.in", "w") as handle:
            handle.write(f"{self.inputs.x.value} {self.inputs.y.value}\n")
        with folder.open("add.sh", "w") as handle:
            handle.write(ADD_SCRIPT)
        calcinfo = CalcInfo(
            codes_info=[CodeInfo(code_uuid=self.inputs.code.uuid, cmdline_params=["add.sh"])],
            retrieve_list=["aiida.out"],
        )
        calcinfo.job_environment = _environment(self.inputs)
        return calcinfo
