"""Two training recipes of issue 13 measured on this machine → results/recipes_speed.csv, results/recipes_ema.csv.

    .venv/bin/python benchmarks/recipes.py speed [--steps 300]
    .venv/bin/python benchmarks/recipes.py ema --base runs/study-cpu-base/base [--runs DIR]

`speed`: the cpu profile's training step (N=48, 8 × 128² crops, one thread) in eager mode, with
`torch.compile` of the codec's forward pass, and with channels-last tensors: milliseconds per step
over the steps after the first `warm` ones (compilation excluded), and the seconds the first steps
took (compilation included). A recipe pays when its saving over a run's steps exceeds its start-up.

`ema`: an exponential moving average of the weights, kept beside the trained weights during the
study's fine-tune (the cpu profile's `finetune` settings, from the study's base) at the λ of the
smallest files, and both weight sets measured on all 24 Kodak images with real files, WebP set per
image to the same bytes. The average costs one in-place update per step (no extra training), so it
is judged at equal CPU time: gap to WebP with and without it.

Both run one thread per process; give the machine nothing else to do while `speed` runs.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import config, evaluate, files, models, profiles, train  # noqa: E402


class StepTimer(train.Callback):
    """Wall-clock time of every step."""

    def __init__(self):
        self.times = []

    def on_step_begin(self, trainer):
        self.t = time.perf_counter()

    def on_step_end(self, trainer, metrics):
        self.times.append(time.perf_counter() - self.t)


class Compiled(train.Callback):
    """The codec's forward pass through torch.compile, as TrainConfig.compile does it."""

    def on_train_begin(self, trainer):
        trainer.stepper = train._compiled(trainer.stepper)


class ChannelsLast(train.Callback):
    """Weights and every batch in channels-last memory format."""

    def on_train_begin(self, trainer):
        trainer.model.to(memory_format=torch.channels_last)
        forward = trainer.stepper
        trainer.stepper = lambda x: forward(x.contiguous(memory_format=torch.channels_last))


class EMA(train.Callback):
    """An exponential moving average of the codec's floating-point state, updated after every step
    that the guard let through; `model()` returns a copy of the codec holding it."""

    def __init__(self, decay: float = 0.995):
        self.decay = decay

    def on_train_begin(self, trainer):
        self.avg = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()
                    if v.is_floating_point()}

    def on_step_end(self, trainer, metrics):
        if metrics is None:
            return
        state = trainer.model.state_dict()
        with torch.no_grad():
            for k, v in self.avg.items():
                v.lerp_(state[k], 1 - self.decay)

    def on_train_end(self, trainer):
        self.final = copy.deepcopy(trainer.model).cpu()
        self.final.load_state_dict({**self.final.state_dict(), **{k: v.cpu() for k, v in self.avg.items()}})


def speed(args) -> None:
    rows = []
    for name, extra in (("eager", []), ("torch.compile", [Compiled()]), ("channels_last", [ChannelsLast()])):
        timer = StepTimer()
        cfg = config.TrainConfig.for_profile("cpu", steps=args.steps, threads=1, progress=False,
                                             num_val_crops=0, ckpt_every=10 ** 6)
        run = Path(args.runs) / f"speed-{name}"
        if run.exists():
            shutil.rmtree(run)
        train.train(cfg, run, callbacks=[timer, *extra])
        t = timer.times
        rows.append({"recipe": name, "steps": args.steps, "ms_per_step": 1000 * sum(t[args.warm:]) / len(t[args.warm:]),
                     "first_steps_s": sum(t[:args.warm]), "warm": args.warm})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["speedup"] = table["ms_per_step"].iloc[0] / table["ms_per_step"]
    files.atomic_to_csv(table.round(4), Path(args.results) / "recipes_speed.csv")
    print(table.to_string(index=False))


def ema(args) -> None:
    p = profiles.get_profile("cpu")
    lmbda = max(p.lmbdas)
    cfg = config.TrainConfig.for_profile("cpu", lmbda=lmbda, **{**p.finetune, "threads": 1, "progress": False},
                                         init_from=str(Path(args.base) / "checkpoint.pt"))
    run = Path(args.runs) / f"ema-l{lmbda:g}"
    avg = EMA(args.decay)
    train.train(cfg, run, callbacks=[avg])
    if not hasattr(avg, "final"):
        raise SystemExit(f"{run} was already trained without the average; delete it and rerun")
    avg.final.update(force=True)
    ema_ckpt = models.save_checkpoint(run / "ema.pt", avg.final.eval())
    images = evaluate.kodak_images()
    rows = []
    for name, ckpt in (("final weights", run / "checkpoint.pt"), (f"EMA {args.decay:g}", ema_ckpt)):
        summary = evaluate.kodak_summary(ckpt, images, run.parent, ["webp"])
        rows.append({"recipe": name, "lmbda": lmbda, "steps": cfg.steps, **summary,
                     "gap_to_webp_db": summary["psnr"] - summary["webp_psnr"]})
        print(rows[-1], flush=True)
    files.atomic_to_csv(pd.DataFrame(rows).round(5), Path(args.results) / "recipes_ema.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--steps", type=int, default=300)
    s.add_argument("--warm", type=int, default=50, help="first steps left out of the per-step time")
    e = sub.add_parser("ema")
    e.add_argument("--base", required=True, help="the study's base run folder")
    e.add_argument("--decay", type=float, default=0.995)
    for q in (s, e):
        q.add_argument("--runs", default=str(files.RUNS_DIR / "recipes"))
        q.add_argument("--results", default=str(files.RESULTS_DIR))
    args = ap.parse_args()
    speed(args) if args.what == "speed" else ema(args)


if __name__ == "__main__":
    main()
