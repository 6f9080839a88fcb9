"""WorkChains for the tests of a daemon that outlives bad user code (importable by module path).

- :class:`ExitInStepWorkChain` calls ``sys.exit()`` in a ``def`` step,
  :class:`ExitInAsyncStepWorkChain` in an ``async def`` step: user code, not the worker's end.
- :func:`chain_module_source` is the text of a module defining ``Chain``, a one-step WorkChain
  that behaves at import as the test says (import fine, ``sys.exit()``, ``os._exit()``) once a
  marker file exists: a test submits while it imports, then breaks it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from miniengine import WorkChain


class ExitInStepWorkChain(WorkChain):
    """A ``def`` step that calls ``sys.exit(3)``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.leave)

    def leave(self) -> None:
        sys.exit(3)


class ExitInAsyncStepWorkChain(WorkChain):
    """An ``async def`` step that calls ``sys.exit("bye")``."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.leave)

    async def leave(self) -> None:
        sys.exit("bye")


def chain_module_source(marker: Path, on_import: str) -> str:
    """A module defining ``Chain`` (input ``x``, output ``x``); once ``marker`` exists, importing
    it runs ``on_import`` (a statement such as ``os._exit(7)``)."""
    return textwrap.dedent(
        f"""\
        import os
        import sys

        from miniengine import Int, WorkChain

        if os.path.exists({str(marker)!r}):
            {on_import}


        class Chain(WorkChain):
            @classmethod
            def define(cls, spec):
                super().define(spec)
                spec.input("x", valid_type=Int)
                spec.output("x", valid_type=Int)
                spec.outline(cls.echo)

            def echo(self):
                self.out("x", self.inputs.x)
        """
    )
