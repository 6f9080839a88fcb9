"""The checkpoints concern on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.storage.checkpoint_rows import fingerprint
from miniengine.storage.postgres import checkpoint_rows
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.core.data import Data
    from miniengine.storage.interfaces.checkpoints import StoredCheckpoint
    from miniengine.storage.interfaces.provenance import NodeRow
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresCheckpoints"]


class PostgresCheckpoints:
    """:class:`~miniengine.storage.interfaces.checkpoints.Checkpoints` on PostgreSQL.

    The writes are the ``*_tx`` functions of :mod:`miniengine.storage.postgres.checkpoint_rows`
    bound to the store once, so a step commit costs no more than calling the function itself.
    """

    __slots__ = (
        "_store",
        "claim_process",
        "claim_task_process",
        "claim_work",
        "create_workchain",
        "end_calls_not_replayed",
        "except_unless_owned",
        "kill_unstarted",
        "release_process",
        "step_commit",
        "take_pause_request",
        "write_checkpoint",
    )

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.step_commit = PostgresTransaction(store, checkpoint_rows.step_commit_tx)
        self.write_checkpoint = PostgresTransaction(store, checkpoint_rows.write_checkpoint)
        self.claim_process = PostgresTransaction(store, checkpoint_rows.claim_process_tx)
        self.claim_task_process = PostgresTransaction(store, checkpoint_rows.claim_task_process_tx)
        self.claim_work = PostgresTransaction(store, checkpoint_rows.claim_work_tx)
        self.release_process = PostgresTransaction(store, checkpoint_rows.release_process_tx)
        self.take_pause_request = PostgresTransaction(store, checkpoint_rows.take_pause_request_tx)
        self.kill_unstarted = PostgresTransaction(store, checkpoint_rows.kill_unstarted_tx)
        self.except_unless_owned = PostgresTransaction(
            store, checkpoint_rows.except_unless_owned_tx
        )
        self.end_calls_not_replayed = PostgresTransaction(
            store, checkpoint_rows.end_calls_not_replayed_tx
        )
        self.create_workchain = PostgresTransaction(store, checkpoint_rows.create_workchain_tx)

    def read_checkpoint(self, pk: int) -> StoredCheckpoint | None:
        return self._store.read(checkpoint_rows.read_checkpoint, pk)

    def read_process(self, pk: int) -> tuple[NodeRow, StoredCheckpoint | None]:
        return self._store.read(checkpoint_rows.read_process, pk)

    def read_processes(
        self, pks: Sequence[int]
    ) -> dict[int, tuple[NodeRow, StoredCheckpoint | None]]:
        return self._store.read(checkpoint_rows.read_processes, pks)

    def fingerprint(self, process_type: str, inputs: Sequence[tuple[str, Data]]) -> str:
        return fingerprint(process_type, inputs)
