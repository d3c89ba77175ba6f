"""The model zoo: trained codecs shipped in the repository's `zoo/` folder, weights only.

Each model is two files:
- `NAME.pt`, a weights-only checkpoint (models.save_checkpoint with no training state): config,
  architecture hash, fingerprint, weights and the entropy coder's tables. It is read with
  torch.load(weights_only=True), so loading a model never runs code from a file.
- `NAME.json`, its card: where it came from (profile, the run's training config, a summary of its
  log and of the base run it was fine-tuned from, checksums of the training data) and what it does
  on Kodak with real files (bpp, PSNR, MS-SSIM, LPIPS, SSIMULACRA2).

`python -m lic_utils models` lists the cards. One card is the `default` (`compress` with no flags);
the cards of its family (loss variant and prior) form the quality ladder, 1 = fewest bits
(`compress --quality K`). `decompress` finds a file's model by the weights fingerprint in its header.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from lic_utils.errors import LicError
from lic_utils.files import REPO

ZOO_DIR = REPO / "zoo"
CARD_VERSION = 1
KODAK_MEASURES = ("bpp", "psnr", "ms_ssim", "lpips", "ssimulacra2", "encode_ms", "decode_ms")


def zoo_dir(folder=None) -> Path:
    """The zoo folder: `folder`, else the repository's zoo/ (looked up when called, so tests can
    point ZOO_DIR elsewhere)."""
    return Path(folder) if folder is not None else ZOO_DIR


# --- reading ---------------------------------------------------------------------------------------
def cards(folder=None) -> list[dict]:
    """Every model's card, default family first, then by family and Kodak bpp; [] when the zoo is empty."""
    out = []
    for path in sorted(zoo_dir(folder).glob("*.json")):
        try:
            card = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LicError(f"zoo card {path} is unreadable ({e}); restore it with git checkout -- {path}") from None
        if not isinstance(card, dict) or card.get("card_version") != CARD_VERSION or "fingerprint" not in card:
            raise LicError(f"{path} is not a zoo card of version {CARD_VERSION}; restore it with git checkout")
        card["path"] = str(path.with_suffix(".pt"))
        out.append(card)
    default = next((c["family"] for c in out if c.get("default")), None)
    return sorted(out, key=lambda c: (c["family"] != default, c["family"], c["kodak"]["bpp"]))


def table(folder=None):
    """The zoo as a DataFrame: one row per model, its quality rank and Kodak numbers."""
    import pandas as pd

    all_ = cards(folder)
    rungs = {c["name"]: k for k, c in enumerate(_ladder(all_, folder), 1)} if all_ else {}
    rows = []
    for c in all_:
        rows.append({"model": c["name"], "quality": rungs.get(c["name"]), "default": bool(c.get("default")),
                     "family": c["family"], "lmbda": c["lmbda"],
                     **{k: c["kodak"].get(k) for k in ("bpp", "psnr", "ms_ssim", "lpips", "ssimulacra2")},
                     "MB": c["file"]["bytes"] / 1e6, "fingerprint": c["fingerprint"]})
    return pd.DataFrame(rows)


def no_models_error(folder=None) -> LicError:
    """The one-line error of an empty zoo, with the two ways out."""
    return LicError(f"no trained model in {zoo_dir(folder)}: pass --checkpoint with a model you trained "
                    "(python -m lic_utils train …), or restore the shipped ones (git checkout -- zoo/)")


def ladder(folder=None) -> list[dict]:
    """The default model's family, fewest bits first: `--quality K` is the K-th (1-based)."""
    return _ladder(cards(folder), folder)


def _ladder(all_: list[dict], folder) -> list[dict]:
    default = next((c for c in all_ if c.get("default")), None)
    if default is None:
        raise no_models_error(folder) if not all_ else LicError(f"no card in {zoo_dir(folder)} is marked default")
    return [c for c in all_ if c["family"] == default["family"]]


def choose(model: str | None = None, quality: int | None = None, folder=None) -> dict:
    """The card `compress` uses: the model called `model`, else rung `quality` of the ladder, else the default."""
    all_ = cards(folder)
    if not all_:
        raise no_models_error(folder)
    if model is not None:
        for c in all_:
            if c["name"] == model:
                return c
        raise LicError(f"no model {model!r} in the zoo; choose from {', '.join(c['name'] for c in all_)} "
                       "(python -m lic_utils models lists them)")
    rungs = _ladder(all_, folder)
    if quality is not None:
        if not 1 <= quality <= len(rungs):
            raise LicError(f"--quality must be 1 … {len(rungs)} (1: fewest bits), got {quality}")
        return rungs[quality - 1]
    return next(c for c in rungs if c.get("default"))


def find(fingerprint: str, folder=None) -> dict | None:
    """The card of the model whose weights have this fingerprint, or None."""
    return next((c for c in cards(folder) if c["fingerprint"] == fingerprint), None)


