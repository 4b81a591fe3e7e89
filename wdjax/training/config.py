"""`Config`: everything that defines a run, as one frozen record (its hyperparameter fields
come from `wdjax.schemes.hparams.TABLE`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wdjax import storage
from wdjax.schemes import hparams

MODELS = ("vgg", "resnet18")
# The compute dtype of each precision; bf16 keeps parameters, optimiser state, BatchNorm
# statistics, the loss and the decay terms in float32 (docs/performance.md).
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}


def with_hparam_fields(cls: type) -> type:
    """Class decorator (under ``@dataclass``): one annotated field per hyperparameter row."""
    for h in hparams.TABLE:
        cls.__annotations__[h.name] = "float | None" if h.default is None else "float"
        setattr(cls, h.name, h.default)
    return cls


@dataclasses.dataclass(frozen=True)
@with_hparam_fields
class Config:
    """One run. Defaults are the original command line's (docs/protocol.md#defaults)."""

    name: str = "run"
    optimizer: str = "SGD"
    separate_decay: bool = False
    model: str = "vgg"
    width: int = 32  # the model's width: VGG channels of conv1 (ResNet-18: 2 * width)
    # The width whose initial weights the decay factors are measured on (a miniature's source
    # width, keeping the notebook's coefficients); None: this run's own.
    factor_width: int | None = None
    batch_size: int = 128
    stages: int = 10
    epochs_per_stage: int = 20
    data: str | None = None  # None: $WDJAX_DATA, else tfds:cifar10
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    seed_dir: bool = False  # records in <name>/seed<seed>/ (one of several seeds of a run)
    log_every: int = 50
    eval_batch_size: int = 1000
    conv_impl: str | None = None
    precision: str = "fp32"  # a key of PRECISIONS; fp32 is the notebook's
    histograms: bool = False
    # The (name, value) hyperparameters a miniature protocol mapped this run's from; None: none.
    source_hparams: tuple[tuple[str, float], ...] | None = None

    @property
    def epochs(self) -> int:
        return self.stages * self.epochs_per_stage

    @property
    def base_lr(self) -> float:
        from wdjax import schemes

        return schemes.get(self.optimizer).default_lr if self.lr is None else self.lr

    def hparams(self) -> dict[str, float]:
        """The traced hyperparameters (those a vmapped group may vary)."""
        return {k: getattr(self, k) for k in hparams.TRACED}

    def with_timescale(self, steps_per_epoch: int) -> Config:
        """The config with ``weight_decay = 1 / (tau_epochs * base_lr * steps_per_epoch)``
        when `tau_epochs` is given (`decay.weight_decay_from_tau`), both kept."""
        if self.tau_epochs is None:
            return self
        from wdjax import decay

        wd = decay.weight_decay_from_tau(self.tau_epochs, self.base_lr, steps_per_epoch)
        return dataclasses.replace(self, weight_decay=float(wd))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        if d.get("source_hparams") is not None:  # JSON gives lists back
            d["source_hparams"] = tuple(tuple(pair) for pair in d["source_hparams"])
        return cls(**d)

    def validate(self) -> Config:
        """ValueError (one line) naming the first bad field and what is allowed."""
        from wdjax import schemes

        storage.check_name(self.name)
        scheme = schemes.get(self.optimizer)
        hparams.validate(**{h: getattr(self, h) for h in hparams.NAMES})
        for key, allowed in (("model", MODELS), ("precision", PRECISIONS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, key)!r}")
        optional = ("train_subset", "test_subset", "factor_width")
        for key in ("width", "batch_size", "stages", "epochs_per_stage", "log_every",
                    "eval_batch_size", *optional):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1 or
                    value is None and key in optional):
                raise ValueError(f"{key} must be a positive integer"
                                 f"{' or unset' if key in optional else ''}, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        schemes.resolve(scheme, self.separate_decay)
        return self

    @property
    def run_path(self) -> Path:
        """The run's record directory, relative to the output directory."""
        return Path(self.name, f"seed{self.seed}") if self.seed_dir else Path(self.name)

    def shared_key(self) -> tuple:
        """What runs trained together share (all but name, seed and traced hyperparameters)."""
        skip = {"name", "seed", "source_hparams", "factor_width", *hparams.TRACED,
                *hparams.SETS_TRACED}
        return tuple((k, v) for k, v in self.to_dict().items() if k not in skip)


def with_seeds(configs: Sequence[Config], seeds: int) -> list[Config]:
    """Each config as `seeds` runs with seeds ``seed, seed + 1, ...`` (run-major order), with
    records in ``<name>/seed<s>/``; one seed keeps the configs as they are."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    if seeds == 1:
        return list(configs)
    return [dataclasses.replace(c, seed=c.seed + k, seed_dir=True)
            for c in configs for k in range(seeds)]
