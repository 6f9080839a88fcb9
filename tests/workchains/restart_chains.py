"""Restart work chains for tests/test_restart_workchain.py, importable as a daemon worker needs.

- :class:`Doubler` is the process being restarted: it doubles ``x``, fails with
  ``ERROR_NEGATIVE`` (300) for a negative ``x``, raises when ``explode`` is set, and appends a
  line to ``folder/steps`` when given a folder, so tests count how often it ran.
- :class:`DoublerRestart` restarts it with one handler that adds 3 to ``x`` after a 300 (and
  sets ``settings`` to a plain dict, which ``run_process`` wraps in a ``Dict``).
- :class:`GatedDoublerRestart` blocks in ``run_process`` of its second iteration, after the
  child was submitted and before the step's commit, so a test can SIGKILL the worker there.
- :class:`ScriptedRestart` has four handlers whose answers come from the ``behaviour`` input;
  each reports that it was considered, so the order shows in the node's log.
- :class:`HalveRestart` restarts the calcfunction :func:`halve`, which fails for odd numbers.
- :class:`GatedHalveRestart` restarts :func:`gated_halve`, which blocks in its second run.
- :class:`WaitingRestart` restarts ``miniengine.testing.WaitingProcess`` (for a killed child).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from miniengine import Bool, Dict, ExitCode, Int, Str, WorkChain, calcfunction, while_
from miniengine.core.attribute_dict import AttributeDict
from miniengine.core.spec import ProcessSpec
from miniengine.engine import BaseRestartWorkChain, ProcessHandlerReport, process_handler
from miniengine.runtime.nodes import ProcessNode
from miniengine.testing import WaitingProcess
from tests.workchains.daemon_chains import gate, record


class Doubler(WorkChain):
    """Doubles ``x``; fails with 300 for a negative ``x``, raises with ``explode``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("explode", valid_type=Bool, default=lambda: Bool(False))
        spec.input("folder", valid_type=Str, required=False)
        spec.input("settings", valid_type=Dict, required=False)
        spec.output("result", valid_type=Int)
        spec.exit_code(300, "ERROR_NEGATIVE", message="x is negative: {x}")
        spec.outline(cls.compute)

    def compute(self) -> ExitCode | None:
        x = self.inputs.x.value
        if "folder" in self.inputs:
            record(Path(self.inputs.folder.value), f"child x={x}")
        if self.inputs.explode.value:
            raise RuntimeError("the child exploded")
        if x < 0:
            return self.exit_codes.ERROR_NEGATIVE.format(x=x)
        self.out("result", Int(2 * x))
        return None


def restart_outline(cls: Any) -> tuple[Any, ...]:
    """AiiDA's usual outline of a restart work chain."""
    return (
        cls.setup,
        while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
        cls.results,
    )


class DoublerRestart(BaseRestartWorkChain):
    """Restarts :class:`Doubler`; ``handle_negative`` adds 3 to ``x`` after an exit code 300."""

    _process_class = Doubler

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.expose_inputs(Doubler, namespace="child")
        spec.expose_outputs(Doubler)
        spec.outline(*restart_outline(cls))

    def setup(self) -> None:
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(Doubler, "child"))

    @process_handler(priority=400, exit_codes=Doubler.exit_codes.ERROR_NEGATIVE)
    def handle_negative(self, node: ProcessNode) -> ProcessHandlerReport:
        x = self.ctx.inputs.x.value
        self.report(
            f"handle_negative: {node.process_label}<{node.pk}> failed with {node.exit_status} "
            f"({node.exit_message}) for x={x}"
        )
        self.ctx.inputs.x = Int(x + 3)
        self.ctx.inputs.settings = {"retried_after": node.pk}  # a plain dict: wrapped in a Dict
        return ProcessHandlerReport()


class GatedDoublerRestart(DoublerRestart):
    """Stops in the second ``run_process`` after submitting the child, until released."""

    def run_process(self) -> Any:
        to_context = super().run_process()
        if self.ctx.iteration == 2:
            folder = Path(self.ctx.inputs.folder.value)
            record(folder, "gate")
            gate(folder, "")
        return to_context


