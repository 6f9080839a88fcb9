"""WorkChain specs as AiiDA users write them (issue 4): the outline interpreter as pure code,
ports and namespaces, exposed ports, builders, exit codes, reserved step names, the lazy spec.

The outline tests call :mod:`miniengine.core.outline` directly with a predicate callback, with no
event loop and no database; the rest defines WorkChain classes and, where a run is needed to see
the behaviour, runs them on the test's own temporary database.
"""

import warnings

import pytest

from miniengine import (
    Data,
    Dict,
    ExitCode,
    Int,
    Str,
    ToContext,
    WorkChain,
    find_processes,
    if_,
    return_,
    run,
    run_get_node,
    while_,
)
from miniengine.core.outline import (
    If,
    OutlineMismatch,
    Return,
    Step,
    While,
    build_outline,
    first_step,
    instruction_at,
    next_step,
)

# the outline interpreter, pure ----------------------------------------------------------------


class Steps:
    """Functions standing for WorkChain methods: the outline keeps only their names."""

    def a(self): ...
    def b(self): ...
    def c(self): ...
    def d(self): ...
    def e(self): ...
    def cond(self): ...
    def other(self): ...
    def loop(self): ...


def walk(block, predicates):
    """The names of the steps the interpreter visits; ``predicates`` maps a predicate name to a
    list of the values it returns in turn.  A ``return_`` shows as ``('return', exit_code)``."""
    answers = {name: iter(values) for name, values in predicates.items()}
    evaluated = []

    def evaluate(name):
        evaluated.append(name)
        return next(answers[name])

    trail = []
    cursor = first_step(block, evaluate)
    while cursor is not None:
        assert isinstance(cursor, tuple) and all(isinstance(i, int) for i in cursor)
        instruction = instruction_at(block, cursor)
        if isinstance(instruction, Return):
            trail.append(("return", instruction.exit_code))
            break
        trail.append(instruction.name)
        cursor = next_step(block, cursor, evaluate)
    for name, remaining in answers.items():
        assert next(remaining, None) is None, f"predicate {name} was evaluated too few times"
    return trail


S = Steps


def test_plain_steps_run_in_order():
    block = build_outline(S.a, S.b, S.c)
    assert block == (Step("a"), Step("b"), Step("c"))
    assert walk(block, {}) == ["a", "b", "c"]


def test_nested_sequences_are_flattened():
    assert build_outline(S.a, (S.b, [S.c])) == (Step("a"), Step("b"), Step("c"))


@pytest.mark.parametrize(
    ("cond", "other", "expected"),
    [
        ([True], [], ["a", "b", "e"]),
        ([False], [True], ["a", "c", "e"]),
        ([False], [False], ["a", "d", "e"]),
    ],
)
def test_if_elif_else_takes_the_first_true_branch(cond, other, expected):
    block = build_outline(S.a, if_(S.cond)(S.b).elif_(S.other)(S.c).else_(S.d), S.e)
    assert walk(block, {"cond": cond, "other": other}) == expected


def test_if_without_else_is_skipped_when_false():
    block = build_outline(S.a, if_(S.cond)(S.b), S.c)
    assert walk(block, {"cond": [False]}) == ["a", "c"]


def test_empty_branch_moves_on():
    block = build_outline(if_(S.cond)().else_(S.b), S.c)
    assert walk(block, {"cond": [True]}) == ["c"]


def test_while_repeats_its_body_until_the_predicate_is_false():
    block = build_outline(S.a, while_(S.loop)(S.b, S.c), S.d)
    trail = walk(block, {"loop": [True, True, True, False]})
    assert trail == ["a", "b", "c", "b", "c", "b", "c", "d"]


def test_while_false_at_once_skips_the_body():
    block = build_outline(while_(S.loop)(S.b), S.c)
    assert walk(block, {"loop": [False]}) == ["c"]


def test_nested_conditionals_inside_loops():
    block = build_outline(while_(S.loop)(if_(S.cond)(S.a).else_(S.b, while_(S.other)(S.c))), S.d)
    trail = walk(
        block,
        {"loop": [True, True, False], "cond": [True, False], "other": [True, True, False]},
    )
    assert trail == ["a", "b", "c", "c", "d"]


