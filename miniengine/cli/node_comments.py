"""``miniengine node comment add|show|update|remove``: the comments on nodes, as ``verdi node
comment``.

The commands write and read the same rows as ``node.base.comments`` in Python.  ``remove``
asks first (``-f`` does not), as ``node delete`` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from miniengine.cli.errors import CliError
from miniengine.cli.identify import IDENTIFIER_HELP, process_identifier
from miniengine.cli.options import add_db_option, add_json_option
from miniengine.cli.table import emit, json_array

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["add_comment_commands"]


def _comment_id(text: str) -> int:
    try:
        pk = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comment id is a number, not {text!r}") from None
    if pk < 1:
        raise argparse.ArgumentTypeError(f"a comment id is a positive number, not {text!r}")
    return pk


def _content(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the comment is empty")
    return text


def add_comment_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``comment`` and its commands ``add``, ``show``, ``update`` and ``remove``."""
    from miniengine.cli.nodes import with_store

    text = "add, show, update and remove the comments on nodes"
    comment = commands.add_parser("comment", help=text, description=text[0].upper() + text[1:])
    actions = comment.add_subparsers(dest="comment_command", metavar="COMMAND", required=True)

    add = actions.add_parser(
        "add", help="add a comment to a node", description="Add a comment to a node."
    )
    add.add_argument(
        "node", metavar="NODE", type=process_identifier, help=f"the node: {IDENTIFIER_HELP}"
    )
    add.add_argument("content", metavar="TEXT", type=_content, help="the comment")
    add_db_option(add)
    add.set_defaults(handler=with_store(_add))

    show = actions.add_parser(
        "show",
        help="show the comments on a node",
        description="Show the comments on a node, oldest first.",
    )
    show.add_argument(
        "node", metavar="NODE", type=process_identifier, help=f"the node: {IDENTIFIER_HELP}"
    )
    add_db_option(show)
    add_json_option(show)
    show.set_defaults(handler=with_store(_show))

    update = actions.add_parser(
        "update", help="replace the text of a comment", description="Replace a comment's text."
    )
    update.add_argument("comment", metavar="COMMENT_ID", type=_comment_id, help="its id")
    update.add_argument("content", metavar="TEXT", type=_content, help="the new text")
    add_db_option(update)
    update.set_defaults(handler=with_store(_update))

    remove = actions.add_parser(
        "remove", help="remove a comment", description="Remove a comment (asks first)."
    )
    remove.add_argument("comment", metavar="COMMENT_ID", type=_comment_id, help="its id")
    remove.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    add_db_option(remove)
    remove.set_defaults(handler=with_store(_remove))


def _node_pk(store: Backend, identifier: str) -> int:
    from miniengine.runtime.nodes import load_node

    pk: int = load_node(identifier, db=store).pk
    return pk


def _add(args: argparse.Namespace, store: Backend) -> int:
    pk = _node_pk(store, args.node)
    row = store.groups.add_comment(pk, args.content)
    emit(f"added comment {row.pk} to node {pk}")
    return 0


def _show(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.cli.timefmt import iso_utc

    pk = _node_pk(store, args.node)
    comments = store.groups.comments(pk)
    if args.json:
        emit(
            json_array(
                {
                    "pk": c.pk,
                    "uuid": c.uuid,
                    "node": c.node_pk,
                    "ctime": iso_utc(c.ctime),
                    "mtime": iso_utc(c.mtime),
                    "content": c.content,
                }
                for c in comments
            )
        )
        return 0
    if not comments:
        emit(f"node {pk} has no comments")
        return 0
    for index, c in enumerate(comments):
        if index:
            emit("")
        changed = f", changed {iso_utc(c.mtime)}" if c.mtime != c.ctime else ""
        emit(f"comment {c.pk} on node {pk}, {iso_utc(c.ctime)}{changed}")
        emit(c.content)
    return 0


def _update(args: argparse.Namespace, store: Backend) -> int:
    if not store.groups.update_comment(args.comment, args.content):
        raise CliError(f"no comment with the id {args.comment}")
    emit(f"updated comment {args.comment}")
    return 0


def _remove(args: argparse.Namespace, store: Backend) -> int:
    if not args.force:
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to remove comment {args.comment} without asking: no terminal to ask "
                "on (pass -f to remove it without asking)"
            )
        sys.stdout.write(f"Remove comment {args.comment}? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            emit("aborted: nothing removed")
            return 1
    if not store.groups.remove_comment(args.comment):
        raise CliError(f"no comment with the id {args.comment}")
    emit(f"removed comment {args.comment}")
    return 0
