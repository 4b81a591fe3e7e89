"""Tests for ``wdjax.data`` and its folder source: decoding, validation, cache, subsets,
batching, flips (TFDS sources: tests/test_tfds.py)."""

from __future__ import annotations

import hashlib
import math
import os
import tarfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from wdjax import data
from wdjax.data import DataError, folder
from wdjax.training import batches

# README of shared/data: sha256 and per-channel statistics of the decoded training set.
CIFAR_SHA256 = "8902c3345e1b3e1d2f8bfc40e86c716f2276cb8863a23b816fa2a62d059570f0"
CIFAR_MEAN = (0.4913, 0.4821, 0.4465)
CIFAR_STD = (0.2452, 0.2428, 0.2606)
CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Created in non-sorted order on purpose: classes must come out sorted.
COUNTS = {
    "train": {"zebra": 3, "ant": 4, "moose": 2},
    "test": {"moose": 1, "zebra": 2, "ant": 1},
}
SORTED = ("ant", "moose", "zebra")


def make_tar(src: Path, out: Path, *, wrap: str | None = None) -> Path:
    """Archive ``src/train`` and ``src/test`` (optionally under a ``wrap/`` folder)."""
    mode = "w" if out.name.endswith(".tar") else "w:gz"
    with tarfile.open(out, mode) as tar:
        for split in ("train", "test"):
            if (src / split).exists():
                tar.add(src / split, arcname=f"{wrap}/{split}" if wrap else split)
    return out


@pytest.fixture
def tree(tmp_path, make_image_tree):
    """A small PNG tree (8 wide x 6 high) and the pixels written into it."""
    root = tmp_path / "imgs"
    pixels = make_image_tree(root, COUNTS, size=(8, 6))
    return root, pixels


@pytest.fixture
def archive(tree, tmp_path):
    root, pixels = tree
    return make_tar(root, tmp_path / "mini.tar.gz"), pixels


def expected_split(pixels, split):
    images = [img for cls in SORTED for img in pixels[split][cls]]
    labels = [label for label, cls in enumerate(SORTED) for _ in pixels[split][cls]]
    return np.stack(images), np.array(labels, dtype=np.int32)


def one_line_error(func, *args, match: str, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    # The library says what is wrong; only a front end names its own flags or paths.
    assert "--data" not in message and "../" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Loading folder sources
# ---------------------------------------------------------------------------------------------


def test_archive_loads_shapes_labels_classes_exact_pixels(archive, tmp_path):
    path, pixels = archive
    ds = data.load(f"folder:{path}", cache_dir=tmp_path / "cache")
    assert ds.classes == SORTED and ds.num_classes == 3
    assert ds.train_images.shape == (9, 6, 8, 3) and ds.test_images.shape == (4, 6, 8, 3)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    for split in ("train", "test"):
        images, labels = expected_split(pixels, split)
        np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), labels)
        # PNG is lossless: pixels round-trip exactly, in (class, filename) order.
        np.testing.assert_array_equal(getattr(ds, f"{split}_images"), images)
    assert ds.source == f"folder:{path.resolve()}"
    assert ds.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not ds.train_images.flags.writeable  # shared datasets must not be edited in place


@pytest.mark.parametrize("suffix", [".tar", ".tgz"])
def test_directory_plain_and_wrapped_archives_agree(tree, tmp_path, suffix):
    root, _ = tree
    from_dir = data.load(f"folder:{root}", cache_dir=tmp_path / "c1")
    wrapped = make_tar(root, tmp_path / f"wrapped{suffix}", wrap="mini-cifar")
    from_tar = data.load(str(wrapped), cache_dir=tmp_path / "c2")  # bare path accepted
    assert from_tar.source == f"folder:{wrapped}"
    assert from_dir.classes == from_tar.classes == SORTED
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(from_dir, key), getattr(from_tar, key))


