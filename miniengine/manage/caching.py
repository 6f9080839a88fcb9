"""Caching switches under AiiDA's module name (``aiida.manage.caching``); see
:mod:`miniengine.runtime.caching` for what caching does and how it is enabled."""

from __future__ import annotations

from miniengine.runtime.caching import disable_caching, enable_caching, get_use_cache

__all__ = ["disable_caching", "enable_caching", "get_use_cache"]
