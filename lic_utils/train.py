"""Training the learned codec: one run folder per configuration, resumable bit for bit.

What a run leaves on disk is `lic_utils.run_folder`'s; its settings are a `TrainConfig`
(lic_utils.config).

`train(cfg, out)` is the entry point. A `Trainer` holds the model, its two optimizers, the `Guard`
and the data; `Trainer.fit` steps it: sample crops, forward, L (lic_utils.losses), the guard's
check, one backward, both Adam steps. Everything around a step is a `Callback`: log.csv and the
progress bar, validation on Kodak crops, checkpoints; tests add their own (e.g. `FaultInjection`).

Rerunning a finished run does nothing. Rerunning an interrupted run resumes from `checkpoint.pt`
and ends with exactly the weights of an uninterrupted run (on the same device): every random
draw (crop positions, image order, flips and the quantization noise) comes from torch's global
RNG, whose state is checkpointed (data are read in the main process).

Optimisation: Adam on the codec's main parameters with linear warm-up then cosine (or step)
decay and gradient-norm clipping; a second Adam on the entropy bottleneck's quantiles (aux loss),
both stepped after a single backward of `loss + aux_loss` (the aux loss only reaches the quantiles).

Distributed: under `torchrun --nproc_per_node=K` (env RANK/WORLD_SIZE) the same call trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA). Every rank draws its own crops (own seed);
the aux loss is computed inside the wrapped forward so the quantiles' gradients are all-reduced
with the rest; only rank 0 writes files. The batch size is per rank.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import statistics
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lic_utils import models
from lic_utils.config import TrainConfig
from lic_utils.distributed import (DistEnv, any_rank, finish_distributed, get_rng_state, init_distributed,
                                   pick_device, seed_everything, set_rng_state)
from lic_utils.errors import LicError
from lic_utils.files import atomic_write_text, folder_lock
from lic_utils.losses import RateDistortionLoss
from lic_utils.run_folder import RunLog, check_run_folder, read_final, read_log, run_status, run_summary

# A run whose guard fires without end has failed (see Guard.failure): no final.json, a LicError.
MAX_ROLLBACKS_IN_A_ROW = 3  # rollbacks with no good step between them
MIN_LR_SCALE = 1e-3  # each rollback halves the learning rate: 10 rollbacks in all go below this


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


# --- pieces of a step ------------------------------------------------------------------------------
class _Step(nn.Module):
    """The codec's forward plus its aux loss, so that DDP sees the quantiles' gradients too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), self.model.aux_loss()


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


