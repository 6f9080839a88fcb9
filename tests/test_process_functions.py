"""Process functions: seed scenario 1, the run rules, signatures, return rules, errors, metadata,
async launches and the event-loop guards (issue 3)."""

import asyncio
import os
import sqlite3
import subprocess
import sys

import pytest

from miniengine import (
    CalcFunctionNode,
    Data,
    EventLoopError,
    ExitCode,
    Int,
    MiniengineError,
    ProcessState,
    Str,
    WorkFunctionNode,
    arun,
    arun_get_node,
    calcfunction,
    find_processes,
    load_node,
    run,
    run_get_node,
    run_get_pk,
    workfunction,
)
from miniengine.core.links import LinkType
from miniengine.exceptions import NotExistent

#: every test runs on a sqlite file and on a PostgreSQL database
pytestmark = pytest.mark.usefixtures("backend_db")

# -- seed scenario 1 -------------------------------------------------------------------------------

SEED_SCENARIO_1 = """\
from miniengine import calcfunction, workfunction, run, Int

@calcfunction
def add(x, y):
    return Int(x + y)

@calcfunction
def multiply(x, y):
    return Int(x * y)

@workfunction
def add_and_multiply(x, y, z):
    sum = add(x, y)
    product = multiply(sum, z)
    return product

result, node = run.get_node(add_and_multiply, Int(1), Int(2), Int(3))
print(result)
print(node)
"""

# The same code, defined here to inspect what it records.


@calcfunction
def add(x, y):
    return Int(x + y)


@calcfunction
def multiply(x, y):
    return Int(x * y)


@workfunction
def add_and_multiply(x, y, z):
    sum = add(x, y)
    product = multiply(sum, z)
    return product


def _links(node, incoming, link_type=None):
    links = node.base.links
    if incoming:
        manager = links.get_incoming(link_type=link_type)
    else:
        manager = links.get_outgoing(link_type=link_type)
    return [(triple.link_type, triple.link_label, triple.node) for triple in manager]


@pytest.mark.sqlite_only
def test_seed_scenario_1_runs_verbatim_as_a_script(tmp_path, miniengine_db):
    script = tmp_path / "scenario1.py"
    script.write_text(SEED_SCENARIO_1)
    env = {**os.environ, "MINIENGINE_DB": str(miniengine_db)}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[0] == "9"
    [node] = find_processes(process_label="add_and_multiply")
    assert node.uuid in printed[1]
    assert isinstance(node, WorkFunctionNode) and node.is_finished_ok
    assert [n.process_label for n in node.called] == ["add", "multiply"]
    assert node.outputs.result == 9


def test_seed_scenario_1_result_and_node(capsys):
    result, node = run.get_node(add_and_multiply, Int(1), Int(2), Int(3))
    print(result)
    print(node)

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "9"
    assert node.uuid in printed[1]
    assert result == 9
    assert isinstance(result, Int)
    assert isinstance(node, WorkFunctionNode)
    assert node.process_state is ProcessState.FINISHED
    assert node.is_finished_ok
    assert node.exit_status == 0


def test_seed_scenario_1_provenance():
    result, node = run.get_node(add_and_multiply, Int(1), Int(2), Int(3))

    add_node, multiply_node = node.called
    assert [type(n) for n in node.called] == [CalcFunctionNode, CalcFunctionNode]
    assert [n.process_label for n in node.called] == ["add", "multiply"]
    assert add_node.caller == node and multiply_node.caller == node

    incoming = _links(node, incoming=True)
    assert [(kind, label) for kind, label, _ in incoming] == [
        (LinkType.INPUT_WORK, "x"),
        (LinkType.INPUT_WORK, "y"),
        (LinkType.INPUT_WORK, "z"),
    ]
    assert [data.value for _, _, data in incoming] == [1, 2, 3]

    outgoing = _links(node, incoming=False)
    assert [(kind, label, n.pk) for kind, label, n in outgoing] == [
        (LinkType.CALL_CALC, "CALL", add_node.pk),
        (LinkType.CALL_CALC, "CALL", multiply_node.pk),
        (LinkType.RETURN, "result", result.pk),
    ]
    assert node.outputs.result == 9
    assert node.outputs.result.pk == result.pk

    for child in (add_node, multiply_node):
        assert [(k, label, n.pk) for k, label, n in _links(child, True)] == [
            (LinkType.INPUT_CALC, "x", child.inputs.x.pk),
            (LinkType.INPUT_CALC, "y", child.inputs.y.pk),
            (LinkType.CALL_CALC, "CALL", node.pk),
        ]
        [(kind, label, created)] = _links(child, incoming=False)
        assert (kind, label) == (LinkType.CREATE, "result")
        assert created.creator == child

    # the data flow: multiply's x is add's output node, and the workflow returns multiply's output
    assert multiply_node.inputs.x.pk == add_node.outputs.result.pk
    assert add_node.outputs.result == 3
    assert multiply_node.outputs.result.pk == result.pk
    assert add_node.inputs.x.pk == node.inputs.x.pk


