"""Check ``experiments.registry`` against REFERENCE section 10 and the seed notebook itself.

The notebook is parsed here with an independent, deliberately strict regex parser: every
line that looks like a run line must be fully understood, or ``test_notebook_parses_cleanly``
fails and names it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from experiments import registry
from experiments.registry import FAMILIES, HPARAM_DEFAULTS, all_runs, get_family, select_runs
from wdjax import schemes

NOTEBOOK_NAME = "000_b4e7b088a60f41ee.txt"

# REFERENCE section 5: every named optimizer.
OPTIMIZER_NAMES = {
    "SGD",
    "SGDL1",
    "SGDL1A",
    "SGD_var_dup4",
    "SGD_var_dup2",
    "SGD_var_dup1",
    "SGD_var_dup2_last2_mult",
    "SGD_var_dup2_last1_mult",
    "SGD_topo.a",
    "SGD_topo.b",
    "SGD_topo.ab",
    "LSSGD_var_dup2_last1_mult",
    "LSSGD_var_dup2_last1_mult_nwm",
    "Adam",
}

EXPECTED_DEFAULTS = dict(
    lr=0.1,
    momentum=0.0,
    weight_decay=5e-4,
    L1_decay=5e-6,
    last1_mult=1.0,
    last2_mult=1.0,
    topo_base=2.0,
    norm_ema=0.98,
    tau_epochs=None,  # unset: the runs give weight_decay
)

WD16 = 1.6e-4

# REFERENCE section 10, in its order:
# family -> (run count, optimizer, varied key, varied values in run order, fixed values).
REFERENCE_FAMILIES = {
    "exp": (
        9,
        "SGD",
        "weight_decay",
        [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.016, 0.016],
        {},
    ),
    "hxp": (
        9,
        "SGD",
        "weight_decay",
        [0.010, 0.012, 0.014, 0.016, 0.018, 0.020, 0.022, 0.024, 0.026],
        {},
    ),
    "axp": (
        6,
        "SGDL1",
        "L1_decay",
        [0.00016, 0.0016, 0.0008, 0.00008, 0.00032, 0.00064],
        {"weight_decay": 0.016},
    ),
    "bxp": (4, "SGDL1A", "L1_decay", [0.0001, 0.0002, 0.0004, 0.0008], {}),
    "cxp": (
        9,
        "SGD_var_dup4",
        "weight_decay",
        [5e-6, 1e-5, 2e-5, 4e-5, 8e-5, 1.6e-4, 3.2e-4, 6.4e-4, 1.28e-3],
        {},
    ),
    "dxp": (6, "SGD_var_dup2", "weight_decay", [2e-5, 4e-5, 8e-5, 1.6e-4, 3.2e-4, 6.4e-4], {}),
    "fxp": (
        8,
        "SGD_var_dup1",
        "weight_decay",
        [5e-6, 1e-5, 2e-5, 4e-5, 8e-5, 1.6e-4, 3.2e-4, 6.4e-4],
        {},
    ),
    "gxp": (
        5,
        "SGD_var_dup2_last2_mult",
        "last2_mult",
        [0.1, 10, 100, 3, 30],
        {"weight_decay": WD16},
    ),
    "ixp": (4, "SGD_var_dup2_last1_mult", "last1_mult", [3, 10, 30, 100], {"weight_decay": WD16}),
    "jxp": (
        4,
        "LSSGD_var_dup2_last1_mult",
        "last1_mult",
        [3, 10, 30, 100],
        {"weight_decay": WD16, "norm_ema": 0.0},
    ),
    "kxp": (
        3,
        "LSSGD_var_dup2_last1_mult",
        "last1_mult",
        [3, 10, 100],
        {"weight_decay": WD16, "norm_ema": 0.98},
    ),
    "lxp": (
        3,
        "LSSGD_var_dup2_last1_mult_nwm",
        "last1_mult",
        [3, 10, 100],
        {"weight_decay": WD16, "norm_ema": 0.98},
    ),
    "topo": (
        3,
        None,
        "optimizer",
        ["SGD_topo.a", "SGD_topo.b", "SGD_topo.ab"],
        {"weight_decay": WD16, "lr": 0.1, "last1_mult": 10, "topo_base": 2.0},
    ),
    "topo.aa": (
        6,
        "SGD_topo.a",
        "weight_decay",
        [4e-5, 8e-5, 1.6e-4, 2e-4, 3.2e-4, 6.4e-4],
        {"last1_mult": 10},
    ),
    "topo.ad": (
        9,
        "SGD_topo.a",
        "last1_mult",
        [2, 5, 10, 20, 40, 80, 160, 320, 640],
        {"weight_decay": WD16},
    ),
    "topo.ac": (
        11,
        "SGD_topo.a",
        "topo_base",
        [1.0, 1.1, 1.2, 1.5, 1.8, 2.0, 2.3, 2.8, 3.0, 4.0, 6.0],
        {"weight_decay": WD16, "last1_mult": 10},
    ),
}
# Per-run exceptions to the family's fixed values (REFERENCE section 10).
RUN_EXTRAS = {"exp9": {"momentum": 0.9}}


# --------------------------------------------------------------------------- notebook parser

# "- topo.ac10:4.0 -> 9150", "- ixp2: 10  -> 9188 (50000), maxed at 9202", ...
RUN_LINE = re.compile(
    r"^-\s+(?P<name>[a-z]+(?:\.[a-z]+)?\d+):\s*(?P<lhs>\S+)\s*->\s*"
    r"(?P<acc>\d+(?:\.\d+)?)(?P<rest>.*)$"
)
# Anything that merely looks like a run line: must then match RUN_LINE too.
LOOSE_RUN_LINE = re.compile(r"^-\s*[a-z]+(?:\.[a-z]+)?\d+\s*:")
PAREN = re.compile(r"\(([^()]*)\)")
BEST = re.compile(r"\b(?:maxed at|hit)\s+(\d+)")
ASSIGN = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\d+(?:\.\d+)?)(?![\w.])")
VARY = re.compile(r"\b(?:vary|increasing)\s+([A-Za-z_][A-Za-z0-9_]*)")
VARYING_DECAY = re.compile(r"\bVarying (L1|L2) decay strength")
# "dxp4-based, vary ...", "Layer-specific learning rate, based on ixp2": the family's base.
BASED_ON = re.compile(r"\b([a-z]+\d+)-based\b|\bbased on ([a-z]+\d+)\b")
# "(aborted at epoch 7)": the number was taken at that epoch; "(pre-terminated)": unknown.
ABORTED_AT = re.compile(r"^aborted at epoch (\d+)$")
NOTEBOOK_EPOCHS = 200  # REFERENCE section 3: 10 stages of 20 epochs
CONFIG_OPTIMIZER = re.compile(r"same model_conf,\s*([A-Za-z0-9_.]+)\s*(?:,|$)")

KEY_ALIASES = {"wd": "weight_decay", "L2": "weight_decay", "base_decay": "weight_decay"}
OPTIMIZER_ALIASES = {"SGD1A": "SGDL1A"}


@dataclasses.dataclass
class Line:
    """One parsed run line."""

    lineno: int
    section: int  # index into Notebook.sections
    name: str
    lhs: str
    test_accuracy: float
    train_correct: int | None
    best_test_correct: int | None
    note: str | None
    hparams: dict[str, float]


@dataclasses.dataclass
class Section:
    """One '# ' section of the notebook: its heading/config text and run lines."""

    heading: str
    config: list[str] = dataclasses.field(default_factory=list)
    lines: list[Line] = dataclasses.field(default_factory=list)

    @property
    def family(self) -> str:
        return Counter(family_of(line.name) for line in self.lines).most_common(1)[0][0]

    @property
    def text(self) -> str:
        return " ".join([self.heading, *self.config])


@dataclasses.dataclass
class Notebook:
    sections: list[Section]
    problems: list[str]

    @property
    def lines(self) -> list[Line]:
        return [line for sec in self.sections for line in sec.lines]

    def lines_of(self, name: str) -> list[Line]:
        return [line for line in self.lines if line.name == name]


def family_of(run_name: str) -> str:
    """Family of a run name by its stem: 'dxp4' -> 'dxp'; 'topo.a1'/'topo.ab1' -> 'topo'."""
    stem = run_name.rstrip("0123456789")
    if stem in REFERENCE_FAMILIES:
        return stem
    if stem.startswith("topo."):
        return "topo"
    return stem


def parse_accuracy(text: str) -> float:
    """'0.9131' -> 0.9131; '9108' (a count out of 10000) -> 0.9108."""
    if "." in text:
        return float(text)
    return int(text) / 10000


def parse_run_line(text: str, lineno: int, section: int, problems: list[str]) -> Line | None:
    match = RUN_LINE.match(text)
    if match is None:
        problems.append(f"line {lineno}: unparsed run-like line {text!r}")
        return None
    rest = match["rest"]
    train = best = note = None
    hparams: dict[str, float] = {}
    for content in PAREN.findall(rest):
        content = content.strip()
        if content.isdigit():
            train = int(content)
        elif ASSIGN.search(content):
            hparams.update({k: float(v) for k, v in ASSIGN.findall(content)})
        else:
            note = content
    best_match = BEST.search(rest)
    if best_match:
        best = int(best_match[1])
    leftover = BEST.sub("", PAREN.sub("", rest)).replace(",", "").strip()
    if leftover:
        problems.append(f"line {lineno}: unexplained text {leftover!r} in {text!r}")
    if "." not in match["acc"] and len(match["acc"]) != 4:
        problems.append(f"line {lineno}: test count {match['acc']!r} is not out of 10000")
    return Line(
        lineno,
        section,
        match["name"],
        match["lhs"],
        parse_accuracy(match["acc"]),
        train,
        best,
        note,
        hparams,
    )


def parse_notebook(path: Path) -> Notebook:
    sections: list[Section] = [Section(heading="")]
    problems: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if raw.startswith("# "):
            sections.append(Section(heading=raw[2:].strip()))
        elif LOOSE_RUN_LINE.match(text):
            line = parse_run_line(text, lineno, -1, problems)
            if line is not None:
                sections[-1].lines.append(line)
        elif text and not sections[-1].lines and not text.startswith("-"):
            sections[-1].config.append(text)
    kept = [sec for sec in sections if sec.lines]
    for index, sec in enumerate(kept):
        for line in sec.lines:
            line.section = index
    return Notebook(kept, problems)


def locate_notebook() -> Path | None:
    primary = Path(__file__).resolve().parents[1].parent / "shared" / "seed" / NOTEBOOK_NAME
    if primary.is_file():
        return primary
    shared = os.environ.get("WDJAX_SHARED")
    if shared:
        fallback = Path(shared) / "seed" / NOTEBOOK_NAME
        if fallback.is_file():
            return fallback
    return None


NOTEBOOK_PATH = locate_notebook()
NOTEBOOK = parse_notebook(NOTEBOOK_PATH) if NOTEBOOK_PATH is not None else None
SKIP_REASON = (
    f"seed notebook {NOTEBOOK_NAME} not found under ../shared/seed next to the repo "
    "or under $WDJAX_SHARED/seed"
)
NOTEBOOK_RUNS = (
    sorted({line.name for line in NOTEBOOK.lines}) if NOTEBOOK is not None else ["<no notebook>"]
)


@pytest.fixture
def notebook() -> Notebook:
    if NOTEBOOK is None:
        pytest.skip(SKIP_REASON)
    return NOTEBOOK


def section_varies(section: Section) -> set[str]:
    """Varied keys the section's heading/config text names (aliases resolved)."""
    found = set()
    for word in VARY.findall(section.text):
        key = KEY_ALIASES.get(word, word)
        if key in EXPECTED_DEFAULTS:
            found.add(key)
    for kind in VARYING_DECAY.findall(section.text):
        found.add("L1_decay" if kind == "L1" else "weight_decay")
    if "different optimizers" in section.text:
        found.add("optimizer")
    return found


