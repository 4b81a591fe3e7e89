"""Command-line plumbing shared by `experiments.train` and `experiments.sweep`.

Every user error ends as one line on stderr and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn


class UsageError(Exception):
    """A bad command line or config; `main` prints it as one line and exits 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def number(name: str, *, low: float = 0.0, low_open: bool = False, high: float = math.inf,
           high_open: bool = True) -> Callable[[str], float]:
    """argparse type: a finite float in a range, with a message naming the flag."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} must be a number, got {text!r}") from None
        lo_ok = value > low if low_open else value >= low
        hi_ok = value < high if high_open else value <= high
        if not (math.isfinite(value) and lo_ok and hi_ok):
            lo = "(" if low_open else "["
            hi = ")" if high_open else "]"
            raise UsageError(f"{name} must be a finite number in {lo}{low:g}, {high:g}{hi}, "
                             f"got {text!r}")
        return value

    return parse


def integer(name: str, *, low: int = 1) -> Callable[[str], int]:
    """argparse type: an integer >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{name} must be an integer, got {text!r}") from None
        if value < low:
            raise UsageError(f"{name} must be an integer >= {low}, got {value}")
        return value

    return parse


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk, so a rerun or the next sweep skips compiling.

    ``$WDJAX_XLA_CACHE`` chooses the directory (default ``~/.cache/wdjax/xla``; ``off``
    disables it).
    """
    import os

    import jax

    where = os.environ.get("WDJAX_XLA_CACHE", os.path.expanduser("~/.cache/wdjax/xla"))
    if where != "off":
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_main(main: Callable[[Sequence[str] | None], int],
             argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main`, turning expected user errors into one line on stderr and exit 2."""
    from wdjax.data import DataError
    from wdjax.records import RunError

    enable_compilation_cache()
    try:
        code = main(argv)
    except (UsageError, DataError, RunError, ValueError) as err:
        prog = "wdjax"
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("wdjax: interrupted; the last checkpoint is kept, rerun the command to resume",
              file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
