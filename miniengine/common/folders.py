"""``aiida.common.folders``: the folders a CalcJob plugin writes its inputs into."""

from __future__ import annotations

from miniengine.folders import Folder, SandboxFolder

__all__ = ["Folder", "SandboxFolder"]
