"""AiiDA-shaped names from ``aiida.common``: ``from miniengine.common import AttributeDict``.

A plugin written for AiiDA imports helpers from ``aiida.common`` (``AttributeDict``, ``LinkType``,
``exceptions``, ``datastructures.CalcInfo``, ``folders.Folder``); these modules give the same
names, so its imports change from ``aiida`` to ``miniengine`` and nothing else.
"""

from __future__ import annotations

from miniengine.core.attribute_dict import AttributeDict
from miniengine.core.links import LinkType

__all__ = ["AttributeDict", "LinkType"]
