"""The study's three image-quality measures, computed the same way everywhere.

- PSNR: RGB, on 8-bit rounded images (what a decoder writes), 10·log10(255² / MSE), per image.
- MS-SSIM: pytorch-msssim with data_range=1 (the standard 11×11 window; smaller windows for images
  too small for five scales, e.g. training crops). Also given in dB as −10·log10(1 − MS-SSIM).
- LPIPS: the `lpips` package, AlexNet, v0.1 (lower is better). The AlexNet backbone is loaded from
  the checksummed file `lpips/alexnet_features_imagenet1k_v1.pth` (resolved like every data file;
  `$LIC_LPIPS_BACKBONE` overrides), so LPIPS works offline and reproduces the official values.

All functions take float tensors N×3×H×W in [0, 1] and return one value per image.
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lic_utils.errors import LicError

# Formats whose file size is the compressed size of the image (bpp is reported for them).
COMPRESSED_SUFFIXES = {".jpg", ".jpeg", ".webp", ".avif", ".heic", ".heif", ".jp2", ".j2k", ".jxl", ".lic"}


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.shape != y.shape:
        raise LicError(f"images differ in size: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x.float(), y.float()


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """RGB PSNR in dB of the 8-bit rounded images (inf for identical images)."""
    x, y = _pair(x, y)
    q = lambda t: t.clamp(0, 1).mul(255).round()  # noqa: E731
    mse = (q(x) - q(y)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the [0, 1] scale, per image (no rounding: the training distortion)."""
    x, y = _pair(x, y)
    return (x - y).pow(2).flatten(1).mean(1)


def msssim_window(height: int, width: int) -> int:
    """Largest odd window ≤ 11 for which five MS-SSIM scales fit: min side > (win − 1)·16."""
    side = min(height, width)
    for win in (11, 9, 7, 5, 3):
        if side > (win - 1) * 16:
            return win
    raise LicError(f"MS-SSIM needs images of at least 33×33 pixels, got {height}×{width}")


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM (pytorch-msssim, data_range=1), per image; 1 for identical images."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    x, y = _pair(x, y)
    win = msssim_window(*x.shape[-2:])
    return _ms_ssim(x, y, data_range=1.0, size_average=False, win_size=win)


def ms_ssim_db(value) -> float | np.ndarray | torch.Tensor:
    """MS-SSIM on a dB scale, −10·log10(1 − MS-SSIM), where differences near 1 become visible."""
    if isinstance(value, torch.Tensor):
        return -10 * torch.log10((1 - value).clamp_min(1e-10))
    return -10 * np.log10(np.maximum(1 - np.asarray(value, dtype=np.float64), 1e-10))


def lpips_backbone_path() -> Path:
    """The AlexNet `.features` weights: $LIC_LPIPS_BACKBONE, else the checksummed data file."""
    env = os.environ.get("LIC_LPIPS_BACKBONE")
    if env:
        if not Path(env).is_file():
            raise LicError(f"LIC_LPIPS_BACKBONE={env} is not a file; unset it or point it at an AlexNet .features state_dict")
        return Path(env)
    from lic_utils import data

    return data.resolve(data.LPIPS_BACKBONE)


@lru_cache(maxsize=4)
def lpips_model(device: str = "cpu") -> torch.nn.Module:
    """LPIPS-alex v0.1, frozen and in eval mode, built offline (pnet_rand + the backbone file).

    Built outside inference mode even when first asked for inside it: the cached network also serves
    the training loss, where inference tensors could not take part in autograd. Built without
    touching torch's global RNG, which the trainer checkpoints: whether LPIPS was built earlier in
    the process must not change a run (a resumed run builds it again at its first validation).
    """
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        return _build_lpips(device)  # its random init (then overwritten) must not move torch's RNG


