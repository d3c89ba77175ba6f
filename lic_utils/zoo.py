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
CURVE_POINTS = 200  # training rows a card keeps of its run's log (plus validations and guard events)
KODAK_MEASURES = ("bpp", "psnr", "ms_ssim", "lpips", "ssimulacra2", "encode_ms", "decode_ms")


def zoo_dir(folder=None) -> Path:
    """The zoo folder: `folder`, else the repository's zoo/ (looked up when called, so tests can
    point ZOO_DIR elsewhere)."""
    return Path(folder) if folder is not None else ZOO_DIR


# --- reading ---------------------------------------------------------------------------------------
# what compress, models and the study read from every card
CARD_FIELDS = ("name", "family", "lmbda", "model", "file", "kodak")


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
        missing = [k for k in CARD_FIELDS if k not in card]
        if "kodak" in card and not (isinstance(card["kodak"], dict) and "bpp" in card["kodak"]):
            missing.append("kodak.bpp")
        if missing:
            raise LicError(f"zoo card {path} lacks {', '.join(missing)}; restore it with git checkout -- {path}")
        card["path"] = str(path.with_suffix(".pt"))
        out.append(card)
    defaults = [c["name"] for c in out if c.get("default")]
    if len(defaults) > 1:
        raise LicError(f"{len(defaults)} zoo cards are marked default ({', '.join(defaults)}): keep one "
                       f"(\"default\": true in its card), or restore them with git checkout -- {zoo_dir(folder)}")
    default = next((c["family"] for c in out if c.get("default")), None)
    return sorted(out, key=lambda c: (c["family"] != default, c["family"], c["kodak"]["bpp"]))


def table(folder=None):
    """The zoo as a DataFrame: one row per model, its quality rank and Kodak numbers."""
    import pandas as pd

    all_ = cards(folder)
    has_ladder = any(c.get("default") for c in all_)  # none before a study's models ship
    rungs = {c["name"]: k for k, c in enumerate(_ladder(all_, folder), 1)} if has_ladder else {}
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
        if not all_:
            raise no_models_error(folder)
        raise LicError(f"no model in {zoo_dir(folder)} is marked default: name one with --model "
                       f"({', '.join(c['name'] for c in all_)}), or pass --checkpoint")
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
    from lic_utils import bitstream

    return decoder_for_bytes(None if checkpoint else bitstream.read_bytes(lic_path), lic_path, checkpoint, folder)


