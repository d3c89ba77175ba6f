"""The trainer: smoke runs learn, resume is exact, the guard survives NaNs, DDP ranks agree, sweeps skip."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lic_utils import train
from lic_utils.errors import LicError
from lic_utils.files import REPO

# Fast settings on top of the smoke profile: no Kodak validation unless a test asks for it.
FAST = dict(progress=False, num_val_crops=0, device="cpu")


def smoke(**kw) -> train.TrainConfig:
    return train.TrainConfig.for_profile("smoke", **{**FAST, **kw})


def params_of(run_dir):
    from lic_utils import models

    return dict(models.load_checkpoint(Path(run_dir) / "checkpoint.pt").named_parameters())


# --- configuration ---------------------------------------------------------------------------------
def test_profiles_files_and_overrides(tmp_path):
    gpu = train.TrainConfig.for_profile("gpu")
    assert (gpu.N, gpu.M, gpu.crop, gpu.batch) == (128, 192, 256, 16) and gpu.steps >= 200_000
    cpu = train.TrainConfig.for_profile("cpu", lmbda=0.01, steps=None)
    assert cpu.lmbda == 0.01 and cpu.steps == train.TrainConfig().steps
    assert train.TrainConfig.for_profile("smoke").steps < 100

    f = tmp_path / "c.yaml"
    f.write_text("profile: smoke\nprior: hyperprior\nlr: 5e-4\nsteps: 7\n")  # YAML reads 5e-4 as a string
    cfg = train.TrainConfig.from_file(f, steps=9)
    assert (cfg.prior, cfg.lr, cfg.steps, cfg.N) == ("hyperprior", 5e-4, 9, train.PROFILES["smoke"]["N"])
    j = tmp_path / "c.json"
    j.write_text(json.dumps(cfg.to_dict()))
    assert train.TrainConfig.from_file(j) == cfg

    with pytest.raises(LicError, match="unknown training option"):
        train.TrainConfig.for_profile("cpu", lambda_=1)
    with pytest.raises(LicError, match="unknown prior"):
        train.TrainConfig(prior="gaussian-mixture")
    with pytest.raises(LicError, match="multiples of 64"):
        train.TrainConfig(prior="hyperprior", crop=80)


def test_lr_schedule_warms_up_and_decays():
    cfg = train.TrainConfig(steps=1000, warmup=100, lr_schedule="cosine", min_lr_factor=0.02)
    f = [train.lr_factor(s, cfg) for s in range(1000)]
    assert f[0] == pytest.approx(0.01) and f[99] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[100:], f[101:]))  # monotone decay after warm-up
    assert f[-1] == pytest.approx(0.02, abs=1e-3)
    step = cfg.replace(lr_schedule="step")
    assert train.lr_factor(500, step) == 1.0 and train.lr_factor(900, step) == pytest.approx(0.1)


def test_device_auto_falls_back_to_cpu():
    assert train.pick_device("auto").type in {"cuda", "mps", "cpu"}
    assert train.pick_device("cpu") == torch.device("cpu")


# --- a smoke run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    cfg = smoke(num_val_crops=2, steps=40)
    result = train.train(cfg, out)
    return cfg, out, result


def test_smoke_run_learns_and_leaves_a_complete_run_folder(smoke_run):
    from lic_utils import models

    cfg, out, result = smoke_run
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "log.csv", "config.json", "final.json"}
    assert result["status"] == "done" and result["steps"] == cfg.steps
    log = train.read_log(out)
    tr = log[log["loss"].notna()]
    assert tr["step"].tolist() == list(range(cfg.log_every, cfg.steps + 1, cfg.log_every))
    assert set(train.LOG_COLUMNS) <= set(log.columns)
    assert tr["loss"].iloc[-2:].mean() < 0.7 * tr["loss"].iloc[:2].mean()  # the loss fell
    assert (tr["lr"].iloc[-1] < tr["lr"].max()) and tr[["bpp", "mse", "psnr"]].notna().all().all()
    val = log[log["val_bpp"].notna()]
    assert len(val) == 2 and val[["val_psnr", "val_ms_ssim", "val_lpips"]].notna().all().all()
    final = json.loads((out / "final.json").read_text())
    assert final["done"] and final["val"]["psnr"] > 10 and 0 < final["val"]["bpp"] < 5
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()

    model = models.load_checkpoint(out / "checkpoint.pt")  # what compress/evaluate load
    extra = models.load_checkpoint_extra(out / "checkpoint.pt")
    assert extra["step"] == cfg.steps and {"optimizer", "aux_optimizer", "scheduler", "rng"} <= set(extra)
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 64, 64))
    assert y["x_hat"].shape == (1, 3, 64, 64)


def test_rerunning_a_finished_run_does_nothing(smoke_run, capsys):
    cfg, out, _ = smoke_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = train.train(cfg, out)
    assert result["status"] == "already done"
    assert "already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(LicError, match="another configuration"):
        train.train(cfg.replace(lmbda=cfg.lmbda * 2), out)


# --- resume ----------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    cfg = smoke(steps=24, ckpt_every=8, log_every=4)
    train.train(cfg, tmp_path / "straight")

    def crash_at(n):
        def hook(step, terms):
            if step == n:
                raise Interrupt  # e.g. Ctrl-C: 4 steps after the checkpoint of step 8
        return hook

    with pytest.raises(Interrupt):
        train.train(cfg, tmp_path / "resumed", on_step=crash_at(12))
    assert train.run_status(tmp_path / "resumed") == "partial"
    torch.manual_seed(1234)  # whatever the process did meanwhile
    torch.rand(10)
    # a second interruption, through stop_at, right after the checkpoint of step 16
    assert train.train(cfg, tmp_path / "resumed", stop_at=16)["status"] == "stopped"
    result = train.train(cfg, tmp_path / "resumed")
    assert result["status"] == "done" and result["steps"] == 24

    a, b = params_of(tmp_path / "straight"), params_of(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    la, lb = train.read_log(tmp_path / "straight"), train.read_log(tmp_path / "resumed")
    assert lb["step"].tolist() == la["step"].tolist()  # no duplicated rows after the resume
    assert lb["loss"].tolist() == la["loss"].tolist()


# --- guard -----------------------------------------------------------------------------------------
def test_nan_guard_skips_rolls_back_and_logs(tmp_path):
    cfg = smoke(steps=30, ckpt_every=10, fault_steps=[5, 22, 23, 24], max_bad_steps=3)
    result = train.train(cfg, tmp_path / "nan")
    assert result["status"] == "done" and result["events"] >= 5
    log = train.read_log(tmp_path / "nan")
    ev = log[log["event"].notna()]
    skips = ev[ev["event"].str.startswith("skip: non-finite loss")]
    assert skips["step"].tolist() == [5, 22, 23, 24]
    rollback = ev[ev["event"].str.startswith("rollback")]
    assert rollback["step"].tolist() == [24] and "back to step 20" in rollback["event"].iloc[0]
    # the LR is halved from there on
    tr = log[log["loss"].notna()]
    lr_after = tr[tr["step"] == 30]["lr"].iloc[0]
    expect = cfg.lr * 0.5 * sum(train.lr_factor(s, cfg) for s in range(25, 30)) / 5  # mean over the logged window
    assert lr_after == pytest.approx(expect, rel=1e-3)
    for p in params_of(tmp_path / "nan").values():
        assert torch.isfinite(p).all()
    assert tr["loss"].notna().all() and math.isfinite(result["train"]["loss"])


# --- sweeps and the command line -------------------------------------------------------------------
def test_sweep_trains_once_then_skips(tmp_path):
    import yaml

    spec = {"profile": "smoke", "out": str(tmp_path / "runs"), "priors": ["factorized"],
            "variants": {"mse": {}, "msssim": {"beta": 0.05}}, "lmbdas": [0.004],
            "overrides": {**FAST, "steps": 6, "log_every": 3}}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    first = train.sweep(f, progress=False)
    assert first.attrs["trained"] == ["factorized-mse-l0.004", "factorized-msssim-l0.004"]
    index = pd.read_csv(tmp_path / "runs" / "index.csv")
    assert index["status"].tolist() == ["done", "done"] and index["steps"].tolist() == [6, 6]
    assert index["train_ms_ssim"].isna().tolist() == [True, False]  # MS-SSIM only computed with β > 0
    assert all(Path(p).exists() for p in index["checkpoint"])
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")}
    second = train.sweep(f, progress=False)
    assert second.attrs["trained"] == []
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")} == mtimes
    assert len(pd.read_csv(tmp_path / "runs" / "index.csv")) == 2


def test_parallel_sweep_equals_sequential(tmp_path):
    """workers=2 trains two runs at once in their own processes; each ends with the same weights as
    when the runs are trained one after the other, and the index is the same."""
    grid = dict(profile="smoke", priors=["factorized"], variants={"mse": {}, "msssim": {"beta": 0.05}},
                lmbdas=[0.004], overrides={**FAST, "steps": 6, "log_every": 3, "threads": 1})
    seq = train.sweep(train.SweepSpec(out=str(tmp_path / "seq"), **grid), progress=False)
    par = train.sweep(train.SweepSpec(out=str(tmp_path / "par"), **grid), progress=False, workers=2)
    assert par.attrs["trained"] == seq.attrs["trained"] == ["factorized-mse-l0.004", "factorized-msssim-l0.004"]
    assert par["status"].tolist() == ["done", "done"]
    for name in seq["name"]:
        a, b = params_of(tmp_path / "seq" / name), params_of(tmp_path / "par" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert pd.read_csv(tmp_path / "par" / "index.csv")["name"].tolist() == seq["name"].tolist()


def test_cli_train_and_sweep(tmp_path, capsys):
    from lic_utils.cli import main

    out = tmp_path / "cli"
    args = ["train", "--profile", "smoke", "--prior", "factorized", "--lmbda", "0.01", "--steps", "4",
            "--set", "num_val_crops=0", "--set", "progress=false", "--out", str(out)]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["lmbda"], cfg["steps"], cfg["num_val_crops"]) == (0.01, 4, 0)
    assert main(args) == 0 and "already done" in capsys.readouterr().out
    assert main(["train", "--profile", "smoke", "--set", "nope=1", "--out", str(out)]) == 1


# --- distributed -----------------------------------------------------------------------------------
def test_ddp_two_ranks_stay_identical_and_learn(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lic_utils", "train", "--profile", "smoke", "--steps", "30", "--out", str(out),
           "--set", "debug_hashes=true", "--set", "progress=false", "--set", "num_val_crops=1",
           "--set", "ckpt_every=10", "--set", "fault_steps=[17]", "--set", "device=cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    h0, h1 = (out / "rank0.sha256").read_text(), (out / "rank1.sha256").read_text()
    assert h0 == h1 and len(h0.strip()) == 64
    final = json.loads((out / "final.json").read_text())
    assert final["world_size"] == 2 and final["steps"] == 30
    log = train.read_log(out)
    tr = log[log["loss"].notna()]
    assert tr["loss"].iloc[-2:].mean() < 0.7 * tr["loss"].iloc[:2].mean()
    assert log["event"].dropna().str.contains("non-finite loss").any()  # the guard works across ranks
    assert not (out / "rank1").exists() and sorted(p.name for p in out.glob("*.pt")) == ["checkpoint.pt"]
