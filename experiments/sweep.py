"""Re-run a family of the notebook: ``python -m experiments.sweep --name dxp``.

Each run of the family trains under ``<out>/<family>/<run>/``; at the end a table in the
notebook's own line format, with statistics over seeds (`experiments.report`), is printed
and saved (``summary.md``, ``summary.csv``) with pictures beside it. Re-running the same
command skips finished runs and resumes an unfinished one from its checkpoint.

``--launcher slurm`` trains the runs as one SLURM job array instead (`experiments.launch`),
into the same tree; ``--collect`` only builds the table from what is on disk.
``--tensorboard`` (or ``WDJAX_TENSORBOARD=1``) adds TensorBoard events
(`wdjax.training.tensorboard`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from experiments import cli, launch, registry, report, scales
from wdjax import data, storage
from wdjax.training import tensorboard as tb
from wdjax.training.config import MODELS, Config, with_seeds

PROTOCOL_FLAGS = {"--train-subset": "training images per epoch, class-balanced",
                  "--stages": "learning-rate stages, each half the last",
                  "--epochs-per-stage": "epochs of each stage"}
"""Flags that replace a field of the scale's protocol for every run (a tiny test sweep)."""


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m experiments.sweep", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--name", help=f"family: {', '.join(registry.FAMILIES)}")
    a("--list", action="store_true", help="list the families and exit")
    a("--dry-run", action="store_true", help="print every run's config and exit")
    a("--scale", choices=tuple(scales.SCALES), default=None,
      help="full: the notebook's protocol; preview: its miniature (3 seeds); quick: a CPU "
           "smoke run; medium: quick with 3 seeds (default: full on GPU/TPU and with "
           "--launcher slurm, preview on CPU)")
    a("--runs", default=None, help="comma-separated subset of the family's runs")
    for flag, what in PROTOCOL_FLAGS.items():
        a(flag, type=cli.integer(flag), default=None, help=f"{what} (default: the scale's)")
    cli.add_precision_flag(p, default=None)  # None: the protocol's, fp32
    a("--parallel", choices=("vmap", "sequential"), default=None,
      help="train the runs together (vmap) or one after another (default: per backend; "
           "with a launcher, one run per task)")
    a("--out", default=None, help="output directory (default results/<scale>)")
    a("--data", default=None, help=f"tfds:NAME or folder:PATH (default ${data.ENV_DATA}, "
      f"else {data.DEFAULT_SOURCE})")
    a("--seed", type=cli.integer("--seed", low=0), default=0)
    a("--seeds", type=cli.integer("--seeds"), default=None,
      help="seeds per run, seed, seed+1, ... in RUN/seed<s>/ (default: the scale's, 1 but "
           "medium's 3): the table gives mean, interval and a t-test against the baseline; "
           "adding seeds later reuses the finished ones")
    a("--model", choices=MODELS, default=None,
      help="train every run on this model instead of the family's (default: vgg)")
    cli.add_decay_override_flags(p)
    a("--baseline", default=None, metavar="RUN",
      help="the run the others are tested against (default: the run the notebook based the "
           "family on, else the best mean); may belong to another family")
    a("--force-name", action="store_true", help="replace existing runs with other configs")
    a("--no-progress", action="store_true")
    a("--tensorboard", action="store_true", default=None,
      help=f"write TensorBoard events per run and the family's HParams table (or "
           f"${tb.ENV_TENSORBOARD}=1)")
    a("--collect", action="store_true",
      help="train nothing: build the table from the runs on disk (after --no-wait)")
    launch.add_args(p)
    cli.add_device_args(p)
    return p


def list_families() -> str:
    rows = [f"{'family':9} {'optimizer':32} {'varies':13} runs  description"]
    for fam in registry.FAMILIES.values():
        rows.append(f"{fam.name:9} {fam.optimizer:32} {fam.varies:13} {len(fam.runs):4}  "
                    f"{fam.description}")
    return "\n".join(rows)


