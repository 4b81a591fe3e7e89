"""Image folders and archives: ``train/<class>/*.jpg|*.jpeg|*.png`` and ``test/<class>/...``.

A source is a directory or a ``.tar.gz``/``.tgz``/``.tar`` archive, optionally wrapping
both splits in one top-level folder. Classes are the sorted class-folder names; label ``i``
is ``classes[i]``; files are taken in sorted name order. Images are decoded once with
Pillow into uint8 arrays and cached (`wdjax.data.cache`) under a checksum of the source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from wdjax.data import cache
from wdjax.data.common import (
    ALLOWED_FORMS,
    ARCHIVE_EXTS,
    SPLITS,
    DataError,
    Dataset,
    make_dataset,
)

_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_EXPECTED = "expected train/<class>/*.jpg|*.jpeg|*.png and test/<class>/..."

# An entry is (relative path parts, is_regular_file); archive image bytes are keyed by parts.
Entry = tuple[tuple[str, ...], bool]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the images of a source are and which label each gets."""

    prefix: tuple[str, ...]  # wrapper folder inside the source, () if none
    classes: tuple[str, ...]
    files: dict[str, list[tuple[int, tuple[str, ...]]]]  # split -> sorted (label, rel parts)


def check_path(path: Path) -> Path:
    """`path` if it is a directory or an archive file; else DataError."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist; {ALLOWED_FORMS}")
    if path.is_dir():
        return path
    if not path.is_file() or not path.name.lower().endswith(ARCHIVE_EXTS):
        raise DataError(f"data path {path} is not a directory or a .tar.gz/.tgz/.tar archive")
    return path


def check(path: Path) -> None:
    """Validate a folder source without decoding images (an archive's member list is read,
    which also catches a truncated archive)."""
    path = check_path(path)
    entries = scan_directory(path) if path.is_dir() else scan_archive(path, read_images=False)[0]
    find_layout(entries, str(path))


def _clean_parts(name: str) -> tuple[str, ...] | None:
    """Normalised path components, or None for names to ignore (hidden, absolute, '..')."""
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or any(p == ".." or p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return parts


def scan_directory(root: Path) -> list[Entry]:
    """Every non-hidden folder and file under `root`, as relative parts."""
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        # Prune hidden folders in place so os.walk does not descend into them.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        entries.extend(((*rel, d), False) for d in dirnames)
        entries.extend(((*rel, f), True) for f in filenames if not f.startswith("."))
    return entries


def scan_archive(
    path: Path, *, read_images: bool
) -> tuple[list[Entry], dict[tuple[str, ...], bytes]]:
    """List an archive's members (one sequential pass) and optionally read image bytes."""
    entries: list[Entry] = []
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


def _split_prefix(entries: list[Entry], where: str) -> tuple[str, ...]:
    """() if train/ or test/ is at the top, else the one folder wrapping them."""
    tops = {parts[0] for parts, _ in entries}
    if tops & set(SPLITS):
        return ()
    if len(tops) == 1 and any(len(p) > 1 and p[1] in SPLITS for p, _ in entries):
        return (next(iter(tops)),)
    raise DataError(f"{where} is not an image folder/archive: no train/ or test/ folder "
                    f"({_EXPECTED})")


def _images_by_class(
    rel: list[Entry], where: str, prefix: tuple[str, ...]
) -> dict[str, dict[str, list[str]]]:
    """split -> class -> image file names, with every split present and non-empty."""
    present = {p[0] for p, _ in rel if p}
    missing = [s for s in SPLITS if s not in present]
    if missing:
        raise DataError(f"{where} has no {' or '.join(m + '/' for m in missing)} folder "
                        f"({_EXPECTED})")
    by_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for parts, is_file in rel:
        if is_file and len(parts) == 3 and parts[0] in by_split and (
                parts[2].lower().endswith(_IMAGE_EXTS)):
            by_split[parts[0]].setdefault(parts[1], []).append(parts[2])
    for split in SPLITS:
        if not by_split[split]:
            raise DataError(
                f"no class folders with images in {where}/{'/'.join(prefix + (split,))}/ "
                f"(expected {split}/<class>/*.jpg|*.jpeg|*.png)"
            )
    return by_split


