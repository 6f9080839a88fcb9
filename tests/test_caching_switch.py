"""The caching switch of a launch: with caching off a launch checks one flag and skips the
settings and the hash, yet every way of turning caching on still takes effect when it should."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from miniengine import Int, calcfunction, enable_caching
from miniengine.runtime import caching, context
from miniengine.storage.open import open_backend

pytestmark = pytest.mark.backends

_RUNS: list[int] = []


@calcfunction
def double(x: Int) -> Int:
    _RUNS.append(x.value)
    return Int(2 * x.value)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(caching.ENVIRONMENT_VARIABLE, raising=False)
    _RUNS.clear()
    yield
    caching.set_caching_config(default_enabled=False, store_all_hashes=False)


def _copied() -> bool:
    """Launch ``double(3)``: whether it was a copy (its body did not run)."""
    runs = len(_RUNS)
    _, node = double.run_get_node(Int(3))
    assert node.is_finished_ok
    return len(_RUNS) == runs and node.base.caching.get_cache_source() is not None


def test_each_way_to_turn_caching_on_is_seen_right_after_launches_with_it_off(
    backend_db: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with enable_caching():
        double(Int(3))  # the source
    store = context.store_for(None)
    assert not _copied() and not _copied()
    assert caching.off_for(store)  # the launches above took the one-check path
    _, unhashed = double.run_get_node(Int(3))
    assert unhashed.base.caching.get_hash() is None  # no hash computed or stored
    monkeypatch.setenv(caching.ENVIRONMENT_VARIABLE, "1")
    assert not caching.off_for(store) and _copied()
    monkeypatch.setenv(caching.ENVIRONMENT_VARIABLE, "0")
    assert not _copied()
    monkeypatch.delenv(caching.ENVIRONMENT_VARIABLE)
    assert not _copied() and caching.off_for(store)
    with enable_caching(identifier=double.process_type):
        assert _copied()
    assert not _copied()
    caching.set_caching_config(default_enabled=True)  # this program's own write: seen at once
    assert _copied()
    caching.set_caching_config(default_enabled=False)
    assert not _copied()
    caching.set_caching_config(store_all_hashes=True)
    _, hashed = double.run_get_node(Int(3))
    assert hashed.base.caching.get_hash() is not None and not caching.off_for(store)


def test_settings_written_by_another_program_are_seen_after_the_refresh(
    backend_db: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(caching, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    with enable_caching():
        double(Int(3))
    assert not _copied()  # read the settings: off, until CONFIG_REFRESH from now
    other = open_backend(backend_db)  # another program's connection
    try:
        other.caching.set_settings({caching.DEFAULT_ENABLED: True})
    finally:
        other.close()
    now[0] += caching.CONFIG_REFRESH / 2
    assert not _copied()  # the settings read before still hold: no read per launch
    now[0] += caching.CONFIG_REFRESH
    assert _copied()  # read again: on
