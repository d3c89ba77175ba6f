"""Measure codecs on Kodak with real files: one row per (image, codec, setting), cached in CSV.

Every number comes from real bytes: bpp = 8·file size / pixels, and the metrics are computed on the
decoded 8-bit image (lic_utils.metrics). Results are written atomically as they are produced, so an
interrupted sweep resumes where it stopped and a finished one is not measured again.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lic_utils import metrics
from lic_utils.files import atomic_to_csv

# Quality grids of the classical sweeps, spanning about 0.05–1.5 bpp on Kodak.
BASELINE_QUALITIES = {
    "jpeg": [5, 8, 12, 20, 30, 45, 60, 75, 85],
    "webp": [0, 5, 12, 25, 40, 55, 70, 80, 90],
    "avif": [5, 15, 22, 30, 38, 45, 55, 65, 75],
    "heic": [5, 10, 15, 20, 25, 30, 37, 45, 55],
    "jpeg2000": [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.1, 1.5],
}
SWEEP_KEY = ["image", "codec", "quality"]


def kodak_images(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) for the first `limit` Kodak images (all 24 by default)."""
    from lic_utils import data

    return [(p.stem, data.load_rgb(p)) for p in data.kodak_paths()[:limit]]


def measure(ref: np.ndarray, payload: bytes, decoded: np.ndarray) -> dict:
    """bpp of a real payload and the three metrics of its decoded image."""
    h, w, _ = ref.shape
    return {"bytes": len(payload), "bpp": len(payload) * 8 / (h * w), **metrics.evaluate_arrays(ref, decoded)}


def _select(grid: dict[str, list], codecs_: list[str] | None, n_qualities: int | None) -> dict[str, list]:
    """Restrict the sweep grid to some codecs and, evenly spread, `n_qualities` settings each."""
    grid = {c: q for c, q in grid.items() if codecs_ is None or c in codecs_}
    if n_qualities is None:
        return grid
    return {c: [q[i] for i in np.linspace(0, len(q) - 1, n_qualities).round().astype(int)] for c, q in grid.items()}


