"""The WorkChain outline and its interpreter, as pure code.

``spec.outline(cls.setup, while_(cls.not_done)(cls.step_a), if_(cls.c)(cls.b).else_(cls.d),
return_)`` builds a tree of instructions.  The position in it is a *cursor*: a tuple of ints
(the index in a block, and for an ``if_`` the chosen branch), small enough to checkpoint and
compare.  :func:`first_step` and :func:`next_step` move the cursor to the next step to run,
evaluating predicates through a callback, so the interpreter does no IO and is tested with
plain function calls.  Steps and predicates are kept by *name* and looked up on the instance.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from miniengine.core.exit_code import ExitCode
from miniengine.exceptions import MiniengineError

__all__ = [
    "Block",
    "Cursor",
    "If",
    "MalformedOutline",
    "OutlineMismatch",
    "Return",
    "Step",
    "While",
    "build_outline",
    "first_step",
    "if_",
    "instruction_at",
    "next_step",
    "non_bool_message",
    "return_",
    "step_names",
    "while_",
]

Cursor = tuple[int, ...]
Evaluate = Callable[[str], Any]


class MalformedOutline(MiniengineError, TypeError):
    """The outline contains something that is not a step, a conditional, a loop or ``return_``."""


class OutlineMismatch(MiniengineError, ValueError):
    """A checkpointed cursor does not point at the same step in the class's current outline."""


@dataclass(frozen=True)
class Step:
    """Call the method ``name``."""

    name: str


@dataclass(frozen=True)
class Return:
    """Stop the outline, optionally with an exit code (``return_`` / ``return_(code)``)."""

    exit_code: ExitCode | int | None = None

    def __call__(self, exit_code: ExitCode | int | None = None) -> Return:
        return Return(exit_code)


return_ = Return()
"""Stop the outline here, so that the WorkChain finishes; ``return_(exit_code)`` finishes it with
that exit code."""

Block = tuple[Any, ...]  # of Step | If | While | Return


@dataclass(frozen=True)
class If:
    """``if_(c1)(...).elif_(c2)(...).else_(...)``: branches of (predicate name or None, block)."""

    branches: tuple[tuple[str | None, Block], ...]

    def elif_(self, predicate: Any) -> Callable[..., If]:
        if self.branches and self.branches[-1][0] is None:
            raise MalformedOutline("elif_ after else_ is not allowed")

        def body(*instructions: Any) -> If:
            return If((*self.branches, (_name_of(predicate, "predicate"), _block(instructions))))

        return body

    def else_(self, *instructions: Any) -> If:
        if self.branches and self.branches[-1][0] is None:
            raise MalformedOutline("an if_ can have only one else_")
        return If((*self.branches, (None, _block(instructions))))


@dataclass(frozen=True)
class While:
    """``while_(predicate)(...)``."""

    predicate: str
    body: Block


def if_(predicate: Any) -> Callable[..., If]:
    """Start a conditional: ``if_(cls.condition)(cls.step, ...)``."""
    name = _name_of(predicate, "predicate")

    def body(*instructions: Any) -> If:
        return If(((name, _block(instructions)),))

    return body


def while_(predicate: Any) -> Callable[..., While]:
    """Start a loop: ``while_(cls.condition)(cls.step, ...)``."""
    name = _name_of(predicate, "predicate")

    def body(*instructions: Any) -> While:
        block = _block(instructions)
        if not block:
            raise MalformedOutline(f"while_({name}) has an empty body")
        return While(name, block)

    return body


def _name_of(item: Any, what: str) -> str:
    if isinstance(item, str):
        return item
    name = getattr(item, "__name__", None)
    if callable(item) and isinstance(name, str) and name != "<lambda>":
        return name
    raise MalformedOutline(
        f"an outline {what} must be a method of the WorkChain (e.g. cls.{what}), got {item!r}"
    )


