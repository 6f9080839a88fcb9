"""The executor of a CalcJob: upload, submit, wait for the scheduler, retrieve, parse.

Like a WorkChain's executor, :meth:`CalcJobExecutor.lifecycle` is a generator driven by
:mod:`miniengine.runtime.driver`.  Each stage ends with one transaction
(:attr:`~miniengine.storage.interfaces.calcjobs.CalcJobs.calcjob_commit`) that records the next
stage on the node and in the checkpoint, fenced by the lease epoch, so a worker killed at any
moment is followed by one that repeats at most the stage it was in:

- upload: ``prepare_for_submission`` in a local sandbox, the submit script, the copy into the
  working folder (repeatable: the same files again);
- submit: the job id is committed with the stage; a crash between the scheduler's answer and
  that commit leaves a marker file that the retry reads instead of submitting again;
- withscheduler: in the daemon the process is evicted (no lease, no slot, no object) and its job
  is a row that a worker's job watcher leases; the watcher enqueues the continuation when the
  job is done.  In run mode the same wait happens on the running loop;
- retrieve: the files into a new ``FolderData`` (content-addressed, so repeating costs nothing);
- parse: the Parser's outputs and exit code, with the terminal commit.

A transport stage that fails is tried again with exponential backoff; after the last attempt
the process is paused with a message naming the stage and the error, and ``play`` retries it.
A kill cancels whatever is in flight at once (backoff sleeps included) and the scheduler job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from miniengine.core import codec
from miniengine.core.attribute_dict import FrozenAttributeDict
from miniengine.core.calcinfo import CalcInfo, CalcJobState
from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCode
from miniengine.core.ports import PortNamespace, unflatten_namespace
from miniengine.core.states import ProcessEvent, ProcessState, transition
from miniengine.exceptions import (
    MiniengineError,
    ProcessKilledError,
)
from miniengine.runtime import context
from miniengine.runtime.driver import UNWRITABLE, Await, Body, Lifecycle, Write
from miniengine.runtime.lifecycle import ProcessExecutor, mark_stored
from miniengine.runtime.mode import Mode
from miniengine.runtime.nodes import CalcJobNode, blob_resolver, load_nodes
from miniengine.runtime.workchain import EVICTED, class_path
from miniengine.storage.interfaces.calcjobs import CalcJobCommit
from miniengine.transports.transport import Transport

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["CalcJobExecutor", "backoff_settings"]


def backoff_settings() -> tuple[float, int]:
    """(first interval in seconds, attempts) of a failing transport stage.  AiiDA's are 20 s
    and 5; ours start at 2 s.  ``MINIENGINE_TRANSPORT_BACKOFF`` and
    ``MINIENGINE_TRANSPORT_ATTEMPTS`` override them (tests, impatient users)."""
    interval = float(os.environ.get("MINIENGINE_TRANSPORT_BACKOFF", "2.0"))
    attempts = int(os.environ.get("MINIENGINE_TRANSPORT_ATTEMPTS", "5"))
    return max(interval, 0.0), max(attempts, 1)


class _Evicted(Exception):
    """Unwinds the lifecycle of a process handed back to the queue (daemon)."""


@dataclass
class _Failed:
    error: BaseException
    attempts: int


@dataclass
class _Prepared:
    sandbox: str
    calcinfo: CalcInfo
    script_filename: str


_STATUS = {
    CalcJobState.UPLOADING.value: "Waiting for transport task: upload",
    CalcJobState.SUBMITTING.value: "Waiting for transport task: submit",
    CalcJobState.WITHSCHEDULER.value: "Monitoring scheduler: job state {job_state}",
    CalcJobState.RETRIEVING.value: "Waiting for transport task: retrieve",
    CalcJobState.PARSING.value: "Parsing the retrieved files",
}


def scheduler_status(job_state: str) -> str:
    """The status text of a CalcJob whose job is with its scheduler in ``job_state``."""
    return _STATUS[CalcJobState.WITHSCHEDULER.value].format(job_state=job_state)


RequestTransport = Callable[[Any], contextlib.AbstractAsyncContextManager[Transport]]


class CalcJobExecutor(ProcessExecutor):
    """Everything about one running CalcJob that its plugin code must not see."""

    node: CalcJobNode

    def __init__(
        self,
        instance: Any,
        store: Backend,
        node: CalcJobNode,
        epoch: int,
        mode: Mode,
    ) -> None:
        super().__init__(instance, store, node, epoch, mode, "calcjob")
        #: opens a transport to a computer: the tree's pool, or the worker's
        self.request: RequestTransport = mode.transport
        self.raw_inputs: dict[str, Any] = {}
        self.inputs = FrozenAttributeDict({})
        self.options: dict[str, Any] = {}
        self.computer: Any = None
        self.stage: str | None = None
        self.workdir: str | None = None
        self.job_id: str | None = None
        self.job_done = False
        self.scheduler_state: str | None = None
        self.detailed_info: Any = None
        self.retrieve_list: list[Any] = []
        self.retrieve_temporary_list: list[Any] = []
        self.exit_statuses: dict[int, int] | None = None
        self.script_filename = "_aiidasubmit.sh"
        #: the tree of the prepared input files in the repository (committed with the upload)
        self.input_files: dict[str, Any] | None = None
        # what the worker and the process tree look at on any executor
        self.awaiting: list[Any] = []
        self.cursor = None

    # what the plugin sees ---------------------------------------------------------------------

    def report(self, message: str) -> None:
        self.log("REPORT", f"[{self.pk}|{self.cls.__name__}|{self.stage}]: {message}")

    # checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        return codec.encode(
            {
                "k": "calcjob",
                "p": class_path(self.cls),
                "i": self.raw_inputs,
                "o": self.options,
                "c": self.computer.uuid,
                "st": self.stage,
                "s": self.seq,
                "wd": self.workdir,
                "j": self.job_id,
                "rl": self.retrieve_list,
                "rtl": self.retrieve_temporary_list,
                "sf": self.script_filename,
                "xs": (
                    {str(k): v for k, v in self.exit_statuses.items()}
                    if self.exit_statuses is not None
                    else None
                ),
            }
        )

    def restore(self, blob: bytes) -> None:
        import miniengine.runtime.registry  # noqa: F401  (types above the core a checkpoint may hold)
        from miniengine.runtime.computers import load_computer

        state = codec.decode(blob, resolve_pk=blob_resolver(self.store, blob))
        self.raw_inputs = state["i"]
        self.inputs = FrozenAttributeDict(self.raw_inputs)
        self.options = dict(state["o"])
        self.computer = load_computer(uuid=state["c"], db=self.store)
        self.stage = state.get("st")
        self.seq = int(state.get("s", 0))
        self.workdir = state.get("wd")
        self.job_id = state.get("j")
        self.retrieve_list = list(state.get("rl") or [])
        self.retrieve_temporary_list = list(state.get("rtl") or [])
        self.script_filename = state.get("sf") or self.script_filename
        statuses = state.get("xs")
        self.exit_statuses = (
            {int(k): int(v) for k, v in statuses.items()} if statuses is not None else None
        )

    # commits ----------------------------------------------------------------------------------

    def _commit(
        self,
        stage: str,
        status: str,
        outputs: list[tuple[str, Data]] | None = None,
        attributes: dict[str, Any] | None = None,
        job: bool = False,
        drop_job: bool = False,
        evict: bool = False,
    ) -> Write:
        self.stage = stage
        self.seq += 1
        commit = CalcJobCommit(
            pk=self.pk,
            owner=self.store.owner,
            epoch=self.epoch,
            process_state=ProcessState.WAITING.value,
            process_status=status,
            seq=self.seq,
            checkpoint=self.checkpoint(),
            attributes={"state": stage, **(attributes or {})},
            outputs=outputs or [],
            logs=self.logs,
            job=(self.computer.uuid, self.job_id) if job and self.job_id else None,
            drop_job=drop_job,
            evict=evict,
            task_pk=self.task_pk,
        )
        self.logs = []
        return Write(self.store.calcjobs.calcjob_commit, commit)

    def _after_commit(self, committed: tuple[list[int], bool]) -> None:
        if committed[1]:
            self.pause_requested = True

    def _boundary(self) -> Lifecycle[None]:
        """Where a pause or a worker's shutdown takes effect: between stages."""
        self._stop_if_killed()
        if (yield from self._pause_or_hand_back()):
            raise _Evicted()

    def _terminate(self, event: ProcessEvent, state: ProcessState, **fields: Any) -> Write:
        return self._finish(self.store.calcjobs.finish_calcjob, event, state, fields)

    def _stop_started(self) -> Lifecycle[None]:
        """Cancel its scheduler job (a kill must reach the job)."""
        yield Await(self._cancel_job)

    # transport stages -------------------------------------------------------------------------

    async def _attempts(self, name: str, operation: Callable[[Transport], Awaitable[Any]]) -> Any:
        interval, attempts = backoff_settings()
        for attempt in range(1, attempts + 1):
            try:
                async with self.request(self.computer) as transport:
                    return await operation(transport)
            except Exception as exc:
                if attempt == attempts:
                    return _Failed(exc, attempt)
                message = (
                    f"transport task {name} failed (attempt {attempt} of {attempts}): "
                    f"{type(exc).__name__}: {exc}; trying again in {interval:g} s"
                )
                # written at once: a user watching the process sees the backoff
                await self.store.calcjobs.stage_status.aio(
                    self.pk,
                    self.store.owner,
                    self.epoch,
                    f"Waiting for transport task: {name} (attempt {attempt} of {attempts} "
                    f"failed, next in {interval:g} s)",
                    [("WARNING", message)],
                )
                await anyio.sleep(interval)
                interval *= 2
        raise AssertionError("unreachable")

    def _transport_stage(
        self, name: str, operation: Callable[[Transport], Awaitable[Any]]
    ) -> Lifecycle[Any]:
        """Run a transport stage with backoff; pause after the last attempt, until played."""
        while True:
            outcome = yield Await(lambda: self._attempts(name, operation))
            if not isinstance(outcome, _Failed):
                return outcome
            error = outcome.error
            message = (
                f"Pausing after failed transport task: {name} failed {outcome.attempts} times: "
                f"{type(error).__name__}: {error}"
            )
            self.log("ERROR", "".join(traceback.format_exception(error)))
            logs, self.logs = self.logs, []
            if logs:
                yield Write(self.store.provenance.add_logs, self.pk, logs)
            yield Write(
                self.store.calcjobs.pause_stage,
                self.pk,
                self.store.owner,
                self.epoch,
                message,
                self.mode.evicts,
                self.task_pk,
            )
            if self.mode.evicts:
                raise _Evicted()
            yield Await(self._wait_while_paused)

    # the stages -------------------------------------------------------------------------------

    def _codes(self) -> dict[str, Any]:
        from miniengine.runtime.codes import AbstractCode

        found: dict[str, Any] = {}

        def walk(values: Mapping[str, Any]) -> None:
            for value in values.values():
                if isinstance(value, AbstractCode):
                    found[value.uuid] = value
                elif isinstance(value, Mapping):
                    walk(value)

        walk(self.raw_inputs)
        return found

    def _prepare(self, folder_path: str | None = None) -> _Prepared:
        """Run ``prepare_for_submission`` in a sandbox and write the submit script there."""
        return prepare_folder(self, folder_path)

    async def _upload(self, transport: Transport, prepared: _Prepared) -> str:
        from miniengine.runtime.calcjob import tasks

        if self.workdir is None:
            root = self.computer.get_workdir()
            username = await transport.whoami() if "{username}" in root else None
            self.workdir = tasks.remote_workdir(root, self.node.uuid, username)
        info = prepared.calcinfo
        await tasks.upload(
            transport,
            prepared.sandbox,
            self.workdir,
            info.remote_copy_list or [],
            info.remote_symlink_list or [],
        )
        return self.workdir

    async def _submit(self, transport: Transport) -> str:
        from miniengine.runtime.calcjob import tasks

        assert self.workdir is not None
        return await tasks.submit(
            transport, self.computer.get_scheduler(), self.workdir, self.script_filename
        )

    async def _wait_for_job(self) -> None:
        from miniengine.runtime.calcjob.tasks import detailed_info
        from miniengine.runtime.calcjob.watcher import loop_watcher

        assert self.job_id is not None
        info = await loop_watcher().wait(self.computer, self.job_id, self.request)
        self.job_done = True
        self.scheduler_state = info.job_state.value if info is not None else "done"
        self.detailed_info = detailed_info(info)

    async def _retrieve(self, transport: Transport) -> Any:
        from miniengine.runtime.calcjob import tasks
        from miniengine.runtime.file_data import FolderData

        assert self.workdir is not None
        target = tempfile.mkdtemp(prefix="miniengine-retrieved-")
        try:
            statuses = await tasks.retrieve(transport, self.workdir, self.retrieve_list, target)

            def store_folder() -> Any:
                token = context.set_current(self.process)
                try:
                    return FolderData(tree=target)
                finally:
                    context.reset_current(token)

            folder = await anyio.to_thread.run_sync(store_folder)
        finally:
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(target, ignore_errors=True))
        return folder, statuses

    async def _retrieve_temporary(self, transport: Transport) -> str:
        from miniengine.runtime.calcjob import tasks

        assert self.workdir is not None
        target = tempfile.mkdtemp(prefix="miniengine-retrieved-temporary-")
        await tasks.retrieve(transport, self.workdir, self.retrieve_temporary_list, target)
        return target

    async def _cancel_job(self) -> None:
        """Cancel the scheduler job of a killed process (shielded: the kill must reach it)."""
        from miniengine.runtime.calcjob import tasks

        submitting = self.stage == CalcJobState.SUBMITTING.value and self.workdir is not None
        if self.job_done or (self.job_id is None and not submitting):
            return
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(60):
                    async with self.request(self.computer) as transport:
                        scheduler = self.computer.get_scheduler()
                        if self.job_id is None:
                            # killed while submitting: the scheduler may have accepted the job
                            # already; the marker says which
                            assert self.workdir is not None
                            self.job_id = await tasks.submitted_job(
                                transport, scheduler, self.workdir
                            )
                            if self.job_id is None:
                                return
                        await tasks.kill_job(transport, scheduler, self.job_id)
                self.log("REPORT", f"cancelled the scheduler job {self.job_id}")
            except Exception as exc:
                self.log("WARNING", f"cancelling the scheduler job {self.job_id} failed: {exc}")

    def _parse(self, temporary: str | None) -> tuple[ExitCode, list[tuple[str, Data]]]:
        """The scheduler's verdict, then the Parser's (which wins when it returns one), then the
        programs' exit statuses (non-zero -> ERROR_PROGRAM_FAILED when nobody else decided)."""
        codes = self.cls.spec().exit_codes
        node = CalcJobNode(self.store, self.store.provenance.node(self.pk))
        outputs: list[tuple[str, Data]] = []
        if "retrieved" not in node.outputs:
            return codes["ERROR_NO_RETRIEVED_FOLDER"], outputs
        retrieved = node.outputs.retrieved
        scheduler_code: ExitCode | None = None
        stdout = _read_text(retrieved, self.options.get("scheduler_stdout"))
        stderr = _read_text(retrieved, self.options.get("scheduler_stderr"))
        try:
            label = self.computer.get_scheduler().parse_output(self.detailed_info, stdout, stderr)
        except Exception as exc:
            self.log("WARNING", f"the scheduler could not parse the job's output: {exc}")
            label = None
        if label is not None and label in codes:
            scheduler_code = codes[label]
            self.log(
                "WARNING",
                f"scheduler parser returned exit code<{scheduler_code.status}>: "
                f"{scheduler_code.message}",
            )
        parser_code: ExitCode | None = None
        parser_name = self.options.get("parser_name")
        if parser_name is not None:
            from miniengine.runtime.calcjob.parser import load_parser_class

            parser = load_parser_class(parser_name)(node)
            parser._process_class = self.cls
            parser._sink = self.log
            kwargs: dict[str, Any] = {}
            if temporary is not None:
                kwargs["retrieved_temporary_folder"] = temporary
            result = parser.parse(**kwargs)
            if isinstance(result, int) and not isinstance(result, ExitCode | bool):
                result = ExitCode(result)
            parser_code = result
            if parser_code is not None and parser_code.status > 0:
                self.log(
                    "WARNING",
                    f"output parser returned exit code<{parser_code.status}>: "
                    f"{parser_code.message}",
                )
            outputs = list(parser.outputs.items())
        if parser_code is not None:
            exit_code = parser_code
        elif scheduler_code is not None:
            exit_code = scheduler_code
        else:
            failed = {i: s for i, s in (self.exit_statuses or {}).items() if s != 0}
            if failed:
                described = ", ".join(f"program {i} exited with {s}" for i, s in failed.items())
                exit_code = codes["ERROR_PROGRAM_FAILED"].format(message=described)
            else:
                exit_code = ExitCode(0)
        if exit_code.status == 0:
            present = {"remote_folder", "retrieved", *(label for label, _ in outputs)}
            for name, port in self.cls.spec().outputs.ports.items():
                if isinstance(port, PortNamespace):
                    continue
                if port.required and name not in present:
                    exit_code = codes["ERROR_MISSING_OUTPUT"]
                    break
        return exit_code, outputs

    # the lifecycle ----------------------------------------------------------------------------

    def lifecycle(self, state: ProcessState) -> Lifecycle[tuple[dict[str, Any], CalcJobNode]]:
        """Run the stages from wherever the executor stands (fresh or restored)."""
        outputs: list[tuple[str, Data]] = []
        temporary: str | None = None
        try:
            if state is ProcessState.CREATED:
                state = transition(state, ProcessEvent.START)
            if self.stage is None or self.stage == CalcJobState.UPLOADING.value:
                prepared: _Prepared = yield Body(self._prepare, (), {}, False, self.process)
                try:
                    workdir = yield from self._transport_stage(
                        "upload", lambda transport: self._upload(transport, prepared)
                    )
                finally:
                    shutil.rmtree(prepared.sandbox, ignore_errors=True)
                from miniengine.runtime.remote_data import RemoteData

                remote = RemoteData(remote_path=workdir, computer=self.computer)
                state = ProcessState.WAITING
                self._after_commit(
                    (
                        yield self._commit(
                            CalcJobState.SUBMITTING.value,
                            _STATUS[CalcJobState.SUBMITTING.value],
                            outputs=[("remote_folder", remote)],
                            attributes={
                                "_repository": self.input_files,
                                "remote_workdir": workdir,
                                "retrieve_list": self.retrieve_list,
                                "retrieve_temporary_list": self.retrieve_temporary_list,
                            },
                        )
                    )
                )
                yield from self._boundary()
            state = ProcessState.WAITING
            if self.stage == CalcJobState.SUBMITTING.value:
                self.job_id = yield from self._transport_stage("submit", self._submit)
                self._after_commit(
                    (
                        yield self._commit(
                            CalcJobState.WITHSCHEDULER.value,
                            scheduler_status("queued"),
                            attributes={"job_id": self.job_id, "scheduler_state": "queued"},
                            job=self.mode.evicts,
                            evict=self.mode.evicts,
                        )
                    )
                )
                if self.mode.evicts:  # the worker's job watcher waits for the job
                    self.mode.job_submitted()
                    raise _Evicted()
                yield from self._boundary()
            if self.stage == CalcJobState.WITHSCHEDULER.value:
                if self.mode.evicts:
                    row = self.store.calcjobs.read_job(self.pk)
                    if row is None or not row.done:
                        # woken early (recovery, play): back to waiting for the job
                        self._after_commit(
                            (
                                yield self._commit(
                                    CalcJobState.WITHSCHEDULER.value,
                                    _STATUS[CalcJobState.WITHSCHEDULER.value].format(
                                        job_state="unknown"
                                    ),
                                    job=row is None,
                                    evict=True,
                                )
                            )
                        )
                        raise _Evicted()
                    self.job_done = True
                    self.scheduler_state = row.scheduler_state
                    self.detailed_info = row.detailed_info
                else:
                    yield from self._transport_stage("update", lambda _: self._wait_for_job())
                self.stage = CalcJobState.RETRIEVING.value
            if self.stage == CalcJobState.RETRIEVING.value:
                self.job_done = True
                retrieved, statuses = yield from self._transport_stage("retrieve", self._retrieve)
                self.exit_statuses = statuses
                self._after_commit(
                    (
                        yield self._commit(
                            CalcJobState.PARSING.value,
                            _STATUS[CalcJobState.PARSING.value],
                            outputs=[("retrieved", retrieved)],
                            attributes={
                                "scheduler_state": self.scheduler_state or "done",
                                "program_exit_statuses": (
                                    {str(k): v for k, v in statuses.items()}
                                    if statuses is not None
                                    else None
                                ),
                            },
                            drop_job=True,
                        )
                    )
                )
                yield from self._boundary()
            self.job_done = True
            if self.retrieve_temporary_list:
                temporary = yield from self._transport_stage("retrieve", self._retrieve_temporary)
            exit_code, outputs = yield Body(self._parse, (temporary,), {}, False, self.process)
            self._stop_if_killed()
        except GeneratorExit:
            raise
        except _Evicted:
            return EVICTED, self.node
        except (KeyboardInterrupt, asyncio.CancelledError, ProcessKilledError) as exc:
            yield from self._end_killed(exc, state)
            raise
        except UNWRITABLE:
            raise
        except BaseException as exc:
            yield self._excepted(exc, state)
            raise
        finally:
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
        created = [(label, data, "create") for label, data in outputs]
        output_pks = yield from self._write_finish(state, exit_code, outputs=created)
        mark_stored(outputs, output_pks, self.store)
        return unflatten_namespace(dict(self._all_outputs(outputs))), self.node

    def _all_outputs(self, new: list[tuple[str, Data]]) -> list[tuple[str, Any]]:
        links = self.store.provenance.links(self.pk, False, ["create"])
        nodes = load_nodes(self.store, [link[0] for link in links])
        return [(label, nodes[pk]) for pk, _, label in links]


