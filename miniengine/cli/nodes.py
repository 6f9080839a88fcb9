"""``miniengine node show|attributes|extras NODE``: one node's fields, attributes and extras
(``node comment``, ``node delete`` and ``node graph`` live in modules of their own).

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
    """Add ``show``, ``attributes``, ``extras``, ``delete``, ``graph`` and ``comment``."""
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
    _add_delete(commands)
    _add_graph(commands)
    from miniengine.cli.node_comments import add_comment_commands

    add_comment_commands(commands)


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
    # a Data node's content hash; a process's caching hash and the process it was copied from
    fields["hash"] = node.base.caching.get_hash()
    if row.process_state is not None:
        fields["cache_source"] = node.base.caching.get_cache_source()
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


# delete ------------------------------------------------------------------------------------------


def _add_delete(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from miniengine.core.graph_rules import DELETE

    text = "delete nodes, and what AiiDA's deletion rules take with them"
    parser = commands.add_parser(
        "delete",
        help=text,
        description=(
            "Delete nodes (as `verdi node delete`) with every node that would otherwise tell an "
            "incomplete story: the processes that used a deleted node, the calculation that "
            "created it, the processes that called a deleted process and, unless switched off, "
            "what a deleted process created or called. One transaction; live processes are "
            "refused (kill them first). Files in the repository that only deleted nodes used "
            "stay until `miniengine db maintain`."
        ),
    )
    parser.add_argument(
        "nodes", metavar="NODE", nargs="+", type=process_identifier, help=IDENTIFIER_HELP
    )
    parser.add_argument(
        "-n", "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    for name, default in DELETE.toggleable.items():
        flag = name.replace("_", "-")
        parser.add_argument(
            f"--{flag}",
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"follow {name.rpartition('_')[0].upper()} links forwards (default: {default})",
        )
    add_db_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON for scripts: the nodes and whether they were deleted (with -n or -f)",
    )
    parser.set_defaults(handler=with_store(_delete))


def _delete(args: argparse.Namespace, store: Backend) -> int:
    import sys

    from miniengine.cli.errors import CliError
    from miniengine.core.graph_rules import DELETE

    if args.json and not (args.dry_run or args.force):
        raise CliError("--json cannot ask before deleting: pass --dry-run or --force with it")
    rules = {name: getattr(args, name) for name in DELETE.toggleable}
    pks = [_load(store, identifier).pk for identifier in args.nodes]
    links = DELETE.links(**rules)
    doomed = sorted(store.traversal.traverse(pks, links))
    rows = store.provenance.nodes(doomed)
    listed = [
        {
            "pk": pk,
            "uuid": rows[pk].uuid,
            "type": rows[pk].node_type,
            "process_label": rows[pk].process_label,
            "process_state": rows[pk].process_state,
        }
        for pk in doomed
    ]
    if not args.json:
        emit(f"{len(doomed)} node{'s' if len(doomed) != 1 else ''} to delete:")
        for node in listed:
            kind = node["process_label"] or node["type"]
            state = f" [{node['process_state']}]" if node["process_state"] else ""
            emit(f"  {node['pk']} {kind}{state}")
    live = store.traversal.live_processes(doomed)
    if live:
        named = ", ".join(
            f"{p.pk} ({p.process_label or 'process'}, {p.process_state})" for p in live
        )
        kill = " ".join(str(p.pk) for p in live)
        raise CliError(
            f"refusing to delete live processes: {named}; kill them first "
            f"(miniengine process kill {kill})"
        )
    if args.dry_run:
        emit(
            json_object({"nodes": listed, "deleted": False})
            if args.json
            else "dry run: nothing deleted"
        )
        return 0
    if not args.force:
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to delete {len(doomed)} nodes without asking: no terminal to ask on "
                "(pass -f to delete without asking)"
            )
        sys.stdout.write(f"Delete {len(doomed)} nodes? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            emit("aborted: nothing deleted")
            return 1
    deleted = store.traversal.delete_nodes(pks, links)
    if args.json:
        gone = [node for node in listed if node["pk"] in deleted]
        gone += [{"pk": pk} for pk in sorted(deleted - set(doomed))]  # made since the listing
        emit(json_object({"nodes": gone, "deleted": True}))
    else:
        emit(f"deleted {len(deleted)} node{'s' if len(deleted) != 1 else ''}")
    return 0


# graph -------------------------------------------------------------------------------------------


def _add_graph(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "draw the provenance around a node with Graphviz"
    parser = commands.add_parser(
        "graph",
        help=text,
        description=(
            "Draw the provenance around a node (as `verdi node graph generate`): its ancestors "
            "and descendants as a Graphviz graph, written to PK.dot.FORMAT in the current folder "
            "(svg by default), or as dot text to PK.dot when Graphviz's `dot` program is not "
            "installed. Needs the `graphviz` package (the `graph` extra). Unlike verdi, -o names "
            "the output file (as -O does) and --process-out has no short option."
        ),
    )
    parser.add_argument(
        "node", metavar="NODE", type=process_identifier, help=f"the node: {IDENTIFIER_HELP}"
    )
    parser.add_argument(
        "-f",
        "--output-format",
        dest="format",
        default="svg",
        choices=("dot", "svg", "png", "pdf"),
        help="dot writes the Graphviz text; the others need `dot` (default: svg)",
    )
    parser.add_argument(
        "-o",
        "-O",
        "--output-file",
        dest="output",
        metavar="FILE",
        type=Path,
        help="the file to write (default: PK.ENGINE.FORMAT, e.g. 12.dot.svg)",
    )
    parser.add_argument(
        "-l",
        "--link-types",
        default="all",
        choices=tuple(_LINK_TYPES),
        help="all links, or only data provenance (input_calc, create) or logical provenance "
        "(input_work, return) (default: all)",
    )
    parser.add_argument(
        "-e",
        "--engine",
        metavar="PROGRAM",
        default="dot",
        help="the Graphviz layout program: dot, neato, circo, ... (default: dot)",
    )
    parser.add_argument(
        "--color-by",
        default="state",
        choices=("state", "type"),
        help="fill processes by their state (green finished ok, red failed, orange running) or "
        "nodes by their type (as verdi: calculations red, workflows orange, data green) "
        "(default: state)",
    )
    parser.add_argument(
        "--identifier",
        nargs="+",
        default=["pk"],
        choices=("pk", "uuid", "label"),
        help="how nodes are named in their text (default: pk)",
    )
    parser.add_argument(
        "-c",
        "--highlight-classes",
        nargs="+",
        metavar="CLASS",
        help="grey out the nodes of other classes (as named in the graph: Int, add, ...)",
    )
    parser.add_argument(
        "-a",
        "--ancestor-depth",
        metavar="N",
        type=_depth,
        default=None,
        help="how many links back to follow (default: all)",
    )
    parser.add_argument(
        "-d",
        "--descendant-depth",
        metavar="N",
        type=_depth,
        default=None,
        help="how many links on to follow (default: all)",
    )
    parser.add_argument(
        "-i",
        "--process-in",
        action="store_true",
        help="show the inputs of the processes among the descendants",
    )
    parser.add_argument(
        "--process-out",
        action="store_true",
        help="show the outputs of the processes among the ancestors",
    )
    add_db_option(parser)
    parser.set_defaults(handler=with_store(_graph))


_LINK_TYPES = {"all": (), "data": ("input_calc", "create"), "logic": ("input_work", "return")}


def _depth(text: str) -> int:
    try:
        depth = int(text)
    except ValueError:
        depth = -1
    if depth < 0:
        raise argparse.ArgumentTypeError(f"expected a number of links, 0 or more, not {text!r}")
    return depth


def _graph(args: argparse.Namespace, store: Backend) -> int:
    import importlib.util
    import shutil

    from miniengine.cli.errors import CliError

    if importlib.util.find_spec("graphviz") is None:
        raise CliError("drawing graphs needs the graphviz package: pip install 'miniengine[graph]'")
    from miniengine.tools.graph import Graph, default_node_styles, pstate_node_styles

    node = _load(store, args.node)
    link_types = _LINK_TYPES[args.link_types]
    graph = Graph(
        engine=args.engine,
        node_style_fn=pstate_node_styles if args.color_by == "state" else default_node_styles,
        node_id_type=args.identifier,
        backend=store,
    )
    graph.recurse_ancestors(
        node.pk,
        depth=args.ancestor_depth,
        link_types=link_types,
        annotate_links="both",
        include_process_outputs=args.process_out,
        highlight_classes=args.highlight_classes,
    )
    graph.recurse_descendants(
        node.pk,
        depth=args.descendant_depth,
        link_types=link_types,
        annotate_links="both",
        include_process_inputs=args.process_in,
        highlight_classes=args.highlight_classes,
    )
    digraph = graph.graphviz
    fmt = args.format
    stem = f"{node.pk}.{args.engine}"
    if fmt != "dot" and shutil.which(args.engine) is None:
        emit(
            f"Graphviz's {args.engine} program is not installed: writing the dot text to "
            f"{args.output or stem} instead of {fmt}"
        )
        fmt = "dot"
    target: Path = args.output or Path(stem if fmt == "dot" else f"{stem}.{fmt}")
    if fmt == "dot":
        target.write_text(digraph.source, encoding="utf-8")
    else:
        import subprocess

        done = subprocess.run(
            [args.engine, f"-T{fmt}", "-o", str(target)],
            input=digraph.source.encode(),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise CliError(f"{args.engine} failed: {done.stderr.decode(errors='replace').strip()}")
    emit(f"wrote {target} ({len(graph.nodes)} nodes, {len(graph.edges)} links)")
    return 0
