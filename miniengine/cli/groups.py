"""``miniengine group create|list|show|add-nodes|remove-nodes|delete``, as ``verdi group``.

``GROUP`` is a group's label, pk, or uuid (or a unique prefix of one), as ``load_group``.
Deleting a group keeps its nodes.  Nothing is asked: every command does what it says.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from miniengine.cli.identify import IDENTIFIER_HELP, process_identifier
from miniengine.cli.nodes import with_store
from miniengine.cli.options import add_db_option, add_json_option
from miniengine.cli.table import emit, format_pairs, format_table, json_array, json_object

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``create``, ``list``, ``show``, ``add-nodes``, ``remove-nodes`` and ``delete``."""
    create = commands.add_parser(
        "create", help="create a group", description="Create an empty group (type 'core')."
    )
    create.add_argument("label", metavar="LABEL", help="the label of the group (unique)")
    create.add_argument("-D", "--description", default="", help="a description")
    add_db_option(create)
    create.set_defaults(handler=with_store(_create))

    listing = commands.add_parser(
        "list", help="list the groups", description="List the groups, oldest first."
    )
    listing.add_argument(
        "-T", "--type-string", default=None, help="only the groups of this type (e.g. core)"
    )
    add_db_option(listing)
    add_json_option(listing)
    listing.set_defaults(handler=with_store(_list))

    show = commands.add_parser(
        "show", help="show a group and its nodes", description="Show a group and its nodes."
    )
    show.add_argument("group", metavar="GROUP", help="the label, pk or uuid of the group")
    add_db_option(show)
    add_json_option(show)
    show.set_defaults(handler=with_store(_show))

    for name, verb, function in (
        ("add-nodes", "add nodes to", _add_nodes),
        ("remove-nodes", "remove nodes from", _remove_nodes),
    ):
        parser = commands.add_parser(
            name,
            help=f"{verb} a group",
            description=f"{verb.capitalize()} a group (nodes by pk or uuid, as verdi).",
        )
        parser.add_argument("group", metavar="GROUP", help="the label, pk or uuid of the group")
        parser.add_argument(
            "nodes",
            metavar="NODE",
            type=process_identifier,
            nargs="+",
            help=f"the nodes: {IDENTIFIER_HELP}",
        )
        add_db_option(parser)
        parser.set_defaults(handler=with_store(function))

    delete = commands.add_parser(
        "delete",
        help="delete a group (its nodes are kept)",
        description="Delete a group; its nodes are kept.",
    )
    delete.add_argument("group", metavar="GROUP", help="the label, pk or uuid of the group")
    add_db_option(delete)
    delete.set_defaults(handler=with_store(_delete))


def _load(store: Backend, identifier: str) -> Any:
    from miniengine.runtime.groups import load_group

    return load_group(identifier, db=store)


def _fields(group: Any, count: int | None = None) -> dict[str, Any]:
    from miniengine.cli.timefmt import iso_utc

    return {
        "pk": group.pk,
        "uuid": group.uuid,
        "label": group.label,
        "type_string": group.type_string,
        "description": group.description,
        "ctime": iso_utc(group.ctime.timestamp()),
        "count": group.count() if count is None else count,
    }


def _create(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.groups import Group

    group = Group(label=args.label, description=args.description).store(store)
    emit(f"created group {group.label!r} (pk {group.pk})")
    return 0


def _list(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.groups import Group

    groups = [
        group
        for group in Group.collection(store).all()
        if args.type_string is None or group.type_string == args.type_string
    ]
    counts = store.groups.group_counts()  # one query, not one per group
    fields = [_fields(group, counts.get(group.pk or 0, 0)) for group in groups]
    if args.json:
        emit(json_array(fields))
        return 0
    if not fields:
        emit("no groups: create one with `miniengine group create LABEL`")
        return 0
    emit(
        format_table(
            ("pk", "label", "type", "nodes", "description"),
            (
                (str(f["pk"]), f["label"], f["type_string"], str(f["count"]), f["description"])
                for f in fields
            ),
            right=(0, 3),
        )
    )
    return 0


def _show(args: argparse.Namespace, store: Backend) -> int:
    group = _load(store, args.group)
    fields = _fields(group)
    nodes = group.nodes
    rows = store.provenance.nodes([node.pk for node in nodes])
    members: list[dict[str, Any]] = [
        {"pk": row.pk, "uuid": row.uuid, "type": row.node_type, "label": row.label}
        for row in (rows[node.pk] for node in nodes)
    ]
    if args.json:
        emit(json_object({**fields, "nodes": members}))
        return 0
    emit(format_pairs((name, str(value)) for name, value in fields.items()))
    if members:
        emit("")
        emit(
            format_table(
                ("pk", "uuid", "type", "label"),
                ((str(m["pk"]), str(m["uuid"]), str(m["type"]), str(m["label"])) for m in members),
                right=(0,),
            )
        )
    return 0


def _node_pks(store: Backend, identifiers: list[str]) -> list[int]:
    """The pks of the nodes named: a string of digits is a pk (checked by the group's write,
    in one statement for all of them), anything else a uuid or a unique prefix of one."""
    from miniengine.runtime.nodes import load_node

    return [int(text) if text.isdecimal() else load_node(text, db=store).pk for text in identifiers]


def _add_nodes(args: argparse.Namespace, store: Backend) -> int:
    group = _load(store, args.group)
    added = store.groups.add_group_nodes(group.pk, _node_pks(store, args.nodes))
    emit(f"added {added} node(s) to group {group.label!r} ({group.count()} in it)")
    return 0


def _remove_nodes(args: argparse.Namespace, store: Backend) -> int:
    group = _load(store, args.group)
    removed = store.groups.remove_group_nodes(group.pk, _node_pks(store, args.nodes))
    emit(f"removed {removed} node(s) from group {group.label!r} ({group.count()} in it)")
    return 0


def _delete(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.groups import Group

    group = _load(store, args.group)
    Group.collection(store).delete(group.pk)
    emit(f"deleted group {group.label!r} (pk {group.pk}); its nodes are kept")
    return 0
