"""The sqlite store's WAL checkpoints run one at a time.

A checkpoint runs in a thread of its own on the store's one checkpointer connection.  If a second
were started while the first still waited (for this store's write lock, or for the file), both
threads would use that connection at once: under a tracer or any Python callback inside sqlite
that deadlocked a daemon worker until its supervisor killed it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from miniengine import Int
from miniengine.storage.store import Store


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "miniengine-checkpoint" and t.is_alive()]


def _ask_for_a_quiet_checkpoint(store: Store) -> None:
    """What a commit does when the store has been quiet for a while."""
    store._last_checkpoint = time.monotonic() - 60
    store._after_commit()


def test_a_checkpoint_waiting_for_the_write_lock_is_not_joined_by_another(tmp_path: Path) -> None:
    store = Store(tmp_path / "engine.sqlite")
    try:
        store.provenance.store_data(Int(1))  # something in the WAL for the checkpoint to copy
        started: list[bool] = []
        checkpoint = store._checkpoint

        def counted(quiet: bool = False) -> None:
            started.append(quiet)
            checkpoint(quiet)

        store._checkpoint = counted  # type: ignore[method-assign]
        with store._write_lock:  # a transaction of this store is under way
            _ask_for_a_quiet_checkpoint(store)
            # the checkpoint copies what it can, then waits for the write lock to empty the WAL
            deadline = time.monotonic() + 30
            while store._writers_may_go.is_set():
                assert time.monotonic() < deadline, "the checkpoint never asked for the lock"
                time.sleep(0.001)
            _ask_for_a_quiet_checkpoint(store)
            _ask_for_a_quiet_checkpoint(store)
            assert len(started) == 1
            assert len(_checkpoint_threads()) == 1
        for thread in _checkpoint_threads():
            thread.join(30)
        assert store._writers_may_go.is_set()
        # once it ended, the next one may start
        _ask_for_a_quiet_checkpoint(store)
        assert len(started) == 2
    finally:
        store.close()
    assert not _checkpoint_threads()
