"""CIFAR-style image data: sources, decoding and caching.

Two kinds of source are understood:

* ``tfds:NAME`` -- a TensorFlow Datasets dataset (needs TensorFlow: ``pip install 'wdjax[tfds]'``).
* ``folder:PATH`` -- a directory or a ``.tar.gz``/``.tgz``/``.tar`` archive laid out as
  ``train/<class>/*.jpg|*.jpeg|*.png`` and ``test/<class>/...`` (optionally wrapped in one
  top-level folder). Classes are the sorted class-folder names; label ``i`` is ``classes[i]``.

Folder sources are decoded once with Pillow into uint8 arrays and cached as an uncompressed
``.npz`` keyed by a checksum of the source, so later runs load in about a second.

Batching and augmentation live in `wdjax.batches`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import os
import re
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

ENV_DATA = "WDJAX_DATA"
ENV_CACHE = "WDJAX_CACHE"
DEFAULT_SOURCE = "tfds:cifar10"

_SPLITS = ("train", "test")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")
# Bump when the decoded content or the cache layout changes, so old caches are not reused.
_CACHE_VERSION = 1
_ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_FOLDER_HINT = "folder:PATH"
_ALLOWED_FORMS = (
    "use tfds:NAME (e.g. tfds:cifar10) or folder:PATH (a directory or .tar.gz/.tgz/.tar "
    "archive holding train/<class>/ and test/<class>/ image folders)"
)
_TFDS_NAME = re.compile(r"[A-Za-z0-9_]+(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?")


class DataError(ValueError):
    """One-line, user-facing data problem (CLI prints str(e) and exits 2)."""

    def __init__(self, message: object) -> None:
        # The CLI prints str(e) as a single line; never let an embedded message break that.
        super().__init__(_one_line(str(message)))


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Decoded image classification data held in host memory (arrays are read-only).

    ``eq=False``: equality/hash are by identity, since comparing image arrays elementwise
    has no single truth value.
    """

    train_images: np.ndarray  # uint8 (N, H, W, 3)
    train_labels: np.ndarray  # int32 (N,)
    test_images: np.ndarray  # uint8 (M, H, W, 3)
    test_labels: np.ndarray  # int32 (M,)
    classes: tuple[str, ...]
    source: str  # the resolved spec, e.g. "folder:/abs/path.tar.gz"
    checksum: str  # hex digest identifying the source content

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are ``0 .. num_classes - 1``)."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(source={self.source!r}, train={self.train_images.shape}, "
            f"test={self.test_images.shape}, classes={len(self.classes)}, "
            f"checksum={self.checksum[:12]}...)"
        )


# --------------------------------------------------------------------------------------------
# Source specs
# --------------------------------------------------------------------------------------------


def resolve_source(spec: str | None) -> str:
    """Return the canonical source spec: ``tfds:NAME`` or ``folder:/absolute/path``.

    ``None`` (or an empty string) means ``$WDJAX_DATA`` if set, else :data:`DEFAULT_SOURCE`.
    A bare path that exists is accepted as ``folder:PATH``.
    """
    if spec is None or not spec.strip():
        spec = os.environ.get(ENV_DATA, "").strip() or DEFAULT_SOURCE
    spec = spec.strip()
    if spec.startswith("tfds:"):
        name = spec[len("tfds:") :].strip()
        if not _TFDS_NAME.fullmatch(name):
            raise DataError(f"invalid data source {spec!r}: bad TFDS name; {_ALLOWED_FORMS}")
        return f"tfds:{name}"
    if spec.startswith("folder:"):
        path = spec[len("folder:") :].strip()
        if not path:
            raise DataError(f"invalid data source {spec!r}: empty path; {_ALLOWED_FORMS}")
        return "folder:" + os.path.abspath(os.path.expanduser(path))
    if os.path.exists(os.path.expanduser(spec)):
        return "folder:" + os.path.abspath(os.path.expanduser(spec))
    raise DataError(f"invalid data source {spec!r}: {_ALLOWED_FORMS}")


