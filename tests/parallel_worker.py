"""Runs one multi-device scenario for tests/test_parallel.py in a fresh process.

The device count must be fixed before JAX starts, so each scenario runs here under
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and prints one JSON line.
"""

import json
import sys

import jax
import numpy as np


def tiny_dataset(archive: str):
    from wdjax import data

    return data.load(f"folder:{archive}", train_subset=256, test_subset=128)


def cfg(name: str, **kw):
    from wdjax.training import train

    # A small lr keeps float-rounding differences from being amplified chaotically, so
    # runs on different meshes stay comparable after a few steps.
    base = dict(base=4, batch_size=64, stages=2, epochs_per_stage=1, log_every=2,
                conv_impl="xla", eval_batch_size=64, optimizer="SGD_var_dup2_last1_mult",
                weight_decay=1e-3, momentum=0.9, lr=0.01)
    return train.Config(name=name, **{**base, **kw})


def one_step(archive: str) -> dict:
    """Loss and parameters after two steps on all devices vs on one device."""
    from wdjax.training import batches, parallel, steps, train

    ds = tiny_dataset(archive)
    c = cfg("s")
    out = {}
    for devices in (1, jax.device_count()):
        mesh = parallel.make_mesh(1, devices)
        prog = train.programs([c], ds.train_images.shape[1:], 10, len(ds.train_labels), mesh)
        state = steps.initial_states([c], prog, steps.starts([c], prog))[0]
        state = parallel.put_tree(jax.device_get(state), parallel.replicated(mesh))
        rows = parallel.rows_sharding(mesh)
        idx, mask = batches.epoch_batches(0, 0, len(ds.train_labels), c.batch_size)
        rep = parallel.replicated(mesh)
        args = (parallel.put(ds.train_images, rep), parallel.put(ds.train_labels, rep),
                parallel.put(idx, rows), parallel.put(mask, rows))
        losses = []
        for i in range(2):
            state, m = prog.step(state, *args, 0, i, parallel.put(np.asarray(
                jax.random.PRNGKey(0)), rep))
            losses.append(float(m["loss"]))
        out[devices] = (losses, [np.asarray(x) for x in jax.tree.leaves(state.params)])
    (l1, p1), (ln, pn) = out[1], out[jax.device_count()]
    kernel_err = max(float(np.linalg.norm(a - b) / np.linalg.norm(a))
                     for a, b in zip(p1, pn, strict=True) if a.ndim == 4)
    loss_diff = max(abs(a - b) for a, b in zip(l1, ln, strict=True))
    return dict(devices=jax.device_count(), loss_diff=loss_diff, kernel_rel_err=kernel_err)


def sweep(archive: str, out: str) -> dict:
    """Two vmapped runs on a runs x data mesh vs the same on one device."""
    from wdjax import storage
    from wdjax.training import train

    ds = tiny_dataset(archive)
    runs = [cfg("a", last1_mult=3.0), cfg("b", last1_mult=30.0, weight_decay=3e-3)]
    res = {}
    for devices in (1, jax.device_count()):
        s = train.train(runs, f"{out}/d{devices}", dataset=ds, progress=False, plots=False,
                        devices=devices)
        res[devices] = [(x["final_train_correct"], x["final_test_correct"],
                         storage.read_jsonl(f"{out}/d{devices}/{x['name']}/metrics.jsonl")[-1]
                         ["train_loss"],
                         storage.read_jsonl(f"{out}/d{devices}/{x['name']}/steps.jsonl")[0]
                         ["loss"]) for x in s]
    from wdjax.training import parallel

    return dict(results=res, mesh=parallel.describe(parallel.make_mesh(2)))


