"""Entropy coding through CompressAI: the one module that touches its private members, and the guards
that keep its native rANS coder inside its buffers.

CompressAI's EntropyBottleneck and GaussianConditional price values (`_likelihood`) and code them
with rANS. The study prices values it has already quantized itself, so that what is priced is exactly
what is decoded; these helpers call the private pieces for that, in one place, so a CompressAI
upgrade that renames them breaks one file.
"""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # compressai's import triggers torch.jit.script deprecation notices
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from lic_utils.errors import LicError

__all__ = ["EntropyBottleneck", "GaussianConditional", "bottleneck_likelihood", "gaussian_likelihood",
           "bottleneck_indexes", "tables_ready", "validate_tables", "check_encodable", "check_latents", "rans_safe",
           "CHECK_BYTES", "check_value", "verify_check", "TablesMismatch", "SCALE_MIN", "SCALE_MAX", "TABLE_MAX",
           "TABLE_LEVELS", "update_scale_table", "table_indexes", "encode_gaussian", "GaussianStream"]

# Gaussian scales live in [SCALE_MIN, SCALE_MAX] (CompressAI's range). The hyperprior codes each σ
# with the next larger of TABLE_LEVELS log-spaced scales up to TABLE_MAX (steps of 2.5 %).
# CompressAI's default (64 levels up to 256) costs ~2 % over the model's estimate on Kodak, as each
# σ is rounded up by up to 13 %. Larger σ (rare: the learned channel step absorbs the latents'
# range) are coded with σ = TABLE_MAX, correctly but dearer.
SCALE_MIN, SCALE_MAX = 0.11, 256.0
TABLE_MAX, TABLE_LEVELS = 64.0, 256


def update_scale_table(gc: GaussianConditional, force: bool) -> bool:
    """Give a GaussianConditional the study's table of TABLE_LEVELS scales and build its rANS tables
    (kept in checkpoints, so a decoder never recomputes them)."""
    from compressai.models.base import get_scale_table

    return gc.update_scale_table(get_scale_table(SCALE_MIN, TABLE_MAX, TABLE_LEVELS).tolist(), force=force)


# The check value of a .lic file: the first bytes of sha256 over the table index of every coded symbol
# (4: a decoder with other tables goes unnoticed once in 2^32 files).
CHECK_BYTES = 4


class TablesMismatch(LicError):
    """The coding tables a decoder derives from a file differ from the ones its encoder used."""


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


