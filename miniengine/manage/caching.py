"""Caching switches under AiiDA's module name (``aiida.manage.caching``), and the database's
caching settings (AiiDA's ``caching.*`` configuration options); see
:mod:`miniengine.runtime.caching` for what caching does and how it is enabled."""

from __future__ import annotations

from miniengine.runtime.caching import (
    CachingConfig,
    disable_caching,
    enable_caching,
    get_caching_config,
    get_use_cache,
    set_caching_config,
)

__all__ = [
    "CachingConfig",
    "disable_caching",
    "enable_caching",
    "get_caching_config",
    "get_use_cache",
    "set_caching_config",
]