def section_fixed(section: Section) -> dict[str, float]:
    """'key=number' assignments in the section's heading/config text (aliases resolved)."""
    return {KEY_ALIASES.get(k, k): float(v) for k, v in ASSIGN.findall(section.text)}


def merged_reported(lines: list[Line]) -> registry.Reported:
    """Combine a run's lines (axp is listed twice); conflicting numbers fail the test."""
    fields = {}
    for field in ("test_accuracy", "train_correct", "best_test_correct", "note"):
        values = {getattr(line, field) for line in lines} - {None}
        assert len(values) <= 1, f"{lines[0].name}: notebook lines disagree on {field}: {values}"
        fields[field] = values.pop() if values else None
    note = fields["note"]
    if note is None:
        fields["epoch"] = NOTEBOOK_EPOCHS
    elif aborted := ABORTED_AT.match(note):
        fields["epoch"] = int(aborted[1])
    else:
        assert note == "pre-terminated", note
        fields["epoch"] = None
    return registry.Reported(**fields)


# --------------------------------------------------------------------------- notebook tests


def test_notebook_parses_cleanly(notebook: Notebook) -> None:
    assert notebook.problems == []
    assert len(notebook.sections) == len(REFERENCE_FAMILIES)
    assert sorted(sec.family for sec in notebook.sections) == sorted(REFERENCE_FAMILIES)


