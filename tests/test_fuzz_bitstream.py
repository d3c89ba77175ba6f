"""Fuzzing the .lic decoder: 2,000 random, mutated and crafted files must each decode or raise a LicError.

CompressAI's rANS decoder is C++ that trusts its input, so a bug here would be a segfault or a hang,
not an exception. The loop therefore runs in a child process with a timeout; the test asserts that
the child exited normally and that every case ended in a decoded image or a LicError.

Most mutations must be stopped by the CRCs; the "resealed" ones recompute both CRCs (a crafted file)
so that the bounds checks, and for payload edits the rANS decoder's zero-padded input, are exercised.
"""
import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    r'''
    import json, random, struct, sys, traceback, zlib
    import torch
    torch.set_num_threads(1)
    from lic_utils import bitstream as bs, models
    from lic_utils.errors import LicError

    N_CASES = int(sys.argv[1])
    rng = random.Random(1234)
    torch.manual_seed(0)

    def reseal(blob):
        k = blob[5] if len(blob) > 5 else 1
        h = bs.header_size(k)
        if len(blob) < h + 4:
            return blob
        head = blob[: h - 4]
        return head + struct.pack("<I", zlib.crc32(head)) + blob[h:-4] + struct.pack("<I", zlib.crc32(blob[h:-4]))

    def flip_bits(b, lo=0, hi=None, n=None):
        b = bytearray(b)
        hi = len(b) if hi is None else hi
        for _ in range(n or rng.randint(1, 16)):
            if hi > lo:
                b[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        return bytes(b)

    def set_field(b, fmt, offset, value):
        b = bytearray(b)
        if offset + struct.calcsize(fmt) <= len(b):
            struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    def length_value(old):
        return rng.choice([0, 1, 4, 7, 8, old - 4, old + 4, old - 1, old * 2, old + 4096, 2**31, 2**32 - 1, rng.randrange(2**32)]) % 2**32

    # valid files: every prior, a few sizes
    corpus = []
    for prior in models.PRIORS:
        m = models.build_model({"prior": prior, "N": 8, "M": 12})
        m.update(force=True)
        m.eval()
        for size in [(37, 61), (64, 64), (16, 300)]:
            x = torch.rand(1, 3, *size)
            corpus.append((m, bs.encode_image(m, x), tuple(x.shape)))

    def mutate(kind, blob):
        k = blob[5]
        h = bs.header_size(k)
        if kind == "bit flips":
            return flip_bits(blob)
        if kind == "truncation":
            return blob[: rng.randrange(len(blob))]
        if kind == "extension":
            return blob + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        if kind == "length field":
            i = rng.randrange(k)
            old = struct.unpack_from("<I", blob, 30 + 4 * i)[0]
            return set_field(blob, "<I", 30 + 4 * i, length_value(old))
        if kind == "length field, resealed":
            if k == 2 and rng.random() < 0.6:  # move whole words between y and z: same payload, same CRC
                y, z = struct.unpack_from("<II", blob, 30)
                d = 4 * rng.randint(-(z // 4), y // 4)
                return reseal(set_field(set_field(blob, "<I", 30, y - d), "<I", 34, z + d))
            i = rng.randrange(k)
            old = struct.unpack_from("<I", blob, 30 + 4 * i)[0]
            return reseal(set_field(blob, "<I", 30 + 4 * i, length_value(old)))
        if kind == "header field, resealed":
            fmt, off = rng.choice([("<B", 4), ("<B", 5), ("<H", 22), ("<H", 24), ("<H", 26), ("<H", 28)])
            value = rng.choice([0, 1, 2, 3, 255, 4096, 65535, rng.randrange(256 if fmt == "<B" else 65536)])
            return reseal(set_field(blob, fmt, off, value % (256 if fmt == "<B" else 65536)))
        if kind == "hash field, resealed":
            return reseal(flip_bits(blob, 6, 22, 1))
        if kind == "payload, resealed":  # garbage that passes every check and reaches rANS
            return reseal(flip_bits(blob, h, len(blob) - 4, rng.randint(1, 64)))
        if kind == "payload random, resealed":
            body = bytes(rng.randrange(256) for _ in range(len(blob) - h - 4))
            return reseal(blob[:h] + body + blob[-4:])
        if kind == "payload escape-heavy, resealed":  # runs of 0xFF: every symbol escapes, long bypass chains
            body = bytearray(blob[h:-4])
            for _ in range(rng.randint(1, 8)):
                start = rng.randrange(len(body) + 1)
                body[start : start + rng.randint(4, 4096)] = b"\xff" * len(body[start : start + 4096])
            return reseal(blob[:h] + bytes(body[: len(blob) - h - 4]) + blob[-4:])
        if kind == "payload of 0xFF, lengths grown, resealed":  # all escape, strings up to 64× longer
            lengths = [rng.choice([1, 4, 16, 64]) * struct.unpack_from("<I", blob, 30 + 4 * i)[0] + 4
                       for i in range(k)]
            head = bytearray(blob[: h - 4])
            for i, n in enumerate(lengths):
                struct.pack_into("<I", head, 30 + 4 * i, n)
            return reseal(bytes(head) + bytes(4) + b"\xff" * sum(lengths) + bytes(4))
        if kind == "random bytes":
            return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        if kind == "random after magic":
            return bs.MAGIC + bytes([1]) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        if kind == "splice":
            other = rng.choice(corpus)[1]
            cut = rng.randrange(len(blob))
            return blob[:cut] + other[cut:]
        raise ValueError(kind)

    KINDS = ["bit flips", "truncation", "extension", "length field", "length field, resealed",
             "header field, resealed", "hash field, resealed", "payload, resealed", "payload random, resealed",
             "payload escape-heavy, resealed", "payload of 0xFF, lengths grown, resealed",
             "random bytes", "random after magic", "splice"]
    outcomes, failures = {}, []
    for case in range(N_CASES):
        kind = KINDS[case % len(KINDS)]
        model, blob, shape = rng.choice(corpus)
        bad = mutate(kind, blob)
        while bad == blob:  # a mutation that undid itself (a bit flipped twice, a length set to itself)
            bad = mutate(kind, blob)
        try:
            bs.info(bad)
            x_hat = bs.decode_image(model, bad)
            h, w = bs.parse(bad).height, bs.parse(bad).width
            ok = x_hat.shape == (1, 3, h, w) and bool(torch.isfinite(x_hat).all()) and 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1
            result = "decoded" if ok else "bad output"
            if not ok:
                failures.append({"case": case, "kind": kind, "error": f"bad output {tuple(x_hat.shape)}"})
        except LicError as e:
            result = type(e).__name__
        except Exception as e:
            result = "other exception"
            failures.append({"case": case, "kind": kind, "error": traceback.format_exc(limit=3)})
        outcomes.setdefault(kind, {}).setdefault(result, 0)
        outcomes[kind][result] += 1
    print(json.dumps({"cases": N_CASES, "outcomes": outcomes, "failures": failures[:5], "n_failures": len(failures)}))
    sys.exit(1 if failures else 0)
    '''
)


