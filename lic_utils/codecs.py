"""Classical codecs with real bytes: JPEG, WebP, AVIF, HEIC, JPEG 2000 and JPEG XL behind one small interface.

Every number the study reports for a classical codec comes from a complete file (headers and
container included), so `bpp = 8 · len(file) / (H · W)` compares fairly with a learned codec's file.

Settings are each library's defaults unless stated, and are pinned so the bytes do not depend on
the machine; each codec's `settings` string names them, and the evaluation caches key their rows
on it, so changing a setting re-measures that codec instead of reusing stale rows. The last
column is how finely match_bitrate can hit a target (the setting's grain):
- jpeg: Pillow/libjpeg-turbo as a careful user runs it: integer quality 1–95 (Pillow accepts up to
  100, but above 95 files grow with hardly any gain, as Pillow's docs warn), 4:2:0 chroma,
  optimised Huffman tables (`optimize=True`: quality-5 files 38 % smaller on average than with the
  standard tables on Kodak, 21–49 %), and the progressive file instead when it is smaller (at high qualities, ≈ 5 %).
  Coarse at the bottom: quality 1 is 0.065–0.16 bpp on Kodak (mean 0.088); below that, below_floor.
- webp: Pillow/libwebp lossy, quality 0–100 taken as a float (libwebp's quality is continuous,
  searched in steps of 0.05), method 4, 4:2:0 chroma (the only lossy WebP layout). ≈0.5%, coarser
  just above quality 0 (≈7% on kodim13).
- avif: Pillow's own AVIF plugin (libavif + libaom), integer quality 0–100, 4:2:0 chroma, full
  range. Speed 6 (Pillow's default; speed 4 gains ≈0.2 dB at ≈4× the time, speed 8 loses ≈0.4 dB).
  `max_threads` is pinned to 2: libaom's output differs between 1 and more threads, and Pillow's
  default is the machine's core count. libavif maps quality to 64 quantizers, so neighbouring
  files differ by ≈5–10% in size.
- heic: pillow-heif/libheif with x265, integer quality 0–100, libheif's defaults (preset slow,
  tune ssim, 4:2:0 chroma). libheif sets x265's CRF to (100 − quality)/2 and a single intra
  picture gets an integer QP, so neighbouring files differ by ≈20%. x265 rejects very large or
  very elongated images (e.g. over ≈4216 px wide when only a few rows high): a LicError.
- jpeg2000: Pillow/OpenJPEG, 9/7 irreversible wavelet, one quality layer, .jp2 container, no
  chroma subsampling. Its parameter is the target bitrate in bpp (larger = more bytes; range
  0.01–8, saturating near the lossless size), passed as `quality_layers=[24 / bpp]` (a
  compression ratio against 24-bit RGB). The colour transform is switched on (`mct=1`; Pillow's
  default 0 codes R, G and B separately, ≈2–3 dB worse at the same size). ≈0.5%.
- jpegxl: pillow-jxl-plugin/libjxl, quality 0–100 taken as a float (libjxl maps it to its
  Butteraugli distance continuously; searched in steps of 0.05), effort 7 (libjxl's default), a
  bare codestream (no container), one thread (the bytes are the same with more; pinned anyway).
  Its floor is quality 0: 0.10–0.29 bpp on Kodak (mean 0.15); below that, below_floor.

Every codec encodes images from 1×1 up to its format's limits (JPEG 65500 px a side, WebP 16383,
AVIF 65536, JPEG XL 2^30); beyond them encoding raises a LicError naming the limit.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from lic_utils.errors import LicError

AVIF_SPEED = 6
AVIF_THREADS = 2
JXL_EFFORT = 7


class BitrateFloorWarning(UserWarning):
    """match_bitrate could not reach the target: even the codec's smallest file is larger."""


