"""A WorkChain's checkpoint as a typed value, and its one encoding through the codec.

The checkpoint says where a WorkChain stands between two steps: its class (by import path, never
imported here), the outline cursor, the step sequence number, the context, the children it waits
for, its inputs and the outputs attached so far.  Writing it (after every step, and when the
process is created) and reading it (resume in run mode, a daemon worker) go through
:meth:`Checkpoint.encode` and :meth:`Checkpoint.decode`, so the blob's layout is defined once.

The blob is a msgpack map with one-letter keys (it is written after every step, so it stays
small); CalcJob checkpoints share the codec and the ``p`` key and add ``k = "calcjob"``:
:func:`peek` tells them apart without rebuilding any node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from miniengine.core import codec
from miniengine.core.data import Data
from miniengine.exceptions import CheckpointError

__all__ = ["Checkpoint", "CheckpointHead", "peek", "with_refs"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a WorkChain stands between two steps (stored Data and nodes by pk when encoded)."""

    #: ``module:qualname`` of the WorkChain class
    class_path: str
    #: the bound inputs (Data, or :class:`~miniengine.core.codec.NodeRef` before resolution)
    inputs: Any
    #: the outline cursor of the step that ran last; ``None`` before the first step
    cursor: tuple[int, ...] | None = None
    #: the name of the step at ``cursor`` (a renamed step is refused on resume)
    step_name: str | None = None
    #: how many steps have run (the memo keys of inline calls use it)
    seq: int = 0
    #: the context, with plain dicts
    ctx: dict[str, Any] = field(default_factory=dict)
    #: the children waited for: ``(ctx key, append, pk)``
    awaiting: list[tuple[str, bool, int]] = field(default_factory=list)
    #: the outputs attached so far: label to pk
    outputs: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The blob; :class:`~miniengine.exceptions.CheckpointError` for a value the codec
        refuses (:func:`codec.check_encodable` names its path)."""
        return Checkpoint.encode_fields(
            self.class_path,
            self.inputs,
            self.cursor,
            self.step_name,
            self.seq,
            self.ctx,
            self.awaiting,
            self.outputs,
        )

    @staticmethod
    def encode_fields(
        class_path: str,
        inputs: Any,
        cursor: tuple[int, ...] | None,
        step_name: str | None,
        seq: int,
        ctx: dict[str, Any],
        awaiting: list[tuple[str, bool, int]],
        outputs: dict[str, int],
    ) -> bytes:
        """:meth:`encode` of the checkpoint these fields make, without building it first: a
        WorkChain encodes one after every step, and the value would cost a microsecond more."""
        return codec.encode(
            {
                "p": class_path,
                "c": list(cursor) if cursor is not None else None,
                "n": step_name,
                "s": seq,
                "x": ctx,
                "w": awaiting,
                "i": inputs,
                "o": outputs,
            }
        )

    @classmethod
    def decode(cls, blob: bytes, *, resolve_pk: Callable[[int], Any] | None = None) -> Checkpoint:
        """Read a blob written by :meth:`encode`; stored Data comes back as ``resolve_pk(pk)``
        (a :class:`~miniengine.core.codec.NodeRef` without it)."""
        state = codec.decode(blob, resolve_pk=resolve_pk)
        try:
            cursor = state["c"]
            return cls(
                class_path=str(state["p"]),
                inputs=state["i"],
                cursor=tuple(cursor) if cursor is not None else None,
                step_name=state.get("n"),
                seq=int(state["s"]),
                ctx=state["x"],
                awaiting=[(key, append, pk) for key, append, pk in state["w"]],
                outputs=dict(state["o"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"corrupt checkpoint: {exc!r}") from exc


class CheckpointHead(NamedTuple):
    """What kind of process a checkpoint belongs to, and its class path."""

    #: ``"workchain"`` or ``"calcjob"``
    kind: str
    class_path: str


def peek(blob: bytes) -> CheckpointHead:
    """The kind and class of a checkpoint, without resolving any node; a blob that names no
    process class raises :class:`~miniengine.exceptions.CheckpointError`."""
    state = codec.decode(blob)
    if not isinstance(state, dict) or "p" not in state:
        raise CheckpointError("corrupt checkpoint: it names no process class")
    return CheckpointHead(str(state.get("k", "workchain")), str(state["p"]))


def with_refs(value: Any, pks: dict[int, int]) -> Any:
    """``value`` with the Data just stored replaced by references to their pks (``pks`` maps
    ``id(data)`` to its new pk), for a checkpoint written in the transaction that stored them."""
    if isinstance(value, Data):
        pk = pks.get(id(value))
        return codec.NodeRef(pk) if pk is not None else value
    if isinstance(value, dict):
        return {key: with_refs(item, pks) for key, item in value.items()}
    return value
