"""Process-wide JAX settings the command lines and benchmarks share."""

from __future__ import annotations

import os

ENV_XLA_CACHE = "WDJAX_XLA_CACHE"


def enable_compilation_cache(min_compile_secs: float = 0.5) -> str | None:
    """Keep compiled XLA programs on disk (``$WDJAX_XLA_CACHE``, default ``~/.cache/wdjax/xla``,
    ``off`` disables it), so a rerun or the next sweep skips compiling; return the directory.
    Benchmarks pass ``min_compile_secs=0``: model initialisation is many sub-second compiles."""
    import jax

    where = os.environ.get(ENV_XLA_CACHE, os.path.expanduser("~/.cache/wdjax/xla"))
    if where == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    return where
