"""Datasets and weights of the study, resolved by checksum.

Every file the study reads is listed in `data/manifest.csv` (set, path, size, sha256, source URL).
A file is looked for, in order, in
  1. the checkout's own `data/<set>/` folder (gitignored),
  2. a mirror folder: `$LIC_DATA_MIRROR`, else `../shared/data` beside the checkout when it exists,
  3. its canonical URL, downloaded into `data/<set>/`,
and its sha256 is checked every time (once per process per unchanged file). A missing or corrupted
file raises a LicError naming the file, both checksums and the command that fixes it.

Images are always handed out as 8-bit sRGB: `load_rgb` converts colour profiles, grayscale, palette
and 16-bit inputs explicitly, refuses transparency and animation unless told what to do with them,
and refuses images over MAX_PIXELS from their header, before decoding them. Decoded images are
written tagged sRGB (`save_image`), in the lossless format their extension names.
Kodak is for evaluation only; BSDS500 is for training.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from lic_utils.errors import LicError
from lic_utils.files import DATA_DIR, REPO

MANIFEST = DATA_DIR / "manifest.csv"
# The largest image any command reads, compresses or decodes (4096×4096). At the limit `compress` and
# `decompress` peak at ≈ 3 GB of memory (the cpu profile's hyperprior) and `metrics` at ≈ 6 GB.
MAX_PIXELS = 1 << 24
SETS = ("kodak", "bsds500", "lpips")
LPIPS_BACKBONE = "lpips/alexnet_features_imagenet1k_v1.pth"

# Sources are the manifest's url column (provenance and licences: ../shared/data/README.md, README.md).
# The LPIPS backbone is torchvision's AlexNet ImageNet weights, reduced to `.features` (see _fetch_url).
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def fix_command(set_name: str) -> str:
    return f"python -m lic_utils data fetch {set_name}"


@dataclass(frozen=True)
class Entry:
    set: str
    path: str  # relative to the data root, e.g. "kodak/kodim01.png"
    size: int
    sha256: str
    url: str


# --- manifest ---------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def manifest() -> dict[str, Entry]:
    """All files the study knows, keyed by relative path."""
    if not MANIFEST.exists():
        raise LicError(f"manifest {MANIFEST} is missing; it is part of the repository (git checkout -- data/manifest.csv)")
    with open(MANIFEST, newline="") as f:
        rows = [Entry(r["set"], r["path"], int(r["size"]), r["sha256"], r["url"]) for r in csv.DictReader(f)]
    return {e.path: e for e in rows}


def entries(sets=None) -> list[Entry]:
    sets = SETS if sets is None else tuple(sets)
    unknown = set(sets) - set(SETS)
    if unknown:
        raise LicError(f"unknown data set(s) {sorted(unknown)}; choose from {list(SETS)}")
    return [e for e in manifest().values() if e.set in sets]


# --- resolving and verifying ------------------------------------------------------------------------
def mirror_dir() -> Path | None:
    """`$LIC_DATA_MIRROR`, else `../shared/data` beside the checkout if it exists, else None."""
    env = os.environ.get("LIC_DATA_MIRROR")
    if env:
        return Path(env).expanduser()
    default = REPO.parent / "shared" / "data"
    return default if default.is_dir() else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_verified: dict[tuple, bool] = {}


def _check(path: Path, entry: Entry, mirror: bool = False) -> None:
    """Raise a LicError unless `path` has the manifest's sha256 (memoised on path, size and mtime).

    The fix named for a copy in the mirror leaves the mirror alone (it is shared, often read-only):
    `data fetch` then downloads a verified copy into the project's data/ folder.
    """
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if _verified.get(key):
        return
    actual = sha256_file(path)
    if actual != entry.sha256:
        fix = (f"run `{fix_command(entry.set)}` to download a verified copy into {DATA_DIR}, or set "
               "LIC_DATA_MIRROR to an intact mirror" if mirror else
               f"delete it and run `{fix_command(entry.set)}`")
        raise LicError(f"{path} is corrupted: sha256 {actual}, expected {entry.sha256} "
                       f"(manifest data/manifest.csv). Fix: {fix}")
    _verified[key] = True


def _entry(rel: str) -> Entry:
    try:
        return manifest()[rel]
    except KeyError:
        raise LicError(f"{rel} is not in data/manifest.csv") from None


def resolve(rel: str, download: bool = True) -> Path:
    """Path of a verified copy of manifest file `rel` (project data/ → mirror → download)."""
    entry = _entry(rel)
    local = DATA_DIR / rel
    if local.exists():
        _check(local, entry)
        return local
    mirror = mirror_dir()
    if mirror is not None and (mirror / rel).exists():
        _check(mirror / rel, entry, mirror=True)
        return mirror / rel
    if not download:
        raise LicError(
            f"{rel} not found in {DATA_DIR} nor in the mirror {mirror or '(none: set LIC_DATA_MIRROR)'}. "
            f"Fix: run `{fix_command(entry.set)}`"
        )
    _download(entry, local)
    return local


def _download(entry: Entry, dest: Path) -> None:
    """Fetch `entry` from its canonical URL into `dest`, verified before it is moved into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        # The temporary file carries the final name: torch.save records it inside the archive.
        tmp_file = Path(tmp) / dest.name
        try:
            if entry.path == LPIPS_BACKBONE:
                _fetch_alexnet_features(tmp_file)
            else:
                with urllib.request.urlopen(entry.url, timeout=60) as r, open(tmp_file, "wb") as f:
                    shutil.copyfileobj(r, f)
        except OSError as e:
            raise LicError(
                f"{entry.path} is not in {DATA_DIR} nor in a mirror, and downloading {entry.url} failed ({e}). "
                f"Fix: set LIC_DATA_MIRROR to a folder holding it, or retry `{fix_command(entry.set)}` online"
            ) from None
        _check(tmp_file, entry)
        os.replace(tmp_file, dest)


