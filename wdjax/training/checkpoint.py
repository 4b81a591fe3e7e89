"""Orbax checkpoints, one per epoch end (the last two kept), with a SHA-256 of the state and
bookkeeping (orbax reads flipped bytes back without complaint); restore falls back to older."""

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


class CheckpointError(storage.RunError):
    """No checkpoint of a run can be read (one line for the CLI)."""


def digest(state: Any, extra: dict) -> str | None:
    """SHA-256 over every array of `state` (dtype, shape, bytes) and the JSON of `extra`;
    None when this process holds only part of the arrays (multi-host)."""
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


_previous_unraisablehook = sys.unraisablehook


def _drop_event_loop_closed(unraisable: Any) -> None:
    err = unraisable.exc_value
    if not (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
        _previous_unraisablehook(unraisable)  # else: tensorstore cleanup after a failed read


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Silence orbax's log lines (and a late tensorstore "Event loop is closed" traceback,
    whose filter stays) while reading possibly damaged checkpoints: `Manager.restore` warns."""
    global _previous_unraisablehook
    if sys.unraisablehook is not _drop_event_loop_closed:
        _previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, _drop_event_loop_closed
    logger = logging.getLogger("absl")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


_PENDING: set[Manager] = set()  # managers whose last save may still be in flight


def wait_all() -> None:
    """Finish every checkpoint still being written (interpreter exit would cut it off)."""
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
            # A killed save leaves "<epoch>.orbax-checkpoint-tmp*"; orbax would warn later.
            if self.directory.exists() and jax.process_index() == 0:
                for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                    shutil.rmtree(tmp, ignore_errors=True)
            with _quiet_orbax():
                self._mngr = ocp.CheckpointManager(self.directory, options=(
                    ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True)))
        return self._mngr

    def epochs(self) -> list[int]:
        return sorted(self.mngr.all_steps()) if self.directory.exists() else []

    def latest_epoch(self) -> int | None:
        return max(self.epochs(), default=None)

    def reset(self) -> None:
        """Delete every checkpoint (a run that starts over)."""
        self.close()
        self._mngr = None
        if self.directory.exists():
            shutil.rmtree(self.directory)

    def save(self, epoch: int, state: Any, extra: dict) -> None:
        """Start saving (asynchronously; the next save or `wait` completes it), replacing a
        checkpoint of the same epoch (left after falling back from a damaged newer one)."""
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
        """The state (in the structure of `target`) and extra dict (with the epoch read) of
        `epoch`, or of an older one if it is broken; CheckpointError if none can be read."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for e in [e for e in reversed(self.epochs()) if e <= epoch]:
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
