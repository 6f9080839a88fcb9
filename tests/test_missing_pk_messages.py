"""A pk that no node has is named as a pk, by ``load_node``, ``aload_node`` and ``miniengine
node show`` alike (a string of digits was reported as a missing uuid prefix), on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from miniengine import Int, aload_node, load_node
from miniengine.exceptions import NotExistent
from miniengine.runtime.context import store_for
from tests.test_cli import cli

pytestmark = pytest.mark.backends


def test_a_missing_pk_is_named_as_a_pk(miniengine_db: Path | str) -> None:
    node = Int(5).store()
    missing = str(node.pk + 1000)
    message = f"no node with the pk {missing} \\(nor a uuid starting with '{missing}'\\)"
    with pytest.raises(NotExistent, match=message):
        load_node(missing)
    with pytest.raises(NotExistent, match=message):
        asyncio.run(aload_node(missing))
    with pytest.raises(NotExistent, match=f"no node with the pk {missing}$"):
        load_node(int(missing))
    assert load_node(str(node.pk)).value == 5  # a pk that exists still loads
    store_for(miniengine_db).close()
    for command in (["node", "show", missing], ["node", "extras", missing, "--json"]):
        done = cli(*command, db=miniengine_db)
        assert done.returncode != 0
        assert f"no node with the pk {missing} (nor a uuid starting with" in done.stderr