def _build_lpips(device: str) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    backbone = torch.load(lpips_backbone_path(), map_location="cpu", weights_only=True)
    # The slices keep AlexNet's feature layers under their original indices ("slice2.3.weight" = features.3).
    sliced = {
        f"{name}.{key}": backbone[key]
        for name, part in model.net.named_children()
        for key in part.state_dict()
    }
    model.net.load_state_dict(sliced, strict=True)
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-alex v0.1 distance per image; inputs in [0, 1] are scaled to [−1, 1] here.

    Differentiable in x and y (the network itself is frozen), so the training loss uses it too.
    """
    x, y = _pair(x, y)
    model = lpips_model(str(x.device))
    return model(x * 2 - 1, y * 2 - 1).flatten()


def ssimulacra2(ref: np.ndarray, dist: np.ndarray) -> float:
    """SSIMULACRA2 score of two H×W×3 uint8 RGB images (100 = identical, higher is better).

    The study's held-out perceptual metric: no model trains on it, so it checks gains that the trained-for
    metrics cannot vouch for. Computed by the `ssimulacra2` package (pure Python, about 0.5 s per 768×512 pair on
    the 2-core study machine), handed the arrays as in-memory PPM files (PNG would add 0.07-0.16 s). Its scores
    are not libjxl's: it reflects at the top and bottom borders where libjxl pads with zeros, and when the short
    side is under 225 px it stops one scale early. Against the C++ tool that costs a few points, more on tiny images
    (tests/test_ssimulacra2.py), so compare its scores only with each other.
    """
    for name, img in (("reference", ref), ("distorted", dist)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            got = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise LicError(f"SSIMULACRA2 needs H×W×3 uint8 RGB images; the {name} image is a {got}")
    if ref.shape != dist.shape:
        raise LicError(f"images differ in size: {ref.shape[1]}×{ref.shape[0]} vs {dist.shape[1]}×{dist.shape[0]}")
    if min(ref.shape[:2]) < 8:
        raise LicError(f"SSIMULACRA2 needs images of at least 8×8 pixels, got {ref.shape[1]}×{ref.shape[0]}")
    import io

    import ssimulacra2 as _ssimulacra2
    from PIL import Image

    def ppm(img: np.ndarray) -> io.BytesIO:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format="PPM")
        buf.seek(0)
        return buf

    return float(_ssimulacra2.compute_ssimulacra2(ppm(ref), ppm(dist)))


@torch.no_grad()
def evaluate(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """PSNR, MS-SSIM and LPIPS of one image pair (tensors 1×3×H×W or 3×H×W in [0, 1]).

    Computed on `threads.MEASURE_THREADS` torch threads whatever the caller's count, so a cached row
    does not depend on which process (serial, or a one-thread pool worker) measured it.
    """
    from lic_utils.threads import MEASURE_THREADS, torch_threads

    x, y = _pair(x, y)
    with torch_threads(MEASURE_THREADS):
        return {
            "psnr": float(psnr(x, y)[0]),
            "ms_ssim": float(ms_ssim(x, y)[0]),
            "lpips": float(lpips(x, y)[0]),
        }


def evaluate_arrays(ref: np.ndarray, dist: np.ndarray) -> dict[str, float]:
    """The four metrics of two H×W×3 uint8 images: PSNR, MS-SSIM, LPIPS and SSIMULACRA2."""
    from lic_utils.data import to_tensor

    return {**evaluate(to_tensor(ref), to_tensor(dist)), "ssimulacra2": ssimulacra2(ref, dist)}


def compare_files(ref: str | os.PathLike, dist: str | os.PathLike, checkpoint: str | None = None,
                  background: str | None = None) -> dict:
    """Metrics of an image file against a reference; adds bpp when `dist` is a compressed file.

    Both images are compared as a colour-managed viewer shows them: converted to sRGB from the
    colour profiles they embed (data.load_rgb), transparency composited over `background` (refused
    without it). A `.lic` file is decoded with `checkpoint` (the model that wrote it), else with the
    zoo model its header names.
    """
    from lic_utils import data

    ref_img = data.load_rgb(ref, background=background)
    dist = Path(dist)
    if dist.suffix.lower() == ".lic":
        from lic_utils import bitstream, zoo

        x_hat = bitstream.decode_image(zoo.decoder_for(dist, checkpoint), bitstream.read_bytes(dist))
        dist_img = data.to_uint8(x_hat)
    else:
        dist_img = data.load_rgb(dist, background=background)
    if ref_img.shape != dist_img.shape:
        raise LicError(f"{ref} is {ref_img.shape[1]}×{ref_img.shape[0]} but {dist} is {dist_img.shape[1]}×{dist_img.shape[0]}")
    out = evaluate_arrays(ref_img, dist_img)
    if dist.suffix.lower() in COMPRESSED_SUFFIXES:
        h, w, _ = ref_img.shape
        out["bpp"] = dist.stat().st_size * 8 / (h * w)
    return out
