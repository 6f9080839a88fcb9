"""The calcjobs concern on PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from miniengine.storage.interfaces.calcjobs import CalcJobInfo, CleanableCalcJob, JobRow
from miniengine.storage.postgres import calcjob_rows
from miniengine.storage.postgres.read import PostgresRead
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresCalcJobs"]


class PostgresCalcJobs:
    """:class:`miniengine.storage.interfaces.calcjobs.CalcJobs` on a :class:`PostgresStore`."""

    __slots__ = (
        "_store",
        "calcjob_commit",
        "claim_jobs",
        "create_calcjob",
        "drop_job",
        "finish_calcjob",
        "has_unwatched_jobs",
        "job_done",
        "job_states",
        "pause_stage",
        "pause_watched",
        "read_watched_jobs",
        "release_jobs",
        "stage_status",
    )

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.create_calcjob = PostgresTransaction(store, calcjob_rows.create_calcjob_tx)
        self.calcjob_commit = PostgresTransaction(store, calcjob_rows.calcjob_commit_tx)
        self.stage_status = PostgresTransaction(store, calcjob_rows.stage_status_tx)
        self.pause_stage = PostgresTransaction(store, calcjob_rows.pause_stage_tx)
        self.finish_calcjob = PostgresTransaction(store, calcjob_rows.finish_calcjob_tx)
        self.claim_jobs = PostgresTransaction(store, calcjob_rows.claim_jobs_tx)
        self.job_states = PostgresTransaction(store, calcjob_rows.job_states_tx)
        self.job_done = PostgresTransaction(store, calcjob_rows.job_done_tx)
        self.pause_watched = PostgresTransaction(store, calcjob_rows.pause_watched_tx)
        self.drop_job = PostgresTransaction(store, calcjob_rows.drop_job_tx)
        self.release_jobs = PostgresTransaction(store, calcjob_rows.release_jobs_tx)
        self.has_unwatched_jobs = PostgresRead(store, calcjob_rows.has_unwatched_jobs)
        self.read_watched_jobs = PostgresRead(store, calcjob_rows.read_watched_jobs)

    def read_job(self, pk: int) -> JobRow | None:
        return self._store.read(calcjob_rows.read_job, pk)

    @contextlib.contextmanager
    def renewing_jobs(self, owner: str) -> Iterator[None]:
        def renew(connection: psycopg.Connection[Any], expires: float) -> None:
            calcjob_rows.renew_jobs(connection, owner, expires)

        hooks = self._store.heartbeat_hooks
        hooks.append(renew)
        try:
            yield
        finally:
            if renew in hooks:
                hooks.remove(renew)

    def calcjob_info(self, pk: int) -> CalcJobInfo | None:
        return self._store.read(calcjob_rows.calcjob_info, pk)

    def output_tree(self, pk: int, label: str) -> dict[str, Any] | None:
        return self._store.read(calcjob_rows.output_tree, pk, label)

    def active_stages(self, pks: Sequence[int]) -> dict[int, str]:
        return self._store.read(calcjob_rows.active_stages, pks)

    def cleanable_calcjobs(
        self,
        pks: Sequence[int] | None,
        newer_than: float | None,
        older_than: float | None,
        computers: Sequence[str] | None,
    ) -> list[CleanableCalcJob]:
        return self._store.read(
            calcjob_rows.cleanable_calcjobs, pks, newer_than, older_than, computers
        )
