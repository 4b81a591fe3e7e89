"""Command-line plumbing shared by `experiments.train` and `experiments.sweep`: a user error is
one line on stderr and exit 2, before anything is written; SIGINT/SIGTERM stop with one line
(exit 130 / 143), keeping the last checkpoint, and the same command resumes."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

# The notebook's VGG: five 2x2 max-pools take 32x32 inputs down to one logit per class.
IMAGE_SIZE = (32, 32)
# Flags that replace a field of the protocol (of a sweep's scale: for a tiny test sweep).
PROTOCOL_FLAGS = {"--train-subset": "training images per epoch, class-balanced",
                  "--stages": "learning-rate stages, each half the last",
                  "--epochs-per-stage": "epochs of each stage"}
# Which option sets the input a DataError blames (its `subject`; the library names none).
DATA_OPTIONS = {"source": "--data or $WDJAX_DATA", "train_subset": "--train-subset",
                "test_subset": "--test-subset"}


class UsageError(Exception):
    """A bad command line or config; `run_main` prints it as one line and exits 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no abbreviations (``--epochs`` is not a flag)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def hparam_type(h: Any) -> Callable[[str], float]:
    """argparse type of a `wdjax.schemes.hparams.TABLE` row: a number in its interval."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{h.flag} must be a number, got {text!r}") from None
        try:
            h.check(value)
        except ValueError:
            raise UsageError(f"{h.flag} must be a finite number in {h.interval()}, "
                             f"got {text!r}") from None
        return value

    return parse


def integer(name: str, *, low: int = 1) -> Callable[[str], int]:
    """argparse type: an integer >= `low`."""

    def parse(text: str) -> int:
        with contextlib.suppress(ValueError):
            if int(text) >= low:
                return int(text)
        raise UsageError(f"{name} must be an integer >= {low}, got {text}")

    return parse


def add_hparam_flags(p: argparse.ArgumentParser, defaults: Any = None, *,
                     decay_only: bool = False) -> None:
    """A flag per `hparams.TABLE` row; `decay_only`: the decay pair, default each run's own."""
    from wdjax.schemes import hparams

    # A row given in another unit (``sets``) and the row it sets are mutually exclusive.
    groups = {h.sets: p.add_mutually_exclusive_group() for h in hparams.TABLE if h.sets}
    for h in hparams.TABLE:
        group = groups.get(h.sets or h.name)
        if decay_only and group is None:
            continue
        if decay_only:
            names, default, text = [h.flag], None, f"every run: {h.help} (default: the run's own)"
        else:
            names, text = [h.flag] + ([h.short] if h.short else []), h.help
            default = getattr(defaults, h.name) if defaults is not None else h.default
        (group or p).add_argument(*names, dest=h.name, default=default, help=text,
                                  type=hparam_type(h))


def decay_override(args: argparse.Namespace) -> dict[str, Any]:
    """The run fields the override flags set: the given row, its counterpart cleared."""
    from wdjax.schemes import hparams

    for h in hparams.TABLE:
        if h.sets and getattr(args, h.name, None) is not None:
            return {h.name: getattr(args, h.name)}
        if h.sets and getattr(args, h.sets, None) is not None:
            return {h.sets: getattr(args, h.sets), h.name: None}
    return {}


def add_run_flags(p: argparse.ArgumentParser, defaults: Any = None) -> None:
    """The flags train and sweep share; `defaults`: a `Config`, or None (the scale's)."""
    from wdjax import data
    from wdjax.training import tensorboard as tb
    from wdjax.training.config import PRECISIONS

    a = p.add_argument
    for flag, what in PROTOCOL_FLAGS.items():
        default = getattr(defaults, flag[2:].replace("-", "_"), None)
        a(flag, type=integer(flag), default=default,
          help=what + (" (default: the scale's)" if defaults is None else ""))
    a("--data", default=None,
      help=f"tfds:NAME or folder:PATH (default ${data.ENV_DATA}, else {data.DEFAULT_SOURCE})")
    a("--seed", type=integer("--seed", low=0), default=getattr(defaults, "seed", 0))
    a("--precision", choices=tuple(PRECISIONS), default=defaults and defaults.precision,
      help="fp32 (the notebook's) or bf16: convolutions, matmuls and activations in bfloat16, "
           "the rest in float32; faster on GPUs and TPUs, not on CPUs (docs/performance.md)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--tensorboard", action="store_true", default=None, help="write TensorBoard events into "
      f"each RUN/tensorboard/, and a sweep's HParams table (or ${tb.ENV_TENSORBOARD}=1)")


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


def start(args: argparse.Namespace) -> None:
    """Resolve --tensorboard (needs tensorboardX), join a multi-host job: before other JAX work."""
    from wdjax.training import tensorboard as tb

    args.tensorboard = tb.enabled(args.tensorboard)
    if args.tensorboard:
        tb.require()
    if args.distributed or args.coordinator:
        from wdjax.training import parallel

        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def load_data(out_dir: Any, todo: Sequence[Any], force: bool) -> Any:
    """Refuse conflicting runs (unless `force`), then load and check the data: writes nothing."""
    from wdjax import data
    from wdjax.training.train import prepare_run_dir

    for c in () if force else todo:
        prepare_run_dir(out_dir, c, force=False)
    first = todo[0]
    dataset = data.load(first.data, train_subset=first.train_subset,
                        test_subset=first.test_subset)
    h, w = dataset.train_images.shape[1:3]
    if (h, w) != IMAGE_SIZE:
        raise data.DataError(f"images in {dataset.source} are {w}x{h}; each model needs "
                             f"{IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} RGB images (the CIFAR size)")
    return dataset


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signum)  # SIGINT or SIGTERM: its argument says which


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"wdjax: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def run_main(main: Callable[[Sequence[str] | None], int],
             argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main`, turning expected user errors into one line on stderr and exit 2."""
    from wdjax.cpu import ops
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
    except (UsageError, ValueError) as err:  # DataError and RunError are ValueErrors
        option = DATA_OPTIONS.get(getattr(err, "subject", None))
        hint = f" (set by {option})" if option else ""
        print(f"wdjax: error: {' '.join(str(err).split())}{hint}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        signum = signal.SIGTERM if err.args == (signal.SIGTERM,) else signal.SIGINT
        print(f"wdjax: interrupted ({signum.name}); the last checkpoint is "
              "kept, rerun the same command to resume", file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        # Checkpoints written in the background complete; a second Ctrl-C stops the wait, and
        # a failed save must not hide why the command ended.
        with contextlib.suppress(KeyboardInterrupt, Exception):
            if (ckpt := sys.modules.get("wdjax.training.checkpoint")) is not None:
                ckpt.wait_all()
        for s, h in handlers.items():
            signal.signal(s, h)
    sys.exit(code)
