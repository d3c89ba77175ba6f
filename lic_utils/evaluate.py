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


def kodak_images(limit: int | None = None, crop: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) for the first `limit` Kodak images (all 24 by default).

    `crop` keeps a centred crop×crop square, named e.g. `kodim01-c256` so that its rows never mix
    with the full image's in a cache (the smoke profile uses this to stay fast).
    """
    from lic_utils import data

    out = []
    for p in data.kodak_paths()[:limit]:
        img = data.load_rgb(p)
        if crop:
            top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            out.append((f"{p.stem}-c{crop}", np.ascontiguousarray(img[top:top + crop, left:left + crop])))
        else:
            out.append((p.stem, img))
    return out


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
    # qualities come back from the CSV as floats (5.0; JPEG 2000's are fractional): compare as floats
    have = {(str(n), str(c), float(q)) for n, c, q in done[SWEEP_KEY].itertuples(index=False)}
    todo = [(name, img, c, q) for name, img in images for c, qs in grid.items() for q in qs
            if (name, c, float(q)) not in have]
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


def _sync_cache(done: pd.DataFrame, cache: Path | None, current: dict, **labels: dict) -> pd.DataFrame:
    """Cached rows are keyed by checkpoint sha256; `current` maps the checkpoints in use to their run names.

    A renamed or moved run keeps its measurements and takes its current name (and any other `labels`,
    e.g. `checkpoint={sha: path}`); rows under one of those names with another sha are of weights since
    retrained and are dropped, so that tables read from the whole cache (notebook 09, `make figures`)
    never mix old and new weights. The cache is rewritten once, and only when something changed."""
    if not len(done):
        return done
    changed = False
    for column, by_sha in {"model": current, **labels}.items():
        new = done["checkpoint_sha"].map(by_sha).fillna(done[column])
        if (new != done[column]).any():
            done[column], changed = new, True
    superseded = done["model"].isin(set(current.values())) & ~done["checkpoint_sha"].isin(current.keys())
    if superseded.any():
        done, changed = done[~superseded].reset_index(drop=True), True
    if changed and cache is not None:
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
    done = _sync_cache(_load_cache(cache), cache, {digest: name}, checkpoint={digest: str(ckpt)})
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

    The comparison is per image at equal bytes: `codecs.match_bitrate(image, codec, learned bpp)`;
    all targets of one image and codec share their encodes. Rows carry the learned model's name and
    bpp (`target_bpp`) and `below_floor` when the codec cannot make a file that small. Cached by
    (checkpoint_sha, image, codec).
    """
    from tqdm.auto import tqdm

    from lic_utils import codecs

    codecs_ = codecs_ or list(codecs.CODECS)
    by_name = dict(images)
    done = _sync_cache(_load_cache(cache), cache, dict(zip(learned["checkpoint_sha"], learned["model"])))
    have = set(zip(done["checkpoint_sha"], done["image"], done["codec"])) if len(done) else set()
    todo: dict[tuple[str, str], list] = {}  # (image, codec) → learned rows still to match
    for r in learned.itertuples():
        for c in codecs_:
            if (r.checkpoint_sha, r.image, c) not in have:
                todo.setdefault((r.image, c), []).append(r)
    for (image, c), targets in tqdm(todo.items(), desc="matched bitrates", unit="image×codec", disable=not progress):
        img = by_name[image]
        with warnings.catch_warnings():  # a target below the codec's floor is recorded in the row instead
            warnings.simplefilter("ignore", codecs.BitrateFloorWarning)
            matches = codecs.match_bitrates(img, c, [r.bpp for r in targets])
        rows = [{"model": r.model, "checkpoint_sha": r.checkpoint_sha, "image": image, "codec": c,
                 "quality": m.quality, "target_bpp": r.bpp, "below_floor": m.below_floor,
                 **measure(img, m.data, m.decoded)} for r, m in zip(targets, matches)]
        done = _save_rows(cache, done, rows)
    if not len(done):
        return done
    keys = set(zip(learned["checkpoint_sha"], learned["image"]))
    keep = np.array([k in keys for k in zip(done["checkpoint_sha"], done["image"])], dtype=bool)
    return done[keep & done["codec"].isin(codecs_).to_numpy()].reset_index(drop=True)


# --- tables of the study -----------------------------------------------------------------------------
QUALITY = ("psnr", "ms_ssim", "lpips")


def variant_label(beta: float, gamma: float) -> str:
    """Name of a loss variant from its weights: 'mse', '+ms-ssim β=…', '+lpips γ=…'."""
    parts = ["mse"]
    if beta:
        parts.append(f"+ms-ssim β={beta:g}")
    if gamma:
        parts.append(f"+lpips γ={gamma:g}")
    return " ".join(parts)


