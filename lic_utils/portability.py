"""Two machines on one: .lic files encoded and decoded in child processes that run other CPU kernels
and thread counts, and what their decoders agree on.

"other" runs oneDNN's SSE4.1 kernels and ATen's scalar ones on one thread
(ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default), "here" this CPU's own kernels on two
threads: their float sums differ in the last bits, as two machines' do. Each compresses the Kodak
images with the given models (zoo models or checkpoints), then each decodes both machines' files.
One row per (model, image, encoding machine): whether both decoders got the same latents (bit for bit), how far apart their
8-bit pixels are (the synthesis transform runs in float), and, for models that derive their tables,
whether both would decode the same latents with those networks in float, as format 1 did (the
control: `float_latents_same`).
Used by tests/test_portable.py (a few images) and benchmarks/cross_machine.py (the whole zoo).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MACHINES = {"other": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
            "here": {"OMP_NUM_THREADS": "2"}}


def cross_decode(models: dict[str, int], work: str | os.PathLike) -> pd.DataFrame:
    """Encode `models` ({zoo model name or checkpoint path: number of Kodak images}) on both
    machines, decode every file on both, and compare (the rows above). `work` keeps the files;
    finished steps are not redone."""
    work = Path(work)
    spec = json.dumps({_label(ref): [str(ref), n] for ref, n in models.items()})
    for step in ("encode", "decode"):
        for machine, env in MACHINES.items():
            target = work / machine if step == "encode" else work / f"decoded-{machine}.npz"
            if target.exists():
                continue
            run = subprocess.run([sys.executable, "-m", "lic_utils.portability", step, str(work), str(target), spec],
                                 env={**os.environ, **env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
                                 text=True)
            if run.returncode:
                raise RuntimeError(f"{step} on machine {machine!r} failed:\n{run.stderr[-3000:]}")
    return _compare(*(dict(np.load(work / f"decoded-{m}.npz")) for m in MACHINES))


def _label(ref) -> str:
    """A model's name in file names and rows: a zoo name, or a checkpoint's run folder (or stem)."""
    p = Path(ref)
    if p.suffix != ".pt":
        return str(ref)
    return p.parent.name if p.name == "checkpoint.pt" else p.stem


def _load(ref: str):
    from lic_utils import models, zoo

    if ref.endswith(".pt"):
        return models.load_checkpoint(ref)
    return zoo.load(zoo.choose(model=ref))  # the card of that name (one-line error if none)


def _encode(out: Path, spec: dict) -> None:
    from lic_utils import bitstream, data, evaluate

    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for label, (ref, n_images) in spec.items():
        model = _load(ref)
        for image, img in evaluate.kodak_images(n_images):
            (partial / f"{label}--{image}.lic").write_bytes(bitstream.encode_image(model, data.to_tensor(img)))
    partial.rename(out)


def _decode(root: Path, out: Path, spec: dict) -> None:
    from lic_utils import bitstream, data

    arrays, loaded = {}, {}
    for path in sorted(root.glob("*/*.lic")):
        name = path.name.split("--")[0]
        if name not in loaded:
            loaded = {name: _load(spec[name][0])}  # sorted by model: one loaded at a time
        model, blob = loaded[name], path.read_bytes()
        lic = bitstream.parse(blob)
        shape, key = bitstream.check_model(lic, model), f"{path.parent.name}/{path.stem}"
        arrays[key + ":latents"] = _digest(model.decode_latents(list(lic.strings), shape, lic.check))
        arrays[key + ":pixels"] = data.to_uint8(bitstream.decode_image(model, blob))
        if model.prior.derives_tables:  # the control: decoded as format 1 did, in float
            floats = model.decode_latents(list(lic.strings), shape, None, exact=False)
            arrays[key + ":float_latents"] = _digest(floats)
    np.savez(out.with_suffix(".partial.npz"), **arrays)
    out.with_suffix(".partial.npz").rename(out)


def _digest(latents: dict) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(b"".join(t.numpy().tobytes() for _, t in sorted(latents.items()))).digest(),
                         dtype=np.uint8)


def _compare(a: dict, b: dict) -> pd.DataFrame:
    rows = []
    for key in sorted(k.removesuffix(":latents") for k in a if k.endswith(":latents")):
        machine, stem = key.split("/")
        model, image = stem.split("--")
        diff = np.abs(a[key + ":pixels"].astype(int) - b[key + ":pixels"].astype(int))
        row = {"model": model, "image": image, "encoded_on": machine,
               "latents_same": a[key + ":latents"].tobytes() == b[key + ":latents"].tobytes(),
               "max_pixel_diff": int(diff.max()), "pixels_differing_pct": 100 * float((diff > 0).mean())}
        if key + ":float_latents" in a:
            row["float_latents_same"] = a[key + ":float_latents"].tobytes() == b[key + ":float_latents"].tobytes()
        rows.append(row)
    return pd.DataFrame(rows)


if __name__ == "__main__":  # a child: python -m lic_utils.portability encode|decode WORK TARGET SPEC
    import torch

    step, work, target, spec_ = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _encode(target, spec_) if step == "encode" else _decode(work, target, spec_)
