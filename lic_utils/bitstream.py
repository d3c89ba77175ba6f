"""`.lic` files: one image coded by a LearnedCodec, with everything needed to refuse bad input early.

Layout (integers little-endian):

    magic        4   b"\\x89LIC"   (a non-ASCII first byte, as in PNG, catches text-mode mangling)
    version      1   FORMAT_VERSION
    n_strings    1   how many entropy-coded strings (1 to MAX_STRINGS; their names and order are
                     the model's: `string_names`, e.g. y, or y and the side information z)
    config_hash  8   architecture of the model (ModelConfig.config_hash)
    fingerprint  8   weights of the model (LearnedCodec.fingerprint): checkpoints of one architecture differ here
    height       2   image size in pixels
    width        2
    check        4   coding.check_value: sha256 of the table index of every coded symbol
    lengths      4 × n_strings
    header_crc   4   CRC32 of all header bytes above
    payload          the entropy-coded strings, concatenated
    payload_crc  4   CRC32 of the payload

Reading checks, in order: magic, version, header length, header CRC, file length (truncated or
trailing bytes), payload CRC, every field against bounds and against the model (architecture and
weights hashes, its strings and their lengths). Only then does a payload reach the rANS decoder, whose
C++ code trusts its input. Every failure is a BitstreamError (a LicError) that says what is wrong.
The container knows no entropy model: what the strings are, and the latent shape an image size
gives, are the model's (its prior's entry in lic_utils.priors: names, stride).

Across machines: the tables of version-2 files are derived by exact arithmetic (lic_utils.exact), so
every machine decodes the same latents, and the decoder recomputes the check value before it decodes
what depends on it (coding.TablesMismatch, never a wrong image). Version 1 stored the coded latent
shape (latent_h, latent_w: 2 + 2 bytes, always the one the image size implies) where version 2 has
the check value, so both versions make files of the same size. Version-1 files (no check value; the
hyperprior's tables derived in float) still decode, with the float path they were written with and
a LicWarning when their tables were derived: correct only on a machine that computes the same floats
as the encoder's.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import warnings

import torch

from lic_utils.coding import CHECK_BYTES
from lic_utils.data import MAX_PIXELS  # bounds the decoder's memory (≈ 3 GB at the limit)
from lic_utils.errors import LicError, LicWarning

MAGIC = b"\x89LIC"
FORMAT_VERSION = 2  # 2: a check value, tables derived exactly; 1: neither
READ_VERSIONS = (1, 2)
_FIXED = struct.Struct("<4sBB8s8sHH4s")  # magic … check: 30 bytes
_FIXED_V1 = struct.Struct("<4sBB8s8sHHHH")  # magic … latent_w (the latent shape where 2 has the check)
_U32 = struct.Struct("<I")
MAX_SIDE = 65535  # uint16 fields
MIN_STRING = 8  # a rANS string is at least the coder's 64-bit final state
MAX_STRINGS = 8  # bounds a crafted header; every registered prior codes one or two


class BitstreamError(LicError):
    """A .lic file that cannot be decoded (as it is, or with this checkpoint)."""


class NotALicFile(BitstreamError):
    pass


class UnsupportedVersion(BitstreamError):
    pass


class TruncatedFile(BitstreamError):
    pass


class CorruptFile(BitstreamError):
    pass


class ModelMismatch(BitstreamError):
    pass


@dataclass(frozen=True)
class LicFile:
    """The parsed, CRC-checked contents of a .lic file."""

    version: int
    config_hash: str
    fingerprint: str
    height: int
    width: int
    strings: tuple[bytes, ...]
    header_bytes: int
    total_bytes: int
    check: bytes | None = None  # None in version 1
    stored_shape: tuple[int, int] | None = None  # version 1 only: the coded latent shape it stored


def header_size(n_strings: int) -> int:
    return _FIXED.size + 4 * n_strings + 4


def _check_image_size(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise LicError(
            f"image of {width}×{height} pixels is outside what .lic files hold "
            f"(sides 1..{MAX_SIDE}, at most {MAX_PIXELS} pixels); crop or downscale it"
        )


# --- writing ----------------------------------------------------------------------------------------
def pack(config_hash: str, fingerprint: str, height: int, width: int, shape, strings,
         check: bytes | None) -> bytes:
    """Assemble a .lic file from a model's compress() output and the model's two hashes: version 2
    with its check value, or version 1 (readable by older code) when `check` is None."""
    _check_image_size(height, width)
    if not 1 <= len(strings) <= MAX_STRINGS:
        raise ValueError(f"a .lic file holds 1 to {MAX_STRINGS} strings, got {len(strings)}")
    if check is not None and len(check) != CHECK_BYTES:
        raise ValueError(f"a check value has {CHECK_BYTES} bytes, got {len(check)}")
    fixed = (MAGIC, 1 if check is None else FORMAT_VERSION, len(strings), bytes.fromhex(config_hash),
             bytes.fromhex(fingerprint), height, width)
    header = (_FIXED_V1.pack(*fixed, *shape) if check is None else _FIXED.pack(*fixed, check)) \
        + b"".join(_U32.pack(len(s)) for s in strings)
    header += _U32.pack(zlib.crc32(header))
    payload = b"".join(strings)
    return header + payload + _U32.pack(zlib.crc32(payload))


def encode_image(model, x: torch.Tensor) -> bytes:
    """One image (1×3×H×W or 3×H×W, floats in [0, 1]) → the bytes of a .lic file."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise LicError(f"encode_image takes one RGB image (1×3×H×W), got shape {tuple(x.shape)}")
    _check_image_size(*x.shape[-2:])
    out = model.compress(x)
    return pack(model.config.config_hash(), model.fingerprint(), *out["image_size"], out["shape"], out["strings"],
                out["check"])


