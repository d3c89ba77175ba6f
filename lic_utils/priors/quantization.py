"""Quantization: rounding, and the differentiable proxies training uses in its place.

Training replaces rounding by a proxy: "noise" adds U(−½, ½), "ste" rounds with an identity
gradient. Every value is rounded on the grid the coder codes: integers offset by the model's centre
(the EntropyBottleneck's median, the Gaussian's mean, a predicted μ; zero for the scale
hyperprior's y), so `decompress(compress(v))` is exactly the v̂ of an eval-mode forward pass.
"""
from __future__ import annotations

import torch

from lic_utils.coding import EntropyBottleneck


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def uniform_noise(x: torch.Tensor) -> torch.Tensor:
    """x + U(−½, ½): the continuous relaxation whose density is the prior convolved with a unit box."""
    return x + torch.empty_like(x).uniform_(-0.5, 0.5)


def quantize(values: torch.Tensor, mode: str, center: torch.Tensor | None = None) -> torch.Tensor:
    """One quantizer: "noise", "ste" or "round", on the integer grid shifted by `center`."""
    if mode == "noise":
        return uniform_noise(values)
    c = 0.0 if center is None else center
    if mode == "ste":
        return ste_round(values - c) + c
    if mode == "round":
        return torch.round(values - c) + c
    raise ValueError(f"unknown quantization mode {mode!r}")


def quantize_pair(values: torch.Tensor, quantizers: tuple[str, str], center=None):
    """(values for the rate term, values for the decoder); one draw when both use the same proxy."""
    rate_mode, synth_mode = quantizers
    for_rate = quantize(values, rate_mode, center)
    return for_rate, for_rate if synth_mode == rate_mode else quantize(values, synth_mode, center)


def channel_view(t: torch.Tensor) -> torch.Tensor:
    """A per-channel vector as 1×C×1×1, to broadcast over a latent."""
    return t.reshape(1, -1, 1, 1)


def bottleneck_center(eb: EntropyBottleneck) -> torch.Tensor:
    """The EntropyBottleneck codes integers offset by its per-channel medians (detached: the aux loss
    owns them)."""
    return channel_view(eb.quantiles[:, 0, 1].detach())