# --- one codec --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Codec:
    """A classical codec: `encode(image, quality) -> bytes` and `decode(bytes) -> image`.

    `quality_range` is inclusive; larger values always mean more bytes (up to codec noise).
    `integer` says whether the parameter takes integers only. `search_grid` is what match_bitrate
    bisects: every integer, or fine steps (WebP 0.05; JPEG 2000 0.25% geometric) for continuous ones.
    """

    name: str
    extensions: tuple[str, ...]  # the first is the one written
    quality_range: tuple[float, float]
    integer: bool
    quality_meaning: str
    _encode: Callable[[Image.Image, float], bytes] = field(repr=False)
    _decode: Callable[[bytes], Image.Image] = field(repr=False)
    search_grid: tuple = field(repr=False)  # the settings match_bitrate chooses from, increasing
    max_side: int | None = None
    settings: str = ""  # the pinned encoder settings (the caches key rows on them, with `name`)

    @property
    def extension(self) -> str:
        return self.extensions[0]

    def check_quality(self, quality) -> int | float:
        """`quality` as the codec takes it (int or float), or a LicError naming the valid range."""
        lo, hi = self.quality_range
        kind = "an integer" if self.integer else "a number"
        try:
            q = float(quality)
        except (TypeError, ValueError):
            q = math.nan
        if isinstance(quality, bool) or not lo <= q <= hi or (self.integer and not q.is_integer()):
            raise LicError(f"{self.name} quality must be {kind} in {lo:g}..{hi:g} ({self.quality_meaning}), got {quality!r}")
        return int(q) if self.integer else q

    def encode(self, image: np.ndarray, quality) -> bytes:
        """H×W×3 uint8 RGB → the complete file's bytes."""
        img = _check_image(image)
        q = self.check_quality(quality)
        h, w, _ = img.shape
        if self.max_side is not None and max(h, w) > self.max_side:
            raise LicError(
                f"{self.name} cannot encode a {w}×{h} image: the format allows at most {self.max_side} px a side. "
                f"Fix: crop or resize the image, or use another codec"
            )
        try:
            return self._encode(Image.fromarray(img, "RGB"), q)
        except (OSError, ValueError, RuntimeError) as e:
            raise LicError(
                f"{self.name} could not encode a {w}×{h} image ({e}). Fix: crop or resize the image, or use another codec"
            ) from None

    def decode(self, data: bytes) -> np.ndarray:
        """The bytes of a file this codec wrote → H×W×3 uint8 RGB."""
        try:
            im = self._decode(bytes(data))
            return np.array(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, RuntimeError, SyntaxError) as e:
            raise LicError(f"these {len(data)} bytes are not a {self.name} file this module can decode ({e})") from None


def _check_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise LicError(
            f"codecs take H×W×3 uint8 RGB arrays, got shape {a.shape} dtype {a.dtype}. "
            f"Fix: read images with lic_utils.data.load_rgb"
        )
    return np.ascontiguousarray(a)


# --- the six codecs ---------------------------------------------------------------------------------
def _pillow_encoder(fmt: str, **fixed) -> Callable[[Image.Image, float], bytes]:
    def encode(im: Image.Image, quality) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format=fmt, quality=quality, **fixed)
        return buf.getvalue()

    return encode


def _pillow_decoder(fmt: str) -> Callable[[bytes], Image.Image]:
    def decode(data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            im.load()
            return im

    return decode


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """Optimised Huffman tables; the progressive file when it is the smaller one."""
    files = []
    for progressive in (False, True):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=True, progressive=progressive)
        files.append(buf.getvalue())
    return min(files, key=len)


def _jpegxl_plugin() -> None:
    import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)


def _encode_jpegxl(im: Image.Image, quality: float) -> bytes:
    _jpegxl_plugin()
    buf = io.BytesIO()
    im.save(buf, format="JXL", quality=quality, effort=JXL_EFFORT, num_threads=1, use_container=False)
    return buf.getvalue()


def _decode_jpegxl(data: bytes) -> Image.Image:
    _jpegxl_plugin()
    return _pillow_decoder("JXL")(data)


def _encode_heic(im: Image.Image, quality: int) -> bytes:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(im).save(buf, quality=quality)
    return buf.getvalue()


def _decode_heic(data: bytes) -> Image.Image:
    import pillow_heif

    return pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True).to_pillow()


def _steps(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(round(lo + i * step, 6) for i in range(round((hi - lo) / step) + 1))


def _geometric_steps(lo: float, hi: float, ratio: float) -> tuple[float, ...]:
    n = math.ceil(math.log(hi / lo) / math.log(ratio)) + 1
    return tuple(sorted({float(f"{q:.5g}") for q in np.geomspace(lo, hi, n)}))


def _encode_jpeg2000(im: Image.Image, bpp: float) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[24.0 / bpp], irreversible=True, mct=1)
    return buf.getvalue()


CODECS: dict[str, Codec] = {
    c.name: c
    for c in [
        Codec("jpeg", (".jpg", ".jpeg"), (1, 95), True, "libjpeg quality",
              _encode_jpeg, _pillow_decoder("JPEG"), tuple(range(1, 96)), max_side=65500,
              settings="4:2:0, optimize, progressive if smaller"),
        Codec("webp", (".webp",), (0, 100), False, "libwebp quality",
              _pillow_encoder("WEBP"), _pillow_decoder("WEBP"), _steps(0, 100, 0.05), max_side=16383,
              settings="method 4"),
        Codec("avif", (".avif",), (0, 100), True, "libavif quality",
              _pillow_encoder("AVIF", speed=AVIF_SPEED, max_threads=AVIF_THREADS), _pillow_decoder("AVIF"),
              tuple(range(0, 101)), max_side=65536, settings=f"speed {AVIF_SPEED}, {AVIF_THREADS} threads"),
        Codec("heic", (".heic", ".heif"), (0, 100), True, "libheif/x265 quality",
              _encode_heic, _decode_heic, tuple(range(0, 101)), settings="libheif defaults"),
        Codec("jpeg2000", (".jp2",), (0.01, 8.0), False, "target bitrate in bpp",
              _encode_jpeg2000, _pillow_decoder("JPEG2000"), _geometric_steps(0.01, 8.0, 1.0025),
              settings="9/7, mct 1, one layer"),
        Codec("jpegxl", (".jxl",), (0, 100), False, "libjxl quality",
              _encode_jpegxl, _decode_jpegxl, _steps(0, 100, 0.05), max_side=1 << 30,
              settings=f"effort {JXL_EFFORT}, codestream"),
    ]
}


