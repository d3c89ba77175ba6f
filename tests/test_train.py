"""The trainer: configs nest and validate, smoke runs learn, resume is exact, the guard survives NaNs,
DDP ranks agree."""
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lic_utils import config, distributed, profiles, run_folder, train
from lic_utils.errors import LicError
from lic_utils.files import REPO
from lic_utils.losses import LossConfig
from lic_utils.models import ModelConfig

# Fast settings on top of the smoke profile: no Kodak validation unless a test asks for it.
FAST = dict(progress=False, num_val_crops=0, device="cpu")


def smoke(**kw) -> config.TrainConfig:
    return config.TrainConfig.for_profile("smoke", **{**FAST, **kw})


def params_of(run_dir):
    from lic_utils import models

    return dict(models.load_checkpoint(Path(run_dir) / "checkpoint.pt").named_parameters())


# --- configuration ---------------------------------------------------------------------------------
def test_profiles_files_and_overrides(tmp_path):
    gpu = config.TrainConfig.for_profile("gpu")
    assert (gpu.model.N, gpu.model.M, gpu.crop, gpu.batch) == (128, 192, 256, 16) and gpu.steps >= 200_000
    cpu = config.TrainConfig.for_profile("cpu", lmbda=0.01, steps=None)
    assert cpu.loss.lmbda == 0.01 and cpu.steps == config.TrainConfig().steps
    assert config.TrainConfig.for_profile("smoke").steps == profiles.PROFILES["smoke"].train["steps"]

    f = tmp_path / "c.yaml"
    f.write_text("profile: smoke\nprior: hyperprior\nlr: 5e-4\nsteps: 7\n")  # YAML reads 5e-4 as a string
    cfg = config.TrainConfig.from_file(f, steps=9)
    assert (cfg.model.prior, cfg.lr, cfg.steps, cfg.model.N) == ("hyperprior", 5e-4, 9,
                                                                 profiles.PROFILES["smoke"].train["N"])
    assert config.TrainConfig.from_file(f, profile="cpu").model.N == ModelConfig().N  # --profile wins
    j = tmp_path / "c.json"
    j.write_text(json.dumps(cfg.to_dict()))
    assert config.TrainConfig.from_file(j) == cfg

    with pytest.raises(LicError, match="unknown training option"):
        config.TrainConfig.for_profile("cpu", lambda_=1)
    with pytest.raises(LicError, match="unknown prior"):
        config.TrainConfig.for_profile("cpu", prior="gaussian-mixture")
    with pytest.raises(LicError, match="multiples of 64"):
        config.TrainConfig.for_profile("cpu", prior="hyperprior", crop=80)


def test_config_nests_model_and_loss_and_takes_flat_keys():
    cfg = config.TrainConfig.from_dict({"N": 16, "lmbda": "2e-3", "gamma": 0, "steps": 1e4, "quantizer": "ste"})
    assert cfg.model == ModelConfig(N=16, quantizer="ste") and cfg.loss == LossConfig(lmbda=2e-3)
    assert cfg.steps == 10_000 and isinstance(cfg.steps, int) and isinstance(cfg.loss.gamma, float)
    nested = cfg.to_dict()
    assert nested["model"]["N"] == 16 and nested["loss"]["lmbda"] == 2e-3 and "N" not in nested
    assert config.TrainConfig.from_dict(nested) == cfg  # config.json round trip
    assert config.TrainConfig.from_dict(cfg.flat()) == cfg  # flat round trip
    assert config.TrainConfig.from_dict({**nested, "N": 32}).model.N == 32  # a flat key wins
    assert cfg.replace(M=40).model.M == 40 and cfg.replace(lmbda=0.0).loss.lmbda == 0.0
    assert cfg.replace(model=ModelConfig(prior="hyperprior"), crop=128).model.prior == "hyperprior"
    assert "device" not in cfg.run_fields() and cfg.run_fields()["lmbda"] == 2e-3
    with pytest.raises(LicError, match="`loss` must map"):
        config.TrainConfig.from_dict({"loss": {"N": 3}})