# --- data ------------------------------------------------------------------------------------------
class CropSampler:
    """Batches of random BSDS500 crops drawn with torch's global RNG (checkpointed with the run)."""

    def __init__(self, crop: int, batch: int, flips: bool = True):
        from lic_utils import data

        self.dataset = data.CropDataset(data.bsds500_paths(), crop=crop, flips=flips)
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
def validate(model: nn.Module, crops: torch.Tensor, loss_fn: RateDistortionLoss) -> dict[str, float]:
    """Mean loss terms on the crops in eval mode (rounded latents); PSNR on 8-bit rounded output."""
    from lic_utils import metrics

    was_training = model.training
    model.eval()
    rows = []
    try:
        for x in crops.split(1):
            out = model(x)
            terms = {k: float(v) for k, v in loss_fn(out, x, monitor=True).items()}
            rows.append({**terms, "psnr": float(metrics.psnr(out["x_hat"].clamp(0, 1), x)[0])})
    finally:
        model.train(was_training)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# --- the trainer -----------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What changes while a run trains, saved in its checkpoint as one object: plain tensors,
    numbers, lists and dicts, so that it loads with torch.load(weights_only=True)."""

    step: int = 0
    lr_scale: float = 1.0  # halved by every rollback, back to 1 over cfg.guard_recovery good steps
    elapsed_s: float = 0.0  # training time over every session of the run
    guard: dict = field(default_factory=dict)  # Guard.state_dict(): recent losses, bad-step streak
    optimizer: dict = field(default_factory=dict)  # Adam on the main parameters
    aux_optimizer: dict = field(default_factory=dict)  # Adam on the quantiles
    aux_params: dict = field(default_factory=dict)  # the quantiles as the aux loss trained them
    rng: list = field(default_factory=list)  # RNG states (get_rng_state), one per rank

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Guard:
    """Skips bad steps and, after `max_bad_steps` of them in a row, rolls back.

    A step is bad when its loss or gradient norm is not finite, or its loss exceeds `spike_factor` ×
    the median of the last `guard_window` good losses. The rollback target is the state at the
    last checkpoint, or the in-memory snapshot taken every `snapshot_every` steps while no step is
    going bad; weights and both optimizers go back to it (the step count and the data go on).
    The run has failed after MAX_ROLLBACKS_IN_A_ROW rollbacks without a good step between them, or
    once rollbacks have cut the learning rate below MIN_LR_SCALE of its schedule.
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, opt, aux_opt):
        self.cfg, self.parts = cfg, {"model": model, "opt": opt, "aux": aux_opt}
        self.history: deque[float] = deque(maxlen=cfg.guard_window)
        self.bad_streak = 0
        self.rollbacks = 0  # since the last good step
        self.last_good: dict = {}

    def check(self, loss: float) -> str | None:
        """Why a step with this loss is bad, or None."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if len(self.history) >= max(5, self.cfg.guard_window // 2):
            median = statistics.median(self.history)
            if loss > self.cfg.spike_factor * median:
                return f"loss spike {loss:.4g} > {self.cfg.spike_factor:g} × median {median:.4g}"
        return None

    def good(self, loss: float) -> None:
        self.bad_streak = self.rollbacks = 0
        self.history.append(loss)

    def bad(self) -> bool:
        """Count a bad step; True when the streak calls for a rollback."""
        self.bad_streak += 1
        return self.bad_streak >= self.cfg.max_bad_steps

    def snapshot(self, step: int) -> None:
        states = {k: copy.deepcopy(p.state_dict()) for k, p in self.parts.items()}
        self.last_good = {"step": step, **states}

    def after_step(self, step: int) -> None:
        """The periodic snapshot (a checkpoint at this step has taken one already)."""
        due = step % self.cfg.snapshot_every == 0 and self.last_good["step"] != step
        if due and self.bad_streak == 0:
            self.snapshot(step)

    def rollback(self) -> int:
        """Restore the last good state; returns its step."""
        with torch.no_grad():
            sd = self.parts["model"].state_dict()
            for k, v in self.last_good["model"].items():
                if sd[k].shape == v.shape:
                    sd[k].copy_(v)
        self.parts["opt"].load_state_dict(copy.deepcopy(self.last_good["opt"]))
        self.parts["aux"].load_state_dict(copy.deepcopy(self.last_good["aux"]))
        self.bad_streak = 0
        self.rollbacks += 1
        self.history.clear()
        return self.last_good["step"]

    def failure(self, lr_scale: float) -> str | None:
        """Why the run has failed (the guard fires without end), or None."""
        if self.rollbacks >= MAX_ROLLBACKS_IN_A_ROW:
            return f"{self.rollbacks} rollbacks without a good step between them"
        if lr_scale < MIN_LR_SCALE:
            return f"rollbacks have cut the learning rate to {lr_scale:g} of its schedule"
        return None

    def state_dict(self) -> dict:
        return {"history": list(self.history), "bad_streak": self.bad_streak,
                "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.history.extend(state["history"])
        self.bad_streak = int(state["bad_streak"])
        self.rollbacks = int(state.get("rollbacks", 0))  # absent from checkpoints of older code


def _compiled(stepper: nn.Module):
    """The training step through torch.compile (TrainConfig.compile), or as it is, with a warning,
    where no C++ compiler is installed (torch's inductor generates C++ for the CPU). The noise is
    drawn as in eager mode, so a compiled run follows an eager one to float precision. Shapes are
    static (a new crop size compiles anew): inductor's symbolic shapes failed on the checkerboard's
    masks ("cannot determine truth value of Relational")."""
    import shutil

    if not any(shutil.which(cc) for cc in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if cc):
        warnings.warn("compile=True needs a C++ compiler (install g++ or clang++); training without "
                      "torch.compile, ≈ 1.3× slower a step and not bit-identical to a compiled run",
                      stacklevel=3)
        return stepper
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # the quantization noise from torch's generator, as in eager mode
    return torch.compile(stepper, dynamic=False)


class Callback:
    """A hook into Trainer.fit, Keras style: each method gets the trainer and may read its state."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_step_begin(self, trainer: Trainer) -> None:
        pass

    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        """The loss the guard checks and the step minimises (before the step counter moves)."""
        return loss

    def on_step_end(self, trainer: Trainer, metrics: dict | None) -> None:
        """After `trainer.step` moved on; `metrics`: the step's loss terms, None if it was skipped."""

    def on_event(self, trainer: Trainer, kind: str, detail: str) -> None:
        """A guard event ("skip", "rollback")."""

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class Trainer:
    """One run: the codec, its two optimizers, the guard and the data (from its checkpoint when the
    run folder holds one), stepped by `fit`. Builds everything; writes nothing before `fit`."""

    def __init__(self, cfg: TrainConfig, run_dir: str | os.PathLike, env: DistEnv | None = None,
                 callbacks: Sequence[Callback] = ()):
        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env or DistEnv()
        self.device = pick_device(cfg.device, self.env.local_rank)
        resume = run_status(self.run_dir) == "partial"
        extra = models.load_checkpoint_extra(self.ckpt_path) if resume else None
        seed_everything(cfg.seed)
        model = models.load_checkpoint(self.ckpt_path) if resume else models.build_model(cfg.model)
        if cfg.init_from and not resume:
            start_from(model, cfg.init_from)
        self.model = model.to(self.device).train()
        self.main_params = list(self.model.main_parameters())
        self.opt = torch.optim.Adam(self.main_params, lr=cfg.lr)
        aux_params = list(self.model.aux_parameters())
        self.aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else _NoOptimizer()
        self.guard = Guard(cfg, self.model, self.opt, self.aux_opt)
        self.step, self.lr_scale, self.resumed, self.stop_requested = 0, 1.0, resume, False
        self._elapsed_before, self._t_start = 0.0, time.perf_counter()
        if resume:
            self.load_state(_train_state(extra, self.ckpt_path))
        elif self.env.rank > 0:
            seed_everything(cfg.seed + 100_003 * self.env.rank)  # same weights, own data and noise
        self.guard.snapshot(self.step)
        self.loss_fn = RateDistortionLoss(cfg.loss)
        self.sampler = CropSampler(cfg.crop, cfg.batch, cfg.flips)
        self.stepper = _compiled(self._wrap_for_ranks()) if cfg.compile else self._wrap_for_ranks()
        defaults = [ProgressLog(), Checkpoint()]
        if self.env.main and cfg.num_val_crops:
            defaults.insert(1, Validation())
        self.callbacks = [*defaults, *callbacks]
        self.log: RunLog | None = None

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _wrap_for_ranks(self) -> nn.Module:
        if self.env.world == 1:
            return _Step(self.model)
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(_Step(self.model), device_ids=ids, broadcast_buffers=False)

    # --- the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train up to `cfg.steps` (or until a callback calls `stop`); returns the run's summary."""
        if self.env.main:
            config = json.dumps(self.cfg.to_dict(), indent=2) + "\n"
            atomic_write_text(self.run_dir / "config.json", config)
        self.log = RunLog(self.run_dir / "log.csv", self.step if self.resumed else None, self.env.main)
        self._call("on_train_begin")
        self._t_start = time.perf_counter()
        while self.step < self.cfg.steps and not self.stop_requested:
            self._call("on_step_begin")
            metrics = self.train_step()
            self._call("on_step_end", metrics)
            self.guard.after_step(self.step)
        self._call("on_train_end")
        if self.step < self.cfg.steps:
            return {"status": "stopped", "steps": self.step, "run_dir": str(self.run_dir)}
        return self._finish()

    def train_step(self) -> dict | None:
        """One optimisation step; returns its loss terms as floats, or None when the guard skipped it."""
        lr = self.lr()
        for g in self.opt.param_groups:
            g["lr"] = lr
        x = self.sampler.next().to(self.device, non_blocking=True)
        out, aux_loss = self.stepper(x)
        terms = self.loss_fn(out, x)
        loss = terms["loss"]
        for cb in self.callbacks:
            loss = cb.on_loss(self, loss)
        loss_value = float(loss.detach())
        reason = self.guard.check(loss_value)
        if self.env.world > 1:
            reason = any_rank(reason, self.device)
        grad_norm = float("nan")
        if reason is None:
            grad_norm = self._backward(loss + aux_loss)
            if not math.isfinite(grad_norm):
                reason = f"non-finite gradient norm ({grad_norm})"
        if reason is not None:
            self._skip(reason)
            self.step += 1
            return None
        self.opt.step()
        self.aux_opt.step()
        self.guard.good(loss_value)
        if self.lr_scale < 1.0 and self.cfg.guard_recovery > 0:
            self.lr_scale = min(1.0, self.lr_scale * 2.0 ** (1.0 / self.cfg.guard_recovery))
        self.step += 1
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        return {**metrics, "aux_loss": float(aux_loss.detach()), "grad_norm": grad_norm, "lr": lr}

    def _backward(self, total: torch.Tensor) -> float:
        """Gradients of loss + aux loss; returns the main parameters' gradient norm (before clipping)."""
        self.opt.zero_grad(set_to_none=True)
        self.aux_opt.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.clip_grad > 0:
            return float(torch.nn.utils.clip_grad_norm_(self.main_params, self.cfg.clip_grad))
        norms = [p.grad.norm() for p in self.main_params if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(norms)))

    def _skip(self, reason: str) -> None:
        rollback = self.guard.bad()
        self._call("on_event", "skip", reason)
        if rollback:
            streak = self.guard.bad_streak
            self.lr_scale *= 0.5
            back_to = self.guard.rollback()
            self._call("on_event", "rollback", f"{streak} bad steps: weights and optimizers back to "
                                               f"step {back_to}, lr scale halved to {self.lr_scale:g}"
                                               + (f" (back to 1 over {self.cfg.guard_recovery} good steps)"
                                                  if self.cfg.guard_recovery else ""))
            failure = self.guard.failure(self.lr_scale)
            if failure:
                self._call("on_event", "failed", failure)
                raise LicError(f"{self.run_dir}: training failed at step {self.step}: {failure} (no "
                               "final.json was written). Fix: check λ, β, γ and lr, then retrain in "
                               "another --out (log.csv has the events)")

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def stop(self) -> None:
        """End `fit` after this step, with a checkpoint to resume from (for callbacks)."""
        self.stop_requested = True

    def lr(self) -> float:
        return self.cfg.lr * self.lr_scale * lr_factor(self.step, self.cfg)

    def elapsed_s(self) -> float:
        """Training time of the run so far, over every session."""
        return self._elapsed_before + time.perf_counter() - self._t_start

    # --- state and checkpoints --------------------------------------------------------------------
    def state(self) -> TrainState:
        """The training state now (on several ranks a collective call: it gathers every RNG state)."""
        rng = [get_rng_state()]
        if self.env.world > 1:
            import torch.distributed as dist

            mine, rng = rng[0], [None] * self.env.world
            dist.all_gather_object(rng, mine)
        aux = {n: p.detach().cpu().clone() for n, p in self.model.named_parameters()
               if n.endswith("quantiles")}
        return TrainState(step=self.step, lr_scale=self.lr_scale, elapsed_s=self.elapsed_s(),
                          guard=self.guard.state_dict(), optimizer=self.opt.state_dict(),
                          aux_optimizer=self.aux_opt.state_dict(), aux_params=aux, rng=rng)

    def load_state(self, state: TrainState) -> None:
        self._load_aux_params(state.aux_params)  # the trained quantiles, not the bisected ones
        self.opt.load_state_dict(state.optimizer)
        self.aux_opt.load_state_dict(state.aux_optimizer)
        self.step, self.lr_scale = int(state.step), float(state.lr_scale)
        self._elapsed_before = float(state.elapsed_s)
        self.guard.load_state_dict(state.guard)
        if len(state.rng) == self.env.world:
            set_rng_state(state.rng[self.env.rank])
        else:  # another world size: a fresh, still deterministic, stream per rank
            seed_everything(self.cfg.seed + 100_003 * self.env.rank + self.step)

    def _load_aux_params(self, aux: dict) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in aux.items():
                params[n].copy_(t.to(params[n].device))

    def save_checkpoint(self) -> None:
        """checkpoint.pt (rank 0 writes; every rank runs this) and the guard's new rollback target.

        `model.update(force=True)` builds the entropy-coder tables and may first move the quantiles
        by bisection: the checkpoint gets those (best for `compress`), while training goes on with
        the aux-loss-trained quantiles, kept in the state and restored here and on resume, so that
        the trajectory does not depend on when checkpoints are written.
        """
        state = self.state()
        try:
            with torch.no_grad():
                self.model.update(force=True)
            if self.env.main:
                extra = {"train_config": self.cfg.to_dict(), "train_state": state.to_dict()}
                models.save_checkpoint(self.ckpt_path, self.model, extra=extra)
        finally:
            self._load_aux_params(state.aux_params)
        self.guard.snapshot(self.step)

    def _finish(self) -> dict:
        elapsed = self.elapsed_s()
        if not self.env.main:
            return {"status": "done", "steps": self.step, "run_dir": str(self.run_dir)}
        final = run_summary(self.run_dir, self.cfg, self.step, elapsed, self.env.world)
        atomic_write_text(self.run_dir / "final.json", json.dumps(final, indent=2, default=float) + "\n")
        v = final["val"] or final["train"]
        where = "Kodak crops" if final["val"] else "training (last steps)"
        print(f"{self.run_dir}: done, {self.step} steps in {elapsed / 60:.1f} min; {where}: "
              f"{v['bpp']:.3f} bpp, {v['psnr']:.2f} dB")
        return {**final, "status": "done"}


