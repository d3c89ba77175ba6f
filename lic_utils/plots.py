"""Figures of the study (matplotlib + seaborn), drawn from tidy tables and saved as PNG.

The building blocks (rd_curves, image_grid, matched_grid, comparison_viewer) return their Figure;
`save` writes one atomically. Each committed figure of notebooks 00 and 05–09 has one function
(`*_figure`, and lic_utils.visual for notebook 08) that picks what it shows from the tables and
saves figures/NN_name.png: the notebooks and `make figures` (study.redraw_figures) call the same
function, so the two can never draw differently.

Every codec and every model family keeps one colour, marker and line style in every figure
(curve_style, by name, never by drawing order). The ablations (prior_ablation_figure,
perception_distortion_figure) are drawn as differences to the factorized MSE model, each seed a dot
and each family's mean ± 1 sd, because their effects are small next to an RD axis's range.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lic_utils.files import atomic_path  # noqa: E402

METRIC_LABELS = {
    "psnr": "RGB PSNR (dB) ↑",
    "ms_ssim": "MS-SSIM ↑",
    "ms_ssim_db": "MS-SSIM (dB) ↑",
    "lpips": "LPIPS (AlexNet) ↓",
    "ssimulacra2": "SSIMULACRA2 ↑ (held out)",
    "bpp": "bits per pixel",
}
sns.set_theme(context="notebook", style="whitegrid")


# --- one style per codec and per model family, in every figure ---------------------------------------
CODEC_LABELS = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "heic": "HEIC", "jpeg2000": "JPEG 2000",
                "jpegxl": "JPEG XL"}
_CB = sns.color_palette("colorblind").as_hex()  # colour-blind-friendly (Wong's palette)
# Classical codecs: dashed, square-ish markers, colours none of the learned variants use.
CODEC_STYLES = {"jpeg": (_CB[7], "s"), "webp": (_CB[1], "p"), "avif": (_CB[4], "h"),
                "heic": (_CB[5], "H"), "jpeg2000": (_CB[9], "8"), "jpegxl": ("#404040", "s")}
CODEC_DASHES = (4, 1.5)
# Learned families: solid; colour by loss variant (LPIPS weights as shades, light to dark by γ),
# marker by prior ("no scale" overrides it).
VARIANT_COLOURS = {"mse": _CB[0], "+ms-ssim": _CB[2]}
LPIPS_SHADES, LPIPS_RANGE = ("#f4a582", _CB[3], "#7f2704"), (0.002, 0.05)  # γ at the two ends
PRIOR_MARKERS = {"factorized": "o", "factorized-gaussian": "^", "hyperprior": "D", "no scale": "X"}
FALLBACK_COLOURS = ["#332288", "#117733", "#999933", "#882255", "#44aa99", "#aa4499", "#661100",
                    "#6699cc"]  # Tol's muted palette: for names that are neither codec nor family
FALLBACK_MARKERS = ["o", "v", "<", ">", "P", "*"]


def _stable_index(name: str, n: int) -> int:
    """An index in range(n) fixed by the name (crc32: the same in every run, unlike hash())."""
    import zlib

    return zlib.crc32(name.encode()) % n


def _lpips_shade(gamma: float) -> str:
    """The +lpips colour for weight γ: lighter for small γ, darker for large (log scale)."""
    from matplotlib.colors import LinearSegmentedColormap, to_hex

    lo, hi = np.log10(LPIPS_RANGE)
    t = float(np.clip((np.log10(gamma) - lo) / (hi - lo), 0, 1)) if gamma > 0 else 0.5
    return to_hex(LinearSegmentedColormap.from_list("lpips", LPIPS_SHADES)(t))


def curve_style(name: str) -> dict:
    """Colour, marker and dashes (matplotlib/seaborn: "" is a solid line) of a curve, fixed by its
    name so that a codec or a family looks the same in every figure.

    Codecs (`webp`, or its label `WebP`): a colour and marker of their own, dashed. Families
    (evaluate.family_label, e.g. `hyperprior · mse +lpips γ=0.01 · no scale`, a trailing
    `· seed N` ignored): solid, colour by loss variant, marker by prior. Anything else: a colour and
    marker chosen by a stable hash of the name."""
    key = {label: codec for codec, label in CODEC_LABELS.items()}.get(name, name)
    if key in CODEC_STYLES:
        colour, marker = CODEC_STYLES[key]
        return {"color": colour, "marker": marker, "dashes": CODEC_DASHES}
    parts = [p for p in str(name).split(" · ") if not p.startswith("seed ")]
    if len(parts) >= 2 and parts[1].startswith("mse"):
        variant = parts[1].split()
        gammas = [float(v.split("=")[1]) for v in variant if v.startswith("γ=")]
        colour = _lpips_shade(gammas[0]) if gammas else \
            VARIANT_COLOURS["+ms-ssim" if "+ms-ssim" in variant else "mse"]
        marker = PRIOR_MARKERS["no scale"] if "no scale" in parts else \
            PRIOR_MARKERS.get(parts[0], FALLBACK_MARKERS[_stable_index(parts[0], len(FALLBACK_MARKERS))])
        return {"color": colour, "marker": marker, "dashes": ""}
    return {"color": FALLBACK_COLOURS[_stable_index(str(name), len(FALLBACK_COLOURS))],
            "marker": FALLBACK_MARKERS[_stable_index(str(name), len(FALLBACK_MARKERS))], "dashes": ""}


def _line_kw(name: str) -> dict:
    """curve_style as keyword arguments of Axes.plot."""
    style = curve_style(name)
    return {"color": style["color"], "marker": style["marker"],
            "ls": (0, style["dashes"]) if style["dashes"] else "-"}


def save(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically (a half-written figure never replaces a good one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def rd_curves(points: pd.DataFrame, metrics=("psnr", "ms_ssim_db", "lpips", "ssimulacra2"),
              hue: str = "codec", title: str | None = None, xlim: tuple[float, float] | None = None):
    """Rate–distortion curves: bpp against each metric, one line per `hue` value, markers at points,
    each value drawn in its curve_style. A metric the table does not hold (SSIMULACRA2 in tables
    made before it was measured) is left out."""
    metrics = [m for m in metrics if m in points and points[m].notna().any()]
    styles = {name: curve_style(name) for name in points[hue].unique()}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=points.sort_values("bpp"), x="bpp", y=m, hue=hue, style=hue,
                     palette={k: s["color"] for k, s in styles.items()},
                     markers={k: s["marker"] for k, s in styles.items()},
                     dashes={k: s["dashes"] for k, s in styles.items()},
                     sort=False, estimator=None, ax=ax)
        ax.set(xlabel=METRIC_LABELS["bpp"], ylabel=METRIC_LABELS.get(m, m))
        if xlim:
            ax.set_xlim(*xlim)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
    if axes[0][-1].get_legend():  # beside the panels, never over a curve
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, cols: int = 4, size: float = 3.0):
    """Show H×W×3 uint8 images in a grid with optional titles."""
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows * 0.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img)
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


# --- the study's figures: one function per committed figure, shared by notebooks and `make figures` -
def _rd_table(points: pd.DataFrame, codec_curves: pd.DataFrame) -> pd.DataFrame:
    """Learned points (one curve per family) and codec curves in one tidy table for rd_curves."""
    a = points.assign(curve=points["family"], kind="learned")
    b = codec_curves.assign(curve=codec_curves["codec"], kind="classical")
    cols = ["curve", "kind", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "lpips", "ssimulacra2"]
    return pd.concat([a.reindex(columns=cols), b.reindex(columns=cols)], ignore_index=True)


def _saved(fig, folder, name: str) -> Path:
    return save(fig, Path(folder) / name)


def datasets_figure(kodak: list[tuple[str, np.ndarray]], crops: list[np.ndarray], folder):
    """figures/00_datasets.png: Kodak images (evaluation) beside BSDS500 training crops."""
    fig = image_grid([img for _, img in kodak] + list(crops),
                     titles=[name for name, _ in kodak] + ["BSDS500 training crop"] * len(crops))
    return _saved(fig, folder, "00_datasets.png")


def lpips_reference_figure(images: dict[str, np.ndarray], lpips: dict[str, float], folder):
    """figures/00_lpips_reference.png: the LPIPS repository's reference image and its two
    distortions, titled with their LPIPS distance to the reference."""
    titles = ["reference"] + [f"{k}: LPIPS {d:.4f}" for k, d in lpips.items()]
    return _saved(image_grid(list(images.values()), cols=3, titles=titles), folder,
                  "00_lpips_reference.png")


def baselines_figure(codec_curves: pd.DataFrame, folder):
    """figures/00_rd_baselines.png: the classical codecs' mean RD curves on Kodak."""
    n = int(codec_curves["n_images"].max())
    fig = rd_curves(codec_curves, title=f"Classical codecs on Kodak ({n} images, real files)",
                    xlim=(0, 1.6))
    return _saved(fig, folder, "00_rd_baselines.png")


