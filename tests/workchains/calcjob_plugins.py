"""CalcJob and Parser plugins for the CalcJob tests, importable by daemon workers.

``ArithmeticAddCalculation`` is AiiDA's classic example: the code is ``bash`` running a script that
adds two numbers from an input file; ``ArithmeticAddParser`` reads the sum into an ``Int``.  With a
``counter`` input (a file path), the script appends a line to that file each time it runs, so
tests can prove that the program ran exactly once.
"""

from __future__ import annotations

from typing import Any

from miniengine import ExitCode, Int, Str, WorkChain
from miniengine.core.calcinfo import CalcInfo, CodeInfo
from miniengine.engine import CalcJob, Parser, ToContext
from miniengine.folders import Folder

ADD_SCRIPT = """\
set -e
if [ -n "$COUNTER" ]; then echo ran >> "$COUNTER"; fi
if [ -n "$GATE" ]; then while [ ! -e "$GATE" ]; do sleep 0.05; done; fi
read x y < aiida.in
if [ -n "$FAIL_FILE" ] && [ -e "$FAIL_FILE" ]; then rm -f "$FAIL_FILE"; echo failing >&2; exit 3; fi
if [ "$x" = "fail" ]; then echo failing >&2; exit 3; fi
if [ "$x" = "nooutput" ]; then exit 0; fi
echo $((x + y)) > aiida.out
"""


class ArithmeticAddCalculation(CalcJob):
    """Adds ``x`` and ``y`` with a bash script (AiiDA's ``core.arithmetic.add``)."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=(Int, Str), help="the first number (or a failure mode)")
        spec.input("y", valid_type=Int)
        spec.input("counter", valid_type=Str, required=False)
        spec.input("gate", valid_type=Str, required=False)
        spec.input("fail_file", valid_type=Str, required=False)
        # AiiDA's way of setting an option's default
        options = spec.inputs["metadata"]["options"]
        options["parser_name"].default = "tests.workchains.calcjob_plugins:ArithmeticAddParser"
        options["input_filename"].default = "aiida.in"
        options["output_filename"].default = "aiida.out"
        spec.output("sum", valid_type=Int, help="x + y")
        spec.exit_code(
            310, "ERROR_READING_OUTPUT_FILE", message="The output file could not be read."
        )
        spec.exit_code(
            320, "ERROR_INVALID_OUTPUT", message="The output file contains invalid output."
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        with folder.open(self.options.input_filename, "w") as handle:
            handle.write(f"{self.inputs.x.value} {self.inputs.y.value}\n")
        with folder.open("add.sh", "w") as handle:
            handle.write(ADD_SCRIPT)
        environment = {}
        if "counter" in self.inputs:
            environment["COUNTER"] = self.inputs.counter.value
        if "gate" in self.inputs:
            environment["GATE"] = self.inputs.gate.value
        if "fail_file" in self.inputs:
            environment["FAIL_FILE"] = self.inputs.fail_file.value
        codeinfo = CodeInfo(code_uuid=self.inputs.code.uuid, cmdline_params=["add.sh"])
        calcinfo = CalcInfo(codes_info=[codeinfo], retrieve_list=[self.options.output_filename])
        calcinfo.job_environment = environment
        return calcinfo


class ArithmeticAddParser(Parser):
    """Reads the sum from the output file."""

    def parse(self, **kwargs: Any) -> ExitCode | None:
        name = self.node.get_option("output_filename")
        if name not in self.retrieved.list_object_names():
            return self.exit_codes.ERROR_READING_OUTPUT_FILE
        text = self.retrieved.get_object_content(name).strip()
        try:
            value = int(text)
        except ValueError:
            return self.exit_codes.ERROR_INVALID_OUTPUT
        self.out("sum", Int(value))
        return None


class AddTwiceWorkChain(WorkChain):
    """Submits two additions and sums their results."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("code")
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.outline(cls.submit_jobs, cls.collect)
        spec.output("total", valid_type=Int)

    def submit_jobs(self) -> Any:
        options = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}
        first = self.submit(
            ArithmeticAddCalculation,
            code=self.inputs.code,
            x=self.inputs.x,
            y=self.inputs.y,
            metadata={"options": options},
        )
        second = self.submit(
            ArithmeticAddCalculation,
            code=self.inputs.code,
            x=self.inputs.y,
            y=self.inputs.y,
            metadata={"options": options},
        )
        return ToContext(first=first, second=second)

    def collect(self) -> Any:
        total = self.ctx.first.outputs.sum.value + self.ctx.second.outputs.sum.value
        self.out("total", Int(total))


