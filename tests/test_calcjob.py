"""CalcJobs in run mode, with real programs: ``core.local`` + ``core.direct`` run ``bash`` scripts
as real subprocesses in real working folders, and the Parser reads the real output files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

import miniengine
from miniengine import (
    CalcJob,
    CalcJobNode,
    InputValidationError,
    InstalledCode,
    Int,
    Parser,
    PortableCode,
    SinglefileData,
    Str,
    arun_get_node,
    find_processes,
    run,
)
from miniengine.core.calcinfo import CalcInfo, CalcJobState, CodeInfo
from miniengine.runtime.computers import localhost_computer
from miniengine.schedulers import JobState
from tests.workchains.calcjob_plugins import (
    AddTwiceWorkChain,
    ArithmeticAddCalculation,
    ArithmeticAddParser,
)
from tests.workchains.daemon_chains import wait_until

pytestmark = pytest.mark.backends

RESOURCES = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
OPTIONS = {"options": {"resources": RESOURCES}}
#: The lease of a script killed on purpose: resume waits for it to lapse (the default is 10 s).
LEASE = 2.0


@pytest.fixture
def bash(tmp_path: Path) -> InstalledCode:
    computer = localhost_computer(tmp_path / "work")
    (tmp_path / "work").mkdir(exist_ok=True)
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


def test_a_job_runs_the_program_and_the_parser_reads_its_output(bash: InstalledCode) -> None:
    result, node = run.get_node(
        ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=OPTIONS
    )
    assert result["sum"] == 9
    assert isinstance(node, CalcJobNode) and node.is_finished_ok
    assert set(result) == {"sum", "remote_folder", "retrieved"}
    workdir = node.get_remote_workdir()
    assert workdir is not None and (Path(workdir) / "aiida.out").read_text().strip() == "9"
    assert node.outputs.remote_folder.get_remote_path() == workdir
    assert "aiida.out" in node.outputs.retrieved.list_object_names()
    assert node.get_job_id() is not None and node.get_job_id().isdigit()
    assert node.get_option("output_filename") == "aiida.out"
    assert node.get_options()["resources"] == RESOURCES
    assert node.computer.label == "localhost"
    assert node.get_parser_class() is ArithmeticAddParser
    assert node.get_state() == "parsing"  # the last stage it reached
    assert node.get_state() is CalcJobState.PARSING  # AiiDA's enum, equal to its value
    assert node.get_scheduler_state() is JobState.DONE
    assert node.get_program_exit_statuses() == {0: 0}
    assert "aiida.out" in node.get_retrieve_list()
    assert node.inputs.code.uuid == bash.uuid
    links = {t.link_label: t.link_type.value for t in node.base.links.get_outgoing()}
    assert links == {"remote_folder": "create", "retrieved": "create", "sum": "create"}


def test_a_program_that_fails_gives_the_documented_exit_code_not_an_exception(
    bash: InstalledCode,
) -> None:
    # the parser decides when there is one: no output file -> its own exit code
    _, node = run.get_node(
        ArithmeticAddCalculation, code=bash, x=Str("fail"), y=Int(1), metadata=OPTIONS
    )
    assert node.is_finished and node.exit_status == 310
    assert node.get_program_exit_statuses() == {0: 3}
    # without a parser, a non-zero exit of the program is ERROR_PROGRAM_FAILED (170)
    node = _run_without_parser(bash, "fail")
    assert node.is_finished and not node.is_excepted
    assert node.exit_status == ArithmeticAddCalculation.exit_codes.ERROR_PROGRAM_FAILED.status
    assert node.exit_status == 170
    assert "program 0 exited with 3" in node.exit_message


class AddWithoutParser(CalcJob):
    """The add job with no parser: only the program's exit status can tell a failure."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Str)

    def prepare_for_submission(self, folder: Any) -> CalcInfo:
        with folder.open("aiida.in", "w") as handle:
            handle.write(f"{self.inputs.x.value} 1\n")
        from tests.workchains.calcjob_plugins import ADD_SCRIPT

        with folder.open("add.sh", "w") as handle:
            handle.write(ADD_SCRIPT)
        return CalcInfo(
            codes_info=[CodeInfo(code_uuid=self.inputs.code.uuid, cmdline_params=["add.sh"])],
            retrieve_list=["aiida.out"],
        )


