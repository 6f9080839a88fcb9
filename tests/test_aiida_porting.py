"""What AiiDA users reach for: ``load_node(pk=|uuid=|prefix)``, ``node.base.attributes``,
``node.process_class``, ``submit`` with positional inputs, and inputs that cannot be stored
(nested too deep, lone surrogates), refused before anything is stored and naming the port."""

from __future__ import annotations

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
from tests.workchains.daemon_chains import AddWorkChain


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
    node._row = (*node._row[:3], "tests.no_such_module.Gone", *node._row[4:])
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