def test_return_stops_the_outline():
    block = build_outline(S.a, if_(S.cond)(return_), S.b)
    assert walk(block, {"cond": [True]}) == ["a", ("return", None)]
    assert walk(block, {"cond": [False]}) == ["a", "b"]


def test_return_with_an_exit_code_or_an_int():
    code = ExitCode(300, "stopped")
    assert walk(build_outline(S.a, return_(code), S.b), {}) == ["a", ("return", code)]
    assert walk(build_outline(return_(7)), {}) == [("return", 7)]
    assert return_(7) == Return(7) and return_ == Return()


def test_cursor_round_trips_through_instruction_at():
    block = build_outline(S.a, while_(S.loop)(if_(S.cond)(S.b).else_(S.c)), S.d)
    cursor = first_step(block, lambda name: True)
    assert cursor == (0,)
    cursor = next_step(block, cursor, lambda name: True)
    assert cursor == (1, 0, 0, 0)
    assert instruction_at(block, cursor) == Step("b")
    assert instruction_at(block, (1, 0, 1, 0)) == Step("c")
    assert instruction_at(block, (2,)) == Step("d")


@pytest.mark.parametrize("cursor", [(9,), (1,), (1, 0), (1, 0, 5, 0), (1, 0, 0, 3), (0, 1), ()])
def test_cursor_that_does_not_fit_the_outline_is_an_outline_mismatch(cursor):
    block = build_outline(S.a, while_(S.loop)(if_(S.cond)(S.b).else_(S.c)), S.d)
    with pytest.raises(OutlineMismatch):
        instruction_at(block, cursor)


def test_non_bool_predicate_warns_but_is_used_for_its_truth():
    block = build_outline(if_(S.cond)(S.a).else_(S.b))
    with pytest.warns(UserWarning, match="cond"):
        assert walk(block, {"cond": [1]}) == ["a"]
    with pytest.warns(UserWarning, match="cond"):
        assert walk(block, {"cond": [[]]}) == ["b"]


