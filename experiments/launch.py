"""A sweep as one SLURM job array through submitit (``pip install 'wdjax[cluster]'``): each task
trains a group of configs into the local sweep's tree and resumes as it does; submitit's files go
to ``<family>/_jobs/<job id>/``, and the wait reads task states from ``squeue``, not ``sacct``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import cli
from wdjax import storage
from wdjax.training.config import Config
from wdjax.training.runlog import is_finished

# --launcher -> submitit cluster; "local" trains in-process, "local-submitit" (submitit's
# LocalExecutor: the same jobs as local processes) is for tests.
LAUNCHERS = {"local": None, "slurm": "slurm", "local-submitit": "local"}
POLL_S = 15.0  # seconds between looks at the run directories while waiting
JOBS_SUBDIR = "_jobs"  # not a valid run name, so never a run's directory
QUEUE_POLL_S = 60.0  # the most seconds between two squeue calls (sooner at first)
PENDING_GRACE_S = 120.0  # how long a task may pend for a reason that never clears
# squeue's pending reasons that waiting does not clear, and the flags that set the request.
UNSATISFIABLE = {"PartitionConfig": "--cpus-per-task, --gpus-per-task or --nodes",
                 "PartitionNodeLimit": "--nodes", "PartitionTimeLimit": "--timeout-min",
                 "BadConstraints": "--cpus-per-task or --gpus-per-task",
                 "ReqNodeNotAvail": "--partition"}
# Words of an sbatch refusal, and the flag to change.
_REFUSALS = (("gres", "--gpus-per-task (0 where the partition has no GPUs)"),
             ("partition", "--partition (sinfo lists them)"), ("time limit", "--timeout-min"),
             ("node count", "--nodes"),
             ("", "--cpus-per-task, --gpus-per-task, --nodes, --timeout-min or --partition"))
# "SomeError: message", the last line of a Python traceback.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each array task asks for (None: the cluster's default), and how many run at once."""

    partition: str | None = None
    gpus_per_task: int | None = None  # per host; None: `default_gpus` (slurm), 0 (local)
    cpus_per_task: int | None = None
    timeout_min: int = 24 * 60
    max_parallel: int | None = None  # array tasks running at once; None: all
    nodes: int = 1  # hosts per task; > 1 joins them with jax.distributed

    def validate(self) -> Resources:
        """ValueError (one line) naming the first bad field and what is allowed."""
        for field in dataclasses.fields(self):
            if field.name == "partition":  # a string, checked below
                continue
            value, optional = getattr(self, field.name), field.default is None
            low = 0 if field.name == "gpus_per_task" else 1
            if not ((value is None and optional) or (
                    isinstance(value, int) and not isinstance(value, bool) and value >= low)):
                raise ValueError(f"{field.name} must be an integer >= {low}"
                                 f"{' or unset' if optional else ''}, got {value!r}")
        if self.partition is not None and not self.partition.strip():
            raise ValueError("partition must be a SLURM partition name or unset, got ''")
        return self


def executor_parameters(n_tasks: int, resources: Resources, name: str) -> dict[str, Any]:
    """The keywords of a submitit ``AutoExecutor.update_parameters`` for `n_tasks` tasks."""
    resources.validate()
    optional = {"gpus_per_node": resources.gpus_per_task, "slurm_partition": resources.partition,
                "cpus_per_task": resources.cpus_per_task}
    # One process per host; JAX drives all of the host's GPUs.
    return dict(name=name, timeout_min=resources.timeout_min, nodes=resources.nodes,
                slurm_array_parallelism=min(resources.max_parallel or n_tasks, n_tasks),
                tasks_per_node=1, **{k: v for k, v in optional.items() if v is not None})


