"""Retrain finished runs into a scratch folder, on a quiet machine, to time them and check reproducibility.

    .venv/bin/python benchmarks/retime_training.py runs/study-cpu/factorized-mse-l0.004 ... [--workers 2]

Training times recorded while other work shared the cores overstate what a run costs. This script trains
each run again with its own config.json (same seed, same threads), `--workers` at a time as `make study`
does, prints the wall time of the whole batch and each run's time, and compares the new weights with the
original checkpoint's: with one thread per run on the same machine, CPU training is deterministic, so
they should be identical. The scratch runs are deleted afterwards unless --keep.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import files, models, run_folder, sweeps  # noqa: E402


def same_weights(a: Path, b: Path) -> bool:
    """The weights' fingerprint (sha256 over the whole state_dict) is what .lic files are checked against."""
    return models.load_checkpoint(a).fingerprint() == models.load_checkpoint(b).fingerprint()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (with config.json and checkpoint.pt)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=files.RUNS_DIR / "retime")
    ap.add_argument("--keep", action="store_true", help="keep the retrained runs")
    args = ap.parse_args()
    jobs = []
    for run in args.runs:
        if run_folder.run_status(run) != "done":
            sys.exit(f"{run} is not a finished run (train it first)")
        cfg = run_folder.read_run_config(run)
        jobs.append((args.out / f"{run.parent.name}--{run.name}", cfg))
    for run_dir, _ in jobs:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a timing must start from scratch
    start = time.perf_counter()
    sweeps.train_many(jobs, workers=args.workers)
    wall = time.perf_counter() - start
    print(f"\n{len(jobs)} runs, {args.workers} at a time: {wall / 60:.1f} min wall")
    print(f"{'run':45s} {'minutes':>8s} {'original':>9s}  identical weights")
    for run, (run_dir, _) in zip(args.runs, jobs):
        new, old = run_folder.read_final(run_dir), run_folder.read_final(run)
        print(f"{run.parent.name + '/' + run.name:45s} {new['elapsed_s'] / 60:8.1f} {old['elapsed_s'] / 60:9.1f}  "
              f"{same_weights(run_dir / 'checkpoint.pt', run / 'checkpoint.pt')}")
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
