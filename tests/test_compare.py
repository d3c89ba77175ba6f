"""Learned against classical: BD-rate on synthetic curves with known answers, standings, verdicts at
equal bytes, the two ablation tables, and the claims check of notebook 09 (compare.summarize)."""
import ast

import numpy as np
import pandas as pd
import pytest

from lic_utils import compare, evaluate


def _curve(bpp, psnr):
    return pd.DataFrame({"bpp": bpp, "psnr": psnr, "lpips": 1 / np.asarray(psnr),
                         "ms_ssim_db": np.asarray(psnr) / 2})


ANCHOR = _curve([0.1, 0.2, 0.4, 0.8, 1.6], [26.0, 28.5, 31.0, 34.0, 37.5])


def test_bd_rate_of_a_curve_needing_20_percent_fewer_bits():
    test = ANCHOR.assign(bpp=ANCHOR.bpp * 0.8)
    assert compare.bd_rate_quality(ANCHOR, test, "psnr")["bd_rate"] == pytest.approx(-20.0, abs=1e-6)


def test_bd_quality_of_a_curve_one_db_higher():
    res = compare.bd_rate_quality(ANCHOR, ANCHOR.assign(psnr=ANCHOR.psnr + 1.0), "psnr")
    assert res["bd_quality"] == pytest.approx(1.0, abs=1e-6)
    assert res["bd_rate"] < 0


def test_bd_for_lpips_counts_lower_as_better():
    better = ANCHOR.assign(bpp=ANCHOR.bpp * 0.5)  # same LPIPS with half the bits
    assert compare.bd_rate_quality(ANCHOR, better, "lpips")["bd_rate"] == pytest.approx(-50.0, abs=1e-6)


def test_bd_needs_enough_points():
    assert np.isnan(compare.bd_rate_quality(ANCHOR, ANCHOR.iloc[:3], "psnr")["bd_rate"])


def test_rd_cost_is_lambda_times_rate_plus_mse():
    pts = pd.DataFrame({"bpp": [0.5, 0.2], "psnr": [20.0, 30.0]})
    assert compare.rd_cost(pts, 0.01).tolist() == pytest.approx([0.005 + 0.01, 0.002 + 0.001])


def test_standing_picks_the_best_learned_curve_per_metric():
    at = pd.DataFrame([
        {"curve": "mse", "kind": "learned", "bpp": 0.2, "psnr": 26.0, "ms_ssim": 0.90, "lpips": 0.40},
        {"curve": "lpips", "kind": "learned", "bpp": 0.2, "psnr": 25.0, "ms_ssim": 0.91, "lpips": 0.30},
        {"curve": "mse", "kind": "learned", "bpp": 0.5, "psnr": np.nan, "ms_ssim": np.nan, "lpips": np.nan},
        {"curve": "webp", "kind": "classical", "bpp": 0.2, "psnr": 27.0, "ms_ssim": 0.92, "lpips": 0.35},
        {"curve": "webp", "kind": "classical", "bpp": 0.5, "psnr": 30.0, "ms_ssim": 0.95, "lpips": 0.20},
    ])
    s = compare.standing(at).set_index("bpp")
    assert s.loc[0.2, "d_psnr"] == pytest.approx(-1.0) and s.loc[0.2, "best_psnr"] == "mse"
    assert s.loc[0.2, "d_ms_ssim"] == pytest.approx(-0.01) and s.loc[0.2, "best_ms_ssim"] == "lpips"
    assert s.loc[0.2, "d_lpips"] == pytest.approx(-0.05) and s.loc[0.2, "best_lpips"] == "lpips"
    assert np.isnan(s.loc[0.5, "d_psnr"]) and s.loc[0.5, "best_psnr"] is None