def start_from(model: models.LearnedCodec, checkpoint: str | os.PathLike) -> None:
    """Copy a trained codec's weights into `model` (amortised training: one long run, then short
    fine-tunes to other λ, losses or priors). The same architecture takes every weight; another
    prior takes the transforms g_a, g_s and the channel steps, so priors compare on equal transforms."""
    base = models.load_checkpoint(checkpoint)
    if (base.config.N, base.config.M) != (model.config.N, model.config.M):
        raise LicError(f"cannot start from {checkpoint}: it has N={base.config.N}, M={base.config.M}, "
                       f"this run N={model.config.N}, M={model.config.M}")
    weights = {k: v.detach().clone() for k, v in base.named_parameters()}  # not the coder tables
    if base.config.prior != model.config.prior:
        weights = {k: v for k, v in weights.items() if k.startswith(("g_a.", "g_s.", "log_channel_scale"))}
    if base.config.channel_scale and not model.config.channel_scale:
        _fold_channel_scale(weights)
    own = dict(model.named_parameters())
    missing = [k for k in weights if k not in own or own[k].shape != weights[k].shape]
    if missing:
        raise LicError(f"cannot start from {checkpoint}: its weights {missing[:3]} do not fit this codec "
                       f"(channel_scale differs?)")
    with torch.no_grad():
        for k, v in weights.items():
            own[k].copy_(v)


