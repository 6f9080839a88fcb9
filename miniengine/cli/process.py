"""``miniengine process list|show|report|status``: what an operator reads, without changing it.

Each command opens the database to read only (no store, no event loop), runs a few indexed
queries and prints an aligned table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from miniengine.cli import calcjob
from miniengine.cli.calcjob_queries import CALCJOB_TYPE
from miniengine.cli.connection import open_readonly
from miniengine.cli.errors import CliError, Handler, guarded
from miniengine.cli.identify import IDENTIFIER_HELP, find_process, process_identifier
from miniengine.cli.options import add_db_option, add_json_option, db_location
from miniengine.cli.render import plain_value, shorten, state_text, type_name, value_text
from miniengine.cli.table import emit, format_table, json_array, json_object
from miniengine.cli.timefmt import age, iso_local, iso_utc, parse_duration, report_time
from miniengine.core.links import CALL_LINK_TYPES, INPUT_LINK_TYPES, OUTPUT_LINK_TYPES
from miniengine.core.states import ProcessState

if TYPE_CHECKING:
    from miniengine.storage.interfaces.queries import (
        LinkedNode,
        LogLine,
        NodeView,
        ProcessOwner,
        ProcessRow,
        Reader,
        TreeRow,
    )

__all__ = ["add_commands"]

_T = TypeVar("_T")

STATES = tuple(state.value for state in ProcessState)
ACTIVE_STATES = tuple(state.value for state in ProcessState if not state.is_terminal)

#: Python's logging levels plus AiiDA's REPORT (between INFO and WARNING).
LEVELS = {"DEBUG": 10, "INFO": 20, "REPORT": 23, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return min(value, 2**63 - 1)  # what sqlite takes, and more rows than any database has


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``list``, ``show``, ``report`` and ``status`` to the ``process`` command."""
    listing = commands.add_parser(
        "list",
        help="list processes (the active ones unless told otherwise)",
        description="List process nodes, newest first: the active ones (created, running, "
        "waiting) by default, every one with --all, or those in the states given with --state.",
    )
    listing.add_argument(
        "-a",
        "--all",
        dest="all_states",
        action="store_true",
        help="every process node, whatever its state, children included",
    )
    listing.add_argument(
        "-S",
        "--state",
        action="append",
        type=str.lower,
        choices=STATES,
        metavar="STATE",
        help=f"only processes in this state (repeatable; one of: {', '.join(STATES)}); "
        "overrides --all",
    )
    listing.add_argument(
        "-p",
        "--past",
        type=parse_duration,
        metavar="DURATION",
        help="only processes created in the last DURATION: 30m, 2h, 1d, 7d (a bare number is days)",
    )
    listing.add_argument(
        "-l", "--limit", type=_count, metavar="N", help="at most N processes (the newest)"
    )
    listing.add_argument(
        "-L",
        "--process-label",
        metavar="LABEL",
        help="only processes of this label (a pattern with %% and _ as in SQL's LIKE)",
    )
    listing.add_argument(
        "-E", "--exit-status", type=int, metavar="N", help="only processes with this exit status"
    )
    listing.add_argument(
        "-X",
        "--extra",
        action="append",
        type=_extra_filter,
        metavar="KEY=VALUE",
        help="only processes whose extra KEY is VALUE (JSON, else a string; repeatable)",
    )
    listing.add_argument(
        "--cached",
        action="store_true",
        help="only processes created as copies of an equal finished one (cache hits)",
    )
    _common(listing, _list)

    show = commands.add_parser(
        "show",
        help="show a process: state, inputs, outputs, children, caller",
        description="Show one process: its state with exit status and message, times, inputs "
        "and outputs with their link labels, the processes it called, its caller and, if it "
        "excepted, the exception.",
    )
    show.add_argument("pk", type=process_identifier, metavar="PROCESS", help=IDENTIFIER_HELP)
    _common(show, _show)

    report = commands.add_parser(
        "report",
        help="print the log of a process and of the processes it called",
        description="Print the log messages of a process and of its descendants in time "
        "order, each indented by its depth in the call tree (as `verdi process report`).",
    )
    report.add_argument("pk", type=process_identifier, metavar="PROCESS", help=IDENTIFIER_HELP)
    report.add_argument(
        "-m",
        "--max-depth",
        type=_count,
        metavar="N",
        help="descend at most N levels into the call tree (0: this process only)",
    )
    report.add_argument(
        "-L",
        "--levelname",
        type=str.upper,
        choices=tuple(LEVELS),
        default="REPORT",
        metavar="LEVEL",
        help=f"the lowest level shown (one of: {', '.join(LEVELS)}; default REPORT)",
    )
    _common(report, _report, with_json=False)

    status = commands.add_parser(
        "status",
        help="print the call tree of a process with the state of each node",
        description="Print a process and every process it called, recursively, as an indented "
        "tree with the state of each (as `verdi process status`).",
    )
    status.add_argument("pk", type=process_identifier, metavar="PROCESS", help=IDENTIFIER_HELP)
    status.add_argument(
        "-m", "--max-depth", type=_count, metavar="N", help="show at most N levels below it"
    )
    _common(status, _status, with_json=False)


