"""Checkpoints through orbax-checkpoint: one per epoch end, the last two kept.

A checkpoint holds the training state (step, params, BN statistics, optimiser state with
its hyperparameters) and a small JSON of host-side bookkeeping (best test count, ...).
Restoring falls back to the previous checkpoint, with a warning, when the newest one is
truncated or corrupt.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


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
        if epoch in self.mngr.all_steps():
            self.mngr.wait_until_finished()
            self.mngr.delete(epoch)
        self.mngr.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)))

    def wait(self) -> None:
        if self._mngr is not None:
            self._mngr.wait_until_finished()

    def restore(self, epoch: int, target: Any) -> tuple[Any, dict]:
        """Restore `epoch` into the structure of `target`; fall back to older ones if broken.

        Returns the state and the extra dict; raises if no checkpoint can be read.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        candidates = [e for e in reversed(self.epochs()) if e <= epoch]
        for e in candidates:
            try:
                got = self.mngr.restore(e, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()))
            except Exception as err:  # orbax raises many kinds for a damaged checkpoint
                warnings.warn(f"checkpoint epoch {e} in {self.directory} is unreadable "
                              f"({type(err).__name__}); falling back to an older one",
                              stacklevel=2)
                continue
            return got["state"], dict(got["extra"], epoch=e)
        raise RuntimeError(f"no readable checkpoint in {self.directory}")

    def close(self) -> None:
        if self._mngr is not None:
            self._mngr.close()
