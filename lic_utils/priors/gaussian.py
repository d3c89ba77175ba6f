"""A factorized Gaussian prior: a learned mean and scale per latent channel, convolved with a unit box;
its coding tables are fixed per channel (one table per channel's scale)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from lic_utils import coding
from lic_utils.coding import SCALE_MAX, SCALE_MIN, GaussianConditional
from lic_utils.priors import register
from lic_utils.priors.quantization import channel_view, quantize_pair


@register
class GaussianEntropyModel(nn.Module):
    """A learned Gaussian (mean, log-scale) per channel, convolved with a unit box.

    Coded with a GaussianConditional whose scale table holds exactly the M channel scales (table
    entry c ↔ channel c) and whose means are subtracted by the coder, so the rANS tables use the
    very probabilities the model was trained with.
    """

    name = "factorized-gaussian"
    names = ("y",)
    stride = 16
    derives_tables = False
    options: dict = {}

    def __init__(self, N: int, M: int):
        super().__init__()
        self.M = M
        self.mean = nn.Parameter(torch.zeros(M))
        self.log_scale = nn.Parameter(torch.zeros(M))
        self.gaussian_conditional = GaussianConditional(None)

    def center(self) -> torch.Tensor:
        return channel_view(self.mean)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(math.log(SCALE_MIN), math.log(SCALE_MAX)).exp()

    def forward(self, v, quantizers):
        v_rate, v_synth = quantize_pair(v, quantizers, self.center())
        return v_synth, self.likelihoods({"y": v_rate})

    def compress(self, v, exact: bool = True) -> dict:
        gc, means = self.gaussian_conditional, self.center().detach()
        indexes = self._indexes(v.shape[0], *v.shape[-2:])
        coding.check_encodable(torch.round(v - means).int(), indexes, gc)
        return {"strings": gc.compress(v, indexes, means), "shape": self.coded_shape(v.shape[-2:]),
                "check": coding.check_value([indexes])}

    def decompress(self, strings, shape, check=None, exact: bool = True) -> dict:
        indexes = self._indexes(1, *shape)
        coding.verify_check([indexes], check)
        means = self.center().detach()
        return {"y": self.gaussian_conditional.decompress([strings[0]], indexes, torch.float32, means)}

    def likelihoods(self, latents: dict) -> dict:
        v = latents["y"]
        scales = channel_view(self.scale()).expand_as(v)
        return {"y": coding.gaussian_likelihood(self.gaussian_conditional, v, scales, self.center())}

    def coded_shape(self, v_hw) -> tuple[int, int]:
        return tuple(v_hw)

    def symbol_counts(self, shape) -> list[int]:
        return [self.M * shape[0] * shape[1]]

    def update(self, force: bool, update_quantiles: bool) -> bool:
        gc = self.gaussian_conditional
        if coding.tables_ready(gc) and not force:
            return False
        gc.scale_table = self.scale().detach().clone()
        gc.update()
        return True

    def _indexes(self, b: int, h: int, w: int) -> torch.Tensor:
        """Table entry c for every element of channel c."""
        M = self.M
        return torch.arange(M, dtype=torch.int32, device=self.mean.device).reshape(1, M, 1, 1).expand(b, M, h, w)
