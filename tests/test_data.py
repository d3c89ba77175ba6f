"""Data: the manifest catches corruption, the resolver's order, and explicit 8-bit RGB conversion."""
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lic_utils import data
from lic_utils.cli import main
from lic_utils.errors import LicError

KODIM01 = "kodak/kodim01.png"


@pytest.fixture
def project_data(tmp_path, monkeypatch):
    """An empty project data/ folder and an empty mirror, so each test builds the state it needs."""
    local, mirror = tmp_path / "data", tmp_path / "mirror"
    local.mkdir(), mirror.mkdir()
    real_mirror = data.mirror_dir()
    monkeypatch.setattr(data, "DATA_DIR", local)
    monkeypatch.setenv("LIC_DATA_MIRROR", str(mirror))
    return local, mirror, real_mirror


def _corrupt(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_manifest_lists_every_file_with_checksum_and_source():
    m = data.manifest()
    assert sum(e.set == "kodak" for e in m.values()) == 24
    assert sum(e.set == "bsds500" for e in m.values()) == 500
    assert data.LPIPS_BACKBONE in m
    for e in m.values():
        assert len(e.sha256) == 64 and e.size > 0 and e.url.startswith("http")
    assert m[KODIM01].url == "http://r0k.us/graphics/kodak/kodak/kodim01.png"


def test_corrupted_local_copy_is_caught_with_the_fix(project_data):
    local, _, real_mirror = project_data
    (local / "kodak").mkdir()
    shutil.copy(real_mirror / KODIM01, local / KODIM01)
    assert data.resolve(KODIM01) == local / KODIM01  # the local copy comes first
    _corrupt(local / KODIM01)
    with pytest.raises(LicError) as err:
        data.resolve(KODIM01)
    msg = str(err.value)
    assert "kodim01.png" in msg and data.manifest()[KODIM01].sha256 in msg
    assert data.sha256_file(local / KODIM01) in msg
    assert "python -m lic_utils data fetch kodak" in msg


def test_corrupted_mirror_copy_is_caught_and_left_alone(project_data, monkeypatch):
    """The mirror is shared and often read-only: the fix is a download into data/, which
    `data fetch` makes when the mirror's copy is corrupted."""
    local, mirror, real_mirror = project_data
    (mirror / "kodak").mkdir()
    shutil.copy(real_mirror / KODIM01, mirror / KODIM01)
    assert data.resolve(KODIM01) == mirror / KODIM01
    _corrupt(mirror / KODIM01)
    with pytest.raises(LicError, match="corrupted") as err:
        data.resolve(KODIM01)
    assert "delete" not in str(err.value) and "python -m lic_utils data fetch kodak" in str(err.value)
    downloads = []

    def download(entry, dest):  # offline: the real mirror stands in for the web
        downloads.append(entry.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_mirror / entry.path, dest)

    monkeypatch.setattr(data, "_download", download)
    data.fetch(["kodak"], progress=False)
    assert KODIM01 in downloads and data.resolve(KODIM01) == local / KODIM01
    assert data.sha256_file(mirror / KODIM01) != data.manifest()[KODIM01].sha256  # untouched


def test_missing_file_names_the_fix(project_data):
    with pytest.raises(LicError, match="data fetch kodak"):
        data.resolve(KODIM01, download=False)


def test_fetch_copies_from_mirror_and_replaces_a_corrupted_copy(project_data, monkeypatch):
    local, _, real_mirror = project_data
    monkeypatch.setenv("LIC_DATA_MIRROR", str(real_mirror))
    paths = data.fetch(["lpips"], progress=False)
    assert len(paths) == 4 and all(p.is_relative_to(local) for p in paths)
    ref = local / "lpips/reference/ex_ref.png"
    _corrupt(ref)
    data.fetch(["lpips"], progress=False)
    assert data.sha256_file(ref) == data.manifest()["lpips/reference/ex_ref.png"].sha256
    assert data.verify(["lpips"], progress=False) == 4


def test_data_cli_verify(capsys):
    assert main(["data", "verify", "kodak"]) == 0
    assert "24 files verified" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("L", 200, (200, 200, 200)),
        ("1", 1, (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 257 * 100, (100, 100, 100)),
        ("I", 30000, (117, 117, 117)),
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),  # an opaque alpha plane holds nothing: accepted
        ("LA", (50, 255), (50, 50, 50)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ],
)
def test_odd_modes_become_8bit_rgb(tmp_path, mode, value, expected):
    path = tmp_path / ("img.tif" if mode in ("CMYK", "I") else "img.png")
    Image.new(mode, (5, 3), value).save(path)
    img = data.load_rgb(path)
    assert img.dtype == np.uint8 and img.shape == (3, 5, 3)
    assert tuple(img[1, 2]) == expected


