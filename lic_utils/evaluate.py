"""Measure codecs on Kodak with real files: one row per (image, codec, setting), cached in CSV.

Every number comes from real bytes: bpp = 8·file size / pixels, and the metrics are computed on the
decoded 8-bit image (lic_utils.metrics). Results are written atomically as they are produced, so an
interrupted sweep resumes where it stopped and a finished one is not measured again.

A learned model is its weights: the caches (learned_kodak.csv, matched_kodak.csv) key its rows on
`fingerprint` (LearnedCodec.fingerprint(), the same 16 hex digits as in its .lic files), and the run
name (`model`), checkpoint path and training settings are labels. So a renamed or moved run keeps
its measurements, and a run retrained to new weights has its old rows under that name replaced,
which keeps one point per run in every table and figure read from a whole cache.

Rows written before fingerprints were recorded (the committed cpu caches carry the sha256 of the
checkpoint file instead, `checkpoint_sha`) have no fingerprint. They are never reused for a checkpoint
(its weights cannot be checked against them): evaluating a run of their name replaces them like a
retrained run's. Until then they stay in the tables and figures, told apart by run name, which was
unique among them (those caches kept one checkpoint per run name). Hence MODEL_KEY below.

A cached row is reused only if it was measured the way this code measures: with every metric of
METRICS (SSIMULACRA2 came last) and, for a classical codec, with the codec's current `settings`
(JPEG became optimised). An older row is dropped when an evaluation would measure it (its model,
or its image and codec in a sweep), and measured again; until then it stays in the tables.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lic_utils import metrics
from lic_utils.files import atomic_to_csv, file_lock

# Quality grids of the classical sweeps, spanning about 0.05–1.5 bpp on Kodak.
BASELINE_QUALITIES = {
    "jpeg": [5, 8, 12, 20, 30, 45, 60, 75, 85],
    "webp": [0, 5, 12, 25, 40, 55, 70, 80, 90],
    "avif": [5, 15, 22, 30, 38, 45, 55, 65, 75],
    "heic": [5, 10, 15, 20, 25, 30, 37, 45, 55],
    "jpeg2000": [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.1, 1.5],
    "jpegxl": [0, 3, 8, 15, 25, 40, 55, 70, 80],
}
SWEEP_KEY = ["image", "codec", "quality"]
# A learned model in the tables: its weights, under its run name (see the module docstring).
MODEL_KEY = ["fingerprint", "model"]
# SSIMULACRA2 is the held-out perceptual metric: no model trains on it (LPIPS is also a loss).
METRICS = ("psnr", "ms_ssim", "lpips", "ssimulacra2")
MEASURES = ("bytes", "bpp", *METRICS, "encode_ms", "decode_ms")
SETTINGS = ("prior", "quantizer", "channel_scale", "N", "M", "lmbda", "beta", "gamma", "steps", "seed")


def kodak_images(limit: int | None = None, crop: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) for the first `limit` Kodak images (all 24 by default).

    `crop` keeps a centred crop×crop square, named e.g. `kodim01-c256` so that its rows never mix
    with the full image's in a cache (the smoke profile uses this to stay fast).
    """
    from lic_utils import data
    from lic_utils.errors import LicError

    paths = data.kodak_paths()
    if limit is not None and not 1 <= limit <= len(paths):
        raise LicError(f"the number of Kodak images must be in 1..{len(paths)}, got {limit}")
    out = []
    for p in paths[:limit]:
        img = data.load_rgb(p)
        if crop:
            top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            square = np.ascontiguousarray(img[top:top + crop, left:left + crop])
            out.append((f"{p.stem}-c{crop}", square))
        else:
            out.append((p.stem, img))
    return out


def measure(ref: np.ndarray, payload: bytes, decoded: np.ndarray) -> dict:
    """bpp of a real payload and the four metrics (METRICS) of its decoded image."""
    h, w, _ = ref.shape
    return {"bytes": len(payload), "bpp": len(payload) * 8 / (h * w),
            **metrics.evaluate_arrays(ref, decoded)}


