"""The transforms of Ballé et al. (2018): g_a, g_s and the hyperprior's h_a, h_s, with two CPU-speed layers.

g_a maps an image to latents 16× smaller per side through four 5×5 stride-2 convolutions with GDN
between them; g_s mirrors it with transposed convolutions and inverse GDN. Both speed layers keep
the parameters, state_dict and numbers of the layers they replace; they only change how inference runs.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

with warnings.catch_warnings():  # compressai's import triggers torch.jit.script deprecation notices
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.layers import GDN

from lic_utils.exact import ExactSequential


def conv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)


def deconv(in_ch: int, out_ch: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2,
                              output_padding=stride - 1)


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """A 5×5 stride-2 transposed convolution that, outside training, runs as a 3×3 convolution to
    4× the channels followed by a pixel shuffle: the same sums (each output phase (a, b) sees a 3×3
    neighbourhood of the input through the kernel taps k ≡ a mod 2), about twice as fast on CPU for
    g_s's last layer, whose 3 output channels suit oneDNN's transposed kernel badly.
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
    """CompressAI's GDN (same parameters, same numbers) whose inference pass works in place: GDN's
    elementwise work on full-resolution tensors is about a fifth of a CPU encode, and fresh buffers
    for x², the norm and the output cost as much again in memory traffic."""

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
    return nn.Sequential(conv(3, N), InferenceGDN(N), conv(N, N), InferenceGDN(N), conv(N, N),
                         InferenceGDN(N), conv(N, M))


def synthesis_transform(N: int, M: int) -> nn.Sequential:
    """g_s: the mirror image of g_a, transposed convolutions with inverse GDN; ŷ → x̂.
    (For the N-channel layers oneDNN's transposed convolution is the faster one; the last layer
    runs as a sub-pixel convolution outside training.)"""
    return nn.Sequential(
        deconv(M, N), InferenceGDN(N, inverse=True), deconv(N, N), InferenceGDN(N, inverse=True),
        deconv(N, N), InferenceGDN(N, inverse=True), SubpixelConvTranspose2d(N, 3),
    )  # fmt: skip


def hyper_analysis(N: int, M: int) -> nn.Sequential:
    """h_a: |v| → z (N channels, another /4), as in CompressAI's ScaleHyperprior."""
    return nn.Sequential(conv(M, N, 3, 1), nn.ReLU(inplace=True), conv(N, N), nn.ReLU(inplace=True),
                         conv(N, N))


def hyper_synthesis(N: int, M: int) -> ExactSequential:
    """h_s: ẑ → σ (M non-negative scales at the resolution of v); outside training by its exact twin,
    as σ picks the coding tables."""
    return ExactSequential(
        deconv(N, N), nn.ReLU(inplace=True), deconv(N, N), nn.ReLU(inplace=True),
        conv(N, M, 3, 1), nn.ReLU(inplace=True),
    )  # fmt: skip


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom and right so that both sides are multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def inference_layout(t: torch.Tensor) -> torch.Tensor:
    """Channels-last is ~30 % faster on CPU; every inference path uses it, so results match bit for bit."""
    return t.contiguous(memory_format=torch.channels_last)
