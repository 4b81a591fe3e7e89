"""Conv plans timed on the machine at hand, as cuDNN's autotuner: each pass of a new layer shape
is timed with every `candidates` method and the fastest kept in `cache_path`, keyed by machine
and shape. ``WDJAX_CONV_TUNE=0``: `wdjax.cpu.plan.RULES` instead."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jaxlib
import numpy as np

from wdjax import storage
from wdjax.cpu import ops
from wdjax.cpu.plan import PASSES, XLA, Method, Plan, chunk_for, im2col_method, winograd_method

ENV_TUNE = "WDJAX_CONV_TUNE"
ENV_CACHE = "WDJAX_CACHE"  # the same variable as wdjax.data.ENV_CACHE (a package above)
DEFAULT_CACHE_DIR = "~/.cache/wdjax"
CACHE_NAME = "conv-plans.json"
CACHE_VERSION = 1
REPEATS = 3
# Candidates' chunks: enough examples for their transformed input to fill about this much.
CHUNK_BYTES = 4 << 20

Shape = Sequence[int]


def enabled() -> bool:
    """Whether `wdjax.cpu.plan.conv_plan` tunes: unless ``$WDJAX_CONV_TUNE`` is ``0``."""
    return os.environ.get(ENV_TUNE, "1").strip() != "0"


def cache_path() -> Path:
    """``$WDJAX_CACHE/conv-plans.json`` (default ``~/.cache/wdjax/conv-plans.json``)."""
    where = os.environ.get(ENV_CACHE, "").strip() or DEFAULT_CACHE_DIR
    return Path(where).expanduser() / CACHE_NAME


@functools.cache  # read on every traced conv
def machine() -> str:
    """What a plan's speed depends on besides the shape: CPU model, core count, jaxlib."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                 "") or platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, jaxlib {jaxlib.__version__}"


def shape_key(x_shape: Shape, k_shape: Shape) -> str:
    return f"x{'x'.join(map(str, x_shape))} k{'x'.join(map(str, k_shape))}"


def candidates(x_shape: Shape, k_shape: Shape) -> list[Method]:
    """Every method a pass may run with: XLA's conv, im2col and (3x3 kernels) Winograd F(2x2)
    / F(4x4), on the whole batch and on chunks whose transformed input fits `CHUNK_BYTES`."""
    n, h, w, _ = x_shape
    kh, kw, cin, cout = k_shape
    c = max(cin, cout)

    def chunk(bytes_per_example: int) -> int:
        size = chunk_for(n, bytes_per_example, CHUNK_BYTES)
        return 0 if size == n else size

    out = [XLA, im2col_method(), im2col_method(chunk(kh * kw * h * w * c * 4))]
    if (kh, kw) == (3, 3):
        for tile in (2, 4):  # a (tile + 2)^2 transform per tile x tile block of the map
            blocks = -(-h // tile) * -(-w // tile)
            out += [winograd_method(tile),
                    winograd_method(tile, chunk((tile + 2) ** 2 * blocks * c * 4))]
    return list(dict.fromkeys(out))


def _pass_call(pass_: str, method: Method, x: jax.Array, k: jax.Array, g: jax.Array
               ) -> Callable[[], object]:
    """A compiled, warmed-up call of `ops.conv_<pass_>` by `method` (`g`: output cotangent)."""
    args = {"forward": (x, k), "input_grad": (g, k), "kernel_grad": (x, g, k)}[pass_]
    fn = functools.partial(getattr(ops, f"conv_{pass_}"), method=method)
    f = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(f(*args))
    return lambda: jax.block_until_ready(f(*args))


def time_passes(x_shape: Shape, k_shape: Shape, repeats: int = REPEATS) -> dict[str, dict]:
    """Per pass, each candidate's best time (ms) over `repeats` calls on the CPU, the
    candidates interleaved so that load from other processes hits them alike."""
    rng, cpu = np.random.default_rng(0), jax.devices("cpu")[0]
    with jax.ensure_compile_time_eval():  # run now, even when called while tracing a model
        x, k, g = (jax.device_put(rng.standard_normal(s, np.float32), cpu)
                   for s in (x_shape, k_shape, (*x_shape[:3], k_shape[3])))
        calls = {(p, m): _pass_call(p, m, x, k, g)
                 for p in PASSES for m in candidates(x_shape, k_shape)}
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(repeats):
            for key, call in calls.items():
                t0 = time.perf_counter()
                call()
                best[key] = min(best[key], (time.perf_counter() - t0) * 1e3)
    return {p: {m: t for (q, m), t in best.items() if q == p} for p in PASSES}


def _read(path: Path, warn: bool = True) -> dict[str, dict]:
    """The cache's plans by machine, ``{}`` when absent; a warning when unreadable."""
    try:
        data = json.loads(path.read_text())
        plans = data["plans"] if data.get("version") == CACHE_VERSION else None
        if isinstance(plans, dict) and all(isinstance(v, dict) for v in plans.values()):
            return plans
        raise ValueError("not a version-1 plan cache")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError, KeyError) as e:
        if warn:
            warnings.warn(f"conv plan cache {path} unreadable ({type(e).__name__}: {e}); "
                          "rebuilding it", stacklevel=2)
        return {}


def tuned_plan(x_shape: Shape, k_shape: Shape, repeats: int = REPEATS,
               path: Path | None = None) -> Plan:
    """This machine's fastest method per pass for a conv layer: read from the cache, else
    timed (`time_passes`) and added to it. An unreadable cache is rebuilt with a warning."""
    path = path or cache_path()
    here, key = machine(), shape_key(x_shape, k_shape)
    cached = _read(path).get(here, {}).get(key)
    with contextlib.suppress(TypeError, KeyError, IndexError, ValueError):  # absent or bad
        plan = Plan(*(Method(*cached[p]["method"]) for p in PASSES))
        ops.check_plan(plan, x_shape, k_shape)
        return plan
    print(f"wdjax: timing conv methods for {key} (first use on this machine)", file=sys.stderr,
          flush=True)
    times = time_passes(x_shape, k_shape, repeats)
    plan = Plan(*(min(times[p], key=times[p].get) for p in PASSES))
    entry = {p: dict(method=list(plan[i]), ms={str(m): round(t, 4) for m, t in times[p].items()})
             for i, p in enumerate(PASSES)}
    plans = _read(path, warn=False)  # again: another process may have added shapes
    plans.setdefault(here, {})[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.write_json(path, dict(version=CACHE_VERSION, plans=plans))
    except OSError as e:  # the plan is still good; only the next process re-times it
        warnings.warn(f"conv plan cache {path} not written ({e})", stacklevel=2)
    return plan
