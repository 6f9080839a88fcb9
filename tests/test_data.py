"""Data values: they behave like their Python values, are immutable once stored, and round-trip
through the database by pk and uuid (issue 3)."""

import math

import pytest

from miniengine import (
    Bool,
    Data,
    Dict,
    Float,
    Int,
    List,
    MiniengineError,
    ModificationNotAllowed,
    NotExistent,
    Str,
    calcfunction,
    find_processes,
    load_node,
)
from miniengine.core.data import DATA_TYPES
from miniengine.exceptions import UnknownDataTypeError

#: every test runs on a sqlite file and on a PostgreSQL database
pytestmark = pytest.mark.backends

# -- behaving like the value -----------------------------------------------------------------------


def test_int_arithmetic_returns_new_unstored_int():
    two = Int(2).store()
    total = two + 1
    assert total == 3
    assert type(total) is Int
    assert not total.is_stored
    assert two == 2 and two.is_stored
    assert type(1 + Int(2)) is Int and 1 + Int(2) == 3
    assert Int(2) * Int(3) == 6 and type(Int(2) * Int(3)) is Int
    assert Int(2) - 5 == -3
    assert 10 - Int(4) == 6
    assert Int(7) // 2 == 3 and type(Int(7) // 2) is Int
    assert Int(7) % 4 == 3
    assert Int(2) ** 3 == 8
    assert type(-Int(2)) is Int and -Int(2) == -2
    assert abs(Int(-2)) == 2


def test_division_and_mixed_arithmetic_return_float():
    half = Int(3) / 2
    assert type(half) is Float and half == 1.5
    assert type(Int(4) / 2) is Float and Int(4) / 2 == 2.0
    assert type(Int(2) + 1.5) is Float and Int(2) + 1.5 == 3.5
    assert type(Float(1.5) + 1) is Float and Float(1.5) + 1 == 2.5
    assert type(Float(1.5) * Int(2)) is Float and Float(1.5) * Int(2) == 3.0
    assert 3 / Int(2) == 1.5


def test_comparisons():
    assert Int(2) < 3 and Int(2) <= Int(2) and Int(3) > 2 and Int(3) >= 3.0
    assert Float(1.5) > 1 and Int(1) < Float(1.5)
    assert Int(2) == 2 and Int(2) == Int(2) and Int(2) == 2.0
    assert Int(2) != 3 and Int(2) != Int(3)
    assert Float(2.0) == Int(2)
    assert Str("a") == "a" and Str("a") != "b" and Str("a") < Str("b")
    assert Bool(True) == True  # noqa: E712
    assert Bool(False) == Bool(False)
    assert Int(1) != Str("1")
    assert sorted([Int(3), Int(1), Int(2)]) == [1, 2, 3]


def test_conversions():
    assert int(Int(3)) == 3 and type(int(Int(3))) is int
    assert float(Int(3)) == 3.0
    assert float(Float(1.5)) == 1.5
    assert int(Float(2.7)) == 2
    assert str(Str("a")) == "a"
    assert str(Int(5)) == "5"
    assert bool(Int(0)) is False and bool(Int(1)) is True
    assert bool(Bool(False)) is False and bool(Bool(True)) is True
    assert int(Bool(True)) == 1
    assert [10, 20][Int(1)] == 20
    assert list(range(Int(3))) == [0, 1, 2]
    assert f"{Float(1.5):.2f}" == "1.50"
    assert round(Float(1.26), 1) == 1.3
    assert len(Str("abc")) == 3 and "b" in Str("abc")


def test_value_attribute():
    assert Int(3).value == 3 and type(Int(3).value) is int
    assert Float(2.5).value == 2.5 and type(Float(2).value) is float
    assert Str("x").value == "x"
    assert Bool(True).value is True
    assert Dict({"a": 1}).value == {"a": 1}
    assert List([1, 2]).value == [1, 2]


def test_constructors():
    assert Int() == 0 and Float() == 0.0 and Str() == "" and Bool() == False  # noqa: E712
    assert Int("3") == 3
    assert Int(2.0) == 2
    assert Int(Int(4)) == 4
    with pytest.raises(ValueError):
        Int(2.5)
    assert Dict(dict={"a": 1}) == {"a": 1}
    assert List(list=[1]) == [1]
    assert Dict() == {} and List() == []


