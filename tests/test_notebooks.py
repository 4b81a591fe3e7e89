"""The example notebooks run top to bottom, and are stored without outputs.

Each notebook is executed in a fresh ``python3`` kernel with ``WDJAX_NOTEBOOK_SCALE=tiny``,
from the ``notebooks/`` directory, writing under a pytest temp dir
(``WDJAX_NOTEBOOK_OUT``). Any cell that raises fails the test. The executed copies live in
memory only: the stored ``.ipynb`` files are never rewritten.

On a CPU, XLA compilation dominates these runs, so the kernels share a persistent
compilation cache (the second notebook reuses the first one's programs) and compile without
LLVM optimisation: the models are 4 channels wide, so the slower code costs far less than the
optimisation would.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from wdjax import data

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ("01_compose_decay.ipynb", "02_sweep_results.ipynb")
ARCHIVE = Path("shared", "data", "cifar10-jpeg.tar.gz")
CELL_TIMEOUT_S = 300


def _data_source() -> str | None:
    """What the notebooks should read, as an absolute spec; None if nothing is available.

    A relative ``folder:`` path in ``$WDJAX_DATA`` is taken from this process's directory
    (or the repo, or its parent) because the kernels run from ``notebooks/``.
    """
    spec = os.environ.get(data.ENV_DATA, "").strip()
    if spec:
        path = spec.removeprefix("folder:")
        if spec.startswith("folder:") and not Path(path).expanduser().is_absolute():
            for root in (Path.cwd(), REPO, REPO.parent):
                if (root / path).exists():
                    return f"folder:{(root / path).resolve()}"
        return spec
    for root in (REPO.parent, REPO):
        if (root / ARCHIVE).is_file():
            return f"folder:{root / ARCHIVE}"
    if importlib.util.find_spec("tensorflow") is not None:
        return data.DEFAULT_SOURCE
    return None


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every notebook kernel in this module."""
    source = _data_source()
    if source is None:
        pytest.skip(
            f"no CIFAR-10: set {data.ENV_DATA}, provide {ARCHIVE} next to the repo, "
            "or install tensorflow for tfds:cifar10"
        )
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(
        tmp_path_factory.mktemp("jax-compilation-cache")
    )
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "WDJAX_NOTEBOOK_SCALE": "tiny",
        data.ENV_DATA: source,
        "PYTHONPATH": pythonpath,  # this checkout's wdjax, whatever is installed
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def _execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run a stored notebook in memory; nbclient raises CellExecutionError on a failing cell."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute(env=env)
    return nb


def _cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.get("id") == cell_id)


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_notebook_is_cleared(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for cell in code:
        assert cell.outputs == [], f"{name}, cell {cell.get('id')}: stored with outputs"
        assert cell.execution_count is None, f"{name}, cell {cell.get('id')}: execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.slow
def test_compose_decay_notebook_runs(kernel_env: dict[str, str], tmp_path: Path) -> None:
    nb = _execute("01_compose_decay.ipynb", dict(kernel_env, WDJAX_NOTEBOOK_OUT=str(tmp_path)))
    run = tmp_path / "01_compose_decay" / "ixp2"
    for name in ("metrics.jsonl", "summary.json", "accuracy.png", "norms.png", "dead_units.png"):
        assert (run / name).is_file(), name
    assert _images(nb) >= 7  # 4 figures drawn in the notebook + the run's 3 PNGs
    # the restored checkpoint gives the dead-unit counts metrics.jsonl recorded
    assert _text(_cell(nb, "dead")).count("same as metrics.jsonl: True") == 3
    assert "decay on fc6's kernel == p * M: True" in _text(_cell(nb, "topo"))


@pytest.mark.slow
def test_sweep_notebook_runs_then_reloads(kernel_env: dict[str, str], tmp_path: Path) -> None:
    nb = _execute("02_sweep_results.ipynb", dict(kernel_env, WDJAX_NOTEBOOK_OUT=str(tmp_path)))
    sweeps = tmp_path / "02_sweep_results" / "sweeps"
    for family, runs in (("dxp", ("dxp3", "dxp4")), ("hxp", ("hxp3", "hxp4"))):
        summary = (sweeps / family / "summary.csv").read_text()
        for run in runs:
            assert f"\n{run}," in summary
            assert (sweeps / family / run / "summary.json").is_file()
    assert "families found: ['dxp', 'hxp']" in _text(_cell(nb, "run"))
    assert _images(nb) >= 4

    # WDJAX_RESULTS: the same notebook only reads that sweep, trains nothing.
    reload_out = tmp_path / "reload"
    nb = _execute(
        "02_sweep_results.ipynb",
        dict(kernel_env, WDJAX_NOTEBOOK_OUT=str(reload_out), WDJAX_RESULTS=str(sweeps)),
    )
    text = _text(_cell(nb, "run"))
    assert f"loading the sweep in {sweeps.resolve()}" in text
    assert "families found: ['dxp', 'hxp']" in text
    assert not (reload_out / "02_sweep_results" / "sweeps").exists()
    assert _images(nb) >= 4
