"""SSIMULACRA2 (the held-out metric): input checks, and the `ssimulacra2` package against C++ reference scores.

The reference scores come from libjxl's C++ ssimulacra2 tool, captured on synthetic images by imazen/ssimulacra2:
ssimulacra2/src/reference_data.rs at commit 3581dd88220c9fc1b4c6c780ce1149333cb41903 (2026-01-04). The images come from
ssimulacra2/examples/capture_cpp_reference.rs at the same commit, rebuilt here in numpy. Their SHA-256 hashes, which
the reference file records, are checked below, so the inputs are exactly the ones the C++ tool scored.

Measured: the package does NOT reproduce the C++ tool. Only 1 of the 8 cases below comes within the tolerance.
Package − C++ on these cases: +2.3 (uniform shift, 256²), +3.5 (uniform shift, 128²), +3.0 (box blur), +0.9 (YUV)
and +38.6, +93.7, −56.7, −634.9 (64² uniform shift, gradient vs uniform, sharpen, noise vs uniform). On imazen's real
256×256 JPEG crops (test_data/jpeg_quality, not used here) it is −4.6 at q20, −2.1 at q45, −1.1 at q70 and +0.0 at q90.
There are two causes, both in ssimulacra2 0.3.0's own code:
  1. blur_image reflects at the top and bottom edges, where libjxl's recursive Gaussian pads with zeros on every edge
     (tools/gauss_blur.cc);
  2. it checks the 8-pixel minimum after downsampling, but libjxl checks it before (tools/ssimulacra2.cc). So on small
     images libjxl scores one more scale (4-7 px), and each scale's weights shift with it. For images ≥ 225 px on
     the short side, Kodak's 768×512 included, both score all six scales, so only cause 1 applies.
With both causes emulated (scipy's Gaussian kept), every case below is within 0.6 of C++. That 0.6 is the cost of
using a truncated Gaussian in place of libjxl's recursive one. It is 0.3-0.9 on the real JPEG crops. So TOLERANCE = 1.0 is
what a faithful port using scipy's blur would meet. Cases where that kernel difference alone goes over 1 point are
left out (uniform_shift_1_*: up to 2.0; edge_vs_boxblur8x8_64x64: 2.3). The cases the package misses are strict xfails.
They record the known deviation without loosening the tolerance, and they fail as XPASS if a new package version
fixes it. test_package_scores_are_pinned pins the package's own scores, so any change in them is caught either way.
"""
import hashlib

import numpy as np
import pytest

from lic_utils import metrics
from lic_utils.errors import LicError

TOLERANCE = 1.0  # SSIMULACRA2 points; see the module docstring

# ---- the generators of capture_cpp_reference.rs (8-bit grey patterns are R = G = B) ----


def _grey(v) -> np.ndarray:
    return np.repeat(np.asarray(v, dtype=np.uint8)[..., None], 3, axis=2)


def uniform(n: int, v: int) -> np.ndarray:
    return np.full((n, n, 3), v, np.uint8)