def _fetch_alexnet_features(out: Path) -> None:
    """torchvision's AlexNet weights → the `.features` state_dict that LPIPS needs (same bytes as the mirror's)."""
    with tempfile.NamedTemporaryFile(suffix=".pth") as full:
        with urllib.request.urlopen(ALEXNET_URL, timeout=120) as r:
            shutil.copyfileobj(r, full)
        full.flush()
        sd = torch.load(full.name, map_location="cpu")
    features = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    torch.save(features, out)


def fetch(sets=None, progress: bool = True) -> list[Path]:
    """Make verified copies of the sets in the project's data/ folder (from the mirror or the web).

    A corrupted local copy is replaced; a corrupted mirror copy is left alone and downloaded instead.
    Returns the local paths.
    """
    from tqdm.auto import tqdm

    out = []
    mirror = mirror_dir()
    for entry in tqdm(entries(sets), desc="fetch", unit="file", disable=not progress):
        local = DATA_DIR / entry.path
        if local.exists():
            if _intact(local, entry):
                out.append(local)
                continue
            local.unlink()
        source = mirror / entry.path if mirror is not None else None
        if source is not None and source.exists() and _intact(source, entry):
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, local)
        else:
            _download(entry, local)
        out.append(local)
    return out


def _intact(path: Path, entry: Entry) -> bool:
    try:
        _check(path, entry)
        return True
    except LicError:
        return False


def verify(sets=None, progress: bool = True) -> int:
    """Resolve and check every file of the sets; raises on the first missing or corrupted one."""
    from tqdm.auto import tqdm

    todo = entries(sets)
    for entry in tqdm(todo, desc="verify", unit="file", disable=not progress):
        resolve(entry.path, download=False)
    return len(todo)


# --- images -----------------------------------------------------------------------------------------
def load_rgb(path, background: str | None = None, first_frame: bool = False, notes: list | None = None,
             name: str | None = None) -> np.ndarray:
    """Read any image Pillow (with pillow-heif and pillow-jxl-plugin) opens as an H×W×3 uint8 sRGB array.

    `path` is a path or a binary file (then `name` names it in messages). Conversions are explicit:
    an embedded colour profile other than sRGB is converted to sRGB as a colour-managed viewer
    shows it (Pillow's ImageCms; `notes` gets one line saying so), 16-bit and float images are scaled
    to 8 bits, palette and grayscale images are expanded to RGB, EXIF orientation is applied. What a
    .lic file cannot hold is refused with the flag that accepts it: transparency (composited over
    `background`, a colour such as "white" or "#808080", when given; a fully opaque alpha plane holds
    nothing and passes) and animation (its first frame with `first_frame`).
    """
    name = name or path
    register_formats()
    try:
        with warnings.catch_warnings():  # Pillow's own, far larger, limit: refused like ours
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                check_image_size(*im.size, name)
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and not first_frame:
                    raise LicError(f"{name} is an animation of {frames} frames, and a .lic file holds one "
                                   "image: pass --first-frame to code its first frame")
                icc = im.info.get("icc_profile")
                im = ImageOps.exif_transpose(im)
                return pil_to_rgb(im, background=background, icc=icc, notes=notes, name=name)
    except FileNotFoundError:
        raise LicError(f"{name}: no such file") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise LicError(f"{name} has more than {MAX_PIXELS} pixels (the limit, 4096×4096): "
                       "crop or downscale it") from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # (pillow-heif)
        raise LicError(f"{name} is not an image Pillow can read ({e})") from None


