"""The study's profiles in one table: how long to train, which models, which images and codecs.

A profile is the one knob a user turns (`make study PROFILE=…`, `--profile` on the command line,
`profile = "…"` in a notebook). Everything that differs between profiles lives in its `Profile` row
below, and nowhere else: the CLI's choices, the training defaults, the study's grid of models, the
evaluation images and codecs, and the notebooks' scale all read it.

- `smoke`: seconds; a toy codec on tiny crops, two Kodak crops, three fast codecs (the tests).
- `cpu`:   a laptop from scratch, ≤ 3 h for the whole study on 2 CPU cores (the committed results).
- `reference`: the shipped models (zoo/): the cpu recipe with a 3.25× longer base and longer
  fine-tunes, trained on 2 CPU cores; `make study` reads the study from them without training.
- `gpu`:   paper scale (Ballé et al.: N=128, M=192, 256² crops, 250k steps); run it on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lic_utils.errors import LicError

# The three loss variants of the study: L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS (lic_utils.losses).
# β = 0.025 gives 1 − MS-SSIM the gradient norm of the MSE term (measured on a cpu-profile codec at
# ≈ 0.25 bpp, batches of 8 BSDS500 crops: ‖∇MSE‖ = 0.0088, ‖∇(1 − MS-SSIM)‖ = 0.35, ‖∇LPIPS‖ = 2.6,
# so equal gradients at β = 0.025, γ = 0.0034). γ = 0.01: fine-tuned from an MSE base, it brought
# Kodak LPIPS below WebP's at equal bytes (0.204 against 0.218 at 0.31 bpp), where γ = 0.002, the
# earlier study's weight, stayed above it (0.245 against 0.237 at 0.28 bpp;
# results/amortised_training.csv). γ = 0.002 remains an extra point of the cpu study.
LOSS_VARIANTS = {"mse": {"beta": 0.0, "gamma": 0.0}, "msssim": {"beta": 0.025, "gamma": 0.0},
                 "lpips": {"beta": 0.0, "gamma": 0.01}}


@dataclass(frozen=True)
class Profile:
    """One row of the profile table (see the module docstring)."""

    name: str
    # training: TrainConfig fields over its defaults (the defaults are the cpu profile)
    train: dict = field(default_factory=dict)
    # the study's grid: λ of the main RD curves (≥ 4 points), λ of the single-point ablations
    # (≈ 0.2 bpp), extra β/γ settings of notebook 06, and processes at once in `make study`: runs
    # trained, and codec evaluations (one thread each: two one-thread runs on 2 cores beat one
    # two-thread run)
    lmbdas: tuple = ()
    ablation_lmbda: float = 4e-3
    extra_variants: dict = field(default_factory=dict)
    workers: int = 1
    # seed noise: the single-point ablations (the priors, no per-channel scale, and the loss
    # variants named here, from LOSS_VARIANTS or extra_variants) are trained with `seeds` seeds (the
    # fine-tunes' seeds: the base is shared), so a difference can be judged against their spread
    seeds: int = 1
    seed_variants: tuple = ("mse",)
    # amortised training, as CompressAI's zoo was made: one long MSE run at the ablation λ (the
    # `base`: TrainConfig fields over `train`), then every run of the grid fine-tuned from it
    # (`finetune`: the fine-tunes' fields). An empty `base`: every run trains from scratch.
    base: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    # TrainConfig fields of the prior ablation's runs, per prior (e.g. larger crops for the hyperprior)
    prior_train: dict = field(default_factory=dict)
    # evaluation: the first `images` Kodak images (centre crops of `crop` pixels when set), the
    # classical codecs compared (None: all five) and their sweep (None: every quality setting)
    images: int = 24
    crop: int | None = None
    codecs: tuple | None = None
    n_qualities: int | None = None
    # notebook 08: the centred part of its image that is coded, as a fraction of each side (None:
    # the whole image), and the λ of its models (None: every λ of the main grid)
    viewer_crop: float | None = None
    viewer_lmbdas: tuple | None = None
    # notebooks 01–03, the small models that explain one idea each (TrainConfig fields), and the
    # part of kodim23 they show (rows, columns; None: the whole image)
    explain: dict = field(default_factory=dict)
    explain_kodak_crop: tuple | None = None
    # a profile whose models ship in zoo/ (`make study PROFILE=…` then exports them): the family of
    # compress's default model, its model nearest 0.2 bpp on Kodak ("" : the profile ships nothing)
    zoo_default: str = ""


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        "smoke",
        # one thread: a toy model gains nothing from two, and loses a lot on a busy machine
        train=dict(N=16, M=24, crop=64, batch=4, steps=40, lr=2e-3, warmup=5, log_every=5, val_every=20,
                   ckpt_every=20, num_val_crops=2, val_crop=128, guard_window=10, threads=1),
        lmbdas=(1.6e-2, 8e-3, 4e-3, 2e-3), ablation_lmbda=4e-3,
        extra_variants={"lpips-g0.03": {"beta": 0.0, "gamma": 0.03}}, workers=1,
        seeds=2, seed_variants=("mse", "lpips"),
        base=dict(steps=40), finetune=dict(steps=20, warmup=5),
        images=2, crop=256, codecs=("jpeg", "webp", "jpeg2000"), n_qualities=4, viewer_crop=0.5,
        viewer_lmbdas=(4e-3,),
        explain=dict(N=16, M=24, steps=20, crop=64, batch=4),
        explain_kodak_crop=(192, 256),
    ),
    Profile(
        "cpu",
        # the TrainConfig defaults: N=48, 8 128×128 crops a step, lr 1e-3 (benchmarks/tune_cpu.py).
        # Amortised (benchmarks/training_budget.py, amortised_training.py): a 40,000-step base
        # (≈ 45 min on 2 cores), then 1,500-step fine-tunes at lr 5e-4, two at a time (≈ 2 min a
        # run); all compiled (torch.compile: 1.32× a step after ≈ 16 s, results/recipes_speed.csv).
        # The base starts gently: at 16k steps lr 7e-4 after a 500-step warm-up had no guard event
        # where lr 1e-3 after 100 had 5, and ended 0.04 dB closer to WebP
        # (results/training_budget_lr0.0007_warmup500.csv against training_budget.csv)
        train=dict(),
        base=dict(steps=40_000, lr=7e-4, warmup=500, compile=True),
        finetune=dict(steps=1500, lr=5e-4, warmup=50, compile=True),
        # 2 crops of 256², the same pixels a step: at 128² the hyperprior's z is 2×2 per crop, and its
        # fine-tune spent 0.299 bpp where 256² crops spent 0.251 (results/prior_finetune.csv)
        prior_train={"hyperprior": dict(crop=256, batch=2)},
        # λ from ≈ 0.1 to ≈ 0.35 bpp (MSE), with 0.2 bpp inside every loss variant's curve, and
        # 6e-3 near 0.2 bpp, where the claims are read: the session-7 MSE curve had no point between
        # 0.185 and 0.251 bpp, and the chord of a concave curve reads it low (by 0.02 dB, it turned out)
        lmbdas=(2e-2, 8e-3, 6e-3, 4e-3, 1.5e-3), ablation_lmbda=4e-3,
        # the γ sweep of notebook 06: the earlier study's weight, HiFiC's (γ ≈ 0.0067 in this
        # normalisation: notebook 06), the study's 0.01 and a larger one
        extra_variants={"lpips-g0.002": {"beta": 0.0, "gamma": 0.002},
                        "lpips-g0.0067": {"beta": 0.0, "gamma": 0.0067},
                        "lpips-g0.03": {"beta": 0.0, "gamma": 0.03}}, workers=2,
        seeds=3, seed_variants=("mse", "msssim", "lpips", "lpips-g0.002"),
        images=24,
        explain=dict(N=32, M=48, steps=800, crop=64, batch=8),
    ),
    Profile(
        "reference",
        # the shipped models (zoo/, issue 15): the cpu recipe at 3.25× its base, trained here on 2
        # cores. Model size N=48, M=96 as the cpu profile: at equal minutes N=64/M=96 was no better
        # (results/model_size.csv), and it is 1.6× slower a step and 1.7× the bytes in the zoo.
        # The base (≈ 2.3 h on 2 cores, one piece), then 4,000-step fine-tunes at lr 5e-4 (≈ 7 min
        # a run on one thread, two at a time: ≈ 80 min for the 24)
        # Threads are pinned (2 for the base, 1 a fine-tune) because the arithmetic depends on them:
        # `make reference` retrains the shipped weights bit for bit with the same PyTorch on a CPU of
        # the same instruction set (AVX2 here; other kernels round differently).
        train=dict(),
        base=dict(steps=130_000, lr=7e-4, warmup=500, compile=True, threads=2),
        finetune=dict(steps=4000, lr=5e-4, warmup=100, compile=True, threads=1),
        prior_train={"hyperprior": dict(crop=256, batch=2)},
        # ≈ 0.1 to ≈ 0.4 bpp for every loss variant, with 1.2e-2 where the cpu +LPIPS curve had no
        # point (between 0.146 and 0.246 bpp) and 6e-3 near 0.2 bpp for MSE
        lmbdas=(2e-2, 1.2e-2, 6e-3, 4e-3, 1.5e-3), ablation_lmbda=4e-3,
        # two seeds of the single-point ablations: 25 models of ≈ 2 MB fit the zoo's 60 MB
        workers=2, seeds=2, seed_variants=("mse", "msssim", "lpips"), images=24,
        explain=dict(N=32, M=48, steps=800, crop=64, batch=8),
        # compress's default: +MS-SSIM, the family best in SSIMULACRA2 (the metric no model is
        # trained on) at 0.2 bpp in the cpu study (11.8 against MSE's 5.7 and +LPIPS's 1.3)
        zoo_default="msssim",
    ),
    Profile(
        "gpu",
        train=dict(N=128, M=192, crop=256, batch=16, steps=250_000, lr=1e-4, aux_lr=1e-3, warmup=2000,
                   lr_schedule="step", clip_grad=1.0, log_every=100, val_every=5000, ckpt_every=5000,
                   num_val_crops=8),
        lmbdas=(1.6e-2, 8e-3, 4e-3, 2e-3, 1e-3, 5e-4), ablation_lmbda=4e-3,
        extra_variants={"msssim-b0.2": {"beta": 0.2, "gamma": 0.0}, "lpips-g0.003": {"beta": 0.0, "gamma": 0.003},
                        "lpips-g0.03": {"beta": 0.0, "gamma": 0.03}},
        workers=1, images=24,
        explain=dict(N=128, M=192, steps=5000, crop=128, batch=16),
    ),
)}


def get_profile(name: str | Profile) -> Profile:
    """The profile called `name` (a Profile is returned as it is)."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise LicError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
