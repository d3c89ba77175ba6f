"""The README's results section is computed from results/ (never typed) and rewritten in place."""
import pandas as pd
import pytest

from lic_utils import study
from lic_utils.errors import LicError


def test_readme_results_section_comes_from_the_tables(tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    results.mkdir()
    figures.mkdir()
    pd.DataFrame([{"codec": "webp", "bpp": 0.2, "d_psnr": -3.214, "d_ms_ssim": -0.03, "d_lpips": 0.2621},
                  {"codec": "webp", "bpp": 0.5, "d_psnr": float("nan"), "d_ms_ssim": 0, "d_lpips": 0},
                  {"codec": "jpeg", "bpp": 0.2, "d_psnr": 2.5, "d_ms_ssim": 0.1, "d_lpips": -0.04}]
                 ).to_csv(results / "summary_standing.csv", index=False)
    pd.DataFrame([{"codec": "jpeg", "family": "mse", "wins_psnr": [0.2], "loses_psnr": [0.4], "wins_lpips": [],
                   "loses_lpips": [0.2, 0.4], "d_psnr_min": -2.5, "d_psnr_max": 2.4, "d_lpips_min": 0.04, "d_lpips_max": 0.26},
                  {"codec": "jpeg", "family": "lpips", "wins_psnr": [], "loses_psnr": [0.43], "wins_lpips": [0.23],
                   "loses_lpips": [], "d_psnr_min": -2.9, "d_psnr_max": -2.9, "d_lpips_min": -0.08, "d_lpips_max": -0.08}]
                 ).to_csv(results / "summary_verdicts.csv", index=False)
    pd.DataFrame([{"notebook": "train_all (15 runs)", "profile": "cpu", "seconds": 600.0, "finished": "t1"},
                  {"notebook": "00_data_and_baselines.ipynb", "profile": "cpu", "seconds": 30.0, "finished": "t2"},
                  {"notebook": "00_data_and_baselines.ipynb", "profile": "smoke", "seconds": 5.0, "finished": "t3"}]
                 ).to_csv(results / "study_timings.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{study.README_BEGIN}\nold text\n{study.README_END}\nafter\n")
    study.update_readme(readme, results, figures_dir=figures)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{study.README_END}\nafter\n")
    assert "old text" not in text and "figures/09_summary_rd.png" not in text  # no figure yet: no broken link
    assert "| webp | -3.21 / +0.262 |" in text and "| jpeg | +2.50 / -0.040 |" in text
    assert ("* **jpeg**: PSNR better at 1 of 3 points (mse at 0.20 bpp), Δ -2.90 to +2.40 dB; "
            "LPIPS better at 1 of 3 points (lpips at 0.23 bpp), Δ -0.080 to +0.260.") in text
    assert "| **total** | **10.5** |" in text and "smoke" not in text  # 600 s + 30 s, cpu rows only
    (figures / "09_summary_rd.png").write_bytes(b"png")
    study.update_readme(readme, results, figures_dir=figures)
    assert readme.read_text().count("figures/09_summary_rd.png") == 1 and readme.read_text().count(study.README_BEGIN) == 1


def test_readme_without_the_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no section\n")
    with pytest.raises(LicError, match="no results section"):
        study.update_readme(readme, tmp_path)


@pytest.mark.parametrize("profile", study.PROFILES)
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
