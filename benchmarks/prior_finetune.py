"""The prior ablation under amortised training: fine-tunes of one MSE base → results/prior_finetune.csv.

    .venv/bin/python benchmarks/prior_finetune.py --base runs/budget/budget_mse_16000 [--runs DIR]

The study's prior ablation starts every entropy model from the base's transforms (lic_utils.study).
This measures what that costs the hyperprior, whose h_a and h_s start untrained: the factorized
codec and the hyperprior, each fine-tuned from the base for the same steps at the ablation λ, the
hyperprior with the base's 128² crops and with 256² crops (2 a step, the same pixels: at 128² its
side information z is 2 × 2 per crop). Kodak, all 24 images, real files (cached beside the runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import config, evaluate, files, profiles, train  # noqa: E402

TRIALS = {
    "factorized-c128": dict(prior="factorized"),
    "hyper-c128": dict(prior="hyperprior"),
    "hyper-c256": dict(prior="hyperprior", crop=256, batch=2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a finished run folder of benchmarks/training_budget.py")
    ap.add_argument("--runs", default=str(files.RUNS_DIR / "prior-finetune"))
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    base, runs = Path(args.base), Path(args.runs)
    images = evaluate.kodak_images()
    lmbda = profiles.PROFILES["cpu"].ablation_lmbda
    rows = []
    for name, trial in TRIALS.items():
        cfg = config.TrainConfig.for_profile("cpu", lmbda=lmbda, steps=args.steps, lr=5e-4, warmup=50,
                                             threads=1, progress=False, init_from=str(base / "checkpoint.pt"),
                                             **trial)
        train.train(cfg, runs / name)
        learned = evaluate.evaluate_model(runs / name, images, cache=runs / "learned_kodak.csv", progress=False)
        rows.append({"trial": name, "prior": cfg.model.prior, "crop": cfg.crop, "batch": cfg.batch,
                     "steps": cfg.steps, "fingerprint": learned["fingerprint"].iloc[0],
                     **learned[["bpp", "psnr", "ms_ssim", "lpips"]].mean().to_dict(),
                     "rd_cost": lmbda * learned["bpp"].mean() + (10 ** (-learned["psnr"] / 10)).mean()})
    table = pd.DataFrame(rows)
    files.atomic_to_csv(table, files.RESULTS_DIR / "prior_finetune.csv")
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
