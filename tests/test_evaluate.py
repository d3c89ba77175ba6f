"""Evaluation: BD-rate on synthetic curves with known answers, sweep caching, and the Kodak cross-check."""
import numpy as np
import pandas as pd
import pytest

from lic_utils import evaluate


def _curve(bpp, psnr):
    return pd.DataFrame({"bpp": bpp, "psnr": psnr, "lpips": 1 / np.asarray(psnr), "ms_ssim_db": np.asarray(psnr) / 2})


ANCHOR = _curve([0.1, 0.2, 0.4, 0.8, 1.6], [26.0, 28.5, 31.0, 34.0, 37.5])


def test_bd_rate_of_a_curve_needing_20_percent_fewer_bits():
    test = ANCHOR.assign(bpp=ANCHOR.bpp * 0.8)
    res = evaluate.bd_rate_quality(ANCHOR, test, "psnr")
    assert res["bd_rate"] == pytest.approx(-20.0, abs=1e-6)


def test_bd_quality_of_a_curve_one_db_higher():
    test = ANCHOR.assign(psnr=ANCHOR.psnr + 1.0)
    res = evaluate.bd_rate_quality(ANCHOR, test, "psnr")
    assert res["bd_quality"] == pytest.approx(1.0, abs=1e-6)
    assert res["bd_rate"] < 0


def test_bd_for_lpips_counts_lower_as_better():
    better = ANCHOR.assign(bpp=ANCHOR.bpp * 0.5)  # same LPIPS with half the bits
    assert evaluate.bd_rate_quality(ANCHOR, better, "lpips")["bd_rate"] == pytest.approx(-50.0, abs=1e-6)


def test_bd_needs_enough_points():
    assert np.isnan(evaluate.bd_rate_quality(ANCHOR, ANCHOR.iloc[:3], "psnr")["bd_rate"])


def test_codec_sweep_is_cached(tmp_path, monkeypatch):
    # JPEG's integer qualities share the CSV's quality column with JPEG 2000's fractional bpp targets,
    # so they come back as floats (5.0): the cache must still recognise them
    images = evaluate.kodak_images(1)
    cache = tmp_path / "sweep.csv"
    first = evaluate.codec_sweep(images, codecs_=["jpeg", "jpeg2000"], n_qualities=2, cache=cache, progress=False)
    assert len(first) == 4 and cache.exists()
    from lic_utils import codecs

    def refuse(*a, **k):
        raise AssertionError("a cached row was measured again")

    import dataclasses

    for name in ("jpeg", "jpeg2000"):
        monkeypatch.setitem(codecs.CODECS, name, dataclasses.replace(codecs.CODECS[name], _encode=refuse))
    again = evaluate.codec_sweep(images, codecs_=["jpeg", "jpeg2000"], n_qualities=2, cache=cache, progress=False)
    assert len(pd.read_csv(cache)) == 4
    pd.testing.assert_frame_equal(first[["image", "codec", "bpp", "psnr"]], again[["image", "codec", "bpp", "psnr"]])


def test_kodak_cross_check_against_the_independent_measurement():
    """Mean over the 24 Kodak images, real files (../shared/data/README.md reference table)."""
    from lic_utils import codecs, data, metrics

    images = evaluate.kodak_images()
    for codec, quality, bpp_ref, psnr_ref in (("jpeg", 5, 0.221, 23.85), ("webp", 5, 0.234, 28.33)):
        bpps, psnrs = [], []
        for _, img in images:
            payload = codecs.CODECS[codec].encode(img, quality)
            bpps.append(len(payload) * 8 / img.shape[0] / img.shape[1])
            psnrs.append(float(metrics.psnr(data.to_tensor(img), data.to_tensor(codecs.CODECS[codec].decode(payload)))))
        assert np.mean(bpps) == pytest.approx(bpp_ref, abs=0.0015), codec
        assert np.mean(psnrs) == pytest.approx(psnr_ref, abs=0.02), codec


def test_standing_picks_the_best_learned_curve_per_metric():
    at = pd.DataFrame([
        {"curve": "mse", "kind": "learned", "bpp": 0.2, "psnr": 26.0, "ms_ssim": 0.90, "lpips": 0.40},
        {"curve": "lpips", "kind": "learned", "bpp": 0.2, "psnr": 25.0, "ms_ssim": 0.91, "lpips": 0.30},
        {"curve": "mse", "kind": "learned", "bpp": 0.5, "psnr": np.nan, "ms_ssim": np.nan, "lpips": np.nan},
        {"curve": "webp", "kind": "classical", "bpp": 0.2, "psnr": 27.0, "ms_ssim": 0.92, "lpips": 0.35},
        {"curve": "webp", "kind": "classical", "bpp": 0.5, "psnr": 30.0, "ms_ssim": 0.95, "lpips": 0.20},
    ])
    s = evaluate.standing(at).set_index("bpp")
    assert s.loc[0.2, "d_psnr"] == pytest.approx(-1.0) and s.loc[0.2, "best_psnr"] == "mse"
    assert s.loc[0.2, "d_ms_ssim"] == pytest.approx(-0.01) and s.loc[0.2, "best_ms_ssim"] == "lpips"
    assert s.loc[0.2, "d_lpips"] == pytest.approx(-0.05) and s.loc[0.2, "best_lpips"] == "lpips"
    assert np.isnan(s.loc[0.5, "d_psnr"]) and s.loc[0.5, "best_psnr"] is None