def test_wrapped_directory(tree, tmp_path):
    root, pixels = tree
    outer = tmp_path / "outer"
    outer.mkdir()
    root.rename(outer / "inner")
    ds = data.load(f"folder:{outer}", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.test_images, expected_split(pixels, "test")[0])


def test_jpeg_matches_pillow_decode_and_filenames_sorted(tmp_path, make_image_tree):
    root = tmp_path / "jpg"
    make_image_tree(root, {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 1}}, fmt="jpg")
    # String order puts "10.jpeg" before "9.jpeg"; both extensions are accepted.
    (root / "train/a/0000.jpg").rename(root / "train/a/9.jpeg")
    (root / "train/a/0001.jpg").rename(root / "train/a/10.jpeg")
    (root / "train/a/notes.txt").write_text("ignored")
    ds = data.load(f"folder:{root}", cache_dir=tmp_path / "cache")
    order = ["train/a/10.jpeg", "train/a/9.jpeg", "train/b/0000.jpg"]
    expected = np.stack([np.asarray(Image.open(root / name)) for name in order])
    np.testing.assert_array_equal(ds.train_images, expected)
    np.testing.assert_array_equal(ds.train_labels, [0, 0, 1])


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def _no_decode(name, source):
    raise AssertionError(f"decoded {name} although a valid cache exists")


def test_cache_created_reused_and_invalidated(archive, tmp_path, monkeypatch):
    path, _ = archive
    cache = tmp_path / "cache"
    first = data.load(f"folder:{path}", cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and first.checksum[:16] in files[0].name
    assert files[0].suffix == ".npz"

    with monkeypatch.context() as m:
        m.setattr(folder, "decode_image", _no_decode)
        again = data.load(f"folder:{path}", cache_dir=cache)
    np.testing.assert_array_equal(again.train_images, first.train_images)
    assert again.classes == first.classes and again.checksum == first.checksum

    # Changing the archive changes the key: it is decoded again into a second cache file.
    (tmp_path / "imgs/train/ant/0000.png").unlink()
    make_tar(tmp_path / "imgs", path)
    decoded = []
    real = folder.decode_image
    monkeypatch.setattr(folder, "decode_image", lambda n, s: decoded.append(n) or real(n, s))
    changed = data.load(f"folder:{path}", cache_dir=cache)
    assert len(decoded) == 12 and changed.train_images.shape[0] == 8
    assert changed.checksum != first.checksum
    assert len(list(cache.iterdir())) == 2


def test_directory_cache_key_follows_file_changes(tree, tmp_path, monkeypatch):
    root, _ = tree
    cache = root / "cache"  # inside the data folder: must not disturb its own key
    first = data.load(f"folder:{root}", cache_dir=cache)
    with monkeypatch.context() as m:
        m.setattr(folder, "decode_image", _no_decode)
        assert data.load(f"folder:{root}", cache_dir=cache).checksum == first.checksum
    victim = root / "test/ant/0000.png"
    os.utime(victim, ns=(1, 1))  # same bytes, new mtime -> new key
    assert data.load(f"folder:{root}", cache_dir=cache).checksum != first.checksum


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_cache_is_rebuilt_with_warning(archive, tmp_path, monkeypatch, damage):
    path, pixels = archive
    cache = tmp_path / "cache"
    data.load(f"folder:{path}", cache_dir=cache)
    (cache_file,) = cache.iterdir()
    raw = bytearray(cache_file.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 3] ^= 0xFF  # inside the train images
    elif damage == "garbage":
        raw = bytearray(b"not a zip file" * 10)
    else:
        raw = bytearray()
    cache_file.write_bytes(bytes(raw))

    with pytest.warns(RuntimeWarning, match="rebuilding") as record:
        ds = data.load(f"folder:{path}", cache_dir=cache)
    assert all("\n" not in str(w.message) for w in record)
    np.testing.assert_array_equal(ds.train_images, expected_split(pixels, "train")[0])
    # Rebuilt: the next load is silent and decodes nothing.
    monkeypatch.setattr(folder, "decode_image", _no_decode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load(f"folder:{path}", cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == [cache_file.name]  # no temp files left


@pytest.mark.parametrize(
    ("field", "reason"),
    [("train_images", "integrity checksum"), ("source_checksum", "another source")],
)
def test_valid_npz_with_wrong_content_is_rebuilt(archive, tmp_path, field, reason):
    """A well-formed npz whose arrays or source key do not match is not trusted."""
    path, pixels = archive
    cache = tmp_path / "cache"
    data.load(f"folder:{path}", cache_dir=cache)
    (cache_file,) = cache.iterdir()
    with np.load(cache_file) as z:
        contents = {key: z[key] for key in z.files}
    if field == "train_images":
        contents[field][0, 0, 0, 0] ^= 1
    else:
        contents[field] = np.array("0" * 64)
    np.savez(cache_file, **contents)
    with pytest.warns(RuntimeWarning, match=reason):
        ds = data.load(f"folder:{path}", cache_dir=cache)
    np.testing.assert_array_equal(ds.train_images, expected_split(pixels, "train")[0])


def test_cache_dir_from_environment(archive, tmp_path, monkeypatch):
    path, _ = archive
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "envcache"))
    data.load(f"folder:{path}")
    assert len(list((tmp_path / "envcache").glob("mini-*.npz"))) == 1


def test_unwritable_cache_only_warns(archive, tmp_path):
    path, _ = archive
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="could not write"):
        ds = data.load(f"folder:{path}", cache_dir=blocker / "cache")
    assert ds.train_images.shape[0] == 9


