# mypy: disable-error-code="no-untyped-def"
"""Processes measured by the workloads, in an importable module (the daemon workloads of later
issues load them by module path).  ``add``, ``multiply`` and ``add_and_multiply`` are the seed's
scenario 1, as in ``peers/aiida/procs.py``; no type hints, as in the seed (a process function's
hints become the valid types of its inputs)."""

from __future__ import annotations

from miniengine import Int, calcfunction, workfunction


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