# -- what run returns ------------------------------------------------------------------------------


def test_single_result_is_unwrapped_and_dict_is_a_mapping():
    @calcfunction
    def pair(x):
        return {"double": Int(2 * x), "triple": Int(3 * x)}

    @calcfunction
    def named_result(x):
        return {"result": Int(x)}

    assert run(add, 1, 2) == 3
    outputs = run(pair, 2)
    assert set(outputs) == {"double", "triple"}
    assert outputs["double"] == 4 and outputs["triple"] == 6
    assert outputs["double"].is_stored
    # a dict whose only key is ``result`` is unwrapped too, as AiiDA does
    assert run(named_result, 5) == 5


def test_returning_nothing_gives_an_empty_mapping():
    @workfunction
    def nothing(x):
        return None

    result, node = nothing.run_get_node(1)
    assert result == {}
    assert node.is_finished_ok
    assert len(node.outputs) == 0


def test_nested_dicts_and_dotted_keys_make_output_namespaces():
    @calcfunction
    def nested():
        return {"ns": {"a": Int(1), "deeper": {"b": Int(2)}}, "x.y": Int(3), "top": Int(4)}

    result, node = nested.run_get_node()
    assert result["ns"]["a"] == 1
    assert result["ns"]["deeper"]["b"] == 2
    assert result["x"]["y"] == 3
    assert node.outputs.ns.a == 1
    assert node.outputs.ns.deeper.b == 2
    assert node.outputs["x"]["y"] == 3
    assert node.outputs.top == 4
    labels = node.base.links.get_outgoing(link_type=LinkType.CREATE).all_link_labels()
    assert sorted(labels) == ["ns__a", "ns__deeper__b", "top", "x__y"]


def test_run_get_pk_and_run_get_node_variants():
    result, pk = run_get_pk(add, 1, 2)
    assert result == 3 and load_node(pk).outputs.result == 3
    result, pk = run.get_pk(add, x=2, y=3)
    assert result == 5 and isinstance(load_node(pk), CalcFunctionNode)
    result, node = run.get_node(add, 3, y=4)
    assert result == 7 and node.inputs.y == 4
    result, node = run_get_node(add, 1, 1)
    assert result == 2 and node.outputs.result.pk == result.pk
    result, node = add.run_get_node(x=5, y=5)
    assert result == 10 and node.pk == find_processes(limit=1)[0].pk
    result, pk = add.run_get_pk(2, 2)
    assert result == 4 and load_node(pk).is_finished_ok
    assert add.run(1, 2) == 3


def test_positional_and_keyword_arguments_bind_the_same_way():
    @calcfunction
    def subtract(x, y):
        return x - y

    assert subtract(5, 3) == 2
    assert subtract(5, y=3) == 2
    assert subtract(y=3, x=5) == 2
    assert run(subtract, 5, y=3) == 2
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        subtract(5, x=3)


def test_plain_values_are_wrapped_and_stored():
    assert add(1, 2) == 3
    node = find_processes(limit=1)[0]
    assert isinstance(node.inputs.x, Int) and node.inputs.x.value == 1
    assert isinstance(node.inputs.y, Int) and node.inputs.y.value == 2
    assert node.inputs.x.is_stored
    assert load_node(node.inputs.x.pk) == 1


def test_an_unstored_data_input_is_stored_by_the_launch():
    x = Int(4)
    result = add(x, Int(1))
    assert x.is_stored
    assert find_processes(limit=1)[0].inputs.x.pk == x.pk
    assert result == 5


# -- signatures ------------------------------------------------------------------------------------