# ---------------------------------------------------------------------------------------------
# Source specs and validation errors
# ---------------------------------------------------------------------------------------------


def test_resolve_source(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    assert data.resolve_source(None) == data.DEFAULT_SOURCE == "tfds:cifar10"
    monkeypatch.setenv(data.ENV_DATA, "tfds:mnist")
    assert data.resolve_source(None) == "tfds:mnist"
    assert data.resolve_source("tfds:cifar10") == "tfds:cifar10"
    monkeypatch.chdir(tmp_path)
    assert data.resolve_source("folder:rel/x.tar.gz") == f"folder:{tmp_path / 'rel/x.tar.gz'}"
    assert data.resolve_source(str(tmp_path)) == f"folder:{tmp_path}"
    for bad in ["cifar10", "zip:/x", "tfds:", "tfds:two words", "folder:", "/no/such/path"]:
        message = one_line_error(data.resolve_source, bad, match="invalid data source")
        assert "tfds:NAME" in message and "folder:PATH" in message


def _bad_sources(tmp_path: Path, make_image_tree) -> dict[str, tuple[Path, str]]:
    """name -> (source path, regex the error must match)."""
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "nope.tar.gz", "does not exist")
    (tmp_path / "data.zip").write_bytes(b"PK")
    cases["wrong-extension"] = (tmp_path / "data.zip", r"not a directory or a \.tar\.gz")
    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    cases["no-splits"] = (plain, "no train/ or test/")
    only_train = tmp_path / "only-train"
    make_image_tree(only_train, {"train": {"a": 1}})
    cases["no-test"] = (only_train, "no test/ folder")
    loose = tmp_path / "loose"
    make_image_tree(loose, {"test": {"a": 1}})
    (loose / "train").mkdir()
    Image.new("RGB", (8, 8)).save(loose / "train" / "x.png")
    cases["no-classes"] = (loose, r"no class folders with images in .*train/")
    differ = tmp_path / "differ"
    make_image_tree(differ, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "c": 1}})
    cases["class-mismatch"] = (differ, r"test classes differ.*\['b'\].*\['c'\]")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(os.urandom(2000))
    cases["garbage-archive"] = (garbage, "garbage.tar.gz.*corrupt or truncated")
    return cases