def test_ssimulacra2_is_compared_higher_is_better_and_left_out_where_unmeasured():
    """The held-out metric joins every comparison when the tables hold it; tables made before it
    (no column) give NaN or leave it out instead of failing."""
    at = pd.DataFrame([
        {"curve": "mse", "kind": "learned", "bpp": 0.2, "psnr": 26.0, "ssimulacra2": 40.0},
        {"curve": "lpips", "kind": "learned", "bpp": 0.2, "psnr": 25.0, "ssimulacra2": 45.0},
        {"curve": "webp", "kind": "classical", "bpp": 0.2, "psnr": 27.0, "ssimulacra2": 50.0},
    ])
    s = compare.standing(at).iloc[0]
    assert s["d_ssimulacra2"] == pytest.approx(-5.0) and s["best_ssimulacra2"] == "lpips"
    assert "d_ssimulacra2" not in compare.standing(at.drop(columns="ssimulacra2"))
    curve = pd.DataFrame({"bpp": [0.1, 0.2, 0.4, 0.8], "psnr": [25.0, 27, 29, 31]})
    assert np.isnan(compare.at_bpp(curve, 0.2, "ssimulacra2"))
    assert np.isnan(compare.bd_rate_quality(curve, curve, "ssimulacra2")["bd_rate"])
    better = curve.assign(ssimulacra2=[20.0, 40, 60, 80])
    assert compare.bd_rate_quality(better.assign(ssimulacra2=better.ssimulacra2 - 10), better,
                                   "ssimulacra2")["bd_rate"] < 0


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
    summary["fingerprint"] = list("1234")
    pts = pd.DataFrame({"model": list("abcd"), "fingerprint": list("1234"), "family": ["mse"] * 4})
    v = compare.matched_verdicts(summary, pts).iloc[0]
    assert v.points == 3 and v.codec_cannot_reach == [0.1]
    assert v.wins_psnr == [0.2] and v.loses_psnr == [0.4]
    assert v.wins_lpips == [0.4] and v.loses_lpips == [0.2]
    assert (v.d_psnr_min, v.d_psnr_max) == (-1.0, 2.0)  # the unreachable and out-of-range points do not count


def _learned(model, fp, bpp, psnr):
    return [{"model": model, "fingerprint": fp, "image": f"im{i}", "bpp": bpp, "psnr": psnr + i,
             "ms_ssim": 0.9, "lpips": 0.3} for i in range(2)]


@pytest.mark.parametrize("fps", [("aaa", "bbb"), (None, None)], ids=["fingerprints", "before fingerprints"])
def test_matched_summary_per_model_at_equal_bytes(fps):
    """Two models (told apart by weights, or by run name for rows from before fingerprints)."""
    learned = pd.DataFrame(_learned("x", fps[0], 0.2, 25.0) + _learned("y", fps[1], 0.3, 24.0))
    matched = pd.DataFrame([{"model": m, "fingerprint": fp, "image": f"im{i}", "codec": "webp",
                             "below_floor": i == 1 and m == "y", "bpp": 0.2, "psnr": 24.6, "ms_ssim": 0.9,
                             "lpips": 0.3} for m, fp in zip("xy", fps) for i in range(2)])
    summary = compare.matched_summary(learned, matched).set_index("model")
    assert summary.loc["x", "d_psnr"] == pytest.approx(0.9) and summary.loc["x", "learned_wins_psnr"] == 1.0
    assert summary.loc["y", "d_psnr"] == pytest.approx(-0.6) and summary.loc["y", "learned_wins_psnr"] == 0.0
    assert summary.loc["y", "codec_below_floor"] == 1 and summary.loc["x", "learned_bpp"] == 0.2
    assert "learned_wins_ssimulacra2" not in summary  # neither table holds the held-out metric
    held_out = compare.matched_summary(learned.assign(ssimulacra2=30.0), matched.assign(ssimulacra2=35.0))
    assert (held_out["d_ssimulacra2"] == -5.0).all() and (held_out["learned_wins_ssimulacra2"] == 0.0).all()