def learned_figure(points: pd.DataFrame, codec_curves: pd.DataFrame, folder):
    """figures/05_rd_curves.png: the learned RD curves (families with two points or more) and the
    classical codecs' curves."""
    from lic_utils.compare import curves

    main = curves(points)
    title = (f"Kodak ({int(main['n_images'].max())} images): learned models and classical codecs, "
             "real files")
    fig = rd_curves(_rd_table(main, codec_curves), hue="curve", title=title,
                    xlim=(0, max(1.0, 1.2 * main["bpp"].max())))
    published_anchors(fig)
    return _saved(fig, folder, "05_rd_curves.png")


def matched_figure(points: pd.DataFrame, matched: pd.DataFrame, folder):
    """figures/05_matched.png: the learned curves, and each codec's mean over images at each learned
    model's bytes (one point per model)."""
    from lic_utils.compare import curves
    from lic_utils.evaluate import MODEL_KEY, mean_curve

    main = curves(points)
    matched = matched.merge(main[MODEL_KEY], on=MODEL_KEY)
    table = _rd_table(main, mean_curve(matched, by=("codec", *MODEL_KEY)))
    fig = rd_curves(table, hue="curve",
                    title="Classical codecs matched to each learned model's bytes (means over images)")
    return _saved(fig, folder, "05_matched.png")


