"""CIFAR-style image data: resolve a source spec (``tfds:NAME``, `wdjax.data.tfds`, or
``folder:PATH``, `wdjax.data.folder`) and load it as a `Dataset`, optionally a class-balanced
subset. Batching and augmentation live in `wdjax.training.batches`."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_SOURCE", "ENV_CACHE", "ENV_DATA", "DataError", "Dataset", "balanced_subset",
           "check_source", "load", "resolve_source"]

SPLITS = ("train", "test")
ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
FOLDER_FORM = ("folder:PATH (a directory or .tar.gz/.tgz/.tar archive holding train/<class>/ "
               "and test/<class>/ image folders)")
ALLOWED_FORMS = f"allowed sources: tfds:NAME (e.g. tfds:cifar10) or {FOLDER_FORM}"


def one_line(text: object) -> str:
    """`text` with its lines joined by single spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class DataError(ValueError):
    """One-line, user-facing data problem (the CLI prints it and exits 2); ``subject``: the input
    at fault ("source", "train_subset", "test_subset" or None) for a front end to name."""

    def __init__(self, message: object, *, subject: str | None = "source") -> None:
        super().__init__(one_line(message))
        self.subject = subject


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Decoded image classification data in host memory. The arrays are made read-only (a
    dataset is shared); equality is identity (comparing image arrays has no single truth)."""

    train_images: np.ndarray  # uint8 (N, H, W, 3)
    train_labels: np.ndarray  # int32 (N,)
    test_images: np.ndarray  # uint8 (M, H, W, 3)
    test_labels: np.ndarray  # int32 (M,)
    classes: tuple[str, ...]
    source: str  # the resolved spec, e.g. "folder:/abs/path.tar.gz"
    checksum: str  # hex digest identifying the source content

    def __post_init__(self) -> None:
        for key in ARRAY_KEYS:
            getattr(self, key).flags.writeable = False

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are ``0 .. num_classes - 1``)."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset(source={self.source!r}, train={self.train_images.shape}, "
                f"test={self.test_images.shape}, classes={len(self.classes)}, "
                f"checksum={self.checksum[:12]}...)")


from wdjax.data import folder, tfds  # noqa: E402 - they import the names above

ENV_DATA = "WDJAX_DATA"
ENV_CACHE = "WDJAX_CACHE"
DEFAULT_SOURCE = "tfds:cifar10"
DEFAULT_CACHE_DIR = "~/.cache/wdjax"

_TFDS_NAME = re.compile(r"[A-Za-z0-9_]+(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?")


def resolve_source(spec: str | None) -> str:
    """The canonical source spec, ``tfds:NAME`` or ``folder:/absolute/path``, of `spec` (None or
    empty: ``$WDJAX_DATA`` if set, else `DEFAULT_SOURCE`; an existing bare path: a folder)."""
    spec = (spec or "").strip() or os.environ.get(ENV_DATA, "").strip() or DEFAULT_SOURCE
    if spec.startswith("tfds:"):
        name = spec.removeprefix("tfds:").strip()
        if not _TFDS_NAME.fullmatch(name):
            raise DataError(f"invalid data source {spec!r}: bad TFDS name; {ALLOWED_FORMS}")
        return f"tfds:{name}"
    if spec.startswith("folder:"):
        path = spec.removeprefix("folder:").strip()
        if not path:
            raise DataError(f"invalid data source {spec!r}: empty path; {ALLOWED_FORMS}")
    elif os.path.exists(os.path.expanduser(spec)):
        path = spec
    else:
        raise DataError(f"invalid data source {spec!r}; {ALLOWED_FORMS}")
    return "folder:" + os.path.abspath(os.path.expanduser(path))


def check_source(spec: str | None) -> None:
    """Validate a source without decoding images; :class:`DataError` if unusable (a folder
    lacks ``train/<class>/`` and ``test/<class>/`` with the same classes; a ``tfds:`` source
    lacks TensorFlow, a name TFDS knows, or prepared data and reachable download hosts)."""
    kind, arg = resolve_source(spec).split(":", 1)
    if kind == "tfds":
        tfds.check(arg)
    else:
        folder.check(Path(arg))


def load(spec: str | None = None, *, cache_dir: str | os.PathLike | None = None,
         train_subset: int | None = None, test_subset: int | None = None) -> Dataset:
    """Load a dataset from `spec` (`resolve_source`); folders are cached (in full) under
    `cache_dir` (default ``$WDJAX_CACHE`` or ``~/.cache/wdjax``). `train_subset` /
    `test_subset`: that many examples, class-balanced (`balanced_subset`)."""
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, int | np.integer) or value < 1):
            raise DataError(f"{name} must be a positive integer, got {value!r}", subject=name)
    source = resolve_source(spec)
    kind, arg = source.split(":", 1)
    if kind == "tfds":
        ds = tfds.load(arg)
    else:
        default_dir = os.environ.get(ENV_CACHE, "").strip() or DEFAULT_CACHE_DIR
        ds = folder.load(Path(arg), source, default_dir if cache_dir is None else cache_dir)
    changes = {}
    for split, value in (("train", train_subset), ("test", test_subset)):
        if value is None:
            continue
        images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        if value > len(labels):
            raise DataError(f"{split}_subset must be between 1 and {len(labels)} for {source}, "
                            f"got {value}", subject=f"{split}_subset")
        idx = balanced_subset(labels, int(value), ds.num_classes)
        changes[f"{split}_images"], changes[f"{split}_labels"] = images[idx], labels[idx]
    return dataclasses.replace(ds, **changes) if changes else ds


def balanced_subset(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Sorted indices of a deterministic class-balanced subset of size `n`: each class's first
    ``n // num_classes`` examples, one more for the first ``n % num_classes`` classes, a short
    class's shortfall shared by the others (nested in larger subsets unless a class runs short)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}", subject=None)
    if not 1 <= n <= len(labels):
        raise DataError(f"subset size must be between 1 and {len(labels)}, got {n}", subject=None)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}), got {labels.min()}.."
                        f"{labels.max()}", subject=None)
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
