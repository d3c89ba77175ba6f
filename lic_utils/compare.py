"""Learned models against the classical codecs, from the measurements of lic_utils.evaluate.

Two views of the same files: mean RD curves (BD-rate, and curves read at fixed bitrates), and image
by image at equal bytes (the matched search). Then the study's summary: where the learned models
stand against each codec, the two ablations, and each claim of the study checked against the tables
(`summarize`, notebook 09, from which the README's results section is written).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lic_utils.evaluate import MODEL_KEY, learned_points, mean_curve, read_rows, select
from lic_utils.files import atomic_to_csv

# The metrics compared (LPIPS is lower-is-better, the others higher); tables made before SSIMULACRA2
# was measured lack its column, and every function below then leaves it out (or NaN).
QUALITY = ("psnr", "ms_ssim", "lpips", "ssimulacra2")
LOWER_IS_BETTER = {"lpips"}
# Quality axes for BD: higher must be better, so LPIPS enters negated and MS-SSIM in dB.
BD_METRICS = {"psnr": ("psnr", 1.0), "ms_ssim_db": ("ms_ssim_db", 1.0), "lpips": ("lpips", -1.0),
              "ssimulacra2": ("ssimulacra2", 1.0)}
# The fixed bitrates of the summary (bpp), and the candidates of the loss ablation's common bitrates.
BITRATES = (0.1, 0.2, 0.3, 0.5)
LOSS_BITRATES = (0.1, 0.15, 0.2, 0.3, 0.5)


def curves(points: pd.DataFrame) -> pd.DataFrame:
    """The points of the families with an RD curve (two points or more; ablations are single)."""
    return points[points["family"].map(points["family"].value_counts()) >= 2]


def rd_cost(points: pd.DataFrame, lmbda: float) -> pd.Series:
    """λ·bpp + MSE on Kodak (MSE on [0, 1] from the mean PSNR): the rate–distortion part of the
    training objective, in its own units, for comparing models trained at the same λ."""
    return lmbda * points["bpp"] + 10 ** (-points["psnr"] / 10)


# --- mean RD curves -------------------------------------------------------------------------------
def bd_rate_quality(anchor: pd.DataFrame, test: pd.DataFrame, metric: str = "psnr"
                    ) -> dict[str, float]:
    """BD-rate (% bits saved by `test` at equal quality; negative = test is better) and BD-quality
    (quality gained at equal rate, in the metric's units; for LPIPS, the LPIPS *reduction*),
    with piecewise cubic (pchip) interpolation over the overlapping range (bjontegaard package).

    `anchor` and `test` are RD curves with columns `bpp` and the metric (one row per point, ≥ 4 points
    each for a cubic fit; fewer give NaN). Curves that do not overlap give NaN.
    """
    import bjontegaard as bd

    column, sign = BD_METRICS[metric]
    out = {"bd_rate": np.nan, "bd_quality": np.nan}
    if column not in anchor or column not in test:
        return out
    pts = []
    for df in (anchor, test):
        df = df.dropna(subset=["bpp", column]).sort_values("bpp")
        pts.append((df["bpp"].to_numpy(float), sign * df[column].to_numpy(float)))
    (ra, qa), (rt, qt) = pts
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


def bd_table(points: pd.DataFrame, codec_curves: pd.DataFrame,
             metrics_=("psnr", "ms_ssim_db", "lpips", "ssimulacra2")) -> pd.DataFrame:
    """BD-rate and BD-quality of every learned family against every codec, per metric (tidy rows).

    Negative BD-rate: the learned curve needs fewer bits for the same quality. Families with fewer than
    four points (single-point ablations) are left out: a cubic fit needs four.
    """
    rows = []
    for fam, pts in points.groupby("family", sort=False):
        for codec, curve in codec_curves.groupby("codec", sort=False):
            for m in metrics_:
                res = bd_rate_quality(curve, pts, m)
                rows.append({"family": fam, "codec": codec, "metric": m, "n_points": len(pts), **res})
    out = pd.DataFrame(rows)
    return out[out["n_points"] >= 4].reset_index(drop=True) if len(out) else out


def at_bpp(curve: pd.DataFrame, bpp: float, metric: str) -> float:
    """A curve's metric at `bpp`, interpolated linearly in log(bpp); NaN outside the measured range
    (or when the curve was measured without that metric)."""
    if metric not in curve:
        return float("nan")
    c = curve.dropna(subset=["bpp", metric]).sort_values("bpp")
    if len(c) < 2 or not c["bpp"].min() <= bpp <= c["bpp"].max():
        return float("nan")
    return float(np.interp(np.log(bpp), np.log(c["bpp"].to_numpy()), c[metric].to_numpy()))


def compare_at(points: pd.DataFrame, codec_curves: pd.DataFrame | None, bpps=BITRATES
               ) -> pd.DataFrame:
    """Learned families and codecs side by side at fixed bitrates (interpolated on each RD curve)."""
    rows = []
    named = [(f, g, "learned") for f, g in points.groupby("family", sort=False)]
    if codec_curves is not None:
        named += [(c, g, "classical") for c, g in codec_curves.groupby("codec", sort=False)]
    for name, g, kind in named:
        for b in bpps:
            quality = {m: at_bpp(g, b, m) for m in QUALITY}
            rows.append({"curve": name, "kind": kind, "bpp": b, **quality})
    return pd.DataFrame(rows)


def standing(at: pd.DataFrame) -> pd.DataFrame:
    """The best learned curve minus each codec at each bitrate of `compare_at`'s table, metric by
    metric: the best learned curve is chosen per metric (highest PSNR, highest MS-SSIM, lowest
    LPIPS), so a loss variant trained for perception is judged on perception. NaN where no learned
    curve or the codec's curve covers the bitrate (or the metric was not measured)."""
    learned, classical = at[at["kind"] == "learned"], at[at["kind"] == "classical"]
    rows = []
    for r in classical.itertuples():
        here = learned[learned["bpp"] == r.bpp]
        row = {"codec": r.curve, "bpp": r.bpp}
        for q in (q for q in QUALITY if q in at):
            best = "idxmin" if q in LOWER_IS_BETTER else "idxmax"
            ok = here.dropna(subset=[q])
            if len(ok) and np.isfinite(getattr(r, q)):
                top = ok.loc[getattr(ok[q], best)()]
                row[f"d_{q}"], row[f"best_{q}"] = top[q] - getattr(r, q), top["curve"]
            else:
                row[f"d_{q}"], row[f"best_{q}"] = np.nan, None
        rows.append(row)
    return pd.DataFrame(rows)


# --- image by image at equal bytes ----------------------------------------------------------------
def matched_summary(learned: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """Per model and codec, at equal bytes on each image: mean metric differences (learned − codec)
    and the share of images where the learned model is better; images where the codec could not go
    that low are counted separately (`codec_below_floor`)."""
    measured = [q for q in QUALITY if q in learned and q in matched]
    m = matched.merge(learned[[*MODEL_KEY, "image", "bpp", *measured]], on=[*MODEL_KEY, "image"],
                      suffixes=("", "_learned"))
    rows = []
    for (fp, model, codec), g in m.groupby([*MODEL_KEY, "codec"], sort=False, dropna=False):
        ok = g[~g["below_floor"].astype(bool)]
        row = {"model": model, "fingerprint": fp, "codec": codec, "images": len(g),
               "codec_below_floor": int(len(g) - len(ok)),
               "learned_bpp": g["bpp_learned"].mean(), "codec_bpp": ok["bpp"].mean()}
        for q in measured:
            diff = ok[f"{q}_learned"] - ok[q]
            row[f"d_{q}"] = diff.mean()
            wins = (-diff if q in LOWER_IS_BETTER else diff) > 0
            row[f"learned_wins_{q}"] = float(wins.mean()) if len(ok) else np.nan
        rows.append(row)
    return pd.DataFrame(rows).astype({"fingerprint": object})


def matched_verdicts(summary: pd.DataFrame, points: pd.DataFrame, bpp_range=(0.1, 0.5)
                     ) -> pd.DataFrame:
    """Where each learned family wins and loses against each codec at equal bytes, image by image.

    From `matched_summary`: a model point counts as a win in a metric when the learned model is
    better on more than half of the images the codec could reach; points where the codec could not
    make files that small for most images are listed apart (`codec_cannot_reach`). Only points whose
    mean bpp lies in `bpp_range` (±10 %) are used. One row per codec × family, bitrates as sorted
    lists of bpp.
    """
    lo, hi = bpp_range
    families = points[[*MODEL_KEY, "family"]].astype({"fingerprint": object})
    s = summary.astype({"fingerprint": object}).merge(families, on=MODEL_KEY)
    s = s[s["learned_bpp"].between(0.9 * lo, 1.1 * hi)]
    rows = []
    for (codec, fam), g in s.groupby(["codec", "family"], sort=True):
        g = g.sort_values("learned_bpp")
        reach = g["codec_below_floor"] <= g["images"] / 2
        row = {"codec": codec, "family": fam, "points": len(g),
               "codec_cannot_reach": [round(b, 3) for b in g.loc[~reach, "learned_bpp"]]}
        for q in (q for q in QUALITY if f"learned_wins_{q}" in g):
            won = reach & (g[f"learned_wins_{q}"] > 0.5)
            row[f"wins_{q}"] = [round(b, 3) for b in g.loc[won, "learned_bpp"]]
            row[f"loses_{q}"] = [round(b, 3) for b in g.loc[reach & ~won, "learned_bpp"]]
            if f"d_{q}" in g:  # the range of the mean differences over the reachable points
                row[f"d_{q}_min"] = g.loc[reach, f"d_{q}"].min()
                row[f"d_{q}_max"] = g.loc[reach, f"d_{q}"].max()
        rows.append(row)
    return pd.DataFrame(rows)


# --- the two ablations ----------------------------------------------------------------------------
def loss_ablation(points: pd.DataFrame) -> pd.DataFrame:
    """Notebook 06: the loss variants of the factorized prior with its per-channel scale, each
    curve read at the common bitrates of LOSS_BITRATES inside the measured range (the median bpp
    when none is). One row per curve and bitrate, with the curve's β and γ."""
    points = select(points, prior="factorized", channel_scale=True)
    lo, hi = points["bpp"].min(), points["bpp"].max()
    grid = [b for b in LOSS_BITRATES if lo <= b <= hi] or [float(points["bpp"].median())]
    at = compare_at(points, None, grid).dropna(subset=["psnr"])
    weights = points.groupby("family")[["beta", "gamma"]].first()
    return at.join(weights, on="curve").reset_index(drop=True)


def prior_ablation(points: pd.DataFrame, lmbda: float) -> pd.DataFrame:
    """Notebook 07: the models trained with MSE alone at λ = `lmbda` (the priors, and the
    factorized prior without its per-channel scale), one row each."""
    cols = ["family", "bpp", "psnr", "ms_ssim", "lpips", "encode_ms", "decode_ms", "model", "lmbda",
            "prior", "channel_scale"]
    return select(points, beta=0, gamma=0, lmbda=lmbda)[cols].reset_index(drop=True)


# --- the summary (notebook 09) --------------------------------------------------------------------
def claims(points: pd.DataFrame, codec_curves: pd.DataFrame, loss: pd.DataFrame,
           priors: pd.DataFrame, bitrates=BITRATES) -> pd.DataFrame:
    """The study's claims, each checked against the measurements: one row per claim with the
    number that decides it and whether it holds (None when the number cannot be computed).

    `points`: every learned model; `loss` and `priors`: the two ablation tables (loss_ablation,
    prior_ablation). Models are picked by their settings, never by label text.
    """
    rows = []

    def claim(text, measured, holds):
        rows.append({"claim": text, "measured": measured, "holds": holds})

    main = curves(points)
    webp = codec_curves[codec_curves["codec"] == "webp"]
    mse = select(main, prior="factorized", beta=0, gamma=0, channel_scale=True)
    if len(mse):
        d = at_bpp(mse, 0.2, "psnr") - at_bpp(webp, 0.2, "psnr")
        claim("The MSE-trained model reaches WebP's PSNR at 0.2 bpp", f"{d:+.2f} dB",
              bool(d >= 0) if np.isfinite(d) else None)
    jpeg = codec_curves[codec_curves["codec"] == "jpeg"]
    for fam, g in main.groupby("family"):
        ds = [at_bpp(g, b, "psnr") - at_bpp(jpeg, b, "psnr") for b in bitrates]
        ds = [d for d in ds if np.isfinite(d)]
        if ds:
            claim(f"{fam} beats JPEG in PSNR wherever both are measured "
                  f"({min(bitrates):g}–{max(bitrates):g} bpp)", f"min {min(ds):+.2f} dB",
                  bool(min(ds) > 0))
    for term, weight, metric, better in (("+lpips", "gamma", "lpips", "lower"),
                                         ("+ms-ssim", "beta", "ms_ssim", "higher")):
        for b, g in loss.groupby("bpp"):
            base, var = select(g, beta=0, gamma=0), g[g[weight] > 0]
            if len(base) and len(var):
                d = var[metric].iloc[0] - base[metric].iloc[0]
                claim(f"At {b} bpp, adding {term} gives {better} {metric} than MSE only", f"{d:+.4f}",
                      bool(d < 0) if better == "lower" else bool(d > 0))
    f = select(priors, prior="factorized", channel_scale=True)
    h = select(priors, prior="hyperprior")
    if len(f) and len(h):
        lmbda = f["lmbda"].iloc[0]
        cf, ch = rd_cost(f, lmbda).iloc[0], rd_cost(h, lmbda).iloc[0]
        claim("The hyperprior beats the factorized prior at equal λ (lower λ·R + MSE)",
              f"{ch:.5f} vs {cf:.5f}", bool(ch < cf))
    return pd.DataFrame(rows, columns=["claim", "measured", "holds"])


def summarize(results_dir: str | Path, ablation_lmbda: float, bitrates=BITRATES) -> dict:
    """Notebook 09: the study's summary from the caches in `results_dir` alone (every model there).

    Writes summary_standing.csv (the best learned curve minus each codec at `bitrates`),
    summary_verdicts.csv (wins and losses at equal bytes, image by image, over the bitrates' range)
    and summary_claims.csv (`claims`); the README's results section is written from the first two.
    Returns those tables and what they were computed from: points, codec_curves, loss, priors.
    """
    results_dir = Path(results_dir)
    learned = read_rows(results_dir / "learned_kodak.csv")
    matched = read_rows(results_dir / "matched_kodak.csv")
    baselines = pd.read_csv(results_dir / "baselines_kodak.csv")
    points = learned_points(learned)
    codec_curves = mean_curve(baselines[baselines["image"].isin(learned["image"].unique())])
    main = curves(points)
    on_curves = learned.merge(main[MODEL_KEY].astype({"fingerprint": object}), on=MODEL_KEY)
    summary = matched_summary(on_curves, matched)
    out = {"points": points, "codec_curves": codec_curves,
           "loss": loss_ablation(points), "priors": prior_ablation(points, ablation_lmbda),
           "standing": standing(compare_at(points, codec_curves, bitrates)),
           "verdicts": matched_verdicts(summary, points, (min(bitrates), max(bitrates)))}
    out["claims"] = claims(points, codec_curves, out["loss"], out["priors"], bitrates)
    for name in ("standing", "verdicts", "claims"):
        atomic_to_csv(out[name], results_dir / f"summary_{name}.csv")
    return out


def budget_gain(table: pd.DataFrame, min_steps: int = 2000) -> dict:
    """What each doubling of training buys (results/training_budget.csv, benchmarks/training_budget.py).

    The PSNR gap to WebP at equal bytes, fitted linearly against log2(steps) over the budgets from
    `min_steps` on (below that the rate has not settled): dB per doubling, the steps at which the
    fit reaches WebP (inf when it does not rise), and the gain per doubling between the last two
    budgets (smaller than the fit's when returns diminish, which makes the parity estimate optimistic).
    """
    fit = table[table["steps"] >= min_steps]
    doublings, gap = np.log2(fit["steps"].to_numpy()), (fit["psnr"] - fit["webp_psnr"]).to_numpy()
    slope, intercept = np.polyfit(doublings, gap, 1)
    rising = slope > 1e-6  # dB per doubling; a flat fit never reaches WebP
    parity = float(np.exp2(min(-intercept / slope, 1000.0))) if rising else float("inf")
    last_gain = float((gap[-1] - gap[-2]) / (doublings[-1] - doublings[-2]))  # is the gain slowing?
    return {"db_per_doubling": float(slope), "parity_steps": float(parity), "points": int(len(fit)),
            "last_db_per_doubling": last_gain}


def recipe_summary(table: pd.DataFrame, minutes_per_step: float, models: int, bpp: float = 0.2
                   ) -> pd.DataFrame:
    """Training recipes side by side (results/amortised_training.csv, benchmarks/amortised_training.py).

    One row per (recipe, loss variant): the MSE, +MS-SSIM and +LPIPS models trained from scratch
    ("scratch …" rows) and fine-tuned from one long base (the base counts as the MSE fine-tune at its
    own λ); PSNR and LPIPS interpolated at `bpp` on each curve (NaN where a curve has fewer than two
    points or misses the bitrate), and the CPU minutes one model costs: its own training plus, for a
    fine-tune, its share of the base when `models` models are made from it. Scratch runs cost their
    steps at the measured `minutes_per_step` (one thread, benchmarks/training_budget.py). The rows
    say what they are by `base_minutes`: 0 for the base, the base's minutes for a fine-tune, empty
    for a model trained from scratch.
    """
    t = table.copy()
    scratch, is_base = t["base_minutes"].isna(), t["base_minutes"] == 0
    t["recipe_kind"] = np.where(scratch, "from scratch", "amortised")
    t["variant"] = np.where(t["gamma"] > 0, "+lpips", np.where(t["beta"] > 0, "+ms-ssim", "mse"))
    t["minutes_per_model"] = np.select(
        [scratch, is_base], [t["steps"] * minutes_per_step, t["minutes"] / models],
        t["minutes"] + t["base_minutes"] / models)
    rows = []
    for (kind, variant), g in t.groupby(["recipe_kind", "variant"], sort=False):
        for gamma, gg in g.groupby("gamma"):
            rows.append({"recipe": kind, "variant": variant, "gamma": gamma, "models": len(gg),
                         "bpp_range": f"{gg.bpp.min():.3f}–{gg.bpp.max():.3f}",
                         "minutes_per_model": gg["minutes_per_model"].mean(),
                         f"psnr_at_{bpp:g}": at_bpp(gg, bpp, "psnr"),
                         f"lpips_at_{bpp:g}": at_bpp(gg, bpp, "lpips")})
    return pd.DataFrame(rows)