def test_every_source_error_is_one_line(tmp_path, make_image_tree):
    for name, (path, pattern) in _bad_sources(tmp_path, make_image_tree).items():
        spec = f"folder:{path}"
        for func in (data.check_source, data.load):
            kwargs = {"cache_dir": tmp_path / "cache"} if func is data.load else {}
            try:
                one_line_error(func, spec, match=pattern, **kwargs)
            except pytest.fail.Exception as e:  # say which case failed
                raise AssertionError(f"case {name} via {func.__name__}: {e}") from None


def test_check_source_accepts_valid_sources(tree, archive, tmp_path):
    root, _ = tree
    path, _ = archive
    data.check_source(f"folder:{root}")
    data.check_source(str(path))
    wrapped = make_tar(root, tmp_path / "w.tgz", wrap="top")
    data.check_source(f"folder:{wrapped}")


def test_truncated_archive(archive, tmp_path):
    path, _ = archive
    raw = path.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    one_line_error(data.check_source, f"folder:{cut}", match="cut.tar.gz.*corrupt or truncated")
    one_line_error(
        data.load, f"folder:{cut}", cache_dir=tmp_path / "c", match="corrupt or truncated"
    )


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_non_rgb_images_rejected(tree, tmp_path, mode):
    root, _ = tree
    bad = root / "train/moose/0001.png"
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    bad = bad.with_suffix(".jpg") if mode == "CMYK" else bad
    Image.new(mode, (8, 6)).save(bad, fmt)
    message = one_line_error(
        data.load, f"folder:{root}", cache_dir=tmp_path / "c", match=f"mode '{mode}'"
    )
    assert bad.relative_to(root).as_posix() in message and "RGB" in message


def test_mixed_sizes_rejected(tree, tmp_path):
    root, _ = tree
    Image.new("RGB", (5, 5)).save(root / "test/zebra/0001.png")
    one_line_error(
        data.load,
        f"folder:{root}",
        cache_dir=tmp_path / "c",
        match=r"test/zebra/0001.png is 5x5 but .*train/ant/0000.png is 8x6",
    )


@pytest.mark.parametrize("kind", ["garbage-png", "truncated-jpeg"])
def test_undecodable_image_named(tree, tmp_path, kind):
    root, _ = tree
    if kind == "garbage-png":
        bad = root / "train/zebra/0002.png"
        bad.write_bytes(b"\x89PNG definitely not an image")
    else:
        bad = root / "test/ant/0000.jpg"
        Image.fromarray(np.full((6, 8, 3), 99, np.uint8)).save(bad, "JPEG")
        bad.write_bytes(bad.read_bytes()[:-200])
    archive = make_tar(root, tmp_path / "bad.tar.gz")
    for spec in (f"folder:{root}", f"folder:{archive}"):
        message = one_line_error(
            data.load, spec, cache_dir=tmp_path / "c", match="cannot decode image"
        )
        assert bad.relative_to(root).as_posix() in message


def test_subset_arguments_validated(archive, tmp_path):
    path, _ = archive
    for bad in (0, -1, 2.5, True):
        one_line_error(data.load, f"folder:{path}", train_subset=bad, match="train_subset must be")
    one_line_error(
        data.load,
        f"folder:{path}",
        cache_dir=tmp_path / "c",
        test_subset=5,
        match="test_subset must be between 1 and 4",
    )


def test_subsets_are_balanced_and_cache_holds_full(archive, tmp_path):
    path, _ = archive
    cache = tmp_path / "cache"
    small = data.load(f"folder:{path}", cache_dir=cache, train_subset=5, test_subset=3)
    assert np.bincount(small.train_labels).tolist() == [2, 2, 1]
    assert np.bincount(small.test_labels).tolist() == [1, 1, 1]
    full = data.load(f"folder:{path}", cache_dir=cache)
    assert full.train_images.shape[0] == 9
    idx = data.balanced_subset(full.train_labels, 5, 3)
    np.testing.assert_array_equal(small.train_images, full.train_images[idx])


