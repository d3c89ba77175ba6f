"""The README's results section is computed from results/ (never typed) and rewritten in place."""
import pandas as pd
import pytest

from lic_utils import study
from lic_utils.errors import LicError


def test_readme_results_section_comes_from_the_tables(tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    results.mkdir()
    figures.mkdir()
    pd.DataFrame([{"codec": "webp", "bpp": 0.2, "best learned": "x", "Δ PSNR dB": -3.214, "Δ MS-SSIM": -0.03, "Δ LPIPS": 0.2621},
                  {"codec": "webp", "bpp": 0.5, "best learned": "x", "Δ PSNR dB": float("nan"), "Δ MS-SSIM": 0, "Δ LPIPS": 0},
                  {"codec": "jpeg", "bpp": 0.2, "best learned": "x", "Δ PSNR dB": 2.5, "Δ MS-SSIM": 0.1, "Δ LPIPS": -0.04}]
                 ).to_csv(results / "summary_standing.csv", index=False)
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
    assert "| **total** | **10.5** |" in text and "smoke" not in text  # 600 s + 30 s, cpu rows only
    (figures / "09_summary_rd.png").write_bytes(b"png")
    study.update_readme(readme, results, figures_dir=figures)
    assert readme.read_text().count("figures/09_summary_rd.png") == 1 and readme.read_text().count(study.README_BEGIN) == 1


def test_readme_without_the_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no section\n")
    with pytest.raises(LicError, match="no results section"):
        study.update_readme(readme, tmp_path)
