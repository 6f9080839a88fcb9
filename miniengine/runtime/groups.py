"""Groups of nodes, as AiiDA's ``Group``: named sets that organise results after the fact.

A group has a label, a description and a type: the ``type_string`` of its class (``'core'`` for
:class:`Group`; a subclass names its own with the ``type_string=`` class keyword, by default its
module and qualified name), which plays the part of AiiDA's entry points: loading a group gives
an instance of the class registered for its type (a plain :class:`Group` when that class is not
imported).  A label and a type name one group.  A node may be in many groups; deleting a group
keeps its nodes.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Self

from miniengine.core.data import check_field_text
from miniengine.exceptions import (
    MiniengineError,
    ModificationNotAllowed,
    MultipleObjectsError,
    NotExistent,
    ValidationError,
)
from miniengine.runtime.extras import NodeExtras, flush_pending_extras
from miniengine.storage.interfaces.groups import GroupRow
from miniengine.storage.open import reopened

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["GROUP_TYPES", "Group", "load_group"]

#: The group classes by type string.
GROUP_TYPES: dict[str, type[Group]] = {}


def _store_for(db: Backend | str | os.PathLike[str] | None) -> Backend:
    from miniengine.runtime.context import current_store, store_for

    return store_for(db) if db is not None else current_store()


class GroupNodeTypeError(MiniengineError, TypeError):
    """Something that is not a node was given to ``add_nodes``/``remove_nodes`` (as AiiDA, a
    ``TypeError``): a group, a pk or a string would otherwise name whatever node has its pk."""


def _node_pks(nodes: Any, store: Backend | None = None) -> list[int]:
    """The pks of a node or of several, each checked before the group changes: a node object
    (``load_node(pk)`` for a pk), stored, and stored in ``store`` (a node of another database
    has a pk that names another node here)."""
    from miniengine.runtime.nodes import Node

    single = isinstance(nodes, (Node, Group, str, bytes)) or not isinstance(nodes, Iterable)
    items = [nodes] if single else list(nodes)
    pks: list[int] = []
    for node in items:
        if not isinstance(node, Node):
            hint = " (load_node(pk) gives the node of a pk)" if isinstance(node, int) else ""
            raise GroupNodeTypeError(
                f"only nodes can be put in or taken out of a group, not {node!r}{hint}"
            )
        pk: int | None = getattr(node, "pk", None)  # Data and ProcessNode both have one
        if pk is None:
            raise ValidationError(
                f"only stored nodes can be put in or taken out of a group: {node!r} is not stored"
            )
        other = getattr(node, "_store", None)
        if (
            store is not None
            and other is not None
            and other is not store
            and other.location != store.location
        ):
            raise ValidationError(
                f"{node!r} is stored in another database ({other.location}), not in the "
                f"group's ({store.location}): its pk names another node there"
            )
        pks.append(pk)
    return pks


class GroupCollection:
    """``Group.collection`` (and ``MyGroup.collection``): the groups of one class in the
    default database, or in ``db`` when called: ``Group.collection(db).all()``.

    On :class:`Group` it holds every group; on a subclass, the groups of that class and of its
    subclasses.
    """

    def __init__(
        self, cls: type[Group] | None = None, db: Backend | str | os.PathLike[str] | None = None
    ) -> None:
        self._cls = cls
        self._db = db

    def __get__(self, instance: object, owner: type[Group]) -> GroupCollection:
        return GroupCollection(owner, self._db)

    def __call__(self, db: Backend | str | os.PathLike[str] | None = None) -> GroupCollection:
        return GroupCollection(self._cls, db)

    @property
    def _group_class(self) -> type[Group]:
        assert self._cls is not None
        return self._cls

    def _rows(self, store: Backend, **filters: Any) -> list[GroupRow]:
        """The rows matching ``filters`` (those not ``None``) whose class is this one's."""
        cls = self._group_class
        given = {key: value for key, value in filters.items() if value is not None}
        rows = store.groups.find_groups(**given)
        if cls is Group:
            return rows
        return [row for row in rows if issubclass(GROUP_TYPES.get(row.type_string, Group), cls)]

    def all(self) -> list[Group]:
        """Every group of this class, by pk."""
        store = _store_for(self._db)
        return [Group._from_row(row, store) for row in self._rows(store)]

    def get(
        self, *, label: str | None = None, pk: int | None = None, uuid: str | None = None
    ) -> Group:
        """The group of this class with this label, pk or uuid (exactly one of them)."""
        if [label, pk, uuid].count(None) != 2:
            raise ValueError("Group.collection.get() takes exactly one of label=, pk=, uuid=")
        store = _store_for(self._db)
        rows = self._rows(store, label=label, pk=pk, uuid=uuid)
        if not rows:
            given = f"label {label!r}" if label is not None else (f"pk {pk}" if pk else uuid)
            raise NotExistent(f"no {self._group_class.__name__} with the {given}")
        if len(rows) > 1:
            raise MultipleObjectsError(
                f"{len(rows)} groups match: pks {', '.join(str(row.pk) for row in rows)}"
            )
        return Group._from_row(rows[0], store)

    def get_or_create(self, label: str, description: str = "") -> tuple[Group, bool]:
        """``(group, created)``: the group of this class labelled ``label``, created if missing
        (in one transaction, so two programs asking at once get the same group)."""
        cls = self._group_class
        store = _store_for(self._db)
        row, created = store.groups.create_group(label, cls.type_string, description, True)
        return Group._from_row(row, store), created

    def delete(self, pk: int) -> None:
        """Delete group ``pk``; its nodes are kept (``NotExistent`` if there is no such group)."""
        if not _store_for(self._db).groups.delete_group(pk):
            raise NotExistent(f"no group with the pk {pk}")

    def __iter__(self) -> Iterator[Group]:
        return iter(self.all())

    def count(self) -> int:
        return len(self.all())


