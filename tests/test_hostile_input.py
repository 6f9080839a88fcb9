"""Hostile input: what a careless user, a broken disk or a fuzzer hands the engine.

- the checkpoint decoder gets random bytes and truncated, bit-flipped or overwritten real
  checkpoints: it returns a value or raises its own ``CheckpointError``, nothing else;
- process inputs get wrong types, huge and non-finite numbers, 50 MB strings, deep nesting,
  lone surrogates and odd labels: a ``MiniengineError`` naming the input with nothing stored,
  or a faithful round trip through the database;
- the command line gets random arguments (in process, through ``miniengine.__main__.main``):
  exit status 0, 1 or 2 with a message, never a traceback;
- a database of a newer schema, garbage and truncated files: a clear error, the file untouched;
- a checkpoint overwritten with garbage while a real daemon runs: that process ends EXCEPTED
  saying why, the others finish.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniengine import (
    Data,
    Dict,
    Int,
    List,
    MiniengineError,
    Str,
    await_node,
    calcfunction,
    find_processes,
    load_node,
    run,
    run_get_node,
    submit,
)
from miniengine.core import codec
from miniengine.exceptions import CheckpointError, IncompatibleDatabaseError, NotExistent
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.storage.store import Store, close_all_stores
from miniengine.testing import open_gate
from tests.scripts import fault_chains
from tests.scripts.fault_chains import GatesWorkChain, StepsWorkChain
from tests.workchains.daemon_chains import DaemonGuard, wait_until

fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@calcfunction
def echo(x):  # type: ignore[no-untyped-def]
    """Returns a copy of whatever Data it was given (a calcfunction creates its outputs)."""
    return x.clone()


@calcfunction
def count_inputs(**inputs):  # type: ignore[no-untyped-def]
    return Int(len(inputs))


def _nodes(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        return int(connection.execute("SELECT count(*) FROM nodes").fetchone()[0])
    finally:
        connection.close()


_prepared: dict[Path, Any] = {}


def _once(db: Path, prepare: Any) -> Any:
    """``prepare()`` once per database: hypothesis runs many examples with one fixture."""
    if db not in _prepared:
        _prepared[db] = prepare()
    return _prepared[db]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# the checkpoint decoder -------------------------------------------------------------------------


def _decodes_or_refuses(blob: bytes) -> None:
    """Only ``CheckpointError`` (or its subclass for an unknown Data type) may come out."""
    try:
        codec.decode(blob)
    except CheckpointError:
        pass


def _real_checkpoints(db: Path) -> list[bytes]:
    """Checkpoints as the engine writes them: a submitted WorkChain's first one, and one of a
    WorkChain waiting for a child, with context, outputs and an outline cursor."""
    submit(StepsWorkChain, x=Int(1), y=Int(2))
    state = {
        "p": "tests.scripts.fault_chains:StepsWorkChain",
        "c": (1,),
        "s": 1,
        "x": {"child": codec.NodeRef(7), "note": Str("unstored"), "big": 2**70, "t": (1, 2.5)},
        "w": [[7, "child", False]],
        "i": {"x": codec.NodeRef(1), "y": codec.NodeRef(2)},
        "o": {"sum": codec.NodeRef(5)},
    }
    connection = sqlite3.connect(db)
    try:
        stored = [bytes(row[0]) for row in connection.execute("SELECT data FROM checkpoints")]
    finally:
        connection.close()
    assert stored, "submit() wrote no checkpoint"
    return [*stored, codec.encode(state), codec.encode(codec.benchmark_state())]


@fuzz
@given(blob=st.binary(max_size=600))
def test_random_bytes_only_raise_checkpoint_error(blob: bytes) -> None:
    _decodes_or_refuses(blob)


@fuzz
@given(body=st.binary(max_size=600))
def test_random_bytes_behind_a_valid_header_only_raise_checkpoint_error(body: bytes) -> None:
    _decodes_or_refuses(codec._HEADER + body)


def test_every_truncation_of_real_checkpoints_is_refused(miniengine_db: Path) -> None:
    checkpoints = _real_checkpoints(miniengine_db)
    for blob in checkpoints:
        for length in range(len(blob)):
            with pytest.raises(CheckpointError):
                codec.decode(blob[:length])
    print(f"{sum(len(blob) for blob in checkpoints)} truncations refused")


@fuzz
@given(data=st.data())
def test_bit_flips_and_overwrites_of_real_checkpoints_only_raise_checkpoint_error(
    miniengine_db: Path, data: st.DataObject
) -> None:
    blobs = _once(miniengine_db, lambda: _real_checkpoints(miniengine_db))
    blob = bytearray(data.draw(st.sampled_from(blobs)))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[index] ^= 1 << data.draw(st.integers(0, 7))
        else:
            blob[index] = data.draw(st.integers(0, 255))
    _decodes_or_refuses(bytes(blob))


@pytest.mark.parametrize(
    "body",
    [
        b"\x91" * 100_000,  # arrays nested 100,000 deep
        b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items, then nothing
        b"\xdb\xff\xff\xff\xff",  # a str of 4 GB, then nothing
        b"\xc9\xff\xff\xff\xff\x00",  # an extension value of 4 GB
        b"\x92\xd4\x01\x00" * 1000,  # tuple markers out of place
        b"\xd4\x03\x00",  # a stored node of pk 0 bytes
        b"\xc7\x00\x03",  # a stored node without a pk
        b"\xd4\x7f\x00",  # an extension code nobody registered
    ],
    ids=["deep", "huge-array", "huge-str", "huge-ext", "markers", "pk-0", "no-pk", "unknown-ext"],
)
def test_adversarial_checkpoints_are_refused_at_once(body: bytes) -> None:
    _decodes_or_refuses(codec._HEADER + body)


# process inputs ---------------------------------------------------------------------------------

huge_ints = st.integers(min_value=-(2**300), max_value=2**300)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30) | st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "\x1b[31mred", "a.b", ".", "", "\u202e", "🙂" * 10]
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, st.floats(), texts, st.binary(max_size=8)
)
plain = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=10,
)
strange = st.sampled_from([object(), {1, 2}, 1j, range(3), Path("/tmp"), {1: 2}, {"a": {3: 4}}])


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


hostile = st.one_of(plain, strange, st.integers(200, 5000).map(_nest))


def _same(stored: Any, given_value: Any) -> bool:
    """Equal as the database gives values back: tuples as lists, NaN equal to NaN."""
    if isinstance(given_value, float) and math.isnan(given_value):
        return isinstance(stored, float) and math.isnan(stored)
    if isinstance(given_value, list | tuple):
        return (
            isinstance(stored, list)
            and len(stored) == len(given_value)
            and all(_same(a, b) for a, b in zip(stored, given_value, strict=True))
        )
    if isinstance(given_value, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == given_value.keys()
            and all(_same(stored[key], item) for key, item in given_value.items())
        )
    return type(stored) is type(given_value) and stored == given_value


def _plain_value(node: Data) -> Any:
    if isinstance(node, Dict):
        return node.get_dict()
    if isinstance(node, List):
        return node.get_list()
    return node.value  # type: ignore[attr-defined]


@fuzz
@given(value=hostile)
def test_a_hostile_input_is_refused_naming_its_port_or_round_trips(
    miniengine_db: Path, value: Any
) -> None:
    Store(miniengine_db).close()
    before = _nodes(miniengine_db)
    try:
        result, node = run_get_node(echo, value)
    except MiniengineError as exc:
        assert "'x'" in str(exc), str(exc)
        assert _nodes(miniengine_db) == before, "a refused input left nodes behind"
        return
    assert node.is_finished_ok
    stored_input = load_node(node.inputs.x.pk)
    stored_output = load_node(result.pk)
    assert _same(_plain_value(stored_input), value), (value, _plain_value(stored_input))
    assert _same(_plain_value(stored_output), value)


@fuzz
@given(label=texts | st.text(max_size=200))
def test_a_hostile_label_or_input_name_is_refused_naming_it_or_kept_as_given(
    miniengine_db: Path, label: str
) -> None:
    Store(miniengine_db).close()
    before = _nodes(miniengine_db)
    try:
        _, node = run_get_node(echo, Int(1), metadata={"label": label})
    except MiniengineError as exc:
        assert "label" in str(exc), str(exc)
        assert _nodes(miniengine_db) == before
    else:
        assert load_node(node.pk).label == label
    before = _nodes(miniengine_db)
    try:
        result, node = run_get_node(count_inputs, **{label: Int(1)})
    except MiniengineError as exc:
        assert repr(label)[1:-1] in str(exc) or label in str(exc), str(exc)
        assert _nodes(miniengine_db) == before
    else:
        assert result.value == 1
        incoming = load_node(node.pk).base.links.get_incoming()
        assert [link.link_label for link in incoming] == [label]


@fuzz
@given(
    value=hostile
    | st.builds(Int, huge_ints)
    | st.builds(Dict, st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1)))
)
def test_a_hostile_value_in_a_workchain_context_is_checkpointed_or_refused_naming_it(
    miniengine_db: Path, value: Any
) -> None:
    """The step's commit checkpoints the context: a value that cannot be checkpointed ends
    the process EXCEPTED with an error naming ``ctx.value``; any other comes back in the next
    step.  Either way no process is left live."""
    fault_chains.CONTEXT_VALUE[0] = value
    try:
        outputs = run(fault_chains.ContextChain)
    except MiniengineError as exc:
        assert "ctx.value" in str(exc), str(exc)
    else:
        assert outputs["kept"].value == 1
    assert find_processes(state=["created", "running", "waiting"]) == []


def test_ints_beyond_64_bits_round_trip_as_int_and_are_refused_inside_a_dict(
    miniengine_db: Path,
) -> None:
    for value in (2**64, -(2**63) - 1, 2**300, -(2**300)):
        assert load_node(run(echo, value).pk).value == value
        before = _nodes(miniengine_db)
        with pytest.raises(MiniengineError, match=r"'x'.*64 bits"):
            run(echo, {"deep": [value]})
        assert _nodes(miniengine_db) == before
    for edge in (2**64 - 1, -(2**63)):  # the last values msgpack stores inside a Dict
        assert load_node(run(echo, {"a": edge}).pk).get_dict() == {"a": edge}


def test_a_50_mb_string_round_trips(miniengine_db: Path) -> None:
    text = "ü" + "x" * (50 * 1024 * 1024)
    result = run(echo, Str(text))
    close_all_stores()
    assert load_node(result.pk).value == text


def test_pks_and_limits_beyond_64_bits_name_nothing(miniengine_db: Path) -> None:
    """A huge pk is a pk that does not exist, not a bare ``OverflowError`` from sqlite."""
    from miniengine.control import kill

    run(echo, 1)
    for pk in (2**63, 2**70, -(2**70)):
        with pytest.raises(NotExistent):
            load_node(pk)
        with pytest.raises(NotExistent):
            kill(pk)
    assert len(find_processes(limit=2**70)) == 1


# the command line -------------------------------------------------------------------------------


COMMANDS = [
    ["process", "list"],
    ["process", "show"],
    ["process", "report"],
    ["process", "status"],
    ["process", "pause"],
    ["process", "play"],
    ["process", "kill"],
    ["process", "repair"],
    ["db", "info"],
    ["db", "migrate"],
    ["db", "vacuum"],
    ["db", "backup"],
    ["daemon", "status"],
    ["node", "show"],
    ["node", "attributes"],
    ["node", "extras"],
    ["group", "create"],
    ["group", "list"],
    ["group", "show"],
    ["group", "add-nodes"],
    ["group", "remove-nodes"],
    ["group", "delete"],
    ["process"],
    ["db"],
    ["nonsense"],
    [],
]
TOKENS = st.one_of(
    st.sampled_from(
        [
            "-a",
            "--all",
            "-p",
            "--past",
            "-S",
            "--state",
            "-l",
            "--limit",
            "-m",
            "--message",
            "--json",
            "--dry-run",
            "-h",
            "--help",
            "--version",
            "--db",
            "--force",
            "-",
            "--",
            "-x",
            "1",
            "2",
            "0",
            "-1",
            "99999999999999999999999999",
            "9223372036854775808",
            "1e400",
            "0x10",
            "01",
            "٣",
            "7d",
            "30m",
            "-5h",
            "finished",
            "excepted",
            "\udcff",
            "a\udcfeb",
            "\x1b[2J",
            "x" * 300,
            "0190",
            "ffffffff",
        ]
    ),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
)


@fuzz
@given(command=st.sampled_from(COMMANDS), tokens=st.lists(TOKENS, max_size=5))
def test_random_command_lines_exit_0_1_or_2_without_a_traceback(
    miniengine_db: Path, tmp_path: Path, command: list[str], tokens: list[str]
) -> None:
    from miniengine.__main__ import main

    _once(miniengine_db, lambda: (run(echo, 1), run(StepsWorkChain, x=Int(1), y=Int(2))))
    argv = [*command, *tokens]
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # relative paths a backup or --db may name land here
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        os.chdir(cwd)
        close_all_stores()
    assert status in (0, 1, 2), (argv, status, err.getvalue())
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
    if status != 0:
        assert (out.getvalue() + err.getvalue()).strip(), (argv, "failed without a message")


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["process", "show", "99999999999999999999999999"], 1),
        (["process", "kill", "9223372036854775808"], 1),
        (["process", "report", "9223372036854775808"], 1),
        (["process", "status", "18446744073709551616"], 1),
        (["process", "list", "-a", "-l", "99999999999999999999999999"], 0),
    ],
)
def test_numbers_beyond_64_bits_on_the_command_line_are_answered_not_crashed_on(
    miniengine_db: Path, argv: list[str], status: int
) -> None:
    run(echo, 1)
    close_all_stores()
    code, err = _cli([*argv, "--db", str(miniengine_db)])
    assert code == status, err
    assert "Traceback" not in err and "OverflowError" not in err
    if status:
        assert err.startswith("error: no process with pk "), err


def test_a_backup_to_a_file_name_that_is_not_utf8_is_written(
    miniengine_db: Path, tmp_path: Path
) -> None:
    """A file name with bytes that are not UTF-8 (``\\udcff`` in ``sys.argv``) reaches the
    file system as those bytes, for the database and for a backup."""
    from miniengine.__main__ import main

    folder = os.fsdecode(bytes(tmp_path) + b"/\xff")
    os.mkdir(folder, 0o700)
    db = Path(folder) / "engine.sqlite"
    os.environ["MINIENGINE_DB"] = str(db)
    assert run(echo, 5).value == 5
    close_all_stores()
    target = os.fsdecode(bytes(tmp_path) + b"/backup-\xfe.sqlite")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["db", "backup", target, "--db", str(db)]) == 0
    assert os.path.exists(bytes(tmp_path) + b"/backup-\xfe.sqlite")
    connection = sqlite3.connect(target)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


# files that are not (or no longer) our database ----------------------------------------------


def _cli(argv: list[str]) -> tuple[int, str]:
    from miniengine.__main__ import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 2
    return status, err.getvalue()


def _filled(db: Path) -> None:
    os.environ["MINIENGINE_DB"] = str(db)
    for index in range(200):
        run(echo, Str(f"{index}" * 500))
    close_all_stores()


def _corruptions(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.sqlite"
    _filled(good)
    content = good.read_bytes()
    rng = random.Random(7)
    files = {
        "garbage": os.urandom(16384),
        "text": b"this is not a database\n" * 100,
        "truncated to 100 bytes": content[:100],
        "truncated to half": content[: len(content) // 2],
        "pages overwritten": content[:8192]
        + bytes(rng.randrange(256) for _ in range(len(content) - 8192)),
    }
    paths = {}
    for name, data in files.items():
        path = tmp_path / (name.replace(" ", "-") + ".sqlite")
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = path
    return paths


BROKEN_FILE_COMMANDS = [
    ["process", "list", "-a"],
    ["process", "show", "1"],
    ["db", "info"],
    ["db", "migrate"],
    ["process", "repair"],
    ["process", "kill", "3"],
]


def test_garbage_and_truncated_files_give_a_clear_error_and_stay_untouched(
    miniengine_db: Path, tmp_path: Path
) -> None:
    for name, path in _corruptions(tmp_path).items():
        digest = _digest(path)
        os.environ["MINIENGINE_DB"] = str(path)
        for attempt in (lambda: load_node(1), lambda: find_processes(), lambda: run(echo, 1)):
            with pytest.raises(MiniengineError):
                attempt()
        close_all_stores()
        for argv in BROKEN_FILE_COMMANDS:
            status, err = _cli([*argv, "--db", str(path)])
            assert status == 1, (name, argv, err)
            assert err.startswith("error: ") and "Traceback" not in err, (name, argv, err)
            assert str(path) in err, (name, argv, err)
        assert _digest(path) == digest, f"{name}: the file was changed"


def test_a_database_of_a_newer_schema_is_refused_untouched(
    miniengine_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "newer.sqlite"
    _filled(db)
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    digest = _digest(db)
    os.environ["MINIENGINE_DB"] = str(db)
    for attempt in (lambda: load_node(1), lambda: run(echo, 1), lambda: Store(db)):
        with pytest.raises(IncompatibleDatabaseError, match="newer"):
            attempt()
    close_all_stores()
    status, err = _cli(["process", "list", "--db", str(db)])
    assert status == 1 and "newer" in err and "Traceback" not in err
    assert _digest(db) == digest
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


# a checkpoint overwritten while the daemon runs ---------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs a daemon")
def test_a_checkpoint_overwritten_while_the_daemon_runs_excepts_that_process_only(
    tmp_path: Path,
) -> None:
    db = tmp_path / "daemon.sqlite"
    os.environ["MINIENGINE_DB"] = str(db)
    garbage = {
        1: b"\x00garbage, not a checkpoint",
        2: codec._HEADER + b"\xdd\xff\xff\xff\xff",  # a valid header, then nonsense
    }
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "2")
        parents = [submit(GatesWorkChain, gate=Str(f"gate{index}")) for index in range(4)]

        def waiting() -> bool:
            return all(node.process_state.value == "waiting" for node in parents)

        wait_until(waiting, 60, "every parent to wait for its children")
        connection = sqlite3.connect(db, timeout=30)
        try:
            for index, blob in garbage.items():
                with connection:
                    connection.execute(
                        "UPDATE checkpoints SET data = ? WHERE node_pk = ?",
                        (blob, parents[index].pk),
                    )
        finally:
            connection.close()
        for index in range(4):
            open_gate(f"gate{index}", db=db)
        for node in parents:
            await_node(node, timeout=60)
        state = daemon.state()
        assert state is not None and state["state"] == "ready", state
    for index, node in enumerate(parents):
        if index in garbage:
            assert node.process_state.value == "excepted", (index, node.process_state)
            assert "checkpoint" in (node.exception or ""), node.exception
            assert "CheckpointError" in (node.exception or ""), node.exception
        else:
            assert node.is_finished_ok, (index, node.exception)
            assert node.outputs.passed.value == 2
    children = find_processes(process_label="WaitingProcess")
    assert len(children) == 8 and all(child.is_finished_ok for child in children)
