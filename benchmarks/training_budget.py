"""The training-budget curve: how much one codec gains from more CPU time → results/training_budget.csv.

    .venv/bin/python benchmarks/training_budget.py [--steps 1000 2000 4000 8000 16000] [--runs DIR]
    .venv/bin/python benchmarks/training_budget.py --steps 16000 --lr 7e-4 --warmup 500   # another recipe

The `cpu` profile's MSE codec at the study's ablation λ, trained for each budget with its own full
schedule (warm-up, cosine decay to the end), one thread per run, runs one after another (a run uses
one core; give the machine nothing else to do for comparable minutes). Each finished run is
compressed to real .lic files on all 24 Kodak images, and WebP and AVIF are set per image to the
same bytes. The table holds one row per budget: steps, training minutes, the learned model's bpp,
PSNR, MS-SSIM, LPIPS, and the two codecs' numbers at its bytes. Runs are ordinary run folders
(finished ones are reused, an interrupted one resumes); evaluations are cached by fingerprint in
learned_kodak.csv / matched_kodak.csv beside the runs. Notebook 04 draws the table.

Printed at the end: the PSNR gap to WebP at equal bytes against log2(steps), fitted on the budgets
from 2,000 steps on (at 1,000 steps the rate has not settled), i.e. dB gained per doubling of
compute, and the budget at which the fit reaches WebP.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import compare, config, evaluate, files, profiles, run_folder, train  # noqa: E402

CODECS = ["webp", "avif"]


def budget_config(steps: int, **recipe) -> config.TrainConfig:
    lmbda = profiles.PROFILES["cpu"].ablation_lmbda
    return config.TrainConfig.for_profile("cpu", lmbda=lmbda, steps=steps, threads=1, progress=False, **recipe)


def measure(run_dir: Path, steps: int, images) -> dict:
    final = run_folder.read_final(run_dir)
    # caches beside the runs: the study's own caches in results/ must hold the study's models alone
    summary = evaluate.kodak_summary(run_dir, images, run_dir.parent, CODECS)
    return {"steps": steps, "minutes": round(final["elapsed_s"] / 60, 2), "threads": 1,
            "fingerprint": summary.pop("fingerprint"), "events": final["events"], **summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 16000])
    ap.add_argument("--runs", default=str(files.RUNS_DIR / "budget"))
    ap.add_argument("--results", default=str(files.RESULTS_DIR))
    ap.add_argument("--lr", type=float, help="another peak learning rate (a recipe to compare)")
    ap.add_argument("--warmup", type=int, help="another warm-up length (a recipe to compare)")
    args = ap.parse_args()
    runs, results = Path(args.runs), Path(args.results)
    recipe = {k: v for k, v in (("lr", args.lr), ("warmup", args.warmup)) if v is not None}
    tag = "".join(f"_{k}{v:g}" for k, v in recipe.items())  # e.g. _lr0.0007_warmup500
    images = evaluate.kodak_images()
    rows = []
    for steps in args.steps:
        run_dir = runs / f"budget_mse_{steps}{tag}"
        train.train(budget_config(steps, **recipe), run_dir)
        rows.append({**measure(run_dir, steps, images), **recipe})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).sort_values("steps")
    files.atomic_to_csv(table, results / f"training_budget{tag}.csv")
    if len(table) < 3:
        print(table.round(4).to_string(index=False))
        return
    gain = compare.budget_gain(table)
    print(table.round(4).to_string(index=False))
    print(f"PSNR gap to WebP at equal bytes: {gain['db_per_doubling']:+.2f} dB per doubling of steps; "
          f"the fit reaches WebP at ≈ {gain['parity_steps']:,.0f} steps")


if __name__ == "__main__":
    main()