class Group:
    """A named set of nodes, as AiiDA's ``Group``: ``Group(label='runs').store()``,
    ``group.add_nodes(node)``, ``list(group.nodes)``, ``load_group('runs')``."""

    type_string: ClassVar[str] = "core"
    collection: ClassVar[GroupCollection] = GroupCollection()

    def __init_subclass__(cls, type_string: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_string = type_string or f"{cls.__module__}.{cls.__qualname__}"
        GROUP_TYPES[cls.type_string] = cls

    def __init__(self, label: str, description: str = "") -> None:
        if not isinstance(label, str) or not label.strip():
            raise ValidationError(f"a group needs a non-empty label, not {label!r}")
        check_field_text(label, "a group's label")
        check_field_text(description, "a group's description")
        self._label = label
        self._description = description
        self._row: GroupRow | None = None
        self._store_ref: Backend | None = None

    @classmethod
    def _from_row(cls, row: GroupRow, store: Backend) -> Group:
        kind = GROUP_TYPES.get(row.type_string, Group)
        group = kind.__new__(kind)
        if kind.type_string != row.type_string:  # a type whose class is not imported
            group.__dict__["type_string"] = row.type_string
        group._label = row.label
        group._description = row.description
        group._row = row
        group._store_ref = store
        return group

    # identity --------------------------------------------------------------------------------

    def _stored(self) -> tuple[Backend, int]:
        if self._row is None or self._store_ref is None:
            raise ModificationNotAllowed(
                f"the group {self._label!r} is not stored: call store() first"
            )
        store = self._store_ref
        if store.closed:
            store = self._store_ref = reopened(store)
        return store, self._row.pk

    @property
    def pk(self) -> int | None:
        return None if self._row is None else self._row.pk

    @property
    def id(self) -> int | None:
        return self.pk

    @property
    def uuid(self) -> str | None:
        return None if self._row is None else self._row.uuid

    @property
    def ctime(self) -> datetime.datetime | None:
        if self._row is None:
            return None
        return datetime.datetime.fromtimestamp(self._row.ctime, tz=datetime.UTC)

    @property
    def is_stored(self) -> bool:
        return self._row is not None

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"a group needs a non-empty label, not {value!r}")
        check_field_text(value, "a group's label")
        if self._row is not None:
            store, pk = self._stored()
            store.groups.update_group(pk, value, self._description)
        self._label = value

    @property
    def description(self) -> str:
        return self._description

    @description.setter
    def description(self, value: str) -> None:
        check_field_text(value, "a group's description")
        if self._row is not None:
            store, pk = self._stored()
            store.groups.update_group(pk, self._label, value)
        self._description = value

    def store(self, db: Backend | str | os.PathLike[str] | None = None) -> Self:
        """Store the group (once) in the default database, or ``db``; a label taken by a
        group of the same type is refused, naming it."""
        if self._row is None:
            store = _store_for(db)
            row, _ = store.groups.create_group(
                self._label, self.type_string, self._description, False
            )
            self._row, self._store_ref = row, store
            flush_pending_extras(self, store, row.pk, group=True)  # set before storing, if any
        return self

    @property
    def base(self) -> GroupBase:
        """``group.base.extras``, as in AiiDA (on an unstored group too)."""
        return GroupBase(self)

    # members ---------------------------------------------------------------------------------

    def add_nodes(self, nodes: Any) -> None:
        """Add a stored node, or several; a node already in the group stays once."""
        store, pk = self._stored()
        store.groups.add_group_nodes(pk, _node_pks(nodes, store))

    def remove_nodes(self, nodes: Any) -> None:
        """Take a node, or several, out of the group (the nodes themselves are kept)."""
        store, pk = self._stored()
        store.groups.remove_group_nodes(pk, _node_pks(nodes, store))

    def clear(self) -> None:
        """Take every node out of the group."""
        store, pk = self._stored()
        store.groups.remove_group_nodes(pk, store.groups.group_node_pks(pk))

    @property
    def nodes(self) -> list[Any]:
        """The nodes of the group, by pk."""
        from miniengine.runtime.nodes import load_nodes

        store, pk = self._stored()
        pks = store.groups.group_node_pks(pk)
        loaded = load_nodes(store, pks)
        return [loaded[node_pk] for node_pk in pks if node_pk in loaded]

    def count(self) -> int:
        """How many nodes the group holds."""
        store, pk = self._stored()
        return store.groups.group_count(pk)

    @property
    def is_empty(self) -> bool:
        return self.count() == 0

    def __len__(self) -> int:
        return self.count()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Group) or self._row is None or other._row is None:
            return self is other
        return self._row.uuid == other._row.uuid

    def __hash__(self) -> int:
        return hash(self._row.uuid) if self._row is not None else id(self)

    def __repr__(self) -> str:
        where = f"<{self._row.pk}>" if self._row is not None else " (unstored)"
        return f"{type(self).__name__}{where} {self._label!r} [type {self.type_string!r}]"


