"""Every numbered notebook runs top to bottom under papermill in the smoke profile and writes its outputs."""
import json

import pytest

from lic_utils import study

NOTEBOOKS = study.notebook_paths()
# What each notebook must leave behind (file names under results/ and figures/).
EXPECTED = {
    "00_data_and_baselines.ipynb": ["baselines_kodak.csv", "00_datasets.png", "00_lpips_reference.png", "00_rd_baselines.png"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(path, tmp_path):
    dirs = {k: tmp_path / k for k in ("results", "figures", "runs")}
    out = study.run_notebook(path, tmp_path / "executed", progress=False, parameters={
        "profile": "smoke", "results_dir": str(dirs["results"]), "figures_dir": str(dirs["figures"]),
        "runs_dir": str(dirs["runs"])})
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    produced = {p.name for d in dirs.values() if d.exists() for p in d.rglob("*") if p.is_file()}
    missing = [f for f in EXPECTED.get(path.name, []) if f not in produced]
    assert not missing, f"{path.name} did not write {missing}"
    assert any(n.endswith(".png") for n in produced), "every notebook saves at least one figure"
