"""The fully factorized prior (Ballé et al. 2018): a non-parametric density per latent channel,
CompressAI's EntropyBottleneck; its coding tables are fixed per channel."""
from __future__ import annotations

import torch
import torch.nn as nn

from lic_utils import coding
from lic_utils.coding import EntropyBottleneck
from lic_utils.priors import register
from lic_utils.priors.quantization import bottleneck_center, quantize_pair


@register
class FactorizedEntropyModel(nn.Module):
    """Ballé 2018's fully factorized non-parametric density, one per channel."""

    name = "factorized"
    names = ("y",)
    stride = 16
    derives_tables = False
    options: dict = {}

    def __init__(self, N: int, M: int):
        super().__init__()
        self.M = M
        self.entropy_bottleneck = EntropyBottleneck(M)

    def center(self) -> torch.Tensor:
        return bottleneck_center(self.entropy_bottleneck)

    def forward(self, v, quantizers):
        v_rate, v_synth = quantize_pair(v, quantizers, self.center())
        return v_synth, {"y": coding.bottleneck_likelihood(self.entropy_bottleneck, v_rate)}

    def compress(self, v, exact: bool = True) -> dict:
        eb = self.entropy_bottleneck
        symbols = torch.round(v - self.center()).int()
        indexes = coding.bottleneck_indexes(eb, v.size())
        coding.check_encodable(symbols, indexes, eb)
        return {"strings": eb.compress(v), "shape": self.coded_shape(v.shape[-2:]),
                "check": coding.check_value([indexes])}

    def decompress(self, strings, shape, check=None, exact: bool = True) -> dict:
        eb = self.entropy_bottleneck
        coding.verify_check([coding.bottleneck_indexes(eb, (1, self.M, *shape))], check)
        return {"y": eb.decompress([strings[0]], tuple(shape))}

    def likelihoods(self, latents: dict) -> dict:
        return {"y": coding.bottleneck_likelihood(self.entropy_bottleneck, latents["y"])}

    def coded_shape(self, v_hw) -> tuple[int, int]:
        return tuple(v_hw)

    def symbol_counts(self, shape) -> list[int]:
        return [self.M * shape[0] * shape[1]]

    def update(self, force: bool, update_quantiles: bool) -> bool:
        return self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)
