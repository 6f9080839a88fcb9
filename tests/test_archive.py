"""Archives: create one portable file from a database, import it into another, on sqlite and on
PostgreSQL.

A round trip keeps every node, link, attribute, extra, comment, log, group, computer and file
(compared by uuid, read back through the archive concern and through the public API); a second
import adds nothing; a selection follows AiiDA's export rules, written out again here; every
kind of damaged or changed file is refused before anything is imported, and a failure half-way
through an import rolls it back whole (its files stay for `db maintain`: another write may
name them).
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from miniengine import (
    Computer,
    Group,
    InstalledCode,
    Int,
    SinglefileData,
    WorkChain,
    calcfunction,
    load_node,
    run,
    submit,
    workfunction,
)
from miniengine.exceptions import (
    ArchiveError,
    CorruptArchive,
    IncompatibleArchiveVersionError,
    MiniengineError,
    ValidationError,
)
from miniengine.runtime.context import store_for
from miniengine.storage.interfaces.archive import ARCHIVE_TABLES, ExportSelection
from miniengine.storage.open import close_all_backends, open_backend
from miniengine.storage.repository import Repository
from miniengine.tools.archive import create_archive, import_archive, inspect_archive
from miniengine.tools.archive.format import seal

pytestmark = pytest.mark.backends

#: AiiDA's export rules (``GraphTraversalRules.EXPORT``), written out again: (link type,
#: forwards) -> followed by default.
AIIDA_EXPORT = {
    ("input_calc", True): False,
    ("input_calc", False): True,
    ("create", True): True,
    ("create", False): True,
    ("return", True): True,
    ("return", False): False,
    ("input_work", True): False,
    ("input_work", False): True,
    ("call_calc", True): True,
    ("call_calc", False): True,
    ("call_work", True): True,
    ("call_work", False): True,
}

#: The columns of ``nodes`` an archive leaves out: who runs a process now, not what it did.
RUN_TIME_COLUMNS = {
    "owner",
    "lease_epoch",
    "lease_expires",
    "submitted",
    "control",
    "paused",
    "awaited",
}


@calcfunction
def add(x: Any, y: Any) -> Int:
    return Int(x + y)


@calcfunction
def double(x: Any) -> Int:
    return Int(2 * x)


@workfunction
def add_and_double(x: Any, y: Any) -> Any:
    return double(add(x, y))


class Reporting(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        self.report(f"doubling {self.inputs.x.value}")
        self.out("result", double(self.inputs.x))


@pytest.fixture(autouse=True)
def _closed_afterwards() -> Any:
    yield
    close_all_backends()


def _fill(tmp_path: Path) -> dict[str, Any]:
    """Processes with reports, extras, a comment, a group, a computer and a code, a file."""
    result, workfunction_node = run.get_node(add_and_double, Int(3), Int(4))
    outputs, chain = run.get_node(Reporting, x=Int(5))
    computer = Computer("archivehost", "localhost", description="for the archive").store()
    code = InstalledCode(computer=computer, filepath_executable="/bin/true", label="t").store()
    text = tmp_path / "input.txt"
    text.write_text("the content of a file\n")
    single = SinglefileData(text).store()
    result.base.extras.set_many({"tag": "kept", "n": 1})
    workfunction_node.base.comments.add("a remark")
    group = Group(label="results", description="what came out").store()
    group.add_nodes([result, outputs["result"], single])
    group.base.extras.set("origin", "test")
    return {
        "result": result.pk,
        "workfunction": workfunction_node.pk,
        "chain": chain.pk,
        "code": code.pk,
        "file": single.pk,
        "group": group.pk,
    }


class _Rows:
    """A sink that keeps what an export writes (small databases only)."""

    def __init__(self) -> None:
        self.tables: dict[str, list[tuple[Any, ...]]] = {}

    def begin(self) -> None:
        self.tables = {name: [] for name in ARCHIVE_TABLES}

    def write(self, table: str, rows: Any) -> None:
        self.tables[table].extend(tuple(row) for row in rows)


def _content(db: Path | str) -> dict[str, Any]:
    """Everything an archive carries, keyed by uuid rather than by pk."""
    backend = open_backend(db)
    try:
        sink = _Rows()
        backend.archives.export_rows(ExportSelection(everything=True), sink)
    finally:
        backend.close()
    t = sink.tables
    node = {row[0]: row[1] for row in t["nodes"]}
    computer = {row[0]: row[1] for row in t["computers"]}
    group = {row[0]: row[1] for row in t["groups"]}
    columns = ARCHIVE_TABLES["nodes"]

    def plain(row: tuple[Any, ...]) -> dict[str, Any]:
        value = dict(zip(columns, row, strict=True))
        value.pop("pk")
        value["extras"] = json.loads(value["extras"])
        value["attributes"] = bytes(value["attributes"]) if value["attributes"] else None
        if value["computer_pk"] is not None:
            value["computer_pk"] = computer[value["computer_pk"]]
        return value

    members: dict[str, set[str]] = {}
    for group_pk, node_pk in t["group_nodes"]:
        members.setdefault(group[group_pk], set()).add(node[node_pk])
    return {
        "nodes": {row[1]: plain(row) for row in t["nodes"]},
        "links": sorted((node[a], node[b], kind, label) for a, b, kind, label in t["links"]),
        "logs": sorted((node[row[0]], *row[1:]) for row in t["logs"]),
        "comments": sorted((row[0], node[row[1]], *row[2:]) for row in t["comments"]),
        "groups": {
            row[1]: (*row[2:5], json.loads(row[5]), row[6], members.get(row[1], set()))
            for row in t["groups"]
        },
        "computers": {row[1]: (*row[2:7], bytes(row[7]), *row[8:]) for row in t["computers"]},
    }


def _target(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Path | str:
    """A new database of the backend under test (another PostgreSQL database, on the server)."""
    source = request.getfixturevalue("miniengine_db")
    if isinstance(source, Path):
        return _new_file(tmp_path, name)
    server = request.getfixturevalue("postgres_server")
    url: str = server.create_database(with_schema=True)
    request.addfinalizer(lambda: server.drop_database(url.rsplit("/", 1)[1]))
    return url


def _new_file(tmp_path: Path, name: str) -> Path:
    """The path of a new database file in a folder of its own."""
    folder = tmp_path / name
    folder.mkdir(mode=0o700)
    return folder / "engine.sqlite"


def _node_count(db: Path | str) -> int:
    return len(_content(db)["nodes"])


def _import_groups(content: dict[str, Any]) -> dict[str, Any]:
    """The groups an import made of the archive's nodes (type ``core.import``), by uuid."""
    return {uuid: group for uuid, group in content["groups"].items() if group[1] == "core.import"}


