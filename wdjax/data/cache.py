"""The decoded-array cache: one uncompressed ``.npz`` per source content.

A cache file is named ``<stem>-<checksum[:16]>-v<version>.npz`` and holds the four arrays,
the class names, the full source checksum and a crc32 of the contents, so a file from
another source, a truncated write or bit rot is detected and the cache rebuilt. Reading a
bad cache only warns; failing to write one only warns (the data is already decoded).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wdjax.data.common import ARCHIVE_EXTS, ARRAY_KEYS, SPLITS, one_line

# Bump when the decoded content or the cache layout changes, so old caches are not reused.
CACHE_VERSION = 1

Arrays = dict[str, np.ndarray]


def cache_file(cache_dir: str | os.PathLike, source_path: Path, checksum: str) -> Path:
    """Where the cache of `source_path` with content `checksum` lives under `cache_dir`."""
    name = source_path.name
    for ext in ARCHIVE_EXTS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "data"
    return Path(cache_dir).expanduser() / f"{stem}-{checksum[:16]}-v{CACHE_VERSION}.npz"


def arrays_crc(arrays: Arrays, classes: Iterable[str]) -> int:
    """crc32 over the four arrays and the class names."""
    # crc32 runs at several GB/s (~0.03 s for CIFAR-10) and detects truncation/bit rot.
    crc = 0
    for key in ARRAY_KEYS:
        crc = zlib.crc32(np.ascontiguousarray(arrays[key]).data, crc)
    return zlib.crc32("\0".join(classes).encode(), crc)


def _check_arrays(arrays: Arrays) -> None:
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if (
            images.dtype != np.uint8
            or images.ndim != 4
            or labels.dtype != np.int32
            or labels.shape != images.shape[:1]
        ):
            raise ValueError(f"unexpected {split} arrays")


def read(cache_path: Path, checksum: str) -> tuple[Arrays, tuple[str, ...]] | None:
    """The cached arrays and classes, or None if absent or invalid (warns if invalid)."""
    if not cache_path.exists():
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in ARRAY_KEYS}
            classes = tuple(str(c) for c in z["classes"])
            stored_source = str(z["source_checksum"])
            stored_crc = int(z["crc"])
        if stored_source != checksum:
            raise ValueError("it belongs to another source")
        if arrays_crc(arrays, classes) != stored_crc:
            raise ValueError("integrity checksum mismatch")
        _check_arrays(arrays)
    except Exception as e:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        warnings.warn(
            one_line(
                f"wdjax data cache {cache_path} is unreadable or corrupt "
                f"({type(e).__name__}: {e}); rebuilding it"
            ),
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return arrays, classes


def write(cache_path: Path, arrays: Arrays, classes: tuple[str, ...], checksum: str) -> None:
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
                crc=np.array(arrays_crc(arrays, classes), dtype=np.uint64),
            )
        # NamedTemporaryFile creates mode 0600; a cache is plain data others may share.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, cache_path)
        tmp_name = None
    except OSError as e:
        warnings.warn(
            one_line(f"could not write wdjax data cache {cache_path} ({e}); continuing"),
            RuntimeWarning,
            stacklevel=4,
        )
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
