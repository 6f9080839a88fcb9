"""``node.base.extras`` and ``node.base.comments``: what users add to a node, as in AiiDA.

Extras are mutable key-value pairs on any node, stored or not: JSON values (numbers, strings,
booleans, ``None``, lists and dicts of them), kept as JSON in the database so that queries can
filter on them.  On an unstored node they are kept in memory and written when ``store()``
stores it.  Comments are notes on a stored node, each with its own pk and times.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from miniengine.core.data import check_field_text, check_text
from miniengine.exceptions import NotExistent, ValidationError
from miniengine.storage.open import reopened

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.groups import CommentRow

__all__ = [
    "Comment",
    "NodeComments",
    "NodeExtras",
    "check_extras",
    "flush_pending_extras",
    "sorted_keys",
]

_NO_DEFAULT: Any = object()

#: The attribute of an unstored node object that holds the extras set before it was stored.
PENDING = "_pending_extras"


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds the character NUL (in a string or a key)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def check_extras(extras: Mapping[str, Any]) -> None:
    """Refuse a key that is not a non-empty string without ``.`` (AiiDA's rule) and a value
    that JSON cannot hold, naming the key."""
    # imported here: every launch imports this module, few set extras (json loads on first use)
    from miniengine.storage.interfaces.groups import dump_extras

    for key, value in extras.items():
        if not isinstance(key, str) or not key or "." in key:
            raise ValidationError(
                f"invalid extra key {key!r}: keys are non-empty strings without '.'"
            )
        try:
            check_text(dump_extras({key: value}), f"the extra {key!r}")
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"the value of the extra {key!r} is not JSON-serialisable ({exc}): extras hold "
                "numbers, strings, booleans, None, and lists and dicts of them"
            ) from exc
        if _has_nul(key) or _has_nul(value):
            raise ValidationError(
                f"the extra {key!r} holds the character NUL, which PostgreSQL's "
                "jsonb cannot store (on any backend, so that databases can be copied)"
            )


def flush_pending_extras(owner: object, store: Backend, pk: int, group: bool = False) -> None:
    """Write the extras set on ``owner`` (a node, or a ``group``) before it was stored (one
    transaction, only if any)."""
    pending: dict[str, Any] | None = getattr(owner, PENDING, None)
    if pending is None:
        return
    (store.groups.set_group_extras if group else store.groups.set_extras)(pk, pending)
    delattr(owner, PENDING)


def sorted_keys(value: Any) -> Any:
    """``value`` with the keys of its dicts in sorted order, at every depth: PostgreSQL's jsonb
    keeps keys in its own order (shorter first), sqlite in the order they were set, so extras
    read the same on both only when one order is imposed."""
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


class NodeExtras:
    """``node.base.extras`` (and ``group.base.extras``): AiiDA's methods on extras.

    Each call reads or writes the database (one statement or one transaction), so two
    programs that change a node's extras see each other's changes.
    """

    def __init__(
        self, store: Backend | None, pk: int | None, owner: object, group: bool = False
    ) -> None:
        # a node outlives the store it was loaded from (``close_all_stores``): open it again
        self._store = reopened(store) if store is not None and store.closed else store
        self._pk = pk
        self._owner = owner
        self._group = group

    def _memory(self) -> dict[str, Any]:
        pending: dict[str, Any] | None = getattr(self._owner, PENDING, None)
        if pending is None:
            pending = {}
            setattr(self._owner, PENDING, pending)
        return pending

    def _read(self) -> dict[str, Any]:
        if self._store is None or self._pk is None:
            found = dict(self._memory())
        else:
            self._flush(self._store, self._pk)
            groups = self._store.groups
            found = groups.group_extras(self._pk) if self._group else groups.extras(self._pk)
        return {key: sorted_keys(found[key]) for key in sorted(found)}

    def _flush(self, store: Backend, pk: int) -> None:
        flush_pending_extras(self._owner, store, pk, self._group)

    def _set(self, extras: Mapping[str, Any], reset: bool = False) -> None:
        check_extras(extras)
        if self._store is None or self._pk is None:
            memory = self._memory()
            if reset:
                memory.clear()
            memory.update(extras)
            return
        self._flush(self._store, self._pk)
        groups = self._store.groups
        if reset:
            (groups.reset_group_extras if self._group else groups.reset_extras)(
                self._pk, dict(extras)
            )
        else:
            (groups.set_group_extras if self._group else groups.set_extras)(self._pk, dict(extras))

    @property
    def all(self) -> dict[str, Any]:
        """Every extra, as a new dictionary."""
        return self._read()

    def get(self, key: str, default: Any = _NO_DEFAULT) -> Any:
        """The extra ``key``; else ``default``, or ``AttributeError`` naming it, as in AiiDA."""
        extras = self._read()
        if key in extras:
            return extras[key]
        if default is _NO_DEFAULT:
            raise AttributeError(f"the node has no extra {key!r}")
        return default

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The extras ``keys``, in order (``AttributeError`` naming those not set)."""
        extras = self._read()
        missing = [key for key in keys if key not in extras]
        if missing:
            raise AttributeError(f"the node has no extra(s) {', '.join(map(repr, missing))}")
        return [extras[key] for key in keys]

    def set(self, key: str, value: Any) -> None:
        """Set the extra ``key`` to ``value`` (a JSON value)."""
        self._set({key: value})

    def set_many(self, values: Mapping[str, Any]) -> None:
        """Set several extras at once (one transaction), keeping the others."""
        self._set(values)

    def reset(self, values: Mapping[str, Any]) -> None:
        """Replace all extras by ``values`` (one transaction)."""
        self._set(values, reset=True)

    def delete(self, key: str) -> None:
        """Delete the extra ``key`` (``AttributeError`` naming it if it is not set)."""
        self.delete_many([key])

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete the extras ``keys``; if any is not set, none is deleted and
        ``AttributeError`` names those."""
        keys = list(keys)
        if self._store is None or self._pk is None:
            memory = self._memory()
            missing = [key for key in keys if key not in memory]
            if not missing:
                for key in keys:
                    del memory[key]
        else:
            self._flush(self._store, self._pk)
            groups = self._store.groups
            delete = groups.delete_group_extras if self._group else groups.delete_extras
            missing = delete(self._pk, keys)
        if missing:
            raise AttributeError(
                f"cannot delete the extra(s) {', '.join(map(repr, missing))}: not set on the "
                + ("group" if self._group else "node")
            )

    def clear(self) -> None:
        """Delete every extra."""
        self.reset({})

    def keys(self) -> Iterator[str]:
        return iter(self._read())

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._read().items())

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return f"NodeExtras({self._read()!r})"


def _datetime(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


@dataclass(frozen=True)
class Comment:
    """A comment on a node, as AiiDA's ``Comment``: ``pk``, ``uuid``, ``ctime``, ``mtime``,
    ``content`` and the node's pk (``node_pk``)."""

    pk: int
    uuid: str
    node_pk: int
    ctime: datetime.datetime
    mtime: datetime.datetime
    content: str

    @classmethod
    def from_row(cls, row: CommentRow) -> Comment:
        return cls(
            row.pk, row.uuid, row.node_pk, _datetime(row.ctime), _datetime(row.mtime), row.content
        )

    @property
    def id(self) -> int:
        return self.pk


class NodeComments:
    """``node.base.comments``: add, list, update and remove the comments on a stored node."""

    def __init__(self, store: Backend | None, pk: int | None) -> None:
        self._store = reopened(store) if store is not None and store.closed else store
        self._pk = pk

    def _stored(self) -> tuple[Backend, int]:
        if self._store is None or self._pk is None:
            raise NotExistent("an unstored node has no comments: store it first")
        return self._store, self._pk

    def add(self, content: str) -> Comment:
        """Add a comment and return it."""
        if not isinstance(content, str):
            raise TypeError(f"a comment's content is a str, not {type(content).__name__}")
        check_field_text(content, "a comment")
        store, pk = self._stored()
        return Comment.from_row(store.groups.add_comment(pk, content))

    def all(self) -> list[Comment]:
        """The comments on the node, oldest first."""
        store, pk = self._stored()
        return [Comment.from_row(row) for row in store.groups.comments(pk)]

    def get(self, identifier: int) -> Comment:
        """The comment ``identifier`` (its pk) on this node (``NotExistent`` if none)."""
        for comment in self.all():
            if comment.pk == identifier:
                return comment
        raise NotExistent(f"the node has no comment with the pk {identifier}")

    def update(self, identifier: int, content: str) -> None:
        """Replace the content of comment ``identifier`` (its pk)."""
        if not isinstance(content, str):
            raise TypeError(f"a comment's content is a str, not {type(content).__name__}")
        check_field_text(content, "a comment")
        store, _ = self._stored()
        self.get(identifier)  # a comment of another node is not this node's to change
        if not store.groups.update_comment(identifier, content):
            raise NotExistent(f"no comment with the pk {identifier}")

    def remove(self, identifier: int) -> None:
        """Delete comment ``identifier`` (its pk)."""
        store, _ = self._stored()
        self.get(identifier)
        if not store.groups.remove_comment(identifier):
            raise NotExistent(f"no comment with the pk {identifier}")
