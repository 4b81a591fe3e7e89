"""Shared pytest fixtures: synthetic image folders and the offline CIFAR-10 archive.

* ``make_image_tree`` -- a function writing a ``split/class/image`` tree of small images.
* ``tiny_dataset`` -- (session) a 10-class 8x8 RGB :class:`wdjax.data.Dataset` (PNG, lossless).
* ``cifar_archive`` -- (session) path of ``shared/data/cifar10-jpeg.tar.gz``; skips if absent.
* ``cifar_jpeg`` -- (session) the decoded archive (cached under a tmp dir, or ``$WDJAX_CACHE``).
* ``read_tensorboard_scalars`` -- a function: ``{tag: [(step, value)]}`` of an event folder,
  read with TensorBoard's own reader (skips the test when tensorboard is absent).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

# Compiled programs are shared across tests, xdist workers and CLI subprocesses: on CPU,
# XLA compilation is most of a tiny training run's time.
os.environ.setdefault("WDJAX_XLA_CACHE", str(Path.home() / ".cache" / "wdjax" / "xla-tests"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["WDJAX_XLA_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Conv plans from the rule table, not timed on first use: deterministic and fast
# (tests/test_conv_tune.py turns tuning on).
os.environ["WDJAX_CONV_TUNE"] = "0"
# LLVM at -O0: a test's tiny programs spend far longer compiling than running, and the HLO
# (what the numbers depend on) is the same program. Cold caches: 873 -> 739 s. Added to any
# flags already set; subprocesses inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

from wdjax import data  # noqa: E402  (after the cache settings)

_ARCHIVE_NAME = Path("shared", "data", "cifar10-jpeg.tar.gz")
# The checkout lives next to shared/ on the workstation and contains it on device machines.
_ARCHIVE_CANDIDATES = tuple(
    root / _ARCHIVE_NAME
    for root in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2])
)


def write_image_tree(
    root: Path,
    counts: Mapping[str, Mapping[str, int]],
    *,
    size: tuple[int, int] = (8, 8),
    fmt: str = "png",
    seed: int = 0,
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Write ``root/split/class/NNNN.fmt`` random RGB images; return the pixels written.

    ``counts`` maps split -> class -> number of images; ``size`` is (width, height).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels: dict[str, dict[str, list[np.ndarray]]] = {}
    for split, per_class in counts.items():
        for cls, count in per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(img, "RGB").save(folder / f"{i:04d}.{fmt}")
                pixels.setdefault(split, {}).setdefault(cls, []).append(img)
    return pixels


@pytest.fixture
def make_image_tree() -> Callable[..., dict[str, dict[str, list[np.ndarray]]]]:
    """The :func:`write_image_tree` helper, for tests that build their own image folders."""
    return write_image_tree


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> data.Dataset:
    """10 classes, 8x8 RGB; 12 train / 4 test images per class, loaded via a folder source."""
    root = tmp_path_factory.mktemp("tiny-data")
    classes = [f"class{c}" for c in range(10)]
    write_image_tree(
        root / "images",
        {"train": dict.fromkeys(classes, 12), "test": dict.fromkeys(classes, 4)},
    )
    return data.load(f"folder:{root / 'images'}", cache_dir=root / "cache")


@pytest.fixture(scope="session")
def cifar_archive() -> Path:
    """Path of the offline CIFAR-10 JPEG archive; skips the test if it is absent."""
    for path in _ARCHIVE_CANDIDATES:
        if path.is_file():
            return path
    pytest.skip(f"offline CIFAR-10 archive not found (looked for {_ARCHIVE_CANDIDATES[-1]})")


@pytest.fixture(scope="session")
def cifar_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache dir for the CIFAR fixture: ``$WDJAX_CACHE`` if set, else a session tmp dir."""
    env = os.environ.get(data.ENV_CACHE, "").strip()
    return Path(env).expanduser() if env else tmp_path_factory.mktemp("wdjax-cache")


@pytest.fixture(scope="session")
def cifar_jpeg(cifar_archive: Path, cifar_cache_dir: Path) -> data.Dataset:
    """The full offline CIFAR-10 (50000/10000), decoded once per session (~5 s, then cached)."""
    return data.load(f"folder:{cifar_archive}", cache_dir=cifar_cache_dir)


def subset(ds: data.Dataset, n_train: int, n_test: int) -> data.Dataset:
    """A class-balanced slice of `ds` (what --train-subset / --test-subset select)."""
    import dataclasses

    tr = data.balanced_subset(ds.train_labels, n_train, ds.num_classes)
    te = data.balanced_subset(ds.test_labels, n_test, ds.num_classes)
    return dataclasses.replace(ds, train_images=ds.train_images[tr],
                               train_labels=ds.train_labels[tr],
                               test_images=ds.test_images[te], test_labels=ds.test_labels[te])


@pytest.fixture(scope="session")
def small_cifar(cifar_jpeg: data.Dataset) -> data.Dataset:
    """300 training and 200 test images of the offline CIFAR-10 (a partial last batch)."""
    return subset(cifar_jpeg, 300, 200)


def read_tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `logdir`, by tag, read with TensorBoard's reader."""
    import sys
    import types

    # TensorBoard's switch for its own TF stub (its "no_tensorflow" build): reading events
    # then skips importing TensorFlow, several seconds where TF is installed.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard absent: pip install -e '.[dev]'")
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}