# ---------------------------------------------------------------------------------------------
# Subsets and batching
# ---------------------------------------------------------------------------------------------


def test_balanced_subset():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 1000)
    idx = data.balanced_subset(labels, 25, 10)
    assert np.all(np.diff(idx) > 0)  # sorted and unique
    assert np.bincount(labels[idx], minlength=10).tolist() == [3] * 5 + [2] * 5
    np.testing.assert_array_equal(idx, data.balanced_subset(labels.copy(), 25, 10))
    assert set(data.balanced_subset(labels, 10, 10)) <= set(idx)  # nested
    # A short class gives its shortfall to the others.
    skewed = np.array([0] * 2 + [1] * 10 + [2] * 10)
    sub = data.balanced_subset(skewed, 12, 3)
    assert np.bincount(skewed[sub]).tolist() == [2, 5, 5]
    assert len(data.balanced_subset(skewed, 22, 3)) == 22
    for bad in (0, 23):
        one_line_error(data.balanced_subset, skewed, bad, 3, match="between 1 and 22")
    one_line_error(data.balanced_subset, skewed, 3, 2, match=r"labels must lie in \[0, 2\)")


def _check_epoch(idx, mask, n, batch_size):
    assert idx.dtype == np.int32 and mask.dtype == np.float32
    assert idx.shape == mask.shape == (math.ceil(n / batch_size), batch_size)
    assert mask.sum() == n and set(np.unique(mask)) <= {0.0, 1.0}
    assert sorted(idx[mask == 1].tolist()) == list(range(n))
    assert np.all(idx[mask == 0] == 0)


def test_epoch_batches_properties():
    idx, mask = batches.epoch_batches(0, 0, 1000, 128)
    _check_epoch(idx, mask, 1000, 128)
    assert mask[-1].sum() == 1000 - 7 * 128 and mask[-1, -1] == 0
    same_idx, same_mask = batches.epoch_batches(0, 0, 1000, 128)
    np.testing.assert_array_equal(idx, same_idx)
    np.testing.assert_array_equal(mask, same_mask)
    assert not np.array_equal(idx, batches.epoch_batches(0, 1, 1000, 128)[0])
    assert not np.array_equal(idx, batches.epoch_batches(1, 0, 1000, 128)[0])
    assert not np.array_equal(idx.ravel()[:1000], np.arange(1000))  # actually shuffled
    # Resumable: epoch 3 does not depend on having drawn epochs 0..2 first.
    fresh = batches.epoch_batches(7, 3, 500, 64)[0]
    for e in range(4):
        last = batches.epoch_batches(7, e, 500, 64)[0]
    np.testing.assert_array_equal(fresh, last)


def test_epoch_batches_cifar_shape():
    idx, mask = batches.epoch_batches(42, 5, 50000, 128)
    _check_epoch(idx, mask, 50000, 128)
    assert idx.shape == (391, 128)
    assert mask[:-1].all() and mask[-1].sum() == 80
    idx, mask = batches.epoch_batches(0, 0, 5, 128)  # fewer examples than one batch
    _check_epoch(idx, mask, 5, 128)
    for bad in [(0, 0, 0, 8), (0, 0, 8, 0), (-1, 0, 8, 4)]:
        with pytest.raises(ValueError):
            batches.epoch_batches(*bad)


def test_eval_batches_in_order():
    idx, mask = batches.eval_batches(10, 4)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    assert idx.dtype == np.int32 and mask.dtype == np.float32
    idx, mask = batches.eval_batches(10000, 128)
    assert idx.shape == (79, 128) and mask.sum() == 10000


# ---------------------------------------------------------------------------------------------
# On-device preprocessing
# ---------------------------------------------------------------------------------------------


