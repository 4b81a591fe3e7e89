"""Train one run: ``python -m experiments.train --name NAME --optimizer SGD_var_dup2 ...``.

Flags follow the original script (its short forms ``-n -o -wd -L1 -nb -b -lr`` work too).
Re-running the same command resumes an unfinished run from its latest checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from experiments import cli
from wdjax import data, records, schemes
from wdjax.config import MODELS, Config


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
      help="vgg: the notebook's VGG; resnet18: a CIFAR ResNet-18 (width 2 * --base)")
    a("-nb", "--num-base", "--base", dest="base", type=cli.integer("--base"), default=d.base,
      help="model width (channels of the first convolution)")
    a("-b", "--batch-size", type=cli.integer("--batch-size"), default=d.batch_size)
    a("--stages", type=cli.integer("--stages"), default=d.stages,
      help="learning-rate stages (lr halves after each)")
    a("--epochs-per-stage", type=cli.integer("--epochs-per-stage"), default=d.epochs_per_stage)
    a("--data", default=None, help=f"tfds:NAME or folder:PATH (default ${data.ENV_DATA}, "
      f"else {data.DEFAULT_SOURCE})")
    a("--train-subset", type=cli.integer("--train-subset"), default=None)
    a("--test-subset", type=cli.integer("--test-subset"), default=None)
    a("--seed", type=cli.integer("--seed", low=0), default=d.seed)
    a("--log-every", type=cli.integer("--log-every"), default=d.log_every,
      help="steps between loss / norm log lines")
    a("--conv-impl", choices=("xla", "im2col", "hybrid"), default=None,
      help="convolution formulation (default: fastest for the backend)")
    a("--histograms", action="store_true", help="draw activation histograms at the end")
    a("--out", default="runs", help="output directory (default ./runs)")
    a("--force-name", action="store_true",
      help="replace a finished run or one with a different config (the old one is kept "
           "aside as NAME.replaced-TIME)")
    a("--no-progress", action="store_true", help="no progress bar")
    cli.add_device_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cli.start_devices(args)
    opts = vars(args)
    out, force, quiet = opts.pop("out"), opts.pop("force_name"), opts.pop("no_progress")
    devices = opts.pop("devices")
    for k in ("distributed", "coordinator", "num_processes", "process_id"):
        opts.pop(k)
    opts["data"] = data.resolve_source(opts["data"])
    config = Config(**opts).validate()
    # Everything that can be checked is checked before anything is created.
    data.check_source(config.data)
    out_dir = records.check_writable(out)
    import jax

    from wdjax.train import prepare_run_dir, train

    if not force:
        prepare_run_dir(out_dir, config, force=False)  # refuses conflicts, writes nothing
    # Decoding finds bad images (size, mode, damage) before --force-name moves a run aside.
    dataset = data.load(config.data, train_subset=config.train_subset,
                        test_subset=config.test_subset)
    cli.check_images(dataset)
    # One trainer per run name, as one sweep per family (process 0 of a cluster holds it);
    # taken after the checks above, which write nothing, so a refused command touches nothing.
    with (records.lock(out_dir, "training run", f".{config.name}.lock")
          if jax.process_index() == 0 else contextlib.nullcontext()):
        summary = train(config, out_dir, dataset=dataset, force=force, progress=not quiet,
                        devices=devices)[0]
    if summary.get("diverged"):
        print(f"{config.name}: diverged at step {summary['diverged']['step']}")
    else:
        print(f"{config.name}: test {summary['final_test_accuracy']:.4f} "
              f"(train {summary['final_train_correct']}/{summary['train_total']}), best "
              f"{summary['best_test_correct']} at epoch {summary['best_epoch']}; "
              f"records in {out_dir / config.name}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