def decoder_for_bytes(lic: bytes | None, name, checkpoint=None, folder=None):
    """decoder_for a .lic file's bytes (`name` names them in messages: a path, or stdin)."""
    from lic_utils import bitstream, models

    if checkpoint:
        return models.load_checkpoint(checkpoint)
    fp = bitstream.parse(lic).fingerprint
    card = find(fp, folder)
    if card is None:
        raise LicError(f"{name} was made by model weights {fp}, which are not in the zoo "
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


def _base_name(init_from: str) -> str:
    """How a card names a fine-tune's base: its run folder's name, not this machine's path."""
    return Path(init_from).parent.name if init_from else ""


def _crop_of(names) -> int | None:
    """The centre crop of evaluate.kodak_images that named these images (`kodim01-c256`), or None."""
    import re

    crops = {int(m.group(1)) if (m := re.search(r"-c(\d+)$", n)) else None for n in names}
    if len(crops) != 1:
        raise LicError(f"Kodak rows of mixed crops {sorted(map(str, crops))}: give one evaluation set")
    return crops.pop()


def curve(run_dir, points: int = CURVE_POINTS) -> str:
    """A run's log.csv in at most `points` training rows (means over equal runs of rows, at the
    last step of each) plus every validation and guard-event row, as CSV text: the card's training
    curve, which `install` writes back as a log.csv that notebook 04 can plot."""
    import pandas as pd

    from lic_utils.run_folder import LOG_COLUMNS, read_log

    log = read_log(run_dir).reindex(columns=LOG_COLUMNS)
    trained = log["loss"].notna()
    rows = log[trained].reset_index(drop=True)
    window = rows.index // max(1, math.ceil(len(rows) / points))
    means = rows.drop(columns="event").groupby(window).mean()
    means["step"] = rows.groupby(window)["step"].last()
    merged = pd.concat([means, log[~trained]]).sort_values("step", kind="stable")
    return merged[LOG_COLUMNS].to_csv(index=False, float_format="%.6g")


def export(run_dir, name: str, kodak, profile: str, family: str, default: bool = False,
           folder=None) -> Path:
    """Write zoo/NAME.pt (weights only) and zoo/NAME.json from a finished run and its Kodak rows
    (evaluate.evaluate_model: one row per image, real files). Returns the card's path."""
    from lic_utils import data, models
    from lic_utils.files import atomic_write_text
    from lic_utils.run_folder import read_final, read_run_config

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
        training["config"]["init_from"] = _base_name(cfg.init_from)
        training["base"]["config"]["init_from"] = ""
    training["final"] = {k: v for k, v in read_final(run_dir).items() if k not in ("checkpoint", "config")}
    training["curve"] = curve(run_dir)
    card = {
        "card_version": CARD_VERSION, "name": name, "family": family, "default": default,
        "lmbda": cfg.loss.lmbda, "beta": cfg.loss.beta, "gamma": cfg.loss.gamma,
        "fingerprint": model.fingerprint(), "config_hash": model.config.config_hash(),
        "model": model.config.to_dict(),
        "file": {"name": pt.name, "bytes": pt.stat().st_size, "sha256": data.sha256_file(pt)},
        "training": training, "data": data_checksums(),
        "kodak": {"images": int(kodak["image"].nunique()), "crop": _crop_of(kodak["image"]),
                  **{k: round(float(kodak[k].mean()), 5) for k in KODAK_MEASURES if k in kodak}},
    }
    return atomic_write_text(folder / f"{name}.json", json.dumps(card, indent=2) + "\n")


# --- a profile's study, shipped and read back --------------------------------------------------------
def shipped_models(profile: str, runs_dir=None) -> list[tuple[str, str, Path, object]]:
    """(zoo name, family, run folder, TrainConfig) of every model a profile ships: its base run and
    every run of its study's grid (lic_utils.study). The name is the run's (`factorized-mse-l0.004`);
    the family is the loss variant, with the prior when not factorized and the run's tag
    (`mse`, `lpips`, `hyperprior-mse`, `mse-noscale`); the base is `base-mse-lλ` of family `base`."""
    from lic_utils import study

    out = []
    base = study.base_run(profile, runs_dir)
    if base is not None:
        out.append((f"base-mse-l{base[1].loss.lmbda:g}", "base", base[0], base[1]))
    for group in study.GROUPS:
        for spec in study.sweeps(profile, runs_dir, group):
            for name, point, cfg in spec.runs():
                prior = "" if point["prior"] == "factorized" else point["prior"]
                family = "-".join(part for part in (prior, point["variant"], spec.tag) if part)
                out.append((name, family, Path(spec.out) / name, cfg))
    return out


def export_profile(profile: str, images: list, default_family: str, default_bpp: float = 0.2,
                   runs_dir=None, cache=None, folder=None, progress: bool = True) -> list[Path]:
    """Ship a profile's trained study: every model of `shipped_models` into the zoo, with its Kodak
    rows on `images` (evaluate.evaluate_model, cached in `cache` by fingerprint). The default is the
    model of `default_family` whose Kodak bpp is nearest `default_bpp`. Returns the cards written."""
    from tqdm.auto import tqdm

    from lic_utils import evaluate
    from lic_utils.run_folder import run_status

    todo = shipped_models(profile, runs_dir)
    unfinished = [name for name, _, run_dir, _ in todo if run_status(run_dir) != "done"]
    if unfinished:
        raise LicError(f"{len(unfinished)} model(s) of the {profile} study have not finished training "
                       f"({', '.join(unfinished[:3])}): run make study PROFILE={profile} first")
    # the base is no model of the study's tables: its rows stay out of the study's cache
    kodak = {name: evaluate.evaluate_model(run_dir, images, cache=None if fam == "base" else cache,
                                           progress=False)
             for name, fam, run_dir, _ in tqdm(todo, desc="Kodak, shipped models", unit="model",
                                               disable=not progress)}
    family = [name for name, fam, _, _ in todo if fam == default_family]
    if not family:
        raise LicError(f"the {profile} study has no model of family {default_family!r}")
    default = min(family, key=lambda n: abs(kodak[n]["bpp"].mean() - default_bpp))
    return [export(run_dir, name, kodak[name], profile=profile, family=fam, default=name == default,
                   folder=folder) for name, fam, run_dir, _ in todo]


def install(profile: str, runs_dir, folder=None, only=None) -> int:
    """Make every model the profile ships (or those named in `only`) a finished run folder under
    `runs_dir`, read from the zoo: its weights as checkpoint.pt, its config, final.json and the
    card's training curve as log.csv. The study then reads the shipped models through the code that
    reads the models trained here, and trains nothing; installing the base alone lets the fine-tunes
    be retrained from it. Checks each card's training config against the profile's row. Returns the
    number of runs installed now (finished run folders are kept)."""
    import shutil

    from lic_utils.files import atomic_write_text
    from lic_utils.run_folder import run_status

    by_name = {c["name"]: c for c in cards(folder)}
    todo = [m for m in shipped_models(profile, runs_dir) if only is None or m[0] in only]
    missing = [name for name, *_ in todo if name not in by_name]
    if missing:
        raise LicError(f"the zoo ({zoo_dir(folder)}) lacks {len(missing)} of the {profile} study's "
                       f"{len(todo)} models ({', '.join(missing[:3])}): restore it with git checkout -- "
                       f"zoo/, or train them with make study PROFILE={profile}")
    n = 0
    for name, _, run_dir, cfg in todo:
        if run_status(run_dir) == "done":
            continue
        card = by_name[name]
        _check_trained_as(card, cfg)
        load(card)  # the weights are the card's
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        atomic_write_text(run_dir / "log.csv", card["training"]["curve"])
        tmp = run_dir / "checkpoint.pt.tmp"
        shutil.copyfile(card["path"], tmp)
        tmp.replace(run_dir / "checkpoint.pt")
        final = {**card["training"]["final"], "checkpoint": str(run_dir / "checkpoint.pt"),
                 "config": cfg.to_dict(), "installed_from": str(card["path"])}
        atomic_write_text(run_dir / "final.json", json.dumps(final, indent=2) + "\n")  # last: done
        n += 1
    return n


def _check_trained_as(card: dict, cfg) -> None:
    """Refuse a card whose training config is not the profile's (another version of the study)."""
    from lic_utils.config import TrainConfig

    shipped = TrainConfig.from_dict(card["training"]["config"]).run_fields()
    wanted = cfg.run_fields()
    wanted["init_from"] = _base_name(wanted["init_from"])
    diff = sorted(k for k in wanted if shipped.get(k) != wanted[k])
    if diff:
        raise LicError(f"zoo model {card['name']} was trained with other settings than the "
                       f"{card['training']['profile']} profile now has ({', '.join(diff)}): retrain the "
                       f"zoo with make study PROFILE={card['training']['profile']}, or check out the "
                       "code it was trained with")


VERIFIED_MEASURES = ("bpp", "psnr", "ms_ssim", "lpips", "ssimulacra2")  # deterministic (not the ms)


def verify(folder=None, progress: bool = True):
    """Evaluate every zoo model again on its card's Kodak images (real files, no cache) and compare
    with the card: a DataFrame of model, measure, card, measured, match (equal to the card's 5
    decimals). What `python -m lic_utils models --verify` prints."""
    import pandas as pd
    from tqdm.auto import tqdm

    from lic_utils import evaluate

    all_ = cards(folder)
    if not all_:
        raise no_models_error(folder)
    rows = []
    for card in tqdm(all_, desc="re-evaluating the zoo", unit="model", disable=not progress):
        load(card)  # the weights are the card's
        images = evaluate.kodak_images(card["kodak"]["images"], card["kodak"].get("crop"))
        measured = evaluate.evaluate_model(card["path"], images, progress=False)
        for k in VERIFIED_MEASURES:
            if k in card["kodak"] and k in measured:
                value = round(float(measured[k].mean()), 5)
                rows.append({"model": card["name"], "measure": k, "card": card["kodak"][k],
                             "measured": value, "match": value == card["kodak"][k]})
    return pd.DataFrame(rows)
