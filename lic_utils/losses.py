"""The study's training objective, one convention everywhere:

    L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS        larger λ → fewer bits

Units (all terms are batch means):
- R: the estimated rate in bits per pixel, −Σ log2 p(ŷ) / (N·H·W) summed over every latent
  (ŷ, and ẑ for the hyperprior) of the batch, i.e. the mean bpp of the N images;
- MSE: mean squared error on images in [0, 1] (no 255² factor: MSE 1e-3 is 30 dB, 1.6e-3 is 28 dB);
- MS-SSIM: pytorch-msssim with data_range=1 (window from `metrics.msssim_window`, so 64×64 and
  128×128 training crops work); the term 1 − MS-SSIM is 0 for identical images;
- LPIPS: AlexNet v0.1 from `lic_utils.metrics` (frozen, eval mode, inputs scaled to [−1, 1] there).
  Its parameters are never handed to an optimizer: they are not part of the codec.

λ weighs the rate against an MSE on the [0, 1] scale, so it is small. CompressAI's form
`λ'·255²·MSE + R` is the same objective divided by λ'·255²: λ = 1 / (255²·λ'), e.g. CompressAI's
λ' = 0.0018…0.0130 is λ ≈ 8.5e-3…1.2e-3 here, and λ' = 0.01 is λ ≈ 1.54e-3. λ = 0 trains a plain
autoencoder (the rate is still measured). Measured with the `cpu` profile (MSE only, factorized
prior, N=48/M=96, 3,500 steps; all 24 Kodak images compressed to real .lic files):

    λ        bpp (file)   PSNR
    1.2e-2   0.101        23.89 dB
    6e-3     0.159        24.69 dB
    4e-3     0.202        24.95 dB
    1.5e-3   0.381        25.15 dB

so λ ≈ 1e-3 … 1.2e-2 spans ≈ 0.1 … 0.45 bpp. The PSNR barely grows with the rate: the short CPU
schedule sets the rate early (the validation bpp is flat after step 2,000) while the PSNR is still
climbing at the end (+0.5 dB from step 2,000 to 3,500 at λ = 1.5e-3); the transforms have not yet
learned to turn the extra bits into detail. notebooks/05 and results/learned_kodak.csv hold the
study's own measurements.

β (MS-SSIM) and γ (LPIPS) weigh terms of very different sizes and slopes; the study's values are
`profiles.LOSS_VARIANTS` (with the gradient norms they were chosen from).

MS-SSIM and LPIPS are only computed when their weight is > 0 (LPIPS roughly doubles the cost of a
training step on a CPU); otherwise their entries are NaN, unless `monitor=True` asks for every
term (computed without gradients).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import nn

from lic_utils import metrics
from lic_utils.errors import LicError


@dataclass(frozen=True)
class LossConfig:
    """The weights of L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS: finite numbers ≥ 0."""

    lmbda: float = 4e-3  # rate (bpp) against MSE on [0, 1]
    beta: float = 0.0  # 1 − MS-SSIM
    gamma: float = 0.0  # LPIPS

    def __post_init__(self):
        for name, value in self.to_dict().items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise LicError(f"loss weight {name} must be a finite number ≥ 0, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _flatten_likelihoods(likelihoods) -> list[torch.Tensor]:
    if isinstance(likelihoods, torch.Tensor):
        return [likelihoods]
    if isinstance(likelihoods, Mapping):
        return [t for v in likelihoods.values() for t in _flatten_likelihoods(v)]
    if isinstance(likelihoods, (list, tuple)):
        return [t for v in likelihoods for t in _flatten_likelihoods(v)]
    raise TypeError(f"likelihoods must be tensors, or dicts/lists of them, "
                    f"got {type(likelihoods).__name__}")


def bpp(likelihoods, num_pixels: int) -> torch.Tensor:
    """Estimated rate in bits per pixel: −Σ log2 p over every likelihood tensor / `num_pixels`.

    `num_pixels` is N·H·W of the batch, so the result is the batch's mean bpp.
    """
    total = sum(torch.log(t).sum() for t in _flatten_likelihoods(likelihoods))
    return total / (-math.log(2) * num_pixels)


def psnr_from_mse(mse: torch.Tensor | float) -> torch.Tensor:
    """10·log10(1 / MSE) in dB for an MSE on the [0, 1] scale (unrounded, the training PSNR)."""
    mse = torch.as_tensor(mse, dtype=torch.float32)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def rd_loss(
    out: Mapping,
    x: torch.Tensor,
    lmbda: float,
    beta: float = 0.0,
    gamma: float = 0.0,
    monitor: bool = False,
) -> dict[str, torch.Tensor]:
    """L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS for a model output and the input batch `x`.

    `out` is the model's dict ("x_hat", "likelihoods"); `x` is N×3×H×W in [0, 1]. Returns a dict
    of 0-d tensors: loss (differentiable), bpp, mse, psnr (from the MSE), ms_ssim (the index, 1 is
    perfect), lpips. Terms whose weight is 0 are NaN unless `monitor` is set.
    """
    x_hat = out["x_hat"]
    n, _, h, w = x.shape
    rate = bpp(out["likelihoods"], n * h * w)
    mse = (x_hat - x).pow(2).mean()
    loss = lmbda * rate + mse
    nan = x.new_tensor(float("nan"))
    ms_ssim, lp = nan, nan
    if beta > 0:
        ms_ssim = metrics.ms_ssim(x_hat, x).mean()
        loss = loss + beta * (1 - ms_ssim)
    elif monitor:
        with torch.no_grad():
            ms_ssim = metrics.ms_ssim(x_hat.detach(), x).mean()
    if gamma > 0:
        lp = metrics.lpips(x_hat, x).mean()
        loss = loss + gamma * lp
    elif monitor:
        with torch.no_grad():
            lp = metrics.lpips(x_hat.detach(), x).mean()
    return {
        "loss": loss,
        "bpp": rate,
        "mse": mse,
        "psnr": psnr_from_mse(mse.detach()),
        "ms_ssim": ms_ssim,
        "lpips": lp,
    }


class RateDistortionLoss(nn.Module):
    """`rd_loss` with the weights of a LossConfig. It has no parameters: LPIPS lives in
    lic_utils.metrics, frozen, so neither the codec nor this loss hands its weights to an optimizer."""

    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config

    def forward(self, out: Mapping, x: torch.Tensor, monitor: bool = False) -> dict[str, torch.Tensor]:
        c = self.config
        return rd_loss(out, x, c.lmbda, c.beta, c.gamma, monitor=monitor)

    def extra_repr(self) -> str:
        return f"lmbda={self.config.lmbda:g}, beta={self.config.beta:g}, gamma={self.config.gamma:g}"
