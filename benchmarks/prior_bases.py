"""Each entropy model with transforms trained for it: one base per prior at equal CPU-minutes, the
comparison that decides which prior the shipped models use (→ results/prior_bases.csv).

    .venv/bin/python benchmarks/prior_bases.py --minutes 40 [--priors mean-scale channel-groups …]
                                               [--max-minutes 150] [--runs runs/prior-bases]

1. Probe: each prior's steps per second with the cpu profile's base recipe on this machine (2 threads,
   a quiet machine; 150 steps after 50 of warm-up), every prior before any training, kept in
   results/prior_bases_speed.csv.
2. Train: each base for minutes × 60 × its steps/s steps, so every prior gets the same CPU time and
   the step count is part of its config (a retrain elsewhere gives the same weights). The cpu
   profile's base recipe (λ = 4e-3, lr 7e-4 after a 500-step warm-up, cosine, compiled), with 2 crops
   of 256² a step for priors with side information (the profile's `prior_train`). Runs resume where
   they stopped; --max-minutes stops every piece, so a long comparison spans sessions.
3. Measure: Kodak, 24 images, real files (bpp, PSNR, MS-SSIM, LPIPS, SSIMULACRA2, and the RD cost
   λ·bpp + MSE that training minimised, comparable across priors at their one λ), z's share of the
   bits, parameters, and encode / decode ms per image on one thread.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import bitstream, config, data, evaluate, files, models, profiles, train  # noqa: E402
from lic_utils.run_folder import run_status  # noqa: E402


def base_config(prior: str, steps: int, **overrides) -> config.TrainConfig:
    p = profiles.PROFILES["cpu"]
    side = "z" in models.ENTROPY_MODELS[prior].names
    return config.TrainConfig.for_profile("cpu", prior=prior, lmbda=p.ablation_lmbda,
                                          **{**p.base, **(dict(crop=256, batch=2) if side else {}),
                                             "steps": steps, "threads": 2, **overrides})


SPEEDS = files.RESULTS_DIR / "prior_bases_speed.csv"


def steps_per_second(prior: str, runs: Path, probe: Path = SPEEDS) -> float:
    """Training speed of a prior's base recipe, probed once and committed (results/), so that a base
    resumed or retrained on another machine keeps the step count of the comparison it belongs to."""
    table = pd.read_csv(probe) if probe.exists() else pd.DataFrame({"prior": [], "steps_per_s": []})
    if prior in set(table["prior"]):
        return float(table.loc[table["prior"] == prior, "steps_per_s"].iloc[0])
    cfg = base_config(prior, 200, ckpt_every=10_000, val_every=10_000, num_val_crops=0, progress=False)
    timer, run = _Timer(after=50), runs / f"probe-{prior}"
    shutil.rmtree(run, ignore_errors=True)  # a probe always trains: its speed is what it measures
    train.train(cfg, run, callbacks=[timer])
    rate = timer.rate()
    files.atomic_to_csv(pd.concat([table, pd.DataFrame([{"prior": prior, "steps_per_s": rate}])]), probe)
    return rate


class _Timer(train.Callback):
    """Steps per second after the first `after` steps (compilation, warm caches)."""

    def __init__(self, after: int):
        self.after, self.t0, self.n = after, None, 0

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.step == self.after:
            self.t0 = time.perf_counter()
        elif self.t0 is not None:
            self.n += 1

    def rate(self) -> float:
        return self.n / (time.perf_counter() - self.t0)


def measure(run: Path, images) -> dict:
    """Kodak with real files, the bits in z, parameters, and one-thread encode/decode ms."""
    import torch

    learned = evaluate.evaluate_model(run, images, cache=run.parent / "learned_kodak.csv", progress=False)
    model = models.load_checkpoint(run / "checkpoint.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timing = bitstream.benchmark(model, [(n, data.to_tensor(img)[0]) for n, img in images[:6]], repeats=2)
    finally:
        torch.set_num_threads(threads)
    z_share = []
    for name, img in images[:6]:
        lic = bitstream.parse(bitstream.encode_image(model, data.to_tensor(img)))
        if len(lic.strings) == 2:
            z_share.append(len(lic.strings[1]) / sum(map(len, lic.strings)))
    return {"fingerprint": learned["fingerprint"].iloc[0],
            **learned[["bpp", *evaluate.METRICS]].mean().to_dict(),
            "mse": float((10 ** (-learned["psnr"] / 10)).mean()),  # per image, on [0, 1]
            "z_share": statistics.mean(z_share) if z_share else 0.0,
            "parameters": sum(p.numel() for p in model.parameters()),
            "prior_parameters": sum(p.numel() for p in model.prior.parameters()),
            "encode_ms": statistics.median(r["encode_ms"] for r in timing),
            "decode_ms": statistics.median(r["decode_ms"] for r in timing)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", nargs="*", default=list(models.PRIORS), choices=models.PRIORS)
    ap.add_argument("--minutes", type=float, default=40.0, help="CPU time of every base (2 threads)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop every run's piece after this")
    ap.add_argument("--runs", default=str(files.RUNS_DIR / "prior-bases"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--probe-only", action="store_true", help="measure the priors' speeds, train nothing")
    ap.add_argument("--out", default=str(files.RESULTS_DIR / "prior_bases.csv"))
    args = ap.parse_args()
    runs, images = Path(args.runs), evaluate.kodak_images(args.images)
    rates = {prior: steps_per_second(prior, runs) for prior in args.priors}  # all first, on a quiet machine
    if args.probe_only:
        print(pd.read_csv(SPEEDS).round(2).to_string(index=False))
        return
    rows = []
    for prior in args.priors:
        steps = int(args.minutes * 60 * rates[prior])
        run = runs / f"{prior}-{args.minutes:g}min"
        limit = [train.TimeLimit(args.max_minutes)] if args.max_minutes else []
        train.train(base_config(prior, steps, progress=False), run, callbacks=limit)
        if run_status(run) != "done":
            print(f"{run}: stopped before {steps} steps; run the same command again to resume")
            continue
        row = {"prior": prior, "minutes": args.minutes, "steps": steps, **measure(run, images)}
        lmbda = profiles.PROFILES["cpu"].ablation_lmbda  # what training minimised: λ·R + MSE (on [0, 1])
        rows.append({**row, "rd_cost": lmbda * row["bpp"] + row["mse"]})
        print(rows[-1], flush=True)
    if rows:
        out = Path(args.out)
        old = pd.read_csv(out) if out.exists() else pd.DataFrame()
        new = pd.DataFrame(rows)
        keep = old[~old.set_index(["prior", "minutes"]).index.isin(new.set_index(["prior", "minutes"]).index)] \
            if len(old) else old
        files.atomic_to_csv(pd.concat([keep, new], ignore_index=True), out)
        print(pd.concat([keep, new], ignore_index=True).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