@dataclasses.dataclass
class GroupTask:
    """An array task's picklable job: train its group's unfinished runs into `family_dir`; on
    preemption or timeout submitit calls `checkpoint` and each run resumes from its last epoch."""

    distributed: bool = False
    force: bool = False
    train_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # `train` keywords

    def __call__(self, group: Sequence[Config], family_dir: str) -> list[str]:
        """Train what is unfinished in `group`; return the names trained."""
        if self.distributed:
            import jax

            jax.distributed.initialize()  # coordinator, process ids: from SLURM's variables
        from wdjax.training import runtime

        runtime.enable_compilation_cache()  # tasks of one array share compiled programs
        family = Path(family_dir)
        todo = [c for c in group if self.force or not is_finished(family, c)]
        if todo:
            self.train(todo, family)
        return [str(c.run_path) for c in todo]

    def train(self, todo: list[Config], family_dir: Path) -> None:
        """One `wdjax.training.train.train` call on the group (its dataset loaded in this task)."""
        from wdjax.training.train import train

        train(todo, family_dir, force=self.force, progress=False, **self.train_options)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same call (submitit's preemption/timeout hook)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def submit(groups: Sequence[Sequence[Config]], family_dir: str | Path, resources: Resources,
           *, cluster: str = "slurm", task: GroupTask | None = None) -> list[Any]:
    """Submit one job array, a task per group with an unfinished run; return its jobs."""
    if cluster not in ("slurm", "local"):
        raise ValueError(f"unknown cluster {cluster!r}; valid: slurm, local")
    try:
        import submitit
    except ImportError:
        raise ValueError("a cluster launch needs submitit: pip install 'wdjax[cluster]'") from None
    family_dir = storage.check_writable(family_dir)
    task = task or GroupTask(distributed=resources.nodes > 1)
    unfinished = [c for g in groups for c in g if task.force or not is_finished(family_dir, c)]
    todo = [list(g) for g in groups if any(c in unfinished for c in g)]
    if not todo:
        print(f"all {sum(map(len, groups))} run(s) in {family_dir} are finished")
        return []
    cli.load_data(family_dir, unfinished, task.force)
    if cluster == "slurm" and resources.gpus_per_task is None:
        resources = dataclasses.replace(resources, gpus_per_task=default_gpus(resources.partition))
    executor = submitit.AutoExecutor(folder=family_dir / JOBS_SUBDIR / "%j", cluster=cluster)
    executor.update_parameters(**executor_parameters(len(todo), resources,
                                                     f"wdjax-{family_dir.name}"))
    with _refusal_leaves_nothing(family_dir / JOBS_SUBDIR):
        jobs = executor.map_array(task, todo, [str(family_dir)] * len(todo))
    print(f"submitted job {str(jobs[0].job_id).split('_')[0]}: {len(todo)} task(s), "
         f"{sum(map(len, todo))} run(s); logs in {family_dir / JOBS_SUBDIR}")
    return jobs


