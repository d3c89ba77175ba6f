"""What the exact coding tables cost: bytes and decode time of the shipped hyperprior models with
the tables derived by the exact twin of h_s (format 2) against float h_s (format 1), on Kodak (not a
test). Both formats have headers of the same size.

    .venv/bin/python benchmarks/exact_tables.py [--images 24] [--repeats 3] [--out results/exact_tables.csv]

One thread, on a quiet machine: both decodes of an image are timed in turn, best of `repeats`, so
their ratio is fair. One row per (model, image): the file bytes both ways, the share of y's symbols
whose table differs, and the decode times.
"""
import argparse
import time

import pandas as pd
import torch

from lic_utils import bitstream, data, evaluate, zoo
from lic_utils.exact import float_arithmetic
from lic_utils.files import atomic_to_csv


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="results/exact_tables.csv")
    args = p.parse_args()
    torch.set_num_threads(1)
    images = evaluate.kodak_images(args.images)
    rows = []
    for card in [c for c in zoo.cards() if c["model"]["prior"] == "hyperprior"]:
        model = zoo.load(card)
        for name, img in images:
            x = data.to_tensor(img)
            coded = {exact: model.compress(x, exact=exact) for exact in (True, False)}
            header = bitstream.header_size(2)
            with torch.inference_mode():
                z = model.decode_latents(coded[True]["strings"], coded[True]["shape"])["z"]
                tables = {}
                for exact in (True, False):
                    with float_arithmetic(model, not exact):
                        tables[exact] = model.prior.table_indexes(model.prior.scales(z))
                differ = (tables[True] != tables[False]).float().mean()
            dec = {exact: (lambda c=coded[exact], e=exact: model.decompress(c["strings"], c["shape"], x.shape[-2:],
                                                                           c["check"] if e else None, e))
                   for exact in (True, False)}
            assert torch.equal(dec[True](), dec[False]())  # y̌ is the same integers whichever tables code it
            times = {exact: best_ms(dec[exact], args.repeats) for exact in (False, True)}
            rows.append({"model": card["name"], "image": name,
                         "bytes_exact": header + sum(map(len, coded[True]["strings"])) + 4,
                         "bytes_float": header + sum(map(len, coded[False]["strings"])) + 4,
                         "tables_differing_pct": 100 * float(differ),
                         "decode_ms_exact": times[True], "decode_ms_float": times[False]})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    atomic_to_csv(df, args.out)
    for model, g in df.groupby("model"):
        extra = 100 * (g["bytes_exact"].sum() / g["bytes_float"].sum() - 1)
        delta = g["bytes_exact"] - g["bytes_float"]
        print(f"{model}: {len(g)} images, {g['bytes_float'].sum()} → {g['bytes_exact'].sum()} bytes with the "
              f"exact tables ({extra:+.4f} %; per file {delta.min():+d} to {delta.max():+d} bytes); "
              f"tables differ on {g['tables_differing_pct'].mean():.3f} % of y's symbols; "
              f"decode {g['decode_ms_float'].median():.1f} → {g['decode_ms_exact'].median():.1f} ms (median, one thread)")


if __name__ == "__main__":
    main()
