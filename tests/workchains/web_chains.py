"""WorkChains for the browser tests of the web view, importable by module path as a daemon
worker needs.

:class:`ReportingAddWorkChain` adds its inputs through the ``add`` calcfunction (a child in the
call tree) and logs two reports, the second of which is HTML that the page must show as text.
"""

from __future__ import annotations

from miniengine import Int, Str, WorkChain
from tests.workchains.daemon_chains import add

#: A report that would run a script and make bold text if a page did not escape it.
HTML_REPORT = "look: <script>alert(1)</script> and <b>x</b>"


class ReportingAddWorkChain(WorkChain):
    """``result = x + y`` via ``add``; reports what it adds, then :data:`HTML_REPORT`."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.input("y", valid_type=Int)
        spec.input("note", valid_type=Str, required=False)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        self.report(f"adding {self.inputs.x.value} and {self.inputs.y.value}")
        self.report(HTML_REPORT)
        self.out("result", add(self.inputs.x, self.inputs.y))