def write_lic(path: str | os.PathLike, model, x: torch.Tensor) -> int:
    """Encode `x` and write it to `path` atomically; returns the file size in bytes."""
    from lic_utils.files import atomic_write_bytes

    data = encode_image(model, x)
    atomic_write_bytes(path, data)
    return len(data)


# --- reading ----------------------------------------------------------------------------------------
def parse(data: bytes) -> LicFile:
    """Check everything that can be checked without a model; return the fields and strings."""
    data = bytes(data)
    n = len(data)
    if data[: len(MAGIC)] != MAGIC[: min(n, len(MAGIC))] or n == 0:
        raise NotALicFile(f"not a .lic file (starts with {data[:4]!r}, expected {MAGIC!r})")
    if n < _FIXED.size + 4:
        raise TruncatedFile(f"truncated .lic file: {n} bytes, shorter than its header")
    magic, version, k, config_hash, fingerprint, height, width, check = _FIXED.unpack_from(data)
    if version not in READ_VERSIONS:
        raise UnsupportedVersion(f".lic format version {version} is not supported (this code reads versions "
                                 f"{', '.join(map(str, READ_VERSIONS))})")
    if not 1 <= k <= MAX_STRINGS:
        raise CorruptFile(f"corrupted .lic header: {k} strings (expected 1 to {MAX_STRINGS})")
    hsize = header_size(k)
    if n < hsize:
        raise TruncatedFile(f"truncated .lic file: {n} bytes, shorter than its {hsize}-byte header")
    (header_crc,) = _U32.unpack_from(data, hsize - 4)
    if zlib.crc32(data[: hsize - 4]) != header_crc:
        raise CorruptFile("corrupted .lic file: header CRC32 mismatch")
    lengths = [_U32.unpack_from(data, _FIXED.size + 4 * i)[0] for i in range(k)]
    total = hsize + sum(lengths) + 4
    if n < total:
        raise TruncatedFile(f"truncated .lic file: {n} of {total} bytes")
    if n > total:
        raise CorruptFile(f"corrupted .lic file: {n - total} unexpected bytes after the end ({total} bytes)")
    payload = data[hsize : total - 4]
    if zlib.crc32(payload) != _U32.unpack_from(data, total - 4)[0]:
        raise CorruptFile("corrupted .lic file: payload CRC32 mismatch")
    # Fields the CRCs vouch for can still be wrong in a crafted file: bound them before any use.
    try:
        _check_image_size(height, width)
    except LicError as e:
        raise CorruptFile(f"malformed .lic file: {e}") from None
    stored_shape = None
    if version == 1:
        check, stored_shape = None, tuple(_FIXED_V1.unpack_from(data)[-2:])
    for i, length in enumerate(lengths):
        if length < MIN_STRING or length % 4:
            raise CorruptFile(f"malformed .lic file: string {i + 1} has {length} bytes (rANS strings are ≥ 8 and "
                              "whole words)")
    strings, offset = [], hsize
    for length in lengths:
        strings.append(data[offset : offset + length])
        offset += length
    return LicFile(version, config_hash.hex(), fingerprint.hex(), height, width, tuple(strings), hsize, n,
                   check, stored_shape)


