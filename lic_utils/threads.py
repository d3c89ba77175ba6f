"""Torch's CPU thread count, set for a block and restored after it.

A sum split over t threads is added in another order than over one, so a float result can change in
its last bits with the thread count (LPIPS 0.36008924 on one thread against 0.36008918 on two, on an
AVX-512 Xeon). Code whose numbers are compared or cached across processes runs its float work under
one fixed count, whatever the caller's setting.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

# Every metric is computed on this many threads: the evaluation's pool workers run on one (two
# processes with two threads each on the 2 cores slow each other badly), so the serial path does too.
MEASURE_THREADS = 1


@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch CPU threads, then restore the caller's count."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
