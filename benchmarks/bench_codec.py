"""Encode/decode speed of the learned codec on Kodak, for one or more architectures (not a test).

    .venv/bin/python benchmarks/bench_codec.py                       # untrained default codec, 24 images
    .venv/bin/python benchmarks/bench_codec.py --sizes 64x96 48x96   # compare widths
    .venv/bin/python benchmarks/bench_codec.py --checkpoint runs/…/checkpoint.pt
    .venv/bin/python benchmarks/bench_codec.py --prior all --sizes 48x96 --threads 1   # every entropy model, side by side

An untrained model is as fast as a trained one except for the entropy coder, whose tables are
wider before training (it is a few ms either way); `python -m lic_utils bench` is the same for one
checkpoint. The study's target is encode + decode ≤ 150 ms per Kodak image on 2 CPU cores.
"""
import argparse
import json
import statistics

import torch

from lic_utils import bitstream, data, models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--prior", nargs="*", default=["factorized"], choices=[*models.PRIORS, "all"],
                   help="entropy models of the untrained codecs (all: every registered one)")
    p.add_argument("--sizes", nargs="*", default=["64x96"], help="NxM pairs for untrained models")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    images = [(path.stem, data.to_tensor(data.load_rgb(path))[0]) for path in data.kodak_paths()[: args.images]]
    if args.checkpoint:
        candidates = [(args.checkpoint, models.load_checkpoint(args.checkpoint))]
    else:
        candidates = []
        for prior in models.PRIORS if "all" in args.prior else args.prior:
            for size in args.sizes:
                n, m = (int(v) for v in size.split("x"))
                model = models.build_model({"prior": prior, "N": n, "M": m})
                model.update(force=True)
                candidates.append((f"{prior} N={n} M={m} (untrained)", model))
    for name, model in candidates:
        rows = bitstream.benchmark(model.eval(), images, repeats=args.repeats)
        enc = [r["encode_ms"] for r in rows]
        dec = [r["decode_ms"] for r in rows]
        total = [e + d for e, d in zip(enc, dec)]
        print(json.dumps({
            "model": name, "threads": args.threads, "images": len(rows),
            "parameters": sum(p.numel() for p in model.parameters()),
            "prior_parameters": sum(p.numel() for p in model.prior.parameters()),
            "encode_ms_median": round(statistics.median(enc), 1), "decode_ms_median": round(statistics.median(dec), 1),
            "total_ms_median": round(statistics.median(total), 1), "total_ms_max": round(max(total), 1),
            "total_cpu_ms_median": round(statistics.median(r["encode_cpu_ms"] + r["decode_cpu_ms"] for r in rows), 1),
            "bpp_mean": round(statistics.mean(r["bpp"] for r in rows), 4),
            "estimated_bpp_mean": round(statistics.mean(r["estimated_bpp"] for r in rows), 4),
            "all_exact": all(r["exact"] for r in rows),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