def check_model(lic: LicFile, model) -> tuple[int, int]:
    """Refuse a file the model did not write (architecture or weights) or whose strings cannot be its
    own; returns the coded latent shape (the model's, for the image size)."""
    cfg_hash, fp = model.config.config_hash(), model.fingerprint()
    if lic.config_hash != cfg_hash:
        raise ModelMismatch(
            f"this .lic file was made by a model with architecture {lic.config_hash}, but the checkpoint has "
            f"architecture {cfg_hash} ({model.config.prior}, N={model.config.N}, M={model.config.M}): "
            "decode with the checkpoint that made the file"
        )
    if lic.fingerprint != fp:
        raise ModelMismatch(
            f"this .lic file was made by model weights {lic.fingerprint}, but the checkpoint's weights are {fp} "
            f"(same architecture {cfg_hash}): decode with the checkpoint that made the file"
        )
    names, shape = tuple(model.string_names), model.coded_shape(lic.height, lic.width)
    if len(lic.strings) != len(names):
        raise CorruptFile(f"malformed .lic file: {len(lic.strings)} strings, but the model codes {len(names)} "
                          f"({', '.join(names)})")
    if lic.stored_shape is not None and lic.stored_shape != shape:
        raise CorruptFile(f"malformed .lic file: latent shape {lic.stored_shape[0]}×{lic.stored_shape[1]} does not "
                          f"fit a {lic.height}×{lic.width} image")
    for name, string, count in zip(names, lic.strings, model.symbol_counts(shape)):
        if len(string) > 4 * count:  # the encoder's buffer holds one 32-bit word per symbol
            raise CorruptFile(f"malformed .lic file: string {name} has {len(string)} bytes, more than {count} symbols can take")
    return shape


def decode_image(model, data: bytes) -> torch.Tensor:
    """The bytes of a .lic file → x̂ (1×3×H×W in [0, 1]); BitstreamError for anything malformed,
    coding.TablesMismatch when this machine cannot rebuild the encoder's coding tables."""
    lic = parse(data)
    shape = check_model(lic, model)
    return model.decompress(list(lic.strings), shape, (lic.height, lic.width), **decode_options(lic, model))


def decode_options(lic: LicFile, model) -> dict:
    """How to decode a file of its version: version 2 with the exact tables and its check value;
    version 1 as it was written (float tables, no check), with a warning where that matters."""
    if lic.version >= 2:
        return {"check": lic.check, "exact": True}
    if model.prior.derives_tables:
        warnings.warn(
            "this is a .lic file of format 1, whose coding tables were computed in float arithmetic: it "
            "decodes correctly only on a machine that computes the same floats as the one that wrote it "
            "(elsewhere the image can be garbage, undetected); compress the image again for a format-2 "
            "file that decodes the same everywhere", LicWarning, stacklevel=3)
    return {"check": None, "exact": False}


def read_lic(path: str | os.PathLike, model) -> torch.Tensor:
    """Decode the .lic file at `path` with `model`."""
    return decode_image(model, read_bytes(path))


