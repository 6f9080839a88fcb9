"""AiiDA's graph traversal rules: which links a deletion or an export follows, and which way.

Deleting a node must delete what would otherwise tell a false story (a calculation whose input is
gone, data without the calculation that created it); exporting a node must take along what makes
its provenance complete.  Each rule names a link type and a direction; some may be switched by
the user (``create_forward``, ``call_calc_forward``, ...), the others are fixed, as in AiiDA's
``GraphTraversalRules``.  Pure: storage follows the links that :meth:`RuleSet.links` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from miniengine.core.links import LinkType
from miniengine.exceptions import MiniengineError

__all__ = ["DELETE", "EXPORT", "RuleSet", "TraversalLinks", "TraversalRule", "TraversalRuleError"]


class TraversalLinks(NamedTuple):
    """The link types a traversal follows forwards (input to output) and backwards."""

    forward: frozenset[str]
    backward: frozenset[str]


class TraversalRuleError(MiniengineError, ValueError):
    """A traversal rule that the operation does not have, cannot change, or a value for one
    that is not a bool (a ``ValueError``, as AiiDA raises); raised before anything is read."""


@dataclass(frozen=True)
class TraversalRule:
    """Whether a traversal follows links of one type in one direction by default, and whether
    the user may change that."""

    link_type: LinkType
    forward: bool
    default: bool
    toggleable: bool

    @property
    def name(self) -> str:
        """The keyword that toggles it, as AiiDA's: ``create_forward``, ``call_calc_backward``."""
        return f"{self.link_type.value}_{'forward' if self.forward else 'backward'}"


@dataclass(frozen=True)
class RuleSet:
    """The rules of one operation (``DELETE`` or ``EXPORT``), one per link type and direction."""

    operation: str
    rules: tuple[TraversalRule, ...]

    @property
    def toggleable(self) -> dict[str, bool]:
        """The names and defaults of the rules the user may change."""
        return {rule.name: rule.default for rule in self.rules if rule.toggleable}

    def links(self, **toggles: bool) -> TraversalLinks:
        """The links to follow with the given toggles (a fixed rule may only be given its
        default; an unknown name is an error, as in AiiDA)."""
        by_name = {rule.name: rule for rule in self.rules}
        for name, value in toggles.items():
            rule = by_name.get(name)
            if rule is None:
                raise TraversalRuleError(
                    f"{name!r} is not a traversal rule of {self.operation}; "
                    f"the rules are: {', '.join(sorted(by_name))}"
                )
            if not isinstance(value, bool):
                raise TraversalRuleError(
                    f"the {self.operation} rule {name!r} is True or False, not {value!r}"
                )
            if not rule.toggleable and bool(value) != rule.default:
                raise TraversalRuleError(
                    f"the {self.operation} rule {name!r} cannot be changed (it is always "
                    f"{rule.default})"
                )
        follow = {rule.name: bool(toggles.get(rule.name, rule.default)) for rule in self.rules}
        return TraversalLinks(
            forward=frozenset(
                r.link_type.value for r in self.rules if r.forward and follow[r.name]
            ),
            backward=frozenset(
                r.link_type.value for r in self.rules if not r.forward and follow[r.name]
            ),
        )


def _rules(operation: str, table: dict[str, tuple[bool, bool]]) -> RuleSet:
    rules: list[TraversalRule] = []
    for name, (default, toggleable) in table.items():
        link, _, direction = name.rpartition("_")
        rules.append(TraversalRule(LinkType(link), direction == "forward", default, toggleable))
    return RuleSet(operation, tuple(rules))


#: Deletion: a deleted data node takes the processes that used it and the process that created
#: or returned it; a deleted process takes the processes that called it and (by default) what it
#: created and the processes it called.  What a workflow returned is not deleted with it (its
#: creator stays), and a deletion never reaches back to inputs.
DELETE = _rules(
    "delete",
    {
        "input_calc_forward": (True, False),
        "input_calc_backward": (False, False),
        "create_forward": (True, True),
        "create_backward": (True, False),
        "return_forward": (False, False),
        "return_backward": (True, False),
        "input_work_forward": (True, False),
        "input_work_backward": (False, False),
        "call_calc_forward": (True, True),
        "call_calc_backward": (True, False),
        "call_work_forward": (True, True),
        "call_work_backward": (True, False),
    },
)

#: Export: an exported node takes its inputs, what it created or returned and the processes it
#: called, so that its provenance is complete; by default also its creator and the processes that
#: called it (switchable), and on request the processes that used it as input.
EXPORT = _rules(
    "export",
    {
        "input_calc_forward": (False, True),
        "input_calc_backward": (True, False),
        "create_forward": (True, False),
        "create_backward": (True, True),
        "return_forward": (True, False),
        "return_backward": (False, True),
        "input_work_forward": (False, True),
        "input_work_backward": (True, False),
        "call_calc_forward": (True, False),
        "call_calc_backward": (True, True),
        "call_work_forward": (True, False),
        "call_work_backward": (True, True),
    },
)