def default_gpus(partition: str | None) -> int:
    """GPUs per host a task asks for by default: 1 if sinfo cannot tell or lists a gpu GRES."""
    try:
        out = subprocess.run(["sinfo", "--noheader", "--format=%P %G"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    gres = [g for p, _, g in (line.partition(" ") for line in out.splitlines())
            if (p.rstrip("*") == partition if partition else p.endswith("*"))]
    return int(any("gpu" in g for g in gres))  # none: sbatch names the unknown partition


@contextlib.contextmanager
def _refusal_leaves_nothing(jobs_dir: Path):
    """When sbatch refuses: the files written for it removed, a UsageError naming the flag."""
    from submitit.core.utils import FailedJobError

    created = [f for f in (jobs_dir, *jobs_dir.parents) if not f.exists()]  # by the submission
    before = set() if created else set(jobs_dir.iterdir())
    echoed = io.StringIO()  # submitit prints sbatch's refusal to stderr too
    try:
        with contextlib.redirect_stderr(echoed):
            yield
    except FailedJobError as err:
        echoed = io.StringIO()  # said once, in the error
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        else:
            for path in set(jobs_dir.iterdir()) - before:
                (shutil.rmtree if path.is_dir() else os.remove)(path)
        lines = [ln.strip().removeprefix("sbatch: error: ").rstrip(".")
                 for ln in str(err).splitlines() if ln.strip()]
        message = ". ".join(lines) or "no message"
        flag = next(f for words, f in _REFUSALS if words in message.lower())
        raise cli.UsageError(f"sbatch refused the array: {message}; change {flag}") from None
    finally:
        sys.stderr.write(echoed.getvalue())


def wait(jobs: Sequence[Any], configs: Sequence[Config], family_dir: str | Path) -> list[str]:
    """Wait for every job, echoing each run as it finishes; return the runs still unfinished.
    A failed task is a one-line RunError, as is one pending for an `UNSATISFIABLE` reason."""
    family_dir = Path(family_dir)
    left = list(configs)
    watcher = _watch_with_squeue(jobs)
    pending: dict[str, float] = {}  # task -> when first seen pending for good
    said: set[str] = set()

    def once(record: logging.LogRecord) -> bool:  # submitit repeats its warnings every poll
        text = re.sub(r"^Call #\d+ - ", "", record.getMessage())
        new = text not in said
        said.add(text)
        return new

    logging.getLogger("submitit").addFilter(once)
    try:
        while True:
            all_done = all(job.done() for job in jobs)  # before looking: nothing is missed
            for c in [c for c in left if is_finished(family_dir, c)]:
                left.remove(c)  # its run_path: <name>, or <name>/seed<s> for one of several seeds
                print(f"finished {c.run_path} ({len(configs) - len(left)}/{len(configs)})")
            if all_done:
                break
            if watcher is not None:
                _refuse_unsatisfiable(watcher, jobs, pending)
            time.sleep(POLL_S)
        failed = [(job, error) for job in jobs if (error := job.exception()) is not None]
    finally:
        logging.getLogger("submitit").removeFilter(once)
    if failed:
        job, error = failed[0]
        raise storage.RunError(f"{len(failed)} of {len(jobs)} task(s) failed (job {job.job_id}: "
                               f"{_last_exception_line(error)}); logs in {family_dir / JOBS_SUBDIR}"
                               "; submit the sweep again to resume them")
    return [str(c.run_path) for c in left]


def _watch_with_squeue(jobs: Sequence[Any]) -> Any:
    """SLURM `jobs` read their states from squeue (sacct knows nothing without accounting)."""
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    class SqueueWatcher(SlurmInfoWatcher):
        """submitit's watcher with squeue for sacct: jobs it no longer lists have ended."""

        def _make_command(self) -> list[str] | None:
            if not self._registered - self._finished:
                return None
            return ["squeue", f"--user={os.getuid()}", "--noheader", "--array",
                    "--states=all", "--format=%i|%T|%N|%r"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            listed = super().read_info("JobID|State|NodeList|Reason\n" + text)
            gone = dict.fromkeys(self._registered - self._finished, {"State": "NOT_IN_QUEUE"})
            return {**gone, **listed}

    slurm = [job for job in jobs if isinstance(job, SlurmJob)]
    if not slurm or shutil.which("squeue") is None:
        return None
    watcher = SqueueWatcher(delay_s=QUEUE_POLL_S)
    for job in slurm:
        for k in range(job.num_tasks):  # a task of several hosts has one Job per host
            job.task(k).watcher = watcher
    return watcher


def _refuse_unsatisfiable(watcher: Any, jobs: Sequence[Any], pending: dict[str, float]) -> None:
    """RunError, the array cancelled, once a task pended `PENDING_GRACE_S` for good."""
    now = time.time()
    for job in jobs:
        info = watcher.get_info(job.job_id, mode="cache")
        reason = info.get("Reason", "")
        flags = UNSATISFIABLE.get(reason.split(",")[0].strip())
        if info.get("State") != "PENDING" or flags is None:
            pending.pop(job.job_id, None)
        elif now - pending.setdefault(job.job_id, now) >= PENDING_GRACE_S:
            array = str(job.job_id).split("_")[0]
            subprocess.run(["scancel", array], capture_output=True, check=False)
            raise storage.RunError(
                f"task {job.job_id} pended {now - pending[job.job_id]:.0f} s for {reason}, "
                f"which waiting does not clear: job {array} is cancelled; change {flags} "
                "and submit the sweep again")


def _last_exception_line(error: BaseException) -> str:
    """The task's own exception from submitit's error (which wraps the remote traceback)."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    raised = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    # A task killed outright (SIGKILL, a lost node) raised nothing: say so, with its state.
    silent = [ln for ln in lines if ln.startswith("has not produced any output")]
    return raised[-1] if raised else f"{type(error).__name__}: {(silent or lines or [''])[0]}"


def add_args(p: argparse.ArgumentParser) -> None:
    """--launcher, the per-task resources and --no-wait (defaults: `Resources`)."""
    a = p.add_argument
    a("--launcher", choices=tuple(LAUNCHERS), default="local", metavar="{local,slurm}",
      help="local: train here (default); slurm: one SLURM job array through submitit, a task "
           "per run (per vmapped group with --parallel vmap)")
    a("--partition", default=None, help="slurm: partition (default: the cluster's)")
    for flag, low, what in (
        ("--gpus-per-task", 0, "GPUs per host of a task (default: 1 if sinfo lists GPUs, else 0)"),
        ("--cpus-per-task", 1, "CPUs per task (default: the cluster's)"),
        ("--timeout-min", 1, "minutes a task may run (default 1440), then requeued to resume"),
        ("--max-parallel", 1, "array tasks running at once (default: all)"),
        ("--nodes", 1, "hosts per task, joined by jax.distributed (default 1)")):
        a(flag, type=cli.integer(flag, low=low), default=None, help=f"slurm: {what}")
    a("--no-wait", action="store_true",
      help="slurm: return once submitted; --collect builds the table later")


def resources(args: argparse.Namespace) -> Resources:
    """The task resources the flags ask for; UsageError for slurm flags without slurm."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Resources)
             if getattr(args, f.name) is not None}
    if LAUNCHERS[args.launcher] is not None and (args.distributed or args.coordinator):
        # The submitting host must not join a JAX cluster; the tasks join theirs.
        raise cli.UsageError("--distributed and --coordinator apply to --launcher local; "
                             "with --launcher slurm, --nodes N joins each task's hosts")
    flags = [f"--{k.replace('_', '-')}" for k in given] + ["--no-wait"] * args.no_wait
    if LAUNCHERS[args.launcher] is None and flags:
        raise cli.UsageError(f"{flags[0]} applies to --launcher slurm only")
    return Resources(**given).validate()


def run_sweep(groups: Sequence[Sequence[Config]], family_dir: Path, args: argparse.Namespace,
              res: Resources, collect_command: str) -> bool:
    """Submit the groups and wait (unless --no-wait); whether the table can be built now."""
    options = {"tensorboard": args.tensorboard} | (
        {} if args.devices is None else {"devices": args.devices})
    task = GroupTask(distributed=res.nodes > 1, force=args.force_name, train_options=options)
    todo = [c for g in groups for c in g if args.force_name or not is_finished(family_dir, c)]
    jobs = submit(groups, family_dir, res, cluster=LAUNCHERS[args.launcher], task=task)
    if not jobs:
        return True
    if args.no_wait:
        print(f"not waiting; once the job has ended, build the table with: {collect_command}")
        return False
    print(f"waiting for {len(todo)} run(s); Ctrl-C stops the waiting, not the job "
          f"(then: {collect_command})")
    if left := wait(jobs, todo, family_dir):
        print(f"{len(left)} run(s) not finished: {', '.join(left)}; submit the sweep again "
              "to resume them")
    return True
