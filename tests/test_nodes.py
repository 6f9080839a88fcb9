"""Process nodes as users see them: attributes, inputs/outputs, the call tree, logs, links, queries
and the public names of the package (issue 3)."""

import datetime

import pytest

import miniengine
from miniengine import (
    CalcFunctionNode,
    Data,
    Int,
    NotExistent,
    ProcessNode,
    ProcessState,
    Str,
    WorkChainNode,
    WorkFunctionNode,
    calcfunction,
    find_processes,
    load_node,
    workfunction,
)
from miniengine.core.links import LinkType

pytestmark = pytest.mark.backends


@calcfunction
def add(x, y):
    return x + y


@calcfunction
def divide(x, y):
    return Int(x.value // y.value)


@calcfunction
def split(x):
    return {"half": Int(x.value // 2), "parts": {"low": Int(0), "high": Int(x.value)}}


@workfunction
def inner(x):
    return add(x, x)


@workfunction
def outer(x):
    return inner(x)


# -- attributes ------------------------------------------------------------------------------------


def test_attributes_of_a_finished_node():
    before = datetime.datetime.now(datetime.UTC)
    result, node = add.run_get_node(1, 2, metadata={"description": "adds two numbers"})
    assert isinstance(node.pk, int) and node.pk > 0
    assert isinstance(node.uuid, str) and len(node.uuid) == 36
    assert node.process_state is ProcessState.FINISHED
    assert node.process_label == "add"
    assert node.process_type == f"{add.__module__}.add"
    assert node.exit_status == 0
    assert node.exit_message is None
    assert node.process_status is None
    assert node.is_finished_ok and node.is_finished and node.is_terminated and node.is_sealed
    assert not (node.is_failed or node.is_excepted or node.is_killed)
    assert node.is_stored
    assert node.label == "add"
    assert node.description == "adds two numbers"
    assert node.exception is None
    assert node.caller is None
    assert node.called == []
    assert node.logs == []
    assert node.ctime.tzinfo is not None
    assert before - datetime.timedelta(seconds=1) <= node.ctime <= node.mtime
    assert node.mtime <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    assert node.outputs.result.pk == result.pk


def test_loaded_node_matches_the_returned_node():
    _, node = add.run_get_node(1, 2)
    for identifier in (node.pk, node.uuid):
        loaded = load_node(identifier)
        assert type(loaded) is CalcFunctionNode
        assert loaded == node and hash(loaded) == hash(node)
        assert loaded.ctime == node.ctime
        assert loaded.mtime == node.mtime
        assert (loaded.label, loaded.process_type) == (node.label, node.process_type)
        assert loaded.outputs.result == 3


def test_excepted_node_attributes():
    with pytest.raises(ZeroDivisionError):
        divide(1, 0)
    [node] = find_processes()
    assert node.process_state is ProcessState.EXCEPTED
    assert node.is_excepted and node.is_terminated and node.is_sealed
    assert not (node.is_finished or node.is_finished_ok or node.is_failed or node.is_killed)
    assert node.exit_status is None and node.exit_message is None
    assert "ZeroDivisionError" in node.exception
    assert len(node.outputs) == 0
    assert node.inputs.y == 0


def test_node_state_is_read_live():
    seen = []

    @workfunction
    def watch(x):
        [running] = find_processes(state=ProcessState.RUNNING)
        seen.append((running, running.process_state, running.is_terminated, running.exit_status))
        return x

    _, node = watch.run_get_node(Int(1).store())
    [(held, state, terminated, exit_status)] = seen
    assert held == node
    assert (state, terminated, exit_status) == (ProcessState.RUNNING, False, None)
    # the same object, read again after the run, shows the final state
    assert held.process_state is ProcessState.FINISHED
    assert held.is_terminated and held.exit_status == 0
    assert held.mtime >= held.ctime


# -- inputs and outputs ----------------------------------------------------------------------------


def test_inputs_and_outputs_attribute_item_and_in():
    _, node = split.run_get_node(10)
    assert node.inputs.x == 10 and node.inputs["x"] == 10
    assert "x" in node.inputs and "y" not in node.inputs
    assert sorted(node.outputs) == ["half", "parts"]
    assert node.outputs.half == 5 and node.outputs["half"] == 5
    assert node.outputs.parts.high == 10 and node.outputs["parts"]["low"] == 0
    assert "parts" in node.outputs and "high" in node.outputs.parts
    assert "result" not in node.outputs
    assert len(node.outputs) == 2 and len(node.outputs.parts) == 2
    with pytest.raises(AttributeError):
        node.outputs.missing  # noqa: B018
    with pytest.raises(KeyError):
        node.inputs["missing"]


# -- the call tree ---------------------------------------------------------------------------------


def test_called_and_caller_across_three_levels():
    result, top = outer.run_get_node(Int(2).store())
    assert result == 4
    [middle] = top.called
    [leaf] = middle.called
    assert isinstance(top, WorkFunctionNode) and isinstance(middle, WorkFunctionNode)
    assert isinstance(leaf, CalcFunctionNode)
    assert (middle.process_label, leaf.process_label) == ("inner", "add")
    assert leaf.caller == middle and middle.caller == top and top.caller is None
    assert leaf.called == []
    assert top.outputs.result.pk == middle.outputs.result.pk == leaf.outputs.result.pk


def test_called_lists_children_whatever_their_state():
    @workfunction
    def tolerant(x):
        try:
            divide(x, 0)
        except ZeroDivisionError:
            pass
        return add(x, x)

    _, node = tolerant.run_get_node(1)
    assert node.is_finished_ok
    assert [(n.process_label, n.process_state) for n in node.called] == [
        ("divide", ProcessState.EXCEPTED),
        ("add", ProcessState.FINISHED),
    ]


def test_logs_have_message_and_levelname():
    with pytest.raises(ZeroDivisionError):
        divide(1, 0)
    [node] = find_processes()
    [entry] = node.logs
    assert entry.levelname == "ERROR"
    assert "ZeroDivisionError" in entry.message
    assert isinstance(entry.time, datetime.datetime)
    assert entry.node_pk == node.pk


# -- links -----------------------------------------------------------------------------------------


def test_links_are_triples_with_node_type_and_label():
    result, node = add.run_get_node(1, 2)
    incoming = node.base.links.get_incoming()
    assert [(t.link_type, t.link_label) for t in incoming] == [
        (LinkType.INPUT_CALC, "x"),
        (LinkType.INPUT_CALC, "y"),
    ]
    assert [t.node.value for t in incoming.all()] == [1, 2]
    assert incoming.all_link_labels() == ["x", "y"]
    assert [n.value for n in incoming.all_nodes()] == [1, 2]
    assert incoming.get_node_by_label("y") == 2
    assert incoming.first().link_label == "x"
    node_, link_type, link_label = node.base.links.get_outgoing().one()
    assert (node_.pk, link_type, link_label) == (result.pk, LinkType.CREATE, "result")


def test_link_filters():
    _, top = outer.run_get_node(Int(2).store())
    links = top.base.links
    [call] = links.get_outgoing(link_type=LinkType.CALL_WORK)
    assert call.node.process_label == "inner" and call.link_label == "CALL"
    assert len(links.get_outgoing(link_type="call_work")) == 1
    assert links.get_outgoing(link_type=LinkType.CALL_CALC).all() == []
    both = links.get_outgoing(link_type=(LinkType.CALL_WORK, LinkType.RETURN))
    assert sorted(t.link_type.value for t in both) == ["call_work", "return"]
    assert [t.link_label for t in links.get_outgoing(link_label_filter="res%")] == ["result"]
    assert [t.link_label for t in links.get_outgoing(node_class=ProcessNode)] == ["CALL"]
    assert [t.link_label for t in links.get_outgoing(node_class=Data)] == ["result"]
    assert [t.link_label for t in links.get_incoming(link_type=LinkType.INPUT_WORK)] == ["x"]


def test_nested_link_labels():
    _, node = split.run_get_node(10)
    nested = node.base.links.get_outgoing(link_type=LinkType.CREATE).nested()
    assert sorted(nested) == ["half", "parts"]
    assert nested["parts"]["high"] == 10


def test_data_links_and_creator():
    x = Int(1).store()
    result, node = add.run_get_node(x, 2)
    assert result.creator == node
    [(created_by, link_type, label)] = result.base.links.get_incoming()
    assert (created_by, link_type, label) == (node, LinkType.CREATE, "result")
    [used] = x.base.links.get_outgoing()
    assert (used.node, used.link_type, used.link_label) == (node, LinkType.INPUT_CALC, "x")
    assert x.creator is None
    assert Int(5).creator is None


def test_unstored_node_has_no_links():
    _, node = add.run_get_node(1, 2, metadata={"store_provenance": False})
    assert node.called == [] and node.caller is None and node.logs == []
    with pytest.raises(NotExistent):
        node.base.links  # noqa: B018


# -- classes and queries ---------------------------------------------------------------------------


def test_node_classes_for_isinstance():
    _, calc = add.run_get_node(1, 2)
    _, work = inner.run_get_node(Int(1).store())
    assert isinstance(calc, CalcFunctionNode) and isinstance(calc, ProcessNode)
    assert isinstance(work, WorkFunctionNode) and isinstance(work, ProcessNode)
    assert not isinstance(calc, WorkFunctionNode | WorkChainNode)
    assert isinstance(load_node(calc.pk), CalcFunctionNode)
    assert isinstance(load_node(work.uuid), WorkFunctionNode)
    assert not isinstance(load_node(calc.inputs.x.pk), ProcessNode)


def test_find_processes_is_newest_first_and_filters():
    add(1, 2)
    with pytest.raises(ZeroDivisionError):
        divide(1, 0)
    outer(Int(1).store())

    everything = find_processes()
    assert [n.process_label for n in everything] == ["add", "inner", "outer", "divide", "add"]
    assert [n.pk for n in everything] == sorted((n.pk for n in everything), reverse=True)
    assert [n.process_label for n in find_processes(limit=2)] == ["add", "inner"]
    assert find_processes(limit=0) == []
    assert [n.process_label for n in find_processes(state=ProcessState.EXCEPTED)] == ["divide"]
    assert [n.process_label for n in find_processes(state="excepted")] == ["divide"]
    assert len(find_processes(state=["finished", ProcessState.EXCEPTED])) == 5
    assert find_processes(state=ProcessState.RUNNING) == []
    assert [n.pk for n in find_processes(process_label="add")] == [
        everything[0].pk,
        everything[4].pk,
    ]
    assert len(find_processes(state="finished", process_label="add", limit=1)) == 1
    assert find_processes(process_label="nothing") == []
    with pytest.raises(ValueError):
        find_processes(state="asleep")
    with pytest.raises(ValueError):
        find_processes(limit=-1)


def test_find_processes_excludes_data():
    Int(1).store()
    Str("a").store()
    assert find_processes() == []


# -- the public names ------------------------------------------------------------------------------

EXPECTED_ALL = [
    "BaseRestartWorkChain",
    "Bool",
    "CalcFunctionNode",
    "CalcJob",
    "CalcJobNode",
    "CheckpointError",
    "Computer",
    "Data",
    "DatabaseLockedError",
    "DatabaseUnavailableError",
    "Dict",
    "EventLoopError",
    "ExitCode",
    "Float",
    "FolderData",
    "Group",
    "IncompatibleDatabaseError",
    "InputValidationError",
    "InstalledCode",
    "Int",
    "InvalidOperation",
    "InvalidTransition",
    "LeaseLostError",
    "List",
    "MiniengineError",
    "ModificationNotAllowed",
    "MultipleObjectsError",
    "Node",
    "NotExistent",
    "OutputValidationError",
    "Parser",
    "PortableCode",
    "ProcessBuilder",
    "ProcessHandlerReport",
    "ProcessKilledError",
    "ProcessNode",
    "ProcessState",
    "QueryBuilder",
    "RemoteData",
    "SinglefileData",
    "StoreError",
    "Str",
    "SubmitError",
    "ToContext",
    "UnknownDataTypeError",
    "ValidationError",
    "WorkChain",
    "WorkChainNode",
    "WorkFunctionNode",
    "afind_processes",
    "aload_node",
    "append_",
    "arun",
    "arun_get_node",
    "assign_",
    "asubmit",
    "await_node",
    "calcfunction",
    "disable_caching",
    "enable_caching",
    "find_processes",
    "if_",
    "load_code",
    "load_computer",
    "load_group",
    "load_node",
    "process_handler",
    "resume",
    "return_",
    "run",
    "run_get_node",
    "run_get_pk",
    "submit",
    "while_",
    "workfunction",
]


def test_public_names_are_exactly_the_expected_list():
    assert miniengine.__all__ == EXPECTED_ALL


def test_every_public_name_resolves():
    for name in miniengine.__all__:
        assert getattr(miniengine, name) is not None, name
        assert name in dir(miniengine)
    for name in miniengine.__all__:
        value = getattr(miniengine, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, miniengine.MiniengineError), name
    with pytest.raises(AttributeError):
        miniengine.not_a_public_name  # noqa: B018