def _point(family_settings, bpp, psnr, lpips=0.3, ms_ssim=0.9, lmbda=0.004, model=None):
    prior, beta, gamma, scale = family_settings
    row = {"prior": prior, "beta": beta, "gamma": gamma, "channel_scale": scale, "lmbda": lmbda,
           "bpp": bpp, "psnr": psnr, "ms_ssim": ms_ssim, "lpips": lpips, "encode_ms": 1.0,
           "decode_ms": 1.0, "n_images": 2}
    row["model"] = model or f"{prior}-{beta}-{gamma}-{scale}-{lmbda}"
    row["fingerprint"] = row["model"]
    row["family"] = evaluate.family_label(row)
    return row


MSE, MSSSIM, LPIPS = ("factorized", 0.0, 0.0, True), ("factorized", 0.025, 0.0, True), \
    ("factorized", 0.0, 0.002, True)
NOSCALE, HYPER = ("factorized", 0.0, 0.0, False), ("hyperprior", 0.0, 0.0, True)


def _study_points():
    """MSE, +MS-SSIM and +LPIPS curves (3 λ each), LPIPS 10 % lower for +LPIPS, and single points."""
    rows = []
    for lmbda, bpp in ((0.016, 0.1), (0.004, 0.2), (0.001, 0.4)):
        psnr = 25 + 5 * np.log2(bpp / 0.1)
        rows += [_point(MSE, bpp, psnr, lmbda=lmbda), _point(MSSSIM, bpp, psnr - 1, ms_ssim=0.95, lmbda=lmbda),
                 _point(LPIPS, bpp, psnr - 2, lpips=0.27, lmbda=lmbda)]
    rows += [_point(NOSCALE, 0.19, 24.0), _point(HYPER, 0.18, 30.0)]
    return evaluate.learned_points(pd.DataFrame(rows))


def _codec_curves():
    """Linear in log(bpp), as at_bpp interpolates: WebP 26 dB at 0.2 bpp, JPEG 10 dB below WebP."""
    return pd.DataFrame([{"codec": c, "bpp": b, "psnr": 20 + 3 * np.log2(b / 0.05) + shift,
                          "ms_ssim": 0.9, "lpips": 0.3}
                         for c, shift in (("webp", 0.0), ("jpeg", -10.0)) for b in (0.05, 0.2, 0.8)])


def test_loss_ablation_reads_each_loss_curve_at_the_common_bitrates():
    table = compare.loss_ablation(_study_points())
    assert sorted(table.bpp.unique()) == [0.1, 0.15, 0.2, 0.3]  # 0.5 lies beyond every curve
    assert set(table.curve) == {"factorized · mse", "factorized · mse +ms-ssim β=0.025",
                                "factorized · mse +lpips γ=0.002"}  # no single points, no other prior
    mse = table[table.curve == "factorized · mse"].set_index("bpp")
    assert mse.loc[0.2, "psnr"] == pytest.approx(30.0) and mse.loc[0.15, "psnr"] == pytest.approx(25 + 5 * np.log2(1.5))
    assert table.set_index("curve").loc["factorized · mse +lpips γ=0.002", "gamma"].iloc[0] == 0.002


def test_prior_ablation_keeps_the_mse_models_at_the_ablation_lambda():
    table = compare.prior_ablation(_study_points(), 0.004)
    assert sorted(table.family) == ["factorized · mse", "factorized · mse · no scale", "hyperprior · mse"]


def test_a_verdict_needs_the_difference_beyond_the_noise():
    assert compare.verdict(0.5, 0.2) == compare.HOLDS and compare.verdict(-0.5, 0.2) == compare.FAILS
    assert compare.verdict(0.1, 0.2) == compare.OPEN and compare.verdict(np.nan, 0.2) == compare.OPEN
    assert compare.verdict(-0.5, 0.2, claim_if_positive=False) == compare.HOLDS
    assert compare.verdict(0.01, np.nan) == compare.HOLDS  # one seed: the sign decides
    assert compare.difference_noise(0.3, 0.4) == pytest.approx(2 * 0.5)
    assert compare.difference_noise(0.3, 0.3, n=(3, 3)) == pytest.approx(2 * np.sqrt(0.06))


