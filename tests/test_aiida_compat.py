"""Behaviours of AiiDA's process functions, nodes and errors that miniengine keeps (issue 3).

Each test mirrors a behaviour of ``aiida.engine`` (checked against aiida-core's
``src/aiida/engine/processes/functions.py`` and ``tests/engine/test_process_function.py``).
Deliberate differences from DESIGN.md are asserted as such, and say so.
"""

import typing

import pytest

import miniengine
from miniengine import (
    Bool,
    CalcFunctionNode,
    Dict,
    EventLoopError,
    ExitCode,
    Float,
    InputValidationError,
    Int,
    List,
    MiniengineError,
    OutputValidationError,
    ProcessNode,
    Str,
    WorkFunctionNode,
    calcfunction,
    find_processes,
    run,
    run_get_node,
    workfunction,
)
from miniengine.core.links import LinkType

#: every test runs on a sqlite file and on a PostgreSQL database
pytestmark = pytest.mark.backends

DEFAULT_INT = 256


@workfunction
def function_return_input(data):
    return data


@calcfunction
def function_return_true():
    return Bool(True)


@workfunction
def function_args(data_a):
    return data_a


@calcfunction
def function_args_calc(data_a):
    return data_a.clone()


@workfunction
def function_args_with_default(data_a=lambda: Int(DEFAULT_INT)):
    return data_a


@workfunction
def function_kwargs(**kwargs):
    return kwargs


@workfunction
def function_args_and_kwargs(data_a, **kwargs):
    return {"data_a": data_a, **kwargs}


@workfunction
def function_varargs_kwargs(*args, **kwargs):
    results = dict(kwargs)
    for index, arg in enumerate(args):
        results[f"arg_{index}"] = arg
    return results


@workfunction
def function_defaults(
    data_a=lambda: Int(DEFAULT_INT),
    metadata={"label": "Default label", "description": "Default description"},  # noqa: B006
):
    return data_a


@workfunction
def function_default_label():
    return None


@workfunction
def function_exit_code(exit_status, exit_message):
    return ExitCode(exit_status.value, exit_message.value)


# -- the decorated object --------------------------------------------------------------------------


def test_process_function_properties():
    assert function_return_input.is_process_function
    assert function_return_input.node_class is WorkFunctionNode
    assert function_return_true.node_class is CalcFunctionNode
    assert function_return_input.__name__ == "function_return_input"
    assert function_return_input.run is not None and function_return_input.run_get_pk


def test_process_type_is_module_and_name():
    _, node = function_defaults.run_get_node()
    assert node.process_type == f"{function_defaults.__module__}.function_defaults"
    assert node.process_label == "function_defaults"


def test_process_state_properties_of_a_finished_function():
    _, node = function_args_with_default.run_get_node()
    assert node.is_terminated
    assert node.is_finished and node.is_finished_ok
    assert not node.is_excepted and not node.is_killed and not node.is_failed
    assert node.exit_status == 0
    assert node.is_sealed


# -- signatures ------------------------------------------------------------------------------------


def test_function_args_requires_its_argument():
    with pytest.raises(ValueError, match="data_a"):
        function_args()
    result = function_args(data_a=Int(1).store())
    assert isinstance(result, Int) and result == 1


def test_callable_default_as_in_aiida():
    result = function_args_with_default()
    assert isinstance(result, Int) and result == DEFAULT_INT
    assert function_args_with_default(data_a=Int(1).store()) == 1


def test_kwargs_function():
    result, node = function_kwargs.run_get_node()
    assert result == {}
    assert len(node.base.links.get_incoming().all()) == 0

    data = Int(DEFAULT_INT).store()
    result, node = function_kwargs.run_get_node(data_a=data)
    assert result == {"data_a": data}
    assert len(node.base.links.get_incoming().all()) == 1

    # a function without named parameters takes no positional arguments
    with pytest.raises(TypeError):
        function_kwargs.run_get_node(Int(1))
    with pytest.raises(TypeError):
        function_kwargs.run_get_node(Int(1), b=Int(2))


def test_args_and_kwargs_function():
    data = Int(DEFAULT_INT).store()
    assert function_args_and_kwargs(data) == {"data_a": data}
    other = Int(1).store()
    assert function_args_and_kwargs(data, data_b=other) == {"data_a": data, "data_b": other}


def test_varargs_and_kwargs_function():
    values = [Str(v).store() for v in "abcd"]
    results = function_varargs_kwargs(values[0], values[1], kwarg_c=values[2], kwarg_d=values[3])
    assert sorted(results) == ["arg_0", "arg_1", "kwarg_c", "kwarg_d"]
    assert results["arg_0"] == "a" and results["kwarg_d"] == "d"
    node = find_processes(limit=1)[0]
    assert sorted(node.inputs) == ["args_0", "args_1", "kwarg_c", "kwarg_d"]


