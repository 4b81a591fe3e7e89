"""TFDS sources (`wdjax.data.tfds`) through the project's own `wdjax.data.load`.

* CIFAR-10 under ``tfds.testing.mock_data``: the real reading code, no download;
* offline: an unresolvable download host gives one line at once (no TFDS retries);
* the host check itself (local sockets), proxies, and failures turned into one line.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from wdjax import data
from wdjax.data import DataError
from wdjax.data import tfds as tfds_source

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")


# Without TensorFlow, tensorflow_datasets has no builders (nor testing.mock_data) at all.
needs_tensorflow = pytest.mark.skipif(
    not tfds_source.tensorflow_available(),
    reason="TensorFlow absent: pip install -e '.[dev]' (or 'wdjax[tfds]') to run the TFDS path")


def one_line_error(func, *args, match: str, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert "--data" not in message and "folder:PATH" in message  # the library names no flag
    return message


def _no_resolver(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def prepared_cifar10_metadata(tmp_path):
    """A TFDS data dir in which cifar10 looks prepared: what a real preparation writes
    (dataset_info.json, features.json with the class names), without the records."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=tmp_path / "tfds")
    builder.info.features["label"].names = list(CIFAR_CLASSES)
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    return tmp_path / "tfds"


@needs_tensorflow
def test_cifar10_under_mock_data_through_load(prepared_cifar10_metadata, monkeypatch):
    import tensorflow_datasets as tfds

    # Prepared data is never checked against the network: with no resolver it still loads.
    monkeypatch.setattr(socket, "getaddrinfo", _no_resolver)
    n = 23  # two streamed batches of 16 and a partial one
    monkeypatch.setattr(tfds_source, "READ_BATCH", 16)
    with tfds.testing.mock_data(num_examples=n, data_dir=prepared_cifar10_metadata):
        data.check_source("tfds:cifar10")
        ds = data.load("tfds:cifar10")
        small = data.load("tfds:cifar10", train_subset=10, test_subset=5)
    assert ds.source == "tfds:cifar10" and ds.classes == CIFAR_CLASSES
    for split in ("train", "test"):
        images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < 10
        assert not images.flags.writeable
    assert len(set(ds.train_images.reshape(n, -1).sum(1).tolist())) > 1  # not one image
    assert len(ds.checksum) == 64
    assert small.train_images.shape == (10, 32, 32, 3) and small.test_labels.shape == (5,)


@needs_tensorflow
def test_offline_download_fails_within_10_s_in_one_line(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    # Nothing prepared here (TFDS reads $TFDS_DATA_DIR into this constant at import).
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(socket, "getaddrinfo", _no_resolver)
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: True)

    def no_download(*args, **kwargs):
        raise AssertionError("TFDS was asked to download although its host is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    for func in (data.load, data.check_source):
        start = time.perf_counter()
        message = one_line_error(func, "tfds:cifar10", match="cannot load tfds:cifar10")
        assert time.perf_counter() - start <= 10  # the bound; TFDS retries 3.5 min
        assert "not prepared in" in message and str(tmp_path / "empty") in message
        assert "cannot resolve www.cs.toronto.edu" in message


def test_without_tensorflow_fails_fast_with_one_line(tmp_path, monkeypatch):
    # None in sys.modules makes TensorFlow unimportable even where it is installed.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    message = one_line_error(data.load, "tfds:cifar10", match="TensorFlow is not installed")
    assert "wdjax[tfds]" in message
    one_line_error(data.check_source, "tfds:cifar10", match="TensorFlow is not installed")
    monkeypatch.setenv(data.ENV_DATA, "")  # empty env var -> the default source
    one_line_error(data.load, None, match="cannot load tfds:cifar10")


_NO_RESOLVER_SITE = """import socket
def _no_resolver(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
socket.getaddrinfo = _no_resolver
"""


@needs_tensorflow
def test_offline_sweep_command_fails_within_10_s_in_one_line(tmp_path):
    """What a new user types on a machine whose resolver fails: one line on stderr, soon."""
    import os

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_NO_RESOLVER_SITE)
    env = {k: v for k, v in os.environ.items() if k != data.ENV_DATA}
    env.update(TFDS_DATA_DIR=str(tmp_path / "tfds"), PYTHONPATH=os.pathsep.join(
        filter(None, [str(tmp_path / "site"), env.get("PYTHONPATH")])))
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", "--name", "dxp", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                       env=env)
    assert time.perf_counter() - start <= 10  # the bound; TFDS retries 3.5 min
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot resolve www.cs.toronto.edu" in r.stderr
    assert not (tmp_path / "out").exists()


@needs_tensorflow
def test_unknown_dataset_is_one_short_line(monkeypatch):
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: True)
    message = one_line_error(data.check_source, "tfds:no_such_dataset_xyz",
                             match="DatasetNotFoundError: Dataset no_such_dataset_xyz not found")
    assert "abstract_reasoning" not in message  # TFDS's list of every dataset is cut


