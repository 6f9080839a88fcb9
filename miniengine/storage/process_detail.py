"""The process page's read, assembled the same way on every backend.

One statement reads the node with what hangs on it by key (its caller, the host of its lease
holder, its checkpoint, its scheduler job and computer: :data:`DETAIL_COLUMNS`); the links in
and out are the queries concern's ``linked_nodes``.  The checkpoint is decoded by the codec,
which rebuilds only the Data types registered with it and never imports the process class it
names, so a page can show where a process of any plugin stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from miniengine.core import codec
from miniengine.core.checkpoint import peek
from miniengine.exceptions import MiniengineError, NotExistent
from miniengine.storage.interfaces.provenance import NodeRow, unpack_attributes
from miniengine.storage.interfaces.queries import LinkedNode, ProcessOwner
from miniengine.storage.interfaces.reads import CalcJobDetail, CheckpointStep, ProcessDetail
from miniengine.storage.query_rows import _CALLER
from miniengine.storage.rows import NODE_COLUMNS

__all__ = ["CALCJOB_TYPE", "INPUT_LINKS", "OUTPUT_LINKS", "assemble", "detail_query"]

CALCJOB_TYPE = "process.calcjob"
INPUT_LINKS = ("input_calc", "input_work")
OUTPUT_LINKS = ("create", "return")

_N_COLUMNS = ", ".join(f"n.{name.strip()}" for name in NODE_COLUMNS.split(","))
_WIDTH = len(NODE_COLUMNS.split(","))


def detail_query(mark: str) -> str:
    """The node ``pk`` (one parameter) and what hangs on it by key, in one row."""
    return (
        f"SELECT {_N_COLUMNS}, {_CALLER}, w.host, c.data, j.job_id, j.scheduler_state, "
        "cp.label, cp.uuid FROM nodes n LEFT JOIN workers w ON w.id = n.owner "
        "LEFT JOIN checkpoints c ON c.node_pk = n.pk "
        "LEFT JOIN calcjob_jobs j ON j.process_pk = n.pk "
        f"LEFT JOIN computers cp ON cp.pk = n.computer_pk WHERE n.pk = {mark}"
    )


def assemble(
    pk: int,
    found: Sequence[Sequence[Any]],
    inputs: list[LinkedNode],
    outputs: list[LinkedNode],
) -> ProcessDetail:
    """The :class:`ProcessDetail` from the row of :func:`detail_query` and the links."""
    if not found or found[0][5] is None:
        raise NotExistent(f"no process with the pk {pk}")
    row = found[0]
    node = NodeRow._make(row[:_WIDTH])
    caller, host, blob, job_id, scheduler_state, computer_label, computer_uuid = row[_WIDTH:]
    owner = ProcessOwner(node.owner, node.lease_expires, host) if node.owner is not None else None
    calcjob = None
    if node.node_type == CALCJOB_TYPE:
        attributes = unpack_attributes(node.attributes)
        attributes = attributes if isinstance(attributes, dict) else {}
        calcjob = CalcJobDetail(
            computer_label=computer_label,
            computer_uuid=computer_uuid,
            job_id=_text(job_id if job_id is not None else attributes.get("job_id")),
            scheduler_state=_text(
                scheduler_state
                if scheduler_state is not None
                else attributes.get("scheduler_state")
            ),
            stage=_text(attributes.get("state")),
            remote_workdir=_text(attributes.get("remote_workdir")),
            retrieved=_retrieved(outputs),
        )
    return ProcessDetail(
        node=node,
        caller=None if caller is None else int(caller),
        owner=owner,
        checkpoint=None if blob is None else checkpoint_step(bytes(blob)),
        inputs=inputs,
        outputs=outputs,
        calcjob=calcjob,
    )


def checkpoint_step(blob: bytes) -> CheckpointStep | None:
    """Where the checkpoint ``blob`` says its process stands; None for a blob the codec
    cannot read at all.  A checkpoint holding a Data type this interpreter does not know
    still gives its kind and class."""
    try:
        state = codec.decode(blob)
    except MiniengineError:
        try:
            head = peek(blob)
        except MiniengineError:
            return None
        return CheckpointStep(head.kind, head.class_path, None, None, None)
    if not isinstance(state, dict) or "p" not in state:
        return None
    kind = str(state.get("k", "workchain"))
    seq = state.get("s")
    seq = int(seq) if isinstance(seq, int) else None
    if kind == "calcjob":  # its position is its stage; "c" is its computer there
        return CheckpointStep(kind, str(state["p"]), seq, None, _text(state.get("st")))
    cursor = state.get("c")
    position = (
        tuple(int(i) for i in cursor)
        if isinstance(cursor, list) and all(isinstance(i, int) for i in cursor)
        else None
    )
    return CheckpointStep(kind, str(state["p"]), seq, position, _text(state.get("n")))


def _retrieved(outputs: Sequence[LinkedNode]) -> list[str]:
    """The file paths of the ``retrieved`` output's tree (folders end with no file)."""
    for link in outputs:
        if link.link_label == "retrieved" and link.link_type == "create":
            attributes = unpack_attributes(link.attributes)
            tree = attributes.get("_repository") if isinstance(attributes, dict) else None
            return sorted(_paths(tree, "")) if isinstance(tree, dict) else []
    return []


def _paths(tree: dict[str, Any], prefix: str) -> list[str]:
    paths: list[str] = []
    for name, entry in tree.items():
        if isinstance(entry, dict):
            paths.extend(_paths(entry, f"{prefix}{name}/"))
        else:
            paths.append(f"{prefix}{name}")
    return paths


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