def read_bytes(path) -> bytes:
    """A .lic file's bytes, with one-line errors for a missing path or a folder."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise LicError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LicError(f"{path} is a directory, not a .lic file") from None


def info(data: bytes, model=None) -> dict:
    """Header fields and sizes; with the model that wrote the file, also its estimated rate.

    The estimate is the model's −log2 p of the decoded latents, i.e. what training minimises; the
    real rate adds the rANS coder's overhead (table precision, the hyperprior's scale table, its
    final state) and the header.
    """
    lic = parse(data)
    pixels = lic.height * lic.width
    payload = sum(len(s) for s in lic.strings)
    out = {
        "format_version": lic.version,
        "config_hash": lic.config_hash,
        "fingerprint": lic.fingerprint,
        "check_value": lic.check.hex() if lic.check is not None else None,
        "height": lic.height,
        "width": lic.width,
        "string_bytes": [len(s) for s in lic.strings],  # named, with the model that wrote the file
        "header_bytes": lic.header_bytes + 4,  # header + payload CRC
        "payload_bytes": payload,
        "file_bytes": lic.total_bytes,
        "bpp": lic.total_bytes * 8 / pixels,
        "payload_bpp": payload * 8 / pixels,
    }
    if model is not None:
        shape = check_model(lic, model)
        out["prior"] = model.config.prior
        out["string_bytes"] = {n: len(s) for n, s in zip(model.string_names, lic.strings)}
        out["latent_shape"] = list(shape)
        bits = model.estimate_bits(list(lic.strings), shape, **decode_options(lic, model))
        est = sum(bits.values())
        out["estimated_bits"] = {k: round(v, 1) for k, v in bits.items()}
        out["estimated_bpp"] = est / pixels
        out["payload_overhead_pct"] = 100 * (payload * 8 / est - 1) if est > 0 else None
    return out


def info_file(path: str | os.PathLike, model=None) -> dict:
    return {"file": str(path)} | info(read_bytes(path), model)


# --- benchmark --------------------------------------------------------------------------------------
def benchmark(model, images, repeats: int = 3) -> list[dict]:
    """Per image: encode and decode time (best of `repeats`, ms), real and estimated bpp.

    Wall time and process CPU time are both recorded: on a shared machine the wall time of an
    OpenMP-threaded process balloons when another process takes a core, while the CPU time (summed
    over threads) measures the work itself. `images` yields (name, 3×H×W tensor). Real bpp is the
    whole .lic file; estimated bpp is the model's −log2 likelihood from an eval forward pass on the
    same image (excluding the header). Each decode is checked to equal the forward pass bit for bit.
    """
    import time

    model.eval()
    rows = []
    images = list(images)
    if images:
        decode_image(model, encode_image(model, images[0][1]))  # warm-up: allocations, weights hash
    for name, img in images:
        x = img.unsqueeze(0) if img.dim() == 3 else img
        enc, dec, enc_cpu, dec_cpu = [], [], [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            data = encode_image(model, x)
            t1, c1 = time.perf_counter(), time.process_time()
            x_hat = decode_image(model, data)
            t2, c2 = time.perf_counter(), time.process_time()
            enc.append(t1 - t0)
            dec.append(t2 - t1)
            enc_cpu.append(c1 - c0)
            dec_cpu.append(c2 - c1)
        with torch.inference_mode():
            out = model(x)
        pixels = x.shape[-2] * x.shape[-1]
        lic = parse(data)
        rows.append({
            "image": name, "height": x.shape[-2], "width": x.shape[-1],
            "encode_ms": 1000 * min(enc), "decode_ms": 1000 * min(dec),
            "encode_cpu_ms": 1000 * min(enc_cpu), "decode_cpu_ms": 1000 * min(dec_cpu),
            "bpp": len(data) * 8 / pixels, "payload_bpp": sum(map(len, lic.strings)) * 8 / pixels,
            "estimated_bpp": float(out["bpp"]), "header_bytes": len(data) - sum(map(len, lic.strings)),
            "exact": bool(torch.equal(x_hat, out["x_hat"])),
        })  # fmt: skip
    return rows
