"""Compare finished runs: ``python -m experiments.compare RUN_DIR RUN_DIR ...``.

Each RUN_DIR is a finished run: one seed's records, or ``seed<k>/`` directories that have
all finished (`wdjax.storage.seed_dirs`); runs may come from different families or sweeps.
Per run it prints the final and best test accuracy over seeds (mean, standard error, std,
95% t interval, min, max) and a Welch t-test of the final test accuracy against the
reference (the first RUN_DIR, or ``--baseline``), Holm-corrected across the comparisons.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from experiments import cli, scales
from wdjax import storage
from wdjax.analysis import seeds, stats

_PROTOCOL = tuple(scales.SCALES["full"])  # the config fields that make two runs comparable


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the reference (default: the first RUN_DIR); added if not listed")
    return p


def _cell(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _interval(row: dict, name: str) -> str:
    if row[f"{name}_low"] is None:
        return "-"
    return f"[{row[f'{name}_low']:.4f}, {row[f'{name}_high']:.4f}]"


def table(labels: Sequence[str], rows: Sequence[dict]) -> list[str]:
    """Aligned text lines: a header, then one line per run."""
    head = ["run", "n"]
    for q in ("final", "best"):
        head += [q, "± se", "std", "95% interval", "min", "max"]
    head += ["p", "Holm p", ""]
    body = []
    for label, r in zip(labels, rows, strict=True):
        cells = [label + (" (reference)" if r["reference"] else ""), str(r["n"])]
        for q in ("test_accuracy", "best_test_accuracy"):
            cells += [_cell(r[q]), _cell(r[f"{q}_sem"]), _cell(r[f"{q}_std"]),
                      _interval(r, q), _cell(r[f"{q}_min"]), _cell(r[f"{q}_max"])]
        cells += [_cell(r["p_value"], ".3g"), _cell(r["holm_p"], ".3g"),
                  "*" if r["significant"] else ""]
        body.append(cells)
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in [head, *body]]


def _protocol_note(labels: Sequence[str], groups: Sequence[seeds.SeedGroup]) -> str:
    """A line naming the protocol fields on which the runs differ ('' when none)."""
    seen: dict[str, set] = {k: set() for k in _PROTOCOL}
    for g in groups:
        for c in g.configs():
            for k in _PROTOCOL:
                seen[k].add(repr(c.get("config", {}).get(k)))
    differ = [k for k, v in seen.items() if len(v) > 1]
    return f"note: the runs differ in {', '.join(differ)}" if differ else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    labels = [str(d).rstrip("/") or "/" for d in args.run_dirs]
    if args.baseline is not None:
        base = str(args.baseline).rstrip("/") or "/"
        if base in labels:
            labels.remove(base)
        labels.insert(0, base)
    if len(set(labels)) != len(labels):
        raise cli.UsageError("a RUN_DIR is given twice: " +
                             ", ".join(sorted({x for x in labels if labels.count(x) > 1})))
    groups = [seeds.load_finished(Path(label)) for label in labels]
    rows = seeds.compare(groups, 0)
    tested = sum(r["p_value"] is not None for r in rows)
    print(f"reference: {labels[0]}; p: Welch's t-test of the final test accuracy "
          f"(two-sided), Holm-corrected over {tested} comparison(s); * = significant at "
          f"{stats.ALPHA:g}; intervals: 95% t intervals of the mean")
    print("\n".join(table(labels, rows)))
    note = _protocol_note(labels, groups)
    if note:
        print(note)
    return 0


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """`main` with user errors as one line on stderr and exit status 2."""
    try:
        code = main(argv)
    except (cli.UsageError, storage.RunError, ValueError, OSError) as err:
        print(f"wdjax: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    run(sys.argv[1:])
