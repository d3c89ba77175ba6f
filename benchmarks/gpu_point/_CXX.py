"""Device-only stand-in for compressai._CXX (no cp312 wheel): a Python port of pmf_to_quantized_cdf.
The coder tables are rebuilt with the real extension after the weights come back."""
import math


def pmf_to_quantized_cdf(pmf, precision):
    pmf = [float(p) for p in pmf]
    for p in pmf:
        if p < 0 or not math.isfinite(p):
            raise ValueError(f"Invalid `pmf`, non-finite or negative element found: {p}")
    one = 1 << precision
    import numpy as np
    scaled = np.asarray(pmf, dtype=np.float32) * np.float32(one)  # float arithmetic, like C++
    cdf = [0] + [int(math.floor(float(x) + 0.5)) for x in scaled]  # std::round: half away from 0
    total = sum(cdf)
    if total == 0:
        raise ValueError("Invalid `pmf`: at least one element must have a non-zero probability.")
    cdf = [(one * c) // total for c in cdf]
    for i in range(1, len(cdf)):
        cdf[i] += cdf[i - 1]
    cdf[-1] = one
    for i in range(len(cdf) - 1):
        if cdf[i] == cdf[i + 1]:
            best_freq, best_steal = None, -1
            for j in range(len(cdf) - 1):
                f = cdf[j + 1] - cdf[j]
                if f > 1 and (best_freq is None or f < best_freq):
                    best_freq, best_steal = f, j
            if best_steal < i:
                for j in range(best_steal + 1, i + 1):
                    cdf[j] -= 1
            else:
                for j in range(i + 1, best_steal + 1):
                    cdf[j] += 1
    return cdf
