"""What AiiDA users reach for: ``load_node(pk=|uuid=|prefix)``, ``node.base.attributes``,
``node.process_class``, ``submit`` with positional inputs, and inputs that cannot be stored
(nested too deep, lone surrogates), refused before anything is stored and naming the port."""

from __future__ import annotations

import subprocess
import sys

import pytest

from miniengine import (
    Dict,
    InputValidationError,
    Int,
    List,
    MiniengineError,
    NotExistent,
    Str,
    SubmitError,
    calcfunction,
    find_processes,
    load_node,
    run,
    submit,
)
from miniengine.core.data import MAX_NESTING, DataValueError
from miniengine.exceptions import MultipleObjectsError
from miniengine.runtime.context import store_for
from tests.workchains.daemon_chains import AddWorkChain, python_env

#: every test runs on a sqlite file and on a PostgreSQL database
pytestmark = pytest.mark.backends


@calcfunction
def add(x, y):
    return x + y


@calcfunction
def take(value):
    return Int(1)


def nested(depth: int) -> dict:
    """A dict ``depth`` levels deep (built without recursion)."""
    root: dict = {}
    current = root
    for _ in range(depth - 1):
        current["a"] = {}
        current = current["a"]
    return root


def _node_count() -> int:
    return int(
        store_for(None).read(lambda c: c.execute("SELECT count(*) FROM nodes").fetchone()[0])
    )


# load_node ---------------------------------------------------------------------------------------


def test_load_node_by_pk_uuid_keyword_and_unique_prefixes():
    result, node = run.get_node(add, 1, 2)
    assert load_node(pk=node.pk) == node
    assert load_node(uuid=node.uuid) == node
    assert load_node(node.uuid.upper()) == node
    assert load_node(str(node.pk)) == node  # a string of digits is a pk, as in AiiDA
    random_part = node.uuid[14:]  # after the 48-bit timestamp of the UUIDv7
    assert load_node(random_part[:13]) == node
    assert load_node(random_part.replace("-", "")[:11]) == node
    assert load_node(node.uuid[:23]) == node  # a prefix of the whole uuid
    assert load_node(result.uuid[14:30]).pk == result.pk


def test_an_ambiguous_prefix_says_so_and_a_missing_node_is_not_existent():
    run(add, 1, 2)
    run(add, 3, 4)
    with pytest.raises(MultipleObjectsError, match="matches more than one node") as caught:
        load_node("0")  # every UUIDv7 of this century starts with 0
    assert isinstance(caught.value, MiniengineError)
    with pytest.raises(NotExistent):
        load_node(pk=999_999)
    with pytest.raises(NotExistent):
        load_node("ffffffff-ffff")
    with pytest.raises(NotExistent):
        load_node("not a uuid")


def test_load_node_needs_exactly_one_identifier_of_the_right_type():
    node = run.get_node(add, 1, 2)[1]
    with pytest.raises(ValueError, match="exactly one"):
        load_node()
    with pytest.raises(ValueError, match="exactly one"):
        load_node(node.pk, uuid=node.uuid)
    with pytest.raises(TypeError):
        load_node(pk=str(node.pk))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        load_node(uuid=node.pk)  # type: ignore[arg-type]
    for error in (ValueError, TypeError):
        try:
            load_node(pk="1") if error is TypeError else load_node()  # type: ignore[arg-type]
        except error as exc:
            assert isinstance(exc, MiniengineError)


# node.base.attributes and node.process_class -----------------------------------------------------


def test_attributes_of_data_nodes_have_aiidas_names_stored_or_not():
    assert Int(5).base.attributes.all == {"value": 5}
    assert Str("a").base.attributes.get("value") == "a"
    assert List([1, [2]]).base.attributes.all == {"list": [1, [2]]}
    stored = Dict({"a": 1, "b": {"c": 2}}).store()
    attributes = load_node(stored.pk).base.attributes
    assert attributes.all == {"a": 1, "b": {"c": 2}}
    assert sorted(attributes.keys()) == ["a", "b"]
    assert attributes.get("missing", None) is None
    with pytest.raises(AttributeError):
        attributes.get("missing")
    attributes.all["a"] = 99  # a copy: the node does not change
    assert attributes.get("a") == 1