def validate_tables(coder, name: str = "the coder") -> None:
    """Refuse rANS tables that would crash CompressAI's native coder, which trusts them.

    An EntropyBottleneck's or GaussianConditional's `_quantized_cdf` (one row per table),
    `_cdf_length` and `_offset` (one entry per row) must have one row per channel (EntropyBottleneck)
    or per scale of `scale_table` (GaussianConditional); every row must start at 0, increase strictly
    over its length (a symbol of frequency 0 divides by zero) and end there at 2^16, the coder's
    precision (else a search runs past the row); offsets must lie within ±2^24, as latents do.
    """
    cdf, length, offset = coder._quantized_cdf, coder._cdf_length, coder._offset
    rows = coder.channels if isinstance(coder, EntropyBottleneck) else coder.scale_table.numel()
    if (cdf.dtype, length.dtype, offset.dtype) != (torch.int32,) * 3 or cdf.dim() != 2 \
            or cdf.shape[0] != rows or length.shape != (rows,) or offset.shape != (rows,):
        raise LicError(f"the rANS tables of {name} have the wrong shapes or types "
                       f"(expected {rows} rows of int32)")
    if not ((length >= 2) & (length <= cdf.shape[1])).all():
        raise LicError(f"the rANS tables of {name} have lengths outside 2..{cdf.shape[1]}")
    inside = torch.arange(1, cdf.shape[1], device=cdf.device) < length[:, None]  # steps within a row
    if not ((cdf[:, 0] == 0).all() and ((cdf.diff(dim=1) > 0) | ~inside).all()
            and (cdf.gather(1, length[:, None].long() - 1) == 1 << 16).all()):
        raise LicError(f"the rANS tables of {name} have a CDF row that does not rise strictly "
                       "from 0 to 2^16")
    if offset.abs().max() > 2**24:
        raise LicError(f"the rANS tables of {name} have offsets beyond ±2^24")


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
    """The string followed by enough zero bytes that CompressAI's rANS decoder cannot read past it,
    whatever the bytes: a proven bound on what its `decode_with_indexes` reads for `n_symbols`.

    The decoder (cpp_exts/rans/rans_interface.cpp, rans64.h) reads 32-bit words forward only:
    - 2 to start, and at most 1 per symbol to renormalise after decoding it (the state is then ≥ 2^59);
    - on an escape (the table's last slot), 4-bit reads: a count loop that runs while it reads 15,
      then `n` raw nibbles, n ≤ 15 × the count loop's length. A 4-bit read takes a word at most once
      per 8 reads (again once at the symbol's first read), so a symbol with count length c reads at
      most 1 + 2c words. The count loop goes through the state's ≤ 15 nibbles of ones, then only
      through words that are all ones (0xFFFFFFFF), ending in the first other word: c ≤ 24 + 8·f,
      where f counts the all-ones words it consumed; each payload word is consumed once, and the zero
      padding holds none.
    Summed over S symbols with F all-ones words in the string: at most 2 + 2S + 48S + 16F words, so
    padding to 50·S + 16·F + 2 words (plus a margin) keeps every read inside the buffer. That is 200
    bytes per symbol, ≈ 75 bytes per pixel for M = 96: less than the synthesis transform needs anyway.
    """
    words = np.frombuffer(string[: len(string) // 4 * 4], dtype="<u4")
    all_ones = int(np.count_nonzero(words == 0xFFFFFFFF))
    pad_words = 50 * n_symbols + 16 * all_ones + 2 + 1024
    return string + bytes(4 * pad_words)


def check_value(tensors: list[torch.Tensor]) -> bytes:
    """CHECK_BYTES bytes naming what a decoder must rebuild exactly, in coding order: the table index
    of every coded symbol (integer tensors, as int32) and, for models that predict them, the means
    and decoded values that feed later parameters (float tensors, as float32). The encoder stores
    it, the decoder recomputes it from what it decoded before it trusts the rest."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        kind = ("<f4", torch.float32) if t.is_floating_point() else ("<i4", torch.int32)
        h.update(t.to(kind[1]).numpy().astype(kind[0]).tobytes())
    return h.digest()[:CHECK_BYTES]


def verify_check(tensors: list[torch.Tensor], expected: bytes | None) -> None:
    """Refuse to decode with tables other than the encoder's (a wrong image, never shown)."""
    if expected is None:
        return
    here = check_value(tensors)
    if here != expected:
        raise TablesMismatch(
            f"this .lic file cannot be decoded correctly here: the coding tables derived from it on this "
            f"machine differ from the ones its encoder used (check value {here.hex()}, the file says "
            f"{expected.hex()}), so decoding would give a wrong image; decode it with the program "
            "version that wrote it")


def table_indexes(gc: GaussianConditional, scales: torch.Tensor) -> torch.Tensor:
    """GaussianConditional.build_indexes (the smallest table scale ≥ σ) in one vectorized call:
    comparisons only, so the same σ pick the same tables on every machine."""
    return torch.bucketize(gc.lower_bound_scale(scales).contiguous(), gc.scale_table[:-1]).int()


def encode_gaussian(gc: GaussianConditional, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> bytes:
    """Several (values, table indexes, means) coded one after the other into one rANS string, as if
    one latent: the decoder reads them back in the same order (GaussianStream)."""
    flat = [torch.cat([t.reshape(-1) for t in column])[None] for column in zip(*parts)]
    return gc.compress(*flat)[0]


class GaussianStream:
    """Reads what encode_gaussian wrote, one part at a time: the indexes of a part may depend on the
    values decoded before it."""

    def __init__(self, gc: GaussianConditional, string: bytes):
        from compressai.ans import RansDecoder

        self.gc, self.decoder = gc, RansDecoder()
        self.decoder.set_stream(string)
        # the tables as the native coder takes them, converted once (not once a part)
        self.tables = (gc._quantized_cdf.tolist(), gc._cdf_length.reshape(-1).int().tolist(),
                       gc._offset.reshape(-1).int().tolist())

    def decode(self, indexes: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """The next part: symbols + means, of the shape of `indexes`."""
        symbols = self.decoder.decode_stream(indexes.reshape(-1).int().tolist(), *self.tables)
        values = torch.tensor(symbols, dtype=torch.int32, device=means.device).reshape(indexes.shape)
        return self.gc.dequantize(values, means, means.dtype)
