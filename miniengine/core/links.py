"""Link types of the provenance graph, with AiiDA's names."""

from __future__ import annotations

import enum

__all__ = ["LinkType"]


class LinkType(enum.Enum):
    """How two nodes are related; the value is what the database stores."""

    CREATE = "create"  # calculation -> data it created
    RETURN = "return"  # workflow -> data it returned
    INPUT_CALC = "input_calc"  # data -> calculation
    INPUT_WORK = "input_work"  # data -> workflow
    CALL_CALC = "call_calc"  # workflow -> calculation it called
    CALL_WORK = "call_work"  # workflow -> workflow it called


CALL_LINK_TYPES = (LinkType.CALL_CALC.value, LinkType.CALL_WORK.value)
INPUT_LINK_TYPES = (LinkType.INPUT_CALC.value, LinkType.INPUT_WORK.value)
OUTPUT_LINK_TYPES = (LinkType.CREATE.value, LinkType.RETURN.value)