def check_image_size(width: int, height: int, name) -> None:
    """Refuse an image over MAX_PIXELS (before it is decoded)."""
    if width * height > MAX_PIXELS:
        raise LicError(f"{name} is {width}×{height} = {width * height} pixels, more than the limit of "
                       f"{MAX_PIXELS} (4096×4096): crop or downscale it")


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def pil_to_rgb(im: Image.Image, background: str | None = None, icc: bytes | None = None,
               notes: list | None = None, name="the image") -> np.ndarray:
    """A decoded Pillow image as H×W×3 uint8 sRGB (load_rgb's conversions; `icc`: its embedded profile)."""
    alpha = None
    if im.mode in ALPHA_MODES or "transparency" in im.info:  # alpha planes, palette and colour keys
        alpha = np.array(im.convert("RGBA"))[..., 3]
        if alpha.min() == 255:
            alpha = None  # opaque everywhere: nothing to keep
        elif background is None:
            share = float((alpha < 255).mean())
            raise LicError(f"{name} has transparency ({share:.1%} of its pixels), which a .lic file does not "
                           "keep: pass --background COLOR (e.g. white) to composite it over that colour")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F" and a.max() <= 1.0:
            scale = 1.0
        im = Image.fromarray(np.clip(np.round(a / scale * 255.0), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("1", "LA", "La"):
        im = im.convert("L")
    elif im.mode not in ("L", "RGB", "CMYK"):  # palettes (their colour keys too), RGBA, YCbCr, …
        im = im.convert("RGBA").convert("RGB")
    rgb = to_srgb(im, icc, notes, name) if icc else im.convert("RGB")
    if alpha is not None:
        from PIL import ImageColor

        try:
            under = np.array(ImageColor.getrgb(background)[:3], dtype=np.float64)
        except ValueError:
            raise LicError(f"--background {background!r} is not a colour: use a name (white) or #rrggbb") from None
        a = alpha[..., None].astype(np.float64) / 255.0
        return np.round(np.asarray(rgb, dtype=np.float64) * a + under * (1 - a)).astype(np.uint8)
    return np.array(rgb, dtype=np.uint8)


SRGB_INTENT = 0  # ImageCms.Intent.PERCEPTUAL, what colour-managed viewers apply by default


def to_srgb(im: Image.Image, icc: bytes, notes: list | None = None, name="the image") -> Image.Image:
    """An L, RGB or CMYK image with its embedded ICC profile → RGB in sRGB (Pillow's ImageCms, littleCMS).
    A profile that is sRGB already is left alone; a conversion adds one line to `notes`."""
    import io

    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        described = (ImageCms.getProfileDescription(source) or "unnamed").strip()
        if "srgb" in described.lower():
            return im.convert("RGB")
        out = ImageCms.profileToProfile(im, source, srgb_profile(), renderingIntent=SRGB_INTENT,
                                        outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        raise LicError(f"{name}: its embedded colour profile cannot be applied ({e}); if its pixels are "
                       "sRGB, remove the profile (e.g. exiftool -icc_profile= FILE)") from None
    if notes is not None:
        notes.append(f"{name}: converted from its colour profile ({described}) to sRGB")
    return out


@lru_cache(maxsize=1)
def srgb_profile():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def register_formats() -> None:
    """Let Pillow open .heic/.heif (pillow-heif) and .jxl (pillow-jxl-plugin) files."""
    import pillow_heif
    import pillow_jxl  # noqa: F401  (registers JPEG XL on import)

    pillow_heif.register_heif_opener()


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×H×W float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1×)3×H×W float in [0, 1] → H×W×3 uint8, rounded (what a decoder writes to a PNG)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError("to_uint8 takes one image")
        x = x[0]
    return x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# The formats a decoded image is written in, by extension: lossless ones only (a lossy one would add
# a second loss to the codec's, unseen). Without a known extension (/dev/stdout, a pipe): PNG.
LOSSLESS_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".ppm": "PPM",
                    ".pnm": "PPM", ".webp": "WEBP"}
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".avif", ".heic", ".heif", ".jp2", ".j2k", ".jxl", ".gif")
FORMAT_MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "TIFF": (b"II*\x00", b"MM\x00*"), "BMP": b"BM", "PPM": b"P6",
                "WEBP": b"RIFF"}


