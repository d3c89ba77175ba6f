"""Training the learned codec: one run folder per configuration, resumable bit for bit.

A run folder (`runs/NAME/`) holds
- `config.json`  the TrainConfig of the run (written first; a rerun with another config is refused),
- `log.csv`      one row every `log_every` steps (means of every loss term over those steps, lr,
                 aux loss, gradient norm, images/s), a row per validation (`val_*` columns: Kodak
                 crops with rounded latents) and a row per guard event (`event` column),
- `checkpoint.pt` the latest checkpoint, written atomically every `ckpt_every` steps and at the end
                 through `models.save_checkpoint` (entropy-coder tables updated, so `compress` can
                 use it); its `extra` holds the whole training state: both optimizers, the LR
                 schedule, the RNG states of torch/numpy/python of every rank, the guard, the step,
- `final.json`   written last: the marker that the run is finished, with its final metrics.

Rerunning a finished run does nothing. Rerunning an interrupted run resumes from `checkpoint.pt`
and ends with exactly the weights of an uninterrupted run (on the same device): every random
draw — crop positions, image order, flips and the quantization noise — comes from torch's global
RNG, whose state is checkpointed (data are read in the main process).

Optimisation: Adam on the codec's main parameters with linear warm-up then cosine (or step)
decay and gradient-norm clipping; a second Adam on the entropy bottleneck's quantiles (aux loss),
both stepped after a single backward of `loss + aux_loss` (the aux loss only reaches the quantiles).
Guard: a non-finite loss or gradient, or a loss above `spike_factor` × the median of the last
`guard_window` losses, skips the step; `max_bad_steps` bad steps in a row roll the weights and
both optimizers back to the last good state (the last checkpoint, or an in-memory copy taken every
`snapshot_every` steps) and halve the LR. Every event is a row of log.csv.

Distributed: under `torchrun --nproc_per_node=K` (env RANK/WORLD_SIZE) the same call trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA). Every rank draws its own crops (own seed);
the aux loss is computed inside the wrapped forward so the quantiles' gradients are all-reduced
with the rest; only rank 0 writes files. The batch size is per rank.

Profiles (`TrainConfig.for_profile`): `smoke` (seconds, for tests), `cpu` (the study's default,
≤ 10 minutes on 2 CPU cores), `gpu` (paper scale: N=128, M=192, 256×256 crops, batch 16, 250k steps).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lic_utils.errors import LicError
from lic_utils.files import RUNS_DIR, atomic_write_text

PRIORS = ("factorized", "factorized-gaussian", "hyperprior")
QUANTIZERS = ("noise", "ste", "mixed")
SCHEDULES = ("cosine", "step", "constant")

LOG_COLUMNS = [
    "step", "time_s", "lr", "loss", "bpp", "mse", "psnr", "ms_ssim", "lpips", "aux_loss", "grad_norm",
    "images_per_s", "val_loss", "val_bpp", "val_mse", "val_psnr", "val_ms_ssim", "val_lpips", "event",
]

# Fields that do not change what is trained: they may differ when a run is resumed.
OPERATIONAL_FIELDS = {"device", "threads", "log_every", "val_every", "ckpt_every", "progress", "fault_steps",
                      "debug_hashes"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (defaults: the `cpu` profile)."""

    # model (lic_utils.models.ModelConfig)
    prior: str = "factorized"
    quantizer: str = "noise"
    channel_scale: bool = True
    N: int = 48
    M: int = 96
    # loss: L = lmbda·bpp + MSE + beta·(1 − MS-SSIM) + gamma·LPIPS (lic_utils.losses)
    lmbda: float = 4e-3
    beta: float = 0.0
    gamma: float = 0.0
    # data: random crops of BSDS500 (per rank)
    crop: int = 128
    batch: int = 8
    flips: bool = True
    # optimisation
    steps: int = 3500
    lr: float = 1e-3  # with warm-up, clipping and cosine decay (benchmarks/tune_cpu.py: 5e-4 is slower, 2e-3 blows up)
    aux_lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine | step | constant, after a linear warm-up
    warmup: int = 100
    min_lr_factor: float = 0.02  # cosine ends at lr·min_lr_factor; step decays ×0.1 at 80 % and 95 %
    clip_grad: float = 1.0  # max gradient norm of the main parameters (0: off)
    seed: int = 0
    # guard against blow-ups
    spike_factor: float = 5.0
    guard_window: int = 50
    max_bad_steps: int = 3
    snapshot_every: int = 100  # in-memory copy of the last good state (rollback target) every K steps
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
    fault_steps: list = field(default_factory=list)  # testing: steps whose loss is replaced by NaN
    debug_hashes: bool = False  # testing: each rank writes rank{R}.sha256 of its state_dict at the end

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise LicError(f"unknown prior {self.prior!r}; choose from {list(PRIORS)}")
        if self.quantizer not in QUANTIZERS:
            raise LicError(f"unknown quantizer {self.quantizer!r}; choose from {list(QUANTIZERS)}")
        if self.lr_schedule not in SCHEDULES:
            raise LicError(f"unknown lr_schedule {self.lr_schedule!r}; choose from {list(SCHEDULES)}")
        multiple = 64 if self.prior == "hyperprior" else 16  # the codec's downsampling factor
        if self.crop % multiple or self.crop < 64 or self.val_crop % multiple:
            raise LicError(f"crop and val_crop must be multiples of {multiple} (the {self.prior} codec's "
                           f"downsampling) and crop ≥ 64, got crop={self.crop}, val_crop={self.val_crop}")
        if min(self.lmbda, self.beta, self.gamma) < 0:
            raise LicError("loss weights lmbda, beta, gamma must be ≥ 0")
        if self.steps < 1 or self.batch < 1:
            raise LicError("steps and batch must be ≥ 1")
        self.fault_steps = sorted(int(s) for s in self.fault_steps)

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LicError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        types = {f.name: f.type for f in fields(cls)}
        clean = {}
        for k, v in d.items():
            t = types[k]
            if t == "float" and isinstance(v, (int, str)) and not isinstance(v, bool):
                v = float(v)  # YAML reads 5e-4 as a string
            elif t == "int" and isinstance(v, (float, str)) and not isinstance(v, bool):
                v = int(float(v))
            clean[k] = v
        return cls(**clean)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> "TrainConfig":
        """Read a JSON or YAML file; a `profile` key in it picks the base profile."""
        d = read_config_file(path)
        profile = d.pop("profile", None)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.for_profile(profile, **d) if profile else cls.from_dict(d)

    @classmethod
    def for_profile(cls, profile: str = "cpu", **overrides) -> "TrainConfig":
        """The profile's defaults with `overrides` (None values are ignored)."""
        if profile not in PROFILES:
            raise LicError(f"unknown profile {profile!r}; choose from {list(PROFILES)}")
        d = {**PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}}
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def model_config(self) -> dict:
        return {"prior": self.prior, "quantizer": self.quantizer, "channel_scale": self.channel_scale,
                "N": self.N, "M": self.M}

    def run_fields(self) -> dict:
        """The fields that define what is trained (all but the operational ones)."""
        return {k: v for k, v in self.to_dict().items() if k not in OPERATIONAL_FIELDS}