def family_label(row) -> str:
    """A curve's name: prior, loss variant, and 'no scale' when the per-channel scale is off."""
    label = f"{row['prior']} · {variant_label(row.get('beta', 0) or 0, row.get('gamma', 0) or 0)}"
    return label + (" · no scale" if str(row.get("channel_scale", True)) in ("False", "0", "false") else "")


def learned_points(learned: pd.DataFrame) -> pd.DataFrame:
    """One RD point per model (mean over its images; a model is a checkpoint), labelled with its `family`
    (one curve per family)."""
    numeric = [c for c in ("bytes", "bpp", "psnr", "ms_ssim", "lpips", "encode_ms", "decode_ms") if c in learned]
    settings = [c for c in ("prior", "quantizer", "channel_scale", "N", "M", "lmbda", "beta", "gamma", "steps") if c in learned]
    key = "checkpoint_sha" if "checkpoint_sha" in learned else "model"  # two checkpoints are never averaged together
    first = [c for c in ("model", *settings) if c in learned and c != key]
    pts = learned.groupby(key, sort=False).agg({**{c: "mean" for c in numeric}, **{c: "first" for c in first}})
    pts["n_images"] = learned.groupby(key, sort=False).size()
    pts = pts.reset_index()
    pts["ms_ssim_db"] = metrics.ms_ssim_db(pts["ms_ssim"].to_numpy())
    pts["family"] = pts.apply(family_label, axis=1) if "prior" in pts else pts["model"]
    return pts.sort_values(["family", "bpp"]).reset_index(drop=True)


def bd_table(learned_pts: pd.DataFrame, codec_curves: pd.DataFrame, metrics_=("psnr", "ms_ssim_db", "lpips")) -> pd.DataFrame:
    """BD-rate and BD-quality of every learned family against every codec, per metric (tidy rows).

    Negative BD-rate: the learned curve needs fewer bits for the same quality. Families with fewer than
    four points (single-point ablations) are left out: a cubic fit needs four.
    """
    rows = []
    for fam, pts in learned_pts.groupby("family", sort=False):
        for codec, curve in codec_curves.groupby("codec", sort=False):
            for m in metrics_:
                res = bd_rate_quality(curve, pts, m)
                rows.append({"family": fam, "codec": codec, "metric": m, "n_points": len(pts), **res})
    out = pd.DataFrame(rows)
    return out[out["n_points"] >= 4].reset_index(drop=True) if len(out) else out


def at_bpp(curve: pd.DataFrame, bpp: float, metric: str) -> float:
    """A curve's metric at `bpp`, interpolated linearly in log(bpp); NaN outside the measured range."""
    c = curve.dropna(subset=["bpp", metric]).sort_values("bpp")
    if len(c) < 2 or not c["bpp"].min() <= bpp <= c["bpp"].max():
        return float("nan")
    return float(np.interp(np.log(bpp), np.log(c["bpp"].to_numpy()), c[metric].to_numpy()))


def compare_at(learned_pts: pd.DataFrame, codec_curves: pd.DataFrame, bpps=(0.1, 0.2, 0.3, 0.5)) -> pd.DataFrame:
    """Learned families and codecs side by side at fixed bitrates (interpolated on each RD curve)."""
    rows = []
    curves = [(f, g, "learned") for f, g in learned_pts.groupby("family", sort=False)] + \
             [(c, g, "classical") for c, g in codec_curves.groupby("codec", sort=False)]
    for name, g, kind in curves:
        for b in bpps:
            rows.append({"curve": name, "kind": kind, "bpp": b, **{m: at_bpp(g, b, m) for m in QUALITY}})
    return pd.DataFrame(rows)


def standing(at: pd.DataFrame) -> pd.DataFrame:
    """The best learned curve minus each codec at each bitrate of `compare_at`'s table, metric by metric:
    the best learned curve is chosen per metric (highest PSNR, highest MS-SSIM, lowest LPIPS), so a loss
    variant trained for perception is judged on perception. NaN where no learned curve or the codec's
    curve covers the bitrate."""
    learned, classical = at[at["kind"] == "learned"], at[at["kind"] == "classical"]
    rows = []
    for r in classical.itertuples():
        here = learned[learned["bpp"] == r.bpp]
        row = {"codec": r.curve, "bpp": r.bpp}
        for q, best in (("psnr", "idxmax"), ("ms_ssim", "idxmax"), ("lpips", "idxmin")):
            ok = here.dropna(subset=[q])
            if len(ok) and np.isfinite(getattr(r, q)):
                top = ok.loc[getattr(ok[q], best)()]
                row[f"d_{q}"], row[f"best_{q}"] = top[q] - getattr(r, q), top["curve"]
            else:
                row[f"d_{q}"], row[f"best_{q}"] = np.nan, None
        rows.append(row)
    return pd.DataFrame(rows)


