"""The checkpoint codec: round trips, refusals that name the path, the header, and fuzzing."""

from __future__ import annotations

import ast
import enum
import math
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniengine.core import codec
from miniengine.core.codec import NodeRef, check_encodable, decode, encode, register_type
from miniengine.core.data import DATA_TYPES, Bool, Data, Dict, Float, Int, List, Str
from miniengine.core.exit_code import ExitCode
from miniengine.exceptions import CheckpointError, NotExistent, UnknownDataTypeError

# The autouse database fixture is function-scoped; these tests never touch the database.
fuzz_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

HEADER = encode(None)[:-1]  # encode(None) is the header followed by msgpack's nil byte


class Point(Data, type_name="tests.point"):
    """A user Data type with attributes of its own."""

    def __init__(self, x: float = 0.0, y: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x = x
        self.y = y

    def _to_attributes(self) -> Any:
        return {"x": self.x, "y": self.y}

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        obj = cls.__new__(cls)
        Data.__init__(obj)
        obj.x = attributes["x"]
        obj.y = attributes["y"]
        return obj


@dataclass(frozen=True)
class Interval:
    """A user type that is not Data, checkpointed through register_type()."""

    low: int
    high: int
    bounds: tuple[bool, bool] = (True, False)


INTERVAL_TAG = 90
register_type(
    Interval,
    INTERVAL_TAG,
    lambda interval: [interval.low, interval.high, interval.bounds],
    lambda plain: Interval(plain[0], plain[1], plain[2]),
)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Types registered by the test are forgotten after it."""
    monkeypatch.setattr(codec, "_user_types_by_class", dict(codec._user_types_by_class))
    monkeypatch.setattr(codec, "_user_types_by_tag", dict(codec._user_types_by_tag))


def stored(node: Data, pk: int) -> Data:
    node._set_stored(pk, f"00000000-0000-4000-8000-{pk:012d}")
    return node


# strategies -----------------------------------------------------------------------------------

integers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64) - 1]),
)
scalars = st.one_of(
    st.none(), st.booleans(), integers, st.floats(), st.text(), st.binary(max_size=20)
)
plain_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=8,
)
#: What a Dict or List may hold: ints within the 64 bits that msgpack stores in the database.
content_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(),
        st.text(),
        st.binary(max_size=20),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=8,
)
exit_codes = st.builds(ExitCode, st.integers(), st.none() | st.text(), st.booleans())
node_refs = st.builds(NodeRef, st.integers(min_value=1, max_value=2**62))
#: A node's label and description: any text a database column holds (no NUL, no lone surrogate).
field_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10
)
labels = {"label": field_text, "description": field_text}
unstored_data = st.one_of(
    st.builds(Int, integers, **labels),
    st.builds(Float, st.floats(), **labels),
    st.builds(Str, st.text(), **labels),
    st.builds(Bool, st.booleans(), **labels),
    st.builds(Dict, st.dictionaries(st.text(max_size=5), content_values, max_size=4), **labels),
    st.builds(List, st.lists(content_values, max_size=4), **labels),
    st.builds(Point, st.floats(), st.floats(), **labels),
)
intervals = st.builds(Interval, integers, integers, st.tuples(st.booleans(), st.booleans()))
leaves = st.one_of(scalars, exit_codes, node_refs, unstored_data, intervals)
dict_keys = st.one_of(st.text(max_size=8), integers)
states = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(dict_keys, children, max_size=5)
    ),
    max_leaves=25,
)


def assert_same(decoded: Any, original: Any) -> None:
    """Equality that also compares exact types, nan, the sign of zero and Data identity fields."""
    assert type(decoded) is type(original), (decoded, original)
    if isinstance(original, Data):
        assert decoded is not original
        assert not decoded.is_stored
        assert (decoded.uuid, decoded.label, decoded.description) == (
            original.uuid,
            original.label,
            original.description,
        )
        assert_same(decoded._to_attributes(), original._to_attributes())
    elif isinstance(original, float):
        if math.isnan(original):
            assert math.isnan(decoded)
        else:
            assert decoded == original
            assert math.copysign(1, decoded) == math.copysign(1, original)
    elif isinstance(original, list | tuple):
        assert len(decoded) == len(original)
        for decoded_item, original_item in zip(decoded, original, strict=True):
            assert_same(decoded_item, original_item)
    elif isinstance(original, dict):
        assert list(decoded) == list(original)
        for key, item in original.items():
            assert_same(decoded[key], item)
    elif isinstance(original, Interval):
        assert decoded == original
        assert_same(decoded.bounds, original.bounds)
    else:
        assert decoded == original


# round trips ----------------------------------------------------------------------------------


@fuzz_settings
@given(states)
def test_round_trip_preserves_values_and_types(value: Any) -> None:
    check_encodable(value)
    assert_same(decode(encode(value)), value)


@fuzz_settings
@given(states)
def test_encoding_is_stable_through_a_round_trip(value: Any) -> None:
    blob = encode(value)
    assert encode(decode(blob)) == blob


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        10**100,
        -(10**100),
        math.inf,
        -math.inf,
        -0.0,
        (),
        ((),),
        (1, [2, (3,)]),
        [(1, 2), [1, 2]],
        {1: "int key", "1": "str key", 2**70: "big key", -5: None},
        {(1, "a"): "tuple key"},
        b"\x00\xff",
        "",
        ExitCode(300, "ERROR_X", True),
        ExitCode(),
        [ExitCode(1), (ExitCode(2, None, False),)],
    ],
)
def test_round_trip_of_edge_values(value: Any) -> None:
    assert_same(decode(encode(value)), value)


def test_nan_round_trips() -> None:
    (decoded,) = decode(encode([math.nan]))
    assert math.isnan(decoded)


def test_tuples_and_lists_stay_distinct() -> None:
    decoded = decode(encode({"cursor": (1, 0, 0), "awaiting": [1, 0, 0], "nested": ([],)}))
    assert type(decoded["cursor"]) is tuple
    assert type(decoded["awaiting"]) is list
    assert type(decoded["nested"]) is tuple
    assert type(decoded["nested"][0]) is list


def test_exit_code_decodes_to_an_exit_code() -> None:
    code = ExitCode(300, "ERROR_{x}", False)
    decoded = decode(encode(code))
    assert type(decoded) is ExitCode
    assert decoded == code
    assert decoded.format(x="y").message == "ERROR_y"


# stored and unstored Data ---------------------------------------------------------------------


def test_stored_data_is_encoded_by_pk_only() -> None:
    node = stored(Int(5), 17)
    big = stored(Str("x" * 1000), 18)
    assert len(encode([node, big])) < 20


def test_stored_data_decodes_through_resolve_pk() -> None:
    state = codec.benchmark_state()
    nodes = {node.pk: node for node in [state["inputs"]["n"], *state["ctx"]["results"]] if node.pk}
    decoded = decode(encode(state), resolve_pk=nodes.__getitem__)
    assert decoded["inputs"]["n"] is nodes[17]
    assert decoded["ctx"]["results"][0] is nodes[45]
    assert decoded["ctx"]["results"][1] is nodes[46]
    assert decoded["cursor"] == (1, 0, 0)
    assert decoded["awaiting"] == [45, 46]


def test_stored_data_decodes_to_node_refs_without_resolve_pk() -> None:
    blob = encode(codec.benchmark_state())
    decoded = decode(blob)
    assert decoded["inputs"] == {"n": NodeRef(17)}
    assert decoded["ctx"]["results"] == [NodeRef(45), NodeRef(46)]
    with pytest.raises(AttributeError):
        decoded["inputs"]["n"].pk = 3  # frozen
    # A decoded state can be checkpointed again, to the same bytes.
    assert encode(decoded) == blob


def test_stored_pks_lists_each_stored_node_once_in_order_and_nothing_for_a_bad_blob() -> None:
    state = {
        "inputs": {"n": stored(Int(5), 17)},
        "ctx": {"pair": (NodeRef(45), stored(Str("s"), 3)), "again": [NodeRef(17)]},
        "unstored": Int(9),
        "big": 2**70,
    }
    blob = encode(state)
    assert codec.stored_pks(blob) == [17, 45, 3]
    assert codec.stored_pks(encode({"nothing": [1, (2, 3)], "exit": Int(4)})) == []
    assert codec.stored_pks(b"not a checkpoint") == []
    assert codec.stored_pks(blob[:-3]) == []  # cut short: decode says what is wrong


def test_resolve_pk_errors_of_miniengine_pass_through_others_are_wrapped() -> None:
    blob = encode([stored(Int(1), 7)])

    def missing(pk: int) -> Any:
        raise NotExistent(f"no node {pk}")

    with pytest.raises(NotExistent, match="no node 7"):
        decode(blob, resolve_pk=missing)
    with pytest.raises(CheckpointError, match="stored node 7"):
        decode(blob, resolve_pk={}.__getitem__)


@pytest.mark.parametrize(
    "node",
    [
        Int(2**80, label="big", description="an int beyond 64 bits"),
        Float(math.nan, label="nan"),
        Str("hello"),
        Bool(True),
        Dict({"a": [1, {"b": b"\x00"}], "c": None}),
        List([1, "two", [3.0]]),
    ],
    ids=lambda node: type(node).__name__,
)
def test_unstored_data_round_trips_by_value(node: Data) -> None:
    decoded = decode(encode({"ctx": {"x": node}}))["ctx"]["x"]
    assert_same(decoded, node)
    assert decoded.pk is None


def test_user_data_subclass_round_trips() -> None:
    point = Point(1.5, -2.0, label="corner", description="a point")
    decoded = decode(encode([point]))[0]
    assert type(decoded) is Point
    assert (decoded.x, decoded.y) == (1.5, -2.0)
    assert (decoded.uuid, decoded.label, decoded.description) == (
        point.uuid,
        "corner",
        "a point",
    )
    assert not decoded.is_stored


def test_unknown_data_type_name_is_named_on_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = encode({"p": Point(1, 2)})
    monkeypatch.delitem(DATA_TYPES, "tests.point")
    with pytest.raises(UnknownDataTypeError, match=r"tests\.point"):
        decode(blob)


def test_data_class_shadowed_in_the_registry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DATA_TYPES, "tests.point", Int)
    with pytest.raises(CheckpointError, match=r"ctx\['p'\].*tests\.point"):
        encode({"ctx": {"p": Point(1, 2)}})


# register_type --------------------------------------------------------------------------------


def test_registered_type_round_trips() -> None:
    value = {"window": Interval(2**70, -3, (False, True)), "many": [Interval(1, 2)] * 2}
    decoded = decode(encode(value))
    assert decoded == value
    assert type(decoded["window"].bounds) is tuple


@pytest.mark.usefixtures("scratch_registry")
def test_registered_type_may_be_nested_in_itself_and_reenter_encode() -> None:
    @dataclass(frozen=True)
    class Wrapper:
        inner: Any

    register_type(Wrapper, 91, lambda w: [w.inner, encode(w.inner)], lambda p: Wrapper(p[0]))
    value = Wrapper(Wrapper((1, Interval(0, 1))))
    assert decode(encode(value)) == value


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    ("cls", "tag", "message"),
    [
        (Colour, 5, "reserved"),
        (Colour, 128, "from 32 to 127"),
        (Colour, -1, "from 32 to 127"),
        (Colour, True, "from 32 to 127"),
        (Colour, INTERVAL_TAG, r"already used by .*Interval"),
        (Interval, 120, "already registered with tag 90"),
        (Point, 40, "type_name 'tests.point'"),
        (tuple, 40, "already support"),
        (int, 40, "already support"),
        (ExitCode, 40, "already support"),
    ],
)
def test_register_type_rejects_bad_tags_and_classes(cls: type, tag: int, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        register_type(cls, tag, lambda value: None, lambda plain: None)


@pytest.mark.usefixtures("scratch_registry")
def test_register_type_again_with_the_same_tag_replaces_it() -> None:
    calls: list[Any] = []

    def from_plain(plain: Any) -> Interval:
        calls.append(plain)
        return Interval(plain[0], plain[1], plain[2])

    register_type(Interval, INTERVAL_TAG, lambda i: [i.low, i.high, i.bounds], from_plain)
    assert decode(encode(Interval(1, 2))) == Interval(1, 2)
    assert calls == [[1, 2, (True, False)]]


def test_a_tag_nobody_registered_is_refused_on_decode() -> None:
    blob = HEADER + b"\x92\xc7\x00\x63\x01"  # [ext(99, b""), 1]
    with pytest.raises(CheckpointError, match="extension code 99"):
        decode(blob)


def test_from_plain_failure_is_a_checkpoint_error() -> None:
    blob = HEADER + b"\x92\xc7\x00" + bytes([INTERVAL_TAG]) + b"\x01"  # [ext(90, b""), 1]
    with pytest.raises(CheckpointError, match="Interval"):
        decode(blob)


# refusals -------------------------------------------------------------------------------------


class MyStr(str):
    pass


@pytest.mark.parametrize(
    ("value", "path", "where", "type_name"),
    [
        ({"results": [1, 2, object()]}, "ctx", "ctx['results'][2]", "object"),
        ({"ctx": {"results": [1, 2, object()]}}, "", "ctx['results'][2]", "object"),
        ([threading.Lock()], "ctx.workchain", "ctx.workchain[0]", "lock"),
        ({"a": {"b": {1, 2}}}, "ctx", "ctx['a']['b']", "set"),
        ({"t": (1, [2, 3.5j])}, "ctx", "ctx['t'][1][1]", "complex"),
        ({"s": MyStr("x")}, "ctx", "ctx['s']", "MyStr"),
        ({"e": Colour.RED}, "ctx", "ctx['e']", "Colour"),
        ({"d": defaultdict(list)}, "ctx", "ctx['d']", "defaultdict"),
        ({"d": Dict({"k": 1})}, "ctx", None, None),
        ({"f": print}, "", "f", "builtin_function_or_method"),
        ({"x y": [object()]}, "", "['x y'][0]", "object"),
        (object(), "", "the value", "object"),
    ],
)
def test_unsupported_values_are_refused_naming_path_and_type(
    value: Any, path: str, where: str | None, type_name: str | None
) -> None:
    if where is None:
        check_encodable(value, path)
        return
    expected = f"cannot checkpoint {where}: values of type '{type_name}' are not supported"
    with pytest.raises(CheckpointError) as checked:
        check_encodable(value, path)
    assert expected in str(checked.value)
    if not path:
        with pytest.raises(CheckpointError) as encoded:
            encode(value)
        assert str(encoded.value) == str(checked.value)


def test_unsupported_value_inside_unstored_data_names_its_attributes() -> None:
    class Box(Data, type_name="tests.box"):
        def _to_attributes(self) -> Any:
            return {"content": [object()]}

    with pytest.raises(CheckpointError, match=r"box\.attributes\['content'\]\[0\]: .*'object'"):
        encode({"box": Box()})


def test_unsupported_dict_key_is_named() -> None:
    with pytest.raises(CheckpointError, match=r"ctx \(the dict key frozenset\(\)\): .*frozenset"):
        check_encodable({frozenset(): 1}, "ctx")


def test_bad_exit_code_and_label_are_refused() -> None:
    with pytest.raises(CheckpointError, match=r"ctx\['code'\]: an ExitCode needs"):
        encode({"ctx": {"code": ExitCode("300")}})  # type: ignore[arg-type]
    node = Int(1)
    node.label = 5  # type: ignore[assignment]
    with pytest.raises(CheckpointError, match=r"node\.label"):
        encode({"node": node})


def test_reference_cycles_are_refused() -> None:
    results: list[Any] = []
    results.append({"again": (results,)})
    with pytest.raises(CheckpointError, match=r"ctx\['results'\]\[0\]\['again'\]\[0\]: .*cycle"):
        encode({"ctx": {"results": results}})


def test_too_deep_nesting_is_refused() -> None:
    value: Any = 0
    for _ in range(codec.MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(CheckpointError, match="nested more than"):
        check_encodable(value)
    deeper: Any = 0
    for _ in range(5000):
        deeper = (deeper,)
    with pytest.raises(CheckpointError, match="nested more than"):
        encode(deeper)


@pytest.mark.usefixtures("scratch_registry")
def test_failing_to_plain_is_reported_with_the_path() -> None:
    @dataclass
    class Fragile:
        pass

    def explode(value: Fragile) -> Any:
        raise RuntimeError("boom")

    register_type(Fragile, 92, explode, lambda plain: Fragile())
    with pytest.raises(CheckpointError, match=r"ctx\['f'\]: converting the Fragile .*boom"):
        encode({"ctx": {"f": Fragile()}})


# the header -----------------------------------------------------------------------------------


def test_blob_starts_with_the_versioned_header() -> None:
    assert encode(1).startswith(HEADER)
    assert HEADER[-1] == codec.FORMAT_VERSION


def test_wrong_magic_is_refused_saying_what_was_found() -> None:
    with pytest.raises(CheckpointError, match=r"not a miniengine checkpoint: it starts with b'\{"):
        decode(b'{"yaml": true}')


def test_newer_version_is_refused() -> None:
    blob = bytearray(encode({"a": 1}))
    blob[len(HEADER) - 1] = codec.FORMAT_VERSION + 1
    with pytest.raises(CheckpointError, match=f"format version {codec.FORMAT_VERSION + 1}.*newer"):
        decode(bytes(blob))


@pytest.mark.parametrize("blob", [b"", HEADER[:2], "MEC\x01\xc0", None, 42])
def test_empty_short_and_non_bytes_input_is_refused(blob: Any) -> None:
    with pytest.raises(CheckpointError):
        decode(blob)


def test_bytearray_and_memoryview_are_accepted() -> None:
    blob = encode((1, "a"))
    assert decode(bytearray(blob)) == (1, "a")
    assert decode(memoryview(blob)) == (1, "a")


# fuzzing --------------------------------------------------------------------------------------


def resolve_any(pk: int) -> Any:
    return ("node", pk)


def decodes_or_refuses(blob: bytes, resolve_pk: Callable[[int], Any] | None = None) -> None:
    try:
        decode(blob, resolve_pk=resolve_pk)
    except CheckpointError:
        pass


@fuzz_settings
@given(st.binary())
def test_random_bytes_only_raise_checkpoint_error(blob: bytes) -> None:
    decodes_or_refuses(blob)


@fuzz_settings
@given(st.binary(), st.sampled_from([None, resolve_any, {}.__getitem__]))
def test_random_bodies_after_a_valid_header_only_raise_checkpoint_error(
    body: bytes, resolve_pk: Callable[[int], Any] | None
) -> None:
    decodes_or_refuses(HEADER + body, resolve_pk)


@fuzz_settings
@given(st.lists(st.sampled_from(list(range(256))), max_size=40))
def test_random_msgpack_ish_bodies_only_raise_checkpoint_error(body: list[int]) -> None:
    # Bytes sampled so that ext markers (0xc7 0x00 <code>), fixarrays and fixext show up often.
    decodes_or_refuses(HEADER + bytes(body))
    decodes_or_refuses(HEADER + b"\x92\xc7\x00" + bytes(body))


@fuzz_settings
@given(states, st.data())
def test_truncated_blobs_are_refused(value: Any, data: st.DataObject) -> None:
    blob = encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises(CheckpointError):
        decode(blob[:cut])


@fuzz_settings
@given(states, st.data())
def test_bit_flips_only_raise_checkpoint_error(value: Any, data: st.DataObject) -> None:
    blob = bytearray(encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
        blob[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    decodes_or_refuses(bytes(blob))
    decodes_or_refuses(bytes(blob), resolve_any)


def test_deeply_nested_markers_are_refused_not_crashing() -> None:
    body = b"\x92\xc7\x00\x01" * 100_000 + b"\xc0"  # tuples nested 100,000 deep
    with pytest.raises(CheckpointError):
        decode(HEADER + body)


# size, threads, purity ------------------------------------------------------------------------


def test_benchmark_state_fits_the_size_budget_and_round_trips() -> None:
    state = codec.benchmark_state()
    check_encodable(state)
    blob = encode(state)
    assert len(blob) <= 200
    decoded = decode(blob)
    assert decoded["cursor"] == (1, 0, 0)
    assert decoded["inputs"]["n"] == NodeRef(17)


def test_encode_is_safe_across_threads() -> None:
    values = [{"i": i, "t": (i, [i] * (i % 7)), "d": Int(i)} for i in range(200)]
    expected = [decode(encode(value))["t"] for value in values]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda value: decode(encode(value))["t"], values * 5))
    assert results == expected * 5


def test_codec_imports_nothing_that_does_io() -> None:
    source = Path(codec.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "anyio", "sqlite3", "aiosqlite", "pickle", "yaml", "importlib", "os"}
    assert not imported & forbidden


def test_one_unstored_node_twice_in_a_state_decodes_to_one_object():
    shared = Int(3)
    state = decode(encode({"a": shared, "b": [shared], "c": Int(3)}))
    assert state["a"] is state["b"][0]
    assert state["a"].uuid == shared.uuid and not state["a"].is_stored
    assert state["c"] is not state["a"]
