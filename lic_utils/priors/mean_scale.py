"""The mean-scale hyperprior (Minnen, Ballé & Toderici 2018, without its serial context model): z =
h_a(v) predicts a mean μ and a scale σ for every element of v, and v̂ = round(v − μ) + μ ~
N(μ, σ²) ∗ U(−½, ½). Coding the residual around a predicted mean removes what a zero-mean scale
model leaves; CompressAI's published Kodak curves put it ≈ 8 % in bits ahead of the scale
hyperprior. Its h_s is an ExactSequential, so μ and σ, which the decoder must rebuild exactly, are
the same bits on every machine; the check value covers the tables and the means.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from lic_utils import coding
from lic_utils.exact import ExactSequential, float_arithmetic
from lic_utils.layers import conv, deconv, inference_layout
from lic_utils.priors import register
from lic_utils.priors.hyperprior import HyperpriorEntropyModel
from lic_utils.priors.quantization import bottleneck_center, quantize_pair


def mean_scale_analysis(N: int, M: int) -> nn.Sequential:
    """h_a: v (signed: the means need its sign) → z (N channels, /4), as CompressAI's MeanScaleHyperprior."""
    return nn.Sequential(conv(M, N, 3, 1), nn.LeakyReLU(inplace=True), conv(N, N), nn.LeakyReLU(inplace=True),
                         conv(N, N))


def mean_scale_synthesis(N: int, M: int) -> ExactSequential:
    """h_s: ẑ → 2M channels at the resolution of v: σ (the first M) and μ (the last M)."""
    return ExactSequential(deconv(N, M), nn.LeakyReLU(inplace=True), deconv(M, M * 3 // 2),
                           nn.LeakyReLU(inplace=True), conv(M * 3 // 2, 2 * M, 3, 1))


@register
class MeanScaleHyperprior(HyperpriorEntropyModel):
    """μ and σ of every element of v from side information z; z coded with a factorized prior."""

    name = "mean-scale"
    names = ("y", "z")
    stride = 64
    derives_tables = True
    options: dict = {}

    def __init__(self, N: int, M: int):
        nn.Module.__init__(self)
        self.N, self.M = N, M
        self.h_a = mean_scale_analysis(N, M)
        self.h_s = mean_scale_synthesis(N, M)
        self.entropy_bottleneck = coding.EntropyBottleneck(N)
        self.gaussian_conditional = coding.GaussianConditional(None)

    def gaussian_params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) = h_s(ẑ): in float while training, by h_s's exact twin outside it."""
        scales, means = self.h_s(z_hat if self.training else inference_layout(z_hat)).chunk(2, 1)
        return means.contiguous(), scales.contiguous()

    def scales(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.gaussian_params(z_hat)[1]

    def forward(self, v, quantizers):
        z = self.h_a(v)
        z_rate, z_synth = quantize_pair(z, quantizers, bottleneck_center(self.entropy_bottleneck))
        means, scales = self.gaussian_params(z_synth)
        v_rate, v_synth = quantize_pair(v, quantizers, means)
        return v_synth, {"y": coding.gaussian_likelihood(self.gaussian_conditional, v_rate, scales, means),
                         "z": coding.bottleneck_likelihood(self.entropy_bottleneck, z_rate)}

    def analysis_input(self, v: torch.Tensor) -> torch.Tensor:
        return v  # signed: the means need the sign

    def compress(self, v, exact: bool = True) -> dict:
        gc = self.gaussian_conditional
        z_string, z_hat, z_indexes = self.code_side_information(v)
        with float_arithmetic(self, not exact):
            means, scales = self.gaussian_params(z_hat)
        indexes = self.table_indexes(scales)
        coding.check_encodable(torch.round(v - means).int(), indexes, gc)
        return {"strings": [gc.compress(v, indexes, means)[0], z_string], "shape": tuple(z_hat.shape[-2:]),
                "check": coding.check_value([z_indexes, indexes, means])}

    def decompress(self, strings, shape, check=None, exact: bool = True) -> dict:
        z_hat, z_indexes = self.decode_side_information(strings[1], shape)
        with float_arithmetic(self, not exact):
            means, scales = self.gaussian_params(z_hat)
        indexes = self.table_indexes(scales)
        coding.verify_check([z_indexes, indexes, means], check)  # before y
        return {"y": self.gaussian_conditional.decompress([strings[0]], indexes, z_hat.dtype, means), "z": z_hat}

    def likelihoods(self, latents: dict) -> dict:
        means, scales = self.gaussian_params(latents["z"])
        return {"y": coding.gaussian_likelihood(self.gaussian_conditional, latents["y"], scales, means),
                "z": coding.bottleneck_likelihood(self.entropy_bottleneck, latents["z"])}

    def side_information(self, v: torch.Tensor) -> dict:
        z_hat = self.quantized_side_information(v)
        means, scales = self.gaussian_params(z_hat)
        return {"z_hat": z_hat, "scales": scales, "means": means}