def _common(parser: argparse.ArgumentParser, handler: Handler, with_json: bool = True) -> None:
    if with_json:
        add_json_option(parser)
    add_db_option(parser)
    parser.set_defaults(handler=guarded(handler))


def _read(args: argparse.Namespace, query: Callable[[Reader], _T]) -> _T:
    with open_readonly(db_location(args)) as db:
        return query(db)


def _process(db: Reader, identifier: str) -> NodeView:
    """The process named by ``identifier`` (a pk, a uuid or a unique prefix of one)."""
    return find_process(db.queries, identifier)


# list ------------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    if args.state:
        states: tuple[str, ...] | None = tuple(dict.fromkeys(args.state))
    else:
        states = None if args.all_states else ACTIVE_STATES
    now = time.time()
    since = None if args.past is None else now - args.past

    def query(db: Reader) -> tuple[list[ProcessRow], dict[int, str]]:
        plain = args.process_label is None and args.exit_status is None
        if plain and not args.extra and not args.cached:
            found = db.queries.list_processes(states, since, args.limit)
        else:
            found = _filtered(db, args, states, since)
        active = [row.pk for row in found if row.process_state in ACTIVE_STATES]
        return found, db.calcjobs.active_stages(active) if active else {}

    rows, stages = _read(args, query)
    if args.json:
        emit(json_array(_process_json(row) for row in rows))
        return 0
    table = format_table(
        ("PK", "Age", "Label", "State", "Status"),
        (
            (
                str(row.pk),
                age(now - row.ctime),
                row.process_label or "",
                state_text(row.process_state, row.exit_status, row.paused),
                shorten(calcjob.list_status(row.process_status, stages.get(row.pk)), 80),
            )
            for row in rows
        ),
        right={0},
    )
    emit(f"{table}\n\nTotal results: {len(rows)}")
    return 0


