"""How the `cpu` training profile was chosen: train a few settings and record them in results/cpu_tuning.csv.

    .venv/bin/python benchmarks/tune_cpu.py [--workers 2]

Every trial is an MSE-only factorized codec at the study's ablation λ, trained in the `cpu` profile with a
few options changed; they differ in model size, learning rate and steps, each within about ten minutes of
two CPU cores. Trials are ordinary run folders (runs/tune-cpu/NAME), so finished ones are reused and an
interrupted one resumes. The table holds the validation measures (Kodak crops, rounded latents, the
model's estimated rate) and the RD objective λ·bpp + MSE the trials are ranked by, because they land at
slightly different rates. Notebook 04 shows the table. `chosen` marks the best objective among the
trials that needed no guard event (no skipped step, no rollback) and cost no more per step than 8
crops of 128² (more pixels per step cost the study's 3-hour budget proportionally more time).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import config, files, profiles, run_folder, sweeps  # noqa: E402

# name → (what it tests, overrides of the cpu profile). `threads=1`: two trials share the two cores.
TRIALS = {
    "N48-lr5e-4": ("N=48, lr 5e-4 (the probe's rate)", dict(N=48, lr=5e-4, steps=3500)),
    "N48-lr1e-3": ("N=48, lr 1e-3 with warm-up and clipping", dict(N=48, lr=1e-3, steps=3500)),
    "N48-lr2e-3": ("N=48, lr 2e-3 (does clipping keep it stable?)", dict(N=48, lr=2e-3, steps=3500)),
    "N48-lr2e-3-w500": ("N=48, lr 2e-3 after a 500-step warm-up", dict(N=48, lr=2e-3, warmup=500, steps=3500)),
    "N48-lr1e-3-w500": ("N=48, lr 1e-3 after a 500-step warm-up", dict(N=48, lr=1e-3, warmup=500, steps=3500)),
    "N48-lr1e-3-b16c96": ("N=48, lr 1e-3, 16 crops of 96×96 (more, smaller crops)", dict(N=48, lr=1e-3, steps=3500, batch=16, crop=96)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(files.RUNS_DIR / "tune-cpu"))
    args = ap.parse_args()
    lmbda = profiles.PROFILES["cpu"].ablation_lmbda
    root = Path(args.out)
    jobs = [(root / name, config.TrainConfig.for_profile("cpu", lmbda=lmbda, **over)) for name, (_, over) in TRIALS.items()]
    sweeps.train_many([(d, c) for d, c in jobs if run_folder.run_status(d) != "done"], workers=args.workers)
    rows = []
    for (run_dir, cfg), (name, (what, _)) in zip(jobs, TRIALS.items()):
        final = run_folder.read_final(run_dir)
        val = final["val"]
        rows.append({"setting": name, "what": what, "N": cfg.model.N, "M": cfg.model.M, "lr": cfg.lr, "steps": cfg.steps,
                     "crop": cfg.crop, "batch": cfg.batch, "minutes": round(final["elapsed_s"] / 60, 1),
                     "threads": run_folder.read_run_config(run_dir).threads,
                     "val_bpp": val["bpp"], "val_psnr": val["psnr"], "val_rd_loss": lmbda * val["bpp"] + val["mse"],
                     "events": final["events"]})
    table = pd.DataFrame(rows)
    # eligible: no guard event (a run that needed a rollback is not a setting to rely on for 16 runs)
    # and no more pixels per step than 8 crops of 128² (the study's time budget); best objective wins
    table["pixels_per_step"] = table.batch * table.crop**2
    eligible = table[(table.events == 0) & (table.pixels_per_step <= 8 * 128**2)]
    table["chosen"] = table.index == eligible.val_rd_loss.idxmin()
    files.atomic_to_csv(table, files.RESULTS_DIR / "cpu_tuning.csv")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
