"""The lent GPU machine trains with a Python port of CompressAI's table builder (no cp312 wheel there):
it must give the C++ extension's tables exactly (benchmarks/gpu_point/_CXX.py)."""
import importlib.util
from pathlib import Path

import numpy as np

from compressai._CXX import pmf_to_quantized_cdf

PORT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_point" / "_CXX.py"


def _port():
    spec = importlib.util.spec_from_file_location("gpu_point_cxx", PORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_python_table_builder_matches_compressai():
    port = _port()
    rng = np.random.default_rng(0)
    for _ in range(300):  # peaked, flat and sparse densities, with zero-probability symbols to steal for
        n = int(rng.integers(2, 300))
        p = rng.random(n) ** rng.uniform(1, 30)
        p[rng.random(n) < 0.3] = 0
        p[0] += 1e-9
        pmf = (p / p.sum()).astype(np.float32).tolist()
        for precision in (16, 12):
            assert list(port.pmf_to_quantized_cdf(pmf, precision)) == list(pmf_to_quantized_cdf(pmf, precision))
