"""The training configuration: `TrainConfig`, everything that defines a run, validated whole.

It nests the codec's `ModelConfig` (lic_utils.models) and the objective's `LossConfig`
(lic_utils.losses), then the data, optimisation, guard, validation and bookkeeping fields. Flat
keys (`N`, `lmbda`, …) are accepted everywhere a dict is (the CLI's `--set`, sweeps, config.json
files written before the nesting) and routed into the nested configs. Profiles
(`TrainConfig.for_profile`) are rows of `lic_utils.profiles.PROFILES`.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lic_utils.errors import LicError
from lic_utils.losses import LossConfig
from lic_utils.models import ModelConfig
from lic_utils.profiles import get_profile

SCHEDULES = ("cosine", "step", "constant")

# Fields that do not change what is trained: they may differ when a run is resumed.
OPERATIONAL_FIELDS = {"device", "threads", "log_every", "val_every", "ckpt_every", "progress"}
# Test hooks that config.json files written before the callbacks hold; they are ignored there.
RETIRED_FIELDS = {"fault_steps", "debug_hashes"}


# --- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (defaults: the `cpu` profile)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # data: random crops of BSDS500 (per rank)
    crop: int = 128
    batch: int = 8
    flips: bool = True
    # optimisation
    steps: int = 3500
    lr: float = 1e-3  # with warm-up, clipping and cosine decay (benchmarks/tune_cpu.py: 5e-4 is
    #                   slower, 2e-3 blows up)
    aux_lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine | step | constant, after a linear warm-up
    warmup: int = 100
    min_lr_factor: float = 0.02  # cosine ends at lr·min_lr_factor; step decays ×0.1 at 80 % and 95 %
    clip_grad: float = 1.0  # max gradient norm of the main parameters (0: off)
    seed: int = 0
    # torch.compile of the training step: ≈ 1.3× faster a step on CPU after ≈ 30 s of compiling
    # (results/recipes_speed.csv); it needs a C++ compiler, and trains eagerly with a warning without
    compile: bool = False
    # fine-tuning: a checkpoint whose weights start this run (all of them; only the transforms and
    # the channel steps when its prior differs), with fresh optimizers and LR schedule
    init_from: str = ""
    # guard against blow-ups (see Guard)
    spike_factor: float = 5.0
    guard_window: int = 50
    max_bad_steps: int = 3
    snapshot_every: int = 100  # in-memory copy of the last good state (rollback target) every K steps
    # a rollback halves the learning rate; it grows back to its schedule over this many good steps
    # (geometrically; 0: the halving stays). Permanent halving cost the session-7 cpu base 0.25 dB:
    # two spikes, at steps 3,785 and 8,047, left 80 % of its 40,000 steps at a quarter of the peak
    guard_recovery: int = 2000
    # validation on fixed Kodak center crops (rounded latents)
    num_val_crops: int = 4
    val_crop: int = 256
    # bookkeeping (operational: may change on resume)
    device: str = "auto"  # auto: cuda → mps → cpu
    threads: int = 0  # torch CPU threads per process (0: torch's default, divided among local ranks)
    log_every: int = 25
    val_every: int = 1000
    ckpt_every: int = 500
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.model, ModelConfig) or not isinstance(self.loss, LossConfig):
            raise LicError("TrainConfig takes a ModelConfig and a LossConfig (or use from_dict)")
        for f in _OWN_FIELDS:
            _check_type(f.name, getattr(self, f.name), f.type)
        if self.lr_schedule not in SCHEDULES:
            raise LicError(f"unknown lr_schedule {self.lr_schedule!r}; choose from {list(SCHEDULES)}")
        multiple = self.model.pad_multiple  # the codec's downsampling
        if self.crop % multiple or self.crop < 64 or self.val_crop % multiple:
            raise LicError(f"crop and val_crop must be multiples of {multiple} (the {self.model.prior} "
                           f"codec's downsampling) and crop ≥ 64, got crop={self.crop}, "
                           f"val_crop={self.val_crop}")
        for name in ("steps", "batch", "lr", "aux_lr", "spike_factor", "guard_window", "max_bad_steps",
                     "snapshot_every", "log_every", "val_every", "ckpt_every"):
            if getattr(self, name) <= 0:
                raise LicError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("warmup", "clip_grad", "num_val_crops", "threads", "guard_recovery"):
            if getattr(self, name) < 0:
                raise LicError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
        if not 0 <= self.min_lr_factor <= 1:
            raise LicError(f"min_lr_factor must be in [0, 1], got {self.min_lr_factor!r}")

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        """From nested keys ({"model": {...}, "loss": {...}, "steps": ...}, as config.json holds) or
        flat ones ({"N": 16, "lmbda": 4e-3, ...}, as `--set`, sweeps and older config.json files
        give), routed into the model and loss configs; a flat key wins over its nested twin."""
        flat = _flatten(d)
        unknown = set(flat) - set(_KINDS)
        if unknown:
            raise LicError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(_KINDS)}")
        values = {k: _coerce(k, v, _KINDS[k]) for k, v in flat.items()}
        model = ModelConfig(**{k: values.pop(k) for k in _MODEL_FIELDS if k in values})
        loss = LossConfig(**{k: values.pop(k) for k in _LOSS_FIELDS if k in values})
        return cls(model=model, loss=loss, **values)

    @classmethod
    def for_profile(cls, profile: str = "cpu", **overrides) -> TrainConfig:
        """The profile's training settings (lic_utils.profiles) with `overrides`, flat or nested
        (None values are ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls.from_dict({**_flatten(get_profile(profile).train), **_flatten(given)})

    @classmethod
    def from_file(cls, path: str | os.PathLike, profile: str | None = None, **overrides) -> TrainConfig:
        """A JSON or YAML file over a profile: `profile`, else the file's `profile` key, else cpu."""
        d = read_config_file(path)
        profile = profile or d.pop("profile", None) or "cpu"
        d.pop("profile", None)
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls.for_profile(profile, **{**_flatten(d), **_flatten(given)})

    def to_dict(self) -> dict:
        """Nested: {"model": {...}, "loss": {...}, then the data and optimisation fields}."""
        return asdict(self)

    def flat(self) -> dict:
        """Every setting under its own name (prior, N, lmbda, crop, ...), for tables and labels."""
        return _flatten(self.to_dict())

    def replace(self, **changes) -> TrainConfig:
        """A copy with `changes`, flat (N=32) or nested (model=ModelConfig(...)), validated again."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def run_fields(self) -> dict:
        """The flat settings that define what is trained (all but the operational ones)."""
        return {k: v for k, v in self.flat().items() if k not in OPERATIONAL_FIELDS}


_OWN_FIELDS = [f for f in fields(TrainConfig) if f.name not in ("model", "loss")]
_MODEL_FIELDS = [f.name for f in fields(ModelConfig)]
_LOSS_FIELDS = [f.name for f in fields(LossConfig)]
_KINDS = {f.name: str(f.type) for f in (*fields(ModelConfig), *fields(LossConfig), *_OWN_FIELDS)}


def _flatten(d: Mapping) -> dict:
    flat = {}
    for section, known in (("model", _MODEL_FIELDS), ("loss", _LOSS_FIELDS)):
        sub = d.get(section) or {}
        sub = sub.to_dict() if isinstance(sub, (ModelConfig, LossConfig)) else sub
        if not isinstance(sub, Mapping) or set(sub) - set(known):
            raise LicError(f"`{section}` must map {known} to values, got {sub!r}")
        flat.update(sub)
    flat.update({k: v for k, v in d.items() if k not in ("model", "loss")})
    return flat


def _coerce(name: str, value, kind: str):
    """A number as its field's type: YAML reads 5e-4 as a string, `--set steps=1e4` as well."""
    if kind not in ("int", "float") or isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LicError(f"{name} must be a number, got {value!r}") from None
    if kind == "float":
        return number
    return int(number) if number.is_integer() else value


def _check_type(name: str, value, kind: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"int": number and isinstance(value, int), "float": number and math.isfinite(value),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}[kind]
    if not ok:
        what = "a finite number" if kind == "float" else f"a {kind}"
        raise LicError(f"{name} must be {what}, got {value!r}")


def read_config_file(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LicError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        d = json.loads(text)
    else:
        import yaml

        d = yaml.safe_load(text)
    if not isinstance(d, dict):
        raise LicError(f"{path} must hold a mapping of options")
    return d
