"""Every shipped model's files decoded on "another machine" (not a test; tests/test_portable.py is
the small version that CI runs).

    .venv/bin/python benchmarks/cross_machine.py [--images 24] [--out results/cross_machine.csv]

Two child processes play two machines (lic_utils.portability: oneDNN's SSE4.1 kernels and ATen's
scalar ones on one thread, against this CPU's own kernels on two threads). Each compresses the Kodak
images with every model of zoo/, then each decodes both machines' files; one row per file says
whether the two decoders got the same latents, how far apart their pixels are, and, for the
hyperprior, whether they would have decoded the same latents with h_s in float (format 1). About 25 min
for the 25 shipped models on 2 cores; the files stay in --work, and a rerun redoes no finished step.
"""
import argparse
import time

from lic_utils import portability, zoo
from lic_utils.files import atomic_to_csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--work", default="runs/cross_machine", help="folder for the files (resumable)")
    p.add_argument("--out", default="results/cross_machine.csv")
    args = p.parse_args()
    t0 = time.perf_counter()
    df = portability.cross_decode({card["name"]: args.images for card in zoo.cards()}, args.work)
    atomic_to_csv(df, args.out)
    print(f"{len(df)} files ({df['model'].nunique()} models × {df['image'].nunique()} images × 2 machines) "
          f"in {(time.perf_counter() - t0) / 60:.1f} min")
    print(f"latents the same on both machines: {int(df['latents_same'].sum())} of {len(df)}")
    print(f"pixels: at most {df['max_pixel_diff'].max()} level(s) apart, on at most "
          f"{df['pixels_differing_pct'].max():.4f} % of an image's pixels (mean {df['pixels_differing_pct'].mean():.4f} %)")
    derived = df[df["float_latents_same"].notna()] if "float_latents_same" in df else df.iloc[:0]
    if len(derived):
        moved = derived[~derived["float_latents_same"].astype(bool)]
        print(f"with their networks in float (format 1), the two machines would have decoded other latents "
              f"from {len(moved)} of the {len(derived)} files whose tables are derived "
              f"({moved.groupby('model').size().to_dict()})")


if __name__ == "__main__":
    main()