def test_equal_values_hash_alike():
    assert len({Int(1), Int(1), Int(2)}) == 2
    assert {Int(1): "one"}[1] == "one"


def test_nan_float_equals_itself():
    nan = Float(math.nan)
    assert nan == Float(math.nan)
    assert nan.store() == load_node(nan.pk)


def test_dict_behaves_like_a_dict():
    d = Dict({"a": 1, "b": {"c": [1, 2]}})
    assert d["a"] == 1
    assert d.get("missing", 5) == 5
    assert "a" in d and "z" not in d
    assert len(d) == 2
    assert sorted(d) == ["a", "b"]
    assert sorted(d.keys()) == ["a", "b"]
    assert dict(d.items())["b"] == {"c": [1, 2]}
    assert d.dict.a == 1
    assert d == {"a": 1, "b": {"c": [1, 2]}}
    assert d == Dict({"a": 1, "b": {"c": [1, 2]}})
    assert d != {"a": 2}
    copy = d.get_dict()
    copy["b"]["c"].append(3)
    assert d["b"]["c"] == [1, 2]
    assert str(Dict({"a": 1})) == "{'a': 1}"


def test_list_behaves_like_a_list():
    values = List([1, "a", [2], {"b": None}])
    assert values[0] == 1 and values[-1] == {"b": None}
    assert len(values) == 4
    assert values == [1, "a", [2], {"b": None}]
    assert list(values) == values.get_list()
    assert "a" in values
    assert values.index("a") == 1 and values.count(1) == 1
    copy = values.get_list()
    copy[2].append(3)
    assert values[2] == [2]


def test_unstored_containers_can_be_changed():
    d = Dict({"a": 1})
    d["b"] = 2
    d.update_dict({"c": 3})
    del d["a"]
    assert d == {"b": 2, "c": 3}
    values = List([3, 1])
    values.append(2)
    values.extend([5])
    values.sort()
    assert values == [1, 2, 3, 5]
    number = Int(1)
    number.value = 5
    assert number == 5


def test_containers_hold_only_plain_values():
    with pytest.raises(TypeError):
        Dict({"a": object()})
    with pytest.raises(TypeError):
        Dict({1: "not a str key"})
    with pytest.raises(TypeError):
        List([object()])
    with pytest.raises(TypeError):
        List("not a list")


# -- immutable once stored -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.__setitem__("x", 1),
        lambda d: d.__delitem__("a"),
        lambda d: d.set_dict({"x": 1}),
        lambda d: d.update_dict({"x": 1}),
    ],
)
def test_stored_dict_is_immutable(change):
    d = Dict({"a": 1}).store()
    with pytest.raises(ModificationNotAllowed):
        change(d)
    assert d == {"a": 1}
    assert load_node(d.pk) == {"a": 1}


@pytest.mark.parametrize(
    "change",
    [
        lambda values: values.append(1),
        lambda values: values.extend([1]),
        lambda values: values.insert(0, 1),
        lambda values: values.__setitem__(0, 9),
        lambda values: values.__delitem__(0),
        lambda values: values.pop(),
        lambda values: values.remove(2),
        lambda values: values.sort(),
        lambda values: values.reverse(),
        lambda values: values.set_list([]),
    ],
)
def test_stored_list_is_immutable(change):
    values = List([2, 1]).store()
    with pytest.raises(ModificationNotAllowed):
        change(values)
    assert values == [2, 1]
    assert load_node(values.pk) == [2, 1]


@pytest.mark.parametrize("node", [Int(1), Float(1.5), Str("s"), Bool(True)])
def test_stored_base_value_is_immutable(node):
    node = node.clone().store()
    original = node.value
    with pytest.raises(ModificationNotAllowed) as info:
        node.value = original
    assert isinstance(info.value, MiniengineError)
    assert load_node(node.pk).value == original