def codec_sweep(images: list[tuple[str, np.ndarray]], grid: dict[str, list] | None = None,
                codecs_: list[str] | None = None, n_qualities: int | None = None,
                cache: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Every image at every (codec, quality) of the grid: bytes, bpp, PSNR, MS-SSIM, LPIPS, timings.

    `cache` is a CSV: rows already in it are reused, new rows are appended atomically every few images.
    """
    from tqdm.auto import tqdm

    from lic_utils import codecs

    grid = _select(grid or BASELINE_QUALITIES, codecs_, n_qualities)
    done = pd.read_csv(cache) if cache is not None and Path(cache).exists() else pd.DataFrame(columns=SWEEP_KEY)
    have = set(map(tuple, done[SWEEP_KEY].astype(str).values))
    todo = [(name, img, c, q) for name, img in images for c, qs in grid.items() for q in qs
            if (name, c, str(q)) not in have]
    rows = []
    for i, (name, img, c, q) in enumerate(tqdm(todo, desc="codec sweep", unit="file", disable=not progress)):
        codec = codecs.CODECS[c]
        t0 = time.perf_counter()
        payload = codec.encode(img, q)
        t1 = time.perf_counter()
        decoded = codec.decode(payload)
        t2 = time.perf_counter()
        rows.append({"image": name, "codec": c, "quality": q, **measure(img, payload, decoded),
                     "encode_ms": 1e3 * (t1 - t0), "decode_ms": 1e3 * (t2 - t1)})
        if cache is not None and (i % 20 == 19 or i == len(todo) - 1):
            done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if len(done) else pd.DataFrame(rows)
            rows = []
            atomic_to_csv(done, cache)
    if rows:
        done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if len(done) else pd.DataFrame(rows)
    names = {n for n, _ in images}
    keep = done["image"].isin(names) & done["codec"].isin(list(grid))
    return done[keep].reset_index(drop=True)


def mean_curve(df: pd.DataFrame, by=("codec", "quality")) -> pd.DataFrame:
    """Mean over images of bpp and metrics for each setting: one RD point per (codec, quality)."""
    cols = [c for c in ("bytes", "bpp", "psnr", "ms_ssim", "lpips", "encode_ms", "decode_ms") if c in df]
    out = df.groupby(list(by), sort=False)[cols].mean().reset_index()
    out["ms_ssim_db"] = metrics.ms_ssim_db(out["ms_ssim"].to_numpy())
    out["n_images"] = df.groupby(list(by), sort=False).size().to_numpy()
    return out.sort_values(list(by[:-1]) + ["bpp"]).reset_index(drop=True)


# --- Bjøntegaard deltas ------------------------------------------------------------------------------
# Quality axes for BD: higher must be better, so LPIPS enters negated and MS-SSIM in dB.
BD_METRICS = {"psnr": ("psnr", 1.0), "ms_ssim_db": ("ms_ssim_db", 1.0), "lpips": ("lpips", -1.0)}


def bd_rate_quality(anchor: pd.DataFrame, test: pd.DataFrame, metric: str = "psnr") -> dict[str, float]:
    """BD-rate (% bits saved by `test` at equal quality; negative = test is better) and BD-quality
    (quality gained at equal rate, in the metric's units; for LPIPS, the LPIPS *reduction*),
    with piecewise cubic (pchip) interpolation over the overlapping range (bjontegaard package).

    `anchor` and `test` are RD curves with columns `bpp` and the metric (one row per point, ≥ 4 points
    each for a cubic fit; fewer give NaN). Curves that do not overlap give NaN.
    """
    import bjontegaard as bd

    column, sign = BD_METRICS[metric]
    pts = []
    for df in (anchor, test):
        df = df.dropna(subset=["bpp", column]).sort_values("bpp")
        pts.append((df["bpp"].to_numpy(float), sign * df[column].to_numpy(float)))
    (ra, qa), (rt, qt) = pts
    out = {"bd_rate": np.nan, "bd_quality": np.nan}
    if min(len(ra), len(rt)) < 4:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, fn in (("bd_rate", bd.bd_rate), ("bd_quality", bd.bd_psnr)):
            try:
                out[key] = float(fn(ra, qa, rt, qt, method="pchip", require_matching_points=False))
            except (ValueError, ZeroDivisionError, AssertionError):
                pass
    return out


# --- learned models with real .lic files -------------------------------------------------------------
def resolve_checkpoint(run_or_checkpoint: str | Path) -> tuple[str, Path]:
    """(model name, checkpoint path) of a run folder (its checkpoint.pt) or a checkpoint file."""
    from lic_utils.errors import LicError

    p = Path(run_or_checkpoint)
    ckpt = p / "checkpoint.pt" if p.is_dir() else p
    if not ckpt.is_file():
        raise LicError(f"{run_or_checkpoint}: no checkpoint found (expected a run folder with checkpoint.pt, or a .pt file)")
    name = ckpt.parent.name if ckpt.name == "checkpoint.pt" else ckpt.stem
    return name, ckpt


def _run_settings(ckpt: Path) -> dict:
    """The training settings recorded beside a checkpoint (config.json of its run), for the tables."""
    import json

    cfg_file = ckpt.parent / "config.json"
    if not cfg_file.exists():
        return {}
    cfg = json.loads(cfg_file.read_text())
    cfg = cfg.get("train", cfg) if isinstance(cfg, dict) else {}
    keep = ("prior", "quantizer", "channel_scale", "N", "M", "lmbda", "beta", "gamma", "steps", "profile")
    return {k: cfg[k] for k in keep if k in cfg}


def _load_cache(cache: Path | None) -> pd.DataFrame:
    return pd.read_csv(cache) if cache is not None and Path(cache).exists() else pd.DataFrame()


def _save_rows(cache: Path | None, done: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    if rows:
        done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if len(done) else pd.DataFrame(rows)
        if cache is not None:
            atomic_to_csv(done, cache)
    return done


def evaluate_model(run_or_checkpoint, images: list[tuple[str, np.ndarray]], cache: str | Path | None = None,
                   lic_dir: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Compress every image to a real .lic file with the model, decode it, and measure.

    One row per image: bytes, bpp (from the file), PSNR, MS-SSIM, LPIPS, encode/decode ms. Rows are
    cached by the checkpoint's sha256, so an unchanged checkpoint is never evaluated twice.
    """
    import torch
    from tqdm.auto import tqdm

    from lic_utils import bitstream, data, models

    name, ckpt = resolve_checkpoint(run_or_checkpoint)
    digest = data.sha256_file(ckpt)[:16]
    done = _load_cache(cache)
    have = set(done["image"][done["checkpoint_sha"] == digest]) if len(done) else set()
    todo = [(n, img) for n, img in images if n not in have]
    rows = []
    if todo:
        model = models.load_checkpoint(ckpt).eval()
        settings = _run_settings(ckpt)
        for n, img in tqdm(todo, desc=f"evaluate {name}", unit="image", disable=not progress):
            x = data.to_tensor(img)
            with torch.inference_mode():
                t0 = time.perf_counter()
                payload = bitstream.encode_image(model, x)
                t1 = time.perf_counter()
                x_hat = bitstream.decode_image(model, payload)
                t2 = time.perf_counter()
            if lic_dir is not None:
                from lic_utils.files import atomic_write_bytes

                atomic_write_bytes(Path(lic_dir) / name / f"{n}.lic", payload)
            rows.append({"model": name, "checkpoint_sha": digest, "checkpoint": str(ckpt), **settings, "image": n,
                         **measure(img, payload, data.to_uint8(x_hat)),
                         "encode_ms": 1e3 * (t1 - t0), "decode_ms": 1e3 * (t2 - t1)})
        done = _save_rows(cache, done, rows)
    names = {n for n, _ in images}
    return done[(done["checkpoint_sha"] == digest) & done["image"].isin(names)].reset_index(drop=True)


def matched_codecs(learned: pd.DataFrame, images: list[tuple[str, np.ndarray]], codecs_: list[str] | None = None,
                   cache: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """For every learned (model, image) row, every classical codec set to the same file size, not above.

    The comparison is per image at equal bytes: `codecs.match_bitrate(image, codec, learned bpp)`.
    Rows carry the learned model's name and bpp (`target_bpp`) and `below_floor` when the codec
    cannot make a file that small. Cached by (checkpoint_sha, image, codec).
    """
    from tqdm.auto import tqdm

    from lic_utils import codecs

    codecs_ = codecs_ or list(codecs.CODECS)
    by_name = dict(images)
    done = _load_cache(cache)
    have = set(zip(done["checkpoint_sha"], done["image"], done["codec"])) if len(done) else set()
    todo = [(r, c) for r in learned.itertuples() for c in codecs_ if (r.checkpoint_sha, r.image, c) not in have]
    rows = []
    for i, (r, c) in enumerate(tqdm(todo, desc="matched bitrates", unit="file", disable=not progress)):
        img = by_name[r.image]
        with warnings.catch_warnings():  # a target below the codec's floor is recorded in the row instead
            warnings.simplefilter("ignore", codecs.BitrateFloorWarning)
            m = codecs.match_bitrate(img, c, r.bpp)
        rows.append({"model": r.model, "checkpoint_sha": r.checkpoint_sha, "image": r.image, "codec": c,
                     "quality": m.quality, "target_bpp": r.bpp, "below_floor": m.below_floor,
                     **measure(img, m.data, m.decoded)})
        if cache is not None and i % 10 == 9:
            done, rows = _save_rows(cache, done, rows), []
    done = _save_rows(cache, done, rows)
    keys = set(zip(learned["checkpoint_sha"], learned["image"]))
    keep = [k in keys for k in zip(done["checkpoint_sha"], done["image"])] if len(done) else []
    return done[keep].reset_index(drop=True) if len(done) else done