def test_undeclared_keyword_is_a_value_error():
    with pytest.raises(ValueError):
        function_args(data_a=Int(1), data_b=Int(1))


def test_varargs_label_overlap_is_a_runtime_error():
    @calcfunction
    def overlap(args_0, *args):
        return args_0 + Int(sum(args))

    with pytest.raises(RuntimeError, match="args_0"):
        overlap.run_get_node(Int(1), Int(2), Int(3))


def test_nested_namespace_in_kwargs():
    inputs = {"nested": {"namespace": {"int": Int(1).store()}}}
    results, node = function_kwargs.run_get_node(**inputs)
    assert results == inputs
    assert node.base.links.get_incoming().nested() == inputs

    with pytest.raises(ValueError):
        function_kwargs.run_get_node(nested={"namespace": {"int": 1}})
    # regression test of aiida-core #5128: a plain value hidden next to a valid one
    with pytest.raises(ValueError):
        function_kwargs.run_get_node(namespace={"valid": Int(1), "invalid": 1})


@pytest.mark.parametrize(
    ("argument", "node_class"),
    [(True, Bool), ({"a": 1}, Dict), (1.0, Float), (1, Int), ("string", Str), ([1], List)],
)
def test_input_serialization(argument, node_class):
    result = function_args_calc(argument)
    assert isinstance(result, node_class)
    assert result.value == argument
    assert isinstance(find_processes(limit=1)[0].inputs.data_a, node_class)


@pytest.mark.parametrize(
    ("default", "node_class"),
    [(True, Bool), ({"a": 1}, Dict), (1.0, Float), (1, Int), ("string", Str), ([1], List)],
)
def test_default_serialization(default, node_class):
    @calcfunction
    def function_with_default(data_a=default):
        return data_a.clone()

    result = function_with_default()
    assert isinstance(result, node_class)
    assert result.value == default


def test_multiple_plain_defaults():
    @calcfunction
    def with_defaults(integer: int = 10, string: str = "default", boolean: bool = False):
        return {"integer": integer.clone(), "string": string.clone(), "boolean": boolean.clone()}

    results = with_defaults()
    assert results["integer"].value == 10
    assert results["string"].value == "default"
    assert results["boolean"].value is False


def test_none_default():
    @calcfunction
    def function_with_none_default(int_a, int_b, int_c=None):
        if int_c is not None:
            return int_a + int_b + int_c
        return int_a + int_b

    assert function_with_none_default(Int(1), Int(2)) == 3
    assert function_with_none_default(Int(1), Int(2), Int(3)) == 6
    assert function_with_none_default(int_a=1, int_b=2, int_c=None) == 3


def test_type_hint_inference():
    @calcfunction
    def function(
        a,
        b: str,
        c: bool,
        d: Str,
        e: Str | Int,
        f: str | int,
        g: typing.Optional[typing.Dict] = None,  # noqa: UP006, UP045
        h: dict | None = None,
    ):
        return None

    ports = function.spec().inputs

    def types(name):
        valid_type = ports[name].valid_type
        return valid_type if isinstance(valid_type, tuple) else (valid_type,)

    assert types("a") == (miniengine.Data,)
    assert types("b") == (Str,)
    assert types("c") == (Bool,)
    assert types("d") == (Str,)
    assert types("e") == (Str, Int)
    assert types("f") == (Str, Int)
    assert types("g") == (Dict, type(None))
    assert types("h") == (Dict, type(None))


def test_type_hint_validation():
    @calcfunction
    def function_type_hinting(a: int | float):
        return a + 1

    with pytest.raises(ValueError, match="'a'"):
        function_type_hinting("string")
    assert function_type_hinting(1) == 2
    assert function_type_hinting(Int(1)) == 2
    assert function_type_hinting(1.0) == 2.0
    assert function_type_hinting(Float(1)) == 2.0


# -- metadata --------------------------------------------------------------------------------------


def test_label_and_description_can_be_set():
    metadata = {"label": "Custom label", "description": "Custom description"}
    for function, args in (
        (function_args, (Int(1),)),
        (function_args_with_default, ()),
        (function_kwargs, ()),
        (function_args_and_kwargs, (Int(1),)),
    ):
        _, node = function.run_get_node(*args, metadata=metadata)
        assert node.label == "Custom label"
        assert node.description == "Custom description"


def test_metadata_default_in_the_signature():
    _, node = function_defaults.run_get_node(data_a=Int(DEFAULT_INT))
    assert node.label == "Default label"
    assert node.description == "Default description"
    _, node = function_defaults.run_get_node(metadata={"label": "Custom label"})
    assert node.label == "Custom label"
    assert node.description == "Default description"
    assert "metadata" not in node.inputs


def test_default_label_is_the_function_name():
    _, node = function_default_label.run_get_node()
    assert node.label == "function_default_label"
    assert node.description == ""
    _, node = function_default_label.run_get_node(metadata={"label": "L", "description": "D"})
    assert (node.label, node.description) == ("L", "D")


