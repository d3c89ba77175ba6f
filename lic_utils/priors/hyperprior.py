"""The scale hyperprior (Ballé et al. 2018): side information z = h_a(|v|), coded with a factorized
prior, predicts σ = h_s(ẑ) for every element of v, and v̂ ~ N(0, σ²) ∗ U(−½, ½). h_s is an
ExactSequential: outside training its σ, which pick the coding tables, are the same bits on every
machine."""
from __future__ import annotations

import torch
import torch.nn as nn

from lic_utils import coding
from lic_utils.coding import EntropyBottleneck, GaussianConditional
from lic_utils.exact import float_arithmetic
from lic_utils.layers import hyper_analysis, hyper_synthesis, inference_layout
from lic_utils.priors import register
from lic_utils.priors.quantization import bottleneck_center, quantize, quantize_pair


@register
class HyperpriorEntropyModel(nn.Module):
    """Ballé 2018's scale hyperprior: side information z (factorized) predicts a σ for every element of v."""

    name = "hyperprior"
    names = ("y", "z")
    stride = 64
    derives_tables = True
    options: dict = {}

    def __init__(self, N: int, M: int):
        super().__init__()
        self.N, self.M = N, M
        self.h_a = hyper_analysis(N, M)
        self.h_s = hyper_synthesis(N, M)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    def scales(self, z_hat: torch.Tensor) -> torch.Tensor:
        """σ = h_s(ẑ): in float while training, by h_s's exact twin outside it (one code path for
        encoder, decoder, estimates and probes)."""
        return self.h_s(z_hat if self.training else inference_layout(z_hat))

    def forward(self, v, quantizers):
        z = self.h_a(self.analysis_input(v))
        z_rate, z_synth = quantize_pair(z, quantizers, bottleneck_center(self.entropy_bottleneck))
        v_rate, v_synth = quantize_pair(v, quantizers)
        likelihoods = {
            "y": coding.gaussian_likelihood(self.gaussian_conditional, v_rate, self.scales(z_synth)),
            "z": coding.bottleneck_likelihood(self.entropy_bottleneck, z_rate),
        }
        return v_synth, likelihoods

    def analysis_input(self, v: torch.Tensor) -> torch.Tensor:
        """What h_a sees: |v| (σ does not depend on the sign; the mean-scale priors override this)."""
        return v.abs()

    def code_side_information(self, v: torch.Tensor) -> tuple[bytes, torch.Tensor, torch.Tensor]:
        """z = h_a(v) entropy-coded: (its string, ẑ as the decoder gets it, its table indexes)."""
        eb = self.entropy_bottleneck
        z = self.h_a(self.analysis_input(v))
        coding.check_latents(z)
        center = bottleneck_center(eb)
        z_indexes = coding.bottleneck_indexes(eb, z.size())
        coding.check_encodable(torch.round(z - center).int(), z_indexes, eb)
        # round(z − median) + median = eb.decompress of the string, bit for bit, without decoding it
        return eb.compress(z)[0], quantize(z, "round", center), z_indexes

    def decode_side_information(self, string: bytes, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ, its table indexes) from z's string."""
        z_hat = self.entropy_bottleneck.decompress([string], tuple(shape))
        return z_hat, coding.bottleneck_indexes(self.entropy_bottleneck, z_hat.size())

    def compress(self, v, exact: bool = True) -> dict:
        gc = self.gaussian_conditional
        z_string, z_hat, z_indexes = self.code_side_information(v)
        with float_arithmetic(self, not exact):
            indexes = self.table_indexes(self.scales(z_hat))
        coding.check_encodable(torch.round(v).int(), indexes, gc)
        y_strings = gc.compress(v, indexes)
        return {"strings": [y_strings[0], z_string], "shape": tuple(z_hat.shape[-2:]),
                "check": coding.check_value([z_indexes, indexes])}

    def decompress(self, strings, shape, check=None, exact: bool = True) -> dict:
        z_hat, z_indexes = self.decode_side_information(strings[1], shape)
        with float_arithmetic(self, not exact):
            indexes = self.table_indexes(self.scales(z_hat))
        coding.verify_check([z_indexes, indexes], check)  # before y
        return {"y": self.gaussian_conditional.decompress([strings[0]], indexes, z_hat.dtype), "z": z_hat}

    def likelihoods(self, latents: dict) -> dict:
        return {
            "y": coding.gaussian_likelihood(self.gaussian_conditional, latents["y"], self.scales(latents["z"])),
            "z": coding.bottleneck_likelihood(self.entropy_bottleneck, latents["z"]),
        }

    def table_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """The coding table of every element of y (coding.table_indexes)."""
        return coding.table_indexes(self.gaussian_conditional, scales)

    def quantized_side_information(self, v: torch.Tensor) -> torch.Tensor:
        """ẑ of v as compress would code it (eval mode)."""
        return quantize(self.h_a(self.analysis_input(v)), "round", bottleneck_center(self.entropy_bottleneck))

    def side_information(self, v: torch.Tensor) -> dict:
        """What notebook 03 looks at: ẑ and the σ it predicts for v (eval mode)."""
        z_hat = self.quantized_side_information(v)
        return {"z_hat": z_hat, "scales": self.scales(z_hat)}

    def coded_shape(self, v_hw) -> tuple[int, int]:
        return (v_hw[0] // 4, v_hw[1] // 4)

    def symbol_counts(self, shape) -> list[int]:
        h, w = shape
        return [self.M * 16 * h * w, self.N * h * w]

    def update(self, force: bool, update_quantiles: bool) -> bool:
        updated = self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)
        return coding.update_scale_table(self.gaussian_conditional, force) or updated