def test_attributes_and_process_class_of_a_process_node():
    _, node = run.get_node(add, 1, 2)
    attributes = node.base.attributes
    assert attributes.get("process_state") == "finished"
    assert attributes.get("exit_status") == 0
    assert attributes.get("process_label") == "add"
    assert attributes.get("sealed") is True
    assert "exception" not in attributes.all
    assert node.process_class is add
    chain = submit(AddWorkChain, x=Int(1), y=Int(2))
    assert chain.process_class is AddWorkChain
    assert chain.base.attributes.get("process_state") == "created"
    assert "exit_status" not in set(chain.base.attributes.keys())


def test_process_class_that_no_longer_imports_is_a_value_error():
    node = submit(AddWorkChain, x=Int(1), y=Int(2))
    node._row = node._row._replace(process_type="tests.no_such_module.Gone")
    with pytest.raises(ValueError, match=r"tests\.no_such_module\.Gone") as caught:
        node.process_class  # noqa: B018
    assert isinstance(caught.value, MiniengineError)


# submit with positional inputs -------------------------------------------------------------------


def test_submit_with_positional_inputs_explains_keyword_inputs():
    with pytest.raises(SubmitError, match=r"submit\(AddWorkChain, x=..., y=...\)"):
        submit(AddWorkChain, Int(1), Int(2))
    with pytest.raises(SubmitError, match=r"submit\(add, x=1, y=2\)"):
        submit(add, 1, 2)
    assert find_processes() == []


# inputs that cannot be stored --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [nested(900), "lone \ud800 surrogate", {"key \udc80": 1}, [["x"] * 2, "\udfff"]],
    ids=["deep-dict", "surrogate-str", "surrogate-key", "surrogate-in-list"],
)
def test_an_input_that_cannot_be_stored_names_the_port_and_stores_nothing(value):
    before = _node_count()
    with pytest.raises(InputValidationError, match="the input 'value' cannot be stored"):
        run(take, value=value)
    assert _node_count() == before


def test_unstorable_data_is_refused_when_made():
    for make in (lambda: Dict(nested(900)), lambda: Str("\ud800"), lambda: List([nested(900)])):
        with pytest.raises(DataValueError) as caught:
            make()
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, MiniengineError)
    deepest = Dict(nested(MAX_NESTING))
    assert run(take, value=deepest) == 1
    assert load_node(deepest.pk).get_dict() == nested(MAX_NESTING)


# porting by import replacement -------------------------------------------------------------------

AIIDA_SCRIPT = """\
from aiida.engine import ToContext, WorkChain, append_, calcfunction, if_, run_get_node, while_
from aiida.engine import ExitCode, ProcessState, run, workfunction
from aiida.orm import Dict, Int, List, WorkChainNode, load_node, to_aiida_type


@calcfunction
def add(x, y):
    return x + y


@calcfunction
def multiply(x, y):
    return x * y


@workfunction
def add_and_multiply(x, y, z):
    return multiply(add(x, y), z)


class CountDown(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("start", valid_type=Int, serializer=to_aiida_type)
        spec.output("total", valid_type=Int)
        spec.output("steps", valid_type=List)
        spec.exit_code(400, "ERROR_NEGATIVE", message="the start is negative")
        spec.outline(
            if_(cls.is_negative)(cls.refuse),
            cls.setup,
            while_(cls.not_done)(cls.count),
            cls.finalize,
        )

    def is_negative(self):
        return self.inputs.start.value < 0

    def refuse(self):
        return self.exit_codes.ERROR_NEGATIVE

    def setup(self):
        self.ctx.current = self.inputs.start.value
        self.ctx.seen = []

    def not_done(self):
        return self.ctx.current > 0

    def count(self):
        self.report(f"at {self.ctx.current}")
        self.ctx.seen.append(self.ctx.current)
        self.ctx.current -= 1
        return ToContext(sums=append_(self.submit(AddOne, x=Int(self.ctx.current))))

    def finalize(self):
        total = sum(node.outputs.result.value for node in self.ctx.sums)
        self.out("total", Int(total).store())
        self.out("steps", List(self.ctx.seen).store())


class AddOne(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(cls.go)

    def go(self):
        self.out("result", add(self.inputs.x, Int(1)))


result, node = run_get_node(add_and_multiply, Int(1), Int(2), Int(3))
assert result == 9 and node.is_finished_ok, node
outputs, chain = run_get_node(CountDown, start=3)
assert isinstance(chain, WorkChainNode) and chain.process_state == ProcessState.FINISHED
assert outputs["total"] == 1 + 2 + 3 and outputs["steps"].get_list() == [3, 2, 1]
assert load_node(chain.pk).outputs.total.value == 6
assert load_node(chain.uuid).base.attributes.get("exit_status") == 0
assert run(CountDown, start=Int(-1)) == {}
assert Dict({"a": 1}).base.attributes.all == {"a": 1} and ExitCode(0).status == 0
print("ported", result.value, outputs["total"].value)
"""