def gradient_h(n: int) -> np.ndarray:
    return _grey(np.broadcast_to(np.arange(n) * 255 // (n - 1), (n, n)))


def gradient_diag(n: int) -> np.ndarray:
    y, x = np.mgrid[:n, :n]
    return _grey((x + y) * 255 // (2 * n - 2))


def edge_vertical(n: int) -> np.ndarray:
    return _grey(np.broadcast_to(np.where(np.arange(n) < n // 2, 0, 255), (n, n)))


def noise(n: int, seed: int) -> np.ndarray:
    """The generator's 64-bit LCG (Knuth's MMIX constants), one byte (bits 33-40) per channel value."""
    out, s = np.empty(n * n * 3, np.uint8), seed
    for i in range(out.size):
        s = (s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out[i] = (s >> 33) & 0xFF
    return out.reshape(n, n, 3)


def box_blur_8x8(img: np.ndarray) -> np.ndarray:
    """Mean over offsets −4..3 in both directions, edge-clamped, truncating division."""
    h, w, _ = img.shape
    p = np.pad(img.astype(np.uint32), ((4, 3), (4, 3), (0, 0)), mode="edge")
    return (sum(p[dy:dy + h, dx:dx + w] for dy in range(8) for dx in range(8)) // 64).astype(np.uint8)


def sharpen(img: np.ndarray) -> np.ndarray:
    """The 3×3 kernel [0 −1 0; −1 5 −1; 0 −1 0]; off-image neighbours take the centre value (= edge padding)."""
    c = img.astype(np.int32)
    p = np.pad(c, ((1, 1), (1, 1), (0, 0)), mode="edge")
    return np.clip(5 * c - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:], 0, 255).astype(np.uint8)


def yuv_roundtrip(img: np.ndarray) -> np.ndarray:
    """BT.601 RGB → YUV → RGB in float32, clamped and truncated, as the Rust generator does."""
    f = np.float32
    r, g, b = (img[..., i].astype(f) for i in range(3))
    y = f(0.299) * r + f(0.587) * g + f(0.114) * b
    u = f(-0.14713) * r - f(0.28886) * g + f(0.436) * b + f(128.0)
    v = f(0.615) * r - f(0.51499) * g - f(0.10001) * b + f(128.0)
    out = (y + f(1.13983) * (v - f(128.0)),
           y - f(0.39465) * (u - f(128.0)) - f(0.58060) * (v - f(128.0)),
           y + f(2.03211) * (u - f(128.0)))
    return np.stack([np.clip(c, 0, 255).astype(np.uint8) for c in out], axis=2)


# name: (make source and distorted, C++ score, package score measured with ssimulacra2 0.3.0, SHA-256 of source, of distorted)
CASES = {
    "uniform_shift_10_256x256": (lambda: (uniform(256, 128), uniform(256, 138)), 80.291491359999995, 82.63523141323797,
                                 "83ab53863cf746efe2611c6b521cfbdefba4f5325cf123ab451c385035b394ef",
                                 "2019b05026c860a398ea4e5ccebf663341474616afd841520ad6f0f2cb93d95b"),
    "uniform_shift_5_128x128": (lambda: (uniform(128, 128), uniform(128, 133)), 88.540708760000001, 92.06253969805726,
                                "2af5ead05032faafc0818cc27fe86c562e70fe7bea63d38366ef7355051b8fe9",
                                "bc6f35e8fbe58efe8245f71ca581836e95ecc3a472e3a2798e99c364b8484149"),
    "uniform_shift_20_64x64": (lambda: (uniform(64, 128), uniform(64, 148)), 56.058555839999997, 94.69603900602736,
                               "2203a98fd84adfbd3cbbfda33c94fcc2d33f0e1d6ebfa4e0ced17c5469ba54e5",
                               "fe8a663ebc8cead56c6e1879d9fe43acf67ad22a1a4a08429510186f2fb51acc"),
    "gradient_vs_uniform_64x64": (lambda: (gradient_h(64), uniform(64, 128)), -64.568721479999994, 29.170556040990633,
                                  "bfcfaa0618d282841d4469793253649ea6ddab2f1d0351548cb6f05a8fd79b87",
                                  "2203a98fd84adfbd3cbbfda33c94fcc2d33f0e1d6ebfa4e0ced17c5469ba54e5"),
    "noise_vs_uniform_64x64": (lambda: (noise(64, 42), uniform(64, 128)), -47.335725580000002, -682.2214651582352,
                               "7f6be7f433ccb0a006e888f827df518a15c560c44b89852441183c2f61ea59f2",
                               "2203a98fd84adfbd3cbbfda33c94fcc2d33f0e1d6ebfa4e0ced17c5469ba54e5"),
    "gradient_vs_boxblur8x8_64x64": (lambda: (gradient_h(64), box_blur_8x8(gradient_h(64))), 94.340903150000003,
                                     97.38855154174907,
                                     "bfcfaa0618d282841d4469793253649ea6ddab2f1d0351548cb6f05a8fd79b87",
                                     "cceefcd9fb78f029449390c0ca86768fc741ab19d97e239272c7057dae4da706"),
    "noise_vs_sharpen_64x64": (lambda: (noise(64, 999), sharpen(noise(64, 999))), -5.810175560000000, -62.52973529649836,
                               "53f592ab5678b4f46d1de4eec5963a728202c7ef837d90fef30de68f127e643d",
                               "4ad3cfe3e5b8138c33e412d6e5c3a93c83fdf80048dd65fe4eeb2f0060275aaa"),
    "gradient_vs_yuv_roundtrip_64x64": (lambda: (gradient_diag(64), yuv_roundtrip(gradient_diag(64))),
                                        97.260109639999996, 98.13648565182409,
                                        "e7644fe3f111f9eac705815e27e46beb547fae004c47a8d7d32ec4004873f74d",
                                        "08f6523635ec5e8f1b2d3c4589ac4d7b41ec81ca46a064dee3db1612f1f2b841"),
}


def _sha256(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def _xfail_if_off(name: str):
    _, cpp, package, *_ = CASES[name]
    if abs(package - cpp) <= TOLERANCE:
        return name
    reason = f"ssimulacra2 0.3.0 gives {package:.3f}, C++ {cpp:.3f} ({package - cpp:+.3f}): border handling / scale count"
    return pytest.param(name, marks=pytest.mark.xfail(raises=AssertionError, strict=True, reason=reason))


@pytest.mark.parametrize("name", CASES)
def test_inputs_are_the_ones_the_cpp_tool_scored(name):
    make, _, _, src_hash, dist_hash = CASES[name]
    src, dist = make()
    assert (_sha256(src), _sha256(dist)) == (src_hash, dist_hash)


@pytest.mark.parametrize("name", [_xfail_if_off(n) for n in CASES])
def test_matches_cpp_reference(name):
    make, cpp, *_ = CASES[name]
    assert metrics.ssimulacra2(*make()) == pytest.approx(cpp, abs=TOLERANCE)


@pytest.mark.parametrize("name", CASES)
def test_package_scores_are_pinned(name):
    """The package's own scores: any change (package, scipy, numpy) shows here, and the xfails keep their meaning."""
    make, _, package, *_ = CASES[name]
    assert metrics.ssimulacra2(*make()) == pytest.approx(package, abs=1e-6)


@pytest.mark.parametrize("img", [noise(32, 123), gradient_h(48), edge_vertical(40), uniform(8, 200)],
                         ids=["noise", "gradient", "edge", "uniform-8px"])
def test_identical_images_score_100(img):
    assert metrics.ssimulacra2(img, img.copy()) == 100.0


def test_higher_quality_scores_higher():
    src = noise(64, 42)
    mild = np.clip(src.astype(int) + 3, 0, 255).astype(np.uint8)
    strong = np.clip(src.astype(int) + 30, 0, 255).astype(np.uint8)
    assert 100 > metrics.ssimulacra2(src, mild) > metrics.ssimulacra2(src, strong)


@pytest.mark.parametrize("ref, dist, message", [
    (uniform(32, 0), np.zeros((32, 33, 3), np.uint8), "differ in size"),
    (uniform(32, 0), np.zeros((33, 32, 3), np.uint8), "differ in size"),
    (uniform(32, 0), np.zeros((32, 32, 3), np.float32), "uint8"),
    (uniform(32, 0).astype(np.uint16), uniform(32, 0), "uint8"),
    (uniform(32, 0), np.zeros((32, 32), np.uint8), "H×W×3"),
    (uniform(32, 0), np.zeros((32, 32, 4), np.uint8), "H×W×3"),
    (uniform(32, 0), uniform(32, 0).tolist(), "list"),
    (uniform(7, 0), uniform(7, 0), "at least 8×8"),
])
def test_rejects_bad_input(ref, dist, message):
    with pytest.raises(LicError, match=message) as err:
        metrics.ssimulacra2(ref, dist)
    assert "\n" not in str(err.value)
