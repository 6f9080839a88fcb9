"""``miniengine node show|attributes|extras NODE``: one node's fields, attributes and extras.

``NODE`` is a pk, or a uuid or a unique prefix of one (as ``load_node``).  Attributes are the
node's content or process fields; extras are what users set on it (``node.base.extras``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniengine.cli.connection import require_file
from miniengine.cli.errors import Handler, guarded
from miniengine.cli.identify import IDENTIFIER_HELP, process_identifier
from miniengine.cli.options import add_db_option, add_json_option, db_location
from miniengine.cli.table import emit, format_pairs, json_object

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["add_commands", "with_store"]


def with_store(function: Callable[[argparse.Namespace, Backend], int]) -> Handler:
    """A handler that runs ``function`` with the database (which must exist, unless it is a
    PostgreSQL URL) as the current one, and closes it after."""

    def handler(args: argparse.Namespace) -> int:
        import os

        location = db_location(args)
        if isinstance(location, Path):
            require_file(location)
        from miniengine.storage.open import close_all_backends, shared_backend
        from miniengine.storage.paths import ENV_VAR

        os.environ[ENV_VAR] = str(location)
        try:
            return function(args, shared_backend(location))
        finally:
            close_all_backends()

    return guarded(handler)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``show``, ``attributes`` and ``extras``."""
    for name, help_text, function in (
        ("show", "show a node: its fields, groups and comments", _show),
        ("attributes", "print the attributes of a node", _attributes),
        ("extras", "print the extras of a node", _extras),
    ):
        parser = commands.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        parser.add_argument(
            "node", metavar="NODE", type=process_identifier, help=f"the node: {IDENTIFIER_HELP}"
        )
        add_db_option(parser)
        add_json_option(parser)
        parser.set_defaults(handler=with_store(function))


def _load(store: Backend, identifier: str) -> Any:
    from miniengine.runtime.nodes import load_node

    return load_node(identifier, db=store)


def _plain(value: Any) -> Any:
    """A value JSON can print (bytes and other objects by their ``repr``)."""
    return json.loads(json.dumps(value, default=repr, ensure_ascii=False))


def _print_mapping(args: argparse.Namespace, values: dict[str, Any], empty: str) -> int:
    values = _plain(values)
    if args.json:
        emit(json_object(values))
    elif not values:
        emit(empty)
    else:
        emit(
            format_pairs(
                (key, json.dumps(value, ensure_ascii=False))
                for key, value in sorted(values.items())
            )
        )
    return 0


def _attributes(args: argparse.Namespace, store: Backend) -> int:
    node = _load(store, args.node)
    return _print_mapping(args, node.base.attributes.all, f"node {node.pk} has no attributes")


def _extras(args: argparse.Namespace, store: Backend) -> int:
    node = _load(store, args.node)
    return _print_mapping(args, node.base.extras.all, f"node {node.pk} has no extras")


def _show(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.cli.timefmt import iso_utc

    node = _load(store, args.node)
    row = store.provenance.node(node.pk)
    groups = store.groups.node_groups(node.pk)
    comments = store.groups.comments(node.pk)
    fields: dict[str, Any] = {
        "pk": row.pk,
        "uuid": row.uuid,
        "type": row.node_type,
        "label": row.label,
        "description": row.description,
        "ctime": iso_utc(row.ctime),
        "mtime": iso_utc(row.mtime),
    }
    if row.process_state is not None:
        fields["process_label"] = row.process_label
        fields["process_state"] = row.process_state
        fields["exit_status"] = row.exit_status
    fields["extras"] = len(node.base.extras.all)
    if args.json:
        fields["groups"] = [
            {"pk": g.pk, "label": g.label, "type_string": g.type_string} for g in groups
        ]
        fields["comments"] = [
            {"pk": c.pk, "ctime": iso_utc(c.ctime), "content": c.content} for c in comments
        ]
        emit(json_object(fields))
        return 0
    pairs = [(name, "" if value is None else str(value)) for name, value in fields.items()]
    pairs.append(("groups", ", ".join(f"{g.label} <{g.pk}>" for g in groups) or "none"))
    emit(format_pairs(pairs))
    for comment in comments:
        emit(f"\ncomment <{comment.pk}> at {iso_utc(comment.ctime)}:\n{comment.content}")
    return 0
