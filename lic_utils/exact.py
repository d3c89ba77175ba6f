"""The exact twin of a float network of convolutions: the same function, computed so that its result
is the same bits on every machine (Ballé, Johnston & Minnen 2019, "Integer networks for data
compression with latent-variable models").

Why: an entropy decoder must rebuild the encoder's coding tables exactly. A float network's sums come
out in another order under another SIMD width, thread count, BLAS or device, and a last-bit change
that moves a σ across a table boundary desynchronises the rANS decoder (a shipped scale-hyperprior
file written under one CPU kernel set decoded to 10.9 dB instead of 24.7 dB under another).

How: every number the twin computes is either an integer sum, exact, or one IEEE-754 operation per
element, correctly rounded on every machine:
- weights become integers of at most WEIGHT_BITS bits, with a power-of-two step per output channel
  (so scaling by a step is exact);
- each layer's input becomes integers of at most ACT_BITS bits, with a power-of-two step per image,
  read off the input's largest magnitude (a max, exact in any order);
- a convolution of those integers is a sum of integer products whose total stays below 2⁵³, computed
  in float64 on the CPU, where any summation order gives the same value (checked when the twin is
  built);
- the result is scaled back (exact), the float bias added (one rounding), and the ReLU-family
  nonlinearity applied (a comparison, or one multiplication for a leaky slope).
No exp, log, pow or division is ever evaluated: their vectorised and scalar versions may differ in
the last bit. The twin is derived from the float weights by exact operations when it is built, so it
needs no state of its own and the model's fingerprint names it too. ExactSequential is the
nn.Sequential that uses it outside training.

Supported layers: Conv2d (and subclasses with a `mask`, e.g. CompressAI's masked convolutions),
ConvTranspose2d (groups 1, dilation 1), ReLU, LeakyReLU, Hardtanh, Identity.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from lic_utils.errors import LicError

WEIGHT_BITS = 16  # |integer weight| < 2^15
ACT_BITS = 20  # |integer activation| ≤ 2^20
EXACT_SUM = 2.0**53  # float64 holds every integer below this exactly


def _pow2_step(peak: torch.Tensor, bits: int) -> torch.Tensor:
    """The exponent e (int64) of the smallest power-of-two step 2^e with |x|/2^e < 2^(bits−1) for
    |x| ≤ peak: frexp is exact, so e is too. An all-zero peak gives e = 0."""
    _, p = torch.frexp(peak)  # peak = m·2^p, ½ ≤ m < 1, so peak < 2^p
    return torch.where(peak > 0, p.to(torch.int64) - (bits - 1), torch.zeros_like(p, dtype=torch.int64))


def _scale(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """x·2^e (float64), exactly: 2^e is built from its bit pattern, not by pow(), whose vectorised
    versions need not be exact; a product with a power of two rounds only outside the normal range,
    far from the study's values."""
    bits = (e.to(torch.int64) + 1023).clamp(1, 2046) << 52
    return x * bits.view(torch.float64)