def test_value_default_is_wrapped_and_linked():
    @calcfunction
    def increment(x, step=1):
        return x + step

    result, node = increment.run_get_node(4)
    assert result == 5
    assert isinstance(node.inputs.step, Int) and node.inputs.step == 1
    assert increment(4, 10) == 14


def test_callable_default_is_called_for_each_run():
    calls = []

    def make_default():
        calls.append(1)
        return Int(5)

    @calcfunction
    def add_default(x, y=make_default):
        return x + y

    _, first = add_default.run_get_node(1)
    _, second = add_default.run_get_node(2)
    assert first.outputs.result == 6 and second.outputs.result == 7
    assert len(calls) == 2
    assert first.inputs.y == 5 and first.inputs.y.pk != second.inputs.y.pk
    # given explicitly, the default is not called
    assert add_default(1, 1) == 2
    assert len(calls) == 2


def test_lambda_default():
    @calcfunction
    def add_lambda(x, y=lambda: Int(5)):
        return x + y

    assert add_lambda(1) == 6


def test_none_default_is_not_an_input_and_the_body_sees_none():
    seen = []

    @calcfunction
    def maybe(x, y=None):
        seen.append(y)
        return x + (y if y is not None else 0)

    result, node = maybe.run_get_node(1)
    assert result == 1 and seen == [None]
    assert sorted(node.inputs) == ["x"]
    assert maybe(1, None) == 1
    assert maybe(1, 2) == 3


def test_var_positional_inputs_are_named_after_the_parameter():
    @calcfunction
    def total(first, *numbers):
        return Int(first + sum(n.value for n in numbers))

    result, node = total.run_get_node(1, 2, 3)
    assert result == 6
    assert sorted(node.inputs) == ["first", "numbers_0", "numbers_1"]
    assert node.inputs.numbers_0 == 2 and node.inputs.numbers_1 == 3
    assert total(1) == 1


def test_var_positional_called_args():
    @calcfunction
    def join(*args):
        return Str(" ".join(a.value for a in args))

    result, node = join.run_get_node("a", "b", "c")
    assert result == "a b c"
    assert sorted(node.inputs) == ["args_0", "args_1", "args_2"]


def test_var_positional_then_keyword_only():
    @calcfunction
    def order(*args, a, b):
        return Str(" ".join(v.value for v in (*args, a, b)))

    assert order("x", "y", a="a", b="b") == "x y a b"


def test_var_keyword_is_a_dynamic_namespace():
    @workfunction
    def collect(a, **kwargs):
        return {"a": a, **kwargs}

    one, two = Int(1).store(), Int(2).store()
    result, node = collect.run_get_node(one, b=two, c=two)
    assert set(result) == {"a", "b", "c"}
    assert sorted(node.inputs) == ["a", "b", "c"]
    assert node.inputs.b.pk == two.pk


def test_var_keyword_accepts_nested_namespaces_of_data():
    @workfunction
    def echo(**kwargs):
        return kwargs

    leaf = Int(1).store()
    result, node = echo.run_get_node(nested={"namespace": {"int": leaf}})
    assert result["nested"]["namespace"]["int"].pk == leaf.pk
    assert node.inputs.nested.namespace.int.pk == leaf.pk
    assert node.base.links.get_incoming().all_link_labels() == ["nested__namespace__int"]
    assert node.outputs.nested.namespace.int.pk == leaf.pk


def test_var_keyword_rejects_plain_values_in_a_nested_namespace():
    @workfunction
    def echo(**kwargs):
        return kwargs

    before = find_processes()
    with pytest.raises(ValueError, match=r"nested\.namespace\.int") as info:
        echo(nested={"namespace": {"int": 1}})
    assert isinstance(info.value, MiniengineError)
    assert find_processes() == before


def test_var_args_label_clash_is_a_runtime_error():
    @calcfunction
    def clash(args_0, *args):
        return args_0

    with pytest.raises(RuntimeError, match="args_0") as info:
        clash(1, 2, 3)
    assert isinstance(info.value, MiniengineError)
    assert find_processes() == []


def test_too_many_positional_arguments_is_a_type_error():
    @calcfunction
    def kwargs_only(**kwargs):
        return None

    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given") as info:
        add(1, 2, 3)
    assert isinstance(info.value, MiniengineError)
    with pytest.raises(TypeError):
        kwargs_only(Int(1))
    assert find_processes() == []


