"""What the ``calcjob`` commands and ``process show|list`` need to know of CalcJobs.

The reads themselves (a CalcJob's attributes and computer, the tree of its ``retrieved``
folder, the stages of active CalcJobs, the CalcJobs with a remote folder) are methods of the
backend's CalcJobs concern, which a read-only database offers too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.cli.errors import CliError
from miniengine.cli.render import type_name
from miniengine.storage.interfaces.calcjobs import CALCJOB_TYPE

if TYPE_CHECKING:
    from miniengine.storage.interfaces.calcjobs import CalcJobInfo, CalcJobs

__all__ = ["CALCJOB_TYPE", "require_calcjob"]


def require_calcjob(calcjobs: CalcJobs, pk: int, node_type: str) -> CalcJobInfo:
    """The CalcJob ``pk`` (already found as a process of ``node_type``), or the error that says
    it is another kind of process."""
    info = calcjobs.calcjob_info(pk) if node_type == CALCJOB_TYPE else None
    if info is None:
        raise CliError(f"process {pk} is not a CalcJob (its type is {type_name(node_type)})")
    return info