def loss_ablation_figure(points: pd.DataFrame, codec_curves: pd.DataFrame, folder):
    """figures/06_loss_ablation.png: the loss variants of the factorized prior (with its scale),
    seed 0 (the other seeds are drawn as spread in 06_perception_distortion), WebP and AVIF for
    reference."""
    from lic_utils.evaluate import seed_of, select

    points = select(points, prior="factorized", channel_scale=True)
    points = points[[seed_of(r) == 0 for r in points.to_dict("records")]]
    fig = rd_curves(_rd_table(points, codec_curves[codec_curves["codec"].isin(["webp", "avif"])]),
                    hue="curve",
                    title="Loss variants (learned, factorized prior) with WebP and AVIF for reference",
                    xlim=(0, max(1.0, 1.2 * points["bpp"].max())))
    return _saved(fig, folder, "06_loss_ablation.png")


def _spread(ax, x, y, name: str, x_sd: bool = True) -> tuple[float, float] | None:
    """One family's seeds: each a small dot, the mean a large marker with ±1 standard deviation
    error bars (in y, and in x when `x_sd`; only with two seeds or more). Returns the mean (x, y),
    None when no seed has both values (a Δ outside the reference curve's range is NaN)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    x, y, style = x[ok], y[ok], curve_style(name)
    ax.scatter(x, y, s=16, color=style["color"], marker=style["marker"], alpha=0.45, linewidths=0)
    sd = (lambda v: v.std(ddof=1)) if ok.sum() >= 2 else (lambda v: None)
    ax.errorbar(x.mean(), y.mean(), xerr=sd(x) if x_sd else None, yerr=sd(y), color=style["color"],
                marker=style["marker"], ms=9, mec="white", capsize=4, lw=1.5, label=name, zorder=3)
    return x.mean(), y.mean()


def _seeds(table: pd.DataFrame) -> str:
    n = table.groupby("family").size()
    return f"{n.min()} seeds" if n.min() == n.max() else f"{n.min()}–{n.max()} seeds"


def prior_ablation_figure(table: pd.DataFrame, lmbda: float, folder):
    """figures/07_prior_ablation.png: the MSE models at λ = `lmbda` (the priors, and the factorized
    prior without its per-channel scale) as differences to the factorized MSE model, one column per
    family: Δ RD cost (%), bpp and Δ PSNR at equal bpp; each seed a dot, the mean ± 1 sd.

    `table`: one row per model (compare.ablation_points: family, seed, bpp, rd_cost, d_rd_cost,
    d_psnr…). The priors differ by a few percent, which an RD axis spanning the codecs hides."""
    from lic_utils.evaluate import select

    table = select(table, beta=0, gamma=0)
    families = sorted(table["family"].unique(), key=lambda f: (f != "factorized · mse", f))
    panels = [("d_rd_cost", "Δ RD cost (%) ↓", "the trained objective λ·bpp + MSE"),
              ("bpp", "bits per pixel", "the rate"), ("d_psnr", "Δ PSNR at equal bpp (dB) ↑",
                                                      "the distortion at the same rate")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, (column, label, title) in zip(axes, panels):
        for i, family in enumerate(families):
            rows = table[table["family"] == family]
            jitter = np.linspace(-0.12, 0.12, len(rows)) if len(rows) > 1 else np.zeros(1)
            _spread(ax, i + jitter, rows[column], family, x_sd=False)
        if column != "bpp":
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(families)), [f.replace(" · ", "\n") for f in families], fontsize=8)
        ax.set(xlim=(-0.5, len(families) - 0.5), ylabel=label, title=title)
    fig.suptitle(f"Priors at λ = {lmbda:g} (MSE), relative to the factorized prior: "
                 f"{_seeds(table)} per model, mean ± 1 sd")
    fig.tight_layout()
    return _saved(fig, folder, "07_prior_ablation.png")


def perception_distortion_figure(table: pd.DataFrame, folder):
    """figures/06_perception_distortion.png: what the LPIPS weight γ trades (factorized prior with its
    scale, no MS-SSIM term), each model relative to the MSE model's RD curve at the same bpp:
    Δ PSNR against Δ LPIPS, and against Δ SSIMULACRA2 when the table holds it; each seed a dot, each
    γ's mean ± 1 sd in both directions, annotated with γ and its bpp.

    `table`: one row per model (compare.ablation_points). Comparing at equal bpp keeps a model that
    merely spends more bits from looking better."""
    from lic_utils.evaluate import select

    table = select(table, prior="factorized", channel_scale=True, beta=0)
    panels = [("d_lpips", "Δ LPIPS at equal bpp (← better)")]
    if "d_ssimulacra2" in table and table["d_ssimulacra2"].notna().any():
        panels.append(("d_ssimulacra2", "Δ SSIMULACRA2 at equal bpp (better →)"))
    families = table.groupby("family")["gamma"].first().sort_values().index
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        for family in families:
            rows = table[table["family"] == family]
            mean = _spread(ax, rows[column], rows["d_psnr"], family)
            if mean:
                ax.annotate(f"γ={rows['gamma'].iloc[0]:g} ({rows['bpp'].mean():.2f} bpp)", mean,
                            xytext=(6, 6), textcoords="offset points", fontsize=8)
        ax.axhline(0, color="k", lw=0.8)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel=label, ylabel="Δ PSNR at equal bpp (dB) ↑",
               title=f"{label.split(' at ')[0]} and Δ PSNR, relative to\nthe MSE model's curve at the same bpp")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.9), frameon=False, fontsize=8)
    fig.suptitle(f"Perception–distortion: the LPIPS weight γ (factorized prior), {_seeds(table)} per "
                 "model, mean ± 1 sd")
    fig.tight_layout()
    return _saved(fig, folder, "06_perception_distortion.png")


def perception_crops_figure(original: np.ndarray, entries: list[dict], title: str, folder):
    """figures/06_perception_crops.png: one image coded by each model of the γ sweep (matched_grid's
    `entries`, in order), the most detailed square enlarged: what LPIPS does to texture and colour."""
    return _saved(matched_grid(original, entries, title=title), folder, "06_perception_crops.png")


def summary_figure(points: pd.DataFrame, codec_curves: pd.DataFrame, folder):
    """figures/09_summary_rd.png, the study in one figure: every learned RD curve and every codec,
    and the published anchors (not measured here) on the PSNR panel."""
    from lic_utils.compare import curves

    fig = rd_curves(_rd_table(curves(points), codec_curves), hue="curve",
                    title="The study in one figure: Kodak, real files", xlim=(0, 0.8))
    published_anchors(fig)
    return _saved(fig, folder, "09_summary_rd.png")


# Published Kodak results, drawn for orientation and marked as not measured here: CompressAI's
# results/image/kodak/vtm.json (VVC's reference encoder, three of its points around 0.1–0.5 bpp) and
# its bmshj2018-factorized model (COMPRESSAI_FACTORIZED below, quality 2, trained on a GPU).
VTM_KODAK = {"bpp": (0.1125, 0.2458, 0.4905), "psnr": (28.49, 31.20, 34.26)}


def published_anchors(fig) -> None:
    """Add the published anchors to a figure's PSNR panel (grey, dotted: not measured here)."""
    for ax in fig.axes:
        if ax.get_ylabel() != METRIC_LABELS["psnr"]:
            continue
        vtm = ax.plot(VTM_KODAK["bpp"], VTM_KODAK["psnr"], ":", color="grey", marker="+",
                      label="VTM (published)")
        fact = ax.plot(COMPRESSAI_FACTORIZED["bpp"], COMPRESSAI_FACTORIZED["psnr"], "*", color="grey",
                       ms=10, label="bmshj2018-factorized (published)")
        ax.legend(handles=vtm + fact, title="CompressAI's Kodak results,\nnot measured here",
                  fontsize=7, title_fontsize=7, loc="lower right", frameon=False)


