"""Folder sources: a directory or ``.tar.gz``/``.tgz``/``.tar`` archive of ``train/<class>/*.jpg|
*.jpeg|*.png`` and ``test/<class>/...`` (maybe in one wrapper folder); label i: the i-th sorted
class. Decoded once with Pillow, cached as an ``.npz`` keyed by a checksum of the source."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wdjax import storage
from wdjax.data import ALLOWED_FORMS, ARRAY_KEYS, SPLITS, DataError, Dataset, one_line

ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_EXPECTED = "expected train/<class>/*.jpg|*.jpeg|*.png and test/<class>/..."
CACHE_VERSION = 1  # bump when the decoded content or the cache layout changes

Entry = tuple[tuple[str, ...], bool]  # (path parts inside the source, is a regular file)


class Layout(NamedTuple):
    """Where the images of a source are and which label each gets."""

    prefix: tuple[str, ...]  # wrapper folder inside the source, () if none
    classes: tuple[str, ...]
    files: dict[str, list[tuple[int, tuple[str, ...]]]]  # split -> sorted (label, rel parts)


def check_path(path: Path) -> Path:
    """`path` if it is a directory or an archive file; else DataError."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist; {ALLOWED_FORMS}")
    if not path.is_dir() and not (path.is_file() and path.name.lower().endswith(ARCHIVE_EXTS)):
        raise DataError(f"data path {path} is not a directory or a .tar.gz/.tgz/.tar archive")
    return path


def check(path: Path) -> None:
    """Validate a folder source without decoding images (an archive's member list is read)."""
    path = check_path(path)
    find_layout(scan_directory(path) if path.is_dir() else scan_archive(path)[0], str(path))


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
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        entries.extend(((*rel, d), False) for d in dirnames)
        entries.extend(((*rel, f), True) for f in filenames if not f.startswith("."))
    return entries


def scan_archive(path: Path, read_images: bool = False
                 ) -> tuple[list[Entry], dict[tuple[str, ...], bytes]]:
    """An archive's members in one sequential pass, and its image bytes if `read_images`."""
    entries: list[Entry] = []
    blobs: dict[tuple[str, ...], bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:  # "r:*" sniffs the compression
            for member in tar:
                parts = _clean_parts(member.name)
                if parts is None:
                    continue
                entries.append((parts, member.isfile()))
                if read_images and member.isfile() and parts[-1].lower().endswith(_IMAGE_EXTS):
                    blobs[parts] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"cannot read archive {path}: corrupt or truncated "
                        f"({type(e).__name__}: {e})") from e
    return entries, blobs


def find_layout(entries: list[Entry], where: str) -> Layout:
    """The layout of a scanned source; DataError naming what is missing or inconsistent."""
    tops = {parts[0] for parts, _ in entries}
    if tops & set(SPLITS):
        prefix: tuple[str, ...] = ()
    elif len(tops) == 1 and any(len(p) > 1 and p[1] in SPLITS for p, _ in entries):
        prefix = (next(iter(tops)),)
    else:
        raise DataError(f"{where} is not an image folder/archive: no train/ or test/ folder "
                        f"({_EXPECTED})")
    rel = [(p[len(prefix):], f) for p, f in entries if p[:len(prefix)] == prefix]
    missing = [s + "/" for s in SPLITS if s not in {p[0] for p, _ in rel if p}]
    if missing:
        raise DataError(f"{where} has no {' or '.join(missing)} folder ({_EXPECTED})")
    found: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}  # split -> class -> names
    for parts, is_file in rel:
        if is_file and len(parts) == 3 and parts[0] in found and (
                parts[2].lower().endswith(_IMAGE_EXTS)):
            found[parts[0]].setdefault(parts[1], []).append(parts[2])
    for split in SPLITS:
        if not found[split]:
            raise DataError(f"no class folders with images in {where}/"
                            f"{'/'.join(prefix + (split,))}/ (expected {split}/<class>/*.jpg|"
                            "*.jpeg|*.png)")
    classes, test = tuple(sorted(found["train"])), set(found["test"])
    if test != set(classes):
        raise DataError(f"test classes differ from train classes in {where}: missing in test: "
                        f"{sorted(set(classes) - test) or 'none'}; not in train: "
                        f"{sorted(test - set(classes)) or 'none'}")
    files = {s: [(label, (s, c, name)) for label, c in enumerate(classes)
                 for name in sorted(found[s][c])] for s in SPLITS}
    return Layout(prefix, classes, files)


def decode_image(name: str, source: bytes | Path) -> np.ndarray:
    """Decode one image to a uint8 (H, W, 3) array; only mode 'RGB' is accepted."""
    from PIL import Image  # imported here so `import wdjax.data` stays light

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            if im.mode == "RGB":
                return np.asarray(im, dtype=np.uint8)
            mode = im.mode
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise DataError(f"cannot decode image {name} ({type(e).__name__}: {e})") from e
    raise DataError(f"image {name} has mode {mode!r}; only RGB images are supported")


