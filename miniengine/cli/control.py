"""``miniengine process pause|play|kill|watch|repair``: act on processes, and watch them.

These commands open the engine's store (they write), unlike the read-only ones.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import TYPE_CHECKING

from miniengine.cli.connection import open_backend
from miniengine.cli.errors import CliError, guarded
from miniengine.cli.identify import IDENTIFIER_HELP, find_process, process_identifier
from miniengine.cli.options import add_db_option, db_location
from miniengine.cli.table import emit

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["add_commands"]

_TERMINAL = ("finished", "excepted", "killed")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, help_text in (
        ("pause", "pause processes: they keep their state and run no further step"),
        ("play", "play paused processes"),
        ("kill", "kill processes and every descendant that has not terminated"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text.capitalize() + ".")
        sub.add_argument(
            "pks",
            metavar="PROCESS",
            type=process_identifier,
            nargs="*",
            help=f"the processes: each {IDENTIFIER_HELP}",
        )
        sub.add_argument("--all", action="store_true", help="every active process")
        sub.add_argument("--wait", action="store_true", help="wait until the owner has acted")
        sub.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (5)")
        if name == "kill":
            sub.add_argument("-m", "--message", default=None, help="why (shown on the node)")
        add_db_option(sub)
        sub.set_defaults(handler=guarded(_act), action=name)
    watch = commands.add_parser(
        "watch", help="print the state changes of a process tree until it terminates"
    )
    watch.add_argument("pk", metavar="PROCESS", type=process_identifier, help=IDENTIFIER_HELP)
    watch.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    add_db_option(watch)
    watch.set_defaults(handler=guarded(_watch))
    repair = commands.add_parser(
        "repair", help="find and fix inconsistencies between the queue and the nodes"
    )
    repair.add_argument("--dry-run", action="store_true", help="report only")
    add_db_option(repair)
    repair.set_defaults(handler=guarded(_repair))


def _act(args: argparse.Namespace) -> int:
    path = db_location(args)  # a file (checked on opening) or a PostgreSQL URL
    if not args.pks and not args.all:
        raise CliError(f"give the pks to {args.action}, or --all")
    from miniengine import control

    store = open_backend(path)
    try:
        pks = [find_process(store.queries, text).pk for text in args.pks] or None
        if args.action == "kill":
            messages = control.kill_processes(
                pks,
                msg_text=args.message,
                all_entries=args.all,
                timeout=args.timeout,
                wait=args.wait,
                db=store,
            )
        elif args.action == "pause":
            messages = control.pause_processes(
                pks, all_entries=args.all, timeout=args.timeout, wait=args.wait, db=store
            )
        else:
            messages = control.play_processes(pks, all_entries=args.all, db=store)
    finally:
        store.close()
    for message in messages:
        emit(message)
    if not messages:
        print(f"no active process to {args.action}")
    # --wait that did not see the action take effect is a failure, not a success
    return 0 if all(message.confirmed for message in messages) else 1


def _watch(args: argparse.Namespace) -> int:
    path = db_location(args)  # a file (checked on opening) or a PostgreSQL URL
    import time

    from miniengine.runtime.events import Subscription

    store = open_backend(path)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        row = find_process(store.queries, args.pk)
        args.pk = row.pk
        tree = {args.pk}
        labels = {args.pk: row.process_label}
        emit(f"{_now()}  {args.pk:>6} {row.process_label}: {row.process_state}")
        sys.stdout.flush()
        if row.process_state in _TERMINAL:
            return 0
        with Subscription(store, None) as changes:
            while True:
                for change in changes.poll():
                    if change.pk not in tree and not _in_tree(store, change.pk, tree, labels):
                        continue
                    came = change.from_state or "new"
                    emit(
                        f"{_now()}  {change.pk:>6} {labels[change.pk]}: {came} -> {change.to_state}"
                    )
                    sys.stdout.flush()
                    if change.pk == args.pk and change.to_state in (
                        "finished",
                        "excepted",
                        "killed",
                    ):
                        return 0
                if deadline is not None and time.monotonic() > deadline:
                    print(
                        f"still {store.control.process_state(args.pk)} after {args.timeout:g} s",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(0.01)
    finally:
        store.close()


def _in_tree(store: Backend, pk: int, tree: set[int], labels: dict[int, str | None]) -> bool:
    """Is ``pk`` a descendant of the watched process? (walks up its CALL links once)."""
    chain = [pk]
    current = pk
    while True:
        callers = store.provenance.links(current, True, ["call_calc", "call_work"])
        if not callers:
            return False
        current = callers[0].pk
        if current in tree:
            for member in chain:
                tree.add(member)
                labels[member] = store.provenance.node(member).process_label
            return True
        chain.append(current)


def _now() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _repair(args: argparse.Namespace) -> int:
    path = db_location(args)  # a file (checked on opening) or a PostgreSQL URL
    store = open_backend(path)
    try:
        found = store.broker.repair(args.dry_run)
    finally:
        store.close()
    for line in found:
        print(line)
    print(
        "nothing to repair"
        if not found
        else f"{len(found)} finding(s)"
        + (" (dry run: nothing changed)" if args.dry_run else " fixed")
    )
    return 0