# --- matched bitrates: zoomed crops and the comparison viewer ----------------------------------------
# CompressAI's zoo model bmshj2018-factorized, quality 2 (N=128, M=192, trained for millions of steps
# on a GPU), on Kodak: results/image/kodak/compressai-bmshj2018-factorized_mse_cuda.json in CompressAI.
COMPRESSAI_FACTORIZED = {"bpp": 0.189, "psnr": 28.22}
BUDGET_FAMILY = "factorized · mse"  # the model of the training-budget runs (its style in the figure)


def training_budget_figure(table: pd.DataFrame, folder):
    """figures/04_training_budget.png: PSNR and LPIPS on Kodak (real files) against training minutes
    (log axis), with WebP and AVIF at each model's bytes; and the PSNR gap to WebP against steps."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = table["minutes"]
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "lpips", "LPIPS (lower is better)")):
        ax.plot(x, table[metric], lw=2, label="learned (MSE, one thread)", **_line_kw(BUDGET_FAMILY))
        for codec in ("webp", "avif"):
            ax.plot(x, table[f"{codec}_{metric}"], lw=1, label=f"{CODEC_LABELS[codec]} at the same bytes",
                    **_line_kw(codec))
        ax.set(xscale="log", xlabel="training time (minutes, one CPU thread)", ylabel=label)
        ax.set_xticks(x, [f"{m:.0f}" if m >= 10 else f"{m:.1f}" for m in x], minor=False)
        ax.minorticks_off()
    axes[0].axhline(COMPRESSAI_FACTORIZED["psnr"], color="grey", ls=":",
                    label=f"CompressAI bmshj2018-factorized, {COMPRESSAI_FACTORIZED['bpp']} bpp")
    for xi, row in zip(x, table.itertuples()):
        axes[0].annotate(f"{row.steps // 1000}k steps\n{row.bpp:.2f} bpp", (xi, row.psnr), fontsize=7,
                         xytext=(0, 8), textcoords="offset points", ha="center")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9)
    axes[2].plot(table["steps"], table["psnr"] - table["webp_psnr"], lw=2, **_line_kw(BUDGET_FAMILY))
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set(xscale="log", xlabel="training steps (log scale)", ylabel="PSNR − WebP's at equal bytes (dB)",
                title="the gap to WebP")
    axes[2].set_xticks(table["steps"], [f"{s // 1000}k" for s in table["steps"]], minor=False)
    axes[2].minorticks_off()
    fig.suptitle("What training time buys: one codec, trained from scratch for each budget")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _saved(fig, folder, "04_training_budget.png")


ORIGINAL = "original"


def detail_box(image: np.ndarray, size: int | None = None) -> tuple[int, int, int, int]:
    """The square crop (left, top, right, bottom) of `image` with the most detail (gradient energy):
    where codecs differ most. `size` defaults to a third of the short side, at most 96 px."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    size = int(min(size or max(8, min(96, min(h, w) // 3)), h, w))
    g = img.astype(np.float32).mean(axis=2) if img.ndim == 3 else img.astype(np.float32)
    energy = np.zeros((h, w), np.float64)
    energy[:, 1:] += np.abs(np.diff(g, axis=1))
    energy[1:, :] += np.abs(np.diff(g, axis=0))
    s = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # integral image
    step = max(1, size // 4)
    best, box = -1.0, (0, 0, size, size)
    for top in range(0, h - size + 1, step):
        for left in range(0, w - size + 1, step):
            e = s[top + size, left + size] - s[top, left + size] - s[top + size, left] + s[top, left]
            if e > best:
                best, box = e, (left, top, left + size, top + size)
    return box


def zoom_crop(image: np.ndarray, box: tuple[int, int, int, int], zoom: int) -> np.ndarray:
    """The crop `box` = (left, top, right, bottom) of `image`, enlarged `zoom`× by pixel repetition
    (nearest neighbour: every decoded pixel stays a visible square, nothing is smoothed)."""
    left, top, right, bottom = box
    crop = np.asarray(image)[top:bottom, left:right]
    z = max(1, int(zoom))
    return np.repeat(np.repeat(crop, z, axis=0), z, axis=1)


def _check_box(box, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    left, top, right, bottom = (int(v) for v in box)
    if not (0 <= left < right <= w and 0 <= top < bottom <= h):
        raise ValueError(f"crop box {tuple(box)} (left, top, right, bottom) does not fit a {w}×{h} "
                         "image")
    return left, top, right, bottom


def entry_title(entry: dict) -> str:
    """A panel's name: its label, and the codec's floor when it could not go down to the target."""
    label = str(entry.get("label", ""))
    if entry.get("below_floor"):
        target = entry.get("target_bpp")
        target = "target" if target is None else f"{target:.2f}"
        return f"{label} (floor: {entry['bpp']:.2f} bpp > {target})"
    return label


def entry_caption(entry: dict, compact: bool = False) -> str:
    """bpp and the measures of a decoded image (missing measures are left out)."""
    parts = [f"{entry['bpp']:.3f} bpp"] if entry.get("bpp") is not None else []
    if entry.get("psnr") is not None:
        parts.append(f"PSNR {entry['psnr']:.2f} dB")
    if entry.get("ms_ssim") is not None:
        parts.append(f"MS-SSIM {entry['ms_ssim']:.4f}")
    if entry.get("lpips") is not None:
        parts.append(f"LPIPS {entry['lpips']:.3f}")
    if entry.get("ssimulacra2") is not None and np.isfinite(entry["ssimulacra2"]):
        parts.append(f"SSIMULACRA2 {entry['ssimulacra2']:.1f}")
    if compact:
        return "\n".join(parts)
    return "\n".join(" · ".join(parts[i:i + 2]) for i in range(0, len(parts), 2))  # two a line


def matched_grid(original: np.ndarray, entries: list[dict],
                 box: tuple[int, int, int, int] | None = None, zoom: int = 3,
                 title: str | None = None, dpi: int = 120):
    """Zoomed crops of decoded images at (about) the same bitrate, side by side with the original.

    `entries`: one dict per decoded image with `label`, `image` (H×W×3 uint8, same size as `original`),
    `bpp`, `psnr`, `ms_ssim`, `lpips`, and optionally `below_floor` (the codec could not go down to the
    bitrate: its smallest file is shown and the title says so), `target_bpp`, and `row` (entries with the
    same `row` are drawn on one line, in order of first appearance; the row's name labels the line).

    Layout: a small full view of the original with the crop `box` (left, top, right, bottom) drawn on it
    (default: detail_box, the most detailed square), then per row the original's crop and each entry's
    crop, enlarged `zoom`× by pixel repetition, titled by label and captioned with bpp and the measures.
    The figure has 1 + rows + len(entries) image panels. Panels are sized so that at `dpi` (plots.save's
    default) one screen pixel is about one enlarged pixel.
    """
    original = np.asarray(original)
    box = _check_box(box if box is not None else detail_box(original), original.shape)
    rows: dict = {}
    for e in entries:
        if np.asarray(e["image"]).shape != original.shape:
            raise ValueError(f"{e.get('label')}: image is {np.asarray(e['image']).shape}, "
                             f"the original {original.shape}")
        rows.setdefault(e.get("row"), []).append(e)
    if not rows:
        rows[None] = []
    fig, gs, compact = _grid_figure(original.shape, rows, box, zoom, dpi, title)
    _overview(fig.add_subplot(gs[:, 0]), original, box, zoom)

    def panel(r, c, img, name, caption, colour="black"):
        a = fig.add_subplot(gs[r, c + 2])
        a.imshow(zoom_crop(img, box, zoom), interpolation="nearest")
        a.set_xticks([]), a.set_yticks([])
        for s in a.spines.values():
            s.set_visible(True), s.set_color(colour), s.set_linewidth(1.5 if colour != "black" else 0.5)
        a.set_title(name, fontsize=8.5, color=colour, fontweight="bold")
        a.set_xlabel(caption, fontsize=7 if compact else 7.5, color=colour)
        return a

    for r, (row, row_entries) in enumerate(rows.items()):
        a = panel(r, 0, original, ORIGINAL, "")
        if row is not None:
            a.set_ylabel(str(row), fontsize=8)
        for c, e in enumerate(row_entries, start=1):
            colour = "firebrick" if e.get("below_floor") else "black"
            panel(r, c, e["image"], entry_title(e), entry_caption(e, compact), colour)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / fig.get_figheight(), va="top")
    return fig


def _grid_figure(shape, rows: dict, box, zoom: int, dpi: int, title):
    """The figure and grid of matched_grid: an overview column, a row-name column, then one column
    per panel, sized so that one screen pixel is about one enlarged pixel at `dpi`; and whether the
    panels are narrow (captions then put one measure per line)."""
    n_rows, n_cols = len(rows), 1 + max(len(r) for r in rows.values())
    left, top, right, bottom = box
    panel_w = (right - left) * zoom / dpi
    panel_h = (bottom - top) * zoom / dpi
    compact = panel_w < 2.0  # narrow panels: one measure per caption line
    caption_h = 0.62 if compact else 0.42  # inches under each crop (4 or 2 lines)
    title_h = 0.3  # inches above each crop
    col_w = max(panel_w, 1.55)  # room for the titles and captions
    h, w = shape[:2]
    rows_h = n_rows * panel_h + (n_rows - 1) * (caption_h + title_h)
    over_w = min(2.0 * max(1.0, w / h), rows_h * w / h)
    label_w = 0.45 if any(r is not None for r in rows) else 0.1  # room for the row names
    top_in, bottom_in = title_h + (0.4 if title else 0.05), caption_h + 0.05
    fig_w, fig_h = over_w + label_w + n_cols * (col_w + 0.1) + 0.2, top_in + rows_h + bottom_in
    fig = plt.figure(figsize=(fig_w, fig_h))
    gs = fig.add_gridspec(n_rows, n_cols + 2, width_ratios=[over_w, label_w] + [col_w] * n_cols,
                          wspace=0.06, hspace=(caption_h + title_h) / panel_h, left=0.1 / fig_w,
                          right=1 - 0.1 / fig_w, top=1 - top_in / fig_h, bottom=bottom_in / fig_h)
    return fig, gs, compact


def _overview(ax, original: np.ndarray, box, zoom: int) -> None:
    """The whole original, small, with the crop drawn on it."""
    from matplotlib.patches import Rectangle

    left, top, right, bottom = box
    h, w = original.shape[:2]
    ax.imshow(original, interpolation="antialiased")
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                           edgecolor="red", linewidth=1.5))
    ax.set_title(f"original {w}×{h}\ncrop {right - left}×{bottom - top} px at ({left}, {top}), ×{zoom}",
                 fontsize=8)
    ax.axis("off")