def _archived(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` without the groups imports made."""
    made = _import_groups(content)
    groups = {uuid: group for uuid, group in content["groups"].items() if uuid not in made}
    return {**content, "groups": groups}


def test_the_exported_columns_are_those_of_the_schema(backend_db: Any) -> None:
    """A column added to ``nodes`` and not to the archive fails here: every archive would
    lose it silently."""
    from miniengine.storage.copy import open_load

    load = open_load(backend_db)
    try:
        schema = load.columns()
    finally:
        load.close()
    assert set(ARCHIVE_TABLES["nodes"]) == set(schema["nodes"]) - RUN_TIME_COLUMNS
    for table in ("links", "logs", "comments", "groups", "group_nodes"):
        assert set(ARCHIVE_TABLES[table]) <= set(schema[table]), table
    assert set(ARCHIVE_TABLES["computers"]) == set(schema["computers"]) - {"configuration"}


def test_a_round_trip_keeps_everything_and_a_second_import_adds_nothing(
    miniengine_db: Path | str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pks = _fill(tmp_path)
    before = _content(miniengine_db)
    assert before["logs"] and before["comments"] and before["computers"]
    path = tmp_path / "all.miniengine"
    info = create_archive(path, all=True)
    assert info.checksum_ok and info.counts["nodes"] == len(before["nodes"])
    assert info.counts["objects"] == 1
    assert [group["label"] for group in info.groups] == ["results"]

    target = _target(request, tmp_path, "target")
    if isinstance(target, str):  # the files of the second database go to a folder of its own
        monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "target-repository"))
    report = import_archive(path, db=target)
    assert report.new_nodes == len(before["nodes"]) and report.existing_nodes == 0
    assert report.new_links == len(before["links"]) and report.new_groups == 1
    assert report.new_computers == 1 and report.new_logs == len(before["logs"])
    imported = _content(target)
    assert _archived(imported) == before
    # as AiiDA's, the import put every node of the archive into a new group of its own
    [(label, *_, members)] = _import_groups(imported).values()
    assert report.import_group == label and members == set(before["nodes"])

    # the public API of the target reads the same things, the file's content included
    backend = open_backend(target)
    try:
        uuid = load_node(pks["file"]).uuid
        single = load_node(uuid=uuid, db=backend)
        assert single.get_content() == "the content of a file\n"
        assert single.pk is not None
        result = load_node(uuid=load_node(pks["result"]).uuid, db=backend)
        assert result.base.extras.all == {"tag": "kept", "n": 1}
        caller = load_node(uuid=load_node(pks["workfunction"]).uuid, db=backend)
        assert [c.content for c in caller.base.comments.all()] == ["a remark"]
    finally:
        backend.close()

    again = import_archive(path, db=target)
    assert again.new_nodes == 0 and again.existing_nodes == len(before["nodes"])
    assert (again.new_links, again.new_logs, again.new_comments, again.new_groups) == (0, 0, 0, 0)
    assert again.merged_groups == 1 and again.group_members_added == 0
    assert _archived(_content(target)) == before


def test_a_sqlite_target_takes_an_archive_of_either_backend(
    miniengine_db: Path | str, tmp_path: Path
) -> None:
    _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)
    target = _new_file(tmp_path, "elsewhere")
    assert import_archive(path, db=target, create_group=False).import_group is None
    assert _content(target) == _content(miniengine_db)


def _links(db: Path | str) -> list[tuple[int, int, str]]:
    store = store_for(db)
    pks = sorted(store.provenance.nodes(list(range(1, 10_000))))
    return [
        (link.in_pk, link.out_pk, link.link_type)
        for link in store.traversal.neighbour_links(pks, incoming=False)
    ]


def _expected(db: Path | str, start: list[int], rules: dict[tuple[str, bool], bool]) -> set[int]:
    """The closure of ``start`` under ``rules``, computed without the engine's traversal."""
    links = _links(db)
    found = set(start)
    changed = True
    while changed:
        changed = False
        for in_pk, out_pk, link_type in links:
            if in_pk in found and out_pk not in found and rules[(link_type, True)]:
                found.add(out_pk)
                changed = True
            if out_pk in found and in_pk not in found and rules[(link_type, False)]:
                found.add(in_pk)
                changed = True
    return found


def _uuids(db: Path | str, pks: set[int]) -> set[str]:
    return {row.uuid for row in store_for(db).provenance.nodes(sorted(pks)).values()}


def test_a_selection_follows_aiidas_export_rules(miniengine_db: Path | str, tmp_path: Path) -> None:
    pks = _fill(tmp_path)
    inner = next(
        link.in_pk
        for link in store_for(None).traversal.neighbour_links([pks["result"]], incoming=True)
        if link.link_type == "create"
    )  # the calcfunction `double` that created the result, called by the workfunction
    for start, rules, toggles in (
        ([pks["result"]], AIIDA_EXPORT, {}),
        ([inner], AIIDA_EXPORT, {}),
        ([inner], {**AIIDA_EXPORT, ("call_calc", False): False}, {"call_calc_backward": False}),
        ([pks["chain"]], AIIDA_EXPORT, {}),
    ):
        path = tmp_path / f"selection-{start[0]}-{len(toggles)}.miniengine"
        create_archive(path, nodes=start, **toggles)
        expected = _uuids(miniengine_db, _expected(miniengine_db, start, rules))
        target = _new_file(tmp_path, f"target-{start[0]}-{len(toggles)}")
        import_archive(path, db=target)
        assert set(_content(target)["nodes"]) == expected, (start, toggles)
    # a calcfunction takes its inputs and its outputs along, and by default its caller
    assert _expected(miniengine_db, [inner], AIIDA_EXPORT) >= {pks["result"], pks["workfunction"]}
    assert pks["workfunction"] not in _expected(
        miniengine_db, [inner], {**AIIDA_EXPORT, ("call_calc", False): False}
    )

    # a group: its nodes with what the rules take, the group with exactly those members
    path = tmp_path / "group.miniengine"
    info = create_archive(path, groups=["results"])
    assert info.groups[0]["label"] == "results" and info.groups[0]["nodes"] == 3
    target = _new_file(tmp_path, "group-target")
    import_archive(path, db=target, create_group=False)
    imported = _content(target)
    group = next(iter(imported["groups"].values()))
    assert group[0] == "results" and group[3] == {"origin": "test"} and len(group[5]) == 3
    members = store_for(None).groups.group_node_pks(pks["group"])
    assert set(imported["nodes"]) == _uuids(
        miniengine_db, _expected(miniengine_db, members, AIIDA_EXPORT)
    )


def test_bad_requests_are_refused_before_anything_is_written(
    miniengine_db: Path | str, tmp_path: Path
) -> None:
    pks = _fill(tmp_path)
    path = tmp_path / "out.miniengine"
    with pytest.raises(ValidationError, match="nothing to export"):
        create_archive(path)
    with pytest.raises(ValidationError, match="not both"):
        create_archive(path, all=True, nodes=[pks["result"]])
    with pytest.raises(MiniengineError, match="no node with pk 999999"):
        create_archive(path, nodes=[pks["result"], 999_999])
    with pytest.raises(ValueError, match="not a traversal rule"):
        create_archive(path, nodes=[pks["result"]], sideways=True)
    with pytest.raises(ValueError, match="cannot be changed"):
        create_archive(path, nodes=[pks["result"]], create_forward=False)
    assert not path.exists()
    path.write_bytes(b"precious")
    with pytest.raises(ArchiveError, match="exists already"):
        create_archive(path, all=True)
    assert path.read_bytes() == b"precious"
    create_archive(path, all=True, overwrite=True)
    with pytest.raises(ValidationError, match="extras_mode_existing"):
        import_archive(path, db=_new_file(tmp_path, "t"), extras_mode_existing="merge")

    # a process that has not finished is refused, and named; no file is left behind
    waiting = submit(Reporting, x=Int(1))
    with pytest.raises(ArchiveError, match=rf"not finished: {waiting.pk} \(Reporting, created\)"):
        create_archive(tmp_path / "unfinished.miniengine", all=True)
    assert sorted(p.name for p in tmp_path.iterdir() if "miniengine" in p.name) == [
        "out.miniengine"
    ]
    # ... unless the selection leaves it out
    create_archive(tmp_path / "finished.miniengine", nodes=[pks["result"]])


# damaged and changed files ---------------------------------------------------------------------


def _rewrite(
    source: Path,
    target: Path,
    *,
    drop: str | None = None,
    replace: dict[str, bytes] | None = None,
    metadata: Any = None,
    reseal: bool = True,
) -> None:
    """Copy the archive ``source`` to ``target`` with changes, as someone editing it would."""
    with zipfile.ZipFile(source) as old:
        data = json.loads(old.read("metadata.json"))
        if metadata is not None:
            metadata(data)
        written = json.dumps(data).encode()
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
            for info in old.infolist():
                if info.filename in ("metadata.json", drop):
                    continue
                new.writestr(info.filename, (replace or {}).get(info.filename, old.read(info)))
            new.writestr("metadata.json", written)
            new.comment = seal(written) if reseal else old.comment


def _flip_byte_in(source: Path, target: Path, member: str) -> None:
    """Change one byte in the middle of a member's stored (compressed) data."""
    raw = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(member)
    header = info.header_offset
    name_length = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    raw[start + info.compress_size // 2] ^= 0xFF
    target.write_bytes(bytes(raw))


def _changed_database(source: Path, folder: Path, statement: str) -> bytes:
    """The archive's database after ``statement``, as someone forging an archive would."""
    with zipfile.ZipFile(source) as archive:
        database = folder / "forged.sqlite"
        database.write_bytes(archive.read("db.sqlite"))
    connection = sqlite3.connect(database)
    connection.execute(statement)
    connection.commit()
    connection.close()
    data = database.read_bytes()
    database.unlink()
    return data


def _forged(good: Path, folder: Path, statement: str) -> Any:
    """A maker of an archive whose database ``statement`` changed, its checksums made to fit."""
    data = _changed_database(good, folder, statement)
    digest = hashlib.sha256(data).hexdigest()
    return lambda p: _rewrite(
        good,
        p,
        replace={"db.sqlite": data},
        metadata=lambda m: m["members"].update({"db.sqlite": digest}),
    )


def test_damaged_or_changed_archives_are_refused_and_nothing_is_imported(
    miniengine_db: Path | str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fill(tmp_path)
    good = tmp_path / "good.miniengine"
    create_archive(good, all=True)
    with zipfile.ZipFile(good) as archive:
        names = archive.namelist()
    file_member = next(name for name in names if name.startswith("repo/"))
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = good.read_bytes()
    cases: list[tuple[str, Any, type[Exception], str]] = [
        (
            "not-a-zip",
            lambda p: p.write_bytes(b"hello, not an archive\n" * 10),
            CorruptArchive,
            "not a zip file",
        ),
        (
            "truncated",
            lambda p: p.write_bytes(raw[: len(raw) // 2]),
            CorruptArchive,
            "not a zip file, or a truncated one",
        ),
        (
            "missing-file",
            lambda p: _rewrite(good, p, drop=file_member),
            CorruptArchive,
            f"the member {file_member} is missing",
        ),
        (
            "missing-database",
            lambda p: _rewrite(good, p, drop="db.sqlite"),
            CorruptArchive,
            "the member db.sqlite is missing",
        ),
        (
            "changed-file",
            lambda p: _rewrite(good, p, replace={file_member: b"changed\n"}),
            CorruptArchive,
            f"the member {file_member} was changed",
        ),
        (
            "wrong-checksum",
            lambda p: _rewrite(
                good,
                p,
                metadata=lambda m: m["members"].update(
                    {"db.sqlite": hashlib.sha256(b"other").hexdigest()}
                ),
            ),
            CorruptArchive,
            "the member db.sqlite was changed",
        ),
        (
            "unsealed-metadata",
            lambda p: _rewrite(
                good, p, metadata=lambda m: m["counts"].update(nodes=1), reseal=False
            ),
            CorruptArchive,
            "does not match the archive's seal",
        ),
        (
            "newer-format",
            lambda p: _rewrite(good, p, metadata=lambda m: m.update(format_version=99)),
            IncompatibleArchiveVersionError,
            "format version 99",
        ),
        (
            "dangling-link",
            _forged(
                good,
                bad,
                "INSERT INTO links (in_pk, out_pk, link_type, label) "
                "VALUES (1, 999999, 'create', 'x')",
            ),
            CorruptArchive,
            "inconsistent: a row of links names a missing row of nodes",
        ),
        (
            "trigger",
            _forged(good, bad, "CREATE TRIGGER t AFTER INSERT ON nodes BEGIN SELECT 1; END"),
            CorruptArchive,
            "holds trigger t, which no archive has",
        ),
        (
            "unfinished-process",
            _forged(
                good,
                bad,
                "UPDATE nodes SET process_state = 'running' WHERE pk = "
                "(SELECT min(pk) FROM nodes WHERE process_state IS NOT NULL)",
            ),
            CorruptArchive,
            r"processes that have not finished \(\d+ \(\w+, running\)\)",
        ),
        (
            "unknown-link-type",
            _forged(good, bad, "UPDATE links SET link_type = 'sideways' WHERE pk = 1"),
            CorruptArchive,
            "a link of type 'sideways', which is no link type",
        ),
        (
            "extras-not-an-object",
            _forged(good, bad, "UPDATE nodes SET extras = '[1, 2' WHERE pk = 1"),
            CorruptArchive,
            "the extras of its node 1 are not a JSON object",
        ),
        (
            "bad-object-key",
            _forged(good, bad, "INSERT INTO objects (key) VALUES ('../../etc/passwd')"),
            CorruptArchive,
            "is not a repository key",
        ),
    ]
    cases.extend(
        (
            f"flipped-{name.replace('/', '-')}",
            lambda p, name=name: _flip_byte_in(good, p, name),
            CorruptArchive,
            "is damaged" if name != "metadata.json" else "metadata.json",
        )
        for name in names
    )
    target = _target(request, tmp_path, "target")
    repository = tmp_path / "target-repository"
    if isinstance(target, str):
        monkeypatch.setenv("MINIENGINE_REPOSITORY", str(repository))
    else:
        repository = target.parent / "engine.repository"
    forged = {  # checksums made to fit: inspect finds nothing wrong
        "dangling-link",
        "trigger",
        "bad-object-key",
        "unfinished-process",
        "unknown-link-type",
        "extras-not-an-object",
    }
    for name, make, error, message in cases:
        path = bad / f"{name}.miniengine"
        make(path)
        with pytest.raises(error, match=message):
            import_archive(path, db=target)
        assert _node_count(target) == 0, name
        assert not list(repository.glob("objects/*/*")), name
        if name in ("not-a-zip", "truncated", "flipped-metadata.json"):
            with pytest.raises(CorruptArchive):
                inspect_archive(path)
        elif error is CorruptArchive and name not in forged:
            info = inspect_archive(path)
            assert info.checksum_ok is False and info.problem, name
    assert inspect_archive(good).checksum_ok is True


def test_a_failure_half_way_through_an_import_imports_nothing(
    miniengine_db: Path | str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from miniengine.storage import archive_rows

    _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)
    target = _target(request, tmp_path, "target")
    repository = tmp_path / "target-repository"
    if isinstance(target, str):
        monkeypatch.setenv("MINIENGINE_REPOSITORY", str(repository))
    else:
        repository = target.parent / "engine.repository"

    content = b"the content of a file\n"
    key = hashlib.sha256(content).hexdigest()

    def broken(*args: Any) -> None:
        # meanwhile another write stores the same content as the archive's file (it finds the
        # object the import copied), to name it in a transaction of its own
        assert Repository(repository).put_object_from_filelike(io.BytesIO(content)) == key
        raise RuntimeError("the disk went away")

    with monkeypatch.context() as patch:
        patch.setattr(archive_rows, "import_groups", broken)
        with pytest.raises(RuntimeError, match="the disk went away"):
            import_archive(path, db=target)
    assert _node_count(target) == 0
    # the file stays for that write: nothing stored is lost (db maintain removes it later if
    # no node names it)
    assert Repository(repository).has_object(key)
    report = import_archive(path, db=target, dry_run=True)
    assert report.dry_run and report.new_nodes > 0 and _node_count(target) == 0
    assert import_archive(path, db=target).new_nodes == report.new_nodes


def test_two_imports_of_one_archive_at_once_both_succeed(
    miniengine_db: Path | str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second import waits for the first one's new uuids, then finds them and merges."""
    import threading

    from miniengine.storage import archive_rows

    if isinstance(miniengine_db, Path):
        pytest.skip("sqlite imports take the file's write lock: they cannot overlap")
    _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)
    target = _target(request, tmp_path, "target")
    monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "target-repository"))
    import psycopg

    second: dict[str, Any] = {}
    real = archive_rows.import_groups

    def run_second() -> None:
        backend = open_backend(target)
        try:
            second["report"] = import_archive(path, db=backend, create_group=False)
        except BaseException as exc:
            second["error"] = exc
        finally:
            backend.close()

    def first_waits_for_second(*args: Any) -> Any:
        if "thread" not in second:  # the first import, its nodes inserted, not committed
            second["thread"] = thread = threading.Thread(target=run_second)
            thread.start()
            with psycopg.connect(str(target), autocommit=True) as watcher:
                while thread.is_alive():  # until the second waits on the first's rows
                    waiting = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchone()
                    if waiting and waiting[0]:
                        break
                    watcher.execute("SELECT pg_sleep(0.01)")
        return real(*args)

    monkeypatch.setattr(archive_rows, "import_groups", first_waits_for_second)
    first = import_archive(path, db=target, create_group=False)
    second["thread"].join(timeout=60)
    assert "error" not in second, second.get("error")
    assert first.new_nodes > 0 and second["report"].new_nodes == 0
    assert second["report"].existing_nodes == first.new_nodes


def test_a_link_missing_between_nodes_the_database_has_is_added_again(
    miniengine_db: Path | str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)
    target = _target(request, tmp_path, "target")
    if isinstance(target, str):
        monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "target-repository"))
    import_archive(path, db=target, create_group=False)
    links = _content(target)["links"]
    if isinstance(target, str):  # a link lost, as in a database damaged by hand
        import psycopg

        with psycopg.connect(target, autocommit=True) as connection:
            connection.execute("DELETE FROM links WHERE pk = (SELECT max(pk) FROM links)")
    else:
        with sqlite3.connect(target) as connection:
            connection.execute("DELETE FROM links WHERE pk = (SELECT max(pk) FROM links)")
        connection.close()
    assert len(_content(target)["links"]) == len(links) - 1
    again = import_archive(path, db=target, create_group=False)
    assert again.new_nodes == 0 and again.new_links == 1
    assert _content(target)["links"] == links


def test_extras_of_existing_nodes_merge_as_aiidas_modes(
    miniengine_db: Path | str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pks = _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)  # the result's extras: {"tag": "kept", "n": 1}
    target = _target(request, tmp_path, "target")
    if isinstance(target, str):
        monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "target-repository"))
    import_archive(path, db=target, extras_mode_new="none")
    backend = open_backend(target)
    try:
        uuid = load_node(pks["result"]).uuid
        node = load_node(uuid=uuid, db=backend)
        assert node.base.extras.all == {}
        # AiiDA's default leaves the extras of a node the database has as they are
        backend.groups.reset_extras(node.pk, {"tag": "mine", "own": 2})
        assert import_archive(path, db=backend).updated_extras == 0
        assert backend.groups.extras(node.pk) == {"tag": "mine", "own": 2}
        for mode, expected in (
            ("keep_existing", {"tag": "mine", "own": 2, "n": 1}),
            ("update_existing", {"tag": "kept", "own": 2, "n": 1}),
            ("mirror", {"tag": "kept", "n": 1}),
            ("none", {"tag": "mine", "own": 2}),
        ):
            backend.groups.reset_extras(node.pk, {"tag": "mine", "own": 2})
            report = import_archive(path, db=backend, extras_mode_existing=mode)
            assert report.new_nodes == 0
            assert backend.groups.extras(node.pk) == expected, mode
    finally:
        backend.close()


def test_a_computer_of_a_taken_label_is_imported_under_another(
    miniengine_db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pks = _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)
    target = _new_file(tmp_path, "target")
    with monkeypatch.context() as patch:
        patch.setenv("MINIENGINE_DB", str(target))
        Computer("archivehost", "elsewhere").store()
    report = import_archive(path, db=target)
    computer_uuid = load_node(pks["code"]).computer.uuid
    renamed = f"archivehost-{computer_uuid[:8]}"
    assert report.new_computers == 1 and report.renamed_computers == {"archivehost": renamed}
    backend = open_backend(target)
    try:
        code = load_node(uuid=load_node(pks["code"]).uuid, db=backend)
        assert code.computer.label == renamed and code.computer.uuid == computer_uuid
    finally:
        backend.close()
    assert import_archive(path, db=target).new_computers == 0


def test_an_import_puts_the_archives_nodes_in_a_group_as_aiidas_does(
    miniengine_db: Path | str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import re

    pks = _fill(tmp_path)
    every = set(_content(miniengine_db)["nodes"])
    whole, part = tmp_path / "all.miniengine", tmp_path / "part.miniengine"
    create_archive(whole, all=True)
    create_archive(part, nodes=[pks["result"]])
    target = _target(request, tmp_path, "target")
    with pytest.raises(ValidationError, match="group must be"):
        import_archive(whole, db=target, group="")
    assert _node_count(target) == 0

    # a dry run names the group it would make and makes none
    assert import_archive(part, db=target, dry_run=True).import_group is not None
    assert not _content(target)["groups"]
    first = import_archive(part, db=target)
    assert first.import_group is not None
    assert re.fullmatch(r"\d{8}-\d{6}", first.import_group), first.import_group
    partial = set(_content(target)["nodes"])
    # the second import's group holds every node of its archive, those present before too
    second = import_archive(whole, db=target)
    assert second.existing_nodes == len(partial) and second.import_group != first.import_group
    made = {group[0]: group for group in _import_groups(_content(target)).values()}
    assert made[first.import_group][5] == partial and made[second.import_group][5] == every
    assert made[second.import_group][2] == "Group generated by archive import"

    # a group named: made on the first import (type core), found again on the next
    for _ in range(2):
        report = import_archive(part, db=target, group="from colleagues")
        assert report.import_group == "from colleagues"
    named = [g for g in _content(target)["groups"].values() if g[0] == "from colleagues"]
    assert [(g[1], g[5]) for g in named] == [("core", partial)]
    # ... or none at all
    before = _content(target)["groups"]
    assert import_archive(whole, db=target, create_group=False).import_group is None
    assert _content(target)["groups"] == before


def test_a_group_of_a_taken_label_is_imported_under_another_as_aiidas(
    miniengine_db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    create_archive(path, all=True)
    target = _new_file(tmp_path, "target")
    with monkeypatch.context() as patch:
        patch.setenv("MINIENGINE_DB", str(target))
        mine = Group(label="results", description="mine").store()
    report = import_archive(path, db=target, create_group=False)
    assert report.new_groups == 1 and report.merged_groups == 0
    assert report.renamed_groups == {"results": "results (Imported #0)"}
    groups = {group[0]: group for group in _content(target)["groups"].values()}
    # the database's own group keeps its members (none): the archive's nodes are not mixed in
    assert groups["results"][2] == "mine" and groups["results"][5] == set()
    assert groups["results (Imported #0)"][2] == "what came out"
    assert len(groups["results (Imported #0)"][5]) == 3
    # the imported group is the archive's (by uuid) from now on
    again = import_archive(path, db=target, create_group=False)
    assert (again.new_groups, again.merged_groups, again.renamed_groups) == (0, 1, {})
    assert mine.pk is not None


@pytest.mark.sqlite_only(reason="one run of the entry point is enough; the API is tested above")
def test_the_command_line_creates_inspects_and_imports(miniengine_db: Path, tmp_path: Path) -> None:
    from tests.test_cli import cli

    _fill(tmp_path)
    path = tmp_path / "all.miniengine"
    created = cli("archive", "create", str(path), "--all", db=miniengine_db).ok()
    assert created.startswith(f"wrote {path}") and "1 objects" in created
    shown = cli("archive", "info", str(path)).ok()
    assert "format version  1" in shown and "checksum        ok" in shown
    assert "results (core): 3 nodes" in shown
    nodes = inspect_archive(path).counts["nodes"]

    target = _new_file(tmp_path, "target")
    first = cli("archive", "import", str(path), db=target).ok()
    assert f"{nodes} new nodes (0 already present)" in first
    assert "put its nodes in the group '" in first
    second = cli("archive", "import", str(path), "--no-import-group", db=target).ok()
    assert f"0 new nodes ({nodes} already present)" in second and "nothing new" in second
    assert "put its nodes" not in second
    # several archives, one after the other, into one group
    part = tmp_path / "part.miniengine"
    create_archive(part, nodes=[1])
    third = cli("archive", "import", str(path), str(part), "-G", "shared", db=target).ok()
    assert third.count("put its nodes in the group 'shared'") == 2
    assert f"imported {path} into" in third and f"imported {part} into" in third

    changed = tmp_path / "changed.miniengine"
    _rewrite(path, changed, replace={"db.sqlite": b"not the database"})
    refused = cli("archive", "import", str(changed), db=target).failed()
    assert refused.startswith("error: ") and "db.sqlite was changed" in refused
