"""Run records on disk: atomic files, JSON lines (readers skip a torn line), name checks, locks.
A run's records (summary.json last: finished) are in ``<out>/<name>/`` or its ``seed<k>/``."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")
_SEED_DIR = re.compile(r"seed(0|[1-9][0-9]*)")
RECORD_FILES = ("config.json", "metrics.jsonl", "summary.json")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file


class RunError(ValueError):
    """A one-line, user-facing problem with a run's name or directory."""


def jsonable(x: Any) -> Any:
    """`x` as plain JSON values (arrays to lists; NaN/inf as strings)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if hasattr(x, "__array__"):  # numpy and JAX arrays and scalars
        x = np.asarray(x)
        return jsonable(x.tolist()) if x.ndim else jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no NaN/inf; keep them readable and reversible
    return x


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj))


def atomic_write(path: str | os.PathLike,
                 data: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename; a
    callable `data` writes to the (binary) file itself, so large payloads stream."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "w" if isinstance(data, str) else "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(jsonable(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one line; a torn line from an earlier crash is cut off first."""
    path = Path(path)
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                rewrite_jsonl(path, read_jsonl(path))
    with open(path, "a") as f:
        f.write(dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete lines of a JSON-lines file; a torn or garbled line is skipped."""
    rows = []
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def rewrite_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write(path, "".join(dumps(r) + "\n" for r in rows))


def check_name(name: str) -> str:
    """A run name is one path component: letters, digits, '.', '_', '-'; not '.' or '..'."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise RunError(f"invalid run name {name!r}: use letters, digits, '.', '_' and '-' "
                       "(no path separators, not starting with '.' or '-')")
    return name


def check_writable(out: str | os.PathLike, need_bytes: int = 16 << 20) -> Path:
    """Fail early, creating nothing, if `out` (or its nearest existing parent) is unwritable."""
    out = Path(out).resolve()
    probe = next(p for p in (out, *out.parents) if p.exists())
    if not probe.is_dir():
        raise RunError(f"output path {out} is not a directory ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"output directory {probe} is not writable")
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise RunError(f"output directory {probe} has only {free >> 20} MiB free; "
                       f"need at least {need_bytes >> 20} MiB")
    return out


def run_state(run_dir: Path) -> str:
    """``'new'``, ``'finished'`` (summary.json exists) or ``'partial'``; hidden entries (the
    temporary of a killed first write) do not count."""
    if not run_dir.exists() or all(p.name.startswith(".") for p in run_dir.iterdir()):
        return "new"
    return "finished" if (run_dir / "summary.json").exists() else "partial"


def seed_dir(run_dir: str | os.PathLike, seed_index: int) -> Path:
    """Where seed `seed_index` (0, 1, ...) of a multi-seed run keeps its records."""
    return Path(run_dir) / f"seed{seed_index}"


def seed_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """The record directories of a run's seeds, in seed order: ``[run_dir]`` when it holds
    records itself (`RECORD_FILES`), else its ``seed<k>/`` by number; ``[]`` if none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    if any((run_dir / f).exists() for f in RECORD_FILES):
        return [run_dir]
    found = [(int(m[1]), p) for p in run_dir.iterdir()
             if p.is_dir() and (m := _SEED_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name; [] if unreadable."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, /proc field 22); None if unknown."""
    stat = _stat(pid)
    return stat[19] if len(stat) > 19 else None


def _holder(path: Path) -> int:
    """The live pid holding lock file `path` (``pid start_time``), or 0 when it is stale (gone,
    a zombie, or a live pid with another start time: reused)."""
    try:
        pid, *start = path.read_text().split()
        pid = int(pid)
    except (OSError, ValueError):
        return 0
    if pid == os.getpid():
        return 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return 0
    except PermissionError:
        pass  # alive, another user's
    stat = _stat(pid)
    if stat[:1] == ["Z"]:
        return 0
    now = stat[19] if len(stat) > 19 else None  # start_time(pid), from the same read
    return 0 if start and now is not None and start[0] != now else pid


@contextlib.contextmanager
def lock(directory: str | os.PathLike, what: str = "sweep",
         name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on `directory` (or on one entry: file `name` in it); a second
    holder gets a one-line RunError, a stale lock (`_holder`) is taken over."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    label = directory if name == ".lock" else directory / name.strip(".").removesuffix(".lock")
    me = f"{os.getpid()} {start_time(os.getpid()) or ''}".strip()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if pid := _holder(path):
                raise RunError(f"{label} is locked by another {what} (pid {pid}); "
                               "wait for it or stop it") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise RunError(f"could not lock {label}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == me:
                path.unlink()
