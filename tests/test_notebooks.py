"""The whole numbered series runs in order under papermill in the smoke profile, as `make study` runs it,
sharing one results/, figures/ and runs/ folder; each notebook must write its figures and tables."""
import json

import pytest

from lic_utils import study

NOTEBOOKS = study.notebook_paths()
# What each notebook must leave behind (file names under results/ and figures/).
EXPECTED = {
    "00_data_and_baselines": ["baselines_kodak.csv", "00_datasets.png", "00_lpips_reference.png", "00_rd_baselines.png"],
    "05_rd_evaluation": ["learned_kodak.csv", "matched_kodak.csv", "bd_rates.csv", "matched_summary.csv",
                         "05_rd_curves.png", "05_matched.png"],
    "06_loss_ablation": ["loss_ablation.csv", "06_loss_ablation.png", "06_perception_distortion.png",
                         "06_perception_crops.png"],
    "07_prior_ablation": ["prior_ablation.csv", "07_prior_ablation.png"],
    "08_matched_bitrates": ["08_matched_grid.png", "08_viewer.png"],
    "09_summary": ["summary_standing.csv", "summary_verdicts.csv", "summary_claims.csv", "summary_spread.csv",
                   "09_summary_rd.png"],
}


@pytest.fixture(scope="module")
def study_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return {k: root / k for k in ("results", "figures", "runs", "executed")}


def _produced(dirs):
    return {p.name for d in dirs.values() if d.exists() for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(path, study_dirs):
    before = _produced(study_dirs)
    out = study.run_notebook(path, study_dirs["executed"], progress=False, parameters={
        "profile": "smoke", "results_dir": str(study_dirs["results"]), "figures_dir": str(study_dirs["figures"]),
        "runs_dir": str(study_dirs["runs"])})
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    produced = _produced(study_dirs)
    missing = [f for f in EXPECTED.get(path.stem, []) if f not in produced]
    assert not missing, f"{path.name} did not write {missing}"
    new_figures = {n for n in produced - before if n.endswith(".png")} | {n for n in produced if n.startswith(path.stem[:2])}
    assert any(n.endswith(".png") for n in new_figures), "every notebook saves at least one figure"


def test_train_all_reuses_the_notebooks_runs(study_dirs):
    """`make study` trains the grid up front with study.train_all; the notebooks' runs are the same runs
    (nothing is retrained), and a missing run is trained and indexed."""
    import shutil

    import pandas as pd

    runs = study_dirs["runs"]
    assert study.train_all("smoke", runs, progress=False, timings=None) == 0
    gone = runs / "study-smoke-noscale" / "factorized-mse-l0.004-noscale"
    shutil.rmtree(gone)
    assert study.train_all("smoke", runs, progress=False, timings=None) == 1
    index = pd.read_csv(runs / "study-smoke-noscale" / "index.csv")
    assert index.set_index("name").loc[gone.name, "status"] == "done"
    assert len(pd.read_csv(runs / "study-smoke" / "index.csv")) == 4 * 3 + 1 + 2  # main + loss + prior groups


def test_make_figures_redraws_the_notebooks_figures(study_dirs, tmp_path):
    """`make figures` draws from results/ alone with the notebooks' own figure functions: the same PNGs,
    byte for byte."""
    for path in study.redraw_figures(study_dirs["results"], tmp_path, "smoke"):
        assert path.read_bytes() == (study_dirs["figures"] / path.name).read_bytes(), path.name