def test_data_returned_by_a_calcfunction_is_stored_and_immutable():
    @calcfunction
    def make(x):
        return Dict({"x": x.value})

    result = make(1)
    assert result.is_stored
    with pytest.raises(ModificationNotAllowed):
        result["y"] = 2


def test_label_and_description_stay_editable_and_are_saved():
    number = Int(1, label="first", description="a number").store()
    assert load_node(number.pk).label == "first"
    number.label = "renamed"
    number.description = "still a number"
    loaded = load_node(number.pk)
    assert (loaded.label, loaded.description) == ("renamed", "still a number")
    assert loaded == 1


# -- storing and loading ---------------------------------------------------------------------------


def test_store_returns_the_node_with_a_pk():
    number = Int(3)
    uuid = number.uuid
    assert number.pk is None and not number.is_stored
    stored = number.store()
    assert stored is number
    assert isinstance(number.pk, int) and number.is_stored
    assert number.uuid == uuid
    assert number.store().pk == number.pk
    assert find_processes() == []


SAMPLES = [
    Int(3),
    Int(-(2**63)),
    Int(2**70),
    Float(2.5),
    Float(-0.0),
    Str("héllo"),
    Str(""),
    Bool(True),
    Bool(False),
    Dict({"a": 1, "nested": {"b": [1, 2.5, "c", None, True]}, "raw": b"\x00\x01"}),
    Dict({}),
    List([1, "a", [2], {"b": None}]),
    List([]),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda d: f"{type(d).__name__}-{d}")
def test_load_node_round_trips_every_type(sample):
    node = sample.clone()
    node.label = "the label"
    node.description = "the description"
    node.store()
    for identifier in (node.pk, node.uuid):
        loaded = load_node(identifier)
        assert type(loaded) is type(sample)
        assert loaded == sample
        assert loaded.value == sample.value
        assert loaded.pk == node.pk and loaded.uuid == node.uuid
        assert loaded.is_stored
        assert (loaded.label, loaded.description) == ("the label", "the description")


def test_clone_is_an_unstored_copy():
    original = Dict({"a": [1]}).store()
    copy = original.clone()
    assert copy == original
    assert not copy.is_stored and copy.uuid != original.uuid
    copy["b"] = 2
    assert "b" not in original


def test_load_node_of_a_missing_node_raises_not_existent():
    with pytest.raises(NotExistent) as info:
        load_node(12345)
    assert isinstance(info.value, MiniengineError)
    with pytest.raises(NotExistent):
        load_node("00000000-0000-0000-0000-000000000000")
    with pytest.raises(TypeError):
        load_node(1.5)


class Point(Data, type_name="tests.data.point"):
    """A user Data type: registered by its type name, stored as a plain dict."""

    def __init__(self, x: float = 0.0, y: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.x = x
        self.y = y

    def _to_attributes(self):
        return {"x": self.x, "y": self.y}

    @classmethod
    def _from_attributes(cls, attributes):
        return cls(attributes["x"], attributes["y"])


def test_user_data_type_stores_and_loads():
    point = Point(1.5, -2.0, label="p").store()
    loaded = load_node(point.pk)
    assert type(loaded) is Point
    assert (loaded.x, loaded.y) == (1.5, -2.0)
    assert loaded.label == "p"
    assert load_node(point.uuid).x == 1.5


def test_user_data_type_as_process_input_and_output():
    @calcfunction
    def mirror(point: Point):
        return Point(-point.x, -point.y)

    result, node = mirror.run_get_node(Point(1.0, 2.0))
    assert type(result) is Point and (result.x, result.y) == (-1.0, -2.0)
    assert type(node.inputs.point) is Point
    with pytest.raises(ValueError, match="'point'"):
        mirror(Int(1))


def test_user_data_type_is_found_by_registration_not_by_class_path():
    class Unregistered(Data, type_name="tests.data.unregistered"):
        pass

    node = Unregistered().store()
    assert type(load_node(node.pk)) is Unregistered
    del DATA_TYPES["tests.data.unregistered"]
    try:
        with pytest.raises(UnknownDataTypeError, match=r"tests\.data\.unregistered"):
            load_node(node.pk)
    finally:
        DATA_TYPES["tests.data.unregistered"] = Unregistered
