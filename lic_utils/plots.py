"""Figures of the study (matplotlib + seaborn), drawn from results tables and saved as PNG in figures/.

Every plotting function returns its Figure; `save` writes it atomically. Plots take tidy DataFrames
(one row per point) so that `make figures` can redraw everything from results/ alone.
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
    "bpp": "bits per pixel",
}
sns.set_theme(context="notebook", style="whitegrid")


def save(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically (a half-written figure never replaces a good one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def rd_curves(points: pd.DataFrame, metrics=("psnr", "ms_ssim_db", "lpips"), hue: str = "codec",
              title: str | None = None, xlim: tuple[float, float] | None = None):
    """Rate–distortion curves: bpp against each metric, one line per `hue` value, markers at points."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=points.sort_values("bpp"), x="bpp", y=m, hue=hue, style=hue, markers=True,
                     dashes=False, sort=False, estimator=None, ax=ax)
        ax.set(xlabel=METRIC_LABELS["bpp"], ylabel=METRIC_LABELS.get(m, m))
        if xlim:
            ax.set_xlim(*xlim)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
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