def test_bool_predicate_does_not_warn():
    block = build_outline(while_(S.loop)(S.a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert walk(block, {"loop": [True, False]}) == ["a"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_outline(42),
        lambda: build_outline("a"),
        lambda: build_outline(S.a, None),
        lambda: build_outline(lambda self: None),
        lambda: if_(lambda self: True)(S.a),
        lambda: if_(42)(S.a),
        lambda: while_(S.loop)(),
        lambda: while_(S.loop)(S.a, 3.5),
        lambda: if_(S.cond)(S.a).else_(S.b).elif_(S.other)(S.c),
        lambda: if_(S.cond)(S.a).else_(S.b).else_(S.c),
    ],
    ids=[
        "int",
        "str-step",
        "none",
        "lambda-step",
        "lambda-predicate",
        "int-predicate",
        "empty-while",
        "float-in-body",
        "elif-after-else",
        "two-elses",
    ],
)
def test_malformed_outline_is_a_type_error(make):
    with pytest.raises(TypeError):
        make()


def test_outline_tree_is_made_of_small_frozen_instructions():
    block = build_outline(if_(S.cond)(S.a).else_(S.b), while_(S.loop)(S.c))
    assert block == (
        If((("cond", (Step("a"),)), (None, (Step("b"),)))),
        While("loop", (Step("c"),)),
    )
    assert hash(block)  # frozen: usable as a key, comparable across interpreters


# exit codes ----------------------------------------------------------------------------------


def test_exit_code_is_a_three_field_named_tuple():
    assert ExitCode._fields == ("status", "message", "invalidates_cache")
    assert ExitCode() == (0, None, False)
    code = ExitCode(300, "the {thing} failed", True)
    status, message, invalidates_cache = code
    assert (status, message, invalidates_cache) == (300, "the {thing} failed", True)
    formatted = code.format(thing="pump")
    assert formatted == ExitCode(300, "the pump failed", True)
    assert code.message == "the {thing} failed"  # format returns a copy


def test_exit_code_format_with_a_missing_parameter_is_a_value_error():
    with pytest.raises(ValueError, match="thing"):
        ExitCode(300, "the {thing} failed").format(other=1)


class WithExitCodes(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("fail", valid_type=Int, default=lambda: Int(0))
        spec.exit_code(300, "ERROR_X", message="step failed because of {reason}")
        spec.exit_code(1, "ERROR_CUSTOM_ONE", message="user code reusing status 1")
        spec.outline(cls.check, cls.never)

    def check(self):
        assert self.exit_codes.ERROR_X is type(self).exit_codes.ERROR_X
        if self.inputs.fail.value == 300:
            return self.exit_codes.ERROR_X.format(reason="the test")
        if self.inputs.fail.value == 1:
            return self.exit_codes("ERROR_CUSTOM_ONE")
        return None

    def never(self):
        self.report("never reached when failing")


def test_exit_codes_are_readable_on_the_class():
    codes = WithExitCodes.exit_codes
    assert tuple(codes.ERROR_X) == (300, "step failed because of {reason}", False)
    assert codes["ERROR_X"].status == 300
    assert codes(300) == codes.ERROR_X
    assert "ERROR_X" in codes
    assert codes.ERROR_UNSPECIFIED.status == 1
    assert codes.ERROR_INVALID_OUTPUT.status == 10
    assert codes.ERROR_MISSING_OUTPUT.status == 11
    assert tuple(codes.ERROR_CUSTOM_ONE) == (1, "user code reusing status 1", False)
    with pytest.raises(AttributeError, match="ERROR_NOPE"):
        codes.ERROR_NOPE  # noqa: B018


def test_returning_a_declared_exit_code_finishes_with_its_status_and_message():
    _, node = run_get_node(WithExitCodes, fail=Int(300))
    assert node.exit_status == 300
    assert node.exit_message == "step failed because of the test"
    assert node.is_finished and node.is_failed and not node.is_finished_ok
    assert not any("never reached" in log.message for log in node.logs)
    _, node = run_get_node(WithExitCodes, fail=Int(1))
    assert (node.exit_status, node.exit_message) == (1, "user code reusing status 1")
    _, node = run_get_node(WithExitCodes)
    assert node.is_finished_ok and node.exit_status == 0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("300", "ERROR_A"), {"message": "m"}),
        ((True, "ERROR_A"), {"message": "m"}),
        ((300, "not an identifier"), {"message": "m"}),
        ((300, "ERROR_A"), {"message": 3}),
        ((300, "ERROR_A"), {"message": "m", "invalidates_cache": "yes"}),
    ],
)
def test_bad_exit_code_declaration_is_a_type_error(args, kwargs):
    class Bad(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.exit_code(*args, **kwargs)
            spec.outline(cls.go)

        def go(self): ...

    with pytest.raises(TypeError):
        Bad.spec()


def test_negative_exit_code_status_is_a_value_error():
    # As in AiiDA's ProcessSpec.exit_code: a wrong type is a TypeError, a negative int a ValueError.
    class Negative(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.exit_code(-1, "ERROR_A", message="m")
            spec.outline(cls.go)

        def go(self): ...

    with pytest.raises(ValueError, match="-1"):
        Negative.spec()


# reserved names and the lazy spec ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "step",
        "run",
        "out",
        "ctx",
        "inputs",
        "report",
        "submit",
        "to_context",
        "out_many",
        "on_run",
        "exposed_inputs",
        "node",
    ],
)
def test_step_named_after_an_engine_attribute_is_rejected_at_class_creation(name):
    with pytest.raises(TypeError, match=repr(name)):
        type("Shadowing", (WorkChain,), {name: lambda self: None})