def test_palette_image_with_an_unused_transparent_colour_is_opaque(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    img = data.load_rgb(tmp_path / "p.png")
    assert img.shape == (4, 4, 3) and tuple(img[0, 0]) == (200, 10, 10)


def transparent_images(tmp_path):
    """The left half transparent, in the three ways PNG says it: an alpha plane, a palette, a colour key."""
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3], rgba[:, 3:, 3] = (10, 120, 30), 255
    rgba[0, 0, 3] = 128  # and one pixel half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    pal = Image.new("P", (6, 4), 1)
    pal.putpalette([0, 0, 0, 10, 120, 30] + [0] * 762)
    pal.paste(0, (0, 0, 3, 4))
    pal.save(tmp_path / "palette.png", transparency=0)
    key = Image.new("RGB", (6, 4), (10, 120, 30))
    key.paste((1, 2, 3), (0, 0, 3, 4))
    key.save(tmp_path / "key.png", transparency=(1, 2, 3))
    return [tmp_path / n for n in ("alpha.png", "palette.png", "key.png")]


def test_transparency_is_refused_unless_a_background_composites_it(tmp_path):
    for path in transparent_images(tmp_path):
        with pytest.raises(LicError, match=r"has transparency \(50\.0% of its pixels\).*--background COLOR"):
            data.load_rgb(path)
        img = data.load_rgb(path, background="#ff00ff")
        assert tuple(img[1, 4]) == (10, 120, 30) and tuple(img[1, 1]) == (255, 0, 255), path.name
    half = data.load_rgb(tmp_path / "alpha.png", background="white")[0, 0]
    assert tuple(half) == (round(10 * 128 / 255 + 255 * 127 / 255), round(120 * 128 / 255 + 255 * 127 / 255),
                           round(30 * 128 / 255 + 255 * 127 / 255))
    with pytest.raises(LicError, match="'nocolour' is not a colour"):
        data.load_rgb(tmp_path / "alpha.png", background="nocolour")


