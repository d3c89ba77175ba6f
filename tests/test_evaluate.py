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
