"""Evaluation with real files: sweep caching, the Kodak cross-check, and a model's identity in the
caches (its weights fingerprint; run name and settings are labels)."""
import json

import numpy as np
import pandas as pd
import pytest

from lic_utils import evaluate


def test_codec_sweep_is_cached(tmp_path, monkeypatch):
    # JPEG's integer qualities share the CSV's quality column with JPEG 2000's fractional bpp targets,
    # so they come back as floats (5.0): the cache must still recognise them
    images = evaluate.kodak_images(1)
    cache = tmp_path / "sweep.csv"
    first = evaluate.codec_sweep(images, codecs_=["jpeg", "jpeg2000"], n_qualities=2, cache=cache,
                                 progress=False)
    assert len(first) == 4 and cache.exists()
    import dataclasses

    from lic_utils import codecs

    def refuse(*a, **k):
        raise AssertionError("a cached row was measured again")

    for name in ("jpeg", "jpeg2000"):
        monkeypatch.setitem(codecs.CODECS, name, dataclasses.replace(codecs.CODECS[name], _encode=refuse))
    again = evaluate.codec_sweep(images, codecs_=["jpeg", "jpeg2000"], n_qualities=2, cache=cache,
                                 progress=False)
    assert len(pd.read_csv(cache)) == 4
    cols = ["image", "codec", "bpp", "psnr"]
    pd.testing.assert_frame_equal(first[cols], again[cols])


def test_kodak_cross_check_against_the_independent_measurement():
    """Mean over the 24 Kodak images, real files (../shared/data/README.md reference table)."""
    from lic_utils import codecs, data, metrics

    images = evaluate.kodak_images()
    for codec, quality, bpp_ref, psnr_ref in (("jpeg", 5, 0.221, 23.85), ("webp", 5, 0.234, 28.33)):
        bpps, psnrs = [], []
        for _, img in images:
            payload = codecs.CODECS[codec].encode(img, quality)
            decoded = codecs.CODECS[codec].decode(payload)
            bpps.append(len(payload) * 8 / img.shape[0] / img.shape[1])
            psnrs.append(float(metrics.psnr(data.to_tensor(img), data.to_tensor(decoded))))
        if codec == "jpeg":  # optimised tables code the same coefficients in fewer bytes
            assert np.mean(bpps) < 0.8 * bpp_ref
        else:
            assert np.mean(bpps) == pytest.approx(bpp_ref, abs=0.0015), codec
        assert np.mean(psnrs) == pytest.approx(psnr_ref, abs=0.02), codec


def test_rows_measured_otherwise_are_measured_again(tmp_path):
    """A cached codec row made with other settings (JPEG before it was optimised), or without a
    metric of METRICS (before SSIMULACRA2), is dropped and measured again, never reused."""
    images = evaluate.kodak_images(1, crop=64)
    cache = tmp_path / "sweep.csv"
    fresh = evaluate.codec_sweep(images, codecs_=["jpeg"], n_qualities=2, cache=cache, progress=False)
    assert fresh["settings"].eq("4:2:0, optimize, progressive if smaller").all()
    assert fresh["ssimulacra2"].between(-100, 100).all()
    old = pd.read_csv(cache)
    old.loc[0, "settings"], old.loc[0, "bpp"] = "4:2:0", 99.0  # standard tables
    old.loc[1, "ssimulacra2"], old.loc[1, "bpp"] = np.nan, 99.0  # before the metric
    old.to_csv(cache, index=False)
    again = evaluate.codec_sweep(images, codecs_=["jpeg"], n_qualities=2, cache=cache, progress=False)
    cols = ["image", "quality", "bpp", "psnr", "ssimulacra2"]
    key = ["image", "quality"]
    pd.testing.assert_frame_equal(again[cols].sort_values(key).reset_index(drop=True),
                                  fresh[cols].sort_values(key).reset_index(drop=True))
    assert len(pd.read_csv(cache)) == 2


def _rows(model, fp, bpp, psnr, **settings):
    return [{"model": model, "fingerprint": fp, "image": f"im{i}", "bpp": bpp, "psnr": psnr + i,
             "ms_ssim": 0.9, "lpips": 0.3, "prior": "factorized", "channel_scale": True, **settings}
            for i in range(2)]


def test_two_models_with_one_name_are_never_averaged():
    learned = pd.DataFrame(_rows("run-l0.004", "aaa", 0.2, 25.0)
                           + _rows("run-l0.004", "bbb", 0.3, 24.0, channel_scale=False))
    pts = evaluate.learned_points(learned).set_index("fingerprint")
    assert len(pts) == 2 and pts.loc["aaa", "bpp"] == 0.2 and pts.loc["bbb", "psnr"] == 24.5
    assert pts.loc["bbb", "family"] == "factorized · mse · no scale"