@pytest.mark.parametrize("bad, message", [
    ({"N": 0}, "N must be an integer in 1..1024"),
    ({"M": 12.5}, "M must be an integer"),
    ({"lmbda": float("nan")}, "lmbda must be a finite number ≥ 0, got nan"),
    ({"gamma": "inf"}, "gamma must be a finite number ≥ 0"),
    ({"beta": -0.1}, "beta must be a finite number ≥ 0"),
    ({"steps": "many"}, "steps must be a number"),
    ({"lr": 0}, "lr must be > 0"),
    ({"log_every": 0}, "log_every must be > 0"),
    ({"lr_schedule": "linear"}, "unknown lr_schedule"),
    ({"flips": "yes"}, "flips must be a bool"),
])
def test_every_setting_is_validated(bad, message):
    with pytest.raises(LicError, match=message) as e:
        config.TrainConfig.for_profile("smoke", **bad)
    assert "\n" not in str(e.value)


def test_a_bad_config_leaves_no_run_folder(tmp_path, capsys):
    from lic_utils.cli import main

    for i, option in enumerate(["--set=N=0", "--lmbda=nan", "--set=crop=70"]):
        out = tmp_path / f"run{i}"
        assert main(["train", "--profile", "smoke", option, "--out", str(out)]) == 1
        assert not out.exists()
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(LicError):
        train.train({"N": 0}, tmp_path / "run3")
    assert not (tmp_path / "run3").exists()


def test_lr_schedule_warms_up_and_decays():
    cfg = config.TrainConfig.from_dict(dict(steps=1000, warmup=100, lr_schedule="cosine", min_lr_factor=0.02))
    f = [train.lr_factor(s, cfg) for s in range(1000)]
    assert f[0] == pytest.approx(0.01) and f[99] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[100:], f[101:]))  # monotone decay after warm-up
    assert f[-1] == pytest.approx(0.02, abs=1e-3)
    step = cfg.replace(lr_schedule="step")
    assert train.lr_factor(500, step) == 1.0 and train.lr_factor(900, step) == pytest.approx(0.1)


def test_device_auto_falls_back_to_cpu():
    assert distributed.pick_device("auto").type in {"cuda", "mps", "cpu"}
    assert distributed.pick_device("cpu") == torch.device("cpu")


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
    log = run_folder.read_log(out)
    tr = log[log["loss"].notna()]
    assert tr["step"].tolist() == list(range(cfg.log_every, cfg.steps + 1, cfg.log_every))
    assert set(run_folder.LOG_COLUMNS) <= set(log.columns)
    assert tr["loss"].iloc[-2:].mean() < 0.7 * tr["loss"].iloc[:2].mean()  # the loss fell
    assert (tr["lr"].iloc[-1] < tr["lr"].max()) and tr[["bpp", "mse", "psnr"]].notna().all().all()
    val = log[log["val_bpp"].notna()]
    assert len(val) == 2 and val[["val_psnr", "val_ms_ssim", "val_lpips"]].notna().all().all()
    final = json.loads((out / "final.json").read_text())
    assert final["done"] and final["val"]["psnr"] > 10 and 0 < final["val"]["bpp"] < 5
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()  # written nested
    assert run_folder.read_run_config(out) == cfg

    model = models.load_checkpoint(out / "checkpoint.pt")  # what compress/evaluate load
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 64, 64))
    assert y["x_hat"].shape == (1, 3, 64, 64)


def test_the_training_state_is_one_plain_object(smoke_run):
    cfg, out, _ = smoke_run
    blob = torch.load(out / "checkpoint.pt", weights_only=True)["extra"]
    extra = torch.load(io.BytesIO(blob), weights_only=True)  # plain data only
    assert set(extra) == {"train_config", "train_state"} and extra["train_config"] == cfg.to_dict()
    state = train.TrainState(**extra["train_state"])
    assert state.step == cfg.steps and state.lr_scale == 1.0 and state.elapsed_s > 0
    assert set(state.guard) == {"history", "bad_streak", "rollbacks"} and len(state.rng) == 1
    assert state.optimizer["state"] and state.aux_optimizer["state"]
    assert set(state.aux_params) == {n for n, _ in params_of(out).items() if n.endswith("quantiles")}


