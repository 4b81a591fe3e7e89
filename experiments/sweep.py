"""Re-run a family of the notebook: ``python -m experiments.sweep --name dxp``.

Runs train under ``<out>/<family>/<run>/`` (finished ones skipped, unfinished resumed), then the
table (`experiments.report`), CSV and pictures; ``--launcher slurm``: one SLURM job array."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from experiments import cli, launch, registry, report, scales
from wdjax import data, storage
from wdjax.training import tensorboard as tb
from wdjax.training.config import MODELS, Config, with_seeds
from wdjax.training.runlog import is_finished, move_into_seed_dir


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m experiments.sweep", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--name", help=f"family: {', '.join(registry.FAMILIES)}")
    a("--list", action="store_true", help="list the families and exit")
    a("--dry-run", action="store_true", help="print every run's config and exit")
    a("--scale", choices=tuple(scales.SCALES), default=None,
      help="full: the notebook's protocol; preview: its miniature (3 seeds); quick: a CPU smoke "
           "run; medium: quick, 3 seeds (default: full on GPU/TPU or SLURM, preview on CPU)")
    a("--runs", default=None, help="comma-separated subset of the family's runs")
    cli.add_run_flags(p)
    a("--parallel", choices=("vmap", "sequential"), default=None,
      help="train the runs together or one by one (default: per backend; SLURM: sequential)")
    a("--out", default=None, help="output directory (default results/<scale>)")
    a("--seeds", type=cli.integer("--seeds"), default=None,
      help="seeds per run, seed, seed+1, ... in RUN/seed<s>/ (default: the scale's): the table "
           "gives mean, interval and a t-test; adding seeds later reuses the finished ones")
    a("--model", choices=MODELS, default=None,
      help="train every run on this model instead of the family's (default: vgg)")
    cli.add_hparam_flags(p, decay_only=True)
    a("--baseline", metavar="RUN", help="the run (of any family) the others are tested against "
      "(default: the family's base in the notebook, else the best mean)")
    a("--force-name", action="store_true", help="replace existing runs with other configs")
    a("--collect", action="store_true",
      help="train nothing: build the table from the runs on disk (after --no-wait)")
    launch.add_args(p)
    cli.add_device_args(p)
    return p


def configs_for(family: registry.Family, runs: Sequence[registry.Run], scale: str,
                data_spec: str | None, seed: int, model: str | None = None,
                decay: dict | None = None, seeds: int = 1,
                protocol: dict | None = None) -> list[Config]:
    """Validated Configs per run and seed: scale's protocol < run settings < `protocol`, `decay`.
    A miniature scale maps the hyperparameters by its rule (the originals: `source_hparams`)."""
    override = {**({"model": model} if model else {}), **(protocol or {})}
    protocol = {**scales.SCALES[scale], **(protocol or {})}
    rule = scales.MINIATURES.get(scale)
    configs = []
    for run in runs:
        hp = {**run.hparams, **(decay or {})}
        c = Config(name=run.name, optimizer=run.optimizer, data=data_spec, seed=seed,
                   **{**hp, **protocol, **run.settings, **override})
        if rule is not None:  # decay factors measured at the width the run fixes, if it does
            used = rule.map_hparams(hp, protocol, c.base_lr)
            changed = tuple((k, hp[k]) for k in sorted(used) if used[k] != hp.get(k))
            c = dataclasses.replace(c, **{k: used[k] for k, _ in changed}, source_hparams=changed,
                                    factor_width=rule.factor_width(run.settings.get("width")))
        configs.append(c.validate())
    return with_seeds(configs, seeds)


def vmap_groups(configs: list[Config], parallel: str = "vmap") -> list[list[Config]]:
    """What trains in one `train` call (or array task): runs alone, or by `Config.shared_key`."""
    if parallel != "vmap":
        return [[c] for c in configs]
    groups: dict[tuple, list[Config]] = {}
    for c in configs:
        groups.setdefault(c.shared_key(), []).append(c)
    return list(groups.values())


def train_family(configs: list[Config], family_dir: Path, args, parallel: str) -> int:
    """Train the runs not finished yet (under the family lock); return how many trained."""
    from wdjax.training.train import train

    todo = [c for c in configs if not is_finished(family_dir, c)]
    # Conflicts and bad images are found before the lock (a run removed meanwhile: loaded late).
    dataset = cli.load_data(family_dir, todo, args.force_name) if todo else None
    with storage.lock(family_dir):
        todo = [c for c in configs if not is_finished(family_dir, c)]
        if len(configs) > len(todo):
            print(f"{len(configs) - len(todo)} finished run(s) skipped")
        for group in filter(None, vmap_groups(todo, parallel)):
            dataset = dataset or cli.load_data(family_dir, todo, args.force_name)
            train(group, family_dir, dataset=dataset, force=args.force_name,
                  progress=not args.no_progress, devices=args.devices,
                  tensorboard=args.tensorboard)
    return len(todo)


def protocol_override(args) -> dict:
    """The protocol fields the `cli.PROTOCOL_FLAGS` and --precision given replace."""
    names = [*(f.removeprefix("--").replace("-", "_") for f in cli.PROTOCOL_FLAGS), "precision"]
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


def write_table(family: registry.Family, runs: Sequence[registry.Run], configs: Sequence[Config],
                family_dir: Path, scale: str, args, done: str = "") -> None:
    """The table, CSV and pictures (and the HParams table with TensorBoard on); printed."""
    with storage.lock(family_dir):
        rows = report.write_results(family, runs, family_dir, scale, args.baseline)
    if args.tensorboard:
        tb.write_family_hparams(family_dir, [str(c.run_path) for c in configs])
    print("\n" + "\n".join([*report.notebook_lines(rows), report.verdict(rows)]))
    print(f"\n{family.name}: {done}table, CSV and pictures in {family_dir}")


def dry_run(family: registry.Family, runs: Sequence[registry.Run], configs: Sequence[Config],
            scale: str, args) -> None:
    """Print the protocol, every run's config and what the table will compare."""
    print("protocol: " + json.dumps({**scales.SCALES[scale], **protocol_override(args)}))
    for c in configs:
        if c.tau_epochs is not None and c.train_subset is not None:  # the epoch's size is known
            c = c.with_timescale(math.ceil(c.train_subset / c.batch_size))
        print(json.dumps(c.to_dict()))
    if any(c.tau_epochs is not None for c in configs):
        print("tau_epochs runs: weight_decay = 1 / (tau_epochs * lr * steps_per_epoch), "
              "shown from train_subset; set when the data is loaded")
    print("\n".join(report.dry_run_lines(family, runs, scale, args.baseline)))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    resources = launch.resources(args)  # flags that need (or exclude) a launcher: refused first
    cli.start(args)
    if args.list:
        print(f"{'family':9} {'optimizer':32} {'varies':13} runs  description")
        for f in registry.FAMILIES.values():
            print(f"{f.name:9} {f.optimizer:32} {f.varies:13} {len(f.runs):4}  {f.description}")
        return 0
    if not args.name:
        raise cli.UsageError("--name is required; families: " + ", ".join(registry.FAMILIES))
    family = registry.get_family(args.name)
    runs = registry.select_runs(family, [n.strip() for n in args.runs.split(",")]
                                if args.runs else None)
    report.check_baseline(args.baseline)
    if args.launcher == "slurm" and args.scale is None:  # a job array: full scale, a run a task
        scale, why = "full", "slurm: on the cluster's accelerators"
    else:
        scale, why = scales.choose(args.scale)
    parallel = args.parallel or (
        "sequential" if args.launcher != "local" else scales.default_parallel())
    args.seeds = args.seeds or scales.SEEDS.get(scale, 1)
    configs = configs_for(family, runs, scale, data.resolve_source(args.data), args.seed,
                          args.model, cli.decay_override(args), args.seeds, protocol_override(args))
    out = Path(args.out or f"results/{scale}")
    family_dir = out / family.name
    if args.collect:
        if not family_dir.is_dir():
            raise storage.RunError(f"nothing to collect: {family_dir} does not exist")
        write_table(family, runs, configs, family_dir, scale, args)
        return 0
    seeds = f" x {args.seeds} seeds" if args.seeds > 1 else ""
    print(f"sweep {family.name}: {len(runs)} runs{seeds} at {scale} scale ({why}), {parallel}; "
          f"results in {family_dir}")
    if args.dry_run:
        dry_run(family, runs, configs, scale, args)
        return 0

    report.check_baseline(args.baseline, runs, family_dir)
    data.check_source(configs[0].data)  # resolved in configs_for
    storage.check_writable(out)
    t0 = time.time()
    if any(c.seed_dir for c in configs):  # a run trained with one seed becomes one of many
        with storage.lock(family_dir):
            for name in dict.fromkeys(c.name for c in configs):
                move_into_seed_dir(family_dir / name)
    if args.launcher == "local":
        print(f"{train_family(configs, family_dir, args, parallel)} run(s) trained")
    elif not launch.run_sweep(vmap_groups(configs, parallel), family_dir, args, resources,
                              collect_command(family, scale, out, args)):
        return 0  # --no-wait: the table is built later
    write_table(family, runs, configs, family_dir, scale, args,
                f"done in {time.time() - t0:.0f} s; ")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
