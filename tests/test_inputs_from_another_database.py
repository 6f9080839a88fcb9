"""A launch refuses stored inputs of another database (their pk names another node there), and
takes those of its own store, the common case, without building and comparing locations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from miniengine import Int, calcfunction
from miniengine.exceptions import InputValidationError
from miniengine.runtime import context
from miniengine.storage.store import Store


@calcfunction
def add(x, y):  # type: ignore[no-untyped-def]
    return Int(x + y)


def test_a_stored_input_of_another_database_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIENGINE_DB", str(tmp_path / "first.sqlite"))
    x = Int(1).store()
    assert add(x, Int(2)) == 3  # its own database
    second = tmp_path / "second.sqlite"
    monkeypatch.setenv("MINIENGINE_DB", str(second))
    with pytest.raises(InputValidationError, match="the input 'x' is stored in another database"):
        add(x, Int(2))
    if second.exists():
        connection = sqlite3.connect(second)
        try:
            assert connection.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0
        finally:
            connection.close()


def test_inputs_of_the_launch_s_own_store_are_not_compared_by_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIENGINE_DB", str(tmp_path / "engine.sqlite"))
    x, y = Int(1).store(), Int(2).store()
    store = context.store_for(None)
    looked = []
    location = Store.location

    def counted(store: Store) -> str:
        looked.append(store)
        return location.fget(store)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(Store, "location", property(counted))
    context.check_same_database(store, [("x", x), ("y", y)], "add")
    assert looked == []
    other = Store(tmp_path / "other.sqlite")
    try:
        with pytest.raises(InputValidationError, match="the input 'y' is stored in another"):
            context.check_same_database(other, [("y", y)], "add")
    finally:
        other.close()
