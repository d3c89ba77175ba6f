"""Quality per CPU-minute by model width → results/model_size.csv.

    .venv/bin/python benchmarks/model_size.py --N 64 --M 96 --minutes 20
    .venv/bin/python benchmarks/model_size.py --N 64 --M 96 --minutes 20 --reference runs/study-cpu-base/base

The reference models (issue 15) may be wider than the cpu profile's N=48, M=96 if that buys more
quality per CPU-hour. This trains the cpu base recipe (MSE at the ablation λ, lr 7e-4 after a
500-step warm-up, cosine over `--steps`, compiled, on every core) at width N/M for `--minutes` of
wall time, stopped with a checkpoint (the same command resumes it), and sets its validation curve
(the Kodak crops of the trainer, every 1,000 steps) against a reference run's at equal minutes: by
default the study's own base (N=48, M=96: the same recipe, schedule and machine). Give the machine
nothing else to do meanwhile, or the minutes mean nothing.

One row per run and validation: N, M, step, minutes, val loss (λ·R + MSE, what both minimise),
val bpp and PSNR. Printed: each run's validation at the reference's last common minute.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import config, files, profiles, run_folder, train  # noqa: E402


def curve(run_dir: Path) -> pd.DataFrame:
    """A run's validations: step, minutes, val_loss, val_bpp, val_psnr (with its N and M)."""
    cfg = run_folder.read_run_config(run_dir)
    log = run_folder.read_log(run_dir).dropna(subset=["val_loss"])
    return pd.DataFrame({"run": str(run_dir), "N": cfg.model.N, "M": cfg.model.M, "step": log["step"],
                         "minutes": (log["time_s"] / 60).round(2), "val_loss": log["val_loss"],
                         "val_bpp": log["val_bpp"], "val_psnr": log["val_psnr"]})


def at_minutes(c: pd.DataFrame, minutes: float) -> dict:
    """A curve's validation numbers interpolated at `minutes`."""
    return {k: float(np.interp(minutes, c["minutes"], c[k])) for k in ("step", "val_loss", "val_bpp", "val_psnr")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, required=True)
    ap.add_argument("--M", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall time of training (this sitting)")
    ap.add_argument("--steps", type=int, default=None, help="schedule length (default: the cpu base's)")
    ap.add_argument("--reference", default=str(files.RUNS_DIR / "study-cpu-base" / "base"))
    ap.add_argument("--runs", default=str(files.RUNS_DIR / "model_size"))
    ap.add_argument("--out", default=str(files.RESULTS_DIR / "model_size.csv"))
    ap.add_argument("--no-train", action="store_true", help="only compare the runs as they are")
    args = ap.parse_args()

    p = profiles.PROFILES["cpu"]
    recipe = {**p.base, **({"steps": args.steps} if args.steps else {})}
    cfg = config.TrainConfig.for_profile("cpu", lmbda=p.ablation_lmbda, N=args.N, M=args.M, **recipe)
    run_dir = Path(args.runs) / f"N{args.N}-M{args.M}"
    if not args.no_train:
        train.train(cfg, run_dir, callbacks=[train.TimeLimit(args.minutes)])

    curves = [curve(run_dir)]
    ref = Path(args.reference)
    if (ref / "log.csv").exists():
        curves.insert(0, curve(ref))
    table = pd.concat(curves, ignore_index=True)
    files.atomic_to_csv(table, args.out)
    common = min(c["minutes"].max() for c in curves)
    print(f"validation at {common:.1f} min of training (interpolated):")
    for c in curves:
        v = at_minutes(c, common)
        print(f"  N={c['N'].iloc[0]:3d} M={c['M'].iloc[0]:3d}: step {v['step']:7.0f}  val loss {v['val_loss']:.5f}  "
              f"{v['val_bpp']:.4f} bpp  {v['val_psnr']:.2f} dB")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
