"""Compare finished runs: ``python -m experiments.compare RUN_DIR RUN_DIR ...``.
Per run: final and best test accuracy over seeds, Welch's t-test against the reference (the
first RUN_DIR, or ``--baseline``), Holm-corrected."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from experiments import cli, scales
from wdjax.analysis import seeds, stats

_PROTOCOL = tuple(scales.SCALES["full"])  # the config fields that make two runs comparable
STATS_HEAD = ("n", *(c for q in ("final", "best")
                     for c in (q, "± se", "std", "95% interval", "min", "max")),
              "p", "Holm p", "")


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the reference (default: the first RUN_DIR); added if not listed")
    return p


def cell(x, spec: str = ".4f", none: str = "-") -> str:
    """A table cell: `none` for None, `spec` for a float, else str."""
    return none if x is None else format(x, spec) if isinstance(x, float) else str(x)


def stats_cells(row: dict) -> list[str]:
    """A `seeds.compare` row as cells under `STATS_HEAD` ('-' where there is no value)."""
    cells = [cell(row["n"])]
    for q in ("test_accuracy", "best_test_accuracy"):
        low, high = row[f"{q}_low"], row[f"{q}_high"]
        cells += [cell(row[q]), cell(row[f"{q}_sem"]), cell(row[f"{q}_std"]),
                  "-" if low is None else f"[{low:.4f}, {high:.4f}]",
                  cell(row[f"{q}_min"]), cell(row[f"{q}_max"])]
    return [*cells, cell(row["p_value"], ".3g"), cell(row["holm_p"], ".3g"),
            "*" if row["significant"] else ""]


def caption(reference: str, rows: Sequence[dict]) -> str:
    """The table's tests, against `reference`."""
    tested = sum(r["p_value"] is not None for r in rows)
    return (f"reference: {reference}; p: Welch's t-test of the final test accuracy "
            f"(two-sided), Holm-corrected over {tested} comparison(s); * = significant at "
            f"{stats.ALPHA:g}; intervals: 95% t intervals of the mean (none with one seed)")


def table(labels: Sequence[str], rows: Sequence[dict]) -> list[str]:
    """Aligned text lines: a header, then one line per run."""
    lines = [["run", *STATS_HEAD]] + [
        [label + (" (reference)" if r["reference"] else ""), *stats_cells(r)]
        for label, r in zip(labels, rows, strict=True)]
    widths = [max(map(len, column)) for column in zip(*lines, strict=True)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]


def _protocol_note(groups: Sequence[seeds.SeedGroup]) -> str:
    """A line naming the protocol fields on which the runs differ ('' when none)."""
    seen = {k: {repr(c.get("config", {}).get(k)) for g in groups for c in g.configs()}
            for k in _PROTOCOL}
    differ = [k for k, v in seen.items() if len(v) > 1]
    return f"note: the runs differ in {', '.join(differ)}" if differ else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    labels = [str(d).rstrip("/") or "/" for d in [*filter(None, [args.baseline]), *args.run_dirs]]
    if args.baseline and labels[0] in labels[1:]:  # the baseline moves first
        del labels[labels.index(labels[0], 1)]
    if len(set(labels)) != len(labels):
        raise cli.UsageError("a RUN_DIR is given twice: " +
                             ", ".join(sorted({x for x in labels if labels.count(x) > 1})))
    groups = [seeds.load_finished(Path(label)) for label in labels]
    rows = seeds.compare(groups, 0)
    print("\n".join([caption(labels[0], rows), *table(labels, rows),
                     *filter(None, [_protocol_note(groups)])]))
    return 0


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