def test_train_and_load_gives_the_codec_and_its_history(smoke_run):
    cfg, out, _ = smoke_run
    model, history = train.train_and_load(cfg, out)  # finished: nothing is trained again
    assert not model.training and model.coder_ready() and model.config == cfg.model
    assert history["step"].tolist() == list(range(cfg.log_every, cfg.steps + 1, cfg.log_every))
    assert {"loss", "bpp", "mse", "psnr", "lr"} <= set(history.columns) and "val_bpp" not in history


def test_rerunning_a_finished_run_does_nothing(smoke_run, capsys):
    cfg, out, _ = smoke_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = train.train(cfg.replace(progress=True, threads=2), out)  # operational changes are fine
    assert result["status"] == "already done"
    assert "already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(LicError, match="another configuration"):
        train.train(cfg.replace(lmbda=cfg.loss.lmbda * 2), out)


def test_run_folders_with_a_flat_config_json_still_work(smoke_run, tmp_path):
    """config.json files written before the nesting are flat and hold the old test hooks."""
    import shutil

    cfg, out, _ = smoke_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "config.json").write_text(json.dumps({**cfg.flat(), "fault_steps": [], "debug_hashes": False}))
    assert run_folder.read_run_config(old) == cfg
    assert train.train(cfg, old)["status"] == "already done"
    with pytest.raises(LicError, match=r"N: 16 → 24"):
        train.train(cfg.replace(N=24), old)


# --- resume ----------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