def _current(done: pd.DataFrame, mine) -> pd.DataFrame:
    """Drop the cached rows that this call would measure (`mine`: a function of the table giving a
    boolean mask) but that were measured otherwise: without a metric of METRICS or, for a classical
    codec, with other `settings`. Other rows are kept as they are. The dropped rows are measured
    again, and the caller's write of those new rows updates the cache once."""
    from lic_utils import codecs

    if not len(done):
        return done
    ok = ~np.asarray(mine(done), dtype=bool)
    measured = pd.Series(True, index=done.index)
    for m in METRICS:
        measured &= done[m].notna() if m in done else False
    if "codec" in done:
        settings = done["settings"] if "settings" in done else pd.Series(None, index=done.index, dtype=object)
        measured &= settings.eq(done["codec"].map({n: c.settings for n, c in codecs.CODECS.items()}))
    ok |= measured.to_numpy()
    return done if ok.all() else done[ok].reset_index(drop=True)


def _select(grid: dict[str, list], codecs_: list[str] | None, n_qualities: int | None
            ) -> dict[str, list]:
    """Restrict the sweep grid to some codecs and, evenly spread, `n_qualities` settings each."""
    grid = {c: q for c, q in grid.items() if codecs_ is None or c in codecs_}
    if n_qualities is None:
        return grid
    return {c: [q[i] for i in np.linspace(0, len(q) - 1, n_qualities).round().astype(int)]
            for c, q in grid.items()}


