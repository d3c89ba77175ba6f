"""One Kodak image at equal bytes, seen up close (notebook 08).

Every learned model compresses the image to a real .lic file. For the grid at the target bitrate,
each loss variant's model closest to it is chosen; for the viewer, the MSE model at each λ sets one
bitrate. Every classical codec is then set to the largest file not above each of those models'
files (codecs.match_bitrates). One table row per file (bytes, bpp, PSNR, MS-SSIM, LPIPS,
SSIMULACRA2; `in_grid` and `in_viewer` say where it is shown), and the decodes keyed by (model,
codec).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lic_utils import plots

VARIANT_LABELS = {"mse": "learned · MSE", "msssim": "learned · +MS-SSIM",
                  "lpips": "learned · +LPIPS"}
LEARNED = "learned"  # the codec column of a model's own file
COLUMNS = ["image", "width", "height", "model", "variant", "lmbda", "codec", "label", "setting",
           "target_bpp", "bytes", "bpp", "below_floor", "psnr", "ms_ssim", "lpips", "ssimulacra2",
           "in_grid", "in_viewer"]


def load_image(name: str, part: float | None = None) -> np.ndarray:
    """Kodak image `name` (e.g. kodim23), or its centred part with `part` of each side."""
    from lic_utils import data

    img = data.load_rgb(data.resolve(f"kodak/{name}.png"))
    if part is None:
        return img
    h, w, _ = img.shape
    ph, pw = int(h * part), int(w * part)
    top, left = (h - ph) // 2, (w - pw) // 2
    return np.ascontiguousarray(img[top:top + ph, left:left + pw])


def learned_files(index: pd.DataFrame, img: np.ndarray, image_name: str
                  ) -> tuple[pd.DataFrame, dict]:
    """Each finished run of a training index codes the image to a real .lic file, decoded from its
    bytes alone: (one row per model, sorted by variant and bpp; {(model, LEARNED): decode})."""
    import torch

    from lic_utils import bitstream, data, evaluate, models

    x = data.to_tensor(img)
    rows, decodes = [], {}
    for run in index.itertuples():
        model = models.load_checkpoint(run.checkpoint)
        with torch.inference_mode():
            payload = bitstream.encode_image(model, x)
            decoded = data.to_uint8(bitstream.decode_image(model, payload))
            measures = evaluate.measure(img, payload, decoded)
        decodes[(run.name, LEARNED)] = decoded
        rows.append({"image": image_name, "model": run.name, "variant": run.variant, "lmbda": run.lmbda,
                     "codec": LEARNED, "label": VARIANT_LABELS.get(run.variant, run.variant),
                     "setting": np.nan, "fingerprint": model.fingerprint(), **measures})
    return pd.DataFrame(rows).sort_values(["variant", "bpp"]).reset_index(drop=True), decodes


def same_files_as(learned: pd.DataFrame, cache: Path, image_name: str) -> tuple[int, int]:
    """(same, different): how many models wrote files of the same size for `image_name` as in the
    evaluation cache (notebook 05; matched by weights fingerprint): the encoder is deterministic."""
    from lic_utils import evaluate

    if not Path(cache).exists():
        return 0, 0
    prev = evaluate.read_rows(cache)
    prev = prev[prev["image"] == image_name][["fingerprint", "bytes"]].drop_duplicates("fingerprint")
    both = learned.merge(prev, on="fingerprint", suffixes=("", "_05"))
    same = int((both["bytes"] == both["bytes_05"]).sum())
    return same, len(both) - same


def _variant_order(rows: pd.DataFrame) -> list:
    return [v for v in VARIANT_LABELS if v in set(rows["variant"])]


def chosen(learned: pd.DataFrame, target_bpp: float) -> pd.DataFrame:
    """Per loss variant, the model whose file is closest to `target_bpp` (indexed by variant)."""
    return (learned.assign(gap=(learned["bpp"] - target_bpp).abs()).sort_values("gap")
            .groupby("variant", sort=False).head(1).set_index("variant")
            .reindex(_variant_order(learned)))


def _levels(learned: pd.DataFrame) -> pd.DataFrame:
    """The models that set the viewer's bitrates: the MSE model at each λ (any model when no MSE)."""
    is_mse = learned["variant"] == "mse"
    return learned[is_mse] if is_mse.any() else learned.groupby("lmbda").head(1)


def matched_files(learned: pd.DataFrame, decodes: dict, img: np.ndarray, image_name: str,
                  target_bpp: float) -> tuple[pd.DataFrame, dict]:
    """Every classical codec matched to the files of the chosen models and of the viewer's models
    (the largest file not above each): the table of every file (COLUMNS), and `decodes` with the
    codecs' decodes added."""
    import torch

    from lic_utils import codecs, evaluate

    grid, levels = chosen(learned, target_bpp), _levels(learned)
    anchors = pd.concat([grid.reset_index(), levels]).drop_duplicates("model").reset_index(drop=True)
    decodes, rows, measured = dict(decodes), [], {}  # measured: payload → measures (files repeat)
    for c in codecs.CODECS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", codecs.BitrateFloorWarning)  # reported in the table
            results = codecs.match_bitrates(img, c, list(anchors["bpp"]))
        for anchor, m in zip(anchors.itertuples(), results):
            decodes[(anchor.model, c)] = m.decoded
            if m.data not in measured:
                with torch.inference_mode():
                    measured[m.data] = evaluate.measure(img, m.data, m.decoded)
            rows.append({"image": image_name, "model": anchor.model, "variant": anchor.variant,
                         "lmbda": anchor.lmbda, "codec": c, "label": plots.CODEC_LABELS[c],
                         "setting": m.quality, "target_bpp": anchor.bpp,
                         "below_floor": m.below_floor, **measured[m.data]})
    table = pd.concat([learned.assign(target_bpp=learned["bpp"], below_floor=False),
                       pd.DataFrame(rows)], ignore_index=True)
    table["in_grid"] = table["model"].isin(grid["model"])
    table["in_viewer"] = table["model"].isin(levels["model"]) | (table["codec"] == LEARNED)
    height, width, _ = img.shape
    return table.assign(width=width, height=height)[COLUMNS], decodes