PROFILES: dict[str, dict] = {
    # seconds: a tiny codec on tiny crops, for tests and `make study PROFILE=smoke`
    # (one thread: a toy model gains nothing from two, and loses a lot on a busy machine)
    "smoke": dict(N=16, M=24, crop=64, batch=4, steps=40, lr=2e-3, warmup=5, log_every=5, val_every=20,
                  ckpt_every=20, num_val_crops=2, val_crop=128, guard_window=10, threads=1),
    # the study's default (the TrainConfig defaults): N=48, 3500 steps of 8 128×128 crops, lr 1e-3; 6.9 min alone on
    # 2 CPU cores (measured), ≈ 12 min each when two train side by side (tuning record: benchmarks/tune_cpu.py, notebook 04)
    "cpu": dict(),
    # paper scale (Ballé et al.): run on a GPU
    "gpu": dict(N=128, M=192, crop=256, batch=16, steps=250_000, lr=1e-4, aux_lr=1e-3, warmup=2000,
                lr_schedule="step", clip_grad=1.0, log_every=100, val_every=5000, ckpt_every=5000,
                num_val_crops=8),
}


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


# --- learning-rate schedule ------------------------------------------------------------------------
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at `step` (0-based): linear warm-up, then cosine / step / constant."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.lr_schedule == "cosine":
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.lr_schedule == "step":
        return 1.0 if t < 0.8 else (0.1 if t < 0.95 else 0.01)
    return 1.0