def _block(instructions: Sequence[Any]) -> Block:
    block: list[Any] = []
    for item in instructions:
        if isinstance(item, Step | If | While | Return):
            block.append(item)
        elif isinstance(item, tuple | list):
            block.extend(_block(item))
        elif isinstance(item, Callable):  # type: ignore[arg-type]
            block.append(Step(_name_of(item, "step")))
        else:
            raise MalformedOutline(
                f"the outline cannot contain {item!r}: use methods, if_, while_ and return_"
            )
    return tuple(block)


def build_outline(*instructions: Any) -> Block:
    """The block for ``spec.outline(*instructions)``; raises ``MalformedOutline`` (a TypeError)."""
    return _block(instructions)


def step_names(block: Block) -> set[str]:
    """Every step and predicate name in the outline (to check them against the class)."""
    names: set[str] = set()
    for item in block:
        if isinstance(item, Step):
            names.add(item.name)
        elif isinstance(item, If):
            for predicate, body in item.branches:
                if predicate is not None:
                    names.add(predicate)
                names |= step_names(body)
        elif isinstance(item, While):
            names.add(item.predicate)
            names |= step_names(item.body)
    return names


def non_bool_message(predicate: str, value: Any) -> str | None:
    """The warning for a predicate that returned something other than a bool (AiiDA's words),
    or None for a bool; the value is still used for its truth, as AiiDA does."""
    if isinstance(value, bool):
        return None
    shown = str(value)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return (
        f"The conditional predicate `{predicate}` returned `{shown}` instead of a bool; "
        "return True or False (wrap the value in bool())"
    )


def _truth(value: Any, predicate: str) -> bool:
    message = non_bool_message(predicate, value)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
    return bool(value)


def _find(block: Block, start: int, evaluate: Evaluate) -> Cursor | None:
    """The cursor of the first step or return at or after ``start`` in ``block``."""
    for index in range(start, len(block)):
        item = block[index]
        if isinstance(item, Step | Return):
            return (index,)
        if isinstance(item, If):
            for branch, (predicate, body) in enumerate(item.branches):
                if predicate is None or _truth(evaluate(predicate), predicate):
                    inner = _find(body, 0, evaluate)
                    if inner is not None:
                        return (index, branch, *inner)
                    break
        elif isinstance(item, While):
            while _truth(evaluate(item.predicate), item.predicate):
                inner = _find(item.body, 0, evaluate)
                if inner is not None:
                    return (index, *inner)
    return None


def first_step(block: Block, evaluate: Evaluate) -> Cursor | None:
    """The cursor of the first step to run, or ``None`` if the outline has nothing to run."""
    return _find(block, 0, evaluate)


def next_step(block: Block, cursor: Cursor, evaluate: Evaluate) -> Cursor | None:
    """The cursor of the step after the one at ``cursor``, or ``None`` when the outline is done."""
    index = cursor[0]
    item = block[index]
    if isinstance(item, If):
        branch = cursor[1]
        inner = next_step(item.branches[branch][1], cursor[2:], evaluate)
        if inner is not None:
            return (index, branch, *inner)
        return _find(block, index + 1, evaluate)
    if isinstance(item, While):
        inner = next_step(item.body, cursor[1:], evaluate)
        if inner is not None:
            return (index, *inner)
        return _find(block, index, evaluate)  # evaluate the loop's predicate again
    return _find(block, index + 1, evaluate)


def instruction_at(block: Block, cursor: Cursor) -> Step | Return:
    """The step (or return) at ``cursor``; ``OutlineMismatch`` if the cursor does not fit."""
    try:
        item: Any = block[cursor[0]]
        rest = cursor[1:]
        while isinstance(item, If | While):
            if isinstance(item, If):
                body = item.branches[rest[0]][1]
                rest = rest[1:]
            else:
                body = item.body
            item = body[rest[0]]
            rest = rest[1:]
    except (IndexError, TypeError):
        raise OutlineMismatch(f"the cursor {cursor} does not fit the outline") from None
    if rest or not isinstance(item, Step | Return):
        raise OutlineMismatch(f"the cursor {cursor} does not point at a step of the outline")
    return item