def _entry(row, decodes: dict) -> dict:
    return {"label": row.label, "image": decodes[(row.model, row.codec)], "bpp": row.bpp,
            "psnr": row.psnr, "ms_ssim": row.ms_ssim, "lpips": row.lpips, "ssimulacra2": row.ssimulacra2,
            "below_floor": bool(row.below_floor), "target_bpp": row.target_bpp}


def grid_models(table: pd.DataFrame) -> pd.DataFrame:
    """The learned files of the grid, one per loss variant in VARIANT_LABELS order."""
    own = table[(table["codec"] == LEARNED) & table["in_grid"]]
    return own.set_index("variant").reindex(_variant_order(own))


def grid_figure(table: pd.DataFrame, decodes: dict, img: np.ndarray, title: str, folder: Path):
    """figures/08_matched_grid.png: one row per loss variant, its model's decode beside every codec
    at its bytes, enlarged on the most detailed square of the image."""
    entries = []
    for variant, model in grid_models(table).iterrows():
        rows = table[(table["model"] == model.model) & table["in_grid"]]
        rows = pd.concat([rows[rows["codec"] == LEARNED], rows[rows["codec"] != LEARNED]])
        row_name = f"{VARIANT_LABELS[variant]}\nλ={model.lmbda:g}, {model.bpp:.3f} bpp"
        entries += [{**_entry(r, decodes), "row": row_name} for r in rows.itertuples()]
    fig = plots.matched_grid(img, entries, box=plots.detail_box(img), zoom=3, title=title)
    plots.save(fig, Path(folder) / "08_matched_grid.png")
    return fig


def standings(table: pd.DataFrame) -> pd.DataFrame:
    """Per loss variant of the grid: its file's measures and how it stands against the codecs at
    its bytes: `rivals` (codecs that reached them), how many it matches or beats in PSNR and in
    LPIPS, the best classical PSNR and LPIPS (label, value), and the codecs below their floor."""
    rows = []
    for variant, model in grid_models(table).iterrows():
        files = table[(table["model"] == model.model) & table["in_grid"]]
        rivals = files[(files["codec"] != LEARNED) & ~files["below_floor"].astype(bool)]
        floors = files[files["below_floor"].astype(bool)]
        best_psnr = tuple(rivals.sort_values("psnr", ascending=False)[["label", "psnr"]].iloc[0]) \
            if len(rivals) else None
        best_lpips = tuple(rivals.sort_values("lpips")[["label", "lpips"]].iloc[0]) \
            if len(rivals) else None
        rows.append({"variant": variant, "label": VARIANT_LABELS[variant], "lmbda": model.lmbda,
                     "bpp": model.bpp, "psnr": model.psnr, "ms_ssim": model.ms_ssim,
                     "lpips": model.lpips, "rivals": len(rivals),
                     "beats_psnr": len(rivals) - int((rivals["psnr"] > model.psnr).sum()),
                     "beats_lpips": len(rivals) - int((rivals["lpips"] < model.lpips).sum()),
                     "best_psnr": best_psnr, "best_lpips": best_lpips,
                     "floors": list(zip(floors["label"], floors["bpp"]))})
    return pd.DataFrame(rows)


def viewer_entries(table: pd.DataFrame, decodes: dict) -> dict:
    """{(side, bitrate level): entry} for plots.comparison_viewer: one level per λ, where every
    codec is matched to the MSE model's file and each learned variant shows its own file."""
    order = list(VARIANT_LABELS)
    out = {}
    for ref in _levels(table[table["codec"] == LEARNED]).sort_values("bpp").itertuples():
        # the level is λ: each learned variant shows its own file (its bpp is in its caption),
        # the codecs are matched to the MSE model's
        level = f"λ={ref.lmbda:g}, codecs at MSE's {ref.bpp:.3f} bpp"
        own = (table["codec"] == LEARNED) & (table["lmbda"] == ref.lmbda)
        codec = (table["codec"] != LEARNED) & (table["model"] == ref.model)
        at_level = table[table["in_viewer"] & (own | codec)]
        learned = at_level[at_level["codec"] == LEARNED]
        at_level = pd.concat([learned.sort_values("variant", key=lambda v: v.map(order.index)),
                              at_level[at_level["codec"] != LEARNED]])
        for r in at_level.itertuples():
            out[(r.label, level)] = _entry(r, decodes)
    return out


def viewer(img: np.ndarray, image_name: str, entries: dict, title: str, folder: Path) -> Path:
    """figures/08_viewer.png, the static grid (one row per bitrate level); in a live Jupyter
    session the ipywidgets viewer is shown as well."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    data = ({image_name: img}, {image_name: entries})
    box = plots.detail_box(img)
    shown = plots.comparison_viewer(*data, box=box, title=title)
    static = shown if isinstance(shown, plt.Figure) else \
        plots.comparison_viewer(*data, box=box, interactive=False, title=title)
    path = plots.save(static, Path(folder) / "08_viewer.png")
    if static is not shown:
        plt.close(static)
        display(shown)
    return path
