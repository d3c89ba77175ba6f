"""Run the numbered notebook series headless with papermill (what `make study` does).

Each notebook `notebooks/NN_name.ipynb` is executed top to bottom with `profile` injected into its
`parameters` cell; the executed copy goes to `notebooks/executed/`. Wall times are appended to
`results/study_timings.csv` so the README can state how long each profile takes.
"""
from __future__ import annotations

import time
from pathlib import Path

from lic_utils.errors import LicError
from lic_utils.files import NOTEBOOKS_DIR, RESULTS_DIR

PROFILES = ("smoke", "cpu", "gpu")


def notebook_paths(only=None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks in order; `only` keeps those whose name starts with one of its prefixes."""
    paths = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    if not paths:
        raise LicError(f"no notebooks matching {only or 'NN_*.ipynb'} in {folder}")
    return paths


def run_notebook(path: Path, out_dir: Path, parameters: dict, progress: bool = True) -> Path:
    """Execute one notebook with papermill; raise a LicError naming the notebook and cell on failure."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    try:
        pm.execute_notebook(
            str(path), str(out), parameters=parameters, cwd=str(path.parent),
            kernel_name="python3", progress_bar=progress, log_output=False,
        )
    except pm.PapermillExecutionError as e:
        raise LicError(
            f"{path.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} (executed copy with the traceback: {out})"
        ) from None
    return out


def run_notebooks(profile: str = "cpu", only=None, out_dir: Path | None = None, parameters: dict | None = None,
                  timings: Path | None = RESULTS_DIR / "study_timings.csv") -> list[Path]:
    """Run the series in order with the given profile; returns the executed copies."""
    if profile not in PROFILES:
        raise LicError(f"unknown profile {profile!r}; choose from {PROFILES}")
    out_dir = out_dir or NOTEBOOKS_DIR / "executed"
    params = {"profile": profile, **(parameters or {})}
    done = []
    for path in notebook_paths(only):
        print(f"[study] {path.name} (profile={profile})", flush=True)
        start = time.perf_counter()
        done.append(run_notebook(path, out_dir, params))
        seconds = time.perf_counter() - start
        print(f"[study] {path.name} done in {seconds / 60:.1f} min", flush=True)
        if timings is not None:
            _log_timing(timings, path.name, profile, seconds)
    return done


def _log_timing(csv_path: Path, notebook: str, profile: str, seconds: float) -> None:
    import pandas as pd

    from lic_utils.files import atomic_to_csv

    row = pd.DataFrame([{"notebook": notebook, "profile": profile, "seconds": round(seconds, 1),
                         "finished": time.strftime("%Y-%m-%d %H:%M:%S")}])
    if Path(csv_path).exists():
        old = pd.read_csv(csv_path)
        old = old[~((old.notebook == notebook) & (old.profile == profile))]
        row = pd.concat([old, row], ignore_index=True)
    atomic_to_csv(row, csv_path)