class GatedAddWorkChain(WorkChain):
    """Submits one addition whose job waits for the ``gate`` file (and counts its runs in the
    ``counter`` file), and returns its sum."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("code")
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("counter", valid_type=Str)
        spec.input("gate", valid_type=Str)
        spec.outline(cls.submit_job, cls.collect)
        spec.output("sum", valid_type=Int)

    def submit_job(self) -> Any:
        options = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}
        job = self.submit(
            ArithmeticAddCalculation,
            code=self.inputs.code,
            x=self.inputs.x,
            y=self.inputs.y,
            counter=self.inputs.counter,
            gate=self.inputs.gate,
            metadata={"options": options},
        )
        return ToContext(job=job)

    def collect(self) -> Any:
        self.out("sum", Int(self.ctx.job.outputs.sum.value))


# transports for the tests -------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from miniengine.transports.errors import TransportError  # noqa: E402
from miniengine.transports.local import LocalTransport  # noqa: E402
from miniengine.transports.transport import CommandResult  # noqa: E402

#: A file in a computer's work folder that makes :class:`FlakyTransport` fail every upload.
BROKEN_FLAG = "TRANSPORT-BROKEN"
#: A file in a computer's work folder where :class:`CountingTransport` logs each scheduler query.
QUERY_LOG = "scheduler-queries.log"


def _work_root(path: str) -> Path | None:
    for parent in Path(path).parents:
        if (parent / "ROOT").exists():
            return parent
    return None


#: A file in a computer's work folder that makes :class:`FlakyTransport` fail scheduler queries.
BROKEN_QUERY_FLAG = "QUERIES-BROKEN"


class FlakyTransport(LocalTransport):
    """``core.local`` whose uploads fail while the flag file exists at the work folder's root
    (a file named ``ROOT`` marks that root), and whose scheduler queries (``ps``) fail while
    ``QUERIES-BROKEN`` exists in the folder named by the computer's hostname: transport failures
    that a test can end.

    A query fails if the flag exists when it starts or when its answer comes back: the
    connection broke while ``ps`` ran.  So once a test has created the flag, no answer reaches
    the engine, not even one from a query already running (on a loaded machine ``ps`` can take
    long enough to see a job that ended after the flag was created)."""

    def _queries_broken(self) -> bool:
        return (Path(self.machine) / BROKEN_QUERY_FLAG).exists()

    async def exec_command_wait(
        self, command: str, *, stdin: str | bytes | None = None, workdir: str | None = None
    ) -> CommandResult:
        query = command.startswith("ps ")
        if query and self._queries_broken():
            raise TransportError(f"{self}: the connection is broken (test flag)")
        result = await super().exec_command_wait(command, stdin=stdin, workdir=workdir)
        if query and self._queries_broken():
            raise TransportError(f"{self}: the connection broke during the query (test flag)")
        return result

    async def put(self, localpath: Any, remotepath: str) -> None:
        root = _work_root(remotepath)
        if root is not None and (root / BROKEN_FLAG).exists():
            raise TransportError(f"{self}: the connection is broken (test flag {BROKEN_FLAG})")
        await super().put(localpath, remotepath)


class CountingTransport(LocalTransport):
    """``core.local`` that logs each scheduler query (``ps``) it runs to ``QUERY_LOG`` in the
    work folder given by its ``machine`` name (so ``core.direct`` jobs are polled, not watched
    through pidfds, and a test can count the queries)."""

    async def exec_command_wait(
        self, command: str, *, stdin: str | bytes | None = None, workdir: str | None = None
    ) -> CommandResult:
        if command.startswith("ps "):
            with open(Path(self.machine) / QUERY_LOG, "a") as stream:
                stream.write(command + "\n")
        return await super().exec_command_wait(command, stdin=stdin, workdir=workdir)


def hold(root: Path | None, point: str) -> None:
    """Block while ``HOLD-<point>`` exists in ``root``, after writing ``AT-<point>`` there (with
    this process's pid), so a test can SIGKILL the worker at that point."""
    import os
    import time

    if root is None or not (root / f"HOLD-{point}").exists():
        return
    (root / f"AT-{point}").write_text(str(os.getpid()))
    while (root / f"HOLD-{point}").exists():
        time.sleep(0.02)


async def ahold(root: Path | None, point: str) -> None:
    import anyio.to_thread

    await anyio.to_thread.run_sync(hold, root, point)


class GatedTransport(LocalTransport):
    """``core.local`` that can be held right after the scheduler accepted a job (``submitted``)
    and while retrieving (``retrieve``), for tests that kill the worker there."""

    async def exec_command_wait(
        self, command: str, *, stdin: str | bytes | None = None, workdir: str | None = None
    ) -> CommandResult:
        result = await super().exec_command_wait(command, stdin=stdin, workdir=workdir)
        if workdir is not None and "miniengine-submitted" in command:
            await ahold(_work_root(workdir + "/x"), "submitted")
        return result

    async def get(self, remotepath: str, localpath: Any) -> None:
        await ahold(_work_root(remotepath), "retrieve")
        await super().get(remotepath, localpath)


class GatedAddCalculation(ArithmeticAddCalculation):
    """The add job, held in ``prepare_for_submission`` (``prepare``) and in its parser
    (``parse``) while the test says so."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input(
            "metadata.options.parser_name",
            valid_type=str,
            default="tests.workchains.calcjob_plugins:GatedAddParser",
            non_db=True,
        )

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        hold(Path(self.node.computer.get_workdir()), "prepare")
        return super().prepare_for_submission(folder)


class GatedAddParser(ArithmeticAddParser):
    def parse(self, **kwargs: Any) -> ExitCode | None:
        hold(Path(self.node.computer.get_workdir()), "parse")
        return super().parse(**kwargs)


from miniengine import BaseRestartWorkChain, ProcessHandlerReport, process_handler  # noqa: E402
from miniengine.engine import while_  # noqa: E402


class AddRestartWorkChain(BaseRestartWorkChain):
    """Runs the add job until it succeeds; a job without output is run again."""

    _process_class = ArithmeticAddCalculation

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("code")
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("fail_file", valid_type=Str, required=False)
        spec.input("counter", valid_type=Str, required=False)
        spec.expose_outputs(ArithmeticAddCalculation, include=["sum"])
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )

    def setup(self) -> None:
        super().setup()
        inputs: dict[str, Any] = {
            "code": self.inputs.code,
            "x": self.inputs.x,
            "y": self.inputs.y,
            "metadata": {
                "options": {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}
            },
        }
        for name in ("fail_file", "counter"):
            if name in self.inputs:
                inputs[name] = self.inputs[name]
        self.ctx.inputs = inputs

    @process_handler(exit_codes=ArithmeticAddCalculation.exit_codes.ERROR_READING_OUTPUT_FILE)
    def handle_missing_output(self, node: Any) -> ProcessHandlerReport:
        self.report(f"{node.process_label}<{node.pk}> wrote no output: running it again")
        return ProcessHandlerReport(do_break=True)
