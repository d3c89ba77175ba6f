"""The study's figures: the RD figures drawn from tables (one function per committed figure), and the
matched-bitrate comparison (plots.matched_grid, plots.comparison_viewer) on synthetic images."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lic_utils import plots


def _image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _entry(label: str, seed: int, bpp: float, **extra) -> dict:
    return {"label": label, "image": _image(seed), "bpp": bpp, "psnr": 30.0 + seed, "ms_ssim": 0.9, "lpips": 0.2, **extra}


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)] + \
           [t.get_text() for t in fig.texts]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_matched_grid_panels_and_captions():
    original = _image(0)
    entries = [_entry("learned", 1, 0.2031), _entry("WebP", 2, 0.1987), _entry("JPEG", 3, 0.2514, below_floor=True, target_bpp=0.2031)]
    fig = plots.matched_grid(original, entries, box=(8, 4, 40, 36), zoom=2)
    assert len(fig.axes) == 1 + 1 + len(entries)  # full view, original crop, one crop per entry
    texts = "\n".join(_texts(fig))
    for bpp in ("0.203 bpp", "0.199 bpp", "0.251 bpp"):
        assert bpp in texts
    assert "JPEG (floor: 0.25 bpp > 0.20)" in texts
    assert "PSNR 31.00 dB" in texts and "MS-SSIM 0.9000" in texts and "LPIPS 0.200" in texts
    crop = fig.axes[1].images[0].get_array()
    assert crop.shape[:2] == (64, 64)  # 32×32 box, nearest-neighbour ×2


def test_matched_grid_rows_and_default_box():
    original = _image(0)
    entries = [_entry(c, i, 0.1 * r, row=f"row {r}") for r in (1, 2) for i, c in enumerate(["A", "B"], start=1)]
    fig = plots.matched_grid(original, entries)
    assert len(fig.axes) == 1 + 2 * (1 + 2)  # the original crop starts each row
    assert {"row 1", "row 2"} <= set(_texts(fig))
    left, top, right, bottom = plots.detail_box(original)
    assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48


def test_matched_grid_rejects_bad_box_and_sizes():
    with pytest.raises(ValueError, match="does not fit"):
        plots.matched_grid(_image(0), [_entry("A", 1, 0.2)], box=(0, 0, 100, 10))
    bad = _entry("A", 1, 0.2)
    bad["image"] = bad["image"][:10]
    with pytest.raises(ValueError, match="original"):
        plots.matched_grid(_image(0), [bad])


def test_zoom_crop_is_nearest_neighbour():
    img = _image(5)
    z = plots.zoom_crop(img, (1, 2, 5, 6), 3)
    assert z.shape == (12, 12, 3)
    assert (z[::3, ::3] == img[2:6, 1:5]).all() and (z[1::3, 2::3] == img[2:6, 1:5]).all()


def _decoded():
    return {(side, level): _entry(side, seed + k, bpp)
            for k, (level, bpp) in enumerate([("low", 0.1), ("high", 0.4)])
            for seed, side in enumerate(["learned", "WebP", "AVIF"], start=1)}


def test_comparison_viewer_static_figure():
    fig = plots.comparison_viewer(_image(0), _decoded(), interactive=False)
    assert isinstance(fig, plt.Figure)
    assert len(fig.axes) == 1 + 2 * (1 + 3)  # one row per bitrate: original + three sides
    texts = "\n".join(_texts(fig))
    assert "0.100 bpp" in texts and "0.400 bpp" in texts and "low" in texts and "high" in texts


def test_comparison_viewer_headless_default_is_static():
    assert plots.interactive_frontend() is False  # pytest is no Jupyter frontend
    assert isinstance(plots.comparison_viewer(_image(0), _decoded()), plt.Figure)


def test_comparison_viewer_widget():
    ipywidgets = pytest.importorskip("ipywidgets")
    images = {"one": _image(0), "two": _image(9)}
    view = plots.comparison_viewer(images, {"one": _decoded(), "two": _decoded()}, interactive=True, title="t")
    assert isinstance(view, ipywidgets.VBox)
    widgets = _walk(view)
    dropdowns = [w for w in widgets if isinstance(w, ipywidgets.Dropdown)]
    slider = next(w for w in widgets if isinstance(w, ipywidgets.SelectionSlider))
    pictures = [w for w in widgets if isinstance(w, ipywidgets.Image)]
    assert [d.description for d in dropdowns] == ["image", "A", "B"]
    assert list(slider.options) == ["low", "high"]
    assert "original" in dropdowns[1].options and len(pictures) == 2
    assert all(p.value[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    captions = [w for w in widgets if isinstance(w, ipywidgets.HTML) and "bpp" in w.value]
    assert any("0.100 bpp" in c.value for c in captions)
    slider.value = "high"
    captions = [w for w in widgets if isinstance(w, ipywidgets.HTML) and "bpp" in w.value]
    assert any("0.400 bpp" in c.value for c in captions)
    dropdowns[1].value = "original"
    assert any("reference" in w.value for w in widgets if isinstance(w, ipywidgets.HTML))
    dropdowns[0].value = "two"  # another image: sides and bitrates are reloaded
    assert dropdowns[1].value == "learned" and slider.value == "low"


def test_comparison_viewer_widget_missing_decode():
    ipywidgets = pytest.importorskip("ipywidgets")
    decoded = _decoded()
    del decoded[("WebP", "high")]
    view = plots.comparison_viewer(_image(0), decoded, interactive=True)
    widgets = _walk(view)
    assert not any(isinstance(w, ipywidgets.Dropdown) and w.description == "image" for w in widgets)  # one image
    next(w for w in widgets if isinstance(w, ipywidgets.SelectionSlider)).value = "high"
    assert any("not available" in w.value for w in widgets if isinstance(w, ipywidgets.HTML))


def _walk(widget):
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += _walk(child)
    return out


# --- the study's figures (one function per committed figure) --------------------------------------
def _points():
    """Learned points: an MSE and an LPIPS curve (λ = 0.008, 0.004), the MSE model without its
    scale and a hyperprior at λ = 0.004, and one more LPIPS weight as a single point."""
    rows = []
    for prior, beta, gamma, scale, lmbdas in (("factorized", 0.0, 0.0, True, (0.008, 0.004)),
                                              ("factorized", 0.0, 0.002, True, (0.008, 0.004)),
                                              ("factorized", 0.0, 0.03, True, (0.004,)),
                                              ("factorized", 0.0, 0.0, False, (0.004,)),
                                              ("hyperprior", 0.0, 0.0, True, (0.004,))):
        for lmbda in lmbdas:
            bpp = 0.8 / (1000 * lmbda)
            rows += [{"model": f"{prior}-{gamma}-{scale}-{lmbda}", "fingerprint": f"{prior}{gamma}{scale}{lmbda}",
                      "image": im, "prior": prior, "beta": beta, "gamma": gamma, "channel_scale": scale,
                      "lmbda": lmbda, "bpp": bpp, "psnr": 25 + 10 * bpp, "ms_ssim": 0.9, "lpips": 0.3}
                     for im in ("a", "b")]
    return pd.DataFrame(rows)


def _codec_curves():
    from lic_utils import evaluate

    rows = [{"codec": c, "quality": q, "image": "a", "bpp": q / 10, "psnr": 20 + q, "ms_ssim": 0.9, "lpips": 0.3}
            for c in ("jpeg", "webp", "avif", "jpeg2000") for q in (1, 2, 4)]
    return evaluate.mean_curve(pd.DataFrame(rows))


def _curves_drawn(path) -> set:
    assert path.exists()
    fig = plt.gcf()
    return {t.get_text() for t in fig.axes[-1].get_legend().get_texts()}


def test_rd_figures_draw_the_models_each_figure_is_about(tmp_path):
    from lic_utils import evaluate

    learned = _points()
    points = evaluate.learned_points(learned)
    mse, lpips = "factorized · mse", "factorized · mse +lpips γ=0.002"
    codecs_ = {"jpeg", "webp", "avif", "jpeg2000"}
    assert _curves_drawn(plots.learned_figure(points, _codec_curves(), tmp_path)) == {mse, lpips} | codecs_
    assert _curves_drawn(plots.summary_figure(points, _codec_curves(), tmp_path)) == {mse, lpips} | codecs_
    psnr_panel = plt.gcf().axes[0]  # the published anchors, in a legend of their own
    assert [t.get_text() for t in psnr_panel.get_legend().get_texts()] == ["VTM (published)",
                                                                          "bmshj2018-factorized (published)"]
    assert "not measured here" in psnr_panel.get_legend().get_title().get_text()
    assert _curves_drawn(plots.loss_ablation_figure(points, _codec_curves(), tmp_path)) == \
        {mse, lpips, "factorized · mse +lpips γ=0.03", "webp", "avif"}
    matched = learned.assign(codec="webp", below_floor=False)
    drawn = _curves_drawn(plots.matched_figure(points, matched, tmp_path))
    assert drawn == {mse, lpips, "webp"}
    lengths = sorted(len(line.get_xdata()) for line in plt.gcf().axes[0].get_lines() if len(line.get_xdata()))
    assert lengths == [2, 2, 4]  # WebP: one point per model of the two curves, not the single points
    plots.baselines_figure(_codec_curves(), tmp_path)
    assert plt.gcf()._suptitle.get_text() == "Classical codecs on Kodak (1 images, real files)"
    assert {p.name for p in tmp_path.iterdir()} == {"05_rd_curves.png", "09_summary_rd.png", "06_loss_ablation.png",
                                                    "05_matched.png", "00_rd_baselines.png"}


# --- one style per codec and family --------------------------------------------------------------
FAMILIES = ["factorized · mse", "factorized · mse +ms-ssim β=0.025", "factorized · mse +lpips γ=0.0067",
            "factorized · mse +lpips γ=0.01", "factorized · mse +lpips γ=0.03", "factorized-gaussian · mse",
            "hyperprior · mse", "factorized · mse · no scale"]


def test_curve_style_is_fixed_by_name():
    from matplotlib.colors import to_rgb

    codecs_ = list(plots.CODEC_LABELS)
    styles = {name: plots.curve_style(name) for name in codecs_ + FAMILIES}
    assert styles == {name: plots.curve_style(name) for name in reversed(list(styles))}  # not by order
    codec_colours = {styles[c]["color"] for c in codecs_}
    assert len(codec_colours) == 6 and all(styles[c]["dashes"] for c in codecs_)
    assert not codec_colours & {styles[f]["color"] for f in FAMILIES}  # codecs never look like models
    assert plots.curve_style("WebP") == styles["webp"]
    assert all(styles[f]["dashes"] == "" for f in FAMILIES)  # learned: solid
    assert [styles[f]["marker"] for f in FAMILIES[-3:]] == ["^", "D", "X"]
    assert {styles[f]["marker"] for f in FAMILIES[:5]} == {"o"}
    assert styles["factorized-gaussian · mse"]["color"] == styles["hyperprior · mse"]["color"] == \
        styles["factorized · mse"]["color"]  # colour by loss, marker by prior
    shades = [sum(to_rgb(styles[f]["color"])) for f in FAMILIES[2:5]]
    assert shades == sorted(shades, reverse=True) and len(set(shades)) == 3  # darker as γ grows
    for family in FAMILIES:
        assert plots.curve_style(f"{family} · seed 1") == styles[family]
    other = plots.curve_style("something else")
    assert other == plots.curve_style("something else") and other["color"] in plots.FALLBACK_COLOURS


def _legend_colours(fig) -> dict:
    from matplotlib.colors import to_hex

    legend = fig.axes[-1].get_legend()
    return {t.get_text(): to_hex(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles)}


def test_rd_curves_draw_each_curve_in_its_own_style(tmp_path):
    from lic_utils import evaluate

    points = evaluate.learned_points(_points())
    plots.baselines_figure(_codec_curves(), tmp_path)
    all_codecs = _legend_colours(plt.gcf())
    plots.loss_ablation_figure(points, _codec_curves(), tmp_path)  # other curves, in another order
    ablation = _legend_colours(plt.gcf())
    assert all_codecs["webp"] == ablation["webp"] == plots.curve_style("webp")["color"]
    assert ablation["avif"] == plots.curve_style("avif")["color"]
    assert ablation["factorized · mse"] == plots.curve_style("factorized · mse")["color"]
    webp = next(line for line in plt.gcf().axes[0].get_lines() if line.get_color() == ablation["webp"])
    assert webp.get_marker() == "p" and webp.get_linestyle() == "--"  # dashed


# --- the ablations: differences to the factorized MSE model, with their spread ---------------------
def _ablation_table(ssimulacra2: bool = True) -> pd.DataFrame:
    """compare.ablation_points' table: three seeds per family (the two LPIPS ones at λ = 0.004)."""
    rng = np.random.default_rng(0)
    rows = []
    for prior, beta, gamma, scale in (("factorized", 0.0, 0.0, True), ("factorized-gaussian", 0.0, 0.0, True),
                                      ("hyperprior", 0.0, 0.0, True), ("factorized", 0.0, 0.0, False),
                                      ("factorized", 0.0, 0.0067, True), ("factorized", 0.0, 0.03, True),
                                      ("factorized", 0.025, 0.0, True)):
        family = evaluate_label(prior, beta, gamma, scale)
        for seed in range(3):
            d = rng.normal(0, 0.3, 5)
            rows.append({"family": family, "prior": prior, "beta": beta, "gamma": gamma, "channel_scale": scale,
                         "seed": seed, "bpp": 0.3 + 0.01 * d[0], "psnr": 28 + d[1], "ms_ssim": 0.95,
                         "lpips": 0.3 - 2 * gamma, "ssimulacra2": 50 + d[2], "rd_cost": 40 + d[3],
                         "d_rd_cost": 2 * d[3], "d_psnr": -30 * gamma + 0.1 * d[4], "d_lpips": -2 * gamma + 0.01 * d[0],
                         "d_ssimulacra2": 100 * gamma + d[2] if seed else np.nan})  # one seed off the curve
    table = pd.DataFrame(rows)
    return table if ssimulacra2 else table.drop(columns=["ssimulacra2", "d_ssimulacra2"])