def test_unknown_keyword_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'w'") as info:
        add(1, 2, w=3)
    assert isinstance(info.value, MiniengineError)
    assert find_processes() == []


def test_missing_required_argument_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'y'"):
        add(1)
    assert find_processes() == []


def test_unconvertible_value_is_refused_before_anything_is_written():
    add(1, 2)
    before = find_processes()
    with pytest.raises(ValueError, match="'x'") as info:
        add(object(), 1)
    assert isinstance(info.value, MiniengineError)
    assert find_processes() == before
    # not even the convertible input was stored: the next node takes the next pk
    with pytest.raises(NotExistent):
        load_node(before[0].pk + 2)


def test_type_hints_are_valid_types():
    @calcfunction
    def typed(x: Int, y: int = 1):
        return x + y

    with pytest.raises(ValueError, match="'x'") as info:
        typed(Str("a"))
    assert isinstance(info.value, MiniengineError)
    with pytest.raises(ValueError, match="'y'"):
        typed(1, "b")
    assert find_processes() == []
    assert typed(1) == 2
    assert typed(Int(1), 2) == 3


def test_union_type_hint():
    @calcfunction
    def number(a: int | float):
        return a + 1

    assert number(1) == 2
    assert number(1.5) == 2.5
    with pytest.raises(ValueError, match="'a'"):
        number("string")


# -- returns and errors ----------------------------------------------------------------------------


def test_returning_an_exit_code_finishes_with_that_status():
    @workfunction
    def teapot(x):
        return ExitCode(418, "I am a teapot")

    result, node = teapot.run_get_node(1)
    assert result == {}
    assert node.process_state is ProcessState.FINISHED
    assert node.is_finished and node.is_failed and not node.is_finished_ok
    assert node.exit_status == 418
    assert node.exit_message == "I am a teapot"


class _BodyError(Exception):
    pass


def test_exception_in_body_excepts_the_node_and_reaches_the_caller():
    @workfunction
    def explode(x):
        raise _BodyError("the body failed")

    with pytest.raises(_BodyError, match="the body failed"):
        run(explode, 1)

    [node] = find_processes()
    assert node.process_state is ProcessState.EXCEPTED
    assert node.is_excepted and node.is_terminated and not node.is_finished
    assert node.exit_status is None
    assert "Traceback (most recent call last)" in node.exception
    assert "raise _BodyError" in node.exception
    assert node.exception.rstrip().endswith("_BodyError: the body failed")
    [entry] = node.logs
    assert entry.levelname == "ERROR"
    assert "_BodyError: the body failed" in entry.message
    assert "Traceback" in entry.message


