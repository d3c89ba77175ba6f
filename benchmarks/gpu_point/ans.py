"""Device-only stand-in for compressai.ans: training builds coders but never entropy-codes."""


class _NoCoder:
    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        raise RuntimeError("compressai.ans shim: no entropy coder on the device (training only)")


BufferedRansEncoder = RansEncoder = RansDecoder = _NoCoder
