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

from lic_utils.evaluate import (MODEL_KEY, family_label, learned_points, mean_curve, read_rows, seed_of,
                                select)
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
    cols = ["family", "bpp", "psnr", "ms_ssim", "lpips", "ssimulacra2", "encode_ms", "decode_ms", "model",
            "lmbda", "prior", "channel_scale", "seed"]
    return select(points, beta=0, gamma=0, lmbda=lmbda).reindex(columns=cols).reset_index(drop=True)


# --- seed spread: the single-point ablations at the ablation λ, every seed ---------------------
def ablation_points(points: pd.DataFrame, lmbda: float) -> pd.DataFrame:
    """Every model trained at λ = `lmbda`, every seed, one row each (notebooks 06, 07 and 09).

    `family` names the model without its seed and `seed` its seed. `d_psnr`, `d_lpips` and
    `d_ssimulacra2` are the model minus the factorized · mse RD curve (seed 0) interpolated at
    the model's bpp, i.e. at equal bpp (NaN outside the curve). `rd_cost` is λ·bpp + MSE, and
    `d_rd_cost` is that cost relative to the mean of the factorized · mse seeds, in %. `r_psnr`,
    `r_lpips` and `r_ssimulacra2` are the model minus its own family's RD curve (NaN for families
    without one): their spread over seeds is the seed noise of that curve at equal bpp.
    """
    at = points[np.isclose(points["lmbda"].astype(float), lmbda)].copy()
    at["seed"] = [seed_of(r) for r in at.to_dict("records")]
    at["family"] = [family_label(r, seed=False) for r in at.to_dict("records")]
    main = curves(points)
    mse_curve = select(main, prior="factorized", beta=0, gamma=0, channel_scale=True)
    own = [main[main["family"] == f] for f in at["family"]]  # each model's own RD curve (or none)
    for m in ("psnr", "lpips", "ssimulacra2"):
        values = at.get(m, np.nan * at["bpp"])
        at[f"d_{m}"] = [v - at_bpp(mse_curve, b, m) for b, v in zip(at["bpp"], values)]
        # the seed's offset from its family's own curve: seed noise at equal bpp where the MSE
        # curve does not reach the model's bitrate
        at[f"r_{m}"] = [v - at_bpp(c, b, m) for c, b, v in zip(own, at["bpp"], values)]
    at["rd_cost"] = rd_cost(at, lmbda)
    ref = select(at, prior="factorized", beta=0, gamma=0, channel_scale=True)["rd_cost"].mean()
    at["d_rd_cost"] = 100 * (at["rd_cost"] / ref - 1)
    return at.sort_values(["family", "seed"]).reset_index(drop=True)


SPREAD = ("bpp", "rd_cost", "d_rd_cost", "d_psnr", "d_lpips", "d_ssimulacra2", "r_psnr", "r_lpips",
          "r_ssimulacra2")