def test_child_exception_excepts_child_and_parent_with_the_same_type():
    @calcfunction
    def divide(x, y):
        return Int(x.value // y.value)

    @workfunction
    def outer(x):
        return divide(x, 0)

    with pytest.raises(ZeroDivisionError):
        outer(1)
    child, parent = find_processes(state="excepted")
    assert parent.is_excepted and child.is_excepted
    assert child.process_label == "divide"
    assert child.caller == parent
    assert parent.called == [child]


def test_calcfunction_calling_a_process_is_an_error():
    @calcfunction
    def nested_call(x):
        return add(x, x)

    with pytest.raises(ValueError, match="cannot call other processes") as info:
        nested_call(1)
    assert isinstance(info.value, MiniengineError)
    [node] = find_processes()
    assert node.process_label == "nested_call"
    assert node.is_excepted
    assert node.called == []


def test_calcfunction_returning_stored_data_excepts_clearly():
    @calcfunction
    def passthrough(x):
        return x

    with pytest.raises(ValueError, match="already stored") as info:
        passthrough(1)
    assert isinstance(info.value, MiniengineError)
    [node] = find_processes()
    assert node.is_excepted
    assert "already stored" in node.exception
    assert len(node.outputs) == 0


def test_calcfunction_returning_the_same_new_node_twice_excepts():
    @calcfunction
    def twice():
        value = Int(2)
        return {"a": value, "b": value}

    with pytest.raises(ValueError, match="same new node"):
        twice()
    [node] = find_processes()
    assert node.is_excepted
    assert len(node.outputs) == 0


def test_workfunction_returning_new_data_is_an_error():
    @workfunction
    def creates(x):
        return Int(5)

    with pytest.raises(ValueError, match="cannot create data") as info:
        creates(1)
    assert isinstance(info.value, MiniengineError)
    [node] = find_processes()
    assert node.is_excepted


def test_returning_a_plain_value_is_an_error():
    @calcfunction
    def plain(x):
        return 5

    with pytest.raises(ValueError, match="returned a int"):
        plain(1)
    assert find_processes()[0].is_excepted


class _Unencodable(Data, type_name="tests.process_functions.unencodable"):
    """A Data type whose content the store cannot encode (a set)."""

    def _to_attributes(self):
        return {1, 2}


def test_outputs_that_cannot_be_stored_except_the_process_instead_of_leaving_it_running():
    @calcfunction
    def make(x):
        return _Unencodable()

    with pytest.raises(TypeError):
        make(1)
    [node] = find_processes()
    assert node.process_state is ProcessState.EXCEPTED
    assert "TypeError" in node.exception
    assert find_processes(state="running") == []


# -- metadata --------------------------------------------------------------------------------------


def test_metadata_label_and_description():
    _, node = add.run_get_node(1, 2, metadata={"label": "my add", "description": "adds"})
    assert node.label == "my add"
    assert node.description == "adds"
    assert load_node(node.pk).label == "my add"


def test_label_defaults_to_the_function_name():
    _, node = add.run_get_node(1, 2)
    assert node.label == "add"
    assert node.description == ""


def test_invalid_metadata_is_refused():
    with pytest.raises(ValueError, match="metadata"):
        add(1, 2, metadata={"label": 3})
    with pytest.raises(ValueError, match="metadata"):
        add(1, 2, metadata={"colour": "red"})
    assert find_processes() == []


def test_store_provenance_false_writes_nothing():
    result, node = add.run_get_node(1, 2, metadata={"store_provenance": False})
    assert result == 3
    assert not result.is_stored
    assert node.pk is None and not node.is_stored
    assert node.process_state is ProcessState.FINISHED
    assert node.is_finished_ok
    assert node.outputs.result == 3
    assert node.inputs.x == 1 and node.inputs.y == 2
    assert not node.inputs.x.is_stored
    assert find_processes() == []


def test_call_link_label():
    @workfunction
    def labelled(x, y):
        return add(x, y, metadata={"call_link_label": "adder"})

    result, node = labelled.run_get_node(1, 2)
    assert result == 3
    [triple] = node.base.links.get_outgoing(link_type=LinkType.CALL_CALC)
    assert triple.link_label == "adder"
    assert triple.node.process_label == "add"


def test_database_is_resolved_from_the_environment_at_each_launch(tmp_path, monkeypatch):
    first = os.environ["MINIENGINE_DB"]
    add(1, 2)
    second = tmp_path / "other" / "second.sqlite"
    second.parent.mkdir()  # a folder that does not exist is refused, not created
    monkeypatch.setenv("MINIENGINE_DB", str(second))
    add(3, 4)
    add(5, 6)
    assert second.exists()
    assert len(find_processes()) == 2
    assert len(find_processes(db=first)) == 1
    assert find_processes(db=first)[0].outputs.result == 3


# -- functions defined in odd places ---------------------------------------------------------------


class Arithmetic:
    @staticmethod
    @calcfunction
    def add_static(x, y):
        return x + y

    @calcfunction
    def add_member(x, y):
        return x + y

    def run_both(self, x, y):
        return self.add_static(x, y), self.add_member(x, y)


def test_calcfunctions_as_static_methods_and_class_members():
    assert Arithmetic.add_static(1, 2) == 3
    assert Arithmetic().add_static(1, 2) == 3
    assert Arithmetic.add_member(1, 2) == 3
    assert Arithmetic().add_member(1, 2) == 3
    static, member = Arithmetic().run_both(2, 3)
    assert static == member == 5
    labels = [n.process_label for n in find_processes()]
    assert sorted(labels) == ["add_member"] * 3 + ["add_static"] * 3


def test_functions_defined_inside_a_function_nest():
    @calcfunction
    def inner_add(x, y):
        return x + y

    @workfunction
    def inner_workflow(x):
        return inner_add(x, inner_add(x, x))

    result, node = inner_workflow.run_get_node(2)
    assert result == 6
    assert [n.process_label for n in node.called] == ["inner_add", "inner_add"]


# -- async launches and the event-loop guards ------------------------------------------------------


@calcfunction
async def add_async(x, y):
    await asyncio.sleep(0)
    return x + y


@workfunction
async def add_and_multiply_async(x, y, z):
    total = await add_async.arun(x, y)
    return await arun(multiply, total, z)


async def test_async_process_functions_and_arun():
    assert await add_async.arun(1, 2) == 3
    assert await arun(add_and_multiply_async, x=1, y=2, z=3) == 9
    result, node = await arun_get_node(add_and_multiply_async, 1, 2, 3)
    assert result == 9
    assert isinstance(node, WorkFunctionNode) and node.is_finished_ok
    assert [n.process_label for n in node.called] == ["add_async", "multiply"]
    assert node.outputs.result.pk == result.pk
    result, node = await add_async.arun_get_node(2, 2)
    assert result == 4 and isinstance(node, CalcFunctionNode)


async def test_seed_workfunction_via_arun_runs_sync_children_off_the_loop():
    assert await arun(add_and_multiply, x=1, y=2, z=3) == 9
    result, node = await add_and_multiply.arun_get_node(1, 2, 3)
    assert result == 9
    assert [n.process_label for n in node.called] == ["add", "multiply"]


async def test_many_concurrent_aruns_are_all_stored():
    results = await asyncio.gather(*(arun(add_and_multiply, i, 1, 2) for i in range(20)))
    assert results == [(i + 1) * 2 for i in range(20)]
    assert len(find_processes(process_label="add_and_multiply")) == 20
    assert all(n.is_finished_ok for n in find_processes())


async def test_sync_call_on_the_loop_thread_names_arun():
    with pytest.raises(EventLoopError, match=r"await add\.arun\(") as info:
        add(1, 2)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, MiniengineError)
    assert find_processes() == []


