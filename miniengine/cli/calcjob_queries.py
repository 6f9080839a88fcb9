"""The read-only SQL of the ``calcjob`` commands and of what ``process show|list`` add for CalcJobs.

On a plain ``sqlite3`` connection, as :mod:`miniengine.cli.queries`: a CalcJob's attributes (its
options, stage, job id, remote folder and the tree of its submitted files), its computer, and
the tree of its ``retrieved`` folder, without the runtime or an event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from miniengine.cli.errors import CliError
from miniengine.cli.render import type_name

if TYPE_CHECKING:
    from miniengine.storage.interfaces.calcjobs import CalcJobInfo as StoredCalcJobInfo
    from miniengine.storage.interfaces.calcjobs import CalcJobs

__all__ = [
    "CALCJOB_TYPE",
    "CalcJobInfo",
    "active_stages",
    "calcjob_info",
    "cleanable_calcjobs",
    "output_tree",
    "require_calcjob",
]

CALCJOB_TYPE = "process.calcjob"


@dataclass(frozen=True)
class CalcJobInfo:
    """What the commands read of a CalcJobNode."""

    pk: int
    process_state: str | None
    mtime: float
    attributes: dict[str, Any]
    computer_pk: int | None
    computer_label: str | None
    computer_uuid: str | None

    def option(self, name: str) -> Any:
        options = self.attributes.get("options")
        return options.get(name) if isinstance(options, dict) else None

    @property
    def stage(self) -> str | None:
        return _text(self.attributes.get("state"))

    @property
    def job_id(self) -> str | None:
        return _text(self.attributes.get("job_id"))

    @property
    def scheduler_state(self) -> str | None:
        return _text(self.attributes.get("scheduler_state"))

    @property
    def remote_workdir(self) -> str | None:
        return _text(self.attributes.get("remote_workdir"))

    @property
    def input_tree(self) -> dict[str, Any]:
        tree = self.attributes.get("_repository")
        return tree if isinstance(tree, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _unpack(blob: bytes | None) -> dict[str, Any]:
    if blob is None:
        return {}
    import msgpack

    value = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    return value if isinstance(value, dict) else {}


def calcjob_info(connection: sqlite3.Connection, pk: int) -> CalcJobInfo | None:
    """The CalcJob ``pk`` with its computer, or None if ``pk`` is not a CalcJob."""
    row = connection.execute(
        "SELECT n.pk, n.process_state, n.mtime, n.attributes, c.pk, c.label, c.uuid "
        "FROM nodes n LEFT JOIN computers c ON c.pk = n.computer_pk "
        "WHERE n.pk = ? AND n.node_type = ?",
        (pk, CALCJOB_TYPE),
    ).fetchone()
    if row is None:
        return None
    return CalcJobInfo(row[0], row[1], row[2], _unpack(row[3]), row[4], row[5], row[6])


def require_calcjob(calcjobs: CalcJobs, pk: int, node_type: str) -> StoredCalcJobInfo:
    """The CalcJob ``pk`` (already found as a process of ``node_type``), or the error that says
    it is another kind of process."""
    info = calcjobs.calcjob_info(pk) if node_type == CALCJOB_TYPE else None
    if info is None:
        raise CliError(f"process {pk} is not a CalcJob (its type is {type_name(node_type)})")
    return info


def output_tree(connection: sqlite3.Connection, pk: int, label: str) -> dict[str, Any] | None:
    """The file tree of the output ``label`` (``retrieved``) of ``pk``, or None if it has none."""
    row = connection.execute(
        "SELECT n.attributes FROM links l JOIN nodes n ON n.pk = l.out_pk "
        "WHERE l.in_pk = ? AND l.link_type = 'create' AND l.label = ? ORDER BY l.pk LIMIT 1",
        (pk, label),
    ).fetchone()
    if row is None:
        return None
    tree = _unpack(row[0]).get("_repository")
    return tree if isinstance(tree, dict) else {}


def active_stages(connection: sqlite3.Connection, pks: Sequence[int]) -> dict[int, str]:
    """The stage (``uploading``, ``withscheduler``, ...) of each CalcJob among ``pks``."""
    stages: dict[int, str] = {}
    for start in range(0, len(pks), 500):
        chunk = list(pks[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        for pk, blob in connection.execute(
            f"SELECT pk, attributes FROM nodes WHERE pk IN ({marks}) AND node_type = ?",
            (*chunk, CALCJOB_TYPE),
        ):
            stage = _unpack(blob).get("state")
            if stage is not None:
                stages[int(pk)] = str(stage)
    return stages


def cleanable_calcjobs(
    connection: sqlite3.Connection,
    pks: Sequence[int] | None,
    newer_than: float | None,
    older_than: float | None,
    computers: Sequence[str] | None,
) -> list[tuple[int, str | None, int]]:
    """``(calcjob pk, process state, remote_folder pk)`` of the CalcJobs with a remote folder:
    those in ``pks`` (all if None), modified after ``newer_than`` and before ``older_than``
    (epoch seconds), on a computer whose label is in ``computers``; oldest first."""
    query = (
        "SELECT n.pk, n.process_state, r.pk FROM nodes n "
        "JOIN links l ON l.in_pk = n.pk AND l.link_type = 'create' AND l.label = 'remote_folder' "
        "JOIN nodes r ON r.pk = l.out_pk LEFT JOIN computers c ON c.pk = n.computer_pk "
        "WHERE n.node_type = ?"
    )
    params: list[Any] = [CALCJOB_TYPE]
    if pks is not None:
        query += f" AND n.pk IN ({', '.join('?' * len(pks))})"
        params += pks
    if newer_than is not None:
        query += " AND n.mtime > ?"
        params.append(newer_than)
    if older_than is not None:
        query += " AND n.mtime < ?"
        params.append(older_than)
    if computers is not None:
        query += f" AND c.label IN ({', '.join('?' * len(computers))})"
        params += computers
    query += " ORDER BY n.pk"
    return [(int(a), b, int(c)) for a, b, c in connection.execute(query, params)]
