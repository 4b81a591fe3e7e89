"""Runs one multi-device scenario for tests/test_parallel.py in a fresh process.

The device count must be fixed before JAX starts, so each scenario runs here under
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and prints one JSON line.
"""

import functools
import json
import sys

import jax
import numpy as np

# One batch of 64 training images: each epoch of `cfg` is one step, so the meshes below are
# compared after one step, where the math says they agree up to the order of float sums.
# After several steps they need not: BatchNorm over near-dead channels at width 4 divides
# by a tiny variance and amplifies rounding chaotically.
ONE_STEP = 64


def tiny_dataset(archive: str):
    from wdjax import data

    return data.load(f"folder:{archive}", train_subset=ONE_STEP, test_subset=128)


def cfg(name: str, **kw):
    from wdjax.training import train

    base = dict(width=4, batch_size=64, stages=2, epochs_per_stage=1, log_every=2,
                conv_impl="xla", eval_batch_size=64, optimizer="SGD_var_dup2_last1_mult",
                weight_decay=1e-3, momentum=0.9, lr=0.01)
    return train.Config(name=name, **{**base, **kw})


def one_step(archive: str) -> dict:
    """The loss and parameters after one step on all devices vs on one device."""
    from wdjax.training import batches, parallel, steps, train

    ds = tiny_dataset(archive)
    c = cfg("s")
    out = {}
    for devices in (1, jax.device_count()):
        mesh = parallel.make_mesh(1, devices)
        prog = train.programs([c], ds.train_images.shape[1:], 10, len(ds.train_labels), mesh)
        state = jax.device_get(steps.initial_states([c], prog, steps.starts([c], prog))[0])
        start = jax.tree.leaves(state.params)
        rep, rows = parallel.replicated(mesh), parallel.rows_sharding(mesh)
        idx, mask = batches.epoch_batches(0, 0, len(ds.train_labels), c.batch_size)
        state, m = prog.step(parallel.put_tree(state, rep), parallel.put(ds.train_images, rep),
                             parallel.put(ds.train_labels, rep), parallel.put(idx, rows),
                             parallel.put(mask, rows), 0, 0,
                             parallel.put(np.asarray(jax.random.PRNGKey(0)), rep))
        out[devices] = (float(m["loss"]), [np.asarray(x) for x in jax.tree.leaves(state.params)])
    (l1, p1), (ln, pn) = out[1], out[jax.device_count()]
    # Relative to the update: the parameters themselves agree far better.
    kernel_err = max(float(np.linalg.norm(b - a) / np.linalg.norm(a - p0))
                     for p0, a, b in zip(start, p1, pn, strict=True) if a.ndim == 4)
    return dict(devices=jax.device_count(), loss=[l1, ln], kernel_err=kernel_err)


def sweep(archive: str, out: str) -> dict:
    """Two vmapped runs, one step each, on a runs x data mesh vs the same on one device."""
    from wdjax.training import parallel, train

    ds = tiny_dataset(archive)
    runs = [cfg("a", stages=1, last1_mult=3.0),
            cfg("b", stages=1, last1_mult=30.0, weight_decay=3e-3)]
    for devices in (1, jax.device_count()):
        train.train(runs, f"{out}/d{devices}", dataset=ds, progress=False, plots=False,
                    devices=devices)
    return dict(runs=[_compare(c, ds, f"{out}/d1/{c.name}",
                               f"{out}/d{jax.device_count()}/{c.name}", 1) for c in runs],
                mesh=parallel.describe(parallel.make_mesh(2)))