def test_animations_are_refused_unless_the_first_frame_is_asked_for(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    for path in (tmp_path / "a.gif", tmp_path / "a.webp"):
        with pytest.raises(LicError, match="is an animation of 3 frames.*--first-frame"):
            data.load_rgb(path)
        assert tuple(data.load_rgb(path, first_frame=True)[4, 4]) == (200, 0, 0), path.name


def p3_photo(tmp_path):
    """A Kodak crop whose pixels are in Display P3, tagged so (as a phone's photos are)."""
    from icc import display_p3

    crop = Image.open(data.resolve("kodak/kodim23.png")).crop((200, 100, 296, 164))
    crop.save(tmp_path / "p3.png", icc_profile=display_p3())
    return tmp_path / "p3.png", crop


def as_viewer_shows(path) -> np.ndarray:
    """What a colour-managed viewer shows: the image converted from its embedded profile to sRGB."""
    import io

    from PIL import ImageCms

    im = Image.open(path)
    src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
    return np.array(ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB"))


def test_an_embedded_colour_profile_is_converted_to_srgb_and_said(tmp_path):
    path, untagged = p3_photo(tmp_path)
    notes = []
    img = data.load_rgb(path, notes=notes)
    assert np.array_equal(img, as_viewer_shows(path))
    assert np.abs(img.astype(int) - np.array(untagged, dtype=int)).max() > 10  # P3 is not sRGB
    assert notes == [f"{path}: converted from its colour profile (Display P3 (test)) to sRGB"]
    srgb_tagged = tmp_path / "srgb.png"
    untagged.save(srgb_tagged, icc_profile=data.srgb_profile().tobytes())
    notes = []
    assert np.array_equal(data.load_rgb(srgb_tagged, notes=notes), np.array(untagged)) and notes == []


def test_decoded_images_are_written_tagged_srgb_in_the_lossless_format_their_extension_names(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for suffix, fmt in [(".png", "PNG"), (".tif", "TIFF"), (".bmp", "BMP"), (".ppm", "PPM"), (".webp", "WEBP")]:
        path = data.save_image(img, tmp_path / f"out{suffix}")
        with Image.open(path) as im:
            assert im.format == fmt and np.array_equal(np.array(im.convert("RGB")), img), suffix
            assert im.info.get("srgb") == 0 if fmt == "PNG" else True
            if fmt in ("TIFF", "WEBP"):
                from PIL import ImageCms

                profile = ImageCms.ImageCmsProfile(__import__("io").BytesIO(im.info["icc_profile"]))
                assert "sRGB" in ImageCms.getProfileDescription(profile), suffix
    for lossy in ("out.jpg", "out.avif", "out.gif"):
        with pytest.raises(LicError, match="lossy .*write out.png"):
            data.image_format(tmp_path / lossy)
    with pytest.raises(LicError, match="unknown image extension .xyz"):
        data.image_format(tmp_path / "out.xyz")
    assert data.image_format("/dev/stdout") == "PNG"


def test_not_an_image_is_one_clear_error(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(LicError, match="not an image"):
        data.load_rgb(tmp_path / "x.png")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width × height (1-bit gray) but holds no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side, message", [
    (4100, "is 4100×4100 = 16810000 pixels, more than the limit of 16777216"),  # ours
    (12000, "has more than 16777216 pixels"),  # Pillow's DecompressionBombWarning
    (30000, "has more than 16777216 pixels"),  # Pillow's DecompressionBombError
])
def test_image_size_is_checked_from_the_header_before_decoding(tmp_path, side, message):
    """These files hold no pixels: decoding them would fail as truncated, so only a check of the
    header's size gives the size error."""
    (tmp_path / "x.png").write_bytes(png_header(side, side))
    with pytest.raises(LicError, match=message) as err:
        data.load_rgb(tmp_path / "x.png")
    assert "crop or downscale it" in str(err.value) and data.MAX_PIXELS == 4096 * 4096
    (tmp_path / "x.png").write_bytes(png_header(4096, 4096))  # at the limit: decoded (and truncated)
    with pytest.raises(LicError, match="not an image Pillow can read"):
        data.load_rgb(tmp_path / "x.png")


def test_a_truncated_heic_is_one_clear_error(tmp_path):
    import pillow_heif

    rng = np.random.default_rng(0)
    buf = tmp_path / "full.heic"
    pillow_heif.from_pillow(Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))).save(buf)
    blob = buf.read_bytes()
    for n in range(64, len(blob), len(blob) // 20):  # pillow-heif raises ValueError for most of these
        (tmp_path / "cut.heic").write_bytes(blob[:n])
        with pytest.raises(LicError, match="not an image Pillow can read"):
            data.load_rgb(tmp_path / "cut.heic")


def test_kodak_dataset_gives_named_full_images():
    ds = data.KodakDataset()
    assert len(ds) == 24
    name, x = ds[0]
    assert name == "kodim01" and x.shape == (3, 512, 768)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_crop_dataset_crops_flips_and_is_seeded():
    paths = data.bsds500_paths(["val"])[:3]
    ds = data.CropDataset(paths, crop=64, length=10)
    torch.manual_seed(0)
    a = torch.stack([ds[i] for i in range(10)])
    torch.manual_seed(0)
    b = torch.stack([ds[i] for i in range(10)])
    assert a.shape == (10, 3, 64, 64) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1 and a.std() > 0.01
    big = data.CropDataset(paths[:1], crop=512)  # larger than the 481×321 image: reflection padding
    assert big[0].shape == (3, 512, 512)


def test_tensor_roundtrip_is_exact(kodim01):
    assert np.array_equal(data.to_uint8(data.to_tensor(kodim01)), kodim01)