def _run_without_parser(code: InstalledCode, x: str) -> Any:
    return run.get_node(AddWithoutParser, code=code, x=Str(x), metadata=OPTIONS)[1]


def test_a_missing_output_file_is_the_parsers_exit_code(bash: InstalledCode) -> None:
    _, node = run.get_node(
        ArithmeticAddCalculation, code=bash, x=Str("nooutput"), y=Int(1), metadata=OPTIONS
    )
    assert node.exit_status == ArithmeticAddCalculation.exit_codes.ERROR_READING_OUTPUT_FILE.status
    assert "sum" not in node.outputs and "retrieved" in node.outputs
    ok = _run_without_parser(bash, "2")
    assert ok.is_finished_ok


def test_dry_run_prepares_the_folder_and_submits_nothing(
    bash: InstalledCode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = len(find_processes())
    result, node = run.get_node(
        ArithmeticAddCalculation,
        code=bash,
        x=Int(1),
        y=Int(2),
        metadata={"dry_run": True, "store_provenance": False, "options": {"resources": RESOURCES}},
    )
    assert result == {}
    info = node.dry_run_info
    folder = Path(info["folder"])
    assert folder.parent == tmp_path / "submit_test"
    assert (folder / "aiida.in").read_text() == "1 2\n"
    script = (folder / info["script_filename"]).read_text()
    assert "add.sh" in script and "/bin/bash" in script
    assert not (folder / "aiida.out").exists()
    assert len(find_processes()) == before  # nothing stored
    assert not any((tmp_path / "work").rglob("aiida.in"))  # nothing uploaded


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"resources": RESOURCES, "max_wallclock_seconds": "10"}, "max_wallclock_seconds"),
        ({"resources": RESOURCES, "max_wallclock_seconds": -1}, "max_wallclock_seconds"),
        ({"resources": RESOURCES, "withmpi": "yes"}, "withmpi"),
        ({"resources": {"num_machines": 1}}, "resources"),
        ({"resources": RESOURCES, "parser_name": "no.such:Parser"}, "parser_name"),
        ({"resources": RESOURCES, "environment_variables": {"A": 1}}, "environment_variables"),
        ({}, "resources"),
    ],
)
def test_bad_options_are_refused_before_anything_is_stored(
    bash: InstalledCode, options: dict[str, Any], error: str
) -> None:
    before = len(find_processes())
    with pytest.raises(ValueError, match=error) as raised:
        run(ArithmeticAddCalculation, code=bash, x=Int(1), y=Int(2), metadata={"options": options})
    assert isinstance(raised.value, miniengine.MiniengineError)
    assert len(find_processes()) == before


def test_no_code_and_no_computer_is_refused(bash: InstalledCode) -> None:
    with pytest.raises(InputValidationError, match="no computer"):
        run(ArithmeticAddCalculation, x=Int(1), y=Int(2), metadata=OPTIONS)


def test_arun_and_a_workchain_in_run_mode_submit_calcjobs(bash: InstalledCode) -> None:
    async def main() -> Any:
        return await arun_get_node(
            ArithmeticAddCalculation, code=bash, x=Int(1), y=Int(1), metadata=OPTIONS
        )

    result, node = anyio.run(main)
    assert result["sum"] == 2 and node.is_finished_ok
    outputs, chain = run.get_node(AddTwiceWorkChain, code=bash, x=Int(3), y=Int(4))
    assert outputs["total"] == 7 + 8
    called = chain.called
    assert len(called) == 2 and all(isinstance(c, CalcJobNode) and c.is_finished_ok for c in called)
    assert {t.link_type.value for t in chain.base.links.get_outgoing()} >= {"call_calc"}


