"""The whole numbered series runs in order under papermill in the smoke profile, as `make study` runs it,
sharing one results/, figures/ and runs/ folder; each notebook must write its figures and tables."""
import json

import pytest

from lic_utils import study
from lic_utils.files import REPO

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
    assert str(REPO) not in out.read_text(), "executed notebooks hold repository-relative paths only"
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


def test_the_study_reads_shipped_models_and_trains_nothing(study_dirs, tmp_path, monkeypatch):
    """`make study` without PROFILE: a profile's models shipped in the zoo (here the smoke study's,
    by zoo.export_profile as `make study PROFILE=reference` does) are installed as finished runs;
    the study then trains nothing, reads the same weights (the evaluation cache hits them by
    fingerprint) and notebook 04 plots their training curves from the cards."""
    import shutil

    import pandas as pd

    from lic_utils import evaluate, models, zoo

    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    results = tmp_path / "results"
    shutil.copytree(study_dirs["results"], results)
    images = evaluate.kodak_images(2, 256)  # the smoke profile's
    cards = zoo.export_profile("smoke", images, "mse", runs_dir=study_dirs["runs"],
                               cache=results / "learned_kodak.csv", progress=False)
    shipped = zoo.shipped_models("smoke", study_dirs["runs"])
    assert sorted(p.stem for p in cards) == sorted(name for name, *_ in shipped)
    mse = [c for c in zoo.cards() if c["family"] == "mse"]
    default = [c for c in mse if c["default"]]
    assert len(default) == 1 and sum(c["default"] for c in zoo.cards()) == 1
    assert abs(default[0]["kodak"]["bpp"] - 0.2) == min(abs(c["kodak"]["bpp"] - 0.2) for c in mse)

    installed = tmp_path / "runs"
    assert zoo.install("smoke", installed) == len(shipped)
    assert zoo.install("smoke", installed) == 0  # finished run folders are kept
    # a notebook of the shipped profile given no runs folder reads the zoo's models (installed once)
    monkeypatch.setattr(study, "SHIPPED_PROFILE", "smoke")
    monkeypatch.setattr(study, "SHIPPED_RUNS", tmp_path / "shipped")
    S = study.setup("smoke", results, tmp_path / "figures")
    assert S.runs == tmp_path / "shipped" and S.train("main").status.eq("done").all()
    assert len(list((tmp_path / "shipped").glob("*/*/final.json"))) == len(shipped)
    assert study.train_all("smoke", installed, progress=False, timings=None) == 0
    for (name, _, trained, _), (_, _, run, _) in zip(shipped, zoo.shipped_models("smoke", installed)):
        assert run != trained
        assert (models.load_checkpoint(run / "checkpoint.pt").fingerprint()
                == models.load_checkpoint(trained / "checkpoint.pt").fingerprint()), name
    rows_before = len(pd.read_csv(results / "learned_kodak.csv"))
    assert not pd.read_csv(results / "learned_kodak.csv").model.str.startswith("base").any()
    for path in NOTEBOOKS[4:6]:  # 04 (training curves) and 05 (evaluation): no training, no new model
        out = study.run_notebook(path, tmp_path / "executed", progress=False, parameters={
            "profile": "smoke", "results_dir": str(results), "figures_dir": str(tmp_path / "figures"),
            "runs_dir": str(installed)})
        text = out.read_text()
        assert '"output_type": "error"' not in text
    assert "nothing (all runs reused)" in (tmp_path / "executed" / NOTEBOOKS[4].name).read_text()
    assert len(pd.read_csv(results / "learned_kodak.csv")) == rows_before


def test_installing_refuses_a_zoo_of_other_settings_or_missing_models(study_dirs, tmp_path, monkeypatch):
    import json

    from lic_utils import evaluate, zoo
    from lic_utils.errors import LicError

    folder = tmp_path / "zoo"
    monkeypatch.setattr(zoo, "ZOO_DIR", folder)
    zoo.export_profile("smoke", evaluate.kodak_images(2, 256), "mse", runs_dir=study_dirs["runs"],
                       cache=study_dirs["results"] / "learned_kodak.csv", progress=False)
    card_path = folder / "factorized-lpips-l0.004.json"
    card = json.loads(card_path.read_text())
    card["training"]["config"]["loss"]["gamma"] = 0.5
    card_path.write_text(json.dumps(card))
    with pytest.raises(LicError, match=r"factorized-lpips-l0.004 was trained with other settings than the "
                                       r"smoke profile now has \(gamma\)"):
        zoo.install("smoke", tmp_path / "runs")
    card_path.unlink()
    with pytest.raises(LicError, match=r"lacks 1 of the smoke study's 22 models \(factorized-lpips-l0.004\)"):
        zoo.install("smoke", tmp_path / "runs2")
    # the base alone, for retraining the fine-tunes from it on a machine without runs/
    assert zoo.install("smoke", tmp_path / "runs3", only=["base-mse-l0.004"]) == 1
    assert study.train_base("smoke", tmp_path / "runs3", progress=False) is False
    assert [p.name for p in (tmp_path / "runs3").iterdir()] == ["study-smoke-base"]
