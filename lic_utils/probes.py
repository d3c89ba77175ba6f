"""What the notebooks look at inside a codec: intermediate latents, bits per channel, the priors'
densities, layer shapes and GDN's response. Nothing here is needed to train or to code an image."""
from __future__ import annotations

import numpy as np
import torch

from lic_utils import coding
from lic_utils.errors import LicError
from lic_utils.layers import GDN, pad_to_multiple
from lic_utils.models import LearnedCodec
from lic_utils.priors import FactorizedEntropyModel, GaussianEntropyModel, channel_view


@torch.no_grad()
def inspect(model: LearnedCodec, x: torch.Tensor) -> dict:
    """Eval-mode intermediates for an image batch: y, v = y/s, v̂, likelihoods, x̂ (and ẑ, σ for the hyperprior)."""
    model.eval()
    H, W = x.shape[-2:]
    v = model.analyze(pad_to_multiple(x, model.config.pad_multiple))
    v_hat, likelihoods = model.prior(v, ("round", "round"))
    out = {"y": v * model.channel_scale(), "v": v, "v_hat": v_hat, "likelihoods": likelihoods,
           "x_hat": model.synthesize(v_hat, (H, W)), "pixels": H * W * x.shape[0]}  # fmt: skip
    if hasattr(model.prior, "side_information"):  # ẑ, and the σ (and μ) it predicts
        out.update(model.prior.side_information(v))
    return out


def bits_per_channel(likelihood: torch.Tensor) -> np.ndarray:
    """−Σ log2 p per latent channel (summed over batch and positions)."""
    return (-torch.log2(likelihood)).sum((0, 2, 3)).detach().cpu().numpy()


def empirical_entropy_bits(symbols: torch.Tensor) -> float:
    """Bits an ideal per-channel coder fitted to these very symbols would need (the histogram's entropy).

    A lower bound for any factorized entropy model; used where a model has no trained prior.
    """
    total = 0.0
    for channel in symbols.transpose(0, 1).reshape(symbols.shape[1], -1):
        _, counts = torch.unique(torch.round(channel), return_counts=True)
        p = counts.double() / counts.sum()
        total += float(-(counts * torch.log2(p)).sum())
    return total


@torch.no_grad()
def prior_density(model: LearnedCodec, values: torch.Tensor) -> np.ndarray:
    """p(v) of each channel's factorized prior, for unit-width bins centred on `values` (M × len(values)).

    This is the density the rate term sees (the prior convolved with a unit box); at integers offset by
    the channel's centre it is the coder's probability mass.
    """
    v = values.reshape(1, 1, 1, -1).expand(1, model.config.M, 1, values.numel())
    prior = model.prior
    if isinstance(prior, FactorizedEntropyModel):
        p = coding.bottleneck_likelihood(prior.entropy_bottleneck, v)
    elif isinstance(prior, GaussianEntropyModel):
        scales = channel_view(prior.scale()).expand_as(v)
        p = coding.gaussian_likelihood(prior.gaussian_conditional, v, scales, prior.center())
    else:
        raise LicError(f"the {model.config.prior} prior has no fixed density: its σ depends on the image "
                       "(see inspect()['scales'])")
    return p[0, :, 0].cpu().numpy()


def transform_summary(model: LearnedCodec, height: int = 256, width: int = 256) -> list[dict]:
    """One row per layer of g_a and g_s: output shape for an image of this size, and parameter count."""
    rows = []
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        for name, net in (("g_a", model.g_a), ("g_s", model.g_s)):
            for i, layer in enumerate(net):
                x = layer(x)
                rows.append({"transform": name, "layer": i, "type": type(layer).__name__ + (" (inverse)" if getattr(layer, "inverse", False) else ""),
                             "output": "×".join(map(str, x.shape[1:])), "parameters": sum(p.numel() for p in layer.parameters())})  # fmt: skip
            if name == "g_a":
                x = torch.round(x)
    return rows


@torch.no_grad()
def gdn_response(gdn: GDN, amplitudes: torch.Tensor) -> np.ndarray:
    """Each channel's GDN output when that channel alone is driven with amplitude a (C × len(a)).

    GDN divides by sqrt(β_c + Σ_j γ_cj x_j²): with one active channel, a/sqrt(β_c + γ_cc a²), linear
    for small inputs and saturating for large ones (the inverse GDN of g_s expands instead).
    """
    beta = gdn.beta_reparam(gdn.beta)
    gamma_diag = torch.diagonal(gdn.gamma_reparam(gdn.gamma))
    a = amplitudes.reshape(1, -1)
    norm = torch.sqrt(beta[:, None] + gamma_diag[:, None] * a**2)
    return (a * norm if gdn.inverse else a / norm).cpu().numpy()
