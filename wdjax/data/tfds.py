"""TensorFlow Datasets sources, ``tfds:NAME`` (``pip install 'wdjax[tfds]'``). An unprepared
dataset's download hosts are checked first (offline: one line within seconds, not after TFDS's
~3.5 min of retries). Splits stream in batches (``batch_size=-1`` aborts under mock_data)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from wdjax.data import ARRAY_KEYS, FOLDER_FORM, SPLITS, DataError, Dataset

HOST_TIMEOUT_S = 6.0  # lookup and connect per host; a reachable host answers in milliseconds
READ_BATCH = 10_000  # examples per streamed batch (30 MB of CIFAR images)
_NO_TF_NEEDED = f"a {FOLDER_FORM} source needs neither TensorFlow nor a download"


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def _failure(name: str, detail: str) -> DataError:
    return DataError(f"cannot load tfds:{name} ({detail[:300]}); {_NO_TF_NEEDED}")


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """Hide TFDS's warnings about the data directories of a dataset not prepared yet."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def download_addresses(urls: Iterable[str]) -> list[tuple[str, int]]:
    """The (host, port) pairs a download of `urls` connects to first (a proxy if one is set)."""
    proxies = urllib.request.getproxies()
    out: list[tuple[str, int]] = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            continue
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname):
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        port = parts.port or {"https": 443, "ftp": 21}.get(parts.scheme, 80)
        if parts.hostname and (parts.hostname, port) not in out:
            out.append((parts.hostname, port))
    return out


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a deadline (it has none of its own; a stuck resolver blocks ~20 s)."""
    result: list = []  # the addresses or the resolver's exception

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as e:  # noqa: BLE001 - reported below, whatever the resolver raised
            result.append(e)

    worker = threading.Thread(target=lookup, daemon=True, name=f"resolve {host}")
    worker.start()
    worker.join(timeout)
    if not result:
        raise OSError(f"resolving {host} took over {timeout:g} s")
    if isinstance(result[0], Exception):
        raise OSError(f"cannot resolve {host} ({type(result[0]).__name__}: {result[0]})")
    return result[0]


def check_address(host: str, port: int, timeout: float = HOST_TIMEOUT_S) -> None:
    """OSError (one line) unless `host` accepts a TCP connection on `port` within `timeout` s."""
    deadline = time.monotonic() + timeout
    errors = []
    for family, kind, proto, _, address in _resolve(host, port, timeout):
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"no answer within {timeout:g} s")
            break
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(left)
            try:
                sock.connect(address)
                return
            except OSError as e:
                errors.append(f"{address[0]}: {type(e).__name__}: {e}")
    raise OSError(f"cannot connect to {host}:{port} ({'; '.join(errors) or 'no address'})")


def check(name: str) -> tuple[Any, bool]:
    """The builder of ``tfds:NAME`` and whether it is prepared; DataError unless TensorFlow is
    present, TFDS knows the name, and the dataset is prepared or its hosts are reachable."""
    if not tensorflow_available():
        raise _failure(name, "TensorFlow is not installed: pip install 'wdjax[tfds]'")
    import tensorflow_datasets as tfds

    try:  # creating a builder needs no TensorFlow import and no network
        with _quiet_tfds():
            builder = tfds.builder(name)
            if builder.is_prepared():
                return builder, True
    except Exception as e:  # noqa: BLE001 - unknown name, bad version, broken install...
        first = (str(e).strip().splitlines() or [""])[0]  # not the list of every dataset
        raise _failure(name, f"{type(e).__name__}: {first}") from e
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # noqa: BLE001 - no checksums file: TFDS finds its URLs while preparing
        urls = []
    for host, port in download_addresses(urls):
        try:
            check_address(host, port)
        except OSError as e:
            raise _failure(name, f"not prepared in {builder.data_dir}, and its download "
                                 f"host is unreachable: {e}") from e
    return builder, False


def _read_split(builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    stream = builder.as_dataset(split=split, as_supervised=True).batch(READ_BATCH)
    batches = list(tfds.as_numpy(stream))
    if not batches:
        raise ValueError(f"split {split!r} is empty")
    images = np.ascontiguousarray(np.concatenate([x for x, _ in batches]), dtype=np.uint8)
    labels = np.ascontiguousarray(np.concatenate([y for _, y in batches]), dtype=np.int32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{split} images have shape {images.shape}; only RGB images "
                        "(N, H, W, 3) are supported")
    return images, labels


def _class_names(info: Any, num_classes: int) -> tuple[str, ...]:
    """The label feature's names, or ``"0", "1", ...`` when it has none."""
    try:
        names = info.features[(info.supervised_keys or (None, "label"))[1]].names
    except Exception:  # noqa: BLE001 - a label feature without names
        names = []
    return tuple(map(str, names)) or tuple(map(str, range(num_classes)))


def load(name: str) -> Dataset:
    """Prepare ``tfds:NAME`` if needed (after the host check) and read both splits."""
    builder, prepared = check(name)
    try:
        import tensorflow as tf

        with contextlib.suppress(Exception):  # else TF takes the GPU memory JAX needs
            tf.config.set_visible_devices([], "GPU")
        if not prepared:
            builder.download_and_prepare()
        arrays = {}
        for split in SPLITS:
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = _read_split(builder, split)
        num = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
        classes = _class_names(builder.info, num)
    except DataError as e:
        raise DataError(f"tfds:{name}: {e}") from e
    except Exception as e:  # noqa: BLE001 - any failure becomes one user-facing line
        raise _failure(name, f"{type(e).__name__}: {e}") from e
    digest = hashlib.sha256()
    for key in ARRAY_KEYS:
        digest.update(arrays[key].tobytes())
    digest.update("\0".join(classes).encode())
    return Dataset(**arrays, classes=classes, source=f"tfds:{name}", checksum=digest.hexdigest())