# --- devices and processes -------------------------------------------------------------------------
def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: cuda (the local rank's GPU) → mps → cpu; anything else is passed to torch.device."""
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False  # we called init_process_group, so we destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                  local_world=int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        env.owns_group = True
    return env


def finish_distributed(env: DistEnv) -> None:
    """barrier() then destroy_process_group(): a bare destroy aborted gloo processes (torch 2.14.1)."""
    import torch.distributed as dist

    if env.world > 1 and dist.is_initialized():
        dist.barrier()
        if env.owns_group:
            dist.destroy_process_group()


class _Step(nn.Module):
    """The codec's forward plus its aux loss, so that DDP sees the quantiles' gradients too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), self.model.aux_loss()


# --- RNG state -------------------------------------------------------------------------------------
def get_rng_state() -> dict:
    """torch / numpy / python (/ cuda) RNG states as plain objects (safe for weights_only loads)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": _py_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_plain_to_py_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(s):
    return [s[0], list(s[1]), s[2]]


def _plain_to_py_state(s):
    return (s[0], tuple(s[1]), s[2])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def state_hash(model: nn.Module) -> str:
    """sha256 of a model's state_dict (names, shapes and bytes), to compare ranks or runs."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


# --- data ------------------------------------------------------------------------------------------
class CropSampler:
    """Batches of random BSDS500 crops drawn with torch's global RNG (checkpointed with the run)."""

    def __init__(self, crop: int, batch: int, flips: bool = True, paths=None):
        from lic_utils import data

        self.dataset = data.CropDataset(paths if paths is not None else data.bsds500_paths(), crop=crop, flips=flips)
        self.batch = batch

    def next(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.dataset.paths), (self.batch,)).tolist()
        return torch.stack([self.dataset[i] for i in idx])


def kodak_val_crops(n: int, size: int) -> torch.Tensor:
    """`n` fixed center crops size×size of Kodak images spread over the set: n×3×size×size."""
    from lic_utils import data

    paths = data.kodak_paths()
    picks = np.linspace(0, len(paths) - 1, n).round().astype(int) if n > 1 else [0]
    crops = []
    for i in picks:
        img = data.load_rgb(paths[i])
        h, w, _ = img.shape
        s = min(size, h, w) // 16 * 16
        top, left = (h - s) // 2, (w - s) // 2
        crops.append(data.to_tensor(img[top : top + s, left : left + s])[0])
    return torch.stack(crops)


@torch.no_grad()
def validate(model: nn.Module, crops: torch.Tensor, loss_fn) -> dict[str, float]:
    """Mean loss terms on the crops in eval mode (rounded latents); PSNR on 8-bit rounded output."""
    from lic_utils import losses, metrics

    was_training = model.training
    model.eval()
    rows = []
    try:
        for x in crops.split(1):
            out = model(x)
            terms = losses.rd_loss(out, x, loss_fn.lmbda, loss_fn.beta, loss_fn.gamma, monitor=True)
            x_hat = out["x_hat"].clamp(0, 1)
            rows.append({
                "loss": float(terms["loss"]), "bpp": float(terms["bpp"]), "mse": float(terms["mse"]),
                "psnr": float(metrics.psnr(x_hat, x)[0]), "ms_ssim": float(terms["ms_ssim"]),
                "lpips": float(terms["lpips"]),
            })
    finally:
        model.train(was_training)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# --- run folder ------------------------------------------------------------------------------------
def run_status(run_dir: str | os.PathLike) -> str:
    """'done', 'partial' (has a checkpoint), 'new'."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").exists():
        return "done"
    if (run_dir / "checkpoint.pt").exists():
        return "partial"
    return "new"


def read_final(run_dir: str | os.PathLike) -> dict | None:
    p = Path(run_dir) / "final.json"
    return json.loads(p.read_text()) if p.exists() else None


def read_log(run_dir: str | os.PathLike):
    """log.csv of a run as a DataFrame."""
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "log.csv")


def _check_config(run_dir: Path, cfg: TrainConfig) -> None:
    p = run_dir / "config.json"
    if not p.exists():
        return
    old = TrainConfig.from_dict(json.loads(p.read_text())).run_fields()
    new = cfg.run_fields()
    diff = {k: (old[k], new[k]) for k in new if old.get(k) != new[k]}
    if diff:
        changes = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in sorted(diff.items()))
        raise LicError(f"{run_dir} holds a run with another configuration ({changes}); "
                       f"choose another --out, or delete the folder to retrain")


class _Log:
    """log.csv, appended row by row (rank 0); on resume rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    try:
                        if int(r["step"]) <= resume_step:
                            rows.append(r)
                    except (KeyError, TypeError, ValueError):
                        break  # a torn last line
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(path, buf.getvalue())

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