LP01 = ("factorized", 0.0, 0.01, True)
JITTER = (0.0, 0.05, -0.05)  # three seeds


def _seeded_study():
    """Four λ of MSE, +MS-SSIM and +LPIPS (γ = 0.01) curves, PSNR 25 + 5·log2(bpp / 0.1) for MSE
    (1 and 2 dB less for the others), SSIMULACRA2 2·PSNR − 10 plus 0, +1 and +7; at the ablation λ
    (0.004, 0.2 bpp) three seeds of every single-point setting, γ = 0.002 at 0.21 bpp with +3 on
    SSIMULACRA2 at equal bpp, and a hyperprior 0.5 dB below the MSE curve."""
    def pt(fam, bpp, psnr, s2_offset=0.0, seed=0, lmbda=0.004, lpips=0.3):
        row = _point(fam, bpp, psnr, lpips=lpips, lmbda=lmbda, model=f"{fam}-{lmbda}-{seed}")
        return {**row, "ssimulacra2": 2 * psnr - 10 + s2_offset, "seed": seed, "N": 8, "M": 12}

    mse_at = lambda b: 25 + 5 * np.log2(b / 0.1)  # noqa: E731
    rows = []
    for lmbda, bpp in ((0.016, 0.1), (0.008, 0.141), (0.004, 0.2), (0.001, 0.4)):
        rows += [pt(MSE, bpp, mse_at(bpp), lmbda=lmbda), pt(MSSSIM, bpp, mse_at(bpp) - 1, 1, lmbda=lmbda),
                 pt(LP01, bpp, mse_at(bpp) - 2, 7, lmbda=lmbda, lpips=0.2)]
    for seed, j in enumerate(JITTER):
        if seed:
            rows += [pt(MSE, 0.2, 30 + j, 2 * -j, seed), pt(MSSSIM, 0.2, 29 + j, 1 - 2 * j, seed),
                     pt(LP01, 0.2, 28 + j, 7 - 2 * j, seed, lpips=0.2)]
        rows += [pt(LPIPS, 0.21 + j / 50, mse_at(0.21 + j / 50) + j, 3 - 2 * j, seed, lpips=0.25),
                 pt(HYPER, 0.2, 29.5 + j, 0, seed), pt(NOSCALE, 0.2, 29.9 + j, 0, seed)]
    return evaluate.learned_points(pd.DataFrame(rows))


def _seeded_codecs():
    """JPEG 10 dB below the learned curves; WebP 24 + 6·log2(bpp / 0.1): behind the MSE curve below
    0.2 bpp, ahead above (in SSIMULACRA2 too)."""
    rows = []
    for b in (0.05, 0.1, 0.2, 0.4, 0.8):
        x = np.log2(b / 0.1)
        for codec, psnr, s2 in (("webp", 24 + 6 * x, 2 * (24 + 6 * x) - 8), ("jpeg", 15 + 5 * x, 20 + 10 * x)):
            rows.append({"codec": codec, "bpp": b, "psnr": psnr, "ms_ssim": 0.9, "lpips": 0.3, "ssimulacra2": s2})
    return pd.DataFrame(rows)


def test_the_ablation_points_are_differences_at_equal_bpp_with_their_seed_spread():
    table = compare.ablation_points(_seeded_study(), 0.004)
    assert len(table) == 3 * 6 and set(table.seed) == {0, 1, 2}  # six settings, three seeds each
    lp = table[table.gamma == 0.002].sort_values("seed")
    assert lp.d_psnr.tolist() == pytest.approx(list(JITTER)) and lp.d_ssimulacra2.round(6).tolist() == [3.0, 3.0, 3.0]
    own = table[table.gamma == 0.01].sort_values("seed")  # about its own curve (28 dB at 0.2 bpp)
    assert own.r_psnr.tolist() == pytest.approx(list(JITTER))
    assert table[table.prior == "hyperprior"].r_psnr.isna().all()  # a single-point family: no curve
    spread = compare.seed_spread(table).set_index("family")
    assert spread.loc["hyperprior · mse", "d_psnr_mean"] == pytest.approx(-0.5)
    assert spread.loc["hyperprior · mse", "d_psnr_std"] == pytest.approx(0.05)
    assert spread.loc["factorized · mse", "d_rd_cost_mean"] == pytest.approx(0.0)
    assert (spread.seeds == 3).all()


