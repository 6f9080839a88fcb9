"""The broker concern on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from miniengine.storage.interfaces.broker import QueueDepth, WorkerRow
from miniengine.storage.postgres import broker_rows, repair_rows
from miniengine.storage.postgres.read import PostgresRead
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresBroker"]


class PostgresBroker:
    """:class:`miniengine.storage.interfaces.broker.Broker` on a :class:`PostgresStore`."""

    __slots__ = (
        "_store",
        "ack",
        "claim_tasks",
        "enqueue",
        "forget_worker",
        "give_back",
        "give_up",
        "has_ready_task",
        "notify_parents",
        "recover_expired",
        "register_worker",
        "release_owner",
        "repair",
        "runs_alone",
        "terminate_unowned",
        "wait_for_children",
    )

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.enqueue = PostgresTransaction(store, broker_rows.enqueue)
        self.ack = PostgresTransaction(store, broker_rows.ack_task)
        self.claim_tasks = PostgresTransaction(store, broker_rows.claim_tasks_tx)
        self.give_up = PostgresTransaction(store, broker_rows.give_up_tx)
        self.give_back = PostgresTransaction(store, broker_rows.give_back_tx)
        self.wait_for_children = PostgresTransaction(store, broker_rows.wait_for_children)
        self.notify_parents = PostgresTransaction(store, broker_rows.notify_parents)
        self.terminate_unowned = PostgresTransaction(store, broker_rows.terminate_unowned)
        self.release_owner = PostgresTransaction(store, broker_rows.release_owner_tx)
        self.forget_worker = PostgresTransaction(store, broker_rows.forget_worker_tx)
        self.recover_expired = PostgresTransaction(store, broker_rows.recover_expired_tx)
        self.repair = PostgresTransaction(store, repair_rows.repair_tx)
        self.register_worker = PostgresTransaction(store, broker_rows.register_worker_tx)
        self.has_ready_task = PostgresRead(store, broker_rows.has_ready_task)
        self.runs_alone = PostgresRead(store, broker_rows.runs_alone)

    def renew_on_heartbeat(self, worker: str, busy: Callable[[], int]) -> None:
        def renew(connection: psycopg.Connection[Any], expires: float) -> None:
            broker_rows.renew_worker(connection, worker, busy(), expires, time.time())

        self._store.heartbeat_hooks.append(renew)

    def worker_heartbeats(self) -> dict[str, float]:
        return self._store.read(broker_rows.worker_heartbeats)

    def workers(self) -> list[WorkerRow]:
        return self._store.read(broker_rows.read_workers)

    def queue_depth(self) -> QueueDepth:
        depth = self._store.read(broker_rows.queue_depth)
        return QueueDepth(depth["ready"], depth["leased"])