# --- the trainer -----------------------------------------------------------------------------------
def train(cfg: TrainConfig | dict, out: str | os.PathLike, stop_at: int | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume, or skip if finished) the run `out` with `cfg`.

    Returns the run's summary: the contents of final.json, or for a run stopped early by `stop_at`
    (tests: an interruption after that many steps, right after its checkpoint) {"status": "stopped", ...}.
    """
    from lic_utils import losses, models

    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    run_dir = Path(out)
    env = init_distributed(cfg.device)
    threads_before = torch.get_num_threads()
    try:
        status = run_status(run_dir)
        if status == "done":
            _check_config(run_dir, cfg)
            final = read_final(run_dir)
            if env.main:
                print(f"{run_dir}: already done ({final['steps']} steps); nothing to train")
            return {**final, "status": "already done"}
        _check_config(run_dir, cfg)
        if env.main:
            atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

        device = pick_device(cfg.device, env.local_rank)
        threads = cfg.threads or (max(1, (os.cpu_count() or 1) // env.local_world) if env.world > 1 else 0)
        if threads:
            torch.set_num_threads(threads)  # restored on the way out

        # model, optimizers, training state (fresh or from the checkpoint)
        ckpt_path = run_dir / "checkpoint.pt"
        extra = models.load_checkpoint_extra(ckpt_path) if status == "partial" else None
        seed_everything(cfg.seed)
        if extra is not None:
            model = models.load_checkpoint(ckpt_path, map_location="cpu")
            _load_aux_params(model, extra.get("aux_params", {}))  # the trained quantiles, not the bisected ones
        else:
            model = models.build_model(cfg.model_config())
        model = model.to(device).train()
        main_params = list(model.main_parameters())
        opt = torch.optim.Adam(main_params, lr=cfg.lr)
        aux_params = list(model.aux_parameters())
        aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else _NoOptimizer()
        step, lr_scale, elapsed = 0, 1.0, 0.0
        history: deque[float] = deque(maxlen=cfg.guard_window)
        bad_streak = 0
        if extra is not None:
            opt.load_state_dict(extra["optimizer"])
            aux_opt.load_state_dict(extra["aux_optimizer"])
            step = int(extra["step"])
            lr_scale = float(extra["scheduler"]["lr_scale"])
            elapsed = float(extra.get("elapsed_s", 0.0))
            history.extend(extra["guard"]["history"])
            bad_streak = int(extra["guard"]["bad_streak"])
            rng = extra["rng"]
            if len(rng) == env.world:
                set_rng_state(rng[env.rank])
            else:  # another world size: a fresh, still deterministic, stream per rank
                seed_everything(cfg.seed + 100_003 * env.rank + step)
        elif env.rank > 0:
            seed_everything(cfg.seed + 100_003 * env.rank)  # same initial weights, own data and noise

        last_good = _snapshot(model, opt, aux_opt, step)  # rollback target (also kept every snapshot_every steps)
        loss_fn = losses.RateDistortionLoss(cfg.lmbda, cfg.beta, cfg.gamma)
        sampler = CropSampler(cfg.crop, cfg.batch, cfg.flips)
        val_crops = kodak_val_crops(cfg.num_val_crops, cfg.val_crop).to(device) if env.main and cfg.num_val_crops else None
        log = _Log(run_dir / "log.csv", step if extra is not None else None, env.main)
        if env.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            stepper = DDP(_Step(model), device_ids=[device.index] if device.type == "cuda" else None,
                          broadcast_buffers=False)
        else:
            stepper = _Step(model)

        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=run_dir.name, unit="step", dynamic_ncols=True,
                   disable=not (cfg.progress and env.main), mininterval=1.0)
        acc: dict[str, list] = {}
        t_start, busy, n_window = time.perf_counter(), 0.0, 0  # busy: seconds spent in training steps
        fault_steps = set(cfg.fault_steps)

        def event(kind: str, detail: str) -> None:
            log.write({"step": step, "time_s": elapsed + time.perf_counter() - t_start,
                       "lr": cfg.lr * lr_scale * lr_factor(step, cfg), "event": f"{kind}: {detail}"})
            if env.main:
                bar.write(f"[{run_dir.name}] step {step}: {kind}: {detail}")

        stopped = False
        while step < cfg.steps:
            t_step = time.perf_counter()
            lr = cfg.lr * lr_scale * lr_factor(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            x = sampler.next().to(device, non_blocking=True)
            out, aux_loss = stepper(x)
            terms = loss_fn(out, x)
            loss = terms["loss"]
            if step in fault_steps:
                loss = loss * float("nan")
            loss_value = float(loss.detach())
            reason = None
            if not math.isfinite(loss_value):
                reason = f"non-finite loss ({loss_value})"
            elif len(history) >= max(5, cfg.guard_window // 2) and loss_value > cfg.spike_factor * statistics.median(history):
                reason = f"loss spike {loss_value:.4g} > {cfg.spike_factor:g} × median {statistics.median(history):.4g}"
            if env.world > 1:
                reason = _any_rank(reason, device)
            grad_norm = float("nan")
            if reason is None:
                opt.zero_grad(set_to_none=True)
                aux_opt.zero_grad(set_to_none=True)
                (loss + aux_loss).backward()
                if cfg.clip_grad > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(main_params, cfg.clip_grad))
                else:
                    grad_norm = float(torch.linalg.vector_norm(
                        torch.stack([p.grad.norm() for p in main_params if p.grad is not None])))
                if not math.isfinite(grad_norm):
                    reason = f"non-finite gradient norm ({grad_norm})"
            if reason is not None:
                bad_streak += 1
                event("skip", reason)
                if bad_streak >= cfg.max_bad_steps:
                    lr_scale *= 0.5
                    _restore(last_good, model, opt, aux_opt)
                    event("rollback", f"{bad_streak} bad steps: weights and optimizers back to step "
                                      f"{last_good['step']}, lr scale halved to {lr_scale:g}")
                    bad_streak = 0
                    history.clear()
                step += 1
                bar.update(1)
            else:
                opt.step()
                aux_opt.step()
                bad_streak = 0
                history.append(loss_value)
                step += 1
                bar.update(1)
                vals = {k: float(v.detach()) for k, v in terms.items()}
                vals.update(aux_loss=float(aux_loss.detach()), grad_norm=grad_norm, lr=lr)
                for k, v in vals.items():
                    acc.setdefault(k, []).append(v)
                n_window += x.shape[0]
                busy += time.perf_counter() - t_step
            if on_step is not None:
                on_step(step, {k: float(v.detach()) for k, v in terms.items()})

            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                if acc:
                    row = {k: float(np.mean(v)) for k, v in acc.items()}
                    row.update(step=step, time_s=elapsed + now - t_start,
                               images_per_s=n_window * env.world / max(busy, 1e-9))
                    log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4g}", bpp=f"{row['bpp']:.3f}", psnr=f"{row['psnr']:.2f}",
                                    refresh=False)
                acc, busy, n_window = {}, 0.0, 0
            if val_crops is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                v = validate(model, val_crops, loss_fn)
                log.write({"step": step, "time_s": elapsed + time.perf_counter() - t_start,
                           **{f"val_{k}": val for k, val in v.items()}})
            if step % cfg.ckpt_every == 0 or step == cfg.steps or (stop_at is not None and step >= stop_at):
                state_extra = {
                    "step": step, "lr_scale": lr_scale, "bad_streak": bad_streak, "history": list(history),
                    "elapsed_s": elapsed + time.perf_counter() - t_start,
                }
                _save(run_dir, cfg, env, model, opt, aux_opt, state_extra)
                last_good = _snapshot(model, opt, aux_opt, step)
            elif step % cfg.snapshot_every == 0 and bad_streak == 0:
                last_good = _snapshot(model, opt, aux_opt, step)
            if stop_at is not None and step >= stop_at and step < cfg.steps:
                stopped = True
                break
        bar.close()
        elapsed += time.perf_counter() - t_start

        if cfg.debug_hashes:
            atomic_write_text(run_dir / f"rank{env.rank}.sha256", state_hash(model) + "\n")
        if stopped:
            return {"status": "stopped", "steps": step, "run_dir": str(run_dir)}
        final = None
        if env.main:
            final = _final(run_dir, cfg, step, elapsed, env)
            atomic_write_text(run_dir / "final.json", json.dumps(final, indent=2, default=float) + "\n")
            v = final["val"] or final["train"]
            where = "Kodak crops" if final["val"] else "training (last steps)"
            print(f"{run_dir}: done, {step} steps in {elapsed / 60:.1f} min; {where}: "
                  f"{v['bpp']:.3f} bpp, {v['psnr']:.2f} dB")
        return {**(final or {"steps": step, "run_dir": str(run_dir)}), "status": "done"}
    finally:
        torch.set_num_threads(threads_before)
        finish_distributed(env)


def _any_rank(reason: str | None, device) -> str | None:
    """A step is bad on every rank if it is bad on one (ranks must skip together)."""
    import torch.distributed as dist

    flag = torch.tensor([0.0 if reason is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and reason is None:
        return "bad step on another rank"
    return reason


class _NoOptimizer:
    """Stands in for the aux optimizer of a codec without quantiles to learn (no EntropyBottleneck)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _snapshot(model, opt, aux_opt, step: int) -> dict:
    return {"step": step, "model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
            "aux": copy.deepcopy(aux_opt.state_dict())}