def seed_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per family of `ablation_points`: the number of seeds, and the mean and standard deviation
    over seeds (NaN with one seed) of bpp, RD cost and the differences at equal bpp."""
    cols = [c for c in SPREAD if c in table]
    g = table.groupby("family", sort=False)
    out = g[cols].agg(["mean", "std"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out.insert(0, "seeds", g.size())
    keys = g[["prior", "beta", "gamma", "channel_scale"]].first()
    return keys.join(out).reset_index()


# --- the original study's claims, each tested (notebook 09) ----------------------------------------
# Verbatim, as the study stated them; each row of `claims` says which measurement decides it.
ORIGINAL_CLAIMS = {
    "mse_best": "MSE-only training gives the best baseline",
    "msssim_hurts": "MS-SSIM hurts performance in this small model",
    "lpips_cheap": "a small LPIPS weight improves visual quality with little bitrate cost",
    "factorized_wins": "the factorized prior beats the hyperprior here",
    "low_rate_crossover": "learned beats JPEG/WebP at very low bitrates; they win with more bits",
    "perceptual_savings": ("≈ 0.2 bpp with strong perceptual quality, far smaller than JPEG/WebP at "
                           "similar visual quality"),
}
CLAIM_BPP = 0.2  # the study's headline bitrate
SMALL_GAMMA = 0.002  # the original study's LPIPS weight ("a small LPIPS weight")
LITTLE_COST = 10.0  # "little bitrate cost": at most 10 % more bits at equal λ
FAR_SMALLER = -25.0  # "far smaller": a BD-rate of −25 % or better (about WebP's saving over JPEG)
SIGMAS = 2.0  # a difference decides only beyond 2 standard deviations of its seed noise
HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
CLAIM_COLUMNS = ["claim_id", "claim", "codec", "test", "measured", "verdict", "caveat"]


def verdict(delta: float, noise: float, claim_if_positive: bool = True) -> str:
    """holds / does not hold / inconclusive for a difference whose sign the claim predicts
    (positive unless `claim_if_positive` is False), judged against `noise` (SIGMAS standard
    deviations of seed noise; NaN when unmeasured: then the sign decides)."""
    if not np.isfinite(delta):
        return OPEN
    d = delta if claim_if_positive else -delta
    margin = noise if np.isfinite(noise) else 0.0
    return HOLDS if d > margin else FAILS if d < -margin else OPEN


def _combined(verdicts: list[str]) -> str:
    """One verdict from several measures that must all agree (the claim needs each of them)."""
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else OPEN


def difference_noise(*stds: float, n: tuple = ()) -> float:
    """SIGMAS standard deviations of a difference of independent terms (of means of n seeds when
    given): NaN when a spread is unmeasured (one seed)."""
    n = n or (1,) * len(stds)
    return SIGMAS * float(np.sqrt(sum(s ** 2 / k for s, k in zip(stds, n))))


def claims(points: pd.DataFrame, codec_curves: pd.DataFrame, lmbda: float) -> pd.DataFrame:
    """Each of ORIGINAL_CLAIMS tested by the measure that decides it: one row per claim (two for
    the claims that name JPEG and WebP), with the test, the numbers, the seed noise they are judged
    against, the verdict and the caveat. Models are picked by their settings, never by label text.

    Curves are compared at equal bpp (CLAIM_BPP), single-point ablations at λ = `lmbda` (equal λ,
    means over seeds). The noise of a difference is SIGMAS standard deviations of the seed spread at
    equal bpp (`seed_spread`); with one seed it is unmeasured and the sign decides. SSIMULACRA2,
    which no model trains on, decides the perceptual claims; LPIPS is reported beside it.
    """
    main, table = curves(points), ablation_points(points, lmbda)
    spread = seed_spread(table)
    b, rows = CLAIM_BPP, []

    def family(**settings):  # (curve, seed-spread row) of one family
        c = select(main, channel_scale=True, **settings)
        sp = select(spread, channel_scale=True, **settings)
        return c, (sp.iloc[0] if len(sp) else pd.Series(dtype=float))

    def add(key, test, measured, verdict_, caveat, codec=""):
        rows.append({"claim_id": key, "claim": ORIGINAL_CLAIMS[key], "codec": codec, "test": test,
                     "measured": measured, "verdict": verdict_, "caveat": caveat})

    mse_c, mse_s = family(prior="factorized", beta=0, gamma=0)
    ms_c, ms_s = family(prior="factorized", gamma=0, beta=float(points.loc[points.beta > 0, "beta"].min())
                        if (points.beta > 0).any() else -1)
    lp_c, lp_s = family(prior="factorized", beta=0, gamma=float(
        main.loc[main.gamma > 0, "gamma"].min()) if (main.gamma > 0).any() else -1)
    def sd(s, m):  # a family's seed noise at equal bpp: about its own curve, else about MSE's
        own = s.get(f"r_{m}_std", np.nan)
        return own if np.isfinite(own) else s.get(f"d_{m}_std", np.nan)

    # 1. MSE-only is the best baseline: its curve above every other loss variant's at 0.2 bpp
    others = [(c, s) for c, s in ((ms_c, ms_s), (lp_c, lp_s)) if len(c)]
    said, vs = [], []
    at1 = _common_bpp([mse_c, *(c for c, _ in others)], b) if len(mse_c) and others else np.nan
    for m, unit in (("psnr", " dB"), ("ssimulacra2", "")):
        ds = [(at_bpp(mse_c, at1, m) - at_bpp(c, at1, m), sd(s, m)) for c, s in others]
        ds = [(d, n) for d, n in ds if np.isfinite(d)]
        if ds:
            d, n = min(ds)
            noise = difference_noise(sd(mse_s, m), n)
            vs.append(verdict(d, noise))
            said.append(f"{m}: MSE − best other {d:+.2f}{unit} at {at1:.3g} bpp ({_pm(noise)})")
    add("mse_best", f"at {b:g} bpp (or the nearest bitrate all curves reach), the MSE curve minus the "
        "best other loss variant, in PSNR and SSIMULACRA2 (held out)", "; ".join(said) or "not measured",
        _combined(vs) if vs else OPEN, "loss variants fine-tuned from one MSE base; one seed per curve")

    # 2. MS-SSIM hurts: its curve below MSE's at 0.2 bpp
    said, vs = [], []
    at2 = _common_bpp([ms_c, mse_c], b) if len(ms_c) and len(mse_c) else np.nan
    for m, unit in (("psnr", " dB"), ("ssimulacra2", "")):
        d = at_bpp(ms_c, at2, m) - at_bpp(mse_c, at2, m)
        if np.isfinite(d):
            noise = difference_noise(sd(mse_s, m), sd(ms_s, m))
            vs.append(verdict(d, noise, claim_if_positive=False))
            said.append(f"{m}: +MS-SSIM − MSE {d:+.2f}{unit} at {at2:.3g} bpp ({_pm(noise)})")
    ratio = ms_s.get("bpp_mean", np.nan) / mse_s.get("bpp_mean", np.nan)
    add("msssim_hurts", f"at {b:g} bpp (or the nearest bitrate both curves reach), the +MS-SSIM "
        "curve minus the MSE curve, in PSNR and SSIMULACRA2 (held out)", "; ".join(said) or "not measured",
        _combined(vs) if vs else OPEN, f"at equal λ ({lmbda:g}) +MS-SSIM spends {ratio:.2f}× the bits of MSE: compare at equal bpp")

    # 3. a small LPIPS weight: better held-out quality at equal bpp, ≤ 10 % more bits at equal λ
    small = select(spread, prior="factorized", beta=0, gamma=SMALL_GAMMA, channel_scale=True)
    if len(small) and len(mse_s):
        s = small.iloc[0]
        n = (int(s["seeds"]), int(mse_s["seeds"]))
        d_s2 = s.get("d_ssimulacra2_mean", np.nan) - mse_s.get("d_ssimulacra2_mean", np.nan)
        noise_s2 = difference_noise(sd(s, "ssimulacra2"), sd(mse_s, "ssimulacra2"), n=n)
        cost = 100 * (s["bpp_mean"] / mse_s["bpp_mean"] - 1)
        cost_noise = difference_noise(100 * s["bpp_std"] / s["bpp_mean"],
                                      100 * mse_s["bpp_std"] / mse_s["bpp_mean"], n=n)
        d_lp = s["d_lpips_mean"] - mse_s["d_lpips_mean"]
        v = _combined([verdict(d_s2, noise_s2), verdict(LITTLE_COST - cost, cost_noise)])
        add("lpips_cheap", f"γ = {SMALL_GAMMA:g} against MSE at λ = {lmbda:g} (means of {n[0]} and "
            f"{n[1]} seeds): SSIMULACRA2 at equal bpp higher, and at most {LITTLE_COST:g} % more bits",
            f"Δ SSIMULACRA2 {d_s2:+.2f} ({_pm(noise_s2)}); bits {cost:+.1f} % ({_pm(cost_noise)}); "
            f"Δ LPIPS {d_lp:+.4f} (trained on, not deciding)", v,
            "judged by a metric no model trains on; "
            + ("LPIPS and SSIMULACRA2 disagree" if (d_lp < 0) != (d_s2 > 0) else "LPIPS agrees"))
    else:
        add("lpips_cheap", f"γ = {SMALL_GAMMA:g} against MSE at λ = {lmbda:g}",
            "not trained in this profile", OPEN, "")

    # 4. the factorized prior beats the hyperprior: lower RD cost at equal λ, higher PSNR at equal bpp
    hp = select(spread, prior="hyperprior", beta=0, gamma=0)
    if len(hp) and len(mse_s):
        h, n = hp.iloc[0], (int(hp.iloc[0]["seeds"]), int(mse_s["seeds"]))
        d_cost = h["d_rd_cost_mean"] - mse_s["d_rd_cost_mean"]
        noise_cost = difference_noise(h["d_rd_cost_std"], mse_s["d_rd_cost_std"], n=n)
        d_psnr = mse_s["d_psnr_mean"] - h["d_psnr_mean"]
        noise_psnr = difference_noise(h["d_psnr_std"], mse_s["d_psnr_std"], n=n)
        v = _combined([verdict(d_cost, noise_cost), verdict(d_psnr, noise_psnr)])
        add("factorized_wins", f"at λ = {lmbda:g}, MSE (means of {n[1]} factorized and {n[0]} hyperprior "
            "seeds): the hyperprior's λ·R + MSE minus the factorized prior's, and the factorized prior's "
            "PSNR at equal bpp minus the hyperprior's",
            f"RD cost {d_cost:+.2f} % ({_pm(noise_cost)}); PSNR {d_psnr:+.2f} dB ({_pm(noise_psnr)})", v,
            (f"the hyperprior has {params:.2f}× the parameters; "
             if np.isfinite(params := _parameter_ratio(points)) else "") + "both fine-tuned from one factorized base")

    # 5. and 6. against JPEG and WebP
    grid = np.geomspace(0.05, 2.0, 81)  # fine enough to place a crossover to ≈ 5 %
    fact = select(spread, prior="factorized", channel_scale=True)
    for codec in ("jpeg", "webp"):
        cc = codec_curves[codec_curves["codec"] == codec]
        d_all = standing(compare_at(main, cc, grid))
        said, vs = [], []
        for m, unit in (("psnr", " dB"), ("ssimulacra2", "")):
            d = d_all.dropna(subset=[f"d_{m}"]) if f"d_{m}" in d_all else d_all.iloc[:0]
            if len(d) < 2:
                continue
            lo, hi = d.iloc[0], d.iloc[-1]
            stds = pd.concat([fact[c] for c in (f"r_{m}_std", f"d_{m}_std") if c in fact]).dropna()
            noise = SIGMAS * float(max(stds)) if len(stds) else np.nan
            vs += [verdict(lo[f"d_{m}"], noise), verdict(hi[f"d_{m}"], noise, claim_if_positive=False)]
            sign = np.sign(d[f"d_{m}"].to_numpy())
            cross = d["bpp"].to_numpy()[1:][sign[1:] != sign[:-1]]
            where = f"sign changes at {', '.join(f'{x:.3g}' for x in cross)} bpp" if len(cross) else "no crossover"
            said.append(f"{m}: {lo[f'd_{m}']:+.2f}{unit} at {lo['bpp']:.3g} bpp, {hi[f'd_{m}']:+.2f}{unit} at "
                        f"{hi['bpp']:.3g} bpp, {where} ({_pm(noise)})")
        add("low_rate_crossover", f"the best learned curve minus {codec} at the lowest and the highest "
            "bitrate both measure, in PSNR and SSIMULACRA2 (held out): ahead at the lowest, behind at "
            "the highest", "; ".join(said) or "no common bitrates", _combined(vs) if vs else OPEN,
            "the best learned curve is chosen per metric and bitrate; the noise is the largest seed "
            "spread of the factorized models", codec)
        bds = bd_table(main, cc, ("ssimulacra2", "lpips"))
        said, v = [], OPEN
        for m in ("ssimulacra2", "lpips"):
            r = bds[bds["metric"] == m].dropna(subset=["bd_rate"]) if len(bds) else bds
            if len(r):
                top = r.loc[r["bd_rate"].idxmin()]
                said.append(f"{m} BD-rate {top['bd_rate']:+.1f} % ({top['family']})")
                if m == "ssimulacra2":
                    v = HOLDS if top["bd_rate"] <= FAR_SMALLER else FAILS
        q = at_bpp(lp_c, b, "ssimulacra2") if len(lp_c) else np.nan
        add("perceptual_savings", f"the best learned curve's BD-rate against {codec} in SSIMULACRA2 "
            f"(held out; 'far smaller': ≤ {FAR_SMALLER:g} %), LPIPS beside it",
            "; ".join(said) or "not measured", v,
            f"SSIMULACRA2 of the +LPIPS curve at {b:g} bpp: {q:.1f}; the ssimulacra2 package is not "
            "libjxl's (notebook 00): compare its scores only with each other", codec)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _pm(noise: float) -> str:
    return f"noise ±{noise:.2f}" if np.isfinite(noise) else "one seed: noise not measured"


def _common_bpp(curves_: list[pd.DataFrame], bpp: float) -> float:
    """`bpp` when every curve reaches it, else the nearest bitrate they all reach (NaN if none)."""
    lo = max(c["bpp"].min() for c in curves_)
    hi = min(c["bpp"].max() for c in curves_)
    return float(np.clip(bpp, lo, hi)) if lo <= hi else float("nan")


def _parameter_ratio(points: pd.DataFrame) -> float:
    """Parameters of the hyperprior codec over the factorized one, at the points' N and M."""
    from lic_utils import models

    if not {"N", "M"} <= set(points) or points[["N", "M"]].isna().all(axis=None):
        return float("nan")
    n, m = int(points["N"].dropna().iloc[0]), int(points["M"].dropna().iloc[0])
    count = {p: sum(t.numel() for t in models.build_model({"prior": p, "N": n, "M": m}).parameters())
             for p in ("factorized", "hyperprior")}
    return count["hyperprior"] / count["factorized"]