def test_each_original_claim_gets_a_verdict_from_the_measure_that_decides_it():
    claims = compare.claims(_seeded_study(), _seeded_codecs(), 0.004)
    assert set(claims.claim) == set(compare.ORIGINAL_CLAIMS.values())  # verbatim
    v = {(r.claim_id, r.codec): r.verdict for r in claims.itertuples()}
    # MSE is 1 dB above the next loss variant in PSNR, but 3 below +LPIPS in SSIMULACRA2
    assert v[("mse_best", "")] == compare.FAILS
    assert "+1.00 dB at 0.2 bpp" in claims.set_index("claim_id").loc["mse_best", "measured"]
    assert v[("msssim_hurts", "")] == compare.HOLDS  # −1 dB and −1 in SSIMULACRA2, beyond the noise
    assert v[("lpips_cheap", "")] == compare.HOLDS  # +3 SSIMULACRA2 at equal bpp for 5 % more bits
    assert v[("factorized_wins", "")] == compare.HOLDS  # the hyperprior is 0.5 dB below at equal bpp
    assert v[("low_rate_crossover", "webp")] == compare.HOLDS  # ahead below 0.2 bpp, behind above
    assert v[("low_rate_crossover", "jpeg")] == compare.FAILS  # ahead everywhere: no crossover
    assert v[("perceptual_savings", "jpeg")] == compare.HOLDS and v[("perceptual_savings", "webp")] == compare.FAILS


def test_claims_within_the_seed_noise_are_inconclusive():
    pts = _seeded_study()
    hyper = pts.prior == "hyperprior"
    pts.loc[hyper, "psnr"] += 0.5  # now level with the factorized prior: only the seeds differ
    pts.loc[hyper, "ssimulacra2"] += 1.0
    claims = compare.claims(pts, _seeded_codecs(), 0.004).set_index("claim_id")
    assert claims.loc["factorized_wins", "verdict"] == compare.OPEN
    one_seed = pts[pts.seed == 0]  # no spread measured: the sign decides, and the text says so
    claims = compare.claims(one_seed, _seeded_codecs(), 0.004).set_index("claim_id")
    assert "noise not measured" in claims.loc["factorized_wins", "measured"]


def test_summarize_writes_the_tables_of_the_readme_from_the_caches(tmp_path):
    """From caches as the committed ones are (no fingerprints yet): standing, verdicts, claims."""
    pts = _study_points()
    learned = pd.DataFrame([{**r, "image": f"im{i}"} for r in pts.to_dict("records") for i in range(2)])
    learned = learned.drop(columns=["fingerprint", "family", "n_images", "ms_ssim_db"])
    learned.to_csv(tmp_path / "learned_kodak.csv", index=False)
    matched = learned[["model", "image", "bpp"]].assign(codec="webp", below_floor=False, psnr=20.0,
                                                        ms_ssim=0.9, lpips=0.5)
    matched.to_csv(tmp_path / "matched_kodak.csv", index=False)
    curves = _codec_curves()
    pd.DataFrame([{**r, "image": f"im{i}", "quality": r["bpp"]} for r in curves.to_dict("records")
                  for i in range(2)]).to_csv(tmp_path / "baselines_kodak.csv", index=False)
    out = compare.summarize(tmp_path, 0.004)
    for name in ("standing", "verdicts", "claims"):
        assert len(pd.read_csv(tmp_path / f"summary_{name}.csv")) == len(out[name]) > 0
    at = pd.read_csv(tmp_path / "summary_at.csv").set_index(["curve", "bpp"])
    assert at.loc[("webp", 0.2), "psnr"] == pytest.approx(26.0) and at.loc[("webp", 0.2), "kind"] == "classical"
    assert set(at.reset_index()["curve"]) == {*curves.codec, *compare.curves(out["points"])["family"]}
    verdicts = pd.read_csv(tmp_path / "summary_verdicts.csv", converters={"wins_psnr": ast.literal_eval})
    assert len(verdicts) == 3 and all(w == [0.1, 0.2, 0.4] for w in verdicts.wins_psnr)  # curves only
    standing = out["standing"].set_index(["codec", "bpp"])
    assert standing.loc[("webp", 0.2), "d_psnr"] == pytest.approx(30.0 - 26.0)
    assert len(out["claims"]) == 8 and set(out["claims"].claim) == set(compare.ORIGINAL_CLAIMS.values())
    assert len(pd.read_csv(tmp_path / "summary_spread.csv")) == len(out["spread"]) > 0


