"""The README and docs/ say what the code does: commands parse, examples run, links resolve.

* the README opens with the offline sweep, the TFDS sweep and exactly `.ci/run`'s command;
* its "own model" example runs on a foreign Flax model using only ``import wdjax`` (public
  names), ``optax``, ``jax`` and ``flax``; the Python training example builds valid configs;
* every ``python3 -m experiments...`` command in the README and docs/ parses;
* every ``wdjax.x.y`` name and repository path the pages mention exists;
* every relative link and anchor in the pages, and every ``docs/*.md#anchor`` cited in the
  code, resolves; the README links every docs page and stays short;
* the scheme and hyperparameter tables match the code.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wdjax
from wdjax.schemes import hparams

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
CODE_DIRS = ("wdjax", "experiments", "benchmarks")


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), re.S)


def _block(path: Path, marker: str, lang: str = "python") -> str:
    return next(b for b in _blocks(path, lang) if marker in b)


def _slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


def _own_model_namespace() -> dict:
    ns: dict = {}
    exec(compile(_block(README, "wdjax.add_decay(coef, kinds)"), "README.md", "exec"), ns)
    return ns


# ------------------------------------------------------------------ the opening commands
def test_readme_opens_with_the_sweep_and_ci_test_commands():
    first = _blocks(README, "bash")[0]
    assert README.read_text().index(first) < README.read_text().index("## ")
    lines = [ln for ln in first.splitlines() if ln.startswith("python3 -m pip")]
    offline, tfds, tests = lines
    assert offline.startswith("python3 -m pip install -e . && ")
    assert "WDJAX_DATA=folder:../shared/data/cifar10-jpeg.tar.gz" in offline
    assert offline.endswith("python3 -m experiments.sweep --name dxp")
    assert tfds == 'python3 -m pip install -e ".[tfds]" && python3 -m experiments.sweep --name dxp'
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert tests == ci


# ------------------------------------------------------------------ the examples run
def test_readme_own_model_example_uses_only_the_public_names():
    tree = ast.parse(_block(README, "wdjax.add_decay(coef, kinds)"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    assert imported <= {"flax.linen", "jax", "jax.numpy", "optax", "wdjax"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "wdjax"}
    assert used and used <= set(wdjax.__all__), used - set(wdjax.__all__)


def test_readme_own_model_example_runs_on_a_foreign_model():
    ns = _own_model_namespace()
    params = ns["params"]
    assert ns["layers"].names == ["Conv_0", "Conv_1", "Dense_0"]
    assert ns["early"] == ["Conv_0"]  # Conv_1 sees 16x16, the head is fully pooled
    assert ns["kinds"]["Conv_0"]["kernel"] == "l1"
    assert ns["kinds"]["BatchNorm_0"]["scale"] == "l1"  # owned by Conv_0
    assert ns["kinds"]["Dense_0"]["kernel"] == "l2"
    assert ns["coef"]["Conv_0"]["kernel"] == 5e-5
    grads = jax.tree.map(jnp.ones_like, params)
    for name in ("tx", "named", "tx_mine"):
        tx = ns[name]
        state = ns["opt_state"] if name == "tx" else tx.init(params)
        updates, _ = tx.update(grads, state, params)
        assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates)), name


def test_readme_training_example_builds_a_valid_config(monkeypatch):
    seen = []

    def fake_train(configs, out="runs", **kwargs):
        seen.append((configs, out))
        return [{"final_test_accuracy": 0.5}]

    monkeypatch.setattr(wdjax, "train", fake_train)
    exec(compile(_block(README, "wdjax.Config("), "README.md", "exec"), {})
    (config, out), = seen
    assert isinstance(config, wdjax.Config) and out == "runs"
    config.validate()


def test_docs_schemes_snippets_run_on_the_readme_model():
    ns = _own_model_namespace()
    ns.update(coefficients=ns["coef"], multipliers=None, momentum=0.9, ema_rate=0.98,
              times_weight_norm=True, lr=0.1,
              l1_mask=jax.tree.map(lambda k: k == "l1", ns["kinds"]))
    page = DOCS / "schemes.md"
    chain = eval(_block(page, "optax.chain("), ns)  # noqa: S307 - the page's own snippet
    grads = jax.tree.map(jnp.ones_like, ns["params"])
    chain.update(grads, chain.init(ns["params"]), ns["params"])
    exec(compile(_block(page, "wdjax.Scheme("), str(page), "exec"), ns)
    ns["tx"].update(grads, ns["tx"].init(ns["params"]), ns["params"])


# ------------------------------------------------------------------ commands and names
def _commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, argv)`` of every ``python3 -m experiments.X ...`` line in bash blocks."""
    out = []
    for block in _blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            if line.lstrip().startswith("#") or "-m experiments." not in line:
                continue
            for part in line.split("&&"):
                words = shlex.split(part)
                if "-m" in words and words[words.index("-m") + 1].startswith("experiments."):
                    i = words.index("-m")
                    out.append((words[i + 1], words[i + 2:]))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_experiments_command_parses(page):
    for module, argv in _commands(page):
        parser = importlib.import_module(module).parser()
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page.name}: python -m {module} {' '.join(argv)} does not parse")


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_wdjax_name_and_path_the_page_mentions_exists(page):
    text = page.read_text()
    for dotted in sorted(set(re.findall(r"\bwdjax(?:\.[A-Za-z_]\w*)+", text))):
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            pytest.fail(f"{page.name} mentions {dotted}, which does not exist")
    for path in sorted(set(re.findall(
            r"`((?:wdjax|experiments|benchmarks|tests|notebooks)/[\w./-]*\w)`", text))):
        assert (REPO / path).exists(), f"{page.name} mentions {path}, which does not exist"