def sweep_eval(archive: str) -> dict:
    """The trainer's evaluation (`train.evaluate`, test data placed by the trainer) of the
    same variables of two vmapped runs on a runs x data mesh, on one device, and of each
    run alone on one device. The variables are the initial ones perturbed per run (the
    logit kernel starts at 0, which would make every logit equal), the batch statistics
    too; 128 test images in batches of 50, the last one padded and masked."""
    from types import SimpleNamespace

    from wdjax.training import parallel, steps, train

    ds = tiny_dataset(archive)
    runs = [cfg("a", stages=1, eval_batch_size=50, last1_mult=3.0),
            cfg("b", stages=1, eval_batch_size=50, last1_mult=30.0, weight_decay=3e-3)]
    rng = np.random.default_rng(0)
    init = steps.initial_states(runs, *_prog_starts(runs, ds, parallel.make_mesh(1, 1)))
    params = [jax.tree.map(lambda p: p + _he_std(p) * rng.standard_normal(p.shape, np.float32),
                           jax.device_get(s.params)) for s in init]
    stats = [jax.tree.map(lambda v: v + rng.uniform(0, 0.5, v.shape).astype(np.float32),
                          jax.device_get(s.batch_stats)) for s in init]

    def evaluate(configs, mesh, p, b):
        prog, _ = _prog_starts(configs, ds, mesh)
        stacked = len(configs) > 1
        if stacked:
            p, b = steps.stack(p), steps.stack(b)
        put = functools.partial(parallel.put_tree, sharding=parallel.run_sharding(mesh, stacked))
        group = SimpleNamespace(arrays=train._device_data(ds, configs, mesh), prog=prog,
                                state=SimpleNamespace(params=put(p), batch_stats=put(b)))
        correct, loss = train.evaluate(group)
        return dict(mesh=parallel.describe(mesh), correct=correct.tolist(), loss=loss.tolist())

    return dict(sharded=evaluate(runs, parallel.make_mesh(2), params, stats),
                one_device=evaluate(runs, parallel.make_mesh(2, 1), params, stats),
                alone=[evaluate([c], parallel.make_mesh(1, 1), p, b)
                       for c, p, b in zip(runs, params, stats, strict=True)])


def _he_std(p: np.ndarray) -> float:
    """A kernel's initial standard deviation (sqrt(2 / fan_in)); 0.1 for vectors."""
    return float(np.sqrt(2 / np.prod(p.shape[:-1]))) if p.ndim == 4 else 0.1


def _prog_starts(configs, ds, mesh):
    from wdjax.training import steps

    prog = steps.programs(configs, ds.train_images.shape[1:], 10, len(ds.train_labels), mesh)
    return prog, steps.starts(configs, prog)


def checkpoint(archive: str, out: str, phase: str) -> dict:
    """phase 'sharded': epoch 1 (one step) on all devices; 'single': epoch 2 (one step) on
    one device from that checkpoint, and both epochs on one device as the reference."""
    from wdjax import storage
    from wdjax.training import train

    ds = tiny_dataset(archive)
    c = cfg("ck")
    if phase == "sharded":
        train.train(c, f"{out}/resumed", dataset=ds, progress=False, plots=False,
                    stop_after_epochs=1)
        return dict(epochs=len(storage.read_jsonl(f"{out}/resumed/ck/metrics.jsonl")))
    train.train(c, f"{out}/resumed", dataset=ds, progress=False, plots=False, devices=1)
    train.train(c, f"{out}/ref", dataset=ds, progress=False, plots=False, devices=1)
    return dict(epochs=len(storage.read_jsonl(f"{out}/resumed/ck/metrics.jsonl")),
                **{f"epoch{e}": _compare(c, ds, f"{out}/ref/ck", f"{out}/resumed/ck", e)
                   for e in (1, 2)})


def multihost(archive: str, out: str, pid: int, port: int) -> dict:
    from wdjax import storage
    from wdjax.training import parallel, train

    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    ds = tiny_dataset(archive)
    s = train.train(cfg("mh"), out, dataset=ds, progress=False, plots=False)[0]
    rows = storage.read_jsonl(f"{out}/mh/metrics.jsonl") if pid == 0 else []
    return dict(pid=pid, processes=jax.process_count(), devices=jax.device_count(),
                test=s["final_test_correct"], epochs=len(rows))


def single(archive: str, out: str, multihost_out: str) -> dict:
    """The multihost run on one device, compared with it after its first epoch (one step)."""
    from wdjax.training import train

    ds = tiny_dataset(archive)
    train.train(cfg("mh"), out, dataset=ds, progress=False, plots=False, devices=1)
    return _compare(cfg("mh"), ds, f"{out}/mh", f"{multihost_out}/mh", 1)