def test_common_step_names_work():
    class Common(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.output("trail", valid_type=Str)
            spec.outline(cls.setup, cls.begin, cls.check, cls.result, cls.finalize)

        def setup(self):
            self.ctx.trail = ["setup"]

        def begin(self):
            self.ctx.trail.append("begin")

        def check(self):
            self.ctx.trail.append("check")

        def result(self):
            self.ctx.trail.append("result")

        def finalize(self):
            self.ctx.trail.append("finalize")
            self.out("trail", Str(" ".join(self.ctx.trail)))

    assert run(Common)["trail"].value == "setup begin check result finalize"


def test_defining_a_workchain_builds_no_spec_and_needs_no_database(miniengine_db):
    calls = []

    class Lazy(WorkChain):
        @classmethod
        def define(cls, spec):
            calls.append(cls)
            super().define(spec)
            spec.input("x", valid_type=Int, help="the x")
            spec.outline(cls.go)

        def go(self): ...

    class LazyChild(Lazy):
        pass

    assert calls == []
    assert not miniengine_db.exists()
    assert Lazy.spec().inputs["x"].help == "the x"
    assert Lazy.spec() is Lazy.spec()
    assert calls == [Lazy]
    assert LazyChild.spec() is not Lazy.spec()
    assert calls == [Lazy, LazyChild]
    assert not miniengine_db.exists()


def test_outline_naming_a_missing_method_is_a_type_error_on_first_use():
    class Missing(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.outline(cls.go, "not_a_step")

        def go(self): ...

    with pytest.raises(TypeError):
        Missing.spec()


def test_outline_with_a_predicate_that_is_not_a_method_is_a_type_error():
    class MissingPredicate(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.outline(if_("nowhere")(cls.go))

        def go(self): ...

    with pytest.raises(TypeError, match="nowhere"):
        run(MissingPredicate)
    assert find_processes() == []


class NoOutline(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)


def test_a_class_without_an_outline_makes_a_builder_and_fails_only_at_launch(miniengine_db):
    from miniengine import submit

    assert "x" in NoOutline.spec().inputs
    builder = NoOutline.get_builder()
    builder.x = Int(1)
    for launch in (lambda: run(builder), lambda: run(NoOutline, x=Int(2)), lambda: submit(builder)):
        with pytest.raises(TypeError, match=r"NoOutline cannot be launched: .* no outline") as info:
            launch()
        assert isinstance(info.value, AssertionError)  # what AiiDA raises
    assert find_processes() == []
    assert not builder.x.is_stored


class SubmitsNoOutline(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.launch)

    def launch(self):
        self.submit(NoOutline, x=Int(3))


def test_a_step_submitting_a_class_without_an_outline_excepts():
    with pytest.raises(TypeError, match="no outline"):
        run(SubmitsNoOutline)
    (node,) = find_processes()
    assert node.is_excepted and node.called == []


def test_a_define_that_forgets_super_define_names_the_class():
    class Forgetful(WorkChain):
        @classmethod
        def define(cls, spec):
            spec.input("x", valid_type=Int)
            spec.outline(cls.go)

        def go(self): ...

    class ForgetfulChild(Forgetful):
        @classmethod
        def define(cls, spec):
            super().define(spec)

    for use in (Forgetful.spec, Forgetful.get_builder, lambda: run(Forgetful, x=Int(1))):
        with pytest.raises(TypeError, match=r"Forgetful.define\(\) did not call super"):
            use()
    with pytest.raises(AssertionError, match=r"ForgetfulChild.define\(\) did not call super"):
        ForgetfulChild.spec()
    assert find_processes() == []

    class SkipsItsParent(Forgetful):
        @classmethod
        def define(cls, spec):
            WorkChain.define(spec)  # the base's define called directly is enough
            spec.outline(cls.go)

    assert SkipsItsParent.spec().exit_codes["ERROR_MISSING_OUTPUT"].status == 11


# ports ---------------------------------------------------------------------------------------


def double(value, port):
    return None if value.value % 2 == 0 else "must be even"


def to_int(value):
    SERIALIZED.append(value)
    return Int(value)


SERIALIZED = []


class Ported(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int, help="The x input.")
        spec.input("y", valid_type=Int, default=lambda: Int(10))
        spec.input("z", valid_type=(Int, Str), default=lambda: Int(3))
        spec.input("opt", valid_type=Str, required=False)
        spec.input("even", valid_type=Int, required=False, validator=double)
        spec.input("ser", valid_type=Int, required=False, serializer=to_int)
        spec.input("nested.deeper.value", valid_type=Int, help="deep")
        spec.input_namespace("dyn", dynamic=True)
        spec.input_namespace("ints", valid_type=Int)
        spec.output("echo", valid_type=Dict)
        spec.outline(cls.echo)

    def echo(self):
        def plain(value):
            if isinstance(value, Data):
                return value.value
            return {key: plain(item) for key, item in value.items()}

        seen = {key: plain(value) for key, value in self.inputs.items() if key != "metadata"}
        self.out("echo", Dict(seen))


def required():
    """Fresh required inputs (a Data node stored in one test's database must not be reused)."""
    return {"x": Int(1), "nested": {"deeper": {"value": Int(2)}}}


def test_spec_ports_expose_valid_type_help_and_namespaces():
    inputs = Ported.spec().inputs
    assert inputs["x"].valid_type is Int
    assert inputs["x"].help == "The x input."
    assert inputs["x"].required
    assert not inputs["y"].required and not inputs["opt"].required
    assert inputs["z"].valid_type == (Int, Str)
    assert inputs["nested"]["deeper"]["value"].help == "deep"
    assert inputs["dyn"].dynamic and inputs["ints"].dynamic
    assert "metadata" in inputs
    assert Ported.spec().outputs["echo"].valid_type is Dict


def test_defaults_values_and_callables_are_filled_in():
    echo = run(Ported, **required())["echo"].get_dict()
    assert echo == {"x": 1, "y": 10, "z": 3, "nested": {"deeper": {"value": 2}}}


def test_callable_default_gives_a_new_node_each_run():
    _, first = run_get_node(Ported, **required())
    _, second = run_get_node(Ported, **required())
    assert first.inputs.y.value == second.inputs.y.value == 10
    assert first.inputs.y.pk != second.inputs.y.pk


def test_given_values_override_defaults_and_dynamic_namespaces_accept_any_name():
    echo = run(
        Ported,
        **required(),
        y=Int(5),
        z=Str("zed"),
        opt=Str("o"),
        dyn={"anything": Int(1), "deep": {"er": Str("s")}},
        ints={"a": Int(1), "b": Int(2)},
    )["echo"].get_dict()
    assert echo["y"] == 5 and echo["z"] == "zed" and echo["opt"] == "o"
    assert echo["dyn"] == {"anything": 1, "deep": {"er": "s"}}
    assert echo["ints"] == {"a": 1, "b": 2}


def test_nested_inputs_get_namespaced_link_labels():
    _, node = run_get_node(Ported, **required(), dyn={"deep": {"er": Str("s")}})
    labels = set(node.base.links.get_incoming().all_link_labels())
    assert {"x", "y", "z", "nested__deeper__value", "dyn__deep__er"} <= labels
    assert node.inputs.nested.deeper.value.value == 2


@pytest.mark.parametrize(
    ("extra", "port"),
    [
        ({"x": Str("no")}, "x"),
        ({"z": 1.5}, "z"),
        ({"ints": {"a": Str("no")}}, "ints.a"),
        ({"even": Int(3)}, "even"),
        ({"bogus": Int(1)}, "bogus"),
        ({"nested": {"deeper": {"value": Int(1), "extra": Int(2)}}}, "nested.deeper.extra"),
        ({"nested": {"deeper": {}}}, "nested.deeper.value"),
    ],
    ids=[
        "wrong-type",
        "plain-float",
        "dynamic-type",
        "validator",
        "unknown",
        "unknown-nested",
        "missing-nested",
    ],
)
def test_bad_inputs_are_value_errors_naming_the_port_before_any_node_exists(extra, port):
    before = len(find_processes())
    with pytest.raises(ValueError, match=port.replace(".", r"\.")):
        run(Ported, **{**required(), **extra})
    assert len(find_processes()) == before


def test_validator_message_is_in_the_error():
    with pytest.raises(ValueError, match="must be even"):
        run(Ported, **required(), even=Int(3))
    assert run(Ported, **required(), even=Int(4))["echo"]["even"] == 4


def test_missing_required_input_names_it():
    with pytest.raises(ValueError, match="'x'"):
        run(Ported, nested={"deeper": {"value": Int(2)}})


def test_serializer_runs_only_on_values_that_are_not_data():
    SERIALIZED.clear()
    assert run(Ported, **required(), ser=4)["echo"]["ser"] == 4
    assert SERIALIZED == [4]
    run(Ported, **required(), ser=Int(5))
    assert SERIALIZED == [4]


# builders ------------------------------------------------------------------------------------


def test_builder_runs_serializers_on_assignment_only_for_plain_values():
    SERIALIZED.clear()
    builder = Ported.get_builder()
    builder.ser = 7
    assert SERIALIZED == [7]
    assert isinstance(builder.ser, Int) and builder.ser.value == 7
    data = Int(8)
    builder.ser = data
    assert builder.ser is data
    assert SERIALIZED == [7]


def test_builder_validates_on_assignment_naming_the_port():
    builder = Ported.get_builder()
    with pytest.raises(ValueError, match="'x'"):
        builder.x = Str("not an int")
    with pytest.raises(ValueError, match="must be even"):
        builder.even = Int(3)
    with pytest.raises(ValueError, match=r"nested\.deeper\.value"):
        builder.nested.deeper.value = Str("no")
    with pytest.raises(ValueError, match=r"nested\.deeper\.value"):
        builder["nested.deeper.value"] = 1.5
    assert "x" not in builder and "even" not in builder
    builder.ints = {"a": Str("no")}  # a dynamic name is checked at launch, as in AiiDA
    builder.x = Int(1)
    builder.nested.deeper.value = Int(2)
    with pytest.raises(ValueError, match=r"ints\.a"):
        run(builder)
    builder.even = Int(4)
    assert builder.even.value == 4


def with_value_default():
    """A class whose default is a Data *value* (one node shared by every run), made per test
    because that node, once stored, belongs to that test's database."""

    class ValueDefault(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.input("v", valid_type=Int, default=Int(42))
            spec.output("v", valid_type=Int)
            spec.outline(cls.go)

        def go(self):
            self.out("v", self.inputs.v)

    return ValueDefault


def test_value_default_is_the_same_node_in_every_run():
    cls = with_value_default()
    first, node = run_get_node(cls)
    second = run(cls)
    assert first["v"].value == 42 and first["v"].pk == second["v"].pk == node.inputs.v.pk


def test_builder_reads_an_unset_port_as_its_default_or_none():
    builder = Ported.get_builder()
    assert builder.x is None and builder.opt is None
    assert callable(builder.y)  # a callable default is returned as declared, as in AiiDA
    assert "y" not in builder  # reading does not set it
    assert with_value_default().get_builder().v.value == 42


def test_builder_lists_ports_and_nested_namespaces():
    builder = Ported.get_builder()
    assert {"x", "y", "z", "opt", "even", "ser", "nested", "dyn", "ints", "metadata"} <= set(
        dir(builder)
    )
    assert "value" in dir(builder.nested.deeper)
    assert "label" in dir(builder.metadata)
    assert builder.x is None
    with pytest.raises(AttributeError, match="bogus"):
        builder.bogus = Int(1)
    with pytest.raises(AttributeError):
        builder.nested.bogus = Int(1)


def test_builder_dotted_names_make_nested_namespaces_and_it_runs():
    builder = Ported.get_builder()
    builder.x = Int(1)
    builder["nested.deeper.value"] = Int(2)
    builder.dyn.free = Int(3)
    builder["dyn.more.deep"] = Int(4)
    builder.metadata.label = "built"
    assert builder.nested.deeper.value.value == 2
    result, node = run_get_node(builder)
    assert result["echo"]["dyn"] == {"free": 3, "more": {"deep": 4}}
    assert node.label == "built"
    assert node.process_label == "Ported"


def test_builder_compares_equal_to_a_dict():
    class Small(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.input("a", valid_type=Int)
            spec.input("b", valid_type=Int, required=False)
            spec.outline(cls.go)

        def go(self): ...

    builder = Small.get_builder()
    assert builder == {"metadata": {}}
    a = Int(1)
    builder.a = a
    assert builder == {"a": a, "metadata": {}}
    assert builder != {"a": Int(2), "metadata": {}}
    other = Small.get_builder()
    other.a = a
    assert builder == other
    builder.metadata.label = "x"
    assert builder == {"a": a, "metadata": {"label": "x"}}
    assert run(builder) == {}


def test_builder_namespace_assignment_from_a_mapping():
    builder = Ported.get_builder()
    builder.x = Int(1)
    builder.nested = {"deeper": {"value": Int(2)}}
    builder.ints = {"a": Int(5)}
    assert run(builder)["echo"]["ints"] == {"a": 5}


def test_get_builder_restart_holds_the_inputs_of_the_run():
    _, node = run_get_node(Ported, **required(), opt=Str("o"), metadata={"label": "first"})
    builder = node.get_builder_restart()
    assert builder.process_class is Ported
    assert builder.x.pk == node.inputs.x.pk and builder.opt.value == "o"
    assert builder.nested.deeper.value.value == 2
    assert builder.metadata.label == "first"
    _, again = run_get_node(builder)
    assert again.inputs.x.pk == node.inputs.x.pk
    assert again.inputs.y.value == 10


# exposed ports -------------------------------------------------------------------------------


class Inner(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("a", valid_type=Int)
        spec.input("b", valid_type=Int, default=lambda: Int(100))
        spec.input("c", valid_type=Int, required=False)
        spec.output("total", valid_type=Int)
        spec.output("extra", valid_type=Str, required=False)
        spec.outline(cls.add)

    def add(self):
        total = self.inputs.a.value + self.inputs.b.value
        if "c" in self.inputs:
            total += self.inputs.c.value
        self.out("total", Int(total))
        self.out("extra", Str(f"{self.inputs.a.value}+{self.inputs.b.value}"))


class Outer(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(Inner, include=["a"])
        spec.expose_inputs(Inner, namespace="inner", exclude=["a"])
        spec.expose_inputs(Inner, namespace="deep.child", include=("a", "b"))
        spec.expose_outputs(Inner, namespace="inner")
        spec.expose_outputs(Inner, include=["total"])
        spec.output("seen", valid_type=Dict)
        spec.outline(cls.launch, cls.collect)

    def launch(self):
        seen = {
            "agglomerated": sorted(self.exposed_inputs(Inner, namespace="inner")),
            "only_inner": sorted(self.exposed_inputs(Inner, namespace="inner", agglomerate=False)),
            "top": sorted(self.exposed_inputs(Inner)),
            "deep": sorted(self.exposed_inputs(Inner, namespace="deep.child", agglomerate=False)),
        }
        self.ctx.seen = seen
        return ToContext(child=self.submit(Inner, **self.exposed_inputs(Inner, namespace="inner")))

    def collect(self):
        child = self.ctx.child
        self.out_many(self.exposed_outputs(child, Inner, namespace="inner", agglomerate=False))
        self.out_many(self.exposed_outputs(child, Inner))
        self.out("seen", Dict(self.ctx.seen))


class OuterAgglomerated(Outer):
    """Collects the outputs exposed in ``inner`` with ``agglomerate=True`` (the default)."""

    def collect(self):
        exposed = self.exposed_outputs(self.ctx.child, Inner, namespace="inner")
        self.out("seen", Dict({"keys": sorted(exposed)}))
        self.out_many(exposed)


def test_expose_inputs_with_namespace_include_and_exclude():
    inputs = Outer.spec().inputs
    assert inputs["a"].valid_type is Int and inputs["a"].required
    assert "b" not in inputs and "c" not in inputs
    assert set(inputs["inner"]) == {"b", "c"}
    assert set(inputs["deep"]["child"]) == {"a", "b"}
    assert inputs["inner"]["b"].valid_type is Int
    outputs = Outer.spec().outputs
    assert set(outputs["inner"]) == {"total", "extra"}
    assert "total" in outputs and "extra" not in outputs


class WithOptions(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("options.a", valid_type=Int)
        spec.input("b", valid_type=Int)
        spec.output("a", valid_type=Int)
        spec.outline(cls.go)

    def go(self):
        self.out("a", self.inputs.options.a)


class ChangesWhatItExposed(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(WithOptions)
        spec.input("options.extra", valid_type=Int)
        spec.inputs["b"].required = False
        spec.expose_inputs(WithOptions, namespace="sub")
        spec.inputs["sub"]["options"]["a"].help = "changed here only"
        spec.outline(cls.go)

    def go(self): ...


def test_changing_exposed_ports_leaves_the_exposed_class_alone():
    spec = ChangesWhatItExposed.spec()
    assert set(spec.inputs["options"]) == {"a", "extra"}
    assert not spec.inputs["b"].required
    original = WithOptions.spec().inputs
    assert set(original["options"]) == {"a"}
    assert original["b"].required
    assert original["options"]["a"].help is None
    result = run(WithOptions, options={"a": Int(1)}, b=Int(2))
    assert result["a"].value == 1


def test_expose_with_both_include_and_exclude_is_refused():
    class Both(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.expose_inputs(Inner, include=["a"], exclude=["b"])
            spec.outline(cls.go)

        def go(self): ...

    with pytest.raises(ValueError):
        Both.spec()


def test_exposed_inputs_and_outputs_at_run_time():
    result, node = run_get_node(
        Outer,
        a=Int(1),
        inner={"b": Int(2), "c": Int(3)},
        deep={"child": {"a": Int(4)}},
    )
    seen = result["seen"].get_dict()
    assert seen["agglomerated"] == ["a", "b", "c"]
    assert seen["only_inner"] == ["b", "c"]
    assert seen["top"] == ["a"]
    assert seen["deep"] == ["a", "b"]  # b came from its default
    assert result["inner"]["total"].value == 6
    assert result["inner"]["extra"].value == "1+2"
    assert result["total"].value == 6
    assert "extra" not in result
    child = node.called[0]
    assert child.inputs.a.value == 1 and child.inputs.b.value == 2 and child.inputs.c.value == 3
    labels = set(node.base.links.get_outgoing().all_link_labels())
    assert {"inner__total", "inner__extra", "total", "seen"} <= labels


def test_agglomerated_exposed_outputs_name_each_output_once_in_the_innermost_namespace():
    # AiiDA: each top-level output of the child is mapped to the most specific namespace that
    # exposes it (``output_key_map[top_name] = port_namespace``), so 'total', exposed at the top
    # level and in 'inner', comes back once, as 'inner.total'.
    result = run(OuterAgglomerated, a=Int(1), inner={"b": Int(2)}, deep={"child": {"a": Int(4)}})
    assert result["seen"]["keys"] == ["inner.extra", "inner.total"]
    assert result["inner"]["total"].value == 3


def test_exit_codes_can_be_read_inside_define_as_in_aiida():
    class EarlyReturn(WorkChain):
        @classmethod
        def define(cls, spec):
            super().define(spec)
            spec.exit_code(301, "ERROR_EARLY", message="stopped early")
            spec.outline(cls.go, return_(cls.exit_codes.ERROR_EARLY))

        def go(self):
            pass

    _, node = run_get_node(EarlyReturn)
    assert node.exit_status == 301 and node.exit_message == "stopped early"


def test_a_spec_built_from_many_threads_at_once_is_built_once() -> None:
    """A worker's step threads may all use a class for the first time together: the spec is
    built once and every thread gets it (before, one thread's cleanup raised in another)."""
    import threading
    import time

    from miniengine import CalcJob

    built: list[str] = []

    class SlowToDefine(WorkChain):
        @classmethod
        def define(cls, spec):  # type: ignore[no-untyped-def]
            super().define(spec)
            built.append(cls.__name__)
            time.sleep(0.05)  # widens the window in which a second thread could start building
            spec.outline(cls.go)

        def go(self) -> None:
            pass

    class SlowCalcJob(CalcJob):
        @classmethod
        def define(cls, spec):  # type: ignore[no-untyped-def]
            super().define(spec)
            built.append(cls.__name__)
            time.sleep(0.05)

    for cls in (SlowToDefine, SlowCalcJob):
        barrier = threading.Barrier(8)
        results: list[object] = []
        errors: list[BaseException] = []

        def use(
            cls: type = cls,
            barrier: threading.Barrier = barrier,
            results: list[object] = results,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                results.append(cls.spec())  # type: ignore[attr-defined]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(results) == 8 and all(spec is results[0] for spec in results)
    assert built == ["SlowToDefine", "SlowCalcJob"]