def get_codec(codec: str | Codec) -> Codec:
    if isinstance(codec, Codec):
        return codec
    try:
        return CODECS[str(codec).lower()]
    except KeyError:
        raise LicError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}") from None


def output_path(path: str | Path, codec: str | Codec) -> Path:
    """`path` with the codec's extension added when it has none; a LicError when it has another."""
    codec, path = get_codec(codec), Path(path)
    if not path.suffix:
        return path.with_suffix(codec.extension)
    if path.suffix.lower() not in codec.extensions:
        raise LicError(f"{path} does not end in {' or '.join(codec.extensions)}, which a {codec.name} file needs")
    return path


# --- bitrates ---------------------------------------------------------------------------------------
def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per pixel of a whole file of `nbytes` bytes holding an H×W image."""
    return 8.0 * nbytes / (height * width)


def sweep(image: np.ndarray, codec: str | Codec, qualities, decode: bool = True) -> list[dict]:
    """Encode at each quality: `[{codec, quality, bytes, bpp[, decoded]}]` (decode=False skips decoding)."""
    codec, img = get_codec(codec), _check_image(image)
    h, w, _ = img.shape
    rows = []
    for q in qualities:
        data = codec.encode(img, q)
        row = {"codec": codec.name, "quality": codec.check_quality(q), "bytes": len(data), "bpp": bpp(len(data), h, w)}
        if decode:
            row["decoded"] = codec.decode(data)
        rows.append(row)
    return rows


@dataclass
class MatchResult:
    """The file match_bitrate chose. `below_floor`: even the smallest file exceeds `target_bpp`."""

    codec: str
    quality: int | float
    data: bytes = field(repr=False)
    bpp: float
    decoded: np.ndarray = field(repr=False)
    below_floor: bool
    target_bpp: float
    encodes: int  # how many encodes the search cost

    @property
    def nbytes(self) -> int:
        return len(self.data)


def match_bitrate(image: np.ndarray, codec: str | Codec, target_bpp: float) -> MatchResult:
    """The setting whose real file is the largest not above `target_bpp` (bisection + neighbours).

    File size is not strictly monotone in quality, so after bisecting the codec's search grid the
    settings next to the boundary are tried too, and the largest file within the budget wins.
    When even the lowest setting is too large, the smallest file is returned with
    `below_floor=True` and a BitrateFloorWarning. Encodes are cached within the call.
    """
    return match_bitrates(image, codec, [target_bpp])[0]


def match_bitrates(image: np.ndarray, codec: str | Codec, targets_bpp) -> list[MatchResult]:
    """match_bitrate for several targets on one image, sharing one encode cache (≈30% fewer encodes)."""
    codec, img = get_codec(codec), _check_image(image)
    files: dict[int, bytes] = {}  # search-grid index → file
    return [_match(img, codec, t, files) for t in targets_bpp]


def _match(img: np.ndarray, codec: Codec, target_bpp, files: dict[int, bytes]) -> MatchResult:
    if isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float)) or not 0 < target_bpp < math.inf:
        raise LicError(f"target bitrate must be a positive number of bits per pixel, got {target_bpp!r}")
    h, w, _ = img.shape
    budget = target_bpp * h * w / 8.0  # bytes
    grid = codec.search_grid
    encodes_before = len(files)

    def fits(i: int) -> bool:
        if i not in files:
            files[i] = codec.encode(img, grid[i])
        return len(files[i]) <= budget

    # Invariant: grid[lo] fits (or lo is the floor) and grid[hi] does not (hi == len(grid): past the top).
    lo, hi = 0, len(grid)
    if fits(lo):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    for i in range(max(0, lo - 1), min(len(grid), lo + 3)):  # lo-1, lo, hi, hi+1
        fits(i)

    within = [i for i in files if len(files[i]) <= budget]
    if within:  # the largest file within budget among all settings tried
        best = max(within, key=lambda i: (len(files[i]), i))
    else:  # below the floor: the smallest file there is
        best = min(files, key=lambda i: (len(files[i]), i))
    data = files[best]
    result = MatchResult(
        codec=codec.name, quality=grid[best], data=data, bpp=bpp(len(data), h, w), decoded=codec.decode(data),
        below_floor=not within, target_bpp=float(target_bpp), encodes=len(files) - encodes_before,
    )
    if result.below_floor:
        warnings.warn(
            f"{codec.name} cannot reach {target_bpp:g} bpp on this {w}×{h} image: its smallest file is "
            f"{result.bpp:.4f} bpp (quality {result.quality}); that file is returned with below_floor=True",
            BitrateFloorWarning,
            stacklevel=3,
        )
    return result