def _append(done: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    return pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if len(done) else pd.DataFrame(rows)


def _check_workers(workers) -> int:
    from lic_utils.errors import LicError

    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise LicError(f"workers must be an integer of at least 1 (1 measures in this process), got {workers!r}")
    return int(workers)


def _one_torch_thread() -> None:
    """Start a pool worker with one torch thread: processes with several each oversubscribe the cores."""
    import torch

    torch.set_num_threads(1)


def _measured(fn, items: list[tuple], workers: int, desc: str, unit: str, progress: bool):
    """Yield fn(*item) for each item, under a progress bar: in this process, in order, when `workers`
    is 1; else as they finish in `workers` spawned processes (fork would copy torch's thread pools
    into the children, where they do not work), the items not yet started cancelled on an error."""
    from tqdm.auto import tqdm

    if workers == 1 or not items:
        for item in tqdm(items, desc=desc, unit=unit, disable=not progress):
            yield fn(*item)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(min(workers, len(items)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_torch_thread)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)
    try:
        for future in as_completed([pool.submit(fn, *item) for item in items]):
            result = future.result()
            bar.update()
            yield result
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _sweep_row(name: str, img: np.ndarray, c: str, q) -> dict:
    """One item of codec_sweep: encode `img` with codec `c` at quality `q`, decode, and measure."""
    from lic_utils import codecs

    codec = codecs.CODECS[c]
    t0 = time.perf_counter()
    payload = codec.encode(img, q)
    t1 = time.perf_counter()
    decoded = codec.decode(payload)
    t2 = time.perf_counter()
    return {"image": name, "codec": c, "settings": codec.settings, "quality": q,
            **measure(img, payload, decoded),
            "encode_ms": 1e3 * (t1 - t0), "decode_ms": 1e3 * (t2 - t1)}


def codec_sweep(images: list[tuple[str, np.ndarray]], grid: dict[str, list] | None = None,
                codecs_: list[str] | None = None, n_qualities: int | None = None,
                cache: str | Path | None = None, progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """Every image at every (codec, quality) of the grid: bytes, bpp, the METRICS, timings.

    `cache` is a CSV: rows already in it are reused; new rows are merged into it (under its lock, with
    what other processes added) every 20 files and when the sweep ends or is interrupted.
    `workers` > 1 measures the items in that many processes, each with one torch thread (in one
    process one of the 2 cores idles; more threads per process would fight over the cores); the rows
    are the same, the cache written every few finished items, in the order they finish.
    """
    from contextlib import closing

    workers = _check_workers(workers)
    grid = _select(grid or BASELINE_QUALITIES, codecs_, n_qualities)
    cached = cache is not None and Path(cache).exists()
    names = {n for n, _ in images}
    mine = lambda d: d["image"].isin(names) & d["codec"].isin(list(grid))  # noqa: E731
    done = (_current(pd.read_csv(cache, float_precision="round_trip"), mine) if cached
            else pd.DataFrame(columns=SWEEP_KEY))
    # qualities come back from the CSV as floats (5.0; JPEG 2000's are fractional): compare as floats
    have = {(str(n), str(c), float(q)) for n, c, q in done[SWEEP_KEY].itertuples(index=False)}
    todo = [(name, img, c, q) for name, img in images for c, qs in grid.items() for q in qs
            if (name, c, float(q)) not in have]
    rows = []
    try:
        with closing(_measured(_sweep_row, todo, workers, "codec sweep", "file", progress)) as results:
            for i, row in enumerate(results):
                rows.append(row)
                if i % 20 == 19:
                    done, rows = _save_rows(cache, done, rows, SWEEP_KEY), []
    finally:  # the last rows, and those measured before an interruption (Ctrl-C): a rerun resumes
        done = _save_rows(cache, done, rows, SWEEP_KEY)
    return done[mine(done)].reset_index(drop=True)


def mean_curve(df: pd.DataFrame, by=("codec", "quality")) -> pd.DataFrame:
    """Mean over images of bpp and metrics for each setting: one RD point per (codec, quality)."""
    cols = [c for c in MEASURES if c in df]
    groups = df.groupby(list(by), sort=False, dropna=False)
    out = groups[cols].mean().reset_index()
    out["ms_ssim_db"] = metrics.ms_ssim_db(out["ms_ssim"].to_numpy())
    out["n_images"] = groups.size().to_numpy()
    return out.sort_values(list(by[:-1]) + ["bpp"]).reset_index(drop=True)


# --- learned models with real .lic files -------------------------------------------------------------
def resolve_checkpoint(run_or_checkpoint: str | Path) -> tuple[str, Path]:
    """(model name, checkpoint path) of a run folder (its checkpoint.pt) or a checkpoint file."""
    from lic_utils.errors import LicError

    p = Path(run_or_checkpoint)
    ckpt = p / "checkpoint.pt" if p.is_dir() else p
    if not ckpt.is_file():
        raise LicError(f"{run_or_checkpoint}: no checkpoint found "
                       "(expected a run folder with checkpoint.pt, or a .pt file)")
    name = ckpt.parent.name if ckpt.name == "checkpoint.pt" else ckpt.stem
    return name, ckpt


def _run_settings(ckpt: Path, model) -> dict:
    """The label columns of a model's rows: its architecture, and λ, β, γ and steps from the
    config.json of its run (when there is one; nested sections are read flat)."""
    settings = model.config.to_dict()
    cfg_file = ckpt.parent / "config.json"
    if cfg_file.exists():
        flat = {}
        for key, value in json.loads(cfg_file.read_text()).items():
            flat.update(value if isinstance(value, dict) else {key: value})
        settings.update({k: flat[k] for k in SETTINGS if k in flat and k not in settings})
    return settings


def read_rows(path: str | Path) -> pd.DataFrame:
    """A table of model rows (a cache, or a table derived from one) with `fingerprint` as text;
    rows written before fingerprints were recorded get an empty one (see the module docstring)."""
    rows = pd.read_csv(path, dtype={"fingerprint": str}, float_precision="round_trip")  # exact floats
    if "fingerprint" not in rows:
        rows["fingerprint"] = np.nan
    return rows.astype({"fingerprint": object})


def _load_cache(cache: Path | None) -> pd.DataFrame:
    return read_rows(cache) if cache is not None and Path(cache).exists() else pd.DataFrame()


def _save_rows(cache: Path | None, done: pd.DataFrame, rows: list[dict], key: list[str]) -> pd.DataFrame:
    """`rows` added to this call's table and to the cache on disk, under the cache's lock and merged
    with what is there now (another process may have added rows since this one read it); a row
    of the same `key` is replaced."""
    if not rows:
        return done
    done = _append(done, rows)
    if cache is not None:
        with file_lock(cache):
            on_disk = (pd.read_csv(cache, dtype={"fingerprint": str}, float_precision="round_trip")
                       if Path(cache).exists() else pd.DataFrame())
            merged = _append(on_disk, rows).drop_duplicates(key, keep="last") if len(on_disk) else pd.DataFrame(rows)
            atomic_to_csv(merged, cache)
    return done


def _follow_runs(done: pd.DataFrame, cache: Path | None, current: dict, **labels: dict
                 ) -> pd.DataFrame:
    """Bring cached rows up to date with the models in use: `current` maps their fingerprints to
    their run names.

    Rows of those weights take the current name (a renamed or moved run keeps its measurements), and
    any other `labels` (e.g. `checkpoint={fingerprint: path}`); rows under one of those names with
    other weights or none (a retrained run, or rows from before fingerprints) are dropped. The cache
    is rewritten once, and only when something changed."""
    if not len(done):
        return done
    changed = False
    for column, by_fp in {"model": current, **labels}.items():
        old = done[column] if column in done else pd.Series(None, index=done.index, dtype=object)
        new = done["fingerprint"].map(by_fp).fillna(old)
        if not new.equals(old):
            done[column], changed = new, True
    stale = done["model"].isin(set(current.values())) & ~done["fingerprint"].isin(current.keys())
    if stale.any():
        done, changed = done[~stale].reset_index(drop=True), True
    if changed and cache is not None:
        atomic_to_csv(done, cache)
    return done


def evaluate_model(run_or_checkpoint, images: list[tuple[str, np.ndarray]],
                   cache: str | Path | None = None, lic_dir: str | Path | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Compress every image to a real .lic file with the model, decode it, and measure.

    One row per image: bytes, bpp (from the file), the METRICS, encode/decode ms, with the
    model's fingerprint, run name, checkpoint and settings. Rows are cached by fingerprint, so the
    same weights are never evaluated twice on an image, and written as each image finishes: an
    interrupted evaluation resumes there, and evaluations by other processes into the same cache
    keep their rows.
    """
    import torch
    from tqdm.auto import tqdm

    from lic_utils import bitstream, data, models

    name, ckpt = resolve_checkpoint(run_or_checkpoint)
    model = models.load_checkpoint(ckpt).eval()
    fp = model.fingerprint()
    done = _current(_load_cache(cache), lambda d: d["fingerprint"] == fp)
    done = _follow_runs(done, cache, {fp: name}, checkpoint={fp: str(ckpt)})
    have = set(done["image"][done["fingerprint"] == fp]) if len(done) else set()
    todo = [(n, img) for n, img in images if n not in have]
    if todo:
        labels = {"model": name, "fingerprint": fp, "checkpoint": str(ckpt),
                  **_run_settings(ckpt, model)}
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
            row = {**labels, "image": n, **measure(img, payload, data.to_uint8(x_hat)),
                   "encode_ms": 1e3 * (t1 - t0), "decode_ms": 1e3 * (t2 - t1)}
            done = _save_rows(cache, done, [row], [*MODEL_KEY, "image"])  # each image: resumable
    names = {n for n, _ in images}
    return done[(done["fingerprint"] == fp) & done["image"].isin(names)].reset_index(drop=True)


def _matched_rows(image: str, img: np.ndarray, c: str, targets: list[tuple[str, str, float]]
                  ) -> list[dict]:
    """One item of matched_codecs: codec `c` set to each learned file's size on `img`, measured.
    `targets` are the learned rows' (model, fingerprint, bpp)."""
    from lic_utils import codecs

    with warnings.catch_warnings():  # a target below the codec's floor is recorded in the row
        warnings.simplefilter("ignore", codecs.BitrateFloorWarning)
        matches = codecs.match_bitrates(img, c, [bpp for _, _, bpp in targets])
    return [{"model": model, "fingerprint": fp, "image": image, "codec": c,
             "settings": codecs.CODECS[c].settings, "quality": m.quality, "target_bpp": bpp,
             "below_floor": m.below_floor,
             **measure(img, m.data, m.decoded)} for (model, fp, bpp), m in zip(targets, matches)]


def matched_codecs(learned: pd.DataFrame, images: list[tuple[str, np.ndarray]],
                   codecs_: list[str] | None = None, cache: str | Path | None = None,
                   progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """For every learned (model, image) row, every classical codec set to the same file size, not above.

    The comparison is per image at equal bytes: `codecs.match_bitrate(image, codec, learned bpp)`;
    all targets of one image and codec share their encodes. Rows carry the learned model's
    fingerprint, name and bpp (`target_bpp`), and `below_floor` when the codec cannot make a file
    that small. Cached by (fingerprint, image, codec).
    `workers` > 1 matches the (image, codec) groups in that many processes, each with one torch
    thread (in one process one of the 2 cores idles; more threads per process would fight over the
    cores); the rows are the same, the cache written as each group finishes.
    """
    from contextlib import closing

    from lic_utils import codecs

    workers = _check_workers(workers)
    codecs_ = codecs_ or list(codecs.CODECS)
    by_name = dict(images)
    done = _current(_load_cache(cache), lambda d: d["fingerprint"].isin(set(learned["fingerprint"])))
    done = _follow_runs(done, cache, dict(zip(learned["fingerprint"], learned["model"])))
    have = set(zip(done["fingerprint"], done["image"], done["codec"])) if len(done) else set()
    todo: dict[tuple[str, str], list] = {}  # (image, codec) → learned (model, fingerprint, bpp) still to match
    for r in learned.itertuples():
        for c in codecs_:
            if (r.fingerprint, r.image, c) not in have:
                todo.setdefault((r.image, c), []).append((r.model, r.fingerprint, r.bpp))
    items = [(image, by_name[image], c, targets) for (image, c), targets in todo.items()]
    with closing(_measured(_matched_rows, items, workers, "matched bitrates", "image×codec",
                           progress)) as results:
        for rows in results:
            done = _save_rows(cache, done, rows, [*MODEL_KEY, "image", "codec"])
    if not len(done):
        return done
    keys = set(zip(learned["fingerprint"], learned["image"]))
    keep = np.array([k in keys for k in zip(done["fingerprint"], done["image"])], dtype=bool)
    return done[keep & done["codec"].isin(codecs_).to_numpy()].reset_index(drop=True)


def kodak_summary(run_or_checkpoint, images: list[tuple[str, np.ndarray]], cache_dir: str | Path,
                  codecs_: list[str] = ()) -> dict:
    """One model in one row: its fingerprint and mean bpp and METRICS over `images` (real files), and
    each codec's mean bpp, PSNR, LPIPS and SSIMULACRA2 at its bytes (`webp_psnr`, …); evaluations
    cached in cache_dir's learned_kodak.csv and matched_kodak.csv. For the benchmarks' tables."""
    cache_dir = Path(cache_dir)
    learned = evaluate_model(run_or_checkpoint, images, cache=cache_dir / "learned_kodak.csv",
                             progress=False)
    row = {"fingerprint": learned["fingerprint"].iloc[0],
           **learned[["bpp", *METRICS]].mean().to_dict()}
    if codecs_:
        matched = matched_codecs(learned, images, list(codecs_), cache=cache_dir / "matched_kodak.csv",
                                 progress=False)
        for codec, g in matched.groupby("codec"):
            means = g[["bpp", "psnr", "lpips", "ssimulacra2"]].mean()
            row.update({f"{codec}_{k}": v for k, v in means.items()})
    return row


def evaluate_runs(index: pd.DataFrame, images: list[tuple[str, np.ndarray]], results_dir: str | Path,
                  matched: bool = True, codecs_: list[str] | None = None, progress: bool = True,
                  workers: int = 1) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Evaluate every finished run of a training index (its `checkpoint` column) on `images`, and
    match every classical codec to each model's bytes (`workers` processes). Cached in
    results_dir/learned_kodak.csv and results_dir/matched_kodak.csv. Returns (learned rows, matched
    rows or None)."""
    results_dir = Path(results_dir)
    runs = [c for c in index["checkpoint"].dropna() if str(c)]
    learned = pd.concat([evaluate_model(c, images, cache=results_dir / "learned_kodak.csv",
                                        progress=progress) for c in runs], ignore_index=True)
    if not matched:
        return learned, None
    return learned, matched_codecs(learned, images, codecs_, cache=results_dir / "matched_kodak.csv",
                                   progress=progress, workers=workers)


# --- one point per model --------------------------------------------------------------------------
def variant_label(beta: float, gamma: float) -> str:
    """Name of a loss variant from its weights: 'mse', '+ms-ssim β=…', '+lpips γ=…'."""
    parts = ["mse"]
    if beta:
        parts.append(f"+ms-ssim β={beta:g}")
    if gamma:
        parts.append(f"+lpips γ={gamma:g}")
    return " ".join(parts)


def family_label(row, seed: bool = True) -> str:
    """A curve's name: prior, loss variant, 'no scale' when the per-channel scale is off, and the
    seed when it is not 0 (so the seed-spread runs never join the RD curves; `seed=False` leaves it
    out, naming the family the seed belongs to)."""
    weights = [row.get(k) if pd.notna(row.get(k)) else 0 for k in ("beta", "gamma")]
    label = f"{row['prior']} · {variant_label(*weights)}"
    no_scale = str(row.get("channel_scale", True)) in ("False", "0", "false")
    n = seed_of(row)
    return label + (" · no scale" if no_scale else "") + (f" · seed {n}" if seed and n else "")


def seed_of(row) -> int:
    """A model's training seed (0 for rows measured before seeds were recorded)."""
    n = row.get("seed")
    return int(n) if n is not None and pd.notna(n) else 0


def learned_points(learned: pd.DataFrame) -> pd.DataFrame:
    """One RD point per model (the mean over its images), labelled with its `family` (one curve per
    family: prior, loss variant, scale). Two models are never averaged together (MODEL_KEY)."""
    numeric = [c for c in MEASURES if c in learned]
    settings = [c for c in SETTINGS if c in learned]
    groups = learned.groupby(MODEL_KEY, sort=False, dropna=False)
    pts = groups.agg({**{c: "mean" for c in numeric}, **{c: "first" for c in settings}})
    pts["n_images"] = groups.size()
    pts = pts.reset_index().astype({"fingerprint": object})
    pts["ms_ssim_db"] = metrics.ms_ssim_db(pts["ms_ssim"].to_numpy())
    pts["family"] = pts.apply(family_label, axis=1) if "prior" in pts else pts["model"]
    return pts.sort_values(["family", "bpp"]).reset_index(drop=True)


def select(rows: pd.DataFrame, **settings) -> pd.DataFrame:
    """The rows whose setting columns hold the given values, e.g. select(points, prior="factorized",
    beta=0, gamma=0, channel_scale=True): models are chosen by their settings, never by label text."""
    keep = np.ones(len(rows), dtype=bool)
    for column, value in settings.items():
        keep &= (rows[column] == value).to_numpy()
    return rows[keep]