GROUP_TYPES[Group.type_string] = Group


class GroupBase:
    """``group.base``: the namespace of AiiDA's less common group methods."""

    def __init__(self, group: Group) -> None:
        self._group = group

    @property
    def extras(self) -> NodeExtras:
        group = self._group
        if group._row is None:
            return NodeExtras(None, None, group, group=True)
        store, pk = group._stored()
        return NodeExtras(store, pk, group, group=True)


def _encodable(value: object) -> bool:
    if not isinstance(value, str) or value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_group(
    identifier: int | str | None = None,
    *,
    pk: int | None = None,
    uuid: str | None = None,
    label: str | None = None,
    sub_classes: tuple[type[Group], ...] | None = None,
    db: Backend | str | os.PathLike[str] | None = None,
) -> Group:
    """Load a group, as AiiDA's ``load_group``: by ``identifier`` (a pk, a label, or a uuid or
    unique prefix of one), or by ``pk=``, ``uuid=`` or ``label=``.

    A string of digits is a pk when a group has it, else a label; another string is a label
    when a group has it, else a uuid prefix.  Raises ``NotExistent`` when nothing matches and
    ``MultipleObjectsError`` when several groups do (one label on groups of several types);
    ``sub_classes`` (as in AiiDA) keeps only the groups of those classes and their subclasses.
    """
    given = [value is not None for value in (identifier, pk, uuid, label)].count(True)
    if given != 1:
        raise ValueError("load_group() needs exactly one of identifier, pk=, uuid= and label=")
    store = _store_for(db)
    lookups: list[dict[str, Any]]
    if pk is not None:
        lookups = [{"pk": pk}]
    elif uuid is not None:
        lookups = [{"uuid": uuid}]
    elif label is not None:
        lookups = [{"label": label}]
    elif isinstance(identifier, int) and not isinstance(identifier, bool):
        lookups = [{"pk": identifier}]
    elif isinstance(identifier, str):
        text = identifier.strip()
        lookups = [{"label": identifier}, {"uuid": text}]
        if text.isdecimal():
            lookups.insert(0, {"pk": int(text)})
    else:
        raise TypeError(f"load_group needs a pk (int) or a label or uuid (str), not {identifier!r}")
    if any(not _encodable(value) for lookup in lookups for value in lookup.values()):
        lookups = []  # a lone surrogate names nothing (and no database could take it)
    for lookup in lookups:
        rows = store.groups.find_groups(**lookup)
        if sub_classes is not None:
            rows = [
                row
                for row in rows
                if issubclass(GROUP_TYPES.get(row.type_string, Group), sub_classes)
            ]
        if len(rows) > 1:
            raise MultipleObjectsError(
                f"{len(rows)} groups match {next(iter(lookup.values()))!r}: "
                f"{', '.join(f'pk {row.pk} (type {row.type_string})' for row in rows)}; "
                "name one by its pk"
            )
        if rows:
            return Group._from_row(rows[0], store)
    shown = identifier if identifier is not None else (pk or uuid or label)
    raise NotExistent(f"no group with the pk, label or uuid {shown!r}")
