"""Train one run: ``python -m experiments.train --name NAME --optimizer SGD_var_dup2 ...``.

Flags follow the original script (also ``-n -o -wd -L1 -nb -b -lr``); the same command resumes."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

from experiments import cli, scales
from wdjax import data, schemes, storage
from wdjax.analysis import stats
from wdjax.training.config import MODELS, Config, with_seeds
from wdjax.training.runlog import is_finished, move_into_seed_dir


def parser() -> cli.Parser:
    d = Config()
    p = cli.Parser(prog="python -m experiments.train", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("-n", "--name", required=True, help="run name (a directory under --out)")
    a("-o", "--optimizer", default=d.optimizer,
      help=f"named scheme, one of: {', '.join(schemes.names())}")
    cli.add_hparam_flags(p, d)
    a("--separate-decay", action="store_true", help="Adam: decoupled (AdamW-style) decay")
    a("--model", choices=MODELS, default=d.model,
      help="vgg: the notebook's VGG; resnet18: a CIFAR ResNet-18 (width 2 * --width)")
    a("-nb", "--width", dest="width", type=cli.integer("--width"), default=d.width,
      help="model width (channels of the first convolution)")
    a("-b", "--batch-size", type=cli.integer("--batch-size"), default=d.batch_size)
    cli.add_run_flags(p, d)
    a("--test-subset", type=cli.integer("--test-subset"), default=None)
    a("--seeds", type=cli.integer("--seeds"), default=1,
      help="train seeds seed, seed+1, ... (records in NAME/seed<s>/) and print mean ± s.e.")
    a("--log-every", type=cli.integer("--log-every"), default=d.log_every,
      help="steps between loss / norm log lines")
    a("--conv-impl", choices=("xla", "im2col", "hybrid"), default=None,
      help="convolution formulation (default: fastest for the backend)")
    a("--histograms", action="store_true", help="draw activation histograms at the end")
    a("--out", default="runs", help="output directory (default ./runs)")
    a("--force-name", action="store_true", help="replace a finished run or one with a different "
      "config (the old one is kept aside as NAME.replaced-TIME)")
    cli.add_device_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cli.start(args)
    args.data = data.resolve_source(args.data)
    fields = {f.name for f in dataclasses.fields(Config)}
    config = Config(**{k: v for k, v in vars(args).items() if k in fields}).validate()
    # Everything that can be checked is checked before anything is created.
    data.check_source(config.data)
    out_dir = storage.check_writable(args.out)
    import jax  # after cli.start, which may set the device count

    from wdjax.training.train import train

    configs = with_seeds([config], args.seeds)
    todo = [c for c in configs if args.force_name or not finished(out_dir, c)]
    # Decoding finds bad images (size, mode, damage) before --force-name moves a run aside.
    dataset = cli.load_data(out_dir, todo, args.force_name) if todo else None
    # One trainer per run name, as one sweep per family (process 0 of a cluster holds it);
    # taken after the checks above, which write nothing, so a refused command touches nothing.
    with (storage.lock(out_dir, "training run", f".{config.name}.lock")
          if jax.process_index() == 0 else contextlib.nullcontext()):
        if args.seeds > 1:  # a run trained with one seed becomes one of its seeds
            move_into_seed_dir(out_dir / config.name)
        todo = [c for c in configs if args.force_name or not finished(out_dir, c)]
        # The seeds train together where vmap is the backend's default.
        groups = [todo] if scales.default_parallel() == "vmap" else [[c] for c in todo]
        trained = {c.run_path: summary for g in filter(None, groups) for c, summary in zip(g, train(
            g, out_dir, dataset=dataset, force=args.force_name, progress=not args.no_progress,
            devices=args.devices, tensorboard=args.tensorboard), strict=True)}
    summaries = [trained.get(c.run_path) or storage.read_json(out_dir / c.run_path / "summary.json")
                 for c in configs]
    for c, summary in zip(configs, summaries, strict=True):
        print(result_line(c, summary, out_dir))
    finals = [s["final_test_accuracy"] for s in summaries if not s.get("diverged")]
    if len(finals) > 1:
        final = stats.summarize(finals)
        print(f"{config.name}: test {final.mean:.4f} ± {final.sem:.4f} (n={final.n}, ± the "
              f"standard error; 95% interval {final.low:.4f}..{final.high:.4f})")
    return 0


def finished(out_dir, c: Config) -> bool:
    """A finished seed of a multi-seed run (reused; a finished one-seed run is refused)."""
    return c.seed_dir and is_finished(out_dir, c)


def result_line(c: Config, summary: dict, out_dir) -> str:
    """One run's (or seed's) outcome and where its records are."""
    label = f"{c.name} seed {c.seed}" if c.seed_dir else c.name
    if summary.get("diverged"):
        return f"{label}: diverged at step {summary['diverged']['step']}"
    return (f"{label}: test {summary['final_test_accuracy']:.4f} "
            f"(train {summary['final_train_correct']}/{summary['train_total']}), best "
            f"{summary['best_test_correct']} at epoch {summary['best_epoch']}; "
            f"records in {out_dir / c.run_path}")


if __name__ == "__main__":
    cli.run_main(main)