def checkpoint(archive: str, out: str, phase: str) -> dict:
    """phase 'sharded': 1 epoch on all devices; 'single': resume it on 1 device / reference."""
    from wdjax import storage
    from wdjax.training import train

    ds = tiny_dataset(archive)
    c = cfg("ck")
    if phase == "sharded":
        train.train(c, f"{out}/resumed", dataset=ds, progress=False, plots=False,
                    stop_after_epochs=1)
        return dict(epochs=len(storage.read_jsonl(f"{out}/resumed/ck/metrics.jsonl")))
    resumed = train.train(c, f"{out}/resumed", dataset=ds, progress=False, plots=False,
                          devices=1)[0]
    ref = train.train(c, f"{out}/ref", dataset=ds, progress=False, plots=False, devices=1)[0]
    a = storage.read_jsonl(f"{out}/resumed/ck/metrics.jsonl")
    b = storage.read_jsonl(f"{out}/ref/ck/metrics.jsonl")
    return dict(resumed=resumed["final_test_correct"], ref=ref["final_test_correct"],
                loss=[a[-1]["train_loss"], b[-1]["train_loss"]], epochs=len(a))


def multihost(archive: str, out: str, pid: int, port: int) -> dict:
    from wdjax import storage
    from wdjax.training import parallel, train

    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    ds = tiny_dataset(archive)
    s = train.train(cfg("mh"), out, dataset=ds, progress=False, plots=False)[0]
    rows = storage.read_jsonl(f"{out}/mh/metrics.jsonl") if pid == 0 else []
    return dict(pid=pid, processes=jax.process_count(), devices=jax.device_count(),
                test=s["final_test_correct"], losses=[r["train_loss"] for r in rows])


def single(archive: str, out: str) -> dict:
    from wdjax import storage
    from wdjax.training import train

    s = train.train(cfg("mh"), out, dataset=tiny_dataset(archive), progress=False,
                    plots=False, devices=1)[0]
    rows = storage.read_jsonl(f"{out}/mh/metrics.jsonl")
    return dict(test=s["final_test_correct"], losses=[r["train_loss"] for r in rows])


def eval510(archive: str, out: str) -> dict:
    """One step on 1 device and on all, with a 510-image test set (not divisible by 4)."""
    from wdjax import data, storage
    from wdjax.training import train

    ds = data.load(f"folder:{archive}", train_subset=64, test_subset=510)
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


def _monitor_error(c, ds, run_dir: str) -> float:
    """Largest relative error of the epoch row's ||p|| and update norm of a one-step epoch
    against the initial params and the checkpointed params after that step."""
    from wdjax import storage
    from wdjax.analysis import units
    from wdjax.training import checkpoint, parallel, steps

    prog = steps.programs([c], ds.train_images.shape[1:], 10, len(ds.train_labels),
                          parallel.make_mesh(1, 1))
    start = steps.starts([c], prog)
    after, _ = checkpoint.Manager(f"{run_dir}/checkpoints").restore(
        1, steps.initial_states([c], prog, start)[0])
    tensors = storage.read_jsonl(f"{run_dir}/metrics.jsonl")[-1]["tensors"]
    errs = []
    for (path, p0), p1 in zip(jax.tree_util.tree_leaves_with_path(start[0].variables["params"]),
                              jax.tree.leaves(after.params), strict=True):
        if p0.ndim >= 2:
            p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
            mon = tensors[units.leaf_name(path)]
            errs += [abs(mon["param"] / np.linalg.norm(p0) - 1),
                     abs(mon["update"] / np.linalg.norm(p1 - p0) - 1)]
    return max(errs)


def four_devices(archive: str, out: str) -> dict:
    """The 4-device scenarios in one process: one start-up, one data load, and the programs
    they share compiled once."""
    return dict(step=one_step(archive), eval510=eval510(archive, f"{out}/eval510"),
                sweep=sweep(archive, f"{out}/sweep"),
                checkpoint=checkpoint(archive, f"{out}/checkpoint", "sharded"))


if __name__ == "__main__":
    scenario, archive, *rest = sys.argv[1:]
    fn = dict(step=one_step, sweep=sweep, checkpoint=checkpoint, multihost=multihost,
              single=single, eval510=eval510, four_devices=four_devices)[scenario]
    args = [int(x) if x.isdigit() else x for x in rest]
    print("RESULT " + json.dumps(fn(archive, *args)), flush=True)
