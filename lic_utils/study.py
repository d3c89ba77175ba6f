"""Run the numbered notebook series headless with papermill (what `make study` does).

Each notebook `notebooks/NN_name.ipynb` is executed top to bottom with `profile` injected into its
`parameters` cell; the executed copy goes to `notebooks/executed/`. Wall times go to
`results/study_timings.csv` (a full study starts its profile's rows afresh) so the README can state how
long each profile takes.
"""
from __future__ import annotations

import ast
import time
from pathlib import Path

from lic_utils.errors import LicError
from lic_utils.files import NOTEBOOKS_DIR, RESULTS_DIR

PROFILES = ("smoke", "cpu", "gpu")
TIMINGS_CSV = RESULTS_DIR / "study_timings.csv"  # wall time of each step of the study, per profile


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
                  timings: Path | None = TIMINGS_CSV) -> list[Path]:
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


def start_timings(profile: str, csv_path: Path = TIMINGS_CSV) -> None:
    """Drop the profile's rows from the timing table, so that after a full `make study` the table (and
    the README total) describes that one sitting, not a mix of runs; other profiles' rows are kept."""
    import pandas as pd

    from lic_utils.files import atomic_to_csv

    if Path(csv_path).exists():
        old = pd.read_csv(csv_path)
        atomic_to_csv(old[old.profile != profile], csv_path)


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


# --- the study's matrix of trained models -------------------------------------------------------------
# The three loss variants (MSE; + MS-SSIM; + LPIPS) are lic_utils.train.DEFAULT_VARIANTS.
# Per profile: λ of the main RD curves (≥ 4 points, ≈0.1–0.5 bpp on Kodak for the cpu profile), the λ of
# the single-point ablations (≈0.2 bpp), the extra β/γ settings of notebook 06, the Kodak images used,
# the classical codecs compared (None: all five), and `crop` (None: full images). Smoke keeps the fast
# codecs and 256×256 centre crops so that the tests take seconds. `workers`: runs trained at once by
# `make study` (train_all), one process each: two one-thread runs on 2 cores beat one two-thread run.
# Notebook 04 trains the three loss variants at the ablation λ (`ablation_sweep`).
MATRIX = {
    "smoke": dict(lmbdas=[1.6e-2, 8e-3, 4e-3, 2e-3], ablation_lmbda=4e-3, images=2, crop=256, codecs=["jpeg", "webp", "jpeg2000"],
                  extra_variants={"lpips-g0.03": {"beta": 0.0, "gamma": 0.03}}, workers=1),
    "cpu": dict(lmbdas=[1.2e-2, 6e-3, 4e-3, 1.5e-3], ablation_lmbda=4e-3, images=24, crop=None, codecs=None,
                extra_variants={"lpips-g0.03": {"beta": 0.0, "gamma": 0.03}}, workers=2),
    "gpu": dict(lmbdas=[1.6e-2, 8e-3, 4e-3, 2e-3, 1e-3, 5e-4], ablation_lmbda=4e-3, images=24, crop=None, codecs=None,
                extra_variants={"msssim-b0.2": {"beta": 0.2, "gamma": 0.0}, "lpips-g0.003": {"beta": 0.0, "gamma": 0.003},
                                "lpips-g0.03": {"beta": 0.0, "gamma": 0.03}}, workers=1),
}
GROUPS = ("main", "loss", "prior")


def sweeps(profile: str, runs_dir=None, group: str = "main") -> list:
    """The training grids of one group of the study (lic_utils.train.SweepSpec each).

    main:  factorized prior × the three loss variants × the profile's λ (the RD curves of notebook 05)
    loss:  extra β/γ weights at the ablation λ (notebook 06)
    prior: factorized-Gaussian and hyperprior, and the factorized prior without the learned
           per-channel quantization scale, with MSE at the ablation λ (notebook 07)
    """
    from lic_utils.files import RUNS_DIR
    from lic_utils.train import DEFAULT_VARIANTS, SweepSpec

    if profile not in MATRIX:
        raise LicError(f"unknown profile {profile!r}; choose from {PROFILES}")
    if group not in GROUPS:
        raise LicError(f"unknown group {group!r}; choose from {GROUPS}")
    m, root = MATRIX[profile], Path(runs_dir or RUNS_DIR)
    out = str(root / f"study-{profile}")
    one = [m["ablation_lmbda"]]
    if group == "main":
        return [SweepSpec(profile=profile, out=out, priors=["factorized"], variants=dict(DEFAULT_VARIANTS), lmbdas=m["lmbdas"])]
    if group == "loss":
        return [SweepSpec(profile=profile, out=out, priors=["factorized"], variants=dict(m["extra_variants"]), lmbdas=one)]
    mse = {"mse": DEFAULT_VARIANTS["mse"]}
    return [SweepSpec(profile=profile, out=out, priors=["factorized-gaussian", "hyperprior"], variants=mse, lmbdas=one),
            SweepSpec(profile=profile, out=str(root / f"study-{profile}-noscale"), priors=["factorized"], variants=mse,
                      lmbdas=one, overrides={"channel_scale": False}, tag="noscale")]


