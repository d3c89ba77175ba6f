"""Amortised training measured: short fine-tunes of one long MSE run → results/amortised_training.csv.

    .venv/bin/python benchmarks/amortised_training.py --base runs/budget/budget_mse_16000 [--runs DIR]

The base is a finished run of benchmarks/training_budget.py (the cpu profile's MSE codec at the
ablation λ, trained long). Each recipe below starts from its weights with a fresh, short schedule
(one thread, runs one after another) and is measured on all 24 Kodak images with real files, with
WebP and AVIF set per image to the same bytes. The table adds the base itself and, for comparison,
the study's models trained from scratch (3,500 steps each) when results/learned_kodak.csv holds them.
Minutes are each run's own training time on one thread; a fine-tune also owes its share of the base.
Notebook 04 shows the table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import config, evaluate, files, run_folder, train  # noqa: E402

CODECS = ["webp", "avif"]
# name → the fine-tune's loss and length (lr 5e-4 after a 50-step warm-up, cosine decay)
RECIPES = {
    "mse-l0.012": dict(lmbda=1.2e-2, steps=1000),
    "mse-l0.006": dict(lmbda=6e-3, steps=1000),
    "mse-l0.0015": dict(lmbda=1.5e-3, steps=1000),
    "msssim-l0.004": dict(lmbda=4e-3, beta=0.025, steps=1000),
    "lpips-g0.002-l0.004": dict(lmbda=4e-3, gamma=0.002, steps=1000),
    "lpips-g0.01-l0.006": dict(lmbda=6e-3, gamma=0.01, steps=2000),
}
FINETUNE = dict(lr=5e-4, warmup=50, threads=1, progress=False)


def finetune_config(base: Path, recipe: dict) -> config.TrainConfig:
    return config.TrainConfig.for_profile("cpu", **FINETUNE, **recipe, init_from=str(base / "checkpoint.pt"))


def measure(run_dir: Path, recipe: str, images, base_minutes: float) -> dict:
    final, cfg = run_folder.read_final(run_dir), run_folder.read_run_config(run_dir)
    return {"recipe": recipe, "lmbda": cfg.loss.lmbda, "beta": cfg.loss.beta, "gamma": cfg.loss.gamma,
            "steps": cfg.steps, "minutes": round(final["elapsed_s"] / 60, 2), "base_minutes": base_minutes,
            # caches beside the runs: the study's caches in results/ must hold its models alone
            **evaluate.kodak_summary(run_dir, images, run_dir.parent, CODECS)}


def scratch_rows(results: Path) -> list[dict]:
    """The study's cpu models trained from scratch (factorized, with channel steps, 3,500 steps)."""
    path = results / "learned_kodak.csv"
    if not path.exists():
        return []
    points = evaluate.learned_points(evaluate.read_rows(path))
    points = evaluate.select(points, prior="factorized", steps=3500)
    points = points[points["channel_scale"].astype(bool)]
    return [{"recipe": f"scratch {evaluate.variant_label(r.beta, r.gamma)} λ={r.lmbda:g}", "lmbda": r.lmbda,
             "beta": r.beta, "gamma": r.gamma, "steps": 3500, "bpp": r.bpp, "psnr": r.psnr,
             "ms_ssim": r.ms_ssim, "lpips": r.lpips} for r in points.itertuples()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a finished run folder of benchmarks/training_budget.py")
    ap.add_argument("--runs", default=str(files.RUNS_DIR / "amortised"))
    ap.add_argument("--results", default=str(files.RESULTS_DIR))
    args = ap.parse_args()
    base, runs, results = Path(args.base), Path(args.runs), Path(args.results)
    images = evaluate.kodak_images()
    base_minutes = round(run_folder.read_final(base)["elapsed_s"] / 60, 2)
    rows = [measure(base, f"base ({run_folder.read_run_config(base).steps} steps)", images, 0.0)]
    for name, recipe in RECIPES.items():
        train.train(finetune_config(base, recipe), runs / name)
        rows.append(measure(runs / name, name, images, base_minutes))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows + scratch_rows(files.RESULTS_DIR))
    files.atomic_to_csv(table, results / "amortised_training.csv")
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
