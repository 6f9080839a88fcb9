"""A CalcJob for the ``miniengine calcjob`` command tests: files that are binary, nested in
folders, and some that are never retrieved, with no ``input_filename``/``output_filename``
option (so the commands must be given a path)."""

from __future__ import annotations

from typing import Any

from miniengine.core.calcinfo import CalcInfo, CodeInfo
from miniengine.engine import CalcJob
from miniengine.folders import Folder

#: bytes no text codec round-trips: NUL, a lone 0xff, an escape sequence, a CR
BINARY = b"\x00\x01\xff\xfe\x1b[31mred\r\n\x80tail"

FILES_SCRIPT = """\
set -e
cat data.bin > out.bin
mkdir -p outdir
echo nested > outdir/inner.txt
echo only-remote > remote-only.txt
"""


class FilesCalculation(CalcJob):
    """Copies a binary input file to an output file and writes a folder of outputs."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.inputs["metadata"]["options"]["resources"].default = {
            "num_machines": 1,
            "num_mpiprocs_per_machine": 1,
        }

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        with folder.open("data.bin", "wb") as handle:
            handle.write(BINARY)
        with folder.open("run.sh", "w") as handle:
            handle.write(FILES_SCRIPT)
        with folder.get_subfolder("sub", create=True).open("nested.txt", "w") as handle:
            handle.write("inside\n")
        return CalcInfo(
            codes_info=[CodeInfo(code_uuid=self.inputs.code.uuid, cmdline_params=["run.sh"])],
            retrieve_list=["out.bin", "outdir"],
        )
