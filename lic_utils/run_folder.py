"""Run folders: what a training run leaves on disk, and reading it back.

A run folder (`runs/NAME/`) holds
- `config.json`  the TrainConfig of the run (a rerun with another config is refused),
- `log.csv`      one row every `log_every` steps (means of every loss term over those steps, lr,
                 aux loss, gradient norm, images/s), a row per validation (`val_*` columns: Kodak
                 crops with rounded latents) and a row per guard event (`event` column),
- `checkpoint.pt` the latest checkpoint, written atomically every `ckpt_every` steps and at the end
                 through `models.save_checkpoint` (entropy-coder tables updated, so `compress` can
                 use it); its `extra` holds the config and the trainer's `TrainState`,
- `final.json`   written last: the marker that the run is finished, with its final metrics,
- `.lock`        flock-ed by the process training the run: a second one is refused (the OS drops
                 the lock when the process ends, even by kill -9).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from lic_utils.config import RETIRED_FIELDS, TrainConfig
from lic_utils.errors import LicError
from lic_utils.files import atomic_write_text

LOG_COLUMNS = [
    "step", "time_s", "lr", "loss", "bpp", "mse", "psnr", "ms_ssim", "lpips", "aux_loss", "grad_norm",
    "images_per_s", "val_loss", "val_bpp", "val_mse", "val_psnr", "val_ms_ssim", "val_lpips", "event",
]


def run_status(run_dir: str | os.PathLike) -> str:
    """'done', 'partial' (has a checkpoint), 'new'."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").exists():
        return "done"
    if (run_dir / "checkpoint.pt").exists():
        return "partial"
    return "new"


def read_final(run_dir: str | os.PathLike) -> dict | None:
    p = Path(run_dir) / "final.json"
    return json.loads(p.read_text()) if p.exists() else None


def read_log(run_dir: str | os.PathLike):
    """log.csv of a run as a DataFrame."""
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "log.csv")


def read_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The TrainConfig in a run's config.json (nested, or flat as written before the nesting)."""
    d = json.loads((Path(run_dir) / "config.json").read_text())
    return TrainConfig.from_dict({k: v for k, v in d.items() if k not in RETIRED_FIELDS})


def check_run_folder(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse a run folder that holds a run of another configuration (operational fields aside)."""
    if not (run_dir / "config.json").exists():
        return
    old, new = read_run_config(run_dir).run_fields(), cfg.run_fields()
    diff = {k: (old.get(k), new[k]) for k in new if old.get(k) != new[k]}
    if diff:
        changes = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in sorted(diff.items()))
        raise LicError(f"{run_dir} holds a run with another configuration ({changes}); "
                       f"choose another --out, or delete the folder to retrain")


class RunLog:
    """log.csv, appended row by row (rank 0); on resume rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    try:
                        if int(r["step"]) <= resume_step:
                            rows.append(r)
                    except (KeyError, TypeError, ValueError):
                        break  # a torn last line
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(path, buf.getvalue())

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def run_summary(run_dir: Path, cfg: TrainConfig, steps: int, elapsed: float, world: int) -> dict:
    """final.json: training means over the last 10 % of the steps, the last validation, events."""
    log = read_log(run_dir)
    train_rows = log[log["loss"].notna()]
    tail = train_rows[train_rows["step"] > steps - max(cfg.log_every, steps // 10)]
    val_rows = log[log["val_bpp"].notna()]
    events = log[log["event"].notna()]
    return {
        "done": True,
        "steps": steps,
        "elapsed_s": round(elapsed, 1),
        "world_size": world,
        "train": {k: float(tail[k].mean()) for k in ("loss", "bpp", "mse", "psnr", "ms_ssim", "lpips")},
        "val": ({k.removeprefix("val_"): float(v) for k, v in val_rows.iloc[-1].items()
                 if k.startswith("val_")} if len(val_rows) else {}),
        "events": int(len(events)),
        "checkpoint": str(run_dir / "checkpoint.pt"),
        "config": cfg.to_dict(),
    }