def _viewer_data(original, decoded) -> dict[str, tuple[np.ndarray, dict]]:
    """{image name: (original, {(side, level): entry})} from one image or a dict of images."""
    if isinstance(original, dict):
        missing = set(original) - set(decoded)
        if missing:
            raise ValueError(f"no decodes for image(s) {sorted(missing)}: decoded must map each image "
                             "name to its decodes")
        return {name: (np.asarray(img), dict(decoded[name])) for name, img in original.items()}
    return {"image": (np.asarray(original), dict(decoded))}


def _sides_levels(dec: dict) -> tuple[list, list]:
    sides, levels = [], []
    for side, level in dec:
        if side not in sides:
            sides.append(side)
        if level not in levels:
            levels.append(level)
    return sides, levels


def interactive_frontend() -> bool:
    """Whether widgets can be shown: inside a Jupyter kernel that a person drives, with ipywidgets.

    Headless runs (papermill, nbconvert/nbclient, plain Python, a terminal IPython) give False:
    nbclient executes every cell with `allow_stdin=False`, which Jupyter frontends never do.
    """
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return bool(kernel is not None and getattr(kernel, "_allow_stdin", False))


def comparison_viewer(original, decoded: dict, box: tuple[int, int, int, int] | None = None,
                      zoom: int = 2, interactive: bool | None = None, image: str | None = None,
                      title: str | None = None):
    """Two decodes side by side: an ipywidgets viewer, or its static matplotlib fallback.

    `original`: an H×W×3 uint8 image with `decoded` = {(side, bitrate label): entry}, or several images
    {name: image} with `decoded` = {name: {(side, bitrate label): entry}}. A side is a codec or model label;
    an entry is a dict like matched_grid's (`image`, `bpp`, `psnr`, `ms_ssim`, `lpips`, optional
    `below_floor`, `target_bpp`). Bitrate labels keep the order in which they first appear.

    interactive=True returns a widget (ipywidgets.VBox): an image dropdown when there are several images,
    dropdowns for side A and side B (the original is one choice), a bitrate SelectionSlider, a toggle
    between the zoomed crop and the full image, and the two images with their numbers.
    interactive=False returns a Figure: for one image (`image`, default the first) a grid with one row
    per bitrate and one column per side, cropped to `box` like matched_grid. None (default) picks the
    widget only in a live Jupyter frontend (interactive_frontend), so headless runs still get a figure.
    """
    data = _viewer_data(original, decoded)
    if interactive is None:
        interactive = interactive_frontend()
    if not interactive:
        name = image if image is not None else next(iter(data))
        if name not in data:
            raise ValueError(f"unknown image {name!r}; choose from {list(data)}")
        img, dec = data[name]
        sides, levels = _sides_levels(dec)
        entries = [{**dec[(s, lv)], "label": str(s), "row": str(lv)}
                   for lv in levels for s in sides if (s, lv) in dec]
        if title is None:
            title = None if name == "image" else name
        return matched_grid(img, entries, box=box, zoom=zoom, title=title)
    return _widget_viewer(data, box, zoom, title)


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def _widget_viewer(data: dict, box, zoom: int, title: str | None):
    import html

    import ipywidgets as W

    names = list(data)
    image_dd = W.Dropdown(options=names, value=names[0], description="image")
    side_a = W.Dropdown(description="A")
    side_b = W.Dropdown(description="B")
    level = W.SelectionSlider(options=["-"], description="bitrate", continuous_update=False,
                              layout=W.Layout(width="480px"), style={"description_width": "initial"})
    view = W.ToggleButtons(options=["crop", "full image"], value="crop")
    pics = [W.Image(format="png"), W.Image(format="png")]
    caps = [W.HTML(), W.HTML()]
    state = {}

    def load_image(*_):
        img, dec = data[image_dd.value]
        sides, levels = _sides_levels(dec)
        choices = [ORIGINAL] + [str(s) for s in sides]
        state.update(loading=True, img=img, dec=dec, sides=dict(zip(choices, [ORIGINAL] + sides)),
                     levels={str(lv): lv for lv in levels},
                     box=_check_box(box if box is not None else detail_box(img), img.shape))
        side_a.options, side_b.options = choices, choices
        side_a.value = choices[1] if len(choices) > 1 else choices[0]
        side_b.value = choices[2] if len(choices) > 2 else choices[0]
        level.options = list(state["levels"]) or ["-"]
        level.value = level.options[0]
        state["loading"] = False
        redraw()

    def show(i, choice):
        img, dec, b = state["img"], state["dec"], state["box"]
        z = zoom if view.value == "crop" else 1
        if choice == ORIGINAL:
            entry = {"label": ORIGINAL, "image": img}
        else:
            entry = dec.get((state["sides"][choice], state["levels"].get(level.value)))
        if entry is None:
            pics[i].value = b""
            caps[i].value = (f"<b>{html.escape(choice)}</b><br><i>not available at "
                             f"{html.escape(str(level.value))}</i>")
            return
        shown = zoom_crop(entry["image"], b, z) if view.value == "crop" else np.asarray(entry["image"])
        pics[i].value = _png(shown)
        colour = "firebrick" if entry.get("below_floor") else "black"
        name = html.escape(entry_title({**entry, "label": choice}))
        numbers = "reference" if choice == ORIGINAL else \
            html.escape(entry_caption(entry)).replace("\n", "<br>")
        caps[i].value = f"<div style='color:{colour}'><b>{name}</b><br>{numbers}</div>"

    def redraw(*_):
        if "img" in state and not state["loading"]:
            show(0, side_a.value)
            show(1, side_b.value)

    image_dd.observe(load_image, names="value")
    for w in (side_a, side_b, level, view):
        w.observe(redraw, names="value")
    load_image()
    controls = [W.HBox([side_a, side_b]), W.HBox([level, view])]
    if len(names) > 1:
        controls.insert(0, image_dd)
    header = [W.HTML(f"<h4>{html.escape(title)}</h4>")] if title else []
    sides = W.HBox([W.VBox([caps[0], pics[0]]), W.VBox([caps[1], pics[1]])])
    return W.VBox(header + controls + [sides])