def test_decoder_survives_2000_malformed_files():
    proc = subprocess.run([sys.executable, "-c", CHILD, "2000"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child exited with {proc.returncode} (negative: killed by a signal)\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cases"] == 2000 and report["n_failures"] == 0
    outcomes = report["outcomes"]
    assert sum(n for by_result in outcomes.values() for n in by_result.values()) == 2000
    # the CRCs stop unsealed edits of the header and the payload
    for kind in ("bit flips", "length field"):
        assert set(outcomes[kind]) <= {"CorruptFile", "TruncatedFile", "NotALicFile", "UnsupportedVersion"}, outcomes[kind]
    # crafted hashes name the wrong model; crafted payloads reach rANS and must come back as images
    assert set(outcomes["hash field, resealed"]) <= {"ModelMismatch", "CorruptFile"}
    assert outcomes["payload, resealed"].get("decoded", 0) > 0
    assert outcomes["payload escape-heavy, resealed"].get("decoded", 0) > 0


CRAFTED = textwrap.dedent(
    r"""
    import sys
    import torch
    torch.set_num_threads(1)
    from lic_utils import bitstream as bs, models
    from lic_utils.errors import LicError

    prior, fill = sys.argv[1], bytes.fromhex(sys.argv[2])
    torch.manual_seed(0)
    m = models.build_model({"prior": prior, "N": 8, "M": 12})
    m.update(force=True)
    h, w = 512, 768
    shape = m.coded_shape(h, w)
    # every payload word set to `fill`: with 0xFF…, each symbol lands in the coder's escape slot and
    # its bypass-length chain runs through the payload (about 15 words read per payload word)
    strings = [fill * n for n in m.symbol_counts(shape)]
    # format 1 (no check value): the decoder runs the rANS coder on every string, z's and y's alike
    blob = bs.pack(m.config.config_hash(), m.fingerprint(), h, w, shape, strings, None)
    try:
        x_hat = bs.decode_image(m, blob)
        print("decoded", tuple(x_hat.shape))
    except LicError as e:
        print("LicError", e)
    """
)


@pytest.mark.parametrize("prior", ["factorized", "factorized-gaussian", "hyperprior"])
@pytest.mark.parametrize("fill", ["ffffffff", "fffffffe", "ff"])
def test_escape_heavy_payloads_of_every_prior_cannot_crash_the_decoder(prior, fill):
    """A file with valid CRCs, the model's hashes and a payload built to escape on every symbol
    (issue: a 147 KB file made the rANS decoder read ≈ 1.7 MB past its buffer: SIGSEGV)."""
    proc = subprocess.run([sys.executable, "-c", CRAFTED, prior, fill], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"decoder crashed (exit {proc.returncode})\n{proc.stderr[-2000:]}"
    assert proc.stdout.startswith(("decoded (1, 3, 512, 768)", "LicError")), proc.stdout