def check_source(spec: str) -> None:
    """Validate a source cheaply (no image decoding); raise :class:`DataError` if unusable.

    Checks that a folder source exists and has ``train/<class>/`` and ``test/<class>/`` image
    folders with the same classes (an archive's member list is read, which also catches a
    truncated archive), and that TensorFlow is importable for ``tfds:`` sources.
    """
    kind, arg = resolve_source(spec).split(":", 1)
    if kind == "tfds":
        if not _tensorflow_available():
            raise DataError(_tfds_missing_message(arg))
        return
    path = _check_folder_path(Path(arg))
    if path.is_dir():
        _find_layout(_scan_directory(path), str(path))
    else:
        entries, _ = _scan_archive(path, read_images=False)
        _find_layout(entries, str(path))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            raise DataError(f"{name} must be a positive integer, got {value!r}")

    source = resolve_source(spec)
    kind, arg = source.split(":", 1)
    ds = _load_tfds(arg) if kind == "tfds" else _load_folder(Path(arg), source, cache_dir)

    changes = {}
    for split, value in (("train", train_subset), ("test", test_subset)):
        if value is None:
            continue
        images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        if value > len(labels):
            raise DataError(
                f"{split}_subset must be between 1 and {len(labels)} for {source}, got {value}"
            )
        idx = balanced_subset(labels, int(value), ds.num_classes)
        changes[f"{split}_images"] = _readonly(images[idx])
        changes[f"{split}_labels"] = _readonly(labels[idx])
    return dataclasses.replace(ds, **changes) if changes else ds


def _readonly(a: np.ndarray) -> np.ndarray:
    # A Dataset is shared (e.g. session fixtures, several runs in one process): forbid
    # accidental in-place edits of the decoded pixels.
    a.flags.writeable = False
    return a


def _make_dataset(
    arrays: dict[str, np.ndarray], classes: tuple[str, ...], source: str, checksum: str
) -> Dataset:
    return Dataset(
        train_images=_readonly(arrays["train_images"]),
        train_labels=_readonly(arrays["train_labels"]),
        test_images=_readonly(arrays["test_images"]),
        test_labels=_readonly(arrays["test_labels"]),
        classes=tuple(classes),
        source=source,
        checksum=checksum,
    )


# ---- TFDS ------------------------------------------------------------------------------------


def _tensorflow_available() -> bool:
    # find_spec is cheap and never imports TF; tfds without TF would otherwise fail late
    # (or try to download) before telling the user what is missing.
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def _tfds_missing_message(name: str) -> str:
    return (
        f"cannot load tfds:{name} (TensorFlow is not installed: pip install 'wdjax[tfds]'), "
        f"or use --data folder:PATH (e.g. {_FOLDER_HINT})"
    )


def _load_tfds(name: str) -> Dataset:
    if not _tensorflow_available():
        raise DataError(_tfds_missing_message(name))
    try:
        import tensorflow as tf

        # TF would otherwise reserve (almost) all accelerator memory that JAX needs; this
        # fails harmlessly if TF was already initialised elsewhere.
        with contextlib.suppress(Exception):
            tf.config.set_visible_devices([], "GPU")
        import tensorflow_datasets as tfds

        (train, test), info = tfds.load(
            name, split=["train", "test"], batch_size=-1, as_supervised=True, with_info=True
        )
        train_x, train_y = tfds.as_numpy(train)
        test_x, test_y = tfds.as_numpy(test)
        label_key = (info.supervised_keys or (None, "label"))[1]
        try:
            names = list(info.features[label_key].names)
        except Exception:  # noqa: BLE001 - no class names: fall back to "0", "1", ...
            names = None
    except Exception as e:  # noqa: BLE001 - any failure becomes one user-facing line
        detail = _one_line(f"{type(e).__name__}: {e}")[:300]
        raise DataError(
            f"cannot load tfds:{name} ({detail}), or use --data folder:PATH (e.g. {_FOLDER_HINT})"
        ) from e

    arrays = {
        "train_images": np.ascontiguousarray(train_x, dtype=np.uint8),
        "train_labels": np.ascontiguousarray(train_y, dtype=np.int32),
        "test_images": np.ascontiguousarray(test_x, dtype=np.uint8),
        "test_labels": np.ascontiguousarray(test_y, dtype=np.int32),
    }
    for split in _SPLITS:
        shape = arrays[f"{split}_images"].shape
        if len(shape) != 4 or shape[-1] != 3:
            raise DataError(
                f"tfds:{name} {split} images have shape {shape}; only RGB images (N, H, W, 3) "
                "are supported"
            )
    num = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
    classes = tuple(str(c) for c in names) if names else tuple(str(i) for i in range(num))
    digest = hashlib.sha256()
    for key in _ARRAY_KEYS:
        digest.update(arrays[key].tobytes())
    digest.update("\0".join(classes).encode())
    return _make_dataset(arrays, classes, f"tfds:{name}", digest.hexdigest())


