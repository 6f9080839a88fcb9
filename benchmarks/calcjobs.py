"""The CalcJob the external-program workloads (W8-W10) submit, in an importable module (daemon
workers load it by module path).

``CommandCalculation`` runs its code with the words of ``arguments`` as command line, writes
no input file, retrieves nothing and has no parser: what is measured is the engine's cost per
job (upload, submit, wait, retrieve, the commits), not a plugin's.  The code is ``/bin/true``
for a trivial job, ``/bin/sleep`` with ``arguments='5'`` for a job that runs 5 s.
"""

from __future__ import annotations

from typing import Any

from miniengine import Str
from miniengine.core.calcinfo import CalcInfo, CodeInfo
from miniengine.engine import CalcJob
from miniengine.folders import Folder

#: The options every workload passes: one process on one machine.
OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}


class CommandCalculation(CalcJob):
    """Runs the code with ``arguments`` (words separated by spaces) and nothing else."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("arguments", valid_type=Str, required=False, help="the command line")

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        words = self.inputs.arguments.value.split() if "arguments" in self.inputs else []
        codeinfo = CodeInfo(code_uuid=self.inputs.code.uuid, cmdline_params=words)
        return CalcInfo(codes_info=[codeinfo], retrieve_list=[])