def test_an_aiida_script_runs_with_only_its_imports_changed(tmp_path):
    ported = AIIDA_SCRIPT.replace("from aiida.", "from miniengine.")
    changed = [
        (old, new)
        for old, new in zip(AIIDA_SCRIPT.splitlines(), ported.splitlines(), strict=True)
        if old != new
    ]
    assert changed and all(old.startswith("from aiida.") for old, _ in changed)
    script = tmp_path / "ported.py"
    script.write_text(ported)
    completed = subprocess.run(
        [sys.executable, str(script)],
        env=python_env(tmp_path / "engine.sqlite"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "ported 9 6\n"


def test_the_aiida_namespaces_are_lazy_and_complete():
    import miniengine.engine
    import miniengine.orm

    for module in (miniengine.engine, miniengine.orm):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
            assert name in dir(module)
        with pytest.raises(AttributeError):
            module.not_an_aiida_name  # noqa: B018
    assert miniengine.orm.Int is Int and miniengine.engine.submit is submit
    probe = (
        "import sys, miniengine.engine, miniengine.orm\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'anyio', "
        "'aiosqlite', 'msgpack') or m.startswith(('miniengine.runtime', 'miniengine.core'))))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout == "[]\n"


def test_control_of_a_data_node_says_it_is_not_a_process():
    from miniengine.control import kill, pause, play

    data = Int(3).store()
    for action in (kill, pause, play):
        with pytest.raises(NotExistent, match=rf"node {data.pk} is not a process \(its type"):
            action(data.pk)
    with pytest.raises(NotExistent, match="no process with pk 999999"):
        pause(999_999)


def test_a_label_or_description_with_a_lone_surrogate_names_it_and_stores_nothing():
    before = _node_count()
    for metadata in ({"label": "a\ud800"}, {"description": "\udc00"}):
        key = next(iter(metadata))
        with pytest.raises(InputValidationError, match=f"metadata.{key} cannot hold"):
            run(take, value=1, metadata=metadata)
        with pytest.raises(InputValidationError, match=f"metadata.{key} cannot hold"):
            submit(AddWorkChain, x=Int(1), y=Int(2), metadata=metadata)
    assert _node_count() == before
    with pytest.raises(DataValueError, match="label"):
        Int(1, label="\ud800")
    node = Int(1).store()
    with pytest.raises(DataValueError, match="description"):
        node.description = "\udfff"


def test_attributes_of_a_process_run_without_provenance():
    _, node = run.get_node(add, 1, 2, metadata={"store_provenance": False})
    assert not node.is_stored
    assert node.base.attributes.get("process_state") == "finished"
    assert node.base.attributes.get("exit_status") == 0
    with pytest.raises(MiniengineError):
        node.base.links  # noqa: B018


def test_aiida_common_names_port_by_import() -> None:
    """``aiida.common`` helpers that plugins import, under ``miniengine.common``."""
    import miniengine.common as common
    from miniengine.common import datastructures, exceptions, folders
    from miniengine.core.attribute_dict import AttributeDict
    from miniengine.core.calcinfo import CalcInfo, CodeInfo
    from miniengine.core.links import LinkType
    from miniengine.exceptions import MiniengineError, NotExistent
    from miniengine.folders import Folder, SandboxFolder

    assert common.AttributeDict is AttributeDict and common.LinkType is LinkType
    assert datastructures.CalcInfo is CalcInfo and datastructures.CodeInfo is CodeInfo
    assert folders.Folder is Folder and folders.SandboxFolder is SandboxFolder
    assert exceptions.AiidaException is MiniengineError
    assert exceptions.NotExistent is NotExistent
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), MiniengineError), name
