"""CIFAR-style image data: the front door that resolves a source spec and loads it.

Two kinds of source are understood:

* ``tfds:NAME`` -- a TensorFlow Datasets dataset (needs TensorFlow: ``pip install 'wdjax[tfds]'``);
  see `wdjax.data.tfds`.
* ``folder:PATH`` -- a directory or a ``.tar.gz``/``.tgz``/``.tar`` archive laid out as
  ``train/<class>/*.jpg|*.jpeg|*.png`` and ``test/<class>/...`` (optionally wrapped in one
  top-level folder). Classes are the sorted class-folder names; label ``i`` is ``classes[i]``.
  See `wdjax.data.folder`.

Folder sources are decoded once with Pillow into uint8 arrays and cached as an uncompressed
``.npz`` keyed by a checksum of the source (`wdjax.data.cache`), so later runs load in
about a second. Batching and augmentation live in `wdjax.training.batches`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from wdjax.data import folder, tfds
from wdjax.data.common import ALLOWED_FORMS, DataError, Dataset, readonly

__all__ = [
    "DEFAULT_SOURCE", "ENV_CACHE", "ENV_DATA", "DataError", "Dataset", "balanced_subset",
    "check_source", "load", "resolve_source",
]

ENV_DATA = "WDJAX_DATA"
ENV_CACHE = "WDJAX_CACHE"
DEFAULT_SOURCE = "tfds:cifar10"
DEFAULT_CACHE_DIR = "~/.cache/wdjax"

_TFDS_NAME = re.compile(r"[A-Za-z0-9_]+(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?")


def resolve_source(spec: str | None) -> str:
    """Return the canonical source spec: ``tfds:NAME`` or ``folder:/absolute/path``.

    ``None`` (or an empty string) means ``$WDJAX_DATA`` if set, else :data:`DEFAULT_SOURCE`.
    A bare path that exists is accepted as ``folder:PATH``.
    """
    if spec is None or not spec.strip():
        spec = os.environ.get(ENV_DATA, "").strip() or DEFAULT_SOURCE
    spec = spec.strip()
    if spec.startswith("tfds:"):
        name = spec[len("tfds:"):].strip()
        if not _TFDS_NAME.fullmatch(name):
            raise DataError(f"invalid data source {spec!r}: bad TFDS name; {ALLOWED_FORMS}")
        return f"tfds:{name}"
    if spec.startswith("folder:"):
        path = spec[len("folder:"):].strip()
        if not path:
            raise DataError(f"invalid data source {spec!r}: empty path; {ALLOWED_FORMS}")
        return "folder:" + os.path.abspath(os.path.expanduser(path))
    if os.path.exists(os.path.expanduser(spec)):
        return "folder:" + os.path.abspath(os.path.expanduser(spec))
    raise DataError(f"invalid data source {spec!r}; {ALLOWED_FORMS}")


def check_source(spec: str | None) -> None:
    """Validate a source cheaply (no image decoding); raise :class:`DataError` if unusable.

    A folder source must exist and have ``train/<class>/`` and ``test/<class>/`` image
    folders with the same classes (an archive's member list is read, which also catches a
    truncated archive). A ``tfds:`` source needs TensorFlow, a name TFDS knows, and either
    prepared data or reachable download hosts.
    """
    kind, arg = resolve_source(spec).split(":", 1)
    if kind == "tfds":
        tfds.check(arg)
    else:
        folder.check(Path(arg))


def _check_subset_arg(name: str, value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
    ):
        raise DataError(f"{name} must be a positive integer, got {value!r}", subject=name)


def load(
    spec: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> Dataset:
    """Load a dataset from ``spec`` (see :func:`resolve_source`).

    Folder sources are cached under ``cache_dir`` (default ``$WDJAX_CACHE`` or
    ``~/.cache/wdjax``). ``train_subset``/``test_subset`` pick a class-balanced subset of that
    many examples (see :func:`balanced_subset`); the cache always holds the full source.
    """
    # Validate subset arguments before any expensive work.
    _check_subset_arg("train_subset", train_subset)
    _check_subset_arg("test_subset", test_subset)
    source = resolve_source(spec)
    kind, arg = source.split(":", 1)
    if kind == "tfds":
        ds = tfds.load(arg)
    else:
        if cache_dir is None:
            cache_dir = os.environ.get(ENV_CACHE, "").strip() or DEFAULT_CACHE_DIR
        ds = folder.load(Path(arg), source, cache_dir)

    changes = {}
    for split, value in (("train", train_subset), ("test", test_subset)):
        if value is None:
            continue
        images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        if value > len(labels):
            raise DataError(f"{split}_subset must be between 1 and {len(labels)} for {source}, "
                            f"got {value}", subject=f"{split}_subset")
        idx = balanced_subset(labels, int(value), ds.num_classes)
        changes[f"{split}_images"] = readonly(images[idx])
        changes[f"{split}_labels"] = readonly(labels[idx])
    return dataclasses.replace(ds, **changes) if changes else ds


def balanced_subset(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Sorted indices of a deterministic class-balanced subset of size ``n``.

    Each class gets ``n // num_classes`` examples (the first ones in index order), the
    remainder going one each to the first classes; a class with too few examples gives its
    shortfall to the others. The same ``(labels, n)`` always gives the same indices, and a
    smaller subset is contained in a larger one whenever no class runs short.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}", subject=None)
    if not 1 <= n <= len(labels):
        raise DataError(f"subset size must be between 1 and {len(labels)}, got {n}",
                        subject=None)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}",
            subject=None)
    available = np.bincount(labels, minlength=num_classes)
    take = np.zeros(num_classes, dtype=np.int64)
    remaining = n
    while remaining > 0:  # terminates: each round fills the request or exhausts a class
        open_ = np.flatnonzero(take < available)
        share, extra = divmod(remaining, len(open_))
        add = np.full(len(open_), share, dtype=np.int64)
        add[:extra] += 1
        add = np.minimum(add, available[open_] - take[open_])
        take[open_] += add
        remaining -= int(add.sum())
    picked = [np.flatnonzero(labels == c)[: take[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(picked)).astype(np.int64)