def configs_for(family: registry.Family, runs: Sequence[registry.Run], scale: str,
                data_spec: str | None, seed: int, model: str | None = None,
                decay: dict | None = None, seeds: int = 1,
                protocol: dict | None = None) -> list[Config]:
    """Validated Configs, one per run and seed: protocol < run settings < command line.

    `decay` (`cli.decay_override`) replaces every run's weight_decay or tau_epochs, and
    `protocol` (`protocol_override`) fields of the scale's protocol. At a miniature scale
    (`scales.MINIATURES`) the hyperparameters are then mapped by its rule (at that
    protocol), and the ones mapped from are kept in `Config.source_hparams`.
    """
    override = {**({"model": model} if model else {}), **(protocol or {})}
    protocol = {**scales.SCALES[scale], **(protocol or {})}
    configs = []
    for run in runs:
        hp = {**run.hparams, **(decay or {})}
        c = Config(name=run.name, optimizer=run.optimizer, data=data_spec, seed=seed,
                   **{**hp, **protocol, **run.settings, **override})
        configs.append(scaled(c, scale, hp, protocol, run.settings.get("width")).validate())
    return with_seeds(configs, seeds)


def scaled(config: Config, scale: str, hparams: dict, protocol: dict | None = None,
           run_width: int | None = None) -> Config:
    """`config` with its hyperparameters mapped by the scale's miniature rule, if it has one
    (at `protocol`, default the scale's), and its decay factors measured at the source's
    width (`run_width`: the width the run fixes, if it does)."""
    rule = scales.MINIATURES.get(scale)
    if rule is None:
        return config
    used = rule.map_hparams(hparams, protocol or scales.SCALES[scale], config.base_lr)
    changed = tuple((k, hparams[k]) for k in sorted(used) if used[k] != hparams.get(k))
    return dataclasses.replace(config, **{k: used[k] for k, _ in changed},
                               source_hparams=changed, factor_width=rule.factor_width(run_width))


def vmap_groups(configs: list[Config]) -> list[list[Config]]:
    """The runs that can train together (same `Config.shared_key`), in family order: one
    group per width of txp, say."""
    groups: dict[tuple, list[Config]] = {}
    for c in configs:
        groups.setdefault(c.shared_key(), []).append(c)
    return list(groups.values())


def groups_of(configs: list[Config], parallel: str) -> list[list[Config]]:
    """What trains in one `train` call (or one array task): each run alone (sequential), or
    the `vmap_groups`."""
    return vmap_groups(configs) if parallel == "vmap" else [[c] for c in configs]


def train_family(configs: list[Config], family_dir: Path, args, parallel: str) -> int:
    """Train the runs not finished yet (under the family lock); return how many trained."""
    from wdjax.training.runlog import is_finished
    from wdjax.training.train import prepare_run_dir, train

    def load() -> data.Dataset:
        dataset = data.load(configs[0].data, train_subset=configs[0].train_subset,
                            test_subset=configs[0].test_subset)
        cli.check_images(dataset)
        return dataset

    if not args.force_name:
        for c in configs:  # refuse conflicting runs before anything is written
            if not is_finished(family_dir, c):
                prepare_run_dir(family_dir, c, force=False)
    # Bad images are found before the lock; a finished run removed meanwhile loads it late.
    dataset = None if all(is_finished(family_dir, c) for c in configs) else load()
    with storage.lock(family_dir):
        todo = [c for c in configs if not is_finished(family_dir, c)]
        if len(configs) > len(todo):
            print(f"{len(configs) - len(todo)} finished run(s) skipped")
        for group in filter(None, groups_of(todo, parallel)):
            train(group, family_dir, dataset=dataset or load(), force=args.force_name,
                  progress=not args.no_progress, devices=args.devices,
                  tensorboard=tb.enabled(args.tensorboard))
    return len(todo)


def _shown(c: Config) -> Config:
    """For --dry-run: a tau_epochs run's weight decay where the epoch's size is known."""
    if c.tau_epochs is None or c.train_subset is None:
        return c
    return c.with_timescale(math.ceil(c.train_subset / c.batch_size))


def protocol(args) -> tuple[str, str, str]:
    """(scale, why, parallel). A job array's tasks run on the cluster's accelerators, not on
    the submitting host: full scale, one run per task, unless asked otherwise."""
    if args.launcher == "slurm" and args.scale is None:
        scale, why = "full", "slurm: on the cluster's accelerators"
    else:
        scale, why = scales.choose(args.scale)
    default = "sequential" if args.launcher != "local" else scales.default_parallel()
    return scale, why, args.parallel or default