# ---- folder / archive ------------------------------------------------------------------------

# An entry is (relative path parts, is_regular_file); archive image bytes are keyed by parts.
_Entry = tuple[tuple[str, ...], bool]


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(_ARCHIVE_EXTS)


def _check_folder_path(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"data path {path} does not exist; {_ALLOWED_FORMS}")
    if path.is_dir():
        return path
    if not path.is_file() or not _is_archive(path):
        raise DataError(f"data path {path} is not a directory or a .tar.gz/.tgz/.tar archive")
    return path


def _clean_parts(name: str) -> tuple[str, ...] | None:
    """Normalised path components, or None for names to ignore (hidden, absolute, '..')."""
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or any(p == ".." or p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return parts


def _scan_directory(root: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        # Prune hidden folders in place so os.walk does not descend into them.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        entries.extend(((*rel, d), False) for d in dirnames)
        entries.extend(((*rel, f), True) for f in filenames if not f.startswith("."))
    return entries


def _scan_archive(
    path: Path, *, read_images: bool
) -> tuple[list[_Entry], dict[tuple[str, ...], bytes]]:
    """List an archive's members (one sequential pass) and optionally read image bytes."""
    entries: list[_Entry] = []
    blobs: dict[tuple[str, ...], bytes] = {}
    try:
        # "r:*" sniffs the compression; the stream is read once, members decoded in memory.
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = _clean_parts(member.name)
                if parts is None:
                    continue
                entries.append((parts, member.isfile()))
                if read_images and member.isfile() and parts[-1].lower().endswith(_IMAGE_EXTS):
                    fileobj = tar.extractfile(member)
                    if fileobj is not None:
                        blobs[parts] = fileobj.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"cannot read archive {path}: corrupt or truncated ({type(e).__name__}: {e})"
        ) from e
    return entries, blobs


@dataclasses.dataclass(frozen=True)
class _Layout:
    prefix: tuple[str, ...]  # wrapper folder inside the source, () if none
    classes: tuple[str, ...]
    files: dict[str, list[tuple[int, tuple[str, ...]]]]  # split -> sorted (label, rel parts)


def _find_layout(entries: Iterable[_Entry], where: str) -> _Layout:
    entries = list(entries)
    tops = {parts[0] for parts, _ in entries}
    if tops & set(_SPLITS):
        prefix: tuple[str, ...] = ()
    elif len(tops) == 1 and any(len(p) > 1 and p[1] in _SPLITS for p, _ in entries):
        prefix = (next(iter(tops)),)  # a single top-level folder wrapping train/ and test/
    else:
        raise DataError(
            f"{where} is not an image folder/archive: no train/ or test/ folder "
            "(expected train/<class>/*.jpg|*.jpeg|*.png and test/<class>/...)"
        )
    rel = [(p[len(prefix) :], f) for p, f in entries if p[: len(prefix)] == prefix]
    present = {p[0] for p, _ in rel if p}
    missing = [s for s in _SPLITS if s not in present]
    if missing:
        raise DataError(
            f"{where} has no {' or '.join(m + '/' for m in missing)} folder "
            "(expected train/<class>/*.jpg|*.jpeg|*.png and test/<class>/...)"
        )
    by_split: dict[str, dict[str, list[str]]] = {s: {} for s in _SPLITS}
    for parts, is_file in rel:
        if (
            is_file
            and len(parts) == 3
            and parts[0] in by_split
            and parts[2].lower().endswith(_IMAGE_EXTS)
        ):
            by_split[parts[0]].setdefault(parts[1], []).append(parts[2])
    for split in _SPLITS:
        if not by_split[split]:
            raise DataError(
                f"no class folders with images in {where}/{'/'.join(prefix + (split,))}/ "
                f"(expected {split}/<class>/*.jpg|*.jpeg|*.png)"
            )
    classes = tuple(sorted(by_split["train"]))
    test_classes = set(by_split["test"])
    if test_classes != set(classes):
        lacking = sorted(set(classes) - test_classes)
        extra = sorted(test_classes - set(classes))
        raise DataError(
            f"test classes differ from train classes in {where}: "
            f"missing in test: {lacking or 'none'}; not in train: {extra or 'none'}"
        )
    files = {
        split: [
            (label, (split, cls, fname))
            for label, cls in enumerate(classes)
            for fname in sorted(by_split[split][cls])
        ]
        for split in _SPLITS
    }
    return _Layout(prefix=prefix, classes=classes, files=files)


def _decode_image(name: str, source: bytes | Path) -> np.ndarray:
    """Decode one image to a uint8 (H, W, 3) array; only mode 'RGB' is accepted."""
    from PIL import Image  # imported here so `import wdjax.data` stays light

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            if im.mode != "RGB":
                raise DataError(f"image {name} has mode {im.mode!r}; only RGB images are supported")
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise DataError(f"cannot decode image {name} ({type(e).__name__}: {e})") from e


def _decode_layout(
    layout: _Layout, fetch: Callable[[tuple[str, ...]], bytes | Path], where: str
) -> dict[str, np.ndarray]:
    # A single process: on 2 cores a process pool saved ~0.9 s of ~4.5 s for CIFAR-10 (and
    # forking a process that runs JAX is unsafe); threads were slower than serial.
    arrays: dict[str, np.ndarray] = {}
    shape: tuple[int, ...] | None = None
    first = ""
    for split in _SPLITS:
        files = layout.files[split]
        images: np.ndarray | None = None
        labels = np.empty(len(files), dtype=np.int32)
        for i, (label, parts) in enumerate(files):
            name = f"{where}:{'/'.join(layout.prefix + parts)}"
            img = _decode_image(name, fetch(layout.prefix + parts))
            if shape is None:
                shape, first = img.shape, name
            elif img.shape != shape:
                raise DataError(
                    f"image {name} is {img.shape[1]}x{img.shape[0]} but {first} is "
                    f"{shape[1]}x{shape[0]}; all images must share one size"
                )
            if images is None:
                images = np.empty((len(files), *shape), dtype=np.uint8)
            images[i] = img
            labels[i] = label
        assert images is not None  # _find_layout guarantees at least one image per split
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    return arrays


def _archive_checksum(path: Path) -> str:
    digest = hashlib.sha256()  # ~0.02 s for the 19 MB CIFAR-10 archive
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read archive {path} ({type(e).__name__}: {e})") from e
    return digest.hexdigest()


def _directory_checksum(root: Path, layout: _Layout) -> str:
    # Cheap content identity over the images actually used (not every file under root, so a
    # cache dir or notes kept inside the data folder do not change the key): any added,
    # removed, resized or touched image changes it.
    digest = hashlib.sha256()
    for split in _SPLITS:
        for _, parts in layout.files[split]:
            rel = layout.prefix + parts
            try:
                st = root.joinpath(*rel).stat()
            except OSError as e:
                raise DataError(f"cannot read image {root.joinpath(*rel)} ({e})") from e
            digest.update(f"{'/'.join(rel)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _load_folder(path: Path, source: str, cache_dir: str | os.PathLike | None) -> Dataset:
    path = _check_folder_path(path)
    where = str(path)
    if path.is_dir():
        # Listing a directory is cheap, so its layout is validated even when cached.
        layout: _Layout | None = _find_layout(_scan_directory(path), where)
        checksum = _directory_checksum(path, layout)
    else:
        layout = None  # an archive is only read (one full pass) when there is no cache
        checksum = _archive_checksum(path)
    cache_path = _cache_file(cache_dir, path, checksum)
    cached = _read_cache(cache_path, checksum)
    if cached is not None:
        arrays, classes = cached
        return _make_dataset(arrays, classes, source, checksum)

    if layout is not None:
        arrays = _decode_layout(layout, lambda parts: path.joinpath(*parts), where)
    else:
        entries, blobs = _scan_archive(path, read_images=True)
        layout = _find_layout(entries, where)
        arrays = _decode_layout(layout, blobs.__getitem__, where)
        del blobs
    _write_cache(cache_path, arrays, layout.classes, checksum)
    return _make_dataset(arrays, layout.classes, source, checksum)


# ---- cache -----------------------------------------------------------------------------------


def _cache_file(cache_dir: str | os.PathLike | None, path: Path, checksum: str) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get(ENV_CACHE, "").strip() or "~/.cache/wdjax"
    name = path.name
    for ext in _ARCHIVE_EXTS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "data"
    digest = checksum[:16]
    return Path(cache_dir).expanduser() / f"{stem}-{digest}-v{_CACHE_VERSION}.npz"


def _arrays_crc(arrays: dict[str, np.ndarray], classes: Iterable[str]) -> int:
    # crc32 runs at several GB/s (~0.03 s for CIFAR-10) and detects truncation/bit rot.
    crc = 0
    for key in _ARRAY_KEYS:
        crc = zlib.crc32(np.ascontiguousarray(arrays[key]).data, crc)
    return zlib.crc32("\0".join(classes).encode(), crc)


def _read_cache(
    cache_path: Path, checksum: str
) -> tuple[dict[str, np.ndarray], tuple[str, ...]] | None:
    """The cached arrays and classes, or None if absent or invalid (warns if invalid)."""
    if not cache_path.exists():
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in _ARRAY_KEYS}
            classes = tuple(str(c) for c in z["classes"])
            stored_source = str(z["source_checksum"])
            stored_crc = int(z["crc"])
        if stored_source != checksum:
            raise ValueError("it belongs to another source")
        if _arrays_crc(arrays, classes) != stored_crc:
            raise ValueError("integrity checksum mismatch")
        for split in _SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if (
                images.dtype != np.uint8
                or images.ndim != 4
                or labels.dtype != np.int32
                or labels.shape != images.shape[:1]
            ):
                raise ValueError(f"unexpected {split} arrays")
    except Exception as e:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        warnings.warn(
            _one_line(
                f"wdjax data cache {cache_path} is unreadable or corrupt "
                f"({type(e).__name__}: {e}); rebuilding it"
            ),
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return arrays, classes


def _write_cache(
    cache_path: Path, arrays: dict[str, np.ndarray], classes: tuple[str, ...], checksum: str
) -> None:
    """Write the cache atomically; failure to cache only warns (the data is already loaded)."""
    tmp_name = None
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory so os.replace is an atomic rename: concurrent
        # readers see either no cache or a complete one, never a partial write.
        with tempfile.NamedTemporaryFile(
            dir=cache_path.parent, prefix=cache_path.name + ".", suffix=".tmp", delete=False
        ) as f:
            tmp_name = f.name
            np.savez(
                f,
                **arrays,
                classes=np.array(classes, dtype=str),
                source_checksum=np.array(checksum),
                crc=np.array(_arrays_crc(arrays, classes), dtype=np.uint64),
            )
        # NamedTemporaryFile creates mode 0600; a cache is plain data others may share.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, cache_path)
        tmp_name = None
    except OSError as e:
        warnings.warn(
            _one_line(f"could not write wdjax data cache {cache_path} ({e}); continuing"),
            RuntimeWarning,
            stacklevel=4,
        )
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Subsets (host side, numpy)
# --------------------------------------------------------------------------------------------


def balanced_subset(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Sorted indices of a deterministic class-balanced subset of size ``n``.

    Each class gets ``n // num_classes`` examples (the first ones in index order), the
    remainder going one each to the first classes; a class with too few examples gives its
    shortfall to the others. The same ``(labels, n)`` always gives the same indices, and a
    smaller subset is contained in a larger one whenever no class runs short.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {labels.shape}")
    if not 1 <= n <= len(labels):
        raise DataError(f"subset size must be between 1 and {len(labels)}, got {n}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
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