@pytest.mark.parametrize("run_name", NOTEBOOK_RUNS)
def test_notebook_run_matches_registry(notebook: Notebook, run_name: str) -> None:
    runs = all_runs()
    assert run_name in runs, f"notebook run {run_name!r} is missing from the registry"
    run = runs[run_name]
    family = FAMILIES[family_of(run_name)]
    assert run in family.runs
    lines = notebook.lines_of(run_name)
    for line in lines:
        section = notebook.sections[line.section]
        if section.family == family.name:
            if family.varies == "optimizer":
                assert run.optimizer == line.lhs
            else:
                assert run.value == float(line.lhs), f"line {line.lineno}"
                assert run.hparams[family.varies] == float(line.lhs)
        else:
            # A reference row in another family's table (dxp4 as gxp's last2_mult 1 baseline).
            other = FAMILIES[section.family]
            assert run.hparams[other.varies] == float(line.lhs), f"line {line.lineno}"
        for key, value in line.hparams.items():  # e.g. exp9's "(this one has momentum=0.9)"
            assert run.hparams[key] == value, f"line {line.lineno}: {key}"
    assert run.reported == merged_reported(lines)


def test_every_registry_run_is_in_notebook(notebook: Notebook) -> None:
    in_notebook = {line.name for line in notebook.lines}
    beyond = {r.name for name in BEYOND for r in FAMILIES[name].runs}
    assert sorted(set(all_runs()) - in_notebook - beyond) == []
    assert not beyond & in_notebook  # the new families' names are new