def protocol_override(args) -> dict:
    """The protocol fields the `PROTOCOL_FLAGS` and --precision given replace."""
    names = [flag.removeprefix("--").replace("-", "_") for flag in PROTOCOL_FLAGS]
    names.append("precision")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def collect_command(family: registry.Family, scale: str, out: Path, args) -> str:
    """The command that builds this sweep's table later (``--collect``)."""
    words = ["--name", family.name, "--scale", scale, "--out", str(out)]
    words += ["--runs", args.runs] if args.runs else []
    for field, value in protocol_override(args).items():
        words += [f"--{field.replace('_', '-')}", str(value)]
    words += ["--seeds", str(args.seeds)] if args.seeds != scales.SEEDS.get(scale, 1) else []
    words += ["--baseline", args.baseline] if args.baseline else []
    return " ".join(["python -m experiments.sweep", *map(shlex.quote, words), "--collect"])


def write_table(family: registry.Family, runs: Sequence[registry.Run],
                configs: Sequence[Config], family_dir: Path, scale: str, args) -> None:
    """The table, CSV and pictures (and the HParams table with TensorBoard on); printed."""
    with storage.lock(family_dir):
        rows = report.write_results(family, runs, family_dir, scale, args.baseline)
    if tb.enabled(args.tensorboard):
        tb.write_family_hparams(family_dir, [str(c.run_path) for c in configs])
    print("\n" + "\n".join([*report.notebook_lines(rows), report.verdict(rows)]))


def run(configs: list[Config], family_dir: Path, args, parallel: str, collect: str) -> bool:
    """Train what is unfinished here or as a job array; whether to build the table now."""
    from wdjax.training.runlog import move_into_seed_dir

    if any(c.seed_dir for c in configs):  # a run trained with one seed becomes one of many
        with storage.lock(family_dir):
            for name in dict.fromkeys(c.name for c in configs):
                move_into_seed_dir(family_dir / name)
    if args.launcher == "local":
        trained = train_family(configs, family_dir, args, parallel)
        print(f"{trained} run(s) trained")
        return True
    return launch.run_sweep(groups_of(configs, parallel), family_dir, args,
                            tensorboard=tb.enabled(args.tensorboard), collect_command=collect)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    launch.resources(args)  # flags that need (or exclude) a launcher: refused first
    if tb.enabled(args.tensorboard):
        tb.require()
    cli.start_devices(args)
    if args.list:
        print(list_families())
        return 0
    if not args.name:
        raise cli.UsageError("--name is required; families: " + ", ".join(registry.FAMILIES))
    family = registry.get_family(args.name)
    names = [n.strip() for n in args.runs.split(",")] if args.runs else None
    runs = registry.select_runs(family, names)
    report.check_baseline(args.baseline)
    scale, why, parallel = protocol(args)
    args.seeds = args.seeds or scales.SEEDS.get(scale, 1)
    configs = configs_for(family, runs, scale, data.resolve_source(args.data), args.seed,
                          args.model, cli.decay_override(args), args.seeds,
                          protocol_override(args))
    out = Path(args.out or f"results/{scale}")
    family_dir = out / family.name
    if args.collect:
        if not family_dir.is_dir():
            raise storage.RunError(f"nothing to collect: {family_dir} does not exist")
        write_table(family, runs, configs, family_dir, scale, args)
        print(f"\n{family.name}: table, CSV and pictures in {family_dir}")
        return 0
    seeds = f" x {args.seeds} seeds" if args.seeds > 1 else ""
    print(f"sweep {family.name}: {len(runs)} runs{seeds} at {scale} scale ({why}), {parallel}; "
          f"results in {family_dir}")
    if args.dry_run:
        print("protocol: " + json.dumps({**scales.SCALES[scale], **protocol_override(args)}))
        for c in configs:
            print(json.dumps(_shown(c).to_dict()))
        if any(c.tau_epochs is not None for c in configs):
            print("tau_epochs runs: weight_decay = 1 / (tau_epochs * lr * steps_per_epoch), "
                  "shown from train_subset; set when the data is loaded")
        print("\n".join(report.dry_run_lines(family, runs, scale, args.baseline)))
        return 0

    report.check_baseline(args.baseline, runs, family_dir)
    data.check_source(configs[0].data)  # resolved in configs_for
    storage.check_writable(out)
    t0 = time.time()
    if run(configs, family_dir, args, parallel,
           collect_command(family, scale, out, args)):
        write_table(family, runs, configs, family_dir, scale, args)
        print(f"\n{family.name}: done in {time.time() - t0:.0f} s; table, CSV and pictures "
              f"in {family_dir}")
    return 0


if __name__ == "__main__":
    cli.run_main(main, sys.argv[1:])
