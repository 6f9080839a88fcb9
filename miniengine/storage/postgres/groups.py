"""The groups concern (extras, comments, groups) on PostgreSQL: the statements of
:mod:`miniengine.storage.postgres.group_rows` bound to a store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from miniengine.storage.interfaces.groups import CommentRow, GroupRow
from miniengine.storage.postgres import group_rows
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresGroups"]


class PostgresGroups:
    """:class:`miniengine.storage.interfaces.groups.Groups` on a :class:`PostgresStore`."""

    __slots__ = (
        "_store",
        "add_comment",
        "add_group_nodes",
        "create_group",
        "delete_extras",
        "delete_group",
        "delete_group_extras",
        "remove_comment",
        "remove_group_nodes",
        "reset_extras",
        "reset_group_extras",
        "set_extras",
        "set_group_extras",
        "update_comment",
        "update_group",
    )

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.set_extras = PostgresTransaction(store, group_rows.set_extras_tx)
        self.reset_extras = PostgresTransaction(store, group_rows.reset_extras_tx)
        self.delete_extras = PostgresTransaction(store, group_rows.delete_extras_tx)
        self.set_group_extras = PostgresTransaction(store, group_rows.set_group_extras_tx)
        self.reset_group_extras = PostgresTransaction(store, group_rows.reset_group_extras_tx)
        self.delete_group_extras = PostgresTransaction(store, group_rows.delete_group_extras_tx)
        self.add_comment = PostgresTransaction(store, group_rows.add_comment_tx)
        self.update_comment = PostgresTransaction(store, group_rows.update_comment_tx)
        self.remove_comment = PostgresTransaction(store, group_rows.remove_comment_tx)
        self.create_group = PostgresTransaction(store, group_rows.create_group_tx)
        self.update_group = PostgresTransaction(store, group_rows.update_group_tx)
        self.add_group_nodes = PostgresTransaction(store, group_rows.add_group_nodes_tx)
        self.remove_group_nodes = PostgresTransaction(store, group_rows.remove_group_nodes_tx)
        self.delete_group = PostgresTransaction(store, group_rows.delete_group_tx)

    def extras(self, pk: int) -> dict[str, Any]:
        return self._store.read(group_rows.read_extras, pk)

    def group_extras(self, pk: int) -> dict[str, Any]:
        return self._store.read(group_rows.read_group_extras, pk)

    def comments(self, node_pk: int) -> list[CommentRow]:
        return self._store.read(group_rows.read_comments, node_pk)

    def find_groups(
        self,
        *,
        pk: int | None = None,
        uuid: str | None = None,
        label: str | None = None,
        type_string: str | None = None,
    ) -> list[GroupRow]:
        return self._store.read(group_rows.find_groups, pk, uuid, label, type_string)

    def node_groups(self, node_pk: int) -> list[GroupRow]:
        return self._store.read(group_rows.node_groups, node_pk)

    def group_node_pks(self, group_pk: int) -> list[int]:
        return self._store.read(group_rows.group_node_pks, group_pk)

    def group_count(self, group_pk: int) -> int:
        return self._store.read(group_rows.group_count, group_pk)

    def group_counts(self) -> dict[int, int]:
        return self._store.read(group_rows.group_counts)