def _extra_filter(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _filtered(
    db: Reader, args: argparse.Namespace, states: tuple[str, ...] | None, since: float | None
) -> list[ProcessRow]:
    """The listing with the QueryBuilder's filters: one statement for the processes, one for
    their callers."""
    from miniengine.core.query import QueryError
    from miniengine.runtime.nodes import ProcessNode
    from miniengine.runtime.querybuilder import QueryBuilder
    from miniengine.storage.interfaces.queries import ProcessRow as Row

    filters: dict[str, Any] = {}
    if states is not None:
        filters["process_state"] = {"in": list(states)}
    if since is not None:
        filters["ctime"] = {">=": since}
    if args.process_label is not None:
        filters["process_label"] = {"like": args.process_label}
    if args.exit_status is not None:
        filters["exit_status"] = args.exit_status
    for key, value in args.extra or ():
        filters[f"extras.{key}"] = value
    if args.cached:
        from miniengine.storage.interfaces.caching import CACHED_FROM_EXTRA

        filters["extras"] = {"has_key": CACHED_FROM_EXTRA}
    fields = [name for name in Row._fields if name != "caller"]
    try:
        qb = QueryBuilder().append(
            ProcessNode, tag="p", filters=filters, project=["id", *fields[1:]]
        )
    except QueryError as exc:
        raise CliError(str(exc)) from exc
    qb.order_by({"p": [{"ctime": {"order": "desc"}}, {"id": {"order": "desc"}}]})
    rows = db.query_builder.rows(qb.limit(args.limit).spec())
    callers: dict[int, int] = {}
    if rows:
        called = QueryBuilder().append(ProcessNode, tag="caller", project="id")
        called.append(
            ProcessNode,
            with_incoming="caller",
            filters={"id": {"in": [row[0] for row in rows]}},
            edge_filters={"type": {"in": list(CALL_LINK_TYPES)}},
            project="id",
        )
        callers = {pk: caller for caller, pk in db.query_builder.rows(called.spec())}
    return [Row._make((*row[:7], bool(row[7]), callers.get(row[0]))) for row in rows]


def _process_json(row: ProcessRow) -> dict[str, Any]:
    return {
        "pk": row.pk,
        "uuid": row.uuid,
        "ctime": iso_utc(row.ctime),
        "process_label": row.process_label,
        "process_state": row.process_state,
        "exit_status": row.exit_status,
        "process_status": row.process_status,
        "caller": row.caller,
        "paused": bool(row.paused),
    }


# show ------------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    def query(db: Reader) -> dict[str, Any]:
        row = _process(db, args.pk)

        def linked(incoming: bool, link_types: tuple[str, ...]) -> list[LinkedNode]:
            return db.queries.linked_nodes(row.pk, incoming=incoming, link_types=link_types)

        return {
            "row": row,
            "inputs": sorted(linked(True, INPUT_LINK_TYPES), key=lambda link: link.link_label),
            "outputs": sorted(linked(False, OUTPUT_LINK_TYPES), key=lambda link: link.link_label),
            "called": linked(False, CALL_LINK_TYPES),
            "caller": linked(True, CALL_LINK_TYPES),
            "logs": db.queries.log_count(row.pk),
            # who runs it, and on which host (daemons on several hosts share a PostgreSQL one)
            "owner": db.queries.process_owner(row.pk)
            if row.process_state in ACTIVE_STATES
            else None,
            "calcjob": calcjob.calcjob_properties(db.calcjobs, row.pk)
            if row.node_type == CALCJOB_TYPE
            else None,
        }

    found = _read(args, query)
    row: NodeView = found["row"]
    if args.json:
        emit(json_object(_show_json(row, found)))
        return 0
    now = time.time()
    properties = [
        ("type", type_name(row.node_type)),
        ("state", state_text(row.process_state, row.exit_status, row.paused)),
        ("pk", str(row.pk)),
        ("uuid", row.uuid),
        ("label", shorten(row.label)),
        ("description", shorten(row.description)),
        ("process label", row.process_label or ""),
        ("process type", row.process_type or ""),
    ]
    owner: ProcessOwner | None = found["owner"]
    if owner is not None:
        expired = owner.lease_expires is not None and owner.lease_expires < now
        properties.append(("owner", shorten(owner.owner) + (" (lease expired)" if expired else "")))
        if owner.host:
            properties.append(("host", shorten(owner.host)))
    if found["calcjob"] is not None:
        properties += calcjob.calcjob_rows(found["calcjob"])
    if row.exit_message:
        properties.append(("exit message", shorten(row.exit_message, 100)))
    if row.process_status:
        properties.append(("status", shorten(row.process_status, 100)))
    properties += [
        ("ctime", f"{iso_local(row.ctime)} ({age(now - row.ctime)})"),
        ("mtime", f"{iso_local(row.mtime)} ({age(now - row.mtime)})"),
    ]
    blocks = [format_table(("Property", "Value"), properties)]
    for title, links in (("Inputs", found["inputs"]), ("Outputs", found["outputs"])):
        if links:
            blocks.append(
                format_table(
                    (title, "PK", "Type", "Value"),
                    (
                        (
                            link.link_label,
                            str(link.pk),
                            type_name(link.node_type),
                            value_text(link.node_type, link.attributes),
                        )
                        for link in links
                    ),
                    right={1},
                )
            )
    for title, links in (("Called", found["called"]), ("Caller", found["caller"])):
        if links:
            blocks.append(
                format_table(
                    (title, "PK", "Label", "State"),
                    (
                        (
                            link.link_label,
                            str(link.pk),
                            link.process_label or "",
                            state_text(link.process_state, link.exit_status, link.paused),
                        )
                        for link in links
                    ),
                    right={1},
                )
            )
    if row.exception:
        blocks.append("Exception:\n" + row.exception.rstrip())
    logs = found["logs"]
    hint = f" (miniengine process report {row.pk})" if logs else ""
    blocks.append(f"Log messages: {logs}{hint}")
    emit("\n\n".join(blocks))
    return 0


def _show_json(row: NodeView, found: dict[str, Any]) -> dict[str, Any]:
    def data(link: LinkedNode) -> dict[str, Any]:
        return {
            "link_label": link.link_label,
            "link_type": link.link_type,
            "pk": link.pk,
            "type": type_name(link.node_type),
            "value": plain_value(link.node_type, link.attributes),
        }

    def process(link: LinkedNode) -> dict[str, Any]:
        return {
            "link_label": link.link_label,
            "link_type": link.link_type,
            "pk": link.pk,
            "process_label": link.process_label,
            "process_state": link.process_state,
            "exit_status": link.exit_status,
            "paused": bool(link.paused),
        }

    callers = [process(link) for link in found["caller"]]
    owner: ProcessOwner | None = found["owner"]
    return {
        "pk": row.pk,
        "uuid": row.uuid,
        "type": type_name(row.node_type),
        "node_type": row.node_type,
        "process_type": row.process_type,
        "process_label": row.process_label,
        "process_state": row.process_state,
        "exit_status": row.exit_status,
        "exit_message": row.exit_message,
        "process_status": row.process_status,
        "paused": bool(row.paused),
        "label": row.label,
        "description": row.description,
        "ctime": iso_utc(row.ctime),
        "mtime": iso_utc(row.mtime),
        "inputs": [data(link) for link in found["inputs"]],
        "outputs": [data(link) for link in found["outputs"]],
        "called": [process(link) for link in found["called"]],
        "caller": callers[0] if callers else None,
        "exception": row.exception,
        "log_count": found["logs"],
        "owner": None
        if owner is None
        else {
            "id": owner.owner,
            "host": owner.host,
            "lease_expires": None if owner.lease_expires is None else iso_utc(owner.lease_expires),
        },
        **({"calcjob": found["calcjob"]} if found["calcjob"] is not None else {}),
    }


# report ----------------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    def query(db: Reader) -> list[LogLine]:
        pk = _process(db, args.pk).pk
        return db.queries.subtree_logs(pk, args.max_depth)

    lowest = LEVELS[args.levelname]
    lines = [
        line for line in _read(args, query) if LEVELS.get(line.levelname.upper(), 100) >= lowest
    ]
    if not lines:
        emit("No log messages recorded for this entry")
        return 0
    emit("\n".join(_report_lines(lines)))
    return 0


def _report_lines(lines: list[LogLine]) -> Iterator[str]:
    """``time [LEVEL] [pk|label]: message``, indented by depth.  A WorkChain's ``self.report``
    already starts its message with ``[pk|label|step]: `` (as in AiiDA), so that is kept as is."""
    for line in lines:
        indent = "  " * line.depth
        first, *more = line.message.rstrip("\n").split("\n")
        if not first.startswith(f"[{line.node_pk}|"):
            first = f"[{line.node_pk}|{line.process_label or ''}]: {first}"
        yield f"{indent}{report_time(line.time)} [{line.levelname}] {first}"
        for rest in more:
            yield f"{indent}    {rest}"


# status ----------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    def query(db: Reader) -> tuple[list[TreeRow], int]:
        pk = _process(db, args.pk).pk
        return db.queries.subtree(pk, args.max_depth), pk

    emit("\n".join(_tree_lines(*_read(args, query))))
    return 0


def _tree_lines(rows: list[TreeRow], root: int) -> Iterator[str]:
    """The call tree in ASCII, children in the order they were created (iterative: a nesting
    deeper than Python's recursion limit still prints)."""
    by_pk = {row.pk: row for row in rows}
    children: dict[int, list[int]] = {}
    for row in rows:  # in pk order, so each list is in creation order
        if row.parent is not None and row.depth > 0:
            children.setdefault(row.parent, []).append(row.pk)
    stack: list[tuple[int, str, str]] = [(root, "", "")]  # (pk, branch, prefix of its children)
    while stack:
        pk, branch, prefix = stack.pop()
        row = by_pk[pk]
        text = f"{row.process_label or ''}<{row.pk}> "
        text += state_text(row.process_state, row.exit_status, row.paused)
        if row.process_status:
            text += f" [{shorten(row.process_status, 80)}]"
        yield branch + text
        kids = children.get(pk, [])
        for index in range(len(kids) - 1, -1, -1):
            last = index == len(kids) - 1
            stack.append(
                (
                    kids[index],
                    prefix + ("`-- " if last else "|-- "),
                    prefix + ("    " if last else "|   "),
                )
            )