def test_budget_gain_fits_the_gap_to_webp_per_doubling():
    steps = np.array([1000, 2000, 4000, 8000, 16000])
    gap = -4.0 + 1.0 * np.log2(steps / 2000)  # 1 dB per doubling from 2,000 steps on
    table = pd.DataFrame({"steps": steps, "psnr": 25 + gap, "webp_psnr": 25.0})
    table.loc[0, "psnr"] = 10.0  # the 1,000-step point (rate not settled) is left out of the fit
    gain = compare.budget_gain(table)
    assert gain["db_per_doubling"] == pytest.approx(1.0) and gain["points"] == 4
    assert gain["parity_steps"] == pytest.approx(2000 * 2**4) and gain["last_db_per_doubling"] == pytest.approx(1.0)
    flat = table.assign(psnr=table.webp_psnr - 3)
    assert compare.budget_gain(flat)["parity_steps"] == float("inf")


def test_recipe_summary_puts_curves_side_by_side_at_one_bitrate():
    table = pd.DataFrame([
        {"recipe": "base (16000 steps)", "lmbda": 4e-3, "beta": 0, "gamma": 0, "minutes": 32.0, "base_minutes": 0.0,
         "bpp": 0.26,
         "psnr": 27.0, "lpips": 0.45},
        {"recipe": "mse-l0.012", "lmbda": 1.2e-2, "beta": 0, "gamma": 0, "minutes": 2.0, "base_minutes": 32.0,
         "bpp": 0.15, "psnr": 26.0,
         "lpips": 0.5},
        {"recipe": "lpips-g0.01-l0.006", "lmbda": 6e-3, "beta": 0, "gamma": 0.01, "minutes": 4.0, "base_minutes": 32.0,
         "bpp": 0.3,
         "psnr": 27.0, "lpips": 0.2},
        {"recipe": "scratch mse λ=0.006", "lmbda": 6e-3, "beta": 0, "gamma": 0, "steps": 3500, "bpp": 0.16, "psnr": 24.7,
         "lpips": 0.6},
        {"recipe": "scratch mse λ=0.004", "lmbda": 4e-3, "beta": 0, "gamma": 0, "steps": 3500, "bpp": 0.2, "psnr": 25.0,
         "lpips": 0.57},
    ])
    s = compare.recipe_summary(table, minutes_per_step=0.002, models=16).set_index(["recipe", "variant"])
    amortised, scratch = s.loc[("amortised", "mse")], s.loc[("from scratch", "mse")]
    expected = np.interp(np.log(0.2), np.log([0.15, 0.26]), [26.0, 27.0])
    assert amortised["psnr_at_0.2"] == pytest.approx(expected) and amortised["models"] == 2
    assert scratch["psnr_at_0.2"] == pytest.approx(25.0) and scratch["minutes_per_model"] == pytest.approx(7.0)
    assert amortised["minutes_per_model"] == pytest.approx((2.0 + (2.0 + 2.0)) / 2)  # the base: its share alone
    assert np.isnan(s.loc[("amortised", "+lpips"), "psnr_at_0.2"])  # one point: no curve