def image_format(path: str | os.PathLike) -> str:
    """The lossless format an output's extension names (PNG where it names none), or a one-line refusal."""
    suffix = Path(path).suffix.lower()
    if suffix in LOSSY_SUFFIXES:
        raise LicError(f"{path}: {suffix} is a lossy (or 256-colour) format, which would add its own loss to "
                       f"the decoded image: write {Path(path).with_suffix('.png').name} and convert that if you "
                       "need to")
    if suffix and suffix not in LOSSLESS_FORMATS and not str(path).startswith("/dev/"):
        raise LicError(f"{path}: unknown image extension {suffix}: use one of "
                       f"{', '.join(sorted(LOSSLESS_FORMATS))}")
    return LOSSLESS_FORMATS.get(suffix, "PNG")


def encode_image_file(img: np.ndarray, fmt: str = "PNG") -> bytes:
    """An H×W×3 uint8 sRGB image as the bytes of a lossless file, tagged sRGB (PNG's sRGB chunk, an
    sRGB ICC profile in the others), so that colour-managed viewers show what the codec decoded."""
    import io

    from PIL import PngImagePlugin

    buf, im = io.BytesIO(), Image.fromarray(img)
    if fmt == "PNG":
        tag = PngImagePlugin.PngInfo()
        tag.add(b"sRGB", b"\x00")  # rendering intent: perceptual
        im.save(buf, format="PNG", pnginfo=tag)
    elif fmt == "WEBP":
        im.save(buf, format="WEBP", lossless=True, exact=True, icc_profile=srgb_profile().tobytes())
    elif fmt == "TIFF":
        im.save(buf, format="TIFF", icc_profile=srgb_profile().tobytes())
    else:  # BMP and PPM carry no profile: sRGB is what readers assume of them
        im.save(buf, format=fmt)
    return buf.getvalue()


def save_image(img: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a decoded image, atomically, in the lossless format its extension names (image_format)."""
    from lic_utils.files import atomic_write_bytes

    atomic_write_bytes(path, encode_image_file(img, image_format(path)))
    return Path(path)


def save_png(img: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an H×W×3 uint8 image as a PNG tagged sRGB, atomically."""
    from lic_utils.files import atomic_write_bytes

    atomic_write_bytes(path, encode_image_file(img, "PNG"))
    return Path(path)


# --- the two sets -----------------------------------------------------------------------------------
def _paths(prefix: str) -> list[Path]:
    return [resolve(rel) for rel in sorted(manifest()) if rel.startswith(prefix)]


def kodak_paths() -> list[Path]:
    """The 24 Kodak PNGs, verified: the evaluation set (never used for training)."""
    return _paths("kodak/")


def bsds500_paths(splits=("train", "val", "test")) -> list[Path]:
    """BSDS500 JPEGs of the given splits, verified: the training set."""
    return [p for s in splits for p in _paths(f"bsds500/{s}/")]


def lpips_reference_paths() -> dict[str, Path]:
    return {n: resolve(f"lpips/reference/{n}.png") for n in ("ex_ref", "ex_p0", "ex_p1")}


class KodakDataset(Dataset):
    """Full Kodak images with their names: `(name, 3×H×W float tensor in [0, 1])`."""

    def __init__(self, limit: int | None = None, paths=None):
        self.paths = list(paths if paths is not None else kodak_paths())[:limit]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        p = Path(self.paths[i])
        return p.stem, to_tensor(load_rgb(p))[0]


class CropDataset(Dataset):
    """Random `crop`×`crop` patches with random horizontal/vertical flips, as float tensors in [0, 1].

    Decoded images are kept in memory (BSDS500 is ≈230 MB as uint8), so an epoch costs no JPEG
    decoding. `length` sets how many crops make one epoch (default: one per image). Images smaller
    than the crop are padded by reflection.
    """

    def __init__(self, paths=None, crop: int = 128, flips: bool = True, length: int | None = None):
        self.paths = list(paths if paths is not None else bsds500_paths())
        if not self.paths:
            raise LicError("CropDataset got no images")
        self.crop, self.flips = crop, flips
        self.length = length or len(self.paths)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = load_rgb(self.paths[i])
        return self._cache[i]

    def __getitem__(self, index: int) -> torch.Tensor:
        # Randomness comes from torch's generator so that seeding torch makes runs reproducible.
        g = torch.randint(0, 1 << 30, (4,)).tolist()
        img = self.image(index % len(self.paths))
        h, w, _ = img.shape
        c = self.crop
        if h < c or w < c:
            img = np.pad(img, ((0, max(0, c - h)), (0, max(0, c - w)), (0, 0)), mode="reflect")
            h, w, _ = img.shape
        top, left = g[0] % (h - c + 1), g[1] % (w - c + 1)
        patch = img[top : top + c, left : left + c]
        if self.flips and g[2] % 2:
            patch = patch[:, ::-1]
        if self.flips and g[3] % 2:
            patch = patch[::-1]
        return to_tensor(patch)[0]
