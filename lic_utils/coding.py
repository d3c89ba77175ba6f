"""Entropy coding through CompressAI: the one module that touches its private members, and the guards
that keep its native rANS coder inside its buffers.

CompressAI's EntropyBottleneck and GaussianConditional price values (`_likelihood`) and code them
with rANS. The study prices values it has already quantized itself, so that what is priced is exactly
what is decoded; these helpers call the private pieces for that, in one place, so a CompressAI
upgrade that renames them breaks one file.
"""
from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():  # compressai's import triggers torch.jit.script deprecation notices
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from lic_utils.errors import LicError

__all__ = ["EntropyBottleneck", "GaussianConditional", "bottleneck_likelihood", "gaussian_likelihood",
           "bottleneck_indexes", "tables_ready", "check_encodable", "check_latents", "rans_safe"]


def bottleneck_likelihood(eb: EntropyBottleneck, values: torch.Tensor) -> torch.Tensor:
    """p(values) under an EntropyBottleneck, without the noise or rounding its forward() would add."""
    b, c = values.shape[:2]
    flat = values.transpose(0, 1).reshape(c, 1, -1)
    likelihood, _, _ = eb._likelihood(flat)
    likelihood = eb.likelihood_lower_bound(likelihood)
    return likelihood.reshape(c, b, *values.shape[2:]).transpose(0, 1)


def gaussian_likelihood(gc: GaussianConditional, values, scales, means=None) -> torch.Tensor:
    """p(values) = Φ((v − μ + ½)/σ) − Φ((v − μ − ½)/σ), with CompressAI's bounds on σ and p."""
    return gc.likelihood_lower_bound(gc._likelihood(values, scales, means))


def bottleneck_indexes(eb: EntropyBottleneck, size: torch.Size) -> torch.Tensor:
    """The coder-table index of every element of a latent of this size (its channel)."""
    return eb._build_indexes(size)


def tables_ready(coder: EntropyBottleneck | GaussianConditional) -> bool:
    """Whether `update()` has built the coder's rANS tables."""
    return coder._offset.numel() > 0


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
        nibbles = torch.where(raw > 0, torch.floor(torch.log2(raw.clamp_min(1))) // 4 + 1,
                              torch.zeros_like(raw))
        bits += int(4 * (nibbles + nibbles // 15 + 1).sum().item())
    if bits > 32 * n:
        raise LicError(
            f"cannot entropy-code these latents: {int(escaped.sum())} of {n} values lie far outside the "
            "coder tables (is the model trained? run model.update(force=True) after training)"
        )


def check_latents(values: torch.Tensor) -> None:
    """Refuse latents a diverged model produces (non-finite, or beyond what the coder can index)."""
    if not torch.isfinite(values).all() or values.abs().max() > 2**24:
        raise LicError("latent values are not finite or exceed ±2^24: the model has diverged; "
                       "use another checkpoint")


def rans_safe(string: bytes, n_symbols: int) -> bytes:
    """The string followed by zero bytes, a guard against CompressAI's rANS decoder reading past it.

    A payload our encoder wrote is read exactly to its end, never into the padding. The .lic reader
    lets only CRC-checked payloads reach the decoder; the padding is a second line for a payload that
    is not ours: garbage makes the decoder read at most one word per symbol plus the data again, and
    more only on escape codes, so 2·(S + W) words cover garbage that rarely escapes. A payload crafted
    to escape on every symbol reads further than this (a known hole, being closed).
    """
    words = len(string) // 4
    return string + bytes(4 * (2 * n_symbols + 2 * words + 1024))