def _random_images(n, h=4, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_normalize_matches_formula():
    images = _random_images(16)
    images[0, 0, 0] = (0, 128, 255)
    out = jax.jit(batches.normalize)(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    mean = np.array([0.469, 0.481, 0.451])
    std = np.array([0.239, 0.245, 0.272])
    expected = (images / 255.0 - mean) / std
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out[0, 0, 0]), (np.array([0, 128, 255]) / 255 - mean) / std, rtol=1e-5
    )


def test_random_flip_per_image_and_key_dependent():
    images = _random_images(2000)
    mirrored = images[:, :, ::-1, :]
    flip = jax.jit(batches.random_flip)
    out = np.asarray(flip(jax.random.key(0), images))
    assert out.dtype == np.uint8 and out.shape == images.shape
    same = np.all(out == images, axis=(1, 2, 3))
    flipped = np.all(out == mirrored, axis=(1, 2, 3))
    assert np.all(same ^ flipped)  # each output is exactly the image or its mirror
    assert 0.4 < flipped.mean() < 0.6
    other = np.asarray(flip(jax.random.key(1), images))
    other_flipped = np.all(other == mirrored, axis=(1, 2, 3))
    assert not np.array_equal(flipped, other_flipped)
    np.testing.assert_array_equal(out, np.asarray(flip(jax.random.key(0), images)))


def test_augment_is_flip_then_normalize():
    images = _random_images(64)
    out = np.asarray(jax.jit(batches.augment)(jax.random.key(3), images))
    assert out.dtype == np.float32
    # Written out from REFERENCE section 1: x / 255, minus the mean, over the std per channel,
    # each image either as it is or mirrored left-right (along W).
    plain = (images / 255.0 - np.array([0.469, 0.481, 0.451])) / np.array([0.239, 0.245, 0.272])
    mirrored = plain[:, :, ::-1, :]
    as_is = np.array([np.allclose(o, p, atol=1e-5) for o, p in zip(out, plain, strict=True)])
    flipped = np.array([np.allclose(o, m, atol=1e-5)
                        for o, m in zip(out, mirrored, strict=True)])
    assert np.all(as_is ^ flipped)  # every image is exactly one of the two
    assert 16 <= flipped.sum() <= 48  # each flipped with probability 1/2 (+-4 sd of 64)


def test_tiny_dataset_fixture(tiny_dataset):
    assert tiny_dataset.train_images.shape == (120, 8, 8, 3)
    assert tiny_dataset.num_classes == 10
    assert np.bincount(tiny_dataset.test_labels).tolist() == [4] * 10


# ---------------------------------------------------------------------------------------------
# The real offline CIFAR-10 archive
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_cifar_archive(cifar_jpeg, cifar_archive, cifar_cache_dir):
    ds = cifar_jpeg
    assert ds.classes == CIFAR_CLASSES
    assert ds.train_images.shape == (50000, 32, 32, 3) and ds.test_images.shape == (
        10000,
        32,
        32,
        3,
    )
    assert np.bincount(ds.train_labels).tolist() == [5000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.checksum == CIFAR_SHA256
    # Exact per-channel statistics from value histograms (no 1.2 GB float64 copy).
    flat = ds.train_images.reshape(-1, 3)
    values = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(3):
        freq = np.bincount(flat[:, c], minlength=256) / flat.shape[0]
        mean.append(freq @ values)
        std.append(np.sqrt(freq @ (values - mean[-1]) ** 2))
    np.testing.assert_allclose(mean, CIFAR_MEAN, atol=5e-4)
    np.testing.assert_allclose(std, CIFAR_STD, atol=5e-4)

    start = time.perf_counter()
    again = data.load(f"folder:{cifar_archive}", cache_dir=cifar_cache_dir)
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"loading the CIFAR-10 cache took {elapsed:.2f} s"  # ~0.1-0.5 s here
    np.testing.assert_array_equal(again.test_images, ds.test_images)