def test_parse_from_node_parses_a_finished_job_again_as_a_calcfunction(bash: InstalledCode) -> None:
    _, node = run.get_node(
        ArithmeticAddCalculation, code=bash, x=Int(2), y=Int(3), metadata=OPTIONS
    )
    outputs, call = ArithmeticAddParser.parse_from_node(node)
    assert outputs["sum"] == 5
    assert call.is_finished_ok and call.inputs.retrieved.uuid == node.outputs.retrieved.uuid


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie that nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_kill_while_the_program_runs_ends_the_program(bash: InstalledCode, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    counter = tmp_path / "counter"

    async def main() -> Any:
        from miniengine.control import kill_processes

        async with anyio.create_task_group() as group:
            outcome: dict[str, Any] = {}

            async def launch() -> None:
                try:
                    await arun_get_node(
                        ArithmeticAddCalculation,
                        code=bash,
                        x=Int(1),
                        y=Int(1),
                        gate=Str(str(gate)),
                        counter=Str(str(counter)),
                        metadata=OPTIONS,
                    )
                except miniengine.ProcessKilledError as exc:
                    outcome["error"] = exc

            group.start_soon(launch)
            with anyio.fail_after(30):
                while not counter.exists():  # the program is running (waiting at its gate)
                    await anyio.sleep(0.01)
            (node,) = [
                n
                for n in find_processes(process_label="ArithmeticAddCalculation")
                if not n.is_terminated
            ]
            with anyio.fail_after(30):
                while node.get_job_id() is None:  # the job id's commit follows the start
                    await anyio.sleep(0.01)
            pid = int(node.get_job_id())
            await anyio.to_thread.run_sync(lambda: kill_processes([node], wait=False))
        return outcome, node, pid

    outcome, node, pid = anyio.run(main)
    assert "error" in outcome
    assert node.is_killed
    wait_until(lambda: process_gone(pid), 10, "the job's process to exit")
    assert counter.read_text() == "ran\n"


class PortableAddCalculation(CalcJob):
    """The add script as a PortableCode, its input file a SinglefileData copied in by the
    engine (``local_copy_list``), and the input read back through the temporary retrieve list."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("numbers", valid_type=SinglefileData)
        spec.input(
            "metadata.options.parser_name",
            valid_type=str,
            default="tests.test_calcjob:PortableAddParser",
            non_db=True,
        )
        spec.output("sum", valid_type=Int)
        spec.output("echoed", valid_type=Str)

    def prepare_for_submission(self, folder: Any) -> CalcInfo:
        numbers = self.inputs.numbers
        return CalcInfo(
            codes_info=[CodeInfo(code_uuid=self.inputs.code.uuid)],
            local_copy_list=[(numbers.uuid, numbers.filename, "aiida.in")],
            retrieve_list=["aiida.out"],
            retrieve_temporary_list=["aiida.in"],
        )


class PortableAddParser(Parser):
    def parse(self, **kwargs: Any) -> Any:
        temporary = Path(kwargs["retrieved_temporary_folder"])
        self.out("echoed", Str((temporary / "aiida.in").read_text().strip()))
        self.out("sum", Int(int(self.retrieved.get_object_content("aiida.out"))))
        return None


def test_a_portable_code_and_local_files_are_uploaded_with_the_job(
    bash: InstalledCode, tmp_path: Path
) -> None:
    from tests.workchains.calcjob_plugins import ADD_SCRIPT

    program = tmp_path / "program"
    program.mkdir()
    (program / "add.sh").write_text("#!/bin/bash\n" + ADD_SCRIPT)
    code = PortableCode(filepath_files=program, filepath_executable="add.sh", label="add").store()
    numbers = SinglefileData.from_string("6 7\n", filename="numbers.txt")
    result, node = run.get_node(
        PortableAddCalculation,
        code=code,
        numbers=numbers,
        metadata={"computer": bash.computer, "options": {"resources": RESOURCES}},
    )
    assert node.is_finished_ok, node.exit_message
    assert result["sum"] == 13 and result["echoed"] == "6 7"
    workdir = Path(node.get_remote_workdir())
    assert os.access(workdir / "add.sh", os.X_OK)
    assert (workdir / "aiida.in").read_text() == "6 7\n"
    assert "aiida.in" not in node.outputs.retrieved.list_object_names()  # temporary only


def test_a_restart_workchain_reruns_a_failed_job_and_cleans_the_working_folders(
    bash: InstalledCode, tmp_path: Path
) -> None:
    from miniengine import Bool
    from tests.workchains.calcjob_plugins import AddRestartWorkChain

    (tmp_path / "fail-once").touch()
    result, node = run.get_node(
        AddRestartWorkChain,
        code=bash,
        x=Int(1),
        y=Int(2),
        fail_file=Str(str(tmp_path / "fail-once")),
        clean_workdir=Bool(True),
    )
    assert result["sum"] == 3 and node.is_finished_ok
    first, second = node.called
    assert (first.exit_status, second.exit_status) == (310, 0)
    for job in (first, second):
        assert not Path(job.get_remote_workdir()).exists()
    assert any("cleaned remote folders" in log.message for log in node.logs)
    _, kept = run.get_node(AddRestartWorkChain, code=bash, x=Int(1), y=Int(2))
    assert Path(kept.called[0].get_remote_workdir()).exists()
    assert kept.logs[-1].message.endswith("remote folders will not be cleaned")


def test_run_mode_asks_the_scheduler_once_for_all_the_jobs_it_waits_for(tmp_path: Path) -> None:
    from miniengine import Computer
    from tests.workchains.calcjob_plugins import QUERY_LOG

    root = tmp_path / "counted"
    root.mkdir()
    computer = Computer(
        "counted",
        str(root),  # where CountingTransport logs its queries
        transport_type="tests.workchains.calcjob_plugins:CountingTransport",
        scheduler_type="core.direct",
        workdir=str(root),
    ).store()
    computer.configure(use_login_shell=False)
    computer.set_minimum_job_poll_interval(0.1)
    code = InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()
    gate = tmp_path / "gate"
    log = root / QUERY_LOG
    count = 4

    async def main() -> list[Any]:
        nodes: list[Any] = []

        async def one(x: int) -> None:
            _, node = await arun_get_node(
                ArithmeticAddCalculation,
                code=code,
                x=Int(x),
                y=Int(1),
                gate=Str(str(gate)),
                metadata=OPTIONS,
            )
            nodes.append(node)

        async with anyio.create_task_group() as group:
            for x in range(count):
                group.start_soon(one, x)
            with anyio.fail_after(30):
                while True:  # until one query named every job
                    running = [
                        n.get_job_id()
                        for n in find_processes(process_label="ArithmeticAddCalculation")
                        if not n.is_terminated and n.get_job_id()
                    ]
                    lines = log.read_text().splitlines() if log.exists() else []
                    if len(running) == count and any(
                        all(job in line for job in running) for line in lines
                    ):
                        break
                    await anyio.sleep(0.02)
            gate.touch()
        return nodes

    nodes = anyio.run(main)
    assert len(nodes) == count and all(node.is_finished_ok for node in nodes)
    assert sorted(node.outputs.sum.value for node in nodes) == [1, 2, 3, 4]


class AddWithDefaultResources(ArithmeticAddCalculation):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.inputs["metadata"]["options"]["resources"].default = RESOURCES


def test_option_defaults_set_the_aiida_way_apply(bash: InstalledCode) -> None:
    result, node = run.get_node(AddWithDefaultResources, code=bash, x=Int(1), y=Int(1))
    assert result["sum"] == 2
    assert node.get_option("resources") == RESOURCES
    assert node.get_option("parser_name").endswith(":ArithmeticAddParser")
    assert AddWithDefaultResources.spec_options["input_filename"].default == "aiida.in"


def test_the_submitted_input_files_are_kept_on_the_node(bash: InstalledCode) -> None:
    _, node = run.get_node(
        ArithmeticAddCalculation, code=bash, x=Int(4), y=Int(5), metadata=OPTIONS
    )
    repository = node.base.repository
    assert {"aiida.in", "add.sh", "_aiidasubmit.sh"} <= set(repository.list_object_names())
    assert repository.get_object_content("aiida.in") == "4 5\n"
    assert "aiida.out" not in repository.list_object_names()  # outputs are in `retrieved`
    with pytest.raises(miniengine.ModificationNotAllowed):
        repository.delete_object("aiida.in")


def test_a_run_mode_job_whose_script_died_is_resumed_at_its_stage(
    bash: InstalledCode, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    from miniengine import load_node, resume
    from tests.workchains.daemon_chains import ROOT, python_env

    counter, gate = tmp_path / "counter", tmp_path / "gate"
    script = textwrap.dedent(
        f"""
        import asyncio

        from miniengine import Int, Str, load_code
        from miniengine.runtime.calcjob.launch import launch_calcjob
        from miniengine.storage.open import open_backend
        from tests.workchains.calcjob_plugins import ArithmeticAddCalculation

        # what run() does, on a store with a short lease: resume takes over soon after the kill
        inputs = dict(
            code=load_code({bash.pk}),
            x=Int(2),
            y=Int(3),
            counter=Str({str(counter)!r}),
            gate=Str({str(gate)!r}),
            metadata={OPTIONS!r},
        )
        store = open_backend(lease_timeout={LEASE})
        asyncio.run(launch_calcjob(ArithmeticAddCalculation, inputs, db=store))
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=python_env())
    try:
        wait_until(
            lambda: any(
                n.get_state() == "withscheduler"
                for n in find_processes(process_label="ArithmeticAddCalculation")
            ),
            60,
            "the job to be with the scheduler",
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (node,) = find_processes(process_label="ArithmeticAddCalculation")
    job_id = node.get_job_id()
    gate.touch()
    outputs, resumed = anyio.run(lambda: resume(node.pk, timeout=60))
    assert resumed.is_finished_ok and outputs["sum"] == 5
    assert load_node(node.pk).get_job_id() == job_id
    assert counter.read_text() == "ran\n"


def test_a_run_mode_workchain_whose_script_died_resumes_its_calcjob_child(
    bash: InstalledCode, tmp_path: Path
) -> None:
    """Resuming the WorkChain resumes the CalcJob it waits for (at its stage: the job is not
    submitted again), in the same process tree."""
    import signal
    import subprocess
    import sys
    import textwrap

    from miniengine import resume
    from tests.workchains.daemon_chains import ROOT, python_env

    counter, gate = tmp_path / "counter", tmp_path / "gate"
    script = textwrap.dedent(
        f"""
        import asyncio

        from miniengine import Int, Str, load_code
        from miniengine.runtime.workchain.launch import launch
        from miniengine.storage.open import open_backend
        from tests.workchains.calcjob_plugins import GatedAddWorkChain

        # what run() does, on a store with a short lease: resume takes over soon after the kill
        inputs = dict(
            code=load_code({bash.pk}),
            x=Int(2),
            y=Int(3),
            counter=Str({str(counter)!r}),
            gate=Str({str(gate)!r}),
        )
        store = open_backend(lease_timeout={LEASE})
        asyncio.run(launch(GatedAddWorkChain, inputs, db=store))
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=python_env())
    try:
        wait_until(
            lambda: any(
                n.get_state() == "withscheduler"
                for n in find_processes(process_label="ArithmeticAddCalculation")
            ),
            60,
            "the job to be with the scheduler",
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (chain,) = find_processes(process_label="GatedAddWorkChain")
    gate.touch()
    outputs, resumed = anyio.run(lambda: resume(chain.pk, timeout=60))
    assert resumed.is_finished_ok and outputs["sum"] == 5
    (job,) = find_processes(process_label="ArithmeticAddCalculation")
    assert job.is_finished_ok
    assert counter.read_text() == "ran\n"