def test_rows_from_before_fingerprints_are_told_apart_by_run_name(tmp_path):
    """The committed cpu caches have `checkpoint_sha` (a file hash) and no fingerprint column."""
    legacy = pd.DataFrame(_rows("a", None, 0.2, 25.0) + _rows("b", None, 0.3, 24.0)).drop(
        columns="fingerprint").assign(checkpoint_sha="f00d")
    legacy.to_csv(tmp_path / "learned.csv", index=False)
    rows = evaluate.read_rows(tmp_path / "learned.csv")
    assert rows["fingerprint"].isna().all() and rows["fingerprint"].dtype == object
    pts = evaluate.learned_points(rows).set_index("model")
    assert pts.loc["a", "psnr"] == 25.5 and pts.loc["b", "bpp"] == 0.3


def test_fingerprints_that_look_like_numbers_stay_text(tmp_path):
    pd.DataFrame(_rows("a", "0123456789012345", 0.2, 25.0)).to_csv(tmp_path / "c.csv", index=False)
    assert evaluate.read_rows(tmp_path / "c.csv")["fingerprint"].iloc[0] == "0123456789012345"


def test_select_picks_models_by_their_settings():
    pts = pd.DataFrame({"prior": ["factorized", "factorized", "hyperprior"], "beta": [0.0, 0.025, 0.0],
                        "gamma": [0.0, 0.0, 0.0], "channel_scale": [True, True, True]})
    assert evaluate.select(pts, prior="factorized", beta=0).index.tolist() == [0]
    assert evaluate.select(pts, beta=0, gamma=0).index.tolist() == [0, 2]
    assert evaluate.select(pts).index.tolist() == [0, 1, 2]


def _save(run, seed, extra=None):
    import torch

    from lic_utils import models

    run.mkdir(exist_ok=True)
    torch.manual_seed(seed)
    model = models.build_model({"prior": "factorized", "N": 8, "M": 12})
    models.save_checkpoint(run / "checkpoint.pt", model, extra=extra)
    return models.load_checkpoint(run / "checkpoint.pt").fingerprint()


def test_rows_are_keyed_by_the_weights_not_the_checkpoint_file(tmp_path, monkeypatch, kodim01):
    """The same weights saved again with other trainer state (another file) are not re-measured;
    the rows carry the fingerprint of the .lic files, and the run's settings as labels."""
    run = tmp_path / "run"
    fp = _save(run, 0, extra={"step": 10})
    (run / "config.json").write_text(json.dumps({"model": {"prior": "factorized", "N": 8, "M": 12},
                                                 "loss": {"lmbda": 0.004, "beta": 0.0, "gamma": 0.03},
                                                 "steps": 40}))
    images = [("kodim01", kodim01[:64, :64])]
    cache = tmp_path / "learned.csv"
    lic_dir = tmp_path / "lic"
    first = evaluate.evaluate_model(run, images, cache=cache, lic_dir=lic_dir, progress=False)
    from lic_utils import bitstream

    lic = bitstream.parse((lic_dir / "run" / "kodim01.lic").read_bytes())
    assert first["fingerprint"].tolist() == [fp] == [lic.fingerprint]
    assert first[["prior", "N", "lmbda", "gamma", "steps"]].iloc[0].tolist() == ["factorized", 8, 0.004, 0.03, 40]
    assert _save(run, 0, extra={"step": 20}) == fp  # same weights, another file
    monkeypatch.setattr(evaluate, "measure", lambda *a: pytest.fail("the same weights were measured again"))
    again = evaluate.evaluate_model(run, images, cache=cache, progress=False)
    assert again["psnr"].tolist() == first["psnr"].tolist()


def test_a_renamed_run_reuses_its_cached_rows_under_its_new_name(tmp_path, monkeypatch, kodim01):
    import shutil

    _save(tmp_path / "old-name", 0)
    images = [("kodim01", kodim01[:64, :64])]
    cache = tmp_path / "learned.csv"
    first = evaluate.evaluate_model(tmp_path / "old-name", images, cache=cache, progress=False)
    shutil.move(tmp_path / "old-name", tmp_path / "new-name")
    monkeypatch.setattr(evaluate, "measure", lambda *a: pytest.fail("a cached model was evaluated again"))
    again = evaluate.evaluate_model(tmp_path / "new-name", images, cache=cache, progress=False)
    assert again["model"].tolist() == ["new-name"] and again["psnr"].tolist() == first["psnr"].tolist()
    cached = pd.read_csv(cache)
    assert cached["model"].tolist() == ["new-name"]
    assert cached["checkpoint"].tolist() == [str(tmp_path / "new-name" / "checkpoint.pt")]


