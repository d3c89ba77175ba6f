"""Quantization and the three entropy models p(v̂) of the study, behind one small protocol.

    "factorized"           a non-parametric density per channel (Ballé 2018; CompressAI's EntropyBottleneck)
    "factorized-gaussian"  a learned Gaussian per channel, convolved with U(−½, ½)
    "hyperprior"           z = h_a(|v|), σ = h_s(ẑ), v̂ ~ N(0, σ²) ∗ U(−½, ½) (Ballé 2018's scale hyperprior)

Training replaces rounding by a differentiable proxy: "noise" adds U(−½, ½), "ste" rounds with an
identity gradient. Every value is rounded on the grid the coder codes: integers offset by the model's
per-channel centre (the EntropyBottleneck's median, the Gaussian's mean; zero for the hyperprior's y),
so `decompress(compress(v))` is exactly the v̂ of an eval-mode forward pass.

Every entropy model is an nn.Module with the same methods and the same kinds of values:
    forward(v, quantizers)     → (v̂ for the decoder, {string name: likelihoods})
    compress(v, exact)         → {"strings": [bytes per name], "shape": (h, w) of the coded latent,
                                  "check": coding.check_value of the table indices it coded with}
    decompress(strings, shape, check, exact) → {string name: decoded latent}   ("y" is v̂)
    likelihoods(latents)       → {string name: likelihoods}      (of decoded latents)
    coded_shape((h, w) of v), symbol_counts(shape), update(force, update_quantiles)
`derives_tables` says whether the table of a symbol is computed from decoded values (the
hyperprior's σ = h_s(ẑ)) rather than fixed per channel. Such a model's networks are
ExactSequential: outside training they compute by their exact twin (lic_utils.exact), the same bits
on every machine; `exact=False` computes them in float instead, as files of format 1 were written,
which decode correctly only on a machine that computes the same floats. `decompress` refuses
(coding.TablesMismatch) when the tables it derives do not give the encoder's check value.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from lic_utils import coding
from lic_utils.coding import EntropyBottleneck, GaussianConditional
from lic_utils.exact import float_arithmetic
from lic_utils.layers import hyper_analysis, hyper_synthesis, inference_layout

# Gaussian scales live in [SCALE_MIN, SCALE_MAX] (CompressAI's range). The hyperprior codes each σ
# with the next larger of TABLE_LEVELS log-spaced scales up to TABLE_MAX (steps of 2.5 %).
# CompressAI's default (64 levels up to 256) costs ~2 % over the model's estimate on Kodak, as each
# σ is rounded up by up to 13 %. Larger σ (rare: the learned channel step absorbs the latents'
# range) are coded with σ = TABLE_MAX, correctly but dearer.
SCALE_MIN, SCALE_MAX = 0.11, 256.0
TABLE_MAX, TABLE_LEVELS = 64.0, 256


# --- quantization ----------------------------------------------------------------------------------
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


# --- the three entropy models ----------------------------------------------------------------------
class FactorizedEntropyModel(nn.Module):
    """Ballé 2018's fully factorized non-parametric density, one per channel."""

    names = ("y",)
    derives_tables = False

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


class GaussianEntropyModel(nn.Module):
    """A learned Gaussian (mean, log-scale) per channel, convolved with a unit box.

    Coded with a GaussianConditional whose scale table holds exactly the M channel scales (table
    entry c ↔ channel c) and whose means are subtracted by the coder, so the rANS tables use the
    very probabilities the model was trained with.
    """

    names = ("y",)
    derives_tables = False

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


class HyperpriorEntropyModel(nn.Module):
    """Ballé 2018's scale hyperprior: side information z (factorized) predicts a σ for every element of v."""

    names = ("y", "z")
    derives_tables = True

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
        z = self.h_a(v.abs())
        z_rate, z_synth = quantize_pair(z, quantizers, bottleneck_center(self.entropy_bottleneck))
        v_rate, v_synth = quantize_pair(v, quantizers)
        likelihoods = {
            "y": coding.gaussian_likelihood(self.gaussian_conditional, v_rate, self.scales(z_synth)),
            "z": coding.bottleneck_likelihood(self.entropy_bottleneck, z_rate),
        }
        return v_synth, likelihoods

    def compress(self, v, exact: bool = True) -> dict:
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z = self.h_a(v.abs())
        coding.check_latents(z)
        center = bottleneck_center(eb)
        z_indexes = coding.bottleneck_indexes(eb, z.size())
        coding.check_encodable(torch.round(z - center).int(), z_indexes, eb)
        z_strings = eb.compress(z)
        z_hat = quantize(z, "round", center)  # = eb.decompress(z_strings), bit for bit, without decoding
        with float_arithmetic(self, not exact):
            indexes = self.table_indexes(self.scales(z_hat))
        coding.check_encodable(torch.round(v).int(), indexes, gc)
        y_strings = gc.compress(v, indexes)
        return {"strings": [y_strings[0], z_strings[0]], "shape": tuple(z.shape[-2:]),
                "check": coding.check_value([z_indexes, indexes])}

    def decompress(self, strings, shape, check=None, exact: bool = True) -> dict:
        eb = self.entropy_bottleneck
        z_hat = eb.decompress([strings[1]], tuple(shape))
        with float_arithmetic(self, not exact):
            indexes = self.table_indexes(self.scales(z_hat))
        coding.verify_check([coding.bottleneck_indexes(eb, z_hat.size()), indexes], check)  # before y
        return {"y": self.gaussian_conditional.decompress([strings[0]], indexes, z_hat.dtype), "z": z_hat}

    def likelihoods(self, latents: dict) -> dict:
        return {
            "y": coding.gaussian_likelihood(self.gaussian_conditional, latents["y"], self.scales(latents["z"])),
            "z": coding.bottleneck_likelihood(self.entropy_bottleneck, latents["z"]),
        }

    def table_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """GaussianConditional.build_indexes (the smallest table scale ≥ σ) in one vectorized call:
        comparisons only, so the same σ pick the same tables on every machine."""
        gc = self.gaussian_conditional
        return torch.bucketize(gc.lower_bound_scale(scales).contiguous(), gc.scale_table[:-1]).int()

    def coded_shape(self, v_hw) -> tuple[int, int]:
        return (v_hw[0] // 4, v_hw[1] // 4)

    def symbol_counts(self, shape) -> list[int]:
        h, w = shape
        return [self.M * 16 * h * w, self.N * h * w]

    def update(self, force: bool, update_quantiles: bool) -> bool:
        from compressai.models.base import get_scale_table

        updated = self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)
        table = get_scale_table(SCALE_MIN, TABLE_MAX, TABLE_LEVELS).tolist()
        return self.gaussian_conditional.update_scale_table(table, force=force) or updated


ENTROPY_MODELS = {"factorized": FactorizedEntropyModel, "factorized-gaussian": GaussianEntropyModel,
                  "hyperprior": HyperpriorEntropyModel}