@pytest.mark.parametrize("family_name", list(REFERENCE_FAMILIES))
def test_family_matches_notebook_section(notebook: Notebook, family_name: str) -> None:
    family = FAMILIES[family_name]
    (section,) = [sec for sec in notebook.sections if sec.family == family_name]
    own = {line.name for line in section.lines if family_of(line.name) == family_name}
    assert set(family.run_names) == own
    assert section_varies(section) == {family.varies}, section.text
    match = CONFIG_OPTIMIZER.search(section.text)
    if family.varies == "optimizer":
        assert match is None
    else:
        assert match is not None, section.text
        assert family.optimizer == OPTIMIZER_ALIASES.get(match[1], match[1])
    based = [a or b for a, b in BASED_ON.findall(section.text)]
    assert family.baseline == (based[0] if based else None), section.text
    for key, value in section_fixed(section).items():
        if key == "duplicate_multiplier":
            assert family.optimizer.endswith(f"_dup{int(value)}")
            continue
        assert key in EXPECTED_DEFAULTS, f"unknown key {key!r} in {section.text!r}"
        for run in family.runs:
            assert run.hparams[key] == value, f"{run.name}: {key}"


# --------------------------------------------------------------------------- reference tests


def test_defaults() -> None:
    assert dict(HPARAM_DEFAULTS) == EXPECTED_DEFAULTS


BEYOND = {"wxp": 10, "txp": 18, "rxp": 4, "axp2": 6}  # new families, after the notebook's
BEYOND_RUNS = {r.name for name in BEYOND for r in FAMILIES[name].runs}


def test_families_order_and_counts() -> None:
    assert list(FAMILIES) == [*REFERENCE_FAMILIES, *BEYOND]
    counts = {name: len(fam.runs) for name, fam in FAMILIES.items()}
    assert counts == {**{name: spec[0] for name, spec in REFERENCE_FAMILIES.items()}, **BEYOND}
    notebook = sum(spec[0] for spec in REFERENCE_FAMILIES.values())
    assert len(all_runs()) == sum(counts.values()) and notebook == 99


@pytest.mark.parametrize("family_name", list(REFERENCE_FAMILIES))
def test_family_against_reference(family_name: str) -> None:
    _, optimizer, varies, values, fixed = REFERENCE_FAMILIES[family_name]
    family = get_family(family_name)
    assert family.name == family_name
    assert family.varies == varies
    assert family.description and "\n" not in family.description
    if optimizer is not None:
        assert family.optimizer == optimizer
    names = [run.name for run in family.runs]
    if family_name != "topo":  # numbering order: exp1, exp2, ...
        assert names == [f"{family_name}{i}" for i in range(1, len(names) + 1)]
    if varies == "optimizer":
        assert [run.optimizer for run in family.runs] == values
        assert [run.value for run in family.runs] == [1.0, 2.0, 3.0]
        assert names == ["topo.a1", "topo.b1", "topo.ab1"]
    else:
        assert [run.value for run in family.runs] == [float(v) for v in values]
        assert all(run.optimizer == family.optimizer for run in family.runs)
    for run in family.runs:
        assert run.varies == varies
        expected = {**EXPECTED_DEFAULTS, **fixed, **RUN_EXTRAS.get(run.name, {})}
        if varies != "optimizer":
            expected[varies] = run.value
        assert dict(run.hparams) == expected, run.name