async def test_run_inside_a_running_loop_names_await_arun():
    with pytest.raises(RuntimeError, match=r"await arun\(\.\.\.\)"):
        run(add, 1, 2)
    with pytest.raises(EventLoopError, match=r"await arun"):
        run.get_node(add, 1, 2)
    assert find_processes() == []


def test_async_process_function_called_synchronously_from_a_script():
    assert add_async(1, 2) == 3
    assert run(add_and_multiply_async, 1, 2, 3) == 9


async def test_async_body_exception_excepts_and_propagates():
    @workfunction
    async def broken(x):
        raise _BodyError("async failure")

    with pytest.raises(_BodyError):
        await broken.arun(1)
    [node] = find_processes()
    assert node.is_excepted
    assert "async failure" in node.exception


_SHARED_DEFAULT = Int(5)


@calcfunction
def add_default(x, y=_SHARED_DEFAULT):
    return Int(x + y)


def test_a_data_default_stored_in_another_database_is_copied(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIENGINE_DB", str(tmp_path / "first.sqlite"))
    assert add_default(1) == 6
    assert _SHARED_DEFAULT.is_stored
    monkeypatch.setenv("MINIENGINE_DB", str(tmp_path / "second.sqlite"))
    result, node = add_default.run_get_node(2)
    assert result == 7 and node.inputs.y.value == 5
    assert node.inputs.y.uuid != _SHARED_DEFAULT.uuid  # a copy stored in the second file


# -- one unstored node given twice -------------------------------------------------------------


@workfunction
def returns_both(first, second):
    return {"first": first, "second": second}


@pytest.mark.sqlite_only
def test_the_same_unstored_node_given_twice_is_stored_once_and_linked_twice(miniengine_db):
    x = Int(7)
    result, node = run_get_node(add, x, x)
    assert result == 14
    assert x.is_stored
    links = _links(node, incoming=True, link_type=LinkType.INPUT_CALC)
    assert sorted((label, data.pk) for _, label, data in links) == [("x", x.pk), ("y", x.pk)]
    with sqlite3.connect(miniengine_db) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM nodes WHERE uuid = ?", (x.uuid,)
        ).fetchone()
    assert count == 1


def test_the_same_unstored_node_as_two_keyword_inputs_of_a_workfunction():
    y = Int(2)
    result, node = run_get_node(returns_both, **{"first": y, "second": y})
    assert node.is_finished_ok and y.is_stored
    assert result["first"].pk == result["second"].pk == y.pk
    inputs = _links(node, incoming=True, link_type=LinkType.INPUT_WORK)
    assert sorted(label for _, label, _ in inputs) == ["first", "second"]
