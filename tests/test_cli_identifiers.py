"""The CLI names a process by pk, uuid or unique uuid prefix in every command, fails with one
wording for a missing node or a data node, and never lets control characters that users wrote
(labels, reports, statuses, values, paths) reach the terminal raw."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from miniengine import Int, Str, WorkChain, calcfunction, run, submit
from miniengine.control import kill
from miniengine.storage.store import close_all_stores
from tests.test_cli import cli
from tests.workchains.daemon_chains import AddWorkChain

HOSTILE = "\x1b]0;owned\x07\x1b[31mred\x9b2J\u202eevil\r\nnext"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


@calcfunction
def echo(text):
    return Str(text.value)


class Reporter(WorkChain):
    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.outline(cls.speak)

    def speak(self) -> None:
        self.report(f"said {HOSTILE}")


@dataclass(frozen=True)
class Db:
    path: Path
    echo: int
    output: int
    reporter: int
    reporter_uuid: str
    killed: int
    waiting: int
    waiting_uuid: str


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Db:
    path = tmp_path_factory.mktemp("ids") / "engine.sqlite"
    previous = os.environ.get("MINIENGINE_DB")
    os.environ["MINIENGINE_DB"] = str(path)
    try:
        result, echoed = run.get_node(echo, HOSTILE, metadata={"label": HOSTILE})
        _, reporter = run.get_node(Reporter)
        killed = submit(AddWorkChain, x=Int(1), y=Int(2))
        kill(killed, HOSTILE)
        waiting = submit(AddWorkChain, x=Int(3), y=Int(4))
        found = Db(
            path,
            echoed.pk,
            result.pk,
            reporter.pk,
            reporter.uuid,
            killed.pk,  # type: ignore[arg-type]
            waiting.pk,  # type: ignore[arg-type]
            waiting.uuid,
        )
    finally:
        close_all_stores()
        if previous is None:
            os.environ.pop("MINIENGINE_DB", None)
        else:
            os.environ["MINIENGINE_DB"] = previous
    return found


def _clean(text: str) -> str:
    for raw in RAW:
        assert raw not in text, (raw, text)
    return text


# control characters ------------------------------------------------------------------------------


def test_control_characters_are_escaped_in_every_human_readable_output(db: Db) -> None:
    listing = _clean(cli("process", "list", "--all", db=db.path).ok())
    assert "\\x1b]0;owned\\x07\\x1b[31mred" in listing  # the kill message as status
    show = _clean(cli("process", "show", str(db.echo), db=db.path).ok())
    assert "\\x1b]0;owned\\x07\\x1b[31mred\\x9b2J\\u202eevil\\r\\nnext" in show  # label and value
    killed = _clean(cli("process", "show", str(db.killed), db=db.path).ok())
    assert "\\x1b[31mred" in killed  # the kill message, shown as status / exit message
    status = _clean(cli("process", "status", str(db.killed), db=db.path).ok())
    assert "\\x1b[31mred" in status
    report = _clean(cli("process", "report", str(db.reporter), db=db.path).ok())
    assert "said \\x1b]0;owned\\x07\\x1b[31mred\\x9b2J\\u202eevil" in report


def test_json_output_is_valid_holds_the_exact_text_and_nothing_raw(db: Db) -> None:
    text = _clean(cli("process", "show", str(db.echo), "--json", db=db.path).ok())
    shown = json.loads(text)
    assert shown["label"] == HOSTILE
    assert shown["outputs"][0]["value"] == HOSTILE
    listing = json.loads(_clean(cli("process", "list", "--all", "--json", db=db.path).ok()))
    assert {row["pk"] for row in listing} >= {db.echo, db.killed}


def test_an_error_message_is_escaped_and_stays_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "bad\x1b[2Jname\nsecond.sqlite"
    message = cli("process", "list", db=missing).failed()  # one line on stderr, exit 1
    assert "bad\\x1b[2Jname\\nsecond.sqlite" in _clean(message)


# identifiers -------------------------------------------------------------------------------------


def test_a_process_is_named_by_pk_uuid_or_a_unique_prefix_in_every_command(db: Db) -> None:
    random_part = db.reporter_uuid[14:]  # after the 48-bit timestamp of the UUIDv7
    for identifier in (
        str(db.reporter),
        db.reporter_uuid,
        db.reporter_uuid.upper(),
        random_part[:9],
        random_part.replace("-", "")[:10],
    ):
        out = cli("process", "show", identifier, "--json", db=db.path).ok()
        assert json.loads(out)["pk"] == db.reporter, identifier
        status = cli("process", "status", identifier, db=db.path).ok()
        assert status.startswith(f"Reporter<{db.reporter}> Finished [0]")
        assert "said" in cli("process", "report", identifier, db=db.path).ok()
    prefix = db.waiting_uuid[14:27]
    assert cli("process", "pause", prefix, db=db.path).ok() == f"paused process {db.waiting}\n"
    assert cli("process", "play", db.waiting_uuid, db=db.path).ok() == (
        f"played process {db.waiting}\n"
    )


def test_an_ambiguous_or_unknown_uuid_says_so(db: Db) -> None:
    message = cli("process", "show", "0", db=db.path).failed()
    assert message.startswith("error: the uuid prefix '0' matches more than one node (pks ")
    assert message.endswith("give more of the uuid, or the pk")
    assert cli("process", "show", "ffff-ff", db=db.path).failed() == (
        "error: no process with the uuid or uuid prefix 'ffff-ff'"
    )


@pytest.mark.parametrize("command", ["show", "report", "status", "kill", "pause", "play", "watch"])
def test_one_wording_for_a_missing_node_and_a_data_node(db: Db, command: str) -> None:
    assert cli("process", command, "999999", db=db.path).failed() == (
        "error: no process with pk 999999"
    )
    assert cli("process", command, str(db.output), db=db.path).failed() == (
        f"error: node {db.output} is not a process (its type is Str)"
    )
    completed = cli("process", command, "not-a-pk", db=db.path)
    assert completed.returncode == 2 and "expected a pk or a uuid" in completed.stderr