def test_hparams_keys_and_optimizer_names() -> None:
    for run in all_runs().values():
        assert set(run.hparams) == set(EXPECTED_DEFAULTS), run.name
        assert all(isinstance(v, float) and math.isfinite(v) for v in run.hparams.values()
                   if v is not None)
        assert all(v is not None for k, v in run.hparams.items() if k != "tau_epochs")
        assert run.optimizer in (OPTIMIZER_NAMES if run.name not in BEYOND_RUNS
                                 else schemes.names()), run.name
    for family in FAMILIES.values():
        if family.varies != "optimizer":
            assert family.optimizer in OPTIMIZER_NAMES


def test_fixed_values_spot_checks() -> None:
    runs = all_runs()
    assert runs["exp9"].hparams["momentum"] == 0.9
    assert all(runs[f"exp{i}"].hparams["momentum"] == 0.0 for i in range(1, 9))
    assert all(run.hparams["norm_ema"] == 0.0 for run in get_family("jxp").runs)
    assert all(run.hparams["norm_ema"] == 0.98 for run in get_family("kxp").runs)
    assert all(run.hparams["weight_decay"] == 0.016 for run in get_family("axp").runs)
    assert [runs[f"gxp{i}"].hparams["last2_mult"] for i in range(1, 6)] == [0.1, 10, 100, 3, 30]
    assert get_family("bxp").optimizer == "SGDL1A"
    topo = runs["topo.ad7"]
    assert topo.reported == registry.Reported(0.9176, 49996, 9191)
    assert runs["ixp2"].reported.best_test_correct == 9202
    assert runs["exp1"].reported.note == "pre-terminated"
    assert runs["jxp1"].reported.note == "aborted at epoch 7"
    assert runs["jxp1"].reported.epoch == 7 and runs["kxp3"].reported.epoch == 7
    assert runs["exp1"].reported.epoch is None and runs["exp2"].reported.epoch == 200
    assert registry.NOTEBOOK_EPOCHS == 200
    assert get_family("gxp").baseline == "dxp4" and get_family("topo.ac").baseline == "ixp2"
    assert get_family("dxp").baseline is None
    assert runs["hxp1"].reported.test_accuracy == 0.9108


def test_log_scale() -> None:
    assert get_family("dxp").log_scale
    assert get_family("cxp").log_scale
    assert get_family("gxp").log_scale
    assert not get_family("topo.ac").log_scale
    assert not get_family("hxp").log_scale
    assert not get_family("topo").log_scale


def test_run_label() -> None:
    runs = all_runs()
    assert runs["topo.b1"].label == "SGD_topo.b"
    assert runs["dxp4"].label == "0.00016"


def test_records_are_immutable() -> None:
    run = all_runs()["dxp4"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        run.hparams["lr"] = 1.0  # type: ignore[index]
    assert hash(run) == hash(all_runs()["dxp4"])


# --------------------------------------------------------------------------- lookup tests


def test_get_family_unknown() -> None:
    with pytest.raises(ValueError) as info:
        get_family("zxp")
    message = str(info.value)
    assert "\n" not in message
    assert "'zxp'" in message
    assert "valid: " + ", ".join(REFERENCE_FAMILIES) in message


def test_select_runs() -> None:
    dxp = get_family("dxp")
    assert select_runs(dxp, None) == dxp.runs
    picked = select_runs(dxp, ["dxp4", "dxp1"])
    assert [run.name for run in picked] == ["dxp1", "dxp4"]
    assert select_runs(dxp, []) == ()
    assert [run.name for run in select_runs(dxp, "dxp2")] == ["dxp2"]


def test_select_runs_unknown() -> None:
    dxp = get_family("dxp")
    with pytest.raises(ValueError) as info:
        select_runs(dxp, ["dxp1", "gxp1"])
    message = str(info.value)
    assert "\n" not in message
    assert "'gxp1'" in message
    assert "valid: dxp1, dxp2, dxp3, dxp4, dxp5, dxp6" in message


def test_select_runs_duplicate() -> None:
    with pytest.raises(ValueError, match="duplicate") as info:
        select_runs(get_family("ixp"), ["ixp2", "ixp2"])
    assert "\n" not in str(info.value)