class CrashAt(train.Callback):
    """An interruption (e.g. Ctrl-C) after `step`, wherever it falls relative to the checkpoints."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, metrics):
        if trainer.step == self.step:
            raise Interrupt


class StopAt(train.Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, metrics):
        if trainer.step == self.step:
            trainer.stop()


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    cfg = smoke(steps=24, ckpt_every=8, log_every=4)
    train.train(cfg, tmp_path / "straight")

    with pytest.raises(Interrupt):
        train.train(cfg, tmp_path / "resumed", callbacks=[CrashAt(10)])  # 2 steps after the checkpoint of step 8
    assert run_folder.run_status(tmp_path / "resumed") == "partial"
    torch.manual_seed(1234)  # whatever the process did meanwhile
    torch.rand(10)
    # a stop between two checkpoints writes one, then one right on a checkpoint step
    assert train.train(cfg, tmp_path / "resumed", callbacks=[StopAt(12)])["status"] == "stopped"
    assert train.TrainState(**_extra(tmp_path / "resumed")["train_state"]).step == 12
    assert train.train(cfg, tmp_path / "resumed", callbacks=[StopAt(16)])["steps"] == 16
    result = train.train(cfg, tmp_path / "resumed")
    assert result["status"] == "done" and result["steps"] == 24

    a, b = params_of(tmp_path / "straight"), params_of(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    la, lb = run_folder.read_log(tmp_path / "straight"), run_folder.read_log(tmp_path / "resumed")
    assert lb["step"].tolist() == la["step"].tolist()  # no duplicated rows after the resume
    assert lb["loss"].tolist() == la["loss"].tolist()


def test_resume_across_a_validation_is_bit_exact(tmp_path):
    """A resumed run builds LPIPS again at its next validation (a fresh process has none cached):
    that must not move the random stream the run draws its crops and noise from."""
    from lic_utils import metrics

    cfg = smoke(prior="hyperprior", steps=30, ckpt_every=10, val_every=10, num_val_crops=1, log_every=5)
    metrics.lpips_model.cache_clear()  # as in a fresh process
    train.train(cfg, tmp_path / "straight")
    metrics.lpips_model.cache_clear()
    assert train.train(cfg, tmp_path / "resumed", callbacks=[StopAt(15)])["status"] == "stopped"
    metrics.lpips_model.cache_clear()  # the resumed process starts without LPIPS
    train.train(cfg, tmp_path / "resumed")
    a, b = params_of(tmp_path / "straight"), params_of(tmp_path / "resumed")
    assert all(torch.equal(a[name], b[name]) for name in a)
    val = lambda run: run_folder.read_log(run).dropna(subset=["val_bpp"])["val_bpp"].tolist()  # noqa: E731
    assert val(tmp_path / "straight") == val(tmp_path / "resumed")


def _extra(run_dir):
    from lic_utils import models

    return models.load_checkpoint_extra(Path(run_dir) / "checkpoint.pt")


# --- guard -----------------------------------------------------------------------------------------
def test_nan_guard_skips_rolls_back_and_logs(tmp_path):
    cfg = smoke(steps=30, ckpt_every=10, max_bad_steps=3, guard_recovery=0)
    result = train.train(cfg, tmp_path / "nan", callbacks=[train.FaultInjection([5, 22, 23, 24])])
    assert result["status"] == "done" and result["events"] >= 5
    log = run_folder.read_log(tmp_path / "nan")
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
    state = train.TrainState(**_extra(tmp_path / "nan")["train_state"])
    assert state.lr_scale == 0.5 and state.guard["bad_streak"] == 0


def test_a_rollbacks_halved_lr_grows_back_over_guard_recovery_steps(tmp_path):
    cfg = smoke(steps=40, ckpt_every=10, max_bad_steps=3, guard_recovery=8)
    train.train(cfg, tmp_path / "run", callbacks=[train.FaultInjection([22, 23, 24])])
    log = run_folder.read_log(tmp_path / "run")
    rollback = log[log["event"].fillna("").str.startswith("rollback")]
    assert rollback["step"].tolist() == [24] and "back to 1 over 8 good steps" in rollback["event"].iloc[0]
    tr = log[log["loss"].notna()].set_index("step")
    # the window of steps 25–29: 0.5·2^(k/8) after k good steps; by step 33 the schedule is back
    scales = [min(1.0, 0.5 * 2 ** (k / 8)) for k in range(5)]
    expect = cfg.lr * sum(sc * train.lr_factor(s, cfg) for sc, s in zip(scales, range(25, 30))) / 5
    assert tr.loc[30, "lr"] == pytest.approx(expect, rel=1e-3)
    state = train.TrainState(**_extra(tmp_path / "run")["train_state"])
    assert state.lr_scale == 1.0


def test_the_guard_flags_spikes():
    guard = train.Guard(smoke(guard_window=10, spike_factor=5.0), torch.nn.Linear(1, 1), None, None)
    assert guard.check(1e9) is None  # too little history to call anything a spike
    for _ in range(5):
        guard.good(1.0)
    assert guard.check(4.9) is None and guard.check(5.1).startswith("loss spike 5.1 > 5 × median 1")
    assert guard.check(float("inf")).startswith("non-finite loss")
    assert [guard.bad() for _ in range(3)] == [False, False, True]


class NanEvery(train.Callback):
    """The loss of every step that is not a multiple of `good_every` becomes NaN."""

    def __init__(self, good_every=0):
        self.good_every = good_every

    def on_loss(self, trainer, loss):
        good = self.good_every and trainer.step % self.good_every == 0
        return loss if good else loss * float("nan")


@pytest.mark.parametrize("max_bad_steps, good_every, failure", [
    (3, 0, "at step 8: 3 rollbacks without a good step between them"),  # rollbacks at 2, 5, 8
    (1, 2, "at step 19: rollbacks have cut the learning rate to 0.000976562 of its schedule"),  # 10th
])
def test_a_guard_that_fires_without_end_fails_the_run(tmp_path, max_bad_steps, good_every, failure):
    """Skipping and rolling back for ever would end "done" with an untrained model: the run fails
    loudly instead, writes no final.json, and log.csv says why."""
    cfg = smoke(steps=40, ckpt_every=10, max_bad_steps=max_bad_steps, guard_recovery=0)
    with pytest.raises(LicError, match=f"training failed {failure}") as err:
        train.train(cfg, tmp_path / "run", callbacks=[NanEvery(good_every)])
    assert "\n" not in str(err.value) and "another --out" in str(err.value)
    assert run_folder.run_status(tmp_path / "run") != "done"  # no final.json
    events = run_folder.read_log(tmp_path / "run")["event"].dropna().tolist()
    assert events[-1] == f"failed: {failure.split(': ', 1)[1]}"


# --- the command line ------------------------------------------------------------------------------
def test_a_long_run_trains_in_pieces_with_max_minutes(tmp_path, capsys):
    """--max-minutes stops with a checkpoint; the same command resumes to the very weights of a
    run trained in one piece."""
    from lic_utils.cli import main

    argv = ["train", "--profile", "smoke", "--steps", "20", "--set", "progress=false", "--set",
            "num_val_crops=0", "--set", "threads=1", "--set", "ckpt_every=10"]
    assert main([*argv, "--out", str(tmp_path / "pieces"), "--max-minutes", "0"]) == 0
    assert "stopped at step 1 of 20" in capsys.readouterr().out
    assert run_folder.run_status(tmp_path / "pieces") != "done"
    assert main([*argv, "--out", str(tmp_path / "pieces")]) == 0
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    a, b = params_of(tmp_path / "pieces"), params_of(tmp_path / "whole")
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_cli_train(tmp_path, capsys):
    from lic_utils.cli import main

    out = tmp_path / "cli"
    args = ["train", "--profile", "smoke", "--prior", "factorized", "--lmbda", "0.01", "--steps", "4",
            "--set", "num_val_crops=0", "--set", "progress=false", "--out", str(out)]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["loss"]["lmbda"], cfg["steps"], cfg["num_val_crops"]) == (0.01, 4, 0)
    assert main(args) == 0 and "already done" in capsys.readouterr().out
    assert main(["train", "--profile", "smoke", "--set", "nope=1", "--out", str(out)]) == 1


class _Planted:
    """A pickle that would create a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resuming_a_run_with_a_planted_training_state_is_one_line_and_runs_nothing(tmp_path, capsys):
    from lic_utils import models
    from lic_utils.cli import main

    run = tmp_path / "run"
    models.save_checkpoint(run / "checkpoint.pt", models.build_model(smoke().model),
                           extra={"train_state": {"step": 1}, "evil": _Planted(tmp_path / "pwned")})
    code = main(["train", "--profile", "smoke", "--set", "progress=false", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: {run / 'checkpoint.pt'}: its training state is not plain data")
    assert err.count("\n") == 1 and not (tmp_path / "pwned").exists()


HOLD_SCRIPT = """
import sys, time
from pathlib import Path

from lic_utils import config, train


class Hold(train.Callback):  # signals that training has begun, then waits to be killed
    def on_train_begin(self, trainer):
        Path(sys.argv[2]).touch()
        time.sleep(300)


cfg = config.TrainConfig.for_profile("smoke", steps=4, progress=False, num_val_crops=0, device="cpu")
train.train(cfg, sys.argv[1], callbacks=[Hold()])
"""


def test_a_second_trainer_of_a_run_folder_is_refused_until_the_first_dies(tmp_path, capsys):
    """Two trainers of one folder would interleave log.csv and overwrite each other's checkpoint:
    the second is refused while the first runs; killed with SIGKILL, the first leaves no stale lock."""
    from lic_utils.cli import main

    run, ready = tmp_path / "run", tmp_path / "ready"
    first = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(run), str(ready)], cwd=REPO,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), "the first trainer did not start"
        argv = ["train", "--profile", "smoke", "--steps", "4", "--set", "num_val_crops=0",
                "--set", "progress=false", "--set", "device=cpu", "--out", str(run)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err == (f"error: {run} is in use: another process is training in it (it holds "
                       f"{run / '.lock'}); wait for it to finish, or choose another folder\n")
    finally:
        first.kill()  # SIGKILL: no clean-up runs
        first.wait(timeout=60)
    assert main(argv) == 0 and run_folder.run_status(run) == "done"


# --- distributed -----------------------------------------------------------------------------------
DDP_SCRIPT = """
import sys
from pathlib import Path

from lic_utils import config, train


class Fingerprint(train.Callback):
    def on_train_end(self, trainer):
        Path(sys.argv[1], f"rank{trainer.env.rank}.weights").write_text(trainer.model.fingerprint())


cfg = config.TrainConfig.for_profile("smoke", steps=30, progress=False, num_val_crops=1, ckpt_every=10,
                                    device="cpu")
train.train(cfg, sys.argv[1], callbacks=[train.FaultInjection([17]), Fingerprint()])
"""


def test_ddp_two_ranks_stay_identical_and_learn(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0, w1 = (out / "rank0.weights").read_text(), (out / "rank1.weights").read_text()
    assert w0 == w1 and len(w0) == 16
    final = json.loads((out / "final.json").read_text())
    assert final["world_size"] == 2 and final["steps"] == 30
    log = run_folder.read_log(out)
    tr = log[log["loss"].notna()]
    assert tr["loss"].iloc[-2:].mean() < 0.7 * tr["loss"].iloc[:2].mean()
    assert log["event"].dropna().str.contains("non-finite loss").any()  # the guard works across ranks
    assert len(train.TrainState(**_extra(out)["train_state"]).rng) == 2  # every rank's RNG state
    assert not (out / "rank1").exists() and sorted(p.name for p in out.glob("*.pt")) == ["checkpoint.pt"]


# --- fine-tuning -----------------------------------------------------------------------------------
def test_a_run_can_start_from_another_runs_weights(tmp_path):
    """Amortised training: a fine-tune starts from the base's weights (every one for the same codec,
    the transforms and channel steps for another prior) with a fresh schedule; N/M must match."""
    from lic_utils import models

    base = tmp_path / "base"
    train.train(smoke(steps=10), base)
    base_model = models.load_checkpoint(base / "checkpoint.pt")
    tune = smoke(steps=1, lmbda=2e-2, lr=1e-12, init_from=str(base / "checkpoint.pt"))
    train.train(tune, tmp_path / "tune")
    tuned = models.load_checkpoint(tmp_path / "tune" / "checkpoint.pt")
    for name, p in base_model.named_parameters():  # one step at lr 1e-12 leaves the weights in place
        assert torch.allclose(p, dict(tuned.named_parameters())[name], atol=1e-6), name
    hyper = smoke(steps=1, lr=1e-12, prior="hyperprior", init_from=str(base / "checkpoint.pt"))
    train.train(hyper, tmp_path / "hyper")
    h = models.load_checkpoint(tmp_path / "hyper" / "checkpoint.pt")
    assert torch.allclose(h.g_s[0].weight, base_model.g_s[0].weight, atol=1e-6)
    with pytest.raises(LicError, match="N=16"):
        train.train(smoke(steps=1, N=8, init_from=str(base / "checkpoint.pt")), tmp_path / "other")


def test_a_codec_without_channel_steps_starts_from_the_same_function(tmp_path):
    """The no-scale ablation fine-tuned from a base with learned steps: s is folded into g_a's last
    convolution and g_s's first one, so the starting codec computes what the base computed."""
    from lic_utils import models

    base = tmp_path / "base"
    train.train(smoke(steps=10), base)
    train.train(smoke(steps=1, lr=1e-12, channel_scale=False, init_from=str(base / "checkpoint.pt")),
                tmp_path / "noscale")
    a = models.load_checkpoint(base / "checkpoint.pt")
    b = models.load_checkpoint(tmp_path / "noscale" / "checkpoint.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(a.analyze(x), b.analyze(x), atol=1e-4)
        v = torch.round(a.analyze(x))
        assert torch.allclose(a.synthesize(v), b.synthesize(v), atol=1e-4)


def test_a_compiled_run_trains_like_an_eager_one(tmp_path):
    """compile=True (the cpu profile's base run) runs the same step through torch.compile: the
    first steps' losses agree with an eager run's to float precision."""
    losses = {}
    for compiled in (False, True):
        run = tmp_path / f"compile-{compiled}"
        train.train(smoke(steps=3, threads=1, log_every=1, compile=compiled), run)
        losses[compiled] = run_folder.read_log(run)["loss"].dropna().tolist()
    assert len(losses[True]) == len(losses[False]) > 0
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_compile_without_a_cxx_compiler_warns_and_trains_eagerly(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="needs a C\\+\\+ compiler"):
        trainer = train.Trainer(smoke(steps=2, compile=True), tmp_path / "run")
    assert isinstance(trainer.stepper, train._Step)