def evaluate_label(prior, beta, gamma, scale) -> str:
    from lic_utils import evaluate

    return evaluate.family_label({"prior": prior, "beta": beta, "gamma": gamma, "channel_scale": scale})


def test_prior_ablation_figure(tmp_path):
    path = plots.prior_ablation_figure(_ablation_table(), 0.004, tmp_path)
    assert path == tmp_path / "07_prior_ablation.png" and path.stat().st_size > 10_000
    fig = plt.gcf()
    assert len(fig.axes) == 3
    assert "λ = 0.004" in fig._suptitle.get_text() and "3 seeds" in fig._suptitle.get_text()
    ticks = [t.get_text().replace("\n", " · ") for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["factorized · mse", "factorized · mse · no scale", "factorized-gaussian · mse",
                     "hyperprior · mse"]  # the reference first; no loss variants
    assert [c.get_label() for c in fig.axes[2].containers] == ticks  # one mean ± sd per family


def test_perception_distortion_figure(tmp_path):
    path = plots.perception_distortion_figure(_ablation_table(), tmp_path)
    assert path == tmp_path / "06_perception_distortion.png" and path.stat().st_size > 10_000
    fig = plt.gcf()
    assert len(fig.axes) == 2
    labels = [c.get_label() for c in fig.axes[0].containers]
    assert labels == ["factorized · mse", "factorized · mse +lpips γ=0.0067", "factorized · mse +lpips γ=0.03"]
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert notes[0].startswith("γ=0 (0.") and notes[1].startswith("γ=0.0067 (") and notes[2].endswith(" bpp)")
    assert "the same bpp" in fig.axes[0].get_title()
    plots.perception_distortion_figure(_ablation_table(ssimulacra2=False), tmp_path)
    assert len(plt.gcf().axes) == 1  # no SSIMULACRA2 panel without the measure


def test_training_budget_figure(tmp_path):
    table = pd.DataFrame({"steps": [1000, 2000, 4000], "minutes": [2.3, 4.6, 9.2], "bpp": [0.4, 0.3, 0.26],
                          "psnr": [22.0, 24.5, 25.5], "lpips": [0.6, 0.5, 0.47], "webp_psnr": [30.0, 29.4, 29.0],
                          "avif_psnr": [31.0, 30.2, 29.8], "webp_lpips": [0.2, 0.23, 0.25],
                          "avif_lpips": [0.18, 0.21, 0.23]})
    path = plots.training_budget_figure(table, tmp_path)
    assert path == tmp_path / "04_training_budget.png" and path.stat().st_size > 10_000