def find_layout(entries: Iterable[Entry], where: str) -> Layout:
    """The layout of a scanned source; DataError naming what is missing or inconsistent."""
    entries = list(entries)
    prefix = _split_prefix(entries, where)
    rel = [(p[len(prefix):], f) for p, f in entries if p[: len(prefix)] == prefix]
    by_split = _images_by_class(rel, where, prefix)
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
        for split in SPLITS
    }
    return Layout(prefix=prefix, classes=classes, files=files)


def decode_image(name: str, source: bytes | Path) -> np.ndarray:
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


def decode_layout(
    layout: Layout, fetch: Callable[[tuple[str, ...]], bytes | Path], where: str
) -> dict[str, np.ndarray]:
    """Decode every image of `layout` (``fetch`` gives a file's bytes or path by its parts)."""
    # A single process: on 2 cores a process pool saved ~0.9 s of ~4.5 s for CIFAR-10 (and
    # forking a process that runs JAX is unsafe); threads were slower than serial.
    arrays: dict[str, np.ndarray] = {}
    shape: tuple[int, ...] | None = None
    first = ""
    for split in SPLITS:
        files = layout.files[split]
        images: np.ndarray | None = None
        labels = np.empty(len(files), dtype=np.int32)
        for i, (label, parts) in enumerate(files):
            name = f"{where}:{'/'.join(layout.prefix + parts)}"
            img = decode_image(name, fetch(layout.prefix + parts))
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
        assert images is not None  # find_layout guarantees at least one image per split
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    return arrays


def archive_checksum(path: Path) -> str:
    """sha256 of the archive's bytes."""
    digest = hashlib.sha256()  # ~0.02 s for the 19 MB CIFAR-10 archive
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read archive {path} ({type(e).__name__}: {e})") from e
    return digest.hexdigest()


def directory_checksum(root: Path, layout: Layout) -> str:
    """sha256 over the path, size and mtime of every image the layout uses."""
    # Cheap content identity over the images actually used (not every file under root, so a
    # cache dir or notes kept inside the data folder do not change the key): any added,
    # removed, resized or touched image changes it.
    digest = hashlib.sha256()
    for split in SPLITS:
        for _, parts in layout.files[split]:
            rel = layout.prefix + parts
            try:
                st = root.joinpath(*rel).stat()
            except OSError as e:
                raise DataError(f"cannot read image {root.joinpath(*rel)} ({e})") from e
            digest.update(f"{'/'.join(rel)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load(path: Path, source: str, cache_dir: str | os.PathLike) -> Dataset:
    """Decode the folder/archive at `path` (or read its cache under `cache_dir`)."""
    path = check_path(path)
    where = str(path)
    if path.is_dir():
        # Listing a directory is cheap, so its layout is validated even when cached.
        layout: Layout | None = find_layout(scan_directory(path), where)
        checksum = directory_checksum(path, layout)
    else:
        layout = None  # an archive is only read (one full pass) when there is no cache
        checksum = archive_checksum(path)
    cache_path = cache.cache_file(cache_dir, path, checksum)
    cached = cache.read(cache_path, checksum)
    if cached is not None:
        arrays, classes = cached
        return make_dataset(arrays, classes, source, checksum)

    if layout is not None:
        arrays = decode_layout(layout, lambda parts: path.joinpath(*parts), where)
    else:
        entries, blobs = scan_archive(path, read_images=True)
        layout = find_layout(entries, where)
        arrays = decode_layout(layout, blobs.__getitem__, where)
        del blobs
    cache.write(cache_path, arrays, layout.classes, checksum)
    return make_dataset(arrays, layout.classes, source, checksum)