def eval510(archive: str, out: str) -> dict:
    """One step on 1 device and on all, with a 510-image test set (not divisible by 4)."""
    from wdjax import data, storage
    from wdjax.training import train

    ds = data.load(f"folder:{archive}", train_subset=ONE_STEP, test_subset=510)
    c = cfg("e", stages=1, eval_batch_size=510)
    res = {}
    for devices in (1, jax.device_count()):
        train.train(c, f"{out}/d{devices}", dataset=ds, progress=False, plots=False,
                    devices=devices)
        row = storage.read_jsonl(f"{out}/d{devices}/e/metrics.jsonl")[-1]
        res[devices] = dict(train_loss=row["train_loss"], test_loss=row["test_loss"],
                            test_total=row["test_total"])
    res["monitor_err"] = _monitor_error(c, ds, f"{out}/d1/e")
    return res


def _params(c, ds, run_dir: str, epoch: int) -> tuple[list, list]:
    """The kernels (with their names) of run `c` at its start and in its checkpoint after
    `epoch` epochs, restored on one device."""
    from wdjax.decay.trees import path_name
    from wdjax.training import checkpoint, parallel, steps

    prog = steps.programs([c], ds.train_images.shape[1:], 10, len(ds.train_labels),
                          parallel.make_mesh(1, 1))
    start = steps.starts([c], prog)
    after, extra = checkpoint.Manager(f"{run_dir}/checkpoints").restore(
        epoch, steps.initial_states([c], prog, start)[0])
    assert extra["epoch"] == epoch, (run_dir, extra["epoch"])
    p0 = jax.tree_util.tree_leaves_with_path(start[0].variables["params"])
    return ([(path_name(path), np.asarray(p, np.float64)) for path, p in p0 if p.ndim >= 2],
            [np.asarray(p, np.float64) for p in jax.tree.leaves(after.params) if p.ndim >= 2])


def _compare(c, ds, want_dir: str, got_dir: str, epoch: int) -> dict:
    """Run `got_dir` against `want_dir` after `epoch`: the epoch row's losses, and the
    largest ||got - want|| / ||want - initial|| of a kernel (its error relative to how far
    training moved it)."""
    from wdjax import storage

    start, want = _params(c, ds, want_dir, epoch)
    _, got = _params(c, ds, got_dir, epoch)
    rows = [storage.read_jsonl(f"{d}/metrics.jsonl")[epoch - 1] for d in (want_dir, got_dir)]
    return dict(train_loss=[r["train_loss"] for r in rows],
                test_loss=[r["test_loss"] for r in rows],
                kernel_err=max(float(np.linalg.norm(g - w) / np.linalg.norm(w - p0))
                               for (_, p0), w, g in zip(start, want, got, strict=True)))


def _monitor_error(c, ds, run_dir: str) -> float:
    """Largest relative error of the epoch row's ||p|| and update norm of a one-step epoch
    against the initial params and the checkpointed params after that step."""
    from wdjax import storage

    start, after = _params(c, ds, run_dir, 1)
    tensors = storage.read_jsonl(f"{run_dir}/metrics.jsonl")[-1]["tensors"]
    return max(max(abs(tensors[name]["param"] / np.linalg.norm(p0) - 1),
                   abs(tensors[name]["update"] / np.linalg.norm(p1 - p0) - 1))
               for (name, p0), p1 in zip(start, after, strict=True))


def four_devices(archive: str, out: str) -> dict:
    """The 4-device scenarios in one process: one start-up, one data load, and the programs
    they share compiled once."""
    return dict(step=one_step(archive), eval510=eval510(archive, f"{out}/eval510"),
                sweep=sweep(archive, f"{out}/sweep"), sweep_eval=sweep_eval(archive),
                checkpoint=checkpoint(archive, f"{out}/checkpoint", "sharded"))


if __name__ == "__main__":
    scenario, archive, *rest = sys.argv[1:]
    fn = dict(step=one_step, sweep=sweep, checkpoint=checkpoint, multihost=multihost,
              single=single, eval510=eval510, sweep_eval=sweep_eval,
              four_devices=four_devices)[scenario]
    args = [int(x) if x.isdigit() else x for x in rest]
    print("RESULT " + json.dumps(fn(archive, *args)), flush=True)
