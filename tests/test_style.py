"""The code base stays ruff-clean (the style check runs with the tests)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    r = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


SOURCE_DIRS = ("wdjax", "experiments", "benchmarks")
MAX_FUNCTION_LINES = 60
LAYERS = ("storage", "decay", "cpu", "models", "layers", "schemes", "data", "analysis",
          "training")
"""wdjax's packages, bottom to top: a module imports only from its own package or below."""


def _sources():
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Every ``wdjax.X`` a module imports, at the top or inside a function."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module + "." + a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith("wdjax.") and n.count(".")}
        out |= {n for n in names if n.split(".")[0] in ("experiments", "benchmarks")}
    return out


def test_imports_only_go_down():
    up = {}
    for path in sorted((ROOT / "wdjax").rglob("*.py")):
        rel = path.relative_to(ROOT / "wdjax")
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # the map re-exports every package
        own = rel.parts[0].removesuffix(".py")
        bad = {m for m in _imported(path) if m not in LAYERS or
               LAYERS.index(m) > LAYERS.index(own)}
        bad = {m for m in bad if m not in ("__version__",)}
        if bad:
            up[str(rel)] = sorted(bad)
    assert not up, f"imports from a package above (order {LAYERS}): {up}"


def test_layering_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from wdjax.training import steps\n")
    assert _imported(bad) == {"training"}


PUBLIC = {
    "Config", "Layer", "LayerTable", "ResNet18", "SCHEMES", "Scheme", "VGG", "add_decay",
    "add_decay_toward_init", "analysis", "build", "cautious_decay", "center_units",
    "clip_sign_crossing", "constrain_norms", "corrected_decay", "cpu", "data", "decay",
    "decay_spec", "decay_tree", "decoupled_decay", "equilibrium_angle", "equilibrium_monitor",
    "independent_decay", "init_variables", "kernel_only", "layer_labels", "layers", "models",
    "normalize_updates", "per_layer", "proximal_l1", "rotational", "scale_by_adam_blocks",
    "schemes", "storage", "tau_from_weight_decay", "topographic_multiplier", "trace_layers",
    "train", "training", "variance_inverse_coefficients", "vgg_conf", "weight_decay_from_tau",
}


def test_public_names_are_pinned():
    import wdjax

    assert set(wdjax.__all__) == PUBLIC
    assert all(getattr(wdjax, n) is not None for n in PUBLIC)
    assert wdjax.decay.add_decay is wdjax.add_decay and callable(wdjax.build)


def test_no_function_over_60_lines():
    import ast

    long = {}
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # signature, docstring and body
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
