"""The gpu profile's codec trained on a lent GPU, measured here on Kodak → results/gpu_point.csv.

    .venv/bin/python benchmarks/gpu_point/evaluate_point.py DEVICE_OUT_DIR [--runs runs/gpu-point]

`device_train.sh` (run on the lent machine with the `device` tool, see its header) trains the gpu
profile's architecture (N=128, M=192, 256² crops, batch 16) at two λ for the steps that fit in a few
minutes, and sends back weights-only files (`gpu_<λ>.pt`: config + state_dict) and the run folders'
logs (`logs.tgz`). The lent machine has no CompressAI wheel for its Python, so it trains with a
Python port of CompressAI's table builder (`_CXX.py`, identical output) and without an entropy coder
(`ans.py`); this script rebuilds the coder tables with the real extension, writes ordinary run folders
(config.json, log.csv, final.json, checkpoint.pt) and measures each model like every other in the
study: real .lic files on all 24 Kodak images, WebP, AVIF and JPEG set per image to the same bytes.
One row per λ: steps, GPU minutes, bpp, PSNR, MS-SSIM, LPIPS and the codecs' numbers at those bytes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lic_utils import evaluate, files, models, run_folder  # noqa: E402

CODECS = ["webp", "avif", "jpeg"]


def rebuild_run(weights: Path, logs: Path, run_dir: Path) -> Path:
    """A run folder for the device's weights: its logs, and a checkpoint with real coder tables."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "log.csv", "final.json"):
        shutil.copy(logs / name, run_dir / name)
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    model = models.build_model(blob["config"])  # the model config, as checkpoints hold it
    model.load_state_dict(blob["state_dict"])
    model.update(force=True)  # the real CompressAI extension, not the device's port
    models.save_checkpoint(run_dir / "checkpoint.pt", model.eval())
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("device_out", type=Path, help="the folder the device tool returned")
    ap.add_argument("--runs", type=Path, default=files.RUNS_DIR / "gpu-point")
    ap.add_argument("--results", type=Path, default=files.RESULTS_DIR)
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = evaluate.kodak_images()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.device_out / "logs.tgz") as tar:
            tar.extractall(tmp, filter="data")
        for weights in sorted(args.device_out.glob("gpu_*.pt")):
            tag = weights.stem.removeprefix("gpu_")
            run = rebuild_run(weights, Path(tmp) / f"gpu_{tag}", args.runs / tag)
            final = run_folder.read_final(run)
            summary = evaluate.kodak_summary(run, images, args.runs, CODECS)
            cfg = final["config"]
            rows.append({"lmbda": cfg["loss"]["lmbda"], "steps": final["steps"], "N": cfg["model"]["N"],
                         "M": cfg["model"]["M"], "crop": cfg["crop"], "batch": cfg["batch"], "lr": cfg["lr"],
                         "gpu_minutes": round(final["elapsed_s"] / 60, 2), "events": final["events"],
                         "fingerprint": summary.pop("fingerprint"), **summary})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows).sort_values("bpp")
    files.atomic_to_csv(table, args.results / "gpu_point.csv")
    print(f"wrote {args.results / 'gpu_point.csv'}")


if __name__ == "__main__":
    main()