def ablation_sweep(profile: str, runs_dir=None):
    """Notebook 04's grid: the three loss variants at the ablation λ (a subset of the main grid)."""
    spec = sweeps(profile, runs_dir, "main")[0]
    spec.lmbdas = [MATRIX[profile]["ablation_lmbda"]]
    return spec


def train_all(profile: str, runs_dir=None, progress: bool = True,
              timings: Path | None = TIMINGS_CSV) -> int:
    """Train every run of the study that is not finished, `MATRIX[profile]["workers"]` at a time, then
    write each sweep's index.csv. `make study` calls it first; the notebooks then reuse the runs.
    Returns the number of runs trained now."""
    from lic_utils.train import run_status, train_many, write_index, index_row

    specs = [s for g in GROUPS for s in sweeps(profile, runs_dir, g)]
    jobs = {}
    for spec in specs:
        for name, _, cfg in spec.runs():
            run_dir = Path(spec.out) / name
            if run_status(run_dir) != "done":
                jobs[run_dir] = cfg
    print(f"[study] {len(jobs)} training run(s) to do for the {profile} profile", flush=True)
    start = time.perf_counter()
    train_many(list(jobs.items()), MATRIX[profile]["workers"], progress)
    if jobs and timings is not None:
        _log_timing(timings, f"train_all ({len(jobs)} runs)", profile, time.perf_counter() - start)
    for spec in specs:
        Path(spec.out).mkdir(parents=True, exist_ok=True)
        write_index(Path(spec.out), [index_row(name, point, cfg, Path(spec.out) / name) for name, point, cfg in spec.runs()])
    return len(jobs)


def train_runs(profile: str, runs_dir=None, group: str = "main", progress: bool = True):
    """Train (or reuse) the runs of a group; returns their index (name, prior, variant, λ, β, γ,
    channel_scale, status, final metrics, checkpoint) as a DataFrame. Finished runs are not retrained."""
    import pandas as pd

    from lic_utils.train import sweep

    frames = []
    for spec in sweeps(profile, runs_dir, group):
        df = sweep(spec, progress=progress, workers=MATRIX[profile]["workers"])
        df["channel_scale"] = spec.overrides.get("channel_scale", True)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def redraw_figures(results_dir=None, figures_dir=None) -> list[Path]:
    """Redraw the RD figures from the tables in results/ alone (no training, no codec runs): `make figures`."""
    import pandas as pd

    from lic_utils import evaluate, plots
    from lic_utils.files import FIGURES_DIR, RESULTS_DIR

    results_dir, figures_dir = Path(results_dir or RESULTS_DIR), Path(figures_dir or FIGURES_DIR)
    baselines_csv, learned_csv = results_dir / "baselines_kodak.csv", results_dir / "learned_kodak.csv"
    if not baselines_csv.exists():
        raise LicError(f"{baselines_csv} is missing: run `make study` (or notebook 00) first")
    written = []
    baselines = pd.read_csv(baselines_csv)
    curves = evaluate.mean_curve(baselines)
    fig = plots.rd_curves(curves, title=f"Classical codecs on Kodak ({baselines.image.nunique()} images, real files)",
                          xlim=(0, 1.6))
    written.append(plots.save(fig, figures_dir / "00_rd_baselines.png"))
    if learned_csv.exists():
        learned = pd.read_csv(learned_csv)
        points = evaluate.learned_points(learned)
        curves = evaluate.mean_curve(baselines[baselines.image.isin(learned.image.unique())])
        main = points[points.family.map(points.family.value_counts()) >= 2]
        fig = plots.rd_curves(evaluate.rd_table(points, curves), hue="curve",
                              title=f"Kodak ({learned.image.nunique()} images): learned models and classical codecs, real files",
                              xlim=(0, max(1.0, 1.2 * points["bpp"].max())))
        written.append(plots.save(fig, figures_dir / "05_rd_curves.png"))
        fig = plots.rd_curves(evaluate.rd_table(main, curves), hue="curve",
                              title="The study in one figure: Kodak, real files", xlim=(0, 0.8))
        written.append(plots.save(fig, figures_dir / "09_summary_rd.png"))
    return written


