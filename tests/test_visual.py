"""Notebook 08's tables and figures: one image at equal bytes (lic_utils.visual), on a small crop."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lic_utils import visual


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def img(kodim01):
    return np.ascontiguousarray(kodim01[:64, :96])


def _learned(img):
    """Six models' files: three variants at two λ (bpp made up), each decode a copy of the image."""
    rows = [{"image": "k", "model": f"{v}-l{lmbda:g}", "variant": v, "lmbda": lmbda, "codec": "learned",
             "label": visual.VARIANT_LABELS[v], "setting": np.nan, "fingerprint": f"{v}{lmbda}",
             "bytes": int(bpp * img.shape[0] * img.shape[1] / 8), "bpp": bpp, "psnr": 30.0 + bpp,
             "ms_ssim": 0.9, "lpips": 0.3 - bpp / 10}
            for v, offset in (("mse", 0.0), ("msssim", 0.05), ("lpips", 0.1))
            for lmbda, bpp in ((0.008, 0.5 + offset), (0.002, 1.5 + offset))]
    learned = pd.DataFrame(rows).sort_values(["variant", "bpp"]).reset_index(drop=True)
    return learned, {(r.model, "learned"): img.copy() for r in learned.itertuples()}


@pytest.fixture(scope="module")
def matched(img):
    learned, decodes = _learned(img)
    return visual.matched_files(learned, decodes, img, "k", target_bpp=1.5)


def test_load_image_keeps_the_centred_part(kodak_paths):
    from lic_utils import data

    full = data.load_rgb(kodak_paths[22])
    part = visual.load_image("kodim23", 0.5)
    h, w, _ = full.shape
    assert part.shape == (h // 2, w // 2, 3)
    assert np.array_equal(part, full[h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2])
    assert visual.load_image("kodim23").shape == full.shape


def test_learned_files_code_real_lic_files(tmp_path, img):
    import torch

    from lic_utils import bitstream, data, models

    torch.manual_seed(0)
    model = models.build_model({"prior": "factorized", "N": 8, "M": 12})
    models.save_checkpoint(tmp_path / "checkpoint.pt", model)
    index = pd.DataFrame([{"name": "run", "variant": "mse", "lmbda": 0.004,
                           "checkpoint": str(tmp_path / "checkpoint.pt")}])
    learned, decodes = visual.learned_files(index, img, "k")
    row = learned.iloc[0]
    model = models.load_checkpoint(tmp_path / "checkpoint.pt")
    payload = bitstream.encode_image(model, data.to_tensor(img))
    assert row.fingerprint == model.fingerprint() and row.bytes == len(payload)
    assert row.bpp == len(payload) * 8 / (img.shape[0] * img.shape[1]) and row.label == "learned · MSE"
    assert decodes[("run", "learned")].shape == img.shape


def test_every_codec_is_matched_to_the_chosen_and_the_viewers_files(matched):
    from lic_utils import codecs

    table, decodes = matched
    assert list(table.columns) == visual.COLUMNS
    grid = visual.grid_models(table)
    assert list(grid.index) == ["mse", "msssim", "lpips"]  # one per variant, closest to 1.5 bpp
    assert grid.model.tolist() == ["mse-l0.002", "msssim-l0.002", "lpips-l0.002"]
    anchors = set(grid.model) | {"mse-l0.008"}  # the grid's models and the MSE model at each λ
    rows = table[table.codec != "learned"]
    assert set(rows.model) == anchors and len(rows) == len(anchors) * len(codecs.CODECS)
    reached = rows[~rows.below_floor.astype(bool)]
    assert (reached.bpp <= reached.target_bpp + 1e-12).all()  # never above the learned file
    assert set(table[table.in_viewer & (table.codec != "learned")].model) == {"mse-l0.002", "mse-l0.008"}
    assert table[table.codec == "learned"].in_viewer.all()
    assert all((r.model, r.codec) in decodes for r in table.itertuples())


def test_standings_count_the_codecs_each_variant_matches_or_beats(matched):
    table, _ = matched
    s = visual.standings(table).set_index("variant")
    mse = table[(table.model == "mse-l0.002")]
    rivals = mse[(mse.codec != "learned") & ~mse.below_floor.astype(bool)]
    own = mse[mse.codec == "learned"].iloc[0]
    assert s.loc["mse", "rivals"] == len(rivals)
    assert s.loc["mse", "beats_psnr"] == int((rivals.psnr <= own.psnr).sum())
    if len(rivals):
        assert s.loc["mse", "best_psnr"] == tuple(rivals.loc[rivals.psnr.idxmax(), ["label", "psnr"]])
    floors = mse[mse.below_floor.astype(bool)]
    assert s.loc["mse", "floors"] == list(zip(floors.label, floors.bpp))


def test_viewer_entries_one_level_per_lambda_learned_variants_first(matched):
    table, decodes = matched
    entries = visual.viewer_entries(table, decodes)
    levels = list(dict.fromkeys(level for _, level in entries))
    assert levels == ["λ=0.008, codecs at MSE's 0.500 bpp", "λ=0.002, codecs at MSE's 1.500 bpp"]  # by MSE's bpp
    sides = [side for side, level in entries if level == levels[0]]
    assert sides[:3] == list(visual.VARIANT_LABELS.values())
    assert entries[("learned · +LPIPS", levels[0])]["bpp"] == pytest.approx(0.6)


def test_the_two_figures_of_notebook_08(matched, img, tmp_path):
    table, decodes = matched
    visual.grid_figure(table, decodes, img, "title", tmp_path)
    fig = plt.gcf()
    n_rows = 3  # one per variant, each the original's crop + the learned file + the codecs
    assert len(fig.axes) == 1 + n_rows + len(table[table.in_grid])
    path = visual.viewer(img, "k", visual.viewer_entries(table, decodes), "title", tmp_path)
    assert path == tmp_path / "08_viewer.png" and (tmp_path / "08_matched_grid.png").exists()
