"""Fit the preview rule's constants on the calibration families only.

``python -m experiments.calibrate --kept 0.02,0.05,0.15 --lr-share 0.5`` trains each
calibration family (`scales.CALIBRATION_FAMILIES`) at the preview protocol once per pair of
constants, under ``<out>/kept<K>_share<S>/``, and prints per pair the Spearman correlation
of the family's accuracies with the notebook's. The pair to freeze goes into
`scales.MINIATURES` by hand: this tool never edits code, and never trains a held-out family.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats as sps

from experiments import cli, findings, registry, scales, sweep
from wdjax import storage
from wdjax.analysis import seeds


def floats(flag: str):
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise cli.UsageError(f"{flag} takes comma-separated numbers, got {text!r}") from None
        if not values or min(values) <= 0:
            raise cli.UsageError(f"{flag} values must be positive, got {text!r}")
        return values
    return parse


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m experiments.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--kept", type=floats("--kept"), required=True,
                   help="fractions of the notebook's decay integral to try, comma-separated")
    p.add_argument("--lr-share", type=floats("--lr-share"), default=[0.5],
                   help="shares of the gain given to the learning rate (default 0.5)")
    p.add_argument("--families", default=",".join(scales.CALIBRATION_FAMILIES),
                   help="calibration families to train (only those of scales.py)")
    p.add_argument("--seeds", type=cli.integer("--seeds"), default=1)
    p.add_argument("--out", default="results/calibration")
    p.add_argument("--data", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def correlation(family: registry.Family, family_dir: Path) -> tuple[float, list[float]]:
    """Spearman's rho between the notebook's accuracies and the mean ones found here."""
    ours, theirs = [], []
    for run in family.runs:
        if not (family_dir / run.name).is_dir():
            continue
        group = seeds.load(family_dir / run.name)
        values = group.values("final_test_accuracy")
        if run.reported.test_accuracy is not None and values:
            ours.append(float(np.mean(values)))
            theirs.append(run.reported.test_accuracy)
    rho = sps.spearmanr(theirs, ours).statistic if len(ours) > 2 else float("nan")
    return float(rho), ours


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    families = [f.strip() for f in args.families.split(",")]
    held_out = [f for f in families if f not in scales.CALIBRATION_FAMILIES]
    if held_out:
        raise cli.UsageError(f"{', '.join(held_out)} not calibration families; allowed: "
                             f"{', '.join(scales.CALIBRATION_FAMILIES)}")
    rows = ["| kept | lr_share | gain | family | Spearman rho | accuracies |", "|---" * 6 + "|"]
    for kept, share in itertools.product(args.kept, args.lr_share):
        rule = scales.Miniature(source="full", kept=kept, lr_share=share)
        scales.MINIATURES["preview"] = rule  # this process only: the sweep reads it
        out = Path(args.out) / f"kept{kept:g}_share{share:g}"
        for name in families:
            runs = findings.runs_by_family(findings.FINDINGS).get(name)
            words = ["--name", name, "--scale", "preview", "--seeds", str(args.seeds),
                     "--out", str(out)] + (["--data", args.data] if args.data else [])
            words += ["--runs", ",".join(runs)] if runs else []
            sweep.main(words + (["--no-progress"] if args.no_progress else []))
            rho, accs = correlation(registry.get_family(name), out / name)
            gain = rule.gain(scales.SCALES["preview"])
            rows.append(f"| {kept:g} | {share:g} | {gain:.3g} | {name} | {rho:.2f} | "
                        + " ".join(f"{a:.3f}" for a in accs) + " |")
    text = "\n".join(rows) + "\n"
    storage.atomic_write(Path(args.out) / "calibration.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