# -- returns ---------------------------------------------------------------------------------------


def test_run_launchers():
    assert run(function_return_true)
    result, node = run_get_node(function_return_true)
    assert result == Bool(True)
    assert isinstance(node, CalcFunctionNode)


def test_return_exit_code():
    _, node = function_exit_code.run_get_node(
        exit_status=Int(418).store(), exit_message=Str("I am a teapot").store()
    )
    assert node.is_finished and not node.is_finished_ok
    assert node.exit_status == 418
    assert node.exit_message == "I am a teapot"


def test_normal_exception_is_reraised_and_stored():
    @workfunction
    def function_excepts(exception):
        raise RuntimeError(exception.value)

    with pytest.raises(RuntimeError, match="This process function excepted"):
        function_excepts(exception=Str("This process function excepted"))
    [node] = find_processes()
    assert node.is_excepted
    assert "RuntimeError: This process function excepted" in node.exception


def test_workfunction_out_unstored_is_a_value_error():
    @workfunction
    def function_out_unstored():
        return Int(DEFAULT_INT)

    with pytest.raises(ValueError):
        function_out_unstored()


def test_workfunction_return_nested():
    @workfunction
    def function_return_nested():
        return {"nested.output": Int(DEFAULT_INT).store()}

    results, node = function_return_nested.run_get_node()
    assert results["nested"]["output"] == DEFAULT_INT
    assert node.outputs.nested.output == DEFAULT_INT


def test_workfunction_may_return_its_input():
    data = Int(2).store()
    result, node = function_return_input.run_get_node(data=data)
    assert result.pk == data.pk
    [triple] = node.base.links.get_outgoing(link_type=LinkType.RETURN)
    assert (triple.link_label, triple.node.pk) == ("result", data.pk)


def test_invalid_outputs_except_the_node():
    @calcfunction
    def excepting():
        node = Int(2)
        return {"a": node, "b": node}

    with pytest.raises(ValueError):
        excepting()
    node = find_processes(limit=1)[0]
    assert node.is_excepted, node.process_state
    assert "ValueError" in node.exception or "OutputValidationError" in node.exception


def test_simple_workflow():
    @calcfunction
    def add(data_a, data_b):
        return data_a + data_b

    @calcfunction
    def mul(data_a, data_b):
        return data_a * data_b

    @workfunction
    def add_mul_wf(data_a, data_b, data_c):
        return mul(add(data_a, data_b), data_c)

    result, node = add_mul_wf.run_get_node(Int(3), Int(4), Int(5))
    assert result == (3 + 4) * 5
    assert isinstance(node, WorkFunctionNode)


def test_calcfunctions_as_class_members():
    class CalcFunctionHolder:
        @calcfunction
        def add_member(a, b):
            return a + b

        @staticmethod
        @calcfunction
        def add_static(a, b):
            return a + b

        def run_add_static(self, a, b):
            return self.add_static(a, b)

    assert CalcFunctionHolder.add_member(Int(1), Int(2)) == 3
    assert CalcFunctionHolder().run_add_static(Int(1), Int(2)) == 3


# -- positional arguments to the launchers: a deliberate difference -------------------------------


def test_positional_arguments_to_run_work_unlike_aiida():
    # AiiDA's run/run_get_node reject positional arguments; DESIGN.md accepts them.
    assert run(function_args_calc, 3) == 3
    result, node = run_get_node(function_args_calc, Int(4))
    assert result == 4 and node.inputs.data_a == 4


# -- errors are both MiniengineError and AiiDA's built-in ------------------------------------------


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        (lambda: function_args(), ValueError),  # missing
        (lambda: function_args(Int(1), data_b=Int(2)), ValueError),  # unknown
        (lambda: function_args(object()), ValueError),  # not convertible
        (lambda: function_args(Int(1), Int(2)), TypeError),  # too many positionals
        (lambda: function_kwargs(nested={"a": 1}), ValueError),  # nested plain value
    ],
)
def test_input_errors_derive_from_the_builtin_aiida_raises(call, builtin):
    with pytest.raises(builtin) as info:
        call()
    assert isinstance(info.value, MiniengineError)
    assert find_processes() == []


def test_error_classes():
    assert issubclass(InputValidationError, ValueError)
    assert issubclass(OutputValidationError, ValueError)
    assert issubclass(EventLoopError, RuntimeError)
    for error in (InputValidationError, OutputValidationError, EventLoopError):
        assert issubclass(error, MiniengineError)


def test_node_classes_for_isinstance():
    _, calc = function_return_true.run_get_node()
    _, work = function_kwargs.run_get_node()
    assert isinstance(calc, CalcFunctionNode) and isinstance(calc, ProcessNode)
    assert isinstance(work, WorkFunctionNode) and isinstance(work, ProcessNode)
    assert not isinstance(calc, WorkFunctionNode)
    assert issubclass(miniengine.WorkChainNode, ProcessNode)