def test_matched_verdicts_count_majority_wins_and_unreachable_points():
    summary = pd.DataFrame([
        # model, codec, images, below floor, learned bpp, psnr win share, ms-ssim share, lpips share
        ("a", "jpeg", 24, 20, 0.10, np.nan, np.nan, np.nan),  # jpeg cannot go that low on most images
        ("b", "jpeg", 24, 0, 0.20, 0.9, 0.9, 0.2),
        ("c", "jpeg", 24, 0, 0.40, 0.5, 0.1, 0.6),  # exactly half is not a win
        ("d", "jpeg", 24, 0, 0.80, 1.0, 1.0, 1.0),  # outside 0.1–0.5 bpp
    ], columns=["model", "codec", "images", "codec_below_floor", "learned_bpp",
                "learned_wins_psnr", "learned_wins_ms_ssim", "learned_wins_lpips"])
    summary["d_psnr"] = [np.nan, 2.0, -1.0, 5.0]
    pts = pd.DataFrame({"model": list("abcd"), "family": ["mse"] * 4})
    v = evaluate.matched_verdicts(summary, pts).iloc[0]
    assert v.points == 3 and v.codec_cannot_reach == [0.1]
    assert v.wins_psnr == [0.2] and v.loses_psnr == [0.4]
    assert v.wins_lpips == [0.4] and v.loses_lpips == [0.2]
    assert (v.d_psnr_min, v.d_psnr_max) == (-1.0, 2.0)  # the unreachable and out-of-range points do not count


def _learned_rows(model, sha, bpp, psnr):
    return [{"model": model, "checkpoint_sha": sha, "image": f"im{i}", "bpp": bpp, "psnr": psnr + i,
             "ms_ssim": 0.9, "lpips": 0.3, "prior": "factorized", "channel_scale": sha == "aaa"} for i in range(2)]


def test_two_checkpoints_with_one_name_are_never_averaged():
    learned = pd.DataFrame(_learned_rows("run-l0.004", "aaa", 0.2, 25.0) + _learned_rows("run-l0.004", "bbb", 0.3, 24.0))
    pts = evaluate.learned_points(learned).set_index("checkpoint_sha")
    assert len(pts) == 2 and pts.loc["aaa", "bpp"] == 0.2 and pts.loc["bbb", "psnr"] == 24.5
    assert pts.loc["bbb", "family"].endswith("no scale")
    matched = pd.DataFrame([{"model": "run-l0.004", "checkpoint_sha": sha, "image": f"im{i}", "codec": "webp",
                             "below_floor": False, "bpp": 0.2, "psnr": 24.6, "ms_ssim": 0.9, "lpips": 0.3}
                            for sha in ("aaa", "bbb") for i in range(2)])
    summary = evaluate.matched_summary(learned, matched).set_index("checkpoint_sha")
    assert summary.loc["aaa", "d_psnr"] == pytest.approx(0.9) and summary.loc["bbb", "d_psnr"] == pytest.approx(-0.1)
    assert summary.loc["aaa", "learned_wins_psnr"] == 1.0 and summary.loc["bbb", "learned_wins_psnr"] == 0.5


def test_a_renamed_run_reuses_its_cached_rows_under_its_new_name(tmp_path, monkeypatch, kodim01):
    import shutil

    from lic_utils import models

    run = tmp_path / "old-name"
    run.mkdir()
    models.save_checkpoint(run / "checkpoint.pt", models.build_model({"prior": "factorized", "N": 8, "M": 12}))
    images = [("kodim01", kodim01[:64, :64])]
    cache = tmp_path / "learned.csv"
    first = evaluate.evaluate_model(run, images, cache=cache, progress=False)
    shutil.move(run, tmp_path / "new-name")
    monkeypatch.setattr(evaluate, "measure", lambda *a: pytest.fail("a cached checkpoint was evaluated again"))
    again = evaluate.evaluate_model(tmp_path / "new-name", images, cache=cache, progress=False)
    assert again["model"].tolist() == ["new-name"] and again["psnr"].tolist() == first["psnr"].tolist()
    assert pd.read_csv(cache)["model"].tolist() == ["new-name"]


def test_a_retrained_run_replaces_its_old_rows_in_the_caches(tmp_path, kodim01):
    from lic_utils import models

    run = tmp_path / "run-l0.004"
    run.mkdir()
    images = [("kodim01", kodim01[:64, :64])]
    learned_csv, matched_csv, other = tmp_path / "learned.csv", tmp_path / "matched.csv", tmp_path / "other"
    other.mkdir()
    models.save_checkpoint(other / "checkpoint.pt", models.build_model({"prior": "factorized", "N": 8, "M": 12}))
    evaluate.evaluate_model(other, images, cache=learned_csv, progress=False)  # another run: kept throughout
    shas = []
    for seed in (0, 1):  # train, then "retrain" the same run to different weights
        import torch

        torch.manual_seed(seed)
        models.save_checkpoint(run / "checkpoint.pt", models.build_model({"prior": "factorized", "N": 8, "M": 12}))
        learned = evaluate.evaluate_model(run, images, cache=learned_csv, progress=False)
        evaluate.matched_codecs(learned, images, ["jpeg"], cache=matched_csv, progress=False)
        shas.append(learned.checkpoint_sha.iloc[0])
    assert shas[0] != shas[1]
    cached = pd.read_csv(learned_csv)
    assert sorted(cached.model) == ["other", "run-l0.004"]
    assert cached.set_index("model").loc["run-l0.004", "checkpoint_sha"] == shas[1]
    assert pd.read_csv(matched_csv).checkpoint_sha.tolist() == [shas[1]]