def load(card: dict):
    """The card's codec, ready to code (models.load_checkpoint), after checking it is the card's model."""
    from lic_utils import models

    path = Path(card["path"])
    if not path.is_file():
        raise LicError(f"zoo model {card['name']} is missing its weights {path}; restore them with "
                       f"git checkout -- {path}")
    model = models.load_checkpoint(path)
    if model.fingerprint() != card["fingerprint"]:
        raise LicError(f"{path} has weights {model.fingerprint()} but its card says {card['fingerprint']}; "
                       f"restore both with git checkout -- {path.parent}")
    return model


def writer_of(lic_path, folder=None) -> dict | None:
    """The card of the zoo model that wrote a .lic file (the fingerprint in its header), or None."""
    from lic_utils import bitstream

    return find(bitstream.parse(bitstream.read_bytes(lic_path)).fingerprint, folder)


def decoder_for(lic_path, checkpoint=None, folder=None):
    """The codec that decodes a .lic file: `checkpoint` when given, else the zoo model that wrote
    it (a one-line error naming --checkpoint when the zoo does not have it)."""
    from lic_utils import bitstream, models

    if checkpoint:
        return models.load_checkpoint(checkpoint)
    card = writer_of(lic_path, folder)
    if card is None:
        fp = bitstream.parse(bitstream.read_bytes(lic_path)).fingerprint
        raise LicError(f"{lic_path} was made by model weights {fp}, which are not in the zoo "
                       f"({zoo_dir(folder)}; python -m lic_utils models lists it): pass --checkpoint "
                       "with the model that wrote it")
    return load(card)


# --- writing ---------------------------------------------------------------------------------------
def data_checksums(sets=("bsds500",)) -> dict:
    """A checksum per data set: sha256 over its manifest rows (path and sha256 of every file), so
    a card names exactly the images its model was trained on."""
    from lic_utils import data

    out = {}
    for s in sets:
        rows = sorted(f"{e.path} {e.sha256}\n" for e in data.entries([s]))
        out[s] = {"files": len(rows), "sha256": hashlib.sha256("".join(rows).encode()).hexdigest()}
    return out


def log_summary(run_dir) -> dict:
    """The few numbers of a run's log a card keeps: steps, minutes, guard events, last validation."""
    from lic_utils.run_folder import read_final

    final = read_final(run_dir)
    if final is None:
        raise LicError(f"{run_dir} has not finished training (no final.json): finish it first")
    val = {k: v for k, v in final.get("val", {}).items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return {"steps": final["steps"], "minutes": round(final["elapsed_s"] / 60, 2),
            "guard_events": final.get("events", 0), "validation": val}


def export(run_dir, name: str, kodak, profile: str, family: str, default: bool = False,
           folder=None) -> Path:
    """Write zoo/NAME.pt (weights only) and zoo/NAME.json from a finished run and its Kodak rows
    (evaluate.evaluate_model: one row per image, real files). Returns the card's path."""
    from lic_utils import data, models
    from lic_utils.files import atomic_write_text
    from lic_utils.run_folder import read_run_config

    run_dir = Path(run_dir)
    model = models.load_checkpoint(run_dir / "checkpoint.pt")
    if set(kodak["fingerprint"]) != {model.fingerprint()}:
        raise LicError(f"the Kodak rows given for {name} are not of {run_dir}'s weights {model.fingerprint()}")
    folder = zoo_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pt = models.save_checkpoint(folder / f"{name}.pt", model)
    cfg = read_run_config(run_dir)
    training = {"profile": profile, **log_summary(run_dir), "config": cfg.to_dict()}
    if cfg.init_from:  # a fine-tune: its base run, by its own summary
        base_dir = Path(cfg.init_from).parent
        training["base"] = {**log_summary(base_dir), "config": read_run_config(base_dir).to_dict()}
        training["config"]["init_from"] = base_dir.name  # not this machine's path
        training["base"]["config"]["init_from"] = ""
    card = {
        "card_version": CARD_VERSION, "name": name, "family": family, "default": default,
        "lmbda": cfg.loss.lmbda, "beta": cfg.loss.beta, "gamma": cfg.loss.gamma,
        "fingerprint": model.fingerprint(), "config_hash": model.config.config_hash(),
        "model": model.config.to_dict(),
        "file": {"name": pt.name, "bytes": pt.stat().st_size, "sha256": data.sha256_file(pt)},
        "training": training, "data": data_checksums(),
        "kodak": {"images": int(kodak["image"].nunique()),
                  **{k: round(float(kodak[k].mean()), 5) for k in KODAK_MEASURES if k in kodak}},
    }
    return atomic_write_text(folder / f"{name}.json", json.dumps(card, indent=2) + "\n")

