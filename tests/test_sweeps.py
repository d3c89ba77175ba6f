"""Grids of runs: names, specs from YAML, the index, skipping finished runs, parallel = sequential."""
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lic_utils import profiles, sweeps
from lic_utils.errors import LicError
from lic_utils.files import REPO

FAST = dict(progress=False, num_val_crops=0, device="cpu", steps=6, log_every=3)


def params_of(run_dir):
    from lic_utils import models

    return dict(models.load_checkpoint(Path(run_dir) / "checkpoint.pt").named_parameters())


def test_a_spec_names_its_grid_and_builds_each_config(tmp_path):
    spec = sweeps.SweepSpec(profile="smoke", priors=["factorized", "hyperprior"], lmbdas=[0.004, 0.016],
                            overrides={"channel_scale": False}, tag="noscale")
    runs = spec.runs()
    assert len(runs) == 2 * len(profiles.LOSS_VARIANTS) * 2  # the study's variants by default
    name, point, cfg = runs[-1]
    assert name == "hyperprior-lpips-l0.016-noscale" == sweeps.run_name("hyperprior", "lpips", 0.016) + "-noscale"
    assert point == {"prior": "hyperprior", "variant": "lpips", "lmbda": 0.016}
    assert (cfg.model.prior, cfg.model.channel_scale, cfg.loss.lmbda) == ("hyperprior", False, 0.016)
    assert cfg.loss.gamma == profiles.LOSS_VARIANTS["lpips"]["gamma"]
    assert cfg.model.N == profiles.PROFILES["smoke"].train["N"]

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"profile": "smoke", "out": "runs/x", "lmbdas": [0.002]}))
    assert sweeps.SweepSpec.from_file(f).out == str(REPO / "runs/x")  # relative to the repository
    f.write_text(yaml.safe_dump({"profile": "smoke", "lambdas": [0.002]}))
    with pytest.raises(LicError, match="unknown sweep option"):
        sweeps.SweepSpec.from_file(f)


def test_sweep_trains_once_then_skips(tmp_path):
    spec = {"profile": "smoke", "out": str(tmp_path / "runs"), "priors": ["factorized"],
            "variants": {"mse": {}, "msssim": {"beta": 0.05}}, "lmbdas": [0.004], "overrides": FAST}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    first = sweeps.sweep(f, progress=False)
    assert first.attrs["trained"] == ["factorized-mse-l0.004", "factorized-msssim-l0.004"]
    index = pd.read_csv(tmp_path / "runs" / "index.csv")
    assert index.columns.tolist() == sweeps.INDEX_COLUMNS
    assert index["status"].tolist() == ["done", "done"] and index["steps"].tolist() == [6, 6]
    assert index["beta"].tolist() == [0.0, 0.05]
    assert index["train_ms_ssim"].isna().tolist() == [True, False]  # MS-SSIM only computed with β > 0
    assert all(Path(p).exists() for p in index["checkpoint"])
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")}
    second = sweeps.sweep(f, progress=False)
    assert second.attrs["trained"] == []
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")} == mtimes
    assert len(pd.read_csv(tmp_path / "runs" / "index.csv")) == 2


def test_parallel_sweep_equals_sequential(tmp_path):
    """workers=2 trains two runs at once in their own processes; each ends with the same weights as
    when the runs are trained one after the other, and the index is the same."""
    grid = dict(profile="smoke", priors=["factorized"], variants={"mse": {}, "msssim": {"beta": 0.05}},
                lmbdas=[0.004], overrides={**FAST, "threads": 1})
    seq = sweeps.sweep(sweeps.SweepSpec(out=str(tmp_path / "seq"), **grid), progress=False)
    par = sweeps.sweep(sweeps.SweepSpec(out=str(tmp_path / "par"), **grid), progress=False, workers=2)
    assert par.attrs["trained"] == seq.attrs["trained"] == ["factorized-mse-l0.004", "factorized-msssim-l0.004"]
    assert par["status"].tolist() == ["done", "done"]
    for name in seq["name"]:
        a, b = params_of(tmp_path / "seq" / name), params_of(tmp_path / "par" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert pd.read_csv(tmp_path / "par" / "index.csv")["name"].tolist() == seq["name"].tolist()


def test_cli_sweep(tmp_path, capsys):
    from lic_utils.cli import main

    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump({"profile": "smoke", "out": str(tmp_path / "runs"), "variants": {"mse": {}},
                                 "lmbdas": [0.004, 0.008], "overrides": FAST}))
    assert main(["sweep", str(f), "--only", "factorized-mse-l0.008", "--no-progress"]) == 0
    assert "factorized-mse-l0.008" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == ["factorized-mse-l0.008"]
