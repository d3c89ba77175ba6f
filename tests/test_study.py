"""The study: what a notebook starts from (setup and its Study), the grid of runs each profile
trains, and the README's results section, computed from results/ (never typed) and rewritten in place."""
import dataclasses

import pandas as pd
import pytest

from lic_utils import study
from lic_utils.errors import LicError
from lic_utils.profiles import PROFILES, get_profile


def test_readme_results_section_comes_from_the_tables(tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    results.mkdir()
    figures.mkdir()
    pd.DataFrame([{"codec": "webp", "bpp": 0.2, "d_psnr": -3.214, "d_ms_ssim": -0.03, "d_lpips": 0.2621},
                  {"codec": "webp", "bpp": 0.5, "d_psnr": float("nan"), "d_ms_ssim": 0, "d_lpips": 0},
                  {"codec": "jpeg", "bpp": 0.2, "d_psnr": 2.5, "d_ms_ssim": 0.1, "d_lpips": -0.04,
                   "d_ssimulacra2": 4.24}]
                 ).to_csv(results / "summary_standing.csv", index=False)
    pd.DataFrame([{"claim_id": "mse_best", "claim": "MSE-only training gives the best baseline", "codec": "",
                   "test": "t", "measured": "psnr: +0.12 dB", "verdict": "inconclusive", "caveat": "c"},
                  {"claim_id": "low_rate_crossover", "claim": "learned beats JPEG/WebP", "codec": "webp",
                   "test": "t", "measured": "no crossover", "verdict": "does not hold", "caveat": "c"}]
                 ).to_csv(results / "summary_claims.csv", index=False)
    pd.DataFrame([{"codec": "jpeg", "family": "mse", "wins_psnr": [0.2], "loses_psnr": [0.4], "wins_lpips": [],
                   "loses_lpips": [0.2, 0.4], "d_psnr_min": -2.5, "d_psnr_max": 2.4, "d_lpips_min": 0.04, "d_lpips_max": 0.26},
                  {"codec": "jpeg", "family": "lpips", "wins_psnr": [], "loses_psnr": [0.43], "wins_lpips": [0.23],
                   "loses_lpips": [], "d_psnr_min": -2.9, "d_psnr_max": -2.9, "d_lpips_min": -0.08, "d_lpips_max": -0.08}]
                 ).to_csv(results / "summary_verdicts.csv", index=False)
    pd.DataFrame([{"notebook": "train_all (15 runs)", "profile": "cpu", "seconds": 600.0, "finished": "t1"},
                  {"notebook": "00_data_and_baselines.ipynb", "profile": "cpu", "seconds": 30.0, "finished": "t2"},
                  {"notebook": "00_data_and_baselines.ipynb", "profile": "smoke", "seconds": 5.0, "finished": "t3"}]
                 ).to_csv(results / "study_timings.csv", index=False)
    pd.DataFrame([{"curve": "factorized · mse", "kind": "learned", "bpp": 0.2, "psnr": 27.2089, "ms_ssim": 0.928,
                   "lpips": 0.36991, "ssimulacra2": 5.72},
                  {"curve": "webp", "kind": "classical", "bpp": 0.2, "psnr": 27.8174, "ms_ssim": 0.93,
                   "lpips": 0.3192, "ssimulacra2": -0.33},
                  {"curve": "webp", "kind": "classical", "bpp": 0.5, "psnr": 31.0, "ms_ssim": 0.96,
                   "lpips": 0.2, "ssimulacra2": 40.0}]).to_csv(results / "summary_at.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{study.README_HEADLINE_BEGIN}\nold top\n{study.README_HEADLINE_END}\n"
                      f"before\n{study.README_BEGIN}\nold text\n{study.README_END}\nafter\n")
    study.update_readme(readme, results, profile="cpu", figures_dir=figures, zoo_folder=tmp_path / "no-zoo")
    text = readme.read_text()
    assert "The shipped models" not in text  # an empty zoo: no table
    assert "| `make study PROFILE=cpu`: the laptop study trained from scratch, then read | **10 min** | " \
           "training 10 min; notebooks 0 min |" in text
    assert text.startswith(f"# title\n{study.README_HEADLINE_BEGIN}\n") and text.endswith(f"{study.README_END}\nafter\n")
    head, results = text.split("before\n")  # the verdicts and the 0.2 bpp table at the top, the details below
    assert "| claim | verdict | measured |" in head and "| curve | PSNR (dB) |" in head and "| codec |" not in head
    assert "| codec |" in results and "| claim |" not in results
    assert "| factorized · mse | 27.21 | 0.9280 | 0.370 | 5.7 |" in text
    assert "| webp (classical) | 27.82 | 0.9300 | 0.319 | -0.3 |" in text and "| 31.00 |" not in text
    assert "old text" not in text and "old top" not in text and "figures/09_summary_rd.png" not in text  # no figure yet: no broken link
    assert "| webp | -3.21 / +0.262 / – |" in text and "| jpeg | +2.50 / -0.040 / +4.2 |" in text
    assert "| MSE-only training gives the best baseline | **inconclusive** | psnr: +0.12 dB |" in text
    assert "| learned beats JPEG/WebP (webp) | **does not hold** | no crossover |" in text
    assert ("* **jpeg**: PSNR better at 1 of 3 points (mse at 0.20 bpp), Δ -2.90 to +2.40 dB; "
            "LPIPS better at 1 of 3 points (lpips at 0.23 bpp), Δ -0.080 to +0.260.") in text
    assert "| **total** | **10.5** |" in text and "smoke" not in text  # 600 s + 30 s, cpu rows only
    (figures / "09_summary_rd.png").write_bytes(b"png")
    study.update_readme(readme, results, figures_dir=figures, zoo_folder=tmp_path / "no-zoo")
    assert readme.read_text().count("figures/09_summary_rd.png") == 1 and readme.read_text().count(study.README_BEGIN) == 1


def test_readme_without_the_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no section\n")
    with pytest.raises(LicError, match="no results section.*study-headline"):
        study.update_readme(readme, tmp_path)
    readme.write_text(f"# headline only\n{study.README_HEADLINE_BEGIN}\n{study.README_HEADLINE_END}\n")
    with pytest.raises(LicError, match="no results section.*BEGIN study-results"):
        study.update_readme(readme, tmp_path)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_run_of_the_study_has_its_own_name(profile):
    """Tables key rows by run name: two runs of different settings must never share one (the no-scale
    ablation once shared `factorized-mse-l0.004` with the main run and the two were averaged together)."""
    names = [name for g in study.GROUPS for spec in study.sweeps(profile, group=g) for name, _, _ in spec.runs()]
    assert len(names) == len(set(names))


def test_a_full_study_starts_its_profiles_timings_afresh(tmp_path):
    csv = tmp_path / "study_timings.csv"
    study.start_timings("cpu", csv)  # no table yet: nothing to do, no error
    assert not csv.exists()
    pd.DataFrame([{"notebook": "train_all (8 runs)", "profile": "cpu", "seconds": 600.0, "finished": "t1"},
                  {"notebook": "00_data_and_baselines.ipynb", "profile": "smoke", "seconds": 5.0, "finished": "t2"}]
                 ).to_csv(csv, index=False)
    study.start_timings("cpu", csv)
    study._log_timing(csv, "train_all (16 runs)", "cpu", 60.0)
    t = pd.read_csv(csv)
    assert sorted(t.notebook) == ["00_data_and_baselines.ipynb", "train_all (16 runs)"]
    assert t[t.profile == "cpu"].seconds.tolist() == [60.0]


@pytest.mark.parametrize("profile", PROFILES)
def test_the_grid_comes_from_the_profile(profile, tmp_path):
    p = get_profile(profile)
    main = study.sweeps(profile, tmp_path, "main")[0]
    assert main.lmbdas == list(p.lmbdas) and list(main.variants) == ["mse", "msssim", "lpips"]
    assert study.sweeps(profile, tmp_path, "loss")[0].variants == p.extra_variants
    priors = {prior for spec in study.sweeps(profile, tmp_path, "prior") for prior in spec.priors}
    assert priors == {"factorized-gaussian", "hyperprior", "factorized"}
    assert study.ablation_sweep(profile, tmp_path).lmbdas == [p.ablation_lmbda]
    assert main.out == str(tmp_path / f"study-{profile}")


def test_setup_gives_the_profile_its_folders_and_its_evaluation_set(tmp_path, monkeypatch):
    s = study.setup("smoke", tmp_path / "r", tmp_path / "f", tmp_path / "runs")
    assert s.profile is get_profile("smoke") and s.results.is_dir() and s.figures.is_dir()
    s = dataclasses.replace(s, profile=dataclasses.replace(s.profile, images=1, n_qualities=2))
    images = s.kodak_images()
    assert [name for name, _ in images] == ["kodim01-c256"] and images[0][1].shape == (256, 256, 3)
    curves = s.codec_curves(images)
    assert sorted(curves.codec.unique()) == ["jpeg", "jpeg2000", "webp"] and len(curves) == 3 * 2
    from lic_utils import evaluate

    monkeypatch.setattr(evaluate, "measure", lambda *a: pytest.fail("a cached setting was measured again"))
    pd.testing.assert_frame_equal(s.codec_curves(images).drop(columns=["encode_ms", "decode_ms"]),
                                  curves.drop(columns=["encode_ms", "decode_ms"]))
    assert s.save(curves, "t.csv") == tmp_path / "r" / "t.csv" and len(pd.read_csv(tmp_path / "r" / "t.csv")) == 6


def test_cli_figures_redraws_from_a_results_folder(tmp_path, capsys):
    from lic_utils import cli

    rows = [{"image": "a", "codec": c, "quality": q, "bpp": q / 10, "psnr": 20 + q, "ms_ssim": 0.9, "lpips": 0.3}
            for c in ("jpeg", "webp") for q in (1, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "baselines_kodak.csv", index=False)
    assert cli.main(["figures", "--results", str(tmp_path), "--figures", str(tmp_path / "f"),
                     "--profile", "smoke"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "f" / "00_rd_baselines.png")]


def test_the_grid_is_fine_tuned_from_one_base_run(tmp_path):
    """Amortised training: a profile with a `base` trains one MSE run at the ablation λ first, and
    every run of its grid starts from that run's weights with the profile's fine-tuning settings."""
    smoke = PROFILES["smoke"]
    base_dir, base_cfg = study.base_run("smoke", tmp_path)
    assert base_cfg.steps == smoke.base["steps"] and base_cfg.loss.lmbda == smoke.ablation_lmbda
    assert (base_cfg.loss.beta, base_cfg.loss.gamma) == (0, 0)
    for group in study.GROUPS:
        for spec in study.sweeps("smoke", tmp_path, group):
            for _, _, cfg in spec.runs():
                assert cfg.init_from == str(base_dir / "checkpoint.pt")
                assert cfg.steps == smoke.finetune["steps"]
    assert study.train_base("smoke", tmp_path, progress=False) is True
    assert study.train_base("smoke", tmp_path, progress=False) is False  # reused
    assert study.base_run("gpu", tmp_path) is None  # trained from scratch
    assert all(cfg.init_from == "" for spec in study.sweeps("gpu", tmp_path) for _, _, cfg in spec.runs())


def test_the_prior_ablation_takes_each_priors_own_settings(tmp_path):
    """The cpu profile trains the hyperprior on 256² crops (2 a step, the pixels of 8 of 128²)."""
    runs = {name: cfg for spec in study.sweeps("cpu", tmp_path, "prior") for name, _, cfg in spec.runs()}
    hyper, gauss = runs["hyperprior-mse-l0.004"], runs["factorized-gaussian-mse-l0.004"]
    assert (hyper.crop, hyper.batch) == (256, 2) and (gauss.crop, gauss.batch) == (128, 8)
    assert hyper.crop**2 * hyper.batch == gauss.crop**2 * gauss.batch


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_the_seed_group_repeats_each_single_point_ablation_with_other_seeds(profile, tmp_path):
    """seeds − 1 more fine-tunes of every prior-ablation run and of the profile's seed_variants, at
    the ablation λ, each with its own seed and name, and otherwise the seed-0 run's settings."""
    p = get_profile(profile)
    seed0 = {name: cfg for g in ("main", "loss", "prior") for spec in study.sweeps(profile, tmp_path, g)
             for name, _, cfg in spec.runs()}
    runs = {name: cfg for spec in study.sweeps(profile, tmp_path, "seeds") for name, _, cfg in spec.runs()}
    assert len(runs) == (p.seeds - 1) * (len(p.seed_variants) + 3)
    for name, cfg in runs.items():
        twin = seed0[name.replace(f"-seed{cfg.seed}", "")]
        assert 1 <= cfg.seed < p.seeds and name.endswith(f"seed{cfg.seed}")
        assert cfg.replace(seed=0) == twin and cfg.loss.lmbda == p.ablation_lmbda


def test_seed_variants_must_be_loss_variants(tmp_path, monkeypatch):
    bad = dataclasses.replace(get_profile("smoke"), seed_variants=("mse", "lpips-g9"))
    with pytest.raises(LicError, match="seed_variants"):
        study.sweeps(bad, tmp_path, "seeds")


def test_the_model_caches_are_pruned_to_the_profiles_grid(tmp_path):
    """A model of an earlier grid (a λ no longer trained) leaves the caches that notebook 09 reads
    whole; the grid's runs, seeds and ablations included, keep their rows."""
    grid = [name for g in study.GROUPS for spec in study.sweeps("smoke", tmp_path, g) for name, _, _ in spec.runs()]
    assert "factorized-mse-l0.004-seed1" in grid and "factorized-mse-l0.004-noscale" in grid
    models = grid + ["factorized-mse-l0.012", "factorized-mse-l0.006"]
    rows = pd.DataFrame({"model": models, "fingerprint": [f"{i:016d}" for i in range(len(models))],
                         "image": "kodim01", "psnr": 30.0})
    for name in study.MODEL_CACHES:
        rows.to_csv(tmp_path / name, index=False)
    assert study.prune_caches("smoke", tmp_path, tmp_path) == {name: 2 for name in study.MODEL_CACHES}
    kept = pd.read_csv(tmp_path / "learned_kodak.csv", dtype={"fingerprint": str})
    assert kept.model.tolist() == grid and kept.fingerprint.iloc[0] == "0" * 16
    assert study.prune_caches("smoke", tmp_path, tmp_path) == {name: 0 for name in study.MODEL_CACHES}


def test_the_committed_profile_executes_the_notebooks_in_place():
    """The committed notebooks show the committed study's outputs; other profiles write elsewhere."""
    from lic_utils.files import NOTEBOOKS_DIR

    assert study.executed_dir(study.COMMITTED_PROFILE) == NOTEBOOKS_DIR
    assert study.executed_dir("smoke") == NOTEBOOKS_DIR / "executed" / "smoke"


def test_each_profile_has_its_own_results_and_figures():
    """Rerunning another profile never overwrites the committed study's tables and figures."""
    from lic_utils.files import FIGURES_DIR, RESULTS_DIR

    assert study.profile_dirs(study.COMMITTED_PROFILE) == (RESULTS_DIR, FIGURES_DIR)
    others = [p for p in PROFILES if p != study.COMMITTED_PROFILE]
    assert {study.profile_dirs(p) for p in others} == {(RESULTS_DIR / p, FIGURES_DIR / p) for p in others}
    s = study.setup("smoke", runs_dir="/nonexistent")  # creates the folders: removed again below
    try:
        assert (s.results, s.figures) == (RESULTS_DIR / "smoke", FIGURES_DIR / "smoke")
    finally:
        for d in (s.results, s.figures):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def test_a_profile_with_one_seed_and_no_extra_variants_has_empty_groups(tmp_path):
    """The reference profile has no γ sweep; a profile with one seed has no seed group: their groups
    are empty tables with the index's columns, so the notebooks concatenate them as they are."""
    one = dataclasses.replace(get_profile("smoke"), seeds=1, extra_variants={}, base={})
    assert study.sweeps(one, tmp_path, "seeds") == []
    for group in ("loss", "seeds"):
        df = study.train_runs(one, tmp_path, group, progress=False)
        assert df.empty and {"name", "checkpoint", "channel_scale"} <= set(df.columns)


def test_a_notebook_of_another_checkout_is_refused(tmp_path, monkeypatch):
    """A kernel started in another clone's notebooks/ that imports this package (a shared .venv's
    editable install) is refused by setup before it reads or writes anything; this checkout's
    notebooks/ and folders outside any checkout pass."""
    from lic_utils.files import REPO

    other = tmp_path / "other-clone"
    (other / "lic_utils").mkdir(parents=True)
    (other / "lic_utils" / "__init__.py").write_text("")
    (other / "notebooks").mkdir()
    with pytest.raises(LicError, match=r"belongs to the checkout .*other-clone, but lic_utils was imported from"):
        study.check_checkout(other / "notebooks")
    monkeypatch.chdir(other / "notebooks")
    with pytest.raises(LicError, match="run `make venv` in"):
        study.setup("smoke", results_dir=tmp_path / "r", figures_dir=tmp_path / "f", runs_dir=tmp_path / "runs")
    assert not (tmp_path / "r").exists()
    study.check_checkout(REPO / "notebooks")
    study.check_checkout(tmp_path)


def test_relative_folders_are_the_repositorys_wherever_the_kernel_starts(tmp_path, monkeypatch):
    """Executed notebooks keep repository-relative parameters (runs_dir = "runs"): rerun in Jupyter
    from notebooks/, they must still mean the repository's runs/, not notebooks/runs/."""
    from lic_utils.files import REPO, repo_relative

    monkeypatch.chdir(REPO / "notebooks")
    s = study.setup("smoke", results_dir=tmp_path / "r", figures_dir=tmp_path / "f", runs_dir="runs")
    assert s.runs == REPO / "runs"
    assert repo_relative(f"{REPO}/runs/x: done; cwd {REPO}") == "runs/x: done; cwd ."