# --- the README's results section (computed from results/, never typed) -------------------------------
README_BEGIN, README_END = "<!-- BEGIN study-results (written by `make figures` from results/) -->", "<!-- END study-results -->"


def readme_results(results_dir=None, profile: str = "cpu", figures_dir=None) -> str:
    """Markdown for the README: the key figure, where the learned models stand against each codec
    (summary_standing.csv and summary_verdicts.csv, notebook 09) and how long each step of the study took (study_timings.csv)."""
    import pandas as pd

    from lic_utils.files import FIGURES_DIR

    results_dir = Path(results_dir or RESULTS_DIR)
    key_figure = Path(figures_dir or FIGURES_DIR) / "09_summary_rd.png"
    parts = ["![The study in one figure](figures/09_summary_rd.png)", ""] if key_figure.exists() else []
    standing_csv = results_dir / "summary_standing.csv"
    if standing_csv.exists():
        s = pd.read_csv(standing_csv).dropna(subset=["d_psnr"])
        parts += ["The best learned curve minus each codec on Kodak (24 images, real files; mean RD curves interpolated at "
                  "each bitrate, the best learned curve taken per metric; PSNR in dB; LPIPS is lower-is-better, so a "
                  "negative Δ LPIPS favours the learned model; – where a curve does not reach the bitrate):", "",
                  "| codec | " + " | ".join(f"{b:g} bpp: Δ PSNR / Δ LPIPS" for b in sorted(s.bpp.unique())) + " |",
                  "|---|" + "---|" * s.bpp.nunique()]
        for codec, g in s.groupby("codec"):
            cells = {r["bpp"]: f"{r['d_psnr']:+.2f} / {r['d_lpips']:+.3f}" for r in g.to_dict("records")}
            parts.append(f"| {codec} | " + " | ".join(cells.get(b, "–") for b in sorted(s.bpp.unique())) + " |")
        parts.append("")
    else:
        parts += ["*No summary table yet: run `make study`.*", ""]
    verdicts_csv = results_dir / "summary_verdicts.csv"
    if verdicts_csv.exists():
        v = pd.read_csv(verdicts_csv, converters={c: ast.literal_eval for c in
                                                  ("wins_psnr", "loses_psnr", "wins_lpips", "loses_lpips")})
        parts += ["At equal bytes, image by image (every learned model point against each codec set per image to the "
                  "same file size; a win is being better on more than half of the images):", ""]
        for codec, g in v.groupby("codec"):
            said = []
            for q, unit, fmt in (("psnr", " dB", "+.2f"), ("lpips", "", "+.3f")):
                wins = [f"{r['family']} at {b:.2f} bpp" for r in g.to_dict("records") for b in r[f"wins_{q}"]]
                n = sum(len(r[f"wins_{q}"]) + len(r[f"loses_{q}"]) for r in g.to_dict("records"))
                said.append(f"{q.upper()} better at {len(wins)} of {n} points" + (f" ({'; '.join(wins)})" if wins else "")
                            + f", Δ {g[f'd_{q}_min'].min():{fmt}} to {g[f'd_{q}_max'].max():{fmt}}{unit}")
            parts.append(f"* **{codec}**: " + "; ".join(said) + ".")
        parts.append("")
    timings_csv = results_dir / "study_timings.csv"
    if timings_csv.exists():
        t = pd.read_csv(timings_csv)
        t = t[t.profile == profile]
        if len(t):
            parts += [f"Wall time of the `{profile}` study on 2 CPU cores, step by step (`results/study_timings.csv`):", "",
                      "| step | minutes | finished |", "|---|---|---|"]
            parts += [f"| {r.notebook} | {r.seconds / 60:.1f} | {r.finished} |" for r in t.itertuples()]
            parts += [f"| **total** | **{t.seconds.sum() / 60:.1f}** | |", ""]
    return "\n".join(parts).rstrip() + "\n"


def update_readme(readme=None, results_dir=None, profile: str = "cpu", figures_dir=None) -> Path:
    """Rewrite the README's results section (between README_BEGIN and README_END) from results/."""
    from lic_utils.files import REPO, atomic_write_text

    readme = Path(readme or REPO / "README.md")
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise LicError(f"{readme} has no results section: add the lines {README_BEGIN!r} and {README_END!r}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, head + README_BEGIN + "\n" + readme_results(results_dir, profile, figures_dir) + README_END + tail)
    return readme
