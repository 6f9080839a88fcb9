"""``miniengine caching show|enable|disable|store-all-hashes``: the database's caching settings.

They live in the database (AiiDA keeps them in its profile, set with ``verdi config set
caching.*``), so every program and every daemon worker that opens it follows them; a running
worker reads them again within a few seconds.  ``MINIENGINE_CACHING`` in a program's
environment, and ``enable_caching()`` blocks in its code, take precedence there.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from miniengine.cli.options import add_db_option, add_json_option
from miniengine.cli.table import emit, format_pairs, json_object

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["add_command"]

_IDENTIFIERS = (
    "process types (a calcfunction's module.function, a CalcJob's module.Class); "
    "'*' matches any characters"
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``caching`` and its subcommands."""
    from miniengine.cli.nodes import with_store

    caching = commands.add_parser(
        "caching",
        help="show and change when finished calculations are reused instead of run again",
        description="Show and change the caching settings stored in the database (as `verdi "
        "config set caching.*`): every program and daemon worker that opens it follows them.",
    )
    sub = caching.add_subparsers(dest="caching_command", metavar="COMMAND", required=True)
    show = sub.add_parser(
        "show", help="print the settings", description="Print the caching settings."
    )
    add_db_option(show)
    add_json_option(show)
    show.set_defaults(handler=with_store(_show))
    for name, verb in (("enable", "enable"), ("disable", "disable")):
        parser = sub.add_parser(
            name,
            help=f"{verb} caching for all classes or for some",
            description=f"{verb.capitalize()} caching for every class (no identifier) or for "
            f"the identifiers given ({_IDENTIFIERS}).",
        )
        parser.add_argument("identifiers", metavar="IDENTIFIER", nargs="*")
        add_db_option(parser)
        parser.set_defaults(handler=with_store(_enable if name == "enable" else _disable))
    hashes = sub.add_parser(
        "store-all-hashes",
        help="store the hash of processes run with caching off too",
        description="With 'on', a calcfunction or CalcJob launched with caching off stores "
        "its hash all the same, so that it is reused once caching is turned on (it costs a "
        "hash and an index entry per launch); 'off' (the default) stores hashes only of "
        "processes that were looked up.",
    )
    hashes.add_argument("state", choices=("on", "off"))
    add_db_option(hashes)
    hashes.set_defaults(handler=with_store(_store_all_hashes))


def _print(config: Any, as_json: bool = False) -> int:
    fields = {
        "caching.default_enabled": config.default_enabled,
        "caching.enabled_for": list(config.enabled_for),
        "caching.disabled_for": list(config.disabled_for),
        "caching.store_all_hashes": config.store_all_hashes,
    }
    if as_json:
        emit(json_object(fields))
    else:
        emit(
            format_pairs(
                (name, ", ".join(value) if isinstance(value, list) else str(value).lower())
                for name, value in fields.items()
            )
        )
    return 0


def _show(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.caching import get_caching_config

    return _print(get_caching_config(db=store), args.json)


def _enable(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.caching import get_caching_config, set_caching_config

    if not args.identifiers:
        return _print(set_caching_config(default_enabled=True, db=store))
    config = get_caching_config(db=store)
    enabled = [*config.enabled_for, *(i for i in args.identifiers if i not in config.enabled_for)]
    disabled = [i for i in config.disabled_for if i not in args.identifiers]
    return _print(set_caching_config(enabled_for=enabled, disabled_for=disabled, db=store))


def _disable(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.caching import get_caching_config, set_caching_config

    if not args.identifiers:
        return _print(set_caching_config(default_enabled=False, enabled_for=[], db=store))
    config = get_caching_config(db=store)
    disabled = [
        *config.disabled_for,
        *(i for i in args.identifiers if i not in config.disabled_for),
    ]
    enabled = [i for i in config.enabled_for if i not in args.identifiers]
    return _print(set_caching_config(enabled_for=enabled, disabled_for=disabled, db=store))


def _store_all_hashes(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.caching import set_caching_config

    return _print(set_caching_config(store_all_hashes=args.state == "on", db=store))