def test_a_retrained_run_replaces_its_old_rows_in_the_caches(tmp_path, kodim01):
    """Also the rows of its name from before fingerprints; other runs' rows are kept throughout."""
    images = [("kodim01", kodim01[:64, :64])]
    learned_csv, matched_csv = tmp_path / "learned.csv", tmp_path / "matched.csv"
    legacy = {"checkpoint_sha": "f00d", "image": "kodim01", "bpp": 0.5, "psnr": 30.0, "ms_ssim": 0.9,
              "lpips": 0.2}
    pd.DataFrame([{"model": name, **legacy} for name in ("run-l0.004", "gone")]).to_csv(learned_csv,
                                                                                       index=False)
    pd.DataFrame([{"model": name, "codec": "jpeg", **legacy} for name in ("run-l0.004", "gone")]
                 ).to_csv(matched_csv, index=False)
    _save(tmp_path / "other", 0)
    evaluate.evaluate_model(tmp_path / "other", images, cache=learned_csv, progress=False)
    fps = []
    for seed in (1, 2):  # train, then "retrain" the same run to different weights
        _save(tmp_path / "run-l0.004", seed)
        learned = evaluate.evaluate_model(tmp_path / "run-l0.004", images, cache=learned_csv,
                                          progress=False)
        evaluate.matched_codecs(learned, images, ["jpeg"], cache=matched_csv, progress=False)
        fps.append(learned.fingerprint.iloc[0])
    assert fps[0] != fps[1]
    cached = evaluate.read_rows(learned_csv).set_index("model")
    assert sorted(cached.index) == ["gone", "other", "run-l0.004"]
    assert cached.loc["run-l0.004", "fingerprint"] == fps[1] and pd.isna(cached.loc["gone", "fingerprint"])
    matched = evaluate.read_rows(matched_csv)
    assert matched.set_index("model").loc["run-l0.004", "fingerprint"] == fps[1]
    assert sorted(matched.model) == ["gone", "run-l0.004"]


def test_cli_evaluate_prints_the_model_and_its_codecs(tmp_path, capsys):
    from lic_utils import cli

    fp = _save(tmp_path / "run", 0)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--images", "1", "--codecs", "jpeg",
                     "--results", str(tmp_path)]) == 0
    model, jpeg = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert model["model"] == "run" and model["fingerprint"] == fp and model["images"] == 1
    assert jpeg["codec"] == "jpeg" and jpeg["at_bpp_of"] == "run"
    assert evaluate.read_rows(tmp_path / "matched_kodak.csv")["fingerprint"].tolist() == [fp]


@pytest.mark.parametrize("n", [0, -1, 25])
def test_cli_refuses_an_image_count_outside_kodak(tmp_path, capsys, n):
    """--images 0 failed with a KeyError, and -1 silently evaluated 23 images (a Python slice)."""
    from lic_utils import cli

    _save(tmp_path / "run", 0)
    for command in (["evaluate", str(tmp_path / "run"), "--results", str(tmp_path)], ["bench"]):
        assert cli.main([*command, "--images", str(n)]) == 1
        assert capsys.readouterr().err == f"error: the number of Kodak images must be in 1..24, got {n}\n"
    assert not (tmp_path / "learned_kodak.csv").exists()


def test_a_seed_other_than_0_is_its_own_family():
    """The seed-spread runs never join an RD curve: seed ≥ 1 is named in the family, and
    family_label(seed=False) names the family the seed belongs to."""
    row = {"prior": "factorized", "beta": 0.0, "gamma": 0.01, "channel_scale": False, "seed": 2}
    assert evaluate.family_label(row) == "factorized · mse +lpips γ=0.01 · no scale · seed 2"
    assert evaluate.family_label(row, seed=False) == "factorized · mse +lpips γ=0.01 · no scale"
    for seed in (0, np.nan, None):
        assert evaluate.family_label({**row, "seed": seed}) == "factorized · mse +lpips γ=0.01 · no scale"


def test_an_interrupted_evaluation_keeps_its_rows_and_resumes(tmp_path, monkeypatch, kodim01):
    _save(tmp_path / "run", 0)
    images = [(f"crop{i}", kodim01[64 * i:64 * i + 64, :64]) for i in range(3)]
    cache = tmp_path / "learned.csv"
    real, calls = evaluate.measure, []

    def interrupted(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third image
        return real(*a)

    monkeypatch.setattr(evaluate, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_model(tmp_path / "run", images, cache=cache, progress=False)
    assert pd.read_csv(cache)["image"].tolist() == ["crop0", "crop1"]
    calls.clear()
    monkeypatch.setattr(evaluate, "measure", lambda *a: calls.append(1) or real(*a))
    rows = evaluate.evaluate_model(tmp_path / "run", images, cache=cache, progress=False)
    assert len(calls) == 1 and sorted(rows["image"]) == ["crop0", "crop1", "crop2"]


def test_two_evaluations_into_one_cache_keep_both_models_rows(tmp_path, monkeypatch, kodim01):
    """The second process read the cache before the first wrote: its save merges, not overwrites."""
    fp_a, fp_b = _save(tmp_path / "a", 0), _save(tmp_path / "b", 1)
    images = [("kodim01", kodim01[:64, :64])]
    cache = tmp_path / "learned.csv"
    real, nested = evaluate.measure, []

    def meanwhile(*a):
        if not nested:  # while b is measured, a's whole evaluation runs and writes the cache
            nested.append("a")
            evaluate.evaluate_model(tmp_path / "a", images, cache=cache, progress=False)
        return real(*a)

    monkeypatch.setattr(evaluate, "measure", meanwhile)
    evaluate.evaluate_model(tmp_path / "b", images, cache=cache, progress=False)
    assert sorted(pd.read_csv(cache, dtype={"fingerprint": str})["fingerprint"]) == sorted([fp_a, fp_b])
