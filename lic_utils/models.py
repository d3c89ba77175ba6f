"""The learned codec: Ballé et al. (2018) transforms, three entropy models, three quantization proxies.

    x ─g_a─► y ─÷s─► v ─Q─► v̂ ─×s─► ŷ ─g_s─► x̂        s: learned per-channel quantization step
                          │
                          └─ entropy model p(v̂), one of
                             "factorized"           non-parametric density per channel (Ballé 2018)
                             "factorized-gaussian"  a Gaussian per channel, convolved with U(−½, ½)
                             "hyperprior"           z = h_a(|v|), σ = h_s(ẑ), v̂ ~ N(0, σ²) ∗ U(−½, ½)

Training replaces rounding Q by a differentiable proxy (`ModelConfig.quantizer`): "noise" adds
U(−½, ½), "ste" rounds with an identity gradient, "mixed" uses noise for the rate and STE for the
reconstruction. In eval mode Q rounds, and it rounds exactly the values the entropy coder codes:
integers offset by the prior's per-channel centre (the EntropyBottleneck's median, the Gaussian's
mean; zero for the hyperprior's y). So `decompress(compress(x))` equals `model.eval()(x)["x_hat"]`
bit for bit. Entropy coding itself is CompressAI's rANS coder, driven through its EntropyBottleneck
and GaussianConditional; this module only adds what the study needs around them.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

with warnings.catch_warnings():  # compressai's import triggers torch.jit.script deprecation notices
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models import CompressionModel
    from compressai.models.base import get_scale_table

from lic_utils.errors import LicError

# Bump when the network's structure changes: checkpoints and .lic files of older code are refused.
ARCH_VERSION = 1
PRIORS = ("factorized", "factorized-gaussian", "hyperprior")
QUANTIZERS = ("noise", "ste", "mixed")
# Fields that define the network (and so the bitstream). The quantizer only shapes training.
ARCH_FIELDS = ("prior", "channel_scale", "N", "M")
PAPER_SIZE = {"N": 128, "M": 192}  # Ballé et al. 2018 at low rates; the CPU default is smaller.

# Gaussian scales live in [SCALE_MIN, SCALE_MAX] (CompressAI's range). The hyperprior codes each σ
# with the next larger of TABLE_LEVELS log-spaced scales up to TABLE_MAX. CompressAI's default (64
# levels up to 256) costs ~2 % over the model's estimate on Kodak, as each σ is rounded up by up to
# 13 %; 160 levels up to 64 (steps of 4 %) cost ~0.2 % with a smaller table. Larger σ (rare: the
# learned channel step absorbs the latents' range) are coded with σ = 64, correctly but dearer.
SCALE_MIN, SCALE_MAX = 0.11, 256.0
TABLE_MAX, TABLE_LEVELS = 64.0, 256

CHECKPOINT_FORMAT = "lic_utils.checkpoint"
CHECKPOINT_VERSION = 1


# --- configuration ----------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Everything needed to rebuild a codec; `config_hash` names the architecture in .lic files."""

    prior: str = "factorized"  # "factorized" | "factorized-gaussian" | "hyperprior"
    quantizer: str = "noise"  # "noise" | "ste" | "mixed"
    channel_scale: bool = True  # learn a quantization step per latent channel
    N: int = 48  # hidden channels of the transforms (48: encode + decode of a Kodak image ≤ 150 ms on 2 cores)
    M: int = 96  # latent channels

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise LicError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        if self.quantizer not in QUANTIZERS:
            raise LicError(f"unknown quantizer {self.quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
        if not isinstance(self.channel_scale, bool):
            raise LicError(f"channel_scale must be true or false, got {self.channel_scale!r}")
        for name in ("N", "M"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise LicError(f"{name} must be an integer in 1..1024, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | ModelConfig) -> ModelConfig:
        if isinstance(d, ModelConfig):
            return d
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise LicError(f"unknown model setting(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        return cls(**d)

    def config_hash(self) -> str:
        """16 hex digits of sha256 over the architecture-defining fields (stable across runs)."""
        arch = {k: getattr(self, k) for k in ARCH_FIELDS} | {"arch_version": ARCH_VERSION}
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def pad_multiple(self) -> int:
        """Image sides are padded to this: the total downsampling of the latents that get coded."""
        return 64 if self.prior == "hyperprior" else 16


# --- transforms (Ballé et al. 2018) -----------------------------------------------------------------
def conv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)


def deconv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1)


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """A 5×5 stride-2 transposed convolution that, outside training, runs as a 3×3 convolution to
    4× the channels followed by a pixel shuffle: the same sums (each output phase (a, b) sees a 3×3
    neighbourhood of the input through the kernel taps k ≡ a mod 2), but faster on CPU
    for g_s's last layer (about twice as fast), whose 3 output channels suit oneDNN's transposed
    kernel badly. Parameters and state_dict are those of nn.ConvTranspose2d.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, 5, stride=2, padding=2, output_padding=1)

    def subpixel_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        # output row 2i + a takes input rows i + dy through kernel row a + 2 − 2·dy (dy = −1, 0, 1);
        # row 5 (past the kernel) is the zero that a 5-tap kernel leaves for odd phases.
        taps = torch.tensor([[a + 4 - 2 * t for t in range(3)] for a in range(2)], device=self.weight.device)
        w = F.pad(self.weight, (0, 1, 0, 1))[:, :, taps][..., taps]  # in, out, a, ty, b, tx
        cin, cout = self.in_channels, self.out_channels
        return w.permute(1, 2, 4, 0, 3, 5).reshape(4 * cout, cin, 3, 3), self.bias.repeat_interleave(4)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.training:
            return super().forward(x, output_size)
        weight, bias = self.subpixel_weights()
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)


class InferenceGDN(GDN):
    """CompressAI's GDN (same parameters, same state_dict, same numbers) whose inference pass works in
    place: GDN's elementwise work on full-resolution tensors is about a fifth of a CPU encode, and
    fresh buffers for x², the norm and the output cost as much again in memory traffic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return super().forward(x)
        C = x.size(1)
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(C, C, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        norm = norm.sqrt_() if self.inverse else norm.rsqrt_()
        return norm.mul_(x)


def analysis_transform(N: int, M: int) -> nn.Sequential:
    """g_a: four 5×5 stride-2 convolutions with GDN between them; x (3 channels) → y (M channels, /16)."""
    return nn.Sequential(conv(3, N), InferenceGDN(N), conv(N, N), InferenceGDN(N), conv(N, N), InferenceGDN(N),
                         conv(N, M))


def synthesis_transform(N: int, M: int) -> nn.Sequential:
    """g_s: the mirror image of g_a, 5×5 stride-2 transposed convolutions with inverse GDN; ŷ → x̂.
    (The last one runs as a sub-pixel convolution outside training, same weights; for the N-channel
    layers oneDNN's transposed convolution is the faster of the two.)"""
    return nn.Sequential(
        deconv(M, N), InferenceGDN(N, inverse=True), deconv(N, N), InferenceGDN(N, inverse=True),
        deconv(N, N), InferenceGDN(N, inverse=True), SubpixelConvTranspose2d(N, 3),
    )  # fmt: skip


def hyper_analysis(N: int, M: int) -> nn.Sequential:
    """h_a: |v| → z (N channels, another /4), as in ScaleHyperprior."""
    return nn.Sequential(conv(M, N, 3, 1), nn.ReLU(inplace=True), conv(N, N), nn.ReLU(inplace=True), conv(N, N))


def hyper_synthesis(N: int, M: int) -> nn.Sequential:
    """h_s: ẑ → σ (M non-negative scales at the resolution of v)."""
    return nn.Sequential(
        deconv(N, N), nn.ReLU(inplace=True), deconv(N, N), nn.ReLU(inplace=True),
        conv(N, M, 3, 1), nn.ReLU(inplace=True),
    )  # fmt: skip


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom and right so that both sides are multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _inference_layout(t: torch.Tensor) -> torch.Tensor:
    """Channels-last is ~30 % faster on CPU; every inference path uses it, so results match bit for bit."""
    return t.contiguous(memory_format=torch.channels_last)


# --- quantization proxies ---------------------------------------------------------------------------
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


def quantize_pair(values: torch.Tensor, quantizers: tuple[str, str], center=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values for the rate term, values for the decoder); one draw when both use the same proxy."""
    rate_mode, synth_mode = quantizers
    for_rate = quantize(values, rate_mode, center)
    return for_rate, for_rate if synth_mode == rate_mode else quantize(values, synth_mode, center)


# --- entropy models ---------------------------------------------------------------------------------
def _channel_view(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, 1, 1)


def bottleneck_likelihood(eb: EntropyBottleneck, values: torch.Tensor) -> torch.Tensor:
    """p(values) under an EntropyBottleneck, without the noise/rounding its forward() would add.

    The values arrive already quantized (or noised) by our own quantizer, so that what is priced is
    exactly what is decoded.
    """
    b, c = values.shape[:2]
    flat = values.transpose(0, 1).reshape(c, 1, -1)
    likelihood, _, _ = eb._likelihood(flat)
    likelihood = eb.likelihood_lower_bound(likelihood)
    return likelihood.reshape(c, b, *values.shape[2:]).transpose(0, 1)


def gaussian_likelihood(gc: GaussianConditional, values, scales, means=None) -> torch.Tensor:
    """p(values) = Φ((v − μ + ½)/σ) − Φ((v − μ − ½)/σ), with CompressAI's bounds on σ and p."""
    return gc.likelihood_lower_bound(gc._likelihood(values, scales, means))


def _bottleneck_center(eb: EntropyBottleneck) -> torch.Tensor:
    """The EntropyBottleneck codes integers offset by its per-channel medians; detached (aux loss owns them)."""
    return _channel_view(eb.quantiles[:, 0, 1].detach())


def check_encodable(symbols: torch.Tensor, indexes: torch.Tensor, coder) -> None:
    """Refuse symbols that would overrun CompressAI's rANS output buffer.

    Its encoder writes into one 32-bit word per symbol without bounds checks. A coded symbol costs at
    most 16 bits, but values outside the coder tables are escaped 4 bits at a time, so an untrained or
    diverged model (huge latents) could make it write past the buffer. Checked before encoding.
    """
    n = symbols.numel()
    idx = indexes.reshape(-1).long()
    value = symbols.reshape(-1).long() - coder._offset.long()[idx]
    max_value = coder._cdf_length.long()[idx] - 2
    escaped = (value < 0) | (value >= max_value)
    bits = 16 * n + 96  # every symbol ≤ 16 bits, plus the coder's final state and rounding
    if escaped.any():
        v, mv = value[escaped], max_value[escaped]
        raw = torch.where(v < 0, -2 * v - 1, 2 * (v - mv)).double()
        nibbles = torch.where(raw > 0, torch.floor(torch.log2(raw.clamp_min(1))) // 4 + 1, torch.zeros_like(raw))
        bits += int(4 * (nibbles + nibbles // 15 + 1).sum().item())
    if bits > 32 * n:
        raise LicError(
            f"cannot entropy-code these latents: {int(escaped.sum())} of {n} values lie far outside the "
            "coder tables (is the model trained? run model.update(force=True) after training)"
        )


def _symbols_in_range(values: torch.Tensor) -> None:
    if not torch.isfinite(values).all() or values.abs().max() > 2**24:
        raise LicError("latent values are not finite or exceed ±2^24: the model has diverged; use another checkpoint")


class FactorizedPrior(nn.Module):
    """Ballé 2018's fully factorized non-parametric density, one per channel (CompressAI's EntropyBottleneck)."""

    names = ("y",)

    def __init__(self, N: int, M: int):
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(M)

    def center(self) -> torch.Tensor:
        return _bottleneck_center(self.entropy_bottleneck)

    def forward(self, v, quantizers):
        v_rate, v_synth = quantize_pair(v, quantizers, self.center())
        return v_synth, {"y": bottleneck_likelihood(self.entropy_bottleneck, v_rate)}

    def update(self, force: bool, update_quantiles: bool) -> bool:
        return self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)

    def coded_shape(self, v_shape) -> tuple[int, int]:
        return tuple(v_shape[-2:])

    def symbol_counts(self, shape, N: int, M: int) -> list[int]:
        return [M * shape[0] * shape[1]]

    def compress(self, v):
        eb = self.entropy_bottleneck
        symbols = torch.round(v - self.center()).int()
        check_encodable(symbols, eb._build_indexes(v.size()), eb)
        return eb.compress(v), self.coded_shape(v.shape)

    def decompress(self, strings, shape) -> dict:
        return {"y": self.entropy_bottleneck.decompress([strings[0]], tuple(shape))}

    def likelihoods(self, latents: dict) -> dict:
        return {"y": bottleneck_likelihood(self.entropy_bottleneck, latents["y"])}


class FactorizedGaussianPrior(nn.Module):
    """A learned Gaussian (mean, log-scale) per channel, convolved with a unit box.

    Coded with a GaussianConditional whose scale table holds exactly the M channel scales (table
    entry c ↔ channel c) and whose means are subtracted by the coder, so the rANS tables use the
    very probabilities the model was trained with.
    """

    names = ("y",)

    def __init__(self, N: int, M: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(M))
        self.log_scale = nn.Parameter(torch.zeros(M))
        self.gaussian_conditional = GaussianConditional(None)

    def center(self) -> torch.Tensor:
        return _channel_view(self.mean)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(math.log(SCALE_MIN), math.log(SCALE_MAX)).exp()

    def forward(self, v, quantizers):
        v_rate, v_synth = quantize_pair(v, quantizers, self.center())
        scales = _channel_view(self.scale()).expand_as(v_rate)
        return v_synth, {"y": gaussian_likelihood(self.gaussian_conditional, v_rate, scales, self.center())}

    def update(self, force: bool, update_quantiles: bool) -> bool:
        gc = self.gaussian_conditional
        if gc._offset.numel() > 0 and not force:
            return False
        gc.scale_table = self.scale().detach().clone()
        gc.update()
        return True

    def _indexes(self, b: int, h: int, w: int) -> torch.Tensor:
        M = self.mean.numel()
        return torch.arange(M, dtype=torch.int32, device=self.mean.device).reshape(1, M, 1, 1).expand(b, M, h, w)

    def coded_shape(self, v_shape) -> tuple[int, int]:
        return tuple(v_shape[-2:])

    def symbol_counts(self, shape, N: int, M: int) -> list[int]:
        return [M * shape[0] * shape[1]]

    def compress(self, v):
        gc, means = self.gaussian_conditional, self.center().detach()
        indexes = self._indexes(v.shape[0], *v.shape[-2:])
        check_encodable(torch.round(v - means).int(), indexes, gc)
        return gc.compress(v, indexes, means), self.coded_shape(v.shape)

    def decompress(self, strings, shape) -> dict:
        indexes = self._indexes(1, *shape)
        return {"y": self.gaussian_conditional.decompress([strings[0]], indexes, torch.float32, self.center().detach())}

    def likelihoods(self, latents: dict) -> dict:
        v_hat = latents["y"]
        scales = _channel_view(self.scale()).expand_as(v_hat)
        return {"y": gaussian_likelihood(self.gaussian_conditional, v_hat, scales, self.center())}


class ScaleHyperprior(nn.Module):
    """Ballé 2018's scale hyperprior: side information z (factorized) predicts a σ for every element of v."""

    names = ("y", "z")

    def __init__(self, N: int, M: int):
        super().__init__()
        self.h_a = hyper_analysis(N, M)
        self.h_s = hyper_synthesis(N, M)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    def scales(self, z_hat: torch.Tensor) -> torch.Tensor:
        # Encoder and decoder must get identical σ (they pick the coding tables): one code path.
        return self.h_s(z_hat if self.training else _inference_layout(z_hat))

    def forward(self, v, quantizers):
        z = self.h_a(v.abs())
        center = _bottleneck_center(self.entropy_bottleneck)
        z_rate, z_synth = quantize_pair(z, quantizers, center)
        v_rate, v_synth = quantize_pair(v, quantizers)
        likelihoods = {
            "y": gaussian_likelihood(self.gaussian_conditional, v_rate, self.scales(z_synth)),
            "z": bottleneck_likelihood(self.entropy_bottleneck, z_rate),
        }
        return v_synth, likelihoods

    def table_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """GaussianConditional.build_indexes (the smallest table scale ≥ σ) in one vectorized call."""
        gc = self.gaussian_conditional
        return torch.bucketize(gc.lower_bound_scale(scales).contiguous(), gc.scale_table[:-1]).int()

    def update(self, force: bool, update_quantiles: bool) -> bool:
        updated = self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)
        table = get_scale_table(SCALE_MIN, TABLE_MAX, TABLE_LEVELS).tolist()
        return self.gaussian_conditional.update_scale_table(table, force=force) or updated

    def coded_shape(self, v_shape) -> tuple[int, int]:
        return (v_shape[-2] // 4, v_shape[-1] // 4)

    def symbol_counts(self, shape, N: int, M: int) -> list[int]:
        h, w = shape
        return [M * 16 * h * w, N * h * w]

    def compress(self, v):
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z = self.h_a(v.abs())
        _symbols_in_range(z)
        center = _bottleneck_center(eb)
        check_encodable(torch.round(z - center).int(), eb._build_indexes(z.size()), eb)
        z_strings = eb.compress(z)
        z_hat = quantize(z, "round", center)  # = eb.decompress(z_strings), without decoding
        indexes = self.table_indexes(self.scales(z_hat))
        check_encodable(torch.round(v).int(), indexes, gc)
        y_strings = gc.compress(v, indexes)
        return [y_strings[0], z_strings[0]], tuple(z.shape[-2:])

    def decompress(self, strings, shape) -> dict:
        z_hat = self.entropy_bottleneck.decompress([strings[1]], tuple(shape))
        indexes = self.table_indexes(self.scales(z_hat))
        return {"y": self.gaussian_conditional.decompress([strings[0]], indexes, z_hat.dtype), "z": z_hat}

    def likelihoods(self, latents: dict) -> dict:
        return {
            "y": gaussian_likelihood(self.gaussian_conditional, latents["y"], self.scales(latents["z"])),
            "z": bottleneck_likelihood(self.entropy_bottleneck, latents["z"]),
        }


PRIOR_CLASSES = {"factorized": FactorizedPrior, "factorized-gaussian": FactorizedGaussianPrior, "hyperprior": ScaleHyperprior}


# --- the codec --------------------------------------------------------------------------------------
def rans_safe(string: bytes, n_symbols: int) -> bytes:
    """The string followed by zero bytes, a guard against CompressAI's rANS decoder reading past it.

    A payload our encoder wrote is read exactly to its end, never into the padding. The .lic reader
    lets only CRC-checked payloads reach the decoder; the padding is a second line for a payload that
    is not ours: garbage makes the decoder read at most one word per symbol plus the data again, and
    more only on escape codes (which need the rare tail slot of a table), so 2·(S + W) words cover it.
    """
    words = len(string) // 4
    return string + bytes(4 * (2 * n_symbols + 2 * words + 1024))


class LearnedCodec(CompressionModel):
    """g_a / g_s of Ballé et al. 2018 around one of three priors, with a learned per-channel step."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        self.g_a = analysis_transform(N, M)
        self.g_s = synthesis_transform(N, M)
        # s = exp(log_channel_scale): the entropy model sees y/s, the decoder gets round(y/s)·s.
        self.log_channel_scale = nn.Parameter(torch.zeros(M)) if config.channel_scale else None
        self.prior = PRIOR_CLASSES[config.prior](N, M)
        self._fingerprint_cache: tuple | None = None

    # the quantization step per channel
    def channel_scale(self) -> torch.Tensor:
        """s, shape 1×M×1×1 (ones when the config has no learned scale)."""
        if self.log_channel_scale is None:
            return torch.ones(1, self.config.M, 1, 1, device=self.g_a[0].weight.device)
        return _channel_view(self.log_channel_scale.exp())

    def quantizers(self) -> tuple[str, str]:
        """(proxy for the rate term, proxy for the reconstruction); rounding for both in eval mode."""
        if not self.training:
            return "round", "round"
        q = self.config.quantizer
        return ("noise", "ste") if q == "mixed" else (q, q)

    def analyze(self, x: torch.Tensor) -> torch.Tensor:
        """Padded image → v = g_a(x)/s, the values the entropy model sees."""
        y = self.g_a(x if self.training else _inference_layout(x))
        return y / self.channel_scale() if self.log_channel_scale is not None else y

    def synthesize(self, v_hat: torch.Tensor, size=None) -> torch.Tensor:
        """v̂ → x̂ = g_s(v̂·s), cropped to `size` (H, W); clamped to [0, 1] outside training."""
        y_hat = v_hat * self.channel_scale() if self.log_channel_scale is not None else v_hat
        x_hat = self.g_s(y_hat if self.training else _inference_layout(y_hat))
        if size is not None:
            x_hat = x_hat[..., : size[0], : size[1]]
        if not self.training:
            x_hat = x_hat.nan_to_num(0.0).clamp(0, 1)
        return x_hat.contiguous()

    def forward(self, x: torch.Tensor) -> dict:
        """x (B×3×H×W in [0, 1]) → {"x_hat", "likelihoods", "bpp"}, bpp per original pixel, batch mean."""
        H, W = x.shape[-2:]
        v = self.analyze(pad_to_multiple(x, self.config.pad_multiple))
        v_hat, likelihoods = self.prior(v, self.quantizers())
        bits = sum(-torch.log2(p).flatten(1).sum(1) for p in likelihoods.values())
        return {"x_hat": self.synthesize(v_hat, (H, W)), "likelihoods": likelihoods, "bpp": (bits / (H * W)).mean()}

    # entropy coding
    @property
    def string_names(self) -> tuple[str, ...]:
        """Names of the strings `compress` returns, in order ("y"; "y", "z" for the hyperprior)."""
        return self.prior.names

    def coded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The latent shape `compress` reports for an image of this size (y's; z's for the hyperprior)."""
        m = self.config.pad_multiple
        return self.prior.coded_shape((math.ceil(height / m) * m // 16, math.ceil(width / m) * m // 16))

    def symbol_counts(self, shape) -> list[int]:
        """How many symbols each string codes, for a coded latent shape."""
        return self.prior.symbol_counts(tuple(shape), self.config.N, self.config.M)

    def update(self, force: bool = False, update_quantiles: bool = True) -> bool:
        """Build the rANS tables from the current densities (call after training, before compress).

        `update_quantiles` first moves the EntropyBottleneck's tail quantiles to where the aux loss
        would converge (bisection), so the tables cover the densities' mass.
        """
        with torch.no_grad():
            updated = self.prior.update(force=force, update_quantiles=update_quantiles)
        self._fingerprint_cache = None
        return updated

    def coder_ready(self) -> bool:
        return all(m._offset.numel() > 0 for m in self.modules() if isinstance(m, (EntropyBottleneck, GaussianConditional)))

    @torch.inference_mode()
    def compress(self, x: torch.Tensor) -> dict:
        """One image (1×3×H×W) → {"strings": [bytes per name], "shape": coded latent (h, w), "image_size": (H, W)}."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise LicError(f"compress takes one RGB image as a 1×3×H×W tensor, got shape {tuple(x.shape)}")
        if not self.coder_ready():
            raise LicError("the entropy coder tables are not built: call model.update(force=True) first")
        was_training = self.training
        self.eval()
        try:
            H, W = x.shape[-2:]
            v = self.analyze(pad_to_multiple(x, self.config.pad_multiple))
            _symbols_in_range(v)
            strings, shape = self.prior.compress(v)
        finally:
            self.train(was_training)
        return {"strings": list(strings), "shape": shape, "image_size": (H, W)}

    @torch.inference_mode()
    def decompress(self, strings: list[bytes], shape, image_size=None) -> torch.Tensor:
        """Strings and the coded latent shape (from `compress`) → x̂ (1×3×H×W), cropped to `image_size`."""
        if len(strings) != len(self.string_names):
            raise LicError(f"expected {len(self.string_names)} strings ({', '.join(self.string_names)}), got {len(strings)}")
        if len(shape) != 2 or not all(isinstance(n, int) and 1 <= n <= 4096 for n in shape):
            raise LicError(f"latent shape {tuple(shape)} is not two integers in 1..4096")
        counts = self.symbol_counts(shape)
        strings = [rans_safe(bytes(s), n) for s, n in zip(strings, counts)]
        was_training = self.training
        self.eval()
        try:
            return self.synthesize(self.prior.decompress(strings, shape)["y"], image_size)
        finally:
            self.train(was_training)

    @torch.inference_mode()
    def estimate_bits(self, strings: list[bytes], shape) -> dict[str, float]:
        """The model's −log2 p of the latents a bitstream holds, per string name (no image needed)."""
        counts = self.symbol_counts(shape)
        strings = [rans_safe(bytes(s), n) for s, n in zip(strings, counts)]
        was_training = self.training
        self.eval()
        try:
            likelihoods = self.prior.likelihoods(self.prior.decompress(strings, shape))
        finally:
            self.train(was_training)
        return {k: float(-torch.log2(p).sum()) for k, p in likelihoods.items()}

    # parameters
    def aux_parameters(self):
        """The EntropyBottleneck quantiles: trained by the aux loss alone, with their own optimizer."""
        return (p for n, p in self.named_parameters() if n.endswith("quantiles"))

    def main_parameters(self):
        return (p for n, p in self.named_parameters() if not n.endswith("quantiles"))

    def aux_loss(self) -> torch.Tensor:
        losses = [m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck)]
        return sum(losses) if losses else torch.zeros((), device=self.g_a[0].weight.device)

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the whole state_dict: names the weights a .lic file needs.

        Checkpoints of one architecture (say, trained for different λ) share a config hash; this tells
        them apart. Cached until a tensor changes (tracked through torch's in-place version counters).
        """
        sd = self.state_dict()
        key = tuple((k, t.data_ptr(), t._version, tuple(t.shape)) for k, t in sd.items())
        if self._fingerprint_cache is not None and self._fingerprint_cache[0] == key:
            return self._fingerprint_cache[1]
        h = hashlib.sha256()
        for name in sorted(sd):
            t = sd[name].detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes())
        digest = h.hexdigest()[:16]
        self._fingerprint_cache = (key, digest)
        return digest


def build_model(cfg: ModelConfig | dict | None = None) -> LearnedCodec:
    """A fresh (untrained) codec for a config or its dict (defaults if None)."""
    return LearnedCodec(ModelConfig.from_dict(cfg if cfg is not None else {}))


# --- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(path, model: LearnedCodec, extra: dict | None = None) -> Path:
    """Write config, config hash, weights and coder tables (and the trainer's `extra`) atomically.

    The coder tables are built if they are missing; after further training call `model.update(force=True)`
    first. `extra` is stored as an opaque blob so that `load_checkpoint` never unpickles it.
    """
    from lic_utils.files import atomic_torch_save

    if not model.coder_ready():
        model.update(force=True)
    blob = None
    if extra is not None:
        buf = io.BytesIO()
        torch.save(extra, buf)
        blob = buf.getvalue()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "config_hash": model.config.config_hash(),
        "fingerprint": model.fingerprint(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": blob,
    }
    return atomic_torch_save(payload, path)


def _read_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise LicError(f"checkpoint {path} not found (train one with `python -m lic_utils train`, or fix the path)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem means "not our checkpoint"
        raise LicError(f"{path} is not a lic_utils checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise LicError(f"{path} is not a lic_utils checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise LicError(f"{path} is checkpoint format version {ckpt.get('version')}; this code reads version {CHECKPOINT_VERSION}")
    return ckpt


def load_checkpoint(path, map_location="cpu") -> LearnedCodec:
    """A codec ready for compress/decompress (eval mode, coder tables loaded); needs no training code."""
    ckpt = _read_checkpoint(path, map_location)
    cfg = ModelConfig.from_dict(ckpt["config"])
    if cfg.config_hash() != ckpt["config_hash"]:
        raise LicError(
            f"{path} was written for architecture {ckpt['config_hash']} but its config now hashes to "
            f"{cfg.config_hash()} (the model code changed: ARCH_VERSION {ARCH_VERSION}); retrain or use matching code"
        )
    model = LearnedCodec(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise LicError(f"{path}: weights do not fit config {cfg.to_dict()} ({str(e).splitlines()[0][:200]})") from None
    model = model.to(map_location).eval()
    if not model.coder_ready():
        model.update(force=True)
    elif ckpt.get("fingerprint") not in (None, model.fingerprint()):
        raise LicError(f"{path} is corrupted: its weights hash to {model.fingerprint()}, the file says {ckpt['fingerprint']}")
    return model


def load_checkpoint_extra(path, map_location="cpu") -> dict | None:
    """The `extra` dict given to save_checkpoint (optimizer, scheduler, RNG... state), or None.

    Unpickled in full (it may hold any trainer state): only for checkpoints you made yourself.
    """
    blob = _read_checkpoint(path, map_location).get("extra")
    if blob is None:
        return None
    return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=False)


# --- small training loop for the notebooks and tests (the study's trainer is lic_utils.train) ---------
def training_images(n: int = 16, split: str = "train") -> list[torch.Tensor]:
    """The first `n` BSDS500 images of a split as 3×H×W float tensors (Kodak is kept for evaluation)."""
    from lic_utils import data

    return [data.to_tensor(data.load_rgb(p))[0] for p in data.bsds500_paths((split,))[:n]]


def random_crops(images: list[torch.Tensor], batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` random size×size crops (one random image each)."""
    out = []
    for i in torch.randint(len(images), (batch,), generator=generator).tolist():
        img = images[i]
        top = int(torch.randint(img.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(img.shape[2] - size + 1, (1,), generator=generator))
        out.append(img[:, top : top + size, left : left + size])
    return torch.stack(out)


def quick_train(
    model: LearnedCodec,
    images: list[torch.Tensor],
    steps: int,
    lmbda: float | None = 0.01,
    batch: int = 8,
    crop: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    record_every: int = 10,
    device: str | None = None,
    clip: float | None = 1.0,
) -> list[dict]:
    """Minimise λ·255²·MSE + bpp for a few steps (Adam; aux loss for the quantiles); returns a history.

    `lmbda=None` trains a plain autoencoder: MSE only, no rate term (the latents are still quantized
    by the model's proxy). Gradients are clipped to norm `clip`, as in CompressAI's example trainer:
    without it the inverse GDN of g_s can blow up at this learning rate. Leaves the model on the
    CPU, in eval mode, with fresh coder tables.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the noise proxy draws from torch's global generator
    model.to(device or "cpu")
    main_params = list(model.main_parameters())
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_params = list(model.aux_parameters())
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3) if aux_params else None
    model.train()
    history = []
    for step in range(1, steps + 1):
        x = random_crops(images, batch, crop, g).to(device or "cpu")
        out = model(x)
        mse = (out["x_hat"] - x).pow(2).mean()
        loss = mse if lmbda is None else lmbda * 255**2 * mse + out["bpp"]
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(main_params, clip)
        opt.step()
        if aux_opt is not None:
            aux_opt.zero_grad()
            model.aux_loss().backward()
            aux_opt.step()
        if step % record_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), "mse": mse.item(), "bpp": out["bpp"].item(),
                            "psnr": float(-10 * torch.log10(mse.detach().clamp_min(1e-10)))})  # fmt: skip
    model.cpu().update(force=True)
    model.eval()
    return history


# --- looking inside (the notebooks) -----------------------------------------------------------------
@torch.no_grad()
def inspect(model: LearnedCodec, x: torch.Tensor) -> dict:
    """Eval-mode intermediates for an image batch: y, v = y/s, v̂, likelihoods, x̂ (and ẑ, σ for the hyperprior)."""
    model.eval()
    H, W = x.shape[-2:]
    v = model.analyze(pad_to_multiple(x, model.config.pad_multiple))
    v_hat, likelihoods = model.prior(v, ("round", "round"))
    out = {"y": v * model.channel_scale(), "v": v, "v_hat": v_hat, "likelihoods": likelihoods,
           "x_hat": model.synthesize(v_hat, (H, W)), "pixels": H * W * x.shape[0]}  # fmt: skip
    if isinstance(model.prior, ScaleHyperprior):
        z = model.prior.h_a(v.abs())
        out["z_hat"] = quantize(z, "round", _bottleneck_center(model.prior.entropy_bottleneck))
        out["scales"] = model.prior.scales(out["z_hat"])
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
    if isinstance(prior, FactorizedPrior):
        p = bottleneck_likelihood(prior.entropy_bottleneck, v)
    elif isinstance(prior, FactorizedGaussianPrior):
        p = gaussian_likelihood(prior.gaussian_conditional, v, _channel_view(prior.scale()).expand_as(v), prior.center())
    else:
        raise LicError("the hyperprior has no fixed density: its σ depends on the image (see inspect()['scales'])")
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
