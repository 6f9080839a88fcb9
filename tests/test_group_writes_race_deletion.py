"""On PostgreSQL, adding a node to a group or a comment to it while another connection deletes
the node: the node is checked and then written to in one transaction, and a deletion committed
in between made the write fail on the foreign key with a bare ``StoreError``.  The check now
locks the node (``FOR KEY SHARE``), so the deletion waits for the write and then takes the
membership and the comment with the node; nothing fails and nothing dangles."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from miniengine import Group, Int
from miniengine.tools import delete_nodes

pytestmark = pytest.mark.backends


class _DeleteAfterCheck:
    """A connection that, right after the statement that checks the node, lets another
    connection delete it, and gives that deletion a second to commit before going on."""

    def __init__(self, connection: Any, db: str, pk: int) -> None:
        self._connection, self._db, self._pk = connection, db, pk
        self.deletion_waited: bool | None = None
        self.deletion: threading.Thread | None = None

    def execute(self, sql: str, *args: Any) -> Any:
        result = self._connection.execute(sql, *args)
        if self.deletion_waited is None and sql.startswith("SELECT") and "FROM nodes" in sql:
            result = _Rows(result.fetchall())
            done = threading.Event()

            def delete() -> None:
                delete_nodes([self._pk], dry_run=False, backend=self._db)
                done.set()

            self.deletion = threading.Thread(target=delete, daemon=True)
            self.deletion.start()
            self.deletion_waited = not done.wait(1.0)  # it must wait for this transaction
        return result


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Any:
        return iter(self._rows)


@pytest.mark.parametrize("write", ["group", "comment"])
def test_a_deletion_between_the_check_and_the_write_waits(backend_db: Any, write: str) -> None:
    if not isinstance(backend_db, str):
        pytest.skip("sqlite has one writer at a time: a deletion cannot come in between")
    import psycopg

    from miniengine.storage.postgres import group_rows

    node = Int(1).store()
    group = Group(label="members").store()
    assert node.pk is not None and group.pk is not None
    calls: dict[str, Callable[[Any], Any]] = {
        "group": lambda c: group_rows.add_group_nodes_tx(c, group.pk, [node.pk]),
        "comment": lambda c: group_rows.add_comment_tx(c, node.pk, "a note"),
    }
    with psycopg.connect(backend_db) as connection:
        racing = _DeleteAfterCheck(connection, backend_db, node.pk)
        calls[write](racing)  # before the fix: ForeignKeyViolation here
        connection.commit()
    assert racing.deletion is not None
    racing.deletion.join(timeout=60)  # the deletion goes on once the write is committed
    assert racing.deletion_waited is True and not racing.deletion.is_alive()
    with psycopg.connect(backend_db) as check:
        for table, column in (("group_nodes", "node_pk"), ("comments", "node_pk")):
            left = check.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (node.pk,))
            assert left.fetchone() == (0,)
    assert group.count() == 0