# ------------------------------------------------------------------ links and anchors
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_anchor_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name} links {target}: no such file"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name} links {target}: no such heading"


def test_code_cites_docs_anchors_that_exist_and_nothing_outside_the_repo():
    cited = 0
    for top in CODE_DIRS:
        for source in sorted((REPO / top).rglob("*.py")):
            text = source.read_text()
            where = source.relative_to(REPO)
            for found in re.findall(r"\b(REFERENCE\b|ROTATIONAL\.md|shared/seed|000_b4e7b088)",
                                    text):
                pytest.fail(f"{where} cites {found}, a file outside the repository")
            for page, anchor in re.findall(r"\bdocs/([\w/-]+\.md)(?:#([\w-]+))?", text):
                cited += 1
                assert (DOCS / page).exists(), f"{where} cites docs/{page}: no such page"
                if anchor:
                    assert anchor in _anchors(DOCS / page), f"{where} cites {page}#{anchor}"
    assert cited


def test_readme_is_short_and_links_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for page in [*DOCS.glob("*.md"), DOCS / "results" / "README.md"]:
        assert f"]({page.relative_to(REPO)})" in text, f"README does not link {page.name}"
    assert "Measured on" not in text and "2026-" not in text  # dated results live in docs/


# ------------------------------------------------------------------ tables
def test_docs_hyperparameter_table_is_the_table():
    assert hparams.markdown() in (DOCS / "schemes.md").read_text()


def test_every_scheme_is_documented_and_every_documented_name_is_a_scheme():
    names = set(wdjax.schemes.names())
    page = (DOCS / "schemes.md").read_text()
    section = page.split("## Named schemes")[1].split("### Scheme fields")[0]
    rows = [ln.split("|")[1] for ln in section.splitlines() if ln.startswith("| `")]
    listed = set()
    for cell in rows:
        for name in re.findall(r"`([\w.]+)`", cell):
            if name.startswith("."):  # `SGD_topo.a`, `.b`, `.ab`
                name = "SGD_topo" + name
            listed.add(name)
    dups = {m.group(0) for cell in rows for m in re.finditer(r"SGD_var_dup\d", cell)}
    listed |= dups
    assert names <= listed, names - listed
    assert listed - names <= set(wdjax.schemes.ALIASES), listed - names - set(
        wdjax.schemes.ALIASES)
    readme = README.read_text()
    missing = {n for n in names if f"`{n}`" not in readme and not n.startswith("SGD_var_dup")
               and not n.startswith("SGD_topo")}
    assert not missing, f"README's scheme list lacks {sorted(missing)}"


def test_docs_scheme_fields_table_is_the_dataclass():
    page = (DOCS / "schemes.md").read_text()
    section = page.split("### Scheme fields")[1].split("\n## ")[0]
    documented = {name for ln in section.splitlines() if ln.startswith("| `")
                  for name in re.findall(r"`(\w+)`", ln.split("|")[1])}
    fields = {f.name for f in dataclasses.fields(wdjax.Scheme)} - {"name", "description"}
    assert documented == fields, (sorted(fields - documented), sorted(documented - fields))
