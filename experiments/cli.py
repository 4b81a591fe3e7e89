"""Command-line plumbing shared by `experiments.train` and `experiments.sweep`.

Every user error ends as one line on stderr and exit code 2, before anything is written.
SIGINT and SIGTERM stop a command with one line (exit 130 / 143); the last finished
checkpoint is kept, and the same command resumes. Warnings are one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

# The notebook's VGG: five 2x2 max-pools take 32x32 inputs down to one logit per class.
IMAGE_SIZE = (32, 32)


class UsageError(Exception):
    """A bad command line or config; `main` prints it as one line and exits 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (no usage dump).

    Flags must be spelled out: with abbreviations, ``--epochs 3`` would quietly mean
    ``--epochs-per-stage 3``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

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


def add_hparam_flags(p: argparse.ArgumentParser, defaults: Any = None) -> None:
    """One flag per row of `wdjax.schemes.hparams.TABLE` (its short form, range check and help)."""
    from wdjax.schemes import hparams

    # A row given in another unit (``sets``) and the row it sets are mutually exclusive.
    groups = {h.sets: p.add_mutually_exclusive_group() for h in hparams.TABLE if h.sets}
    for h in hparams.TABLE:
        names = [h.flag] + ([h.short] if h.short else [])
        default = getattr(defaults, h.name) if defaults is not None else h.default
        target = groups.get(h.sets or h.name, p)
        target.add_argument(*names, dest=h.name, default=default, help=h.help,
                            type=number(h.flag, low=h.low, low_open=h.low_open, high=h.high,
                                        high_open=h.high_open))


def add_decay_override_flags(p: argparse.ArgumentParser) -> None:
    """--weight-decay or --tau-epochs (exclusive; default None: each run's own value)."""
    from wdjax.schemes import hparams

    group = p.add_mutually_exclusive_group()
    for h in hparams.TABLE:
        if h.sets or any(other.sets == h.name for other in hparams.TABLE):
            group.add_argument(h.flag, dest=h.name, default=None,
                               help=f"every run: {h.help} (default: the run's own)",
                               type=number(h.flag, low=h.low, low_open=h.low_open,
                                           high=h.high, high_open=h.high_open))


def decay_override(args: argparse.Namespace) -> dict[str, Any]:
    """The run fields the override flags set: the given row, its counterpart cleared."""
    from wdjax.schemes import hparams

    for h in hparams.TABLE:
        if h.sets and getattr(args, h.name, None) is not None:
            return {h.name: getattr(args, h.name)}
        if h.sets and getattr(args, h.sets, None) is not None:
            return {h.sets: getattr(args, h.sets), h.name: None}
    return {}


def check_images(dataset: Any) -> None:
    """DataError unless the images have the size the models are built for."""
    from wdjax.data import DataError

    h, w = dataset.train_images.shape[1:3]
    if (h, w) != IMAGE_SIZE:
        raise DataError(f"images in {dataset.source} are {w}x{h}; each model needs "
                        f"{IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} RGB images (the CIFAR size)")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"wdjax: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def add_precision_flag(p: argparse.ArgumentParser, default: str | None = "fp32") -> None:
    """--precision: the compute dtype (`wdjax.training.config.PRECISIONS`)."""
    from wdjax.training.config import PRECISIONS

    p.add_argument("--precision", choices=tuple(PRECISIONS), default=default,
                   help="fp32 (the notebook's) or bf16: convolutions, matmuls and activations "
                        "in bfloat16, parameters, optimiser state, BatchNorm statistics, loss "
                        "and decay in float32; faster on GPUs and TPUs, not on CPUs "
                        "(docs/performance.md)")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--devices and the multi-host flags (see `wdjax.training.parallel`)."""
    a = p.add_argument
    a("--devices", type=integer("--devices"), default=None,
      help="use the first N devices (default: all); the mesh is printed at start")
    a("--distributed", action="store_true",
      help="call jax.distributed.initialize() (auto-detected cluster, or the flags below)")
    a("--coordinator", default=None, help="multi-host: coordinator address HOST:PORT")
    a("--num-processes", type=integer("--num-processes"), default=None)
    a("--process-id", type=integer("--process-id", low=0), default=None)


def start_devices(args: argparse.Namespace) -> None:
    """Join the multi-host job when asked; must run before any other JAX work."""
    if args.distributed or args.coordinator:
        from wdjax.training import parallel

        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def run_main(main: Callable[[Sequence[str] | None], int],
             argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main`, turning expected user errors into one line on stderr and exit 2."""
    from wdjax.cpu import ops
    from wdjax.data import DataError
    from wdjax.storage import RunError
    from wdjax.training import runtime

    runtime.enable_compilation_cache()

    ops.tune_cpu_allocator()  # before any JAX computation; a no-op off glibc
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # signals reach it alone
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            for s in handlers:
                signal.signal(s, _interrupt)
            code = main(argv)
    except (UsageError, DataError, RunError, ValueError) as err:
        prog = "wdjax"
        hint = _data_option_hint(err) if isinstance(err, DataError) else ""
        print(f"{prog}: error: {' '.join(str(err).split())}{hint}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"wdjax: interrupted ({signal.Signals(signum).name}); the last checkpoint is "
              "kept, rerun the same command to resume", file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        _finish_checkpoints()
        for s, h in handlers.items():
            signal.signal(s, h)
    sys.exit(code)


def _data_option_hint(err: Exception) -> str:
    """Which option sets the input a DataError blames (the library names none)."""
    options = {"source": "--data or $WDJAX_DATA", "train_subset": "--train-subset",
               "test_subset": "--test-subset"}
    option = options.get(getattr(err, "subject", None))
    return f" (set by {option})" if option else ""


def _finish_checkpoints() -> None:
    """Let checkpoints being written in the background complete before exiting."""
    ckpt = sys.modules.get("wdjax.training.checkpoint")
    # A second Ctrl-C stops the wait; a failed save must not hide why the command ended.
    with contextlib.suppress(KeyboardInterrupt, Exception):
        if ckpt is not None:
            ckpt.wait_all()
