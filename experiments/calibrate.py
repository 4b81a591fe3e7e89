"""Fit the preview rule's constants on the calibration families only.

Per pair of constants, train each family at preview scale (``<out>/kept<K>_share<S>/``) and
print the Spearman rho of its accuracies with the notebook's; the pair is frozen by hand."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

from scipy import stats as sps

from experiments import cli, findings, registry, scales
from wdjax import storage


def floats(flag: str):
    """argparse type: comma-separated positive numbers."""
    def parse(text: str) -> list[float]:
        with contextlib.suppress(ValueError):
            values = [float(v) for v in text.split(",")]
            if min(values) > 0:
                return values
        raise cli.UsageError(f"{flag} takes comma-separated positive numbers, got {text!r}")
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
    records = findings.load_records(family_dir.parent, family.run_names)
    done = [r for r in family.runs if r.name in records and r.reported.test_accuracy is not None]
    ours = [findings.mean(records[r.name].accuracy) for r in done]
    theirs = [r.reported.test_accuracy for r in done]
    return float(sps.spearmanr(theirs, ours).statistic if len(ours) > 2 else "nan"), ours


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    families = [f.strip() for f in args.families.split(",")]
    held_out = [f for f in families if f not in scales.CALIBRATION_FAMILIES]
    if held_out:
        raise cli.UsageError(f"{', '.join(held_out)} not calibration families; allowed: "
                             f"{', '.join(scales.CALIBRATION_FAMILIES)}")
    rows = ["| kept | lr_share | gain | family | Spearman rho | accuracies |", "|---" * 6 + "|"]
    read = findings.runs_by_family(findings.FINDINGS)
    todo = {name: read.get(name) for name in families}  # None: all the family's runs
    for kept, share in itertools.product(args.kept, args.lr_share):
        rule = scales.Miniature(source="full", kept=kept, lr_share=share)
        scales.MINIATURES["preview"] = rule  # this process only: the sweep reads it
        out = Path(args.out) / f"kept{kept:g}_share{share:g}"
        findings.train(todo, "preview", args.seeds, out, args)
        for name in families:
            rho, accs = correlation(registry.get_family(name), out / name)
            rows.append(f"| {kept:g} | {share:g} | {rule.gain(scales.SCALES['preview']):.3g} | "
                        f"{name} | {rho:.2f} | " + " ".join(f"{a:.3f}" for a in accs) + " |")
    text = "\n".join(rows) + "\n"
    storage.atomic_write(Path(args.out) / "calibration.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
