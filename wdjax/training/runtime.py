"""Process-wide JAX settings the command lines and benchmarks share."""

from __future__ import annotations

import os

ENV_XLA_CACHE = "WDJAX_XLA_CACHE"


def enable_compilation_cache(min_compile_secs: float = 0.5) -> str | None:
    """Keep compiled XLA programs in ``$WDJAX_XLA_CACHE`` (default ``~/.cache/wdjax/xla``; ``off``:
    not at all) for reruns to skip compiling; return the directory (None when off)."""
    import jax

    where = os.environ.get(ENV_XLA_CACHE, os.path.expanduser("~/.cache/wdjax/xla"))
    if where == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    return where