def _restore(snap: dict, model, opt, aux_opt) -> None:
    with torch.no_grad():
        sd = model.state_dict()
        for k, v in snap["model"].items():
            if sd[k].shape == v.shape:
                sd[k].copy_(v)
    opt.load_state_dict(copy.deepcopy(snap["opt"]))
    aux_opt.load_state_dict(copy.deepcopy(snap["aux"]))


def _save(run_dir: Path, cfg: TrainConfig, env: DistEnv, model, opt, aux_opt, state: dict) -> None:
    """Checkpoint (rank 0 writes; every rank does the same update, so ranks stay identical).

    `model.update(force=True)` builds the entropy-coder tables, and may first move the bottleneck's
    quantiles by bisection: the checkpoint gets those (best for `compress`), while training goes on
    with the aux-loss-trained quantiles, saved in `extra["aux_params"]` and restored here and on
    resume, so that the trajectory does not depend on when checkpoints are written.
    """
    from lic_utils import models

    aux_state = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("quantiles")}
    try:
        with torch.no_grad():
            model.update(force=True)
        _save_updated(run_dir, cfg, env, model, opt, aux_opt, state, aux_state, models)
    finally:
        _load_aux_params(model, aux_state)


def _load_aux_params(model, aux_state: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in aux_state.items():
            params[n].copy_(t.to(params[n].device))


def _save_updated(run_dir, cfg, env, model, opt, aux_opt, state, aux_state, models) -> None:
    rng = get_rng_state()
    if env.world > 1:
        import torch.distributed as dist

        gathered = [None] * env.world
        dist.all_gather_object(gathered, rng)
        rng = gathered
    else:
        rng = [rng]
    if not env.main:
        return
    extra = {
        "train_config": cfg.to_dict(),
        "step": state["step"],
        "optimizer": opt.state_dict(),
        "aux_optimizer": aux_opt.state_dict(),
        "scheduler": {"lr_scale": state["lr_scale"], "schedule": cfg.lr_schedule, "warmup": cfg.warmup,
                      "lr_factor": lr_factor(state["step"], cfg)},
        "rng": rng,
        "guard": {"history": state["history"], "bad_streak": state["bad_streak"]},
        "elapsed_s": state["elapsed_s"],
        "world_size": env.world,
        "aux_params": {n: t.cpu() for n, t in aux_state.items()},
    }
    models.save_checkpoint(run_dir / "checkpoint.pt", model, extra=extra)


def _final(run_dir: Path, cfg: TrainConfig, step: int, elapsed: float, env: DistEnv) -> dict:
    """final.json: training means over the last 10 % of the steps, the last validation, events."""
    log = read_log(run_dir)
    train_rows = log[log["loss"].notna()]
    tail = train_rows[train_rows["step"] > step - max(cfg.log_every, step // 10)]
    val_rows = log[log["val_bpp"].notna()]
    events = log[log["event"].notna()]
    return {
        "done": True,
        "steps": step,
        "elapsed_s": round(elapsed, 1),
        "world_size": env.world,
        "train": {k: float(tail[k].mean()) for k in ("loss", "bpp", "mse", "psnr", "ms_ssim", "lpips")},
        "val": ({k.removeprefix("val_"): float(v) for k, v in val_rows.iloc[-1].items() if k.startswith("val_")}
                if len(val_rows) else {}),
        "events": int(len(events)),
        "checkpoint": str(run_dir / "checkpoint.pt"),
        "config": cfg.to_dict(),
    }


# --- sweeps ----------------------------------------------------------------------------------------
# β = 0.025 gives 1 − MS-SSIM the gradient norm of the MSE term; γ = 0.002 gives LPIPS ≈ 0.6 × that
# (measured on the parameters of a cpu-profile codec at ≈ 0.25 bpp, batches of 8 BSDS500 crops:
# ‖∇MSE‖ = 0.0088, ‖∇(1 − MS-SSIM)‖ = 0.35, ‖∇LPIPS‖ = 2.6, so equal gradients at β = 0.025, γ = 0.0034).
DEFAULT_VARIANTS = {"mse": {"beta": 0.0, "gamma": 0.0}, "msssim": {"beta": 0.025, "gamma": 0.0},
                    "lpips": {"beta": 0.0, "gamma": 0.002}}


@dataclass
class SweepSpec:
    """A grid of runs: prior × loss variant × λ, on a profile with common overrides."""

    profile: str = "cpu"
    out: str | None = None  # folder holding the runs and index.csv (default: lic_utils.files.RUNS_DIR)
    priors: list = field(default_factory=lambda: ["factorized"])
    variants: dict = field(default_factory=lambda: dict(DEFAULT_VARIANTS))
    lmbdas: list = field(default_factory=lambda: [4e-3])
    overrides: dict = field(default_factory=dict)  # TrainConfig fields common to every run
    tag: str = ""  # appended to every run name (e.g. "noscale"), so runs that differ in overrides never share a name

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SweepSpec":
        d = read_config_file(path)
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise LicError(f"unknown sweep option(s) {sorted(set(d) - known)} in {path}; known: {sorted(known)}")
        spec = cls(**d)
        if spec.out is not None and not Path(spec.out).is_absolute():
            from lic_utils.files import REPO

            spec.out = str(REPO / spec.out)
        return spec

    def runs(self) -> list[tuple[str, dict, TrainConfig]]:
        """(run name, grid point, TrainConfig) for every point of the grid."""
        out = []
        for prior in self.priors:
            for variant, weights in self.variants.items():
                for lmbda in self.lmbdas:
                    name = run_name(prior, variant, float(lmbda)) + (f"-{self.tag}" if self.tag else "")
                    cfg = TrainConfig.for_profile(self.profile, **{**self.overrides, **(weights or {}),
                                                                     "prior": prior, "lmbda": float(lmbda)})
                    out.append((name, {"prior": prior, "variant": variant, "lmbda": float(lmbda)}, cfg))
        return out


def run_name(prior: str, variant: str, lmbda: float) -> str:
    return f"{prior}-{variant}-l{lmbda:g}"


INDEX_COLUMNS = ["name", "prior", "variant", "lmbda", "beta", "gamma", "status", "steps", "train_loss", "train_bpp",
                 "train_mse", "train_psnr", "train_ms_ssim", "train_lpips", "val_bpp", "val_psnr", "val_ms_ssim",
                 "val_lpips", "elapsed_s", "checkpoint", "config"]


def index_row(name: str, point: dict, cfg: TrainConfig, run_dir: Path) -> dict:
    final = read_final(run_dir) or {}
    row = {"name": name, **point, "beta": cfg.beta, "gamma": cfg.gamma, "status": run_status(run_dir),
           "steps": final.get("steps"), "elapsed_s": final.get("elapsed_s"),
           "checkpoint": str(run_dir / "checkpoint.pt") if (run_dir / "checkpoint.pt").exists() else "",
           "config": json.dumps(cfg.run_fields(), sort_keys=True)}
    row.update({f"train_{k}": v for k, v in final.get("train", {}).items()})
    row.update({f"val_{k}": final.get("val", {}).get(k) for k in ("bpp", "psnr", "ms_ssim", "lpips")})
    return row


def write_index(root: Path, rows: list[dict]) -> Path:
    """Merge `rows` into root/index.csv by run name (atomic)."""
    import pandas as pd

    from lic_utils.files import atomic_to_csv

    path = root / "index.csv"
    new = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    if path.exists():
        old = pd.read_csv(path)
        old = old[~old["name"].isin(new["name"])]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    atomic_to_csv(new, path)
    return path


def sweep(spec: SweepSpec | str | os.PathLike, progress: bool = True, only: list[str] | None = None,
          workers: int = 1):
    """Train every run of the grid: finished runs are skipped, interrupted ones resumed.

    Keeps `<out>/index.csv` (one row per run: grid point, status, final training and validation
    metrics, checkpoint path, config), rewritten atomically after each run. Returns the index rows
    of this sweep as a DataFrame.

    `workers` > 1 trains that many runs at once, each in its own process (the standard library's
    ProcessPoolExecutor) with cpu_count // workers torch threads. On 2 CPU cores, two one-thread
    runs side by side train ≈1.2× more images per second than one two-thread run (74.7 vs 64.1 for
    the cpu profile): a small codec does not keep two threads busy (OpenMP barriers). Each run is
    still the same deterministic run.
    """
    import pandas as pd

    spec = spec if isinstance(spec, SweepSpec) else SweepSpec.from_file(spec)
    root = Path(spec.out) if spec.out else RUNS_DIR
    root.mkdir(parents=True, exist_ok=True)
    grid = [r for r in spec.runs() if only is None or r[0] in only]
    todo = [(name, cfg) for name, _, cfg in grid if run_status(root / name) != "done"]
    for i, (name, _, _) in enumerate(grid):
        status = run_status(root / name)
        print(f"[sweep {i + 1}/{len(grid)}] {name}: {'done, skipped' if status == 'done' else status + ', to train'}",
              flush=True)
    points = {name: (point, cfg) for name, point, cfg in grid}

    def finished(name: str) -> None:  # the index is updated as each run ends
        write_index(root, [index_row(name, *points[name], root / name)])

    train_many([(root / name, cfg) for name, cfg in todo], workers, progress, on_done=lambda d: finished(d.name))
    rows = [index_row(name, point, cfg, root / name) for name, point, cfg in grid]
    write_index(root, rows)
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    df.attrs["trained"] = [name for name, _ in todo]
    return df


def _train_worker(cfg: dict, run_dir: str) -> str:
    train(TrainConfig.from_dict(cfg), run_dir)
    return run_dir


def train_many(jobs: list[tuple[Path, TrainConfig]], workers: int = 1, progress: bool = True,
               on_done: Callable[[Path], None] | None = None) -> None:
    """Train (or resume) each (run folder, config); `workers` > 1 runs that many at once (see `sweep`).

    An error in one run is raised once the others have ended; rerunning resumes the failed run.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    on_done = on_done or (lambda run_dir: None)
    if workers <= 1 or len(jobs) <= 1:
        for run_dir, cfg in jobs:
            print(f"[sweep] training {run_dir.name}", flush=True)
            train(cfg.replace(progress=progress and cfg.progress), run_dir)
            on_done(Path(run_dir))
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    errors = []
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_train_worker, cfg.replace(threads=cfg.threads or threads, progress=False).to_dict(),
                               str(run_dir)): Path(run_dir) for run_dir, cfg in jobs}
        print(f"[sweep] training {len(jobs)} runs, {workers} at a time ({threads} thread(s) each)", flush=True)
        with tqdm(total=len(jobs), desc="training runs", unit="run", disable=not progress) as bar:
            for future in as_completed(futures):
                run_dir = futures[future]
                try:
                    future.result()
                    on_done(run_dir)
                    print(f"[sweep] {run_dir.name}: done", flush=True)
                except Exception as e:  # noqa: BLE001  (raised below, after the other runs)
                    errors.append(f"{run_dir.name}: {e}")
                    print(f"[sweep] {run_dir.name}: FAILED: {e}", flush=True)
                bar.update()
    if errors:
        raise LicError("run(s) failed: " + "; ".join(errors) + " (rerun to resume them)")


CURVE_PANELS = [("loss", "training loss L"), ("bpp", "rate (bpp)"), ("psnr", "PSNR (dB)"),
                ("ms_ssim", "MS-SSIM"), ("lpips", "LPIPS (AlexNet)"), ("lr", "learning rate")]


def training_curves(runs: dict[str, str | os.PathLike], smooth: int = 1):
    """One panel per loss term (and the LR) against the step, one colour per run: solid = training
    (mean over each logging window), dashed with markers = validation on the Kodak crops."""
    import matplotlib.pyplot as plt

    from lic_utils import plots  # noqa: F401  (the study's theme)

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for (name, run_dir), colour in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        log = read_log(run_dir)
        tr, val = log[log["loss"].notna()], log[log["val_bpp"].notna()]
        for ax, (term, label) in zip(axes.flat, CURVE_PANELS):
            if tr[term].notna().any():
                y = tr[term].rolling(smooth, min_periods=1).mean() if smooth > 1 else tr[term]
                ax.plot(tr["step"], y, color=colour, lw=1.2, label=f"{name} (train)")
            if f"val_{term}" in val and val[f"val_{term}"].notna().any():
                ax.plot(val["step"], val[f"val_{term}"], "o--", color=colour, ms=3, lw=1, label=f"{name} (Kodak crops)")
            ax.set(xlabel="step", title=label)
    for term, ax in zip((t for t, _ in CURVE_PANELS), axes.flat):
        if term in ("loss", "lr"):
            ax.set_yscale("log")
    handles, labels = axes.flat[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