class _ExactConv:
    """One convolution with integer weights: integers in → an exact integer sum → real values out."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, name: str):
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1) or layer.padding_mode != "zeros":
            raise LicError(f"exact twin: layer {name} ({type(layer).__name__}) must have groups 1, "
                           "dilation 1 and zero padding")
        w = layer.weight.detach().to("cpu", torch.float64)
        if getattr(layer, "mask", None) is not None:  # a masked convolution computes with weight·mask
            w = w * layer.mask.detach().to("cpu", torch.float64)
        out_axis = 1 if self.transposed else 0
        per_out = w.transpose(0, out_axis)  # out, in, kh, kw
        peak = per_out.abs().flatten(1).amax(1)
        self.weight_exp = _pow2_step(peak, WEIGHT_BITS)  # one per output channel
        shape = [1] * w.dim()
        shape[out_axis] = -1
        self.weight = torch.round(_scale(w, -self.weight_exp.reshape(shape)))  # integers, |w| < 2^15
        fan_sum = self.weight.abs().transpose(0, out_axis).flatten(1).sum(1).max()  # exact: integers
        if fan_sum * 2.0**ACT_BITS >= EXACT_SUM:
            raise LicError(f"exact twin: layer {name} has too many inputs per output "
                           f"({int(fan_sum)} in weight units) for exact float64 sums")
        self.bias = (layer.bias.detach().to("cpu", torch.float64) if layer.bias is not None
                     else torch.zeros(per_out.shape[0], dtype=torch.float64))
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding = getattr(layer, "output_padding", (0, 0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # the input as integers: a power-of-two step per image, from its largest magnitude
        act_exp = _pow2_step(x.abs().flatten(1).amax(1), ACT_BITS + 1).reshape(-1, 1, 1, 1)
        q = torch.round(_scale(x, -act_exp))  # |q| ≤ 2^20
        if self.transposed:
            acc = F.conv_transpose2d(q, self.weight, None, self.stride, self.padding, self.output_padding)
        else:
            acc = F.conv2d(q, self.weight, None, self.stride, self.padding)
        # acc is an exact integer; ×2^(e_w + e_x) is exact, + bias rounds once
        return _scale(acc, self.weight_exp.reshape(1, -1, 1, 1) + act_exp) + self.bias.reshape(1, -1, 1, 1)


class ExactNet:
    """The exact twin of an nn.Sequential of convolutions and ReLU-family activations.

    Called on a float tensor (whose bits must be the same on every machine, e.g. decoded latents),
    it returns float64 values on the CPU that are the same bits on every machine, and within about
    2^-14 (relative to each layer's largest value) of what the float network computes.
    """

    def __init__(self, net: nn.Sequential):
        self.steps = []
        for name, layer in net.named_children():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                self.steps.append(_ExactConv(layer, name))
            elif isinstance(layer, nn.ReLU):
                self.steps.append(torch.relu)
            elif isinstance(layer, nn.Hardtanh):  # a clamp: exact
                self.steps.append(lambda x, lo=float(layer.min_val), hi=float(layer.max_val): x.clamp(lo, hi))
            elif isinstance(layer, nn.LeakyReLU):
                slope = float(layer.negative_slope)
                self.steps.append(lambda x, s=slope: torch.where(x >= 0, x, x * s))
            elif isinstance(layer, nn.Identity):
                continue
            else:
                raise LicError(f"exact twin: layer {name} ({type(layer).__name__}) is not supported "
                               "(convolutions, transposed convolutions and ReLU-family activations are)")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float64)  # float32 → float64 is exact
        for step in self.steps:
            x = step(x)
        return x


def weights_key(net: nn.Module) -> tuple:
    """Identifies the current weights of `net` (storage and in-place version of every tensor), so a
    twin is rebuilt when they change."""
    return tuple((k, t.data_ptr(), -1 if t.is_inference() else t._version, tuple(t.shape))
                 for k, t in net.state_dict().items())  # an inference tensor has no version: its storage names it


class ExactSequential(nn.Sequential):
    """An nn.Sequential that computes in float while training and by its exact twin (ExactNet)
    outside training: the network of an entropy model whose outputs pick coding tables or means.

    Its parameters and state_dict are those of the nn.Sequential it replaces. Outside training its
    output has the input's dtype and device (the twin runs on the CPU: these networks work at 1/16
    or 1/64 of the image's resolution), so any code that calls it, CompressAI's latent codecs
    included, gets the same parameters on every machine. `float_arithmetic(model)` switches every
    such network of a model to float for a block (files of format 1 were coded that way).
    """

    exact = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.exact:
            return super().forward(x)
        key = weights_key(self)
        twin = self.__dict__.get("_twin")
        if twin is None or twin[0] != key:
            twin = self.__dict__["_twin"] = (key, ExactNet(self))
        return twin[1](x).to(x.device, x.dtype)


@contextmanager
def float_arithmetic(model: nn.Module, enabled: bool = True):
    """Within the block, every ExactSequential of `model` computes in float (when `enabled`)."""
    nets = [m for m in model.modules() if isinstance(m, ExactSequential)] if enabled else []
    for net in nets:
        net.exact = False
    try:
        yield
    finally:
        for net in nets:
            del net.exact  # back to the class's True