# --- training curves (notebook 04) ------------------------------------------------------------------
CURVE_PANELS = [("loss", "training loss L"), ("bpp", "rate (bpp)"), ("psnr", "PSNR (dB)"),
                ("ms_ssim", "MS-SSIM"), ("lpips", "LPIPS (AlexNet)"), ("lr", "learning rate")]


def training_curves(runs: dict[str, str | os.PathLike], smooth: int = 1):
    """One panel per loss term (and the LR) against the step, one colour per run (its log.csv):
    solid = training (mean over each logging window), dashed with markers = validation on the
    Kodak crops."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for (name, run_dir), colour in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        log = pd.read_csv(Path(run_dir) / "log.csv")
        tr, val = log[log["loss"].notna()], log[log["val_bpp"].notna()]
        for ax, (term, label) in zip(axes.flat, CURVE_PANELS):
            if tr[term].notna().any():
                y = tr[term].rolling(smooth, min_periods=1).mean() if smooth > 1 else tr[term]
                ax.plot(tr["step"], y, color=colour, lw=1.2, label=f"{name} (train)")
            if f"val_{term}" in val and val[f"val_{term}"].notna().any():
                ax.plot(val["step"], val[f"val_{term}"], "o--", color=colour, ms=3, lw=1,
                        label=f"{name} (Kodak crops)")
            ax.set(xlabel="step", title=label)
    for term, ax in zip((t for t, _ in CURVE_PANELS), axes.flat):
        if term in ("loss", "lr"):
            ax.set_yscale("log")
    handles, labels = axes.flat[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