def _fold_channel_scale(weights: dict) -> None:
    """Fold the learned step s into the transforms, for a codec without one: v = g_a(x)/s becomes g_a's
    last convolution divided by s (per output channel), and g_s(v̂·s) its first transposed
    convolution multiplied by s (per input channel): the same function, no separate step."""
    s = weights.pop("log_channel_scale").exp()
    last = max(int(k.split(".")[1]) for k in weights if k.startswith("g_a.") and k.endswith(".weight"))
    weights[f"g_a.{last}.weight"] /= s.reshape(-1, 1, 1, 1)
    weights[f"g_a.{last}.bias"] /= s
    weights["g_s.0.weight"] *= s.reshape(-1, 1, 1, 1)


def _train_state(extra: dict | None, ckpt: Path) -> TrainState:
    if not extra or "train_state" not in extra:
        raise LicError(f"{ckpt} holds the training state of an older lic_utils trainer; "
                       f"delete {ckpt.parent} to retrain the run")
    return TrainState(**extra["train_state"])


# --- callbacks -------------------------------------------------------------------------------------
class ProgressLog(Callback):
    """log.csv rows (means over each `log_every` window, guard events) and the progress bar."""

    def on_train_begin(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        cfg = trainer.cfg
        shown = cfg.progress and trainer.env.main
        self.bar = tqdm(total=cfg.steps, initial=trainer.step, desc=trainer.run_dir.name, unit="step",
                        dynamic_ncols=True, disable=not shown, mininterval=1.0)
        self._new_window()

    def _new_window(self) -> None:
        self.terms: dict[str, list] = {}
        self.busy, self.images = 0.0, 0  # seconds spent in good steps, and their crops

    def on_step_begin(self, trainer: Trainer) -> None:
        self.t_step = time.perf_counter()

    def on_step_end(self, trainer: Trainer, metrics: dict | None) -> None:
        self.bar.update(1)
        if metrics is not None:
            for k, v in metrics.items():
                self.terms.setdefault(k, []).append(v)
            self.images += trainer.cfg.batch
            self.busy += time.perf_counter() - self.t_step
        if trainer.step % trainer.cfg.log_every and trainer.step != trainer.cfg.steps:
            return
        if self.terms:
            row = {k: float(np.mean(v)) for k, v in self.terms.items()}
            row.update(step=trainer.step, time_s=trainer.elapsed_s(),
                       images_per_s=self.images * trainer.env.world / max(self.busy, 1e-9))
            trainer.log.write(row)
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", bpp=f"{row['bpp']:.3f}",
                                 psnr=f"{row['psnr']:.2f}", refresh=False)
        self._new_window()

    def on_event(self, trainer: Trainer, kind: str, detail: str) -> None:
        trainer.log.write({"step": trainer.step, "time_s": trainer.elapsed_s(), "lr": trainer.lr(),
                           "event": f"{kind}: {detail}"})
        if trainer.env.main:
            self.bar.write(f"[{trainer.run_dir.name}] step {trainer.step}: {kind}: {detail}")

    def on_train_end(self, trainer: Trainer) -> None:
        self.bar.close()


