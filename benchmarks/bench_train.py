"""Training throughput: the study's trainer (cpu profile) next to a bare CompressAI training step.

    .venv/bin/python benchmarks/bench_train.py [--profile cpu] [--steps 40] [--repeats 2]

Both use the same N, M, crop and batch and the same BSDS500 crops (lic_utils.data.CropDataset, read
in the main process). The bare step is the CompressAI example's loop: FactorizedPrior, Adam on the
main parameters, Adam on the quantiles, `bpp + λ·255²·MSE`, clip_grad_norm. The trainer step is
`lic_utils.train.train` on a fresh run folder (its model from lic_utils.models, loss terms, guard,
logging, progress bar off), timed by a callback at the end of every step. The two are measured in alternating
blocks and compared on the median seconds per step, which is robust to other load on the machine.
Goal: trainer ≥ 1.0× the bare step's images/s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lic_utils import config, data, profiles, train  # noqa: E402


def bare_compressai(cfg: config.TrainConfig, steps: int, warmup: int = 5) -> list[float]:
    """Seconds per step of the plain CompressAI loop (after `warmup` untimed steps)."""
    from compressai.models import FactorizedPrior

    torch.manual_seed(cfg.seed)
    model = FactorizedPrior(cfg.model.N, cfg.model.M).train()
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt, aux_opt = torch.optim.Adam(main, lr=cfg.lr), torch.optim.Adam(aux, lr=cfg.aux_lr)
    ds = data.CropDataset(data.bsds500_paths(), crop=cfg.crop)
    lmbda_255 = 1.0 / (255**2 * cfg.loss.lmbda)  # the same objective in CompressAI's convention
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(ds.paths), (cfg.batch,)).tolist()
        x = torch.stack([ds[j] for j in idx])
        opt.zero_grad()
        aux_opt.zero_grad()
        out = model(x)
        n, _, h, w = x.shape
        bpp = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / (-torch.log(torch.tensor(2.0)) * n * h * w)
        loss = bpp + lmbda_255 * 255**2 * torch.mean((out["x_hat"] - x) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main, cfg.clip_grad)
        opt.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def trainer(cfg: config.TrainConfig, steps: int, warmup: int = 5) -> list[float]:
    """Seconds per step of lic_utils.train (between the ends of consecutive steps, after `warmup`)."""

    class Stamps(train.Callback):
        def on_step_end(self, trainer, metrics):
            stamps.append(time.perf_counter())

    stamps = []
    cfg = cfg.replace(steps=warmup + steps, progress=False, num_val_crops=0, ckpt_every=10**9, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        stamps.append(time.perf_counter())
        train.train(cfg, Path(tmp) / "bench", callbacks=[Stamps()])
    return [b - a for a, b in zip(stamps[1 + warmup : -1], stamps[2 + warmup :])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", choices=list(profiles.PROFILES))
    ap.add_argument("--steps", type=int, default=40, help="timed steps per block")
    ap.add_argument("--repeats", type=int, default=2, help="alternating blocks of each")
    args = ap.parse_args()
    cfg = config.TrainConfig.for_profile(args.profile)
    m = cfg.model
    print(f"profile {args.profile}: N={m.N} M={m.M} crop={cfg.crop} batch={cfg.batch} prior={m.prior} "
          f"quantizer={m.quantizer} channel_scale={m.channel_scale}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    data.bsds500_paths()  # verify the checksums once, outside the timings
    res = {"bare CompressAI step": [], "lic_utils trainer step": []}
    for r in range(args.repeats):
        res["bare CompressAI step"] += bare_compressai(cfg, args.steps)
        res["lic_utils trainer step"] += trainer(cfg, args.steps)
    med = {}
    for name, t in res.items():
        med[name] = statistics.median(t)
        print(f"{name:24s} median {med[name] * 1e3:7.1f} ms/step  {cfg.batch / med[name]:6.1f} images/s "
              f"(mean {cfg.batch * len(t) / sum(t):6.1f} images/s over {len(t)} steps)")
    ratio = med["bare CompressAI step"] / med["lic_utils trainer step"]
    print(f"trainer / bare throughput: {ratio:.2f}× (goal ≥ 1.0×; ±5 % is noise on a shared machine)")


if __name__ == "__main__":
    main()