def matched_verdicts(summary: pd.DataFrame, learned_pts: pd.DataFrame, bpp_range=(0.1, 0.5)) -> pd.DataFrame:
    """Where each learned family wins and loses against each codec at equal bytes, image by image.

    From `matched_summary`: a model point counts as a win in a metric when the learned model is better
    on more than half of the images the codec could reach; points where the codec could not make files
    that small for most images are listed apart (`codec_cannot_reach`). Only points whose mean bpp lies
    in `bpp_range` (±10 %) are used. One row per codec × family, bitrates as sorted lists of bpp.
    """
    lo, hi = bpp_range
    key = "checkpoint_sha" if "checkpoint_sha" in summary and "checkpoint_sha" in learned_pts else "model"
    s = summary.merge(learned_pts[[key, "family"]], on=key)
    s = s[s["learned_bpp"].between(0.9 * lo, 1.1 * hi)]
    rows = []
    for (codec, fam), g in s.groupby(["codec", "family"], sort=True):
        g = g.sort_values("learned_bpp")
        reach = g["codec_below_floor"] <= g["images"] / 2
        row = {"codec": codec, "family": fam, "points": len(g),
               "codec_cannot_reach": [round(b, 3) for b in g.loc[~reach, "learned_bpp"]]}
        for q in QUALITY:
            won = reach & (g[f"learned_wins_{q}"] > 0.5)
            row[f"wins_{q}"] = [round(b, 3) for b in g.loc[won, "learned_bpp"]]
            row[f"loses_{q}"] = [round(b, 3) for b in g.loc[reach & ~won, "learned_bpp"]]
            if f"d_{q}" in g:  # the range of the mean differences (learned − codec) over the reachable points
                row[f"d_{q}_min"], row[f"d_{q}_max"] = g.loc[reach, f"d_{q}"].min(), g.loc[reach, f"d_{q}"].max()
        rows.append(row)
    return pd.DataFrame(rows)


def matched_summary(learned: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """Per model and codec, at equal bytes on each image: mean metric differences (learned − codec)
    and the share of images where the learned model is better; images where the codec could not go
    that low are counted separately (`codec_below_floor`)."""
    m = matched.merge(learned[["checkpoint_sha", "image", "bpp", *QUALITY]], on=["checkpoint_sha", "image"],
                      suffixes=("", "_learned"))
    rows = []
    for (sha, codec), g in m.groupby(["checkpoint_sha", "codec"], sort=False):
        ok = g[~g["below_floor"].astype(bool)]
        row = {"model": g["model"].iloc[0], "checkpoint_sha": sha, "codec": codec, "images": len(g),
               "codec_below_floor": int(len(g) - len(ok)),
               "learned_bpp": g["bpp_learned"].mean(), "codec_bpp": ok["bpp"].mean()}
        for q in QUALITY:
            diff = ok[f"{q}_learned"] - ok[q]
            row[f"d_{q}"] = diff.mean()
            row[f"learned_wins_{q}"] = float(((-diff if q == "lpips" else diff) > 0).mean()) if len(ok) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_runs(index: pd.DataFrame, images: list[tuple[str, np.ndarray]], results_dir: str | Path,
                  matched: bool = True, codecs_: list[str] | None = None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Evaluate every finished run of a training index (its `checkpoint` column) on `images`, and
    match every classical codec to each model's bytes. Cached in results_dir/learned_kodak.csv and
    results_dir/matched_kodak.csv. Returns (learned rows, matched rows or None)."""
    results_dir = Path(results_dir)
    runs = [c for c in index["checkpoint"].dropna() if str(c)]
    learned = pd.concat([evaluate_model(c, images, cache=results_dir / "learned_kodak.csv", progress=progress)
                         for c in runs], ignore_index=True)
    match = matched_codecs(learned, images, codecs_, cache=results_dir / "matched_kodak.csv", progress=progress) if matched else None
    return learned, match


def rd_table(learned_pts: pd.DataFrame, codec_curves: pd.DataFrame) -> pd.DataFrame:
    """Learned points and codec curves in one tidy table with a `curve` column, for plots.rd_curves."""
    a = learned_pts.assign(curve=learned_pts["family"], kind="learned")
    b = codec_curves.assign(curve=codec_curves["codec"], kind="classical")
    cols = ["curve", "kind", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "lpips"]
    return pd.concat([a[cols], b[cols]], ignore_index=True)