class Validation(Callback):
    """Every `val_every` steps and at the end: the loss terms on fixed Kodak crops (rank 0)."""

    def on_train_begin(self, trainer: Trainer) -> None:
        self.crops = kodak_val_crops(trainer.cfg.num_val_crops, trainer.cfg.val_crop).to(trainer.device)

    def on_step_end(self, trainer: Trainer, metrics: dict | None) -> None:
        if trainer.step % trainer.cfg.val_every == 0 or trainer.step == trainer.cfg.steps:
            v = validate(trainer.model, self.crops, trainer.loss_fn)
            trainer.log.write({"step": trainer.step, "time_s": trainer.elapsed_s(),
                               **{f"val_{k}": value for k, value in v.items()}})


class Checkpoint(Callback):
    """checkpoint.pt every `ckpt_every` steps, at the last step, and when a callback stops the run."""

    def on_train_begin(self, trainer: Trainer) -> None:
        self.saved_at = trainer.step  # a resumed run starts from its checkpoint

    def on_step_end(self, trainer: Trainer, metrics: dict | None) -> None:
        if trainer.step % trainer.cfg.ckpt_every == 0 or trainer.step == trainer.cfg.steps:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.saved_at != trainer.step:
            self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()
        self.saved_at = trainer.step


class TimeLimit(Callback):
    """Stop after `minutes` of training in this sitting, with a checkpoint: a long run trained in
    pieces (`train --max-minutes`) resumes where the last piece stopped, on the same schedule."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes

    def on_train_begin(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer: Trainer, metrics: dict | None) -> None:
        if time.perf_counter() - self.start >= self.seconds:
            trainer.stop()


class FaultInjection(Callback):
    """Tests of the guard: the loss of the given (0-based) steps becomes NaN, on every rank."""

    def __init__(self, steps: Sequence[int]):
        self.steps = set(steps)

    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if trainer.step in self.steps else loss


# --- the entry point -------------------------------------------------------------------------------
def train(cfg: TrainConfig | dict, out: str | os.PathLike, callbacks: Sequence[Callback] = ()) -> dict:
    """Train (or resume, or skip if finished) the run folder `out` with `cfg`.

    Returns the run's summary: final.json's contents with "status" "done" (or "already done"), or
    {"status": "stopped", ...} when a callback stopped the run early. A LicError when another
    process is training `out` (its `.lock`), or when the run fails (Guard.failure).
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    run_dir = Path(out)
    check_run_folder(run_dir, cfg)
    env = init_distributed(cfg.device)
    threads_before = torch.get_num_threads()
    try:
        if run_status(run_dir) == "done":
            final = read_final(run_dir)
            if env.main:
                print(f"{run_dir}: already done ({final['steps']} steps); nothing to train")
            return {**final, "status": "already done"}
        shared = max(1, (os.cpu_count() or 1) // env.local_world) if env.world > 1 else 0
        threads = cfg.threads or shared
        if threads:
            torch.set_num_threads(threads)  # restored on the way out
        with folder_lock(run_dir, "training") if env.main else contextlib.nullcontext():
            return Trainer(cfg, run_dir, env, callbacks).fit()
    finally:
        torch.set_num_threads(threads_before)
        finish_distributed(env)


def train_and_load(cfg: TrainConfig, out: str | os.PathLike) -> tuple[models.LearnedCodec, object]:
    """Train (or reuse) the run `out`, then return its codec (from checkpoint.pt: on the CPU, in eval
    mode, ready to compress) and its training rows of log.csv as a DataFrame (the notebooks)."""
    train(cfg, out)
    log = read_log(out)
    history = log[log["loss"].notna()].dropna(axis=1, how="all").reset_index(drop=True)
    return models.load_checkpoint(Path(out) / "checkpoint.pt"), history