def summarize(results_dir: str | Path, ablation_lmbda: float, bitrates=BITRATES) -> dict:
    """Notebook 09: the study's summary from the caches in `results_dir` alone (every model there).

    Writes summary_at.csv (every mean RD curve, learned and classical, read at `bitrates`),
    summary_standing.csv (the best learned curve minus each codec at `bitrates`),
    summary_verdicts.csv (wins and losses at equal bytes, image by image, over the bitrates' range),
    summary_claims.csv (`claims`) and summary_spread.csv (`seed_spread` at the ablation λ); the
    README's results section is written from them. Returns those tables and what they were computed
    from: points, codec_curves, loss, priors, ablation (`ablation_points`).
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
    ablation = ablation_points(points, ablation_lmbda)
    at = compare_at(main, codec_curves, bitrates)  # curves only: a single point has no reading
    out = {"points": points, "codec_curves": codec_curves, "at": at,
           "loss": loss_ablation(points), "priors": prior_ablation(points, ablation_lmbda),
           "ablation": ablation, "spread": seed_spread(ablation),
           "standing": standing(at),
           "verdicts": matched_verdicts(summary, points, (min(bitrates), max(bitrates))),
           "claims": claims(points, codec_curves, ablation_lmbda)}
    for name in ("at", "standing", "verdicts", "claims", "spread"):
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