def decode_layout(layout: Layout, fetch: Callable[[tuple[str, ...]], bytes | Path],
                  where: str) -> dict[str, np.ndarray]:
    """Decode every image of `layout` (``fetch`` gives a file's bytes or path by its parts)."""
    # Serial: a process pool saved ~0.9 of ~4.5 s (2 cores, CIFAR-10) and forking JAX is unsafe.
    arrays: dict[str, np.ndarray] = {}
    first = None  # (name, shape) of the first image: all must share its size
    for split in SPLITS:
        files = layout.files[split]
        for i, (_, parts) in enumerate(files):
            name = f"{where}:{'/'.join(layout.prefix + parts)}"
            img = decode_image(name, fetch(layout.prefix + parts))
            first = first or (name, img.shape)
            if img.shape != first[1]:
                raise DataError(f"image {name} is {img.shape[1]}x{img.shape[0]} but {first[0]} "
                                f"is {first[1][1]}x{first[1][0]}; all images must share one size")
            if i == 0:
                images = arrays[f"{split}_images"] = np.empty((len(files), *img.shape), np.uint8)
            images[i] = img
        arrays[f"{split}_labels"] = np.array([label for label, _ in files], np.int32)
    return arrays


def archive_checksum(path: Path) -> str:
    """sha256 of the archive's bytes (~0.02 s for the 19 MB CIFAR-10 archive)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read archive {path} ({type(e).__name__}: {e})") from e
    return digest.hexdigest()


def directory_checksum(root: Path, layout: Layout) -> str:
    """sha256 over the path, size and mtime of every image the layout uses (not every file:
    a cache or notes kept in the data folder do not change it)."""
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


def cache_file(cache_dir: str | os.PathLike, source_path: Path, checksum: str) -> Path:
    """``<stem>-<checksum[:16]>-v<version>.npz`` under `cache_dir`."""
    name = source_path.name
    ext = next((e for e in ARCHIVE_EXTS if name.lower().endswith(e)), "")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name[:len(name) - len(ext)]) or "data"
    return Path(cache_dir).expanduser() / f"{stem}-{checksum[:16]}-v{CACHE_VERSION}.npz"


def arrays_crc(arrays: dict[str, np.ndarray], classes: tuple[str, ...]) -> int:
    """crc32 over the four arrays and the class names (~0.03 s for CIFAR-10)."""
    crc = 0
    for key in ARRAY_KEYS:
        crc = zlib.crc32(np.ascontiguousarray(arrays[key]).data, crc)
    return zlib.crc32("\0".join(classes).encode(), crc)


def read_cache(path: Path, checksum: str) -> tuple[dict, tuple[str, ...]] | None:
    """The cached arrays and classes; None if absent or (with a warning) invalid."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in ARRAY_KEYS}
            classes = tuple(str(c) for c in z["classes"])
            if str(z["source_checksum"]) != checksum:
                raise ValueError("it belongs to another source")
            if arrays_crc(arrays, classes) != int(z["crc"]):
                raise ValueError("integrity checksum mismatch")
        for split in SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.dtype != np.uint8 or images.ndim != 4 or labels.dtype != np.int32 or (
                    labels.shape != images.shape[:1]):
                raise ValueError(f"unexpected {split} arrays")
    except Exception as e:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        warnings.warn(one_line(f"wdjax data cache {path} is unreadable or corrupt "
                               f"({type(e).__name__}: {e}); rebuilding it"),
                      RuntimeWarning, stacklevel=4)
        return None
    return arrays, classes


def write_cache(path: Path, arrays: dict[str, np.ndarray], classes: tuple[str, ...],
                checksum: str) -> None:
    """Write the cache atomically (readers see no cache or a whole one); failing only warns."""
    def save(f):  # streamed: no second in-memory copy of the dataset
        np.savez(f, **arrays, classes=np.array(classes, dtype=str),
                 source_checksum=np.array(checksum),
                 crc=np.array(arrays_crc(arrays, classes), dtype=np.uint64))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.atomic_write(path, save)
    except OSError as e:
        warnings.warn(one_line(f"could not write wdjax data cache {path} ({e}); continuing"),
                      RuntimeWarning, stacklevel=4)


def load(path: Path, source: str, cache_dir: str | os.PathLike) -> Dataset:
    """Decode the folder/archive at `path`, or read its cache under `cache_dir`."""
    path, where = check_path(path), str(path)
    layout = None  # an archive is read (one full pass) only when there is no cache
    if path.is_dir():  # listing a directory is cheap: its layout is checked even when cached
        layout = find_layout(scan_directory(path), where)
        checksum = directory_checksum(path, layout)
    else:
        checksum = archive_checksum(path)
    cache_path = cache_file(cache_dir, path, checksum)
    cached = read_cache(cache_path, checksum)
    if cached is not None:
        return Dataset(**cached[0], classes=cached[1], source=source, checksum=checksum)
    if layout is not None:
        arrays = decode_layout(layout, lambda parts: path.joinpath(*parts), where)
    else:
        entries, blobs = scan_archive(path, read_images=True)
        layout = find_layout(entries, where)
        arrays = decode_layout(layout, blobs.pop, where)  # pop: bytes freed as decoded
    write_cache(cache_path, arrays, layout.classes, checksum)
    return Dataset(**arrays, classes=layout.classes, source=source, checksum=checksum)
