"""Which process a command means: a pk, a uuid, or a unique prefix of a uuid.

Every command that takes a process (``process show|report|status|kill|pause|play|watch``) reads
its argument here, so they all accept the same forms and fail with the same words:
``no process with pk 12``, ``no process with the uuid or uuid prefix '0193ab'``, ``the uuid prefix
'0193' matches more than one node (pks 3, 5, ...)``, ``node 7 is not a process (its type is Int)``.

Node uuids are version 7, whose first 12 hex digits are the creation time: nodes made together
share them, so a prefix of the part after the timestamp (``7c1e-9a...``, the third group on) is
accepted as well.  A string of digits is a pk (pks have no leading zero, uuids of this century
start with ``0``); if no node has that pk, a unique uuid match is taken.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from miniengine.cli.errors import CliError
from miniengine.cli.render import type_name

if TYPE_CHECKING:
    from miniengine.storage.interfaces.queries import NodeView, Queries

__all__ = ["IDENTIFIER_HELP", "find_process", "process_identifier"]

IDENTIFIER_HELP = "a pk, a uuid, or a unique prefix of a uuid (or of its part after the timestamp)"

_HEX = frozenset("0123456789abcdefABCDEF-")


def process_identifier(text: str) -> str:
    """The argparse type of a process argument: refuses what can be neither a pk nor a uuid."""
    text = text.strip()
    if text and (text.isdecimal() or (set(text) <= _HEX and len(text) <= 36 and text != "-")):
        return text
    raise argparse.ArgumentTypeError(
        f"expected a pk or a uuid (or a unique prefix of one), not {text!r}"
    )


def _is_pk(text: str) -> bool:
    return text.isdecimal() and not text.startswith("0")  # pks start at 1


def find_process(queries: Queries, text: str) -> NodeView:
    """The process that ``text`` names, or ``CliError`` in the words every command shares."""
    row = queries.node(int(text)) if _is_pk(text) else None
    if row is None:
        from miniengine.storage.interfaces.provenance import ambiguous_prefix

        pks = queries.uuid_matches(text)
        if _is_pk(text) and len(pks) != 1:
            raise CliError(f"no process with pk {int(text)}")
        if not pks:
            raise CliError(f"no process with the uuid or uuid prefix {text!r}")
        if len(pks) > 1:
            raise CliError(str(ambiguous_prefix(text, pks)))
        row = queries.node(pks[0])
        assert row is not None
    if row.process_state is None or not row.node_type.startswith("process."):
        raise CliError(f"node {row.pk} is not a process (its type is {type_name(row.node_type)})")
    return row
