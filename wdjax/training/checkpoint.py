"""Checkpoints through orbax-checkpoint: one per epoch end, the last two kept.

A checkpoint holds the training state (step, params, BN statistics, optimiser state with
its hyperparameters) and a small JSON of host-side bookkeeping (best test count, ...),
plus a SHA-256 of both: orbax reads a flipped byte in array data back without complaint,
so the digest is what catches silent corruption. Restoring falls back to the previous
checkpoint, with a one-line warning, when the newest one is truncated or corrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wdjax import storage

_DIGEST = "state_sha256"
_TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(storage.RunError):
    """No checkpoint of a run can be read (one line for the CLI)."""


def digest(state: Any, extra: dict) -> str | None:
    """SHA-256 over every array of `state` (dtype, shape, bytes) and the JSON of `extra`.

    None when this process holds only part of the arrays (multi-host): nothing to compare.
    """
    leaves = jax.tree.leaves(state)
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
        return None
    h = hashlib.sha256()
    for leaf in jax.device_get(leaves):
        a = np.ascontiguousarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Silence orbax's own log lines while reading possibly damaged checkpoints.

    A damaged checkpoint is reported once, by `Manager.restore`'s warning; orbax would
    add ERROR lines (and, from a tensorstore callback, an "Event loop is closed"
    traceback) that make a recoverable fallback look like a crash. That callback can fire
    after the read has returned, so its filter, once installed, stays.
    """
    global _previous_unraisablehook
    if sys.unraisablehook is not _drop_event_loop_closed:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _drop_event_loop_closed
    logger = logging.getLogger("absl")
    disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = disabled


def _drop_event_loop_closed(unraisable: Any) -> None:
    err = unraisable.exc_value
    if isinstance(err, RuntimeError) and str(err) == "Event loop is closed":
        return  # orbax/tensorstore cleanup after a failed read; harmless
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


_PENDING: set[Manager] = set()  # managers whose last save may still be in flight


def wait_all() -> None:
    """Finish every checkpoint still being written; call before the process exits.

    Orbax commits a checkpoint in a background thread that interpreter shutdown cuts off
    (losing that checkpoint, with a traceback), e.g. after Ctrl-C.
    """
    for m in list(_PENDING):
        m.wait()


class Manager:
    """Save/restore a run's state by epoch number under `directory`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory).resolve()
        self._keep = keep
        self._mngr: ocp.CheckpointManager | None = None

    @property
    def mngr(self) -> ocp.CheckpointManager:
        # Created lazily: orbax makes the directory, which a refused run must not leave.
        if self._mngr is None:
            # A save cut short by a killed process leaves "<epoch>.orbax-checkpoint-tmp";
            # orbax would remove it later with a warning line. No save runs yet.
            if self.directory.exists() and jax.process_index() == 0:
                for tmp in self.directory.glob(f"*{_TMP_SUFFIX}*"):
                    shutil.rmtree(tmp, ignore_errors=True)
            with _quiet_orbax():
                self._mngr = ocp.CheckpointManager(
                    self.directory,
                    options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True),
                )
        return self._mngr

    def epochs(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(self.mngr.all_steps())

    def latest_epoch(self) -> int | None:
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def reset(self) -> None:
        """Delete every checkpoint (a run that starts over)."""
        self.close()
        self._mngr = None
        if self.directory.exists():
            shutil.rmtree(self.directory)

    def save(self, epoch: int, state: Any, extra: dict) -> None:
        """Start saving (asynchronously; the next save or `wait` completes it).

        An existing checkpoint of the same epoch (left after falling back from a damaged
        newer one) is replaced.
        """
        check = digest(state, extra)
        extra = dict(extra, **{_DIGEST: check}) if check else extra
        if epoch in self.mngr.all_steps():
            self.mngr.wait_until_finished()
            self.mngr.delete(epoch)
        _PENDING.add(self)
        self.mngr.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)))

    def wait(self) -> None:
        if self._mngr is not None:
            self._mngr.wait_until_finished()
        _PENDING.discard(self)

    def restore(self, epoch: int, target: Any) -> tuple[Any, dict]:
        """Restore `epoch` into the structure of `target`; fall back to older ones if broken.

        Returns the state and the extra dict (with the epoch read); raises CheckpointError
        if no checkpoint can be read.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        candidates = [e for e in reversed(self.epochs()) if e <= epoch]
        for e in candidates:
            try:
                with _quiet_orbax():
                    got = self.mngr.restore(e, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract),
                        extra=ocp.args.JsonRestore()))
                state, extra = got["state"], dict(got["extra"])
                stored = extra.pop(_DIGEST, None)  # absent in checkpoints of older versions
                if stored is not None and stored != (digest(state, extra) or stored):
                    raise ValueError("checksum mismatch")
            except Exception as err:  # orbax raises many kinds for a damaged checkpoint
                why = f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"
                warnings.warn(f"checkpoint epoch {e} in {self.directory} is unreadable or "
                              f"corrupt ({why}); falling back to an older one", stacklevel=2)
                continue
            return state, dict(extra, epoch=e)
        raise CheckpointError(f"no readable checkpoint in {self.directory}; delete that folder "
                              "to start the run over")

    def close(self) -> None:
        if self._mngr is not None:
            self._mngr.close()
        _PENDING.discard(self)