class ScriptedRestart(BaseRestartWorkChain):
    """Handlers that answer as the ``behaviour`` input says: ``{name: answer}`` or ``{name:
    [answer of iteration 1, of iteration 2, ...]}`` with answers ``'report'``, ``'break'``,
    ``'abort'`` or None (no report); each reports ``considered <name>``."""

    _process_class = Doubler

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.expose_inputs(Doubler, namespace="child")
        spec.expose_outputs(Doubler)
        spec.input("behaviour", valid_type=Dict, default=lambda: Dict({}))
        spec.exit_code(410, "ERROR_HANDLER_GAVE_UP", message="A handler gave up.")
        spec.outline(*restart_outline(cls))

    def setup(self) -> None:
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(Doubler, "child"))

    def _answer(self, name: str) -> ProcessHandlerReport | None:
        self.report(f"considered {name}")
        answer = self.inputs.behaviour.get_dict().get(name)
        if isinstance(answer, list):
            index = self.ctx.iteration - 1
            answer = answer[index] if index < len(answer) else None
        if answer == "report":
            return ProcessHandlerReport()
        if answer == "break":
            return ProcessHandlerReport(do_break=True)
        if answer == "abort":
            return ProcessHandlerReport(True, self.exit_codes.ERROR_HANDLER_GAVE_UP)
        return None

    @process_handler(priority=500, enabled=False)
    def handle_disabled(self, node: ProcessNode) -> ProcessHandlerReport | None:
        return self._answer("handle_disabled")

    @process_handler(priority=300)
    def handle_high(self, node: ProcessNode) -> ProcessHandlerReport | None:
        return self._answer("handle_high")

    @process_handler(priority=200)
    def handle_mid(self, node: ProcessNode) -> ProcessHandlerReport | None:
        return self._answer("handle_mid")

    @process_handler  # the bare form: priority 0
    def handle_low(self, node: ProcessNode) -> ProcessHandlerReport | None:
        return self._answer("handle_low")

    @process_handler(exit_codes=[ExitCode(999)])
    def handle_never(self, node: ProcessNode) -> ProcessHandlerReport | None:
        """Filtered out by its exit code: the process never fails with 999."""
        return self._answer("handle_never")


@calcfunction
def halve(x: Int) -> Int | ExitCode:
    """Half of an even ``x``; exit code 300 for an odd one; raises for a negative one."""
    if x.value < 0:
        raise ValueError(f"cannot halve {x.value}")
    if x.value % 2:
        return ExitCode(300, "x is odd")
    return Int(x.value // 2)


class HalveRestart(BaseRestartWorkChain):
    """Restarts the calcfunction :func:`halve`, adding 1 to an odd ``x``."""

    _process_class = halve

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(*restart_outline(cls))

    def setup(self) -> None:
        super().setup()
        self.ctx.inputs = AttributeDict({"x": self.inputs.x})

    def get_outputs(self, node: ProcessNode) -> dict[str, Any]:
        # a process function declares no outputs, so there are none to expose
        return {"result": node.outputs.result}

    @process_handler(exit_codes=ExitCode(300))
    def handle_odd(self, node: ProcessNode) -> ProcessHandlerReport:
        self.ctx.inputs.x = Int(self.ctx.inputs.x.value + 1)
        return ProcessHandlerReport()


@calcfunction
def gated_halve(x: Int, folder: Str) -> Int | ExitCode:
    """:func:`halve` that records each call in ``folder/steps`` and, for an even ``x``, waits at
    the gate of ``folder`` first."""
    record(Path(folder.value), f"halve x={x.value}")
    if x.value % 2:
        return ExitCode(300, "x is odd")
    gate(Path(folder.value), "")
    return Int(x.value // 2)


class GatedHalveRestart(HalveRestart):
    """Restarts :func:`gated_halve`; its second run (``x`` made even) waits at the gate."""

    _process_class = gated_halve

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("folder", valid_type=Str)

    def setup(self) -> None:
        super().setup()
        self.ctx.inputs.folder = self.inputs.folder


class WaitingRestart(BaseRestartWorkChain):
    """Restarts ``WaitingProcess``, which waits at a gate (a test kills it there)."""

    _process_class = WaitingProcess

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.expose_inputs(WaitingProcess)
        spec.expose_outputs(WaitingProcess)
        spec.outline(*restart_outline(cls))

    def setup(self) -> None:
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(WaitingProcess))


class NoProcessClassRestart(BaseRestartWorkChain):
    """Forgets to set ``_process_class``."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.outline(*restart_outline(cls))