def _read_text(folder: Any, name: str | None) -> str | None:
    if not name:
        return None
    try:
        if name not in folder.list_object_names():
            return None
        return str(folder.get_object_content(name))
    except (OSError, MiniengineError, UnicodeDecodeError):
        return None


def prepare_folder(executor: CalcJobExecutor, folder_path: str | None = None) -> _Prepared:
    """``prepare_for_submission`` into a sandbox (or ``folder_path`` for a dry run), then the
    files of the local copy list, a portable code's files and the submit script."""
    from miniengine.folders import Folder
    from miniengine.runtime.calcjob import tasks
    from miniengine.runtime.codes import PortableCode

    path = folder_path or tempfile.mkdtemp(prefix="miniengine-sandbox-")
    folder = Folder(path)
    calcinfo = executor.instance.prepare_for_submission(folder)
    if not isinstance(calcinfo, CalcInfo):
        raise MiniengineError(
            f"{executor.cls.__name__}.prepare_for_submission returned "
            f"{type(calcinfo).__name__}, not a CalcInfo"
        )
    if not calcinfo.codes_info:
        raise MiniengineError(
            f"{executor.cls.__name__}.prepare_for_submission returned a CalcInfo without "
            "codes_info: say which program(s) to run with CodeInfo"
        )
    codes = executor._codes()
    for info in calcinfo.codes_info:
        if info.code_uuid is None and len(codes) == 1:
            info.code_uuid = next(iter(codes))
    for uuid, filename, target in calcinfo.local_copy_list or []:
        from miniengine.runtime.nodes import load_node

        source = load_node(uuid=uuid, db=executor.store)
        destination = os.path.join(path, target)
        os.makedirs(os.path.dirname(destination) or path, exist_ok=True)
        with open(destination, "wb") as stream:
            stream.write(source.base.repository.get_object_content(filename, mode="rb"))
    for code in codes.values():
        if isinstance(code, PortableCode):
            code.base.repository.copy_tree(path)
            tasks.make_executable(os.path.join(path, str(code.filepath_executable)))
    options = executor.options
    scheduler = executor.computer.get_scheduler()
    template = tasks.build_job_template(
        calcinfo,
        options,
        executor.computer,
        scheduler,
        codes,
        f"miniengine-{executor.pk}",
        executor.workdir or "",
    )
    script = scheduler.get_submit_script(template)
    script_filename = options.get("submit_script_filename", "_aiidasubmit.sh")
    with open(os.path.join(path, script_filename), "w") as stream:
        stream.write(script)
    executor.script_filename = script_filename
    retrieve = [*(calcinfo.retrieve_list or []), *options.get("additional_retrieve_list", [])]
    for name in (options.get("scheduler_stdout"), options.get("scheduler_stderr")):
        if name and name not in retrieve:
            retrieve.append(name)
    executor.retrieve_list = [list(item) if isinstance(item, tuple) else item for item in retrieve]
    executor.retrieve_temporary_list = [
        list(item) if isinstance(item, tuple) else item
        for item in calcinfo.retrieve_temporary_list or []
    ]
    if folder_path is None:  # not a dry run: the files are kept on the node
        from miniengine.runtime.calcjob.files import store_input_files

        executor.input_files = store_input_files(
            executor.store.provenance.repository(),
            path,
            calcinfo.provenance_exclude_list or [],
        )
    return _Prepared(path, calcinfo, script_filename)