class _FakeBuilder:
    """A prepared builder whose splits are given arrays (no TensorFlow needed)."""

    def __init__(self, splits, names, fail=None):
        self.splits, self.fail = splits, fail
        label = types.SimpleNamespace(names=names)
        self.info = types.SimpleNamespace(supervised_keys=("image", "label"),
                                          features={"label": label})

    def is_prepared(self):
        return True

    def as_dataset(self, split, as_supervised):
        assert as_supervised
        if self.fail:
            raise self.fail
        x, y = self.splits[split]
        batched = types.SimpleNamespace()
        batched.batch = lambda size: [(x[i:i + size], y[i:i + size])
                                      for i in range(0, len(y), size)]
        return batched


def _use_fake_builder(monkeypatch, builder):
    import tensorflow_datasets as tfds

    fake_tf = types.ModuleType("tensorflow")
    fake_tf.config = types.SimpleNamespace(set_visible_devices=lambda devices, kind: None)
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    monkeypatch.setattr(tfds_source, "tensorflow_available", lambda: True)
    # raising=False: without TensorFlow, tfds has neither (these tests need no TensorFlow).
    monkeypatch.setattr(tfds, "builder", lambda name: builder, raising=False)
    monkeypatch.setattr(tfds, "as_numpy", lambda stream: stream, raising=False)


def test_streamed_batches_are_concatenated_and_converted(monkeypatch):
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
                  rng.integers(0, 3, n).astype(np.int64)) for s, n in (("train", 7), ("test", 3))}
    _use_fake_builder(monkeypatch, _FakeBuilder(splits, names=[]))
    monkeypatch.setattr(tfds_source, "READ_BATCH", 2)
    ds = data.load("tfds:mnist")
    assert ds.classes == ("0", "1", "2")  # no class names: label numbers, as strings
    assert ds.train_labels.dtype == np.int32
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(ds, f"{split}_images"), splits[split][0])
        np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), splits[split][1])


def test_reading_failure_becomes_one_line(monkeypatch):
    error = RuntimeError("Failed to read\nTraceback: record corrupt")
    _use_fake_builder(monkeypatch, _FakeBuilder({}, names=["a"], fail=error))
    message = one_line_error(data.load, "tfds:cifar10", match="cannot load tfds:cifar10")
    assert "RuntimeError: Failed to read Traceback: record corrupt" in message


# ---- the host check ---------------------------------------------------------------------


def test_check_address_connects_or_says_why(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        tfds_source.check_address("127.0.0.1", port, timeout=2)
    with pytest.raises(OSError, match=f"cannot connect to 127.0.0.1:{port}"):
        tfds_source.check_address("127.0.0.1", port, timeout=2)  # closed now: refused
    monkeypatch.setattr(socket, "getaddrinfo", _no_resolver)
    with pytest.raises(OSError, match="cannot resolve example.org .*gaierror"):
        tfds_source.check_address("example.org", 443, timeout=2)
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(5))
    try:
        with pytest.raises(OSError, match="resolving example.org took over 0.1 s"):
            tfds_source.check_address("example.org", 443, timeout=0.1)
    finally:
        release.set()


def test_check_address_keeps_one_deadline_over_all_addresses(monkeypatch):
    addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{i}", 443))
                 for i in (1, 2)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: addresses)
    tried = []

    def blackhole(sock, address):  # a dropped SYN: silence until the socket's timeout
        tried.append(address[0])
        time.sleep(sock.gettimeout())
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket.socket, "connect", blackhole)
    with pytest.raises(OSError, match=r"192.0.2.1: TimeoutError.*no answer within 0.2 s"):
        tfds_source.check_address("example.org", 443, timeout=0.2)
    assert tried == ["192.0.2.1"]  # the first address used the whole budget


def test_download_addresses_follow_proxies(monkeypatch):
    for var in ("https_proxy", "http_proxy", "no_proxy", "HTTPS_PROXY", "HTTP_PROXY",
                "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    urls = ["https://www.cs.toronto.edu/~kriz/a.tar.gz", "https://www.cs.toronto.edu/b",
            "http://example.org:8080/c"]
    assert tfds_source.download_addresses(urls) == [("www.cs.toronto.edu", 443),
                                                     ("example.org", 8080)]
    monkeypatch.setenv("https_proxy", "http://proxy.lab:3128")
    monkeypatch.setenv("no_proxy", "example.org")
    assert tfds_source.download_addresses(urls) == [("proxy.lab", 3128), ("example.org", 8080)]


def test_cli_names_the_flag_that_sets_the_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", "--name", "dxp", "--data",
                        f"folder:{tmp_path / 'nope'}", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "does not exist; allowed sources: tfds:NAME" in r.stderr
    assert r.stderr.strip().endswith("(set by --data or $WDJAX_DATA)")
