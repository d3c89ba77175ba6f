"""The study: what every notebook starts from, its grid of trained models, and its headless run.

- `setup` gives a notebook its `Study`: the profile's row (lic_utils.profiles) and the folders it
  reads and writes, with the calls the notebooks share (Kodak images, codec curves, training and
  evaluating runs, saving tables).
- `sweeps`, `train_runs` and `train_all`: the models each profile trains, in three groups.
- `prune_caches` keeps only the rows of the profile's grid in the model caches (`make study`).
- `run_notebooks` executes the numbered series with papermill (`make study`): each notebook
  `notebooks/NN_name.ipynb` runs top to bottom with `profile` injected into its `parameters` cell.
  The committed profile's study executes them in place, so that the committed notebooks show the
  committed results with every output; another profile's executed copies go to
  `notebooks/executed/PROFILE/` (not committed). Wall times go to `results/study_timings.csv` (a
  full study starts its profile's rows afresh) so the README can state how long each profile takes.
- `redraw_figures` and `update_readme`: the figures and the README's results section from results/
  alone (`make figures`).
"""
from __future__ import annotations

import ast
import time
from dataclasses import dataclass
from pathlib import Path

from lic_utils.errors import LicError
from lic_utils.files import NOTEBOOKS_DIR, RESULTS_DIR, RUNS_DIR
from lic_utils.profiles import LOSS_VARIANTS, Profile, get_profile

TIMINGS_CSV = RESULTS_DIR / "study_timings.csv"  # wall time of each step of the study, per profile
COMMITTED_PROFILE = "reference"  # whose results, figures and executed notebooks the repository holds
SHIPPED_PROFILE = "reference"  # whose models the zoo holds: `make study` reads them, trains nothing
SHIPPED_RUNS = RUNS_DIR / "shipped"  # where they are installed as finished runs


# --- what a notebook starts from ------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """What a notebook needs: its profile, the folders it reads and writes, and the shared calls."""

    profile: Profile
    results: Path
    figures: Path
    runs: Path

    def md(self, text: str) -> None:
        """Show prose with computed numbers as Markdown (the notebooks never type a number)."""
        from IPython.display import Markdown, display

        display(Markdown(text))

    def save(self, table, name: str) -> Path:
        """Write a table to results/`name` (atomically)."""
        from lic_utils.files import atomic_to_csv

        return atomic_to_csv(table, self.results / name)

    def record(self, name: str):
        """A benchmark's table (e.g. training_budget.csv): this study's results/`name`, else the
        committed one in the repository's results/ (when results_dir is elsewhere), else empty."""
        import pandas as pd

        for path in (self.results / name, RESULTS_DIR / name):
            if path.exists():
                return pd.read_csv(path)
        return pd.DataFrame()

    def kodak_images(self) -> list:
        """The profile's evaluation images: (name, H×W×3 uint8) of the first `images` Kodak images,
        centre crops when the profile sets `crop`."""
        from lic_utils import evaluate

        return evaluate.kodak_images(self.profile.images, self.profile.crop)

    def codec_curves(self, images: list):
        """The classical codecs' mean RD curves on `images` (the profile's codecs and quality
        settings), from results/baselines_kodak.csv: only settings missing there are measured, by
        the profile's `workers` processes."""
        from lic_utils import evaluate

        sweep = evaluate.codec_sweep(images, codecs_=self.profile.codecs,
                                     n_qualities=self.profile.n_qualities,
                                     cache=self.results / "baselines_kodak.csv", progress=False,
                                     workers=self.profile.workers)
        return evaluate.mean_curve(sweep)

    def train(self, group: str, lmbdas=None):
        """Train (or reuse) the runs of a group of the study (see `train_runs`): their index."""
        return train_runs(self.profile, self.runs, group, progress=False, lmbdas=lmbdas)

    def evaluate(self, index, images: list, matched: bool = True):
        """Evaluate the finished runs of an index on `images` with real files, and (`matched`)
        match the profile's codecs to each model's bytes (the profile's `workers` processes): (learned
        rows, matched rows or None), cached in results/ (lic_utils.evaluate.evaluate_runs)."""
        from lic_utils import evaluate

        codecs_ = list(self.profile.codecs) if self.profile.codecs else None
        return evaluate.evaluate_runs(index, images, self.results, matched=matched, codecs_=codecs_,
                                      progress=False, workers=self.profile.workers)


def setup(profile: str = "cpu", results_dir=None, figures_dir=None, runs_dir=None) -> Study:
    """The one set-up call of every notebook: the profile's row, and its results, figures and runs
    folders (`profile_dirs` unless a folder is given, a relative one being the repository's; created
    if missing). The shipped profile's runs default to its models from the zoo, installed as finished
    runs in SHIPPED_RUNS, so that a reader running a notebook trains nothing (`make study PROFILE=reference` gives runs/ to retrain
    them). Also keeps CompressAI's import notices out of the notebook and makes the plots use the
    study's theme."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit notices of compressai
    from lic_utils import plots  # noqa: F401  (the study's theme)

    check_checkout()
    p = get_profile(profile)
    if runs_dir is None and p.name == SHIPPED_PROFILE:
        from lic_utils import zoo

        runs_dir = SHIPPED_RUNS
        zoo.install(p.name, runs_dir)  # quick once installed: finished runs are kept
    results, figures = profile_dirs(p.name)
    from lic_utils.files import REPO

    def folder(given, default) -> Path:  # a relative folder is the repository's (notebooks run in notebooks/)
        return REPO / Path(given or default)

    s = Study(p, folder(results_dir, results), folder(figures_dir, figures), folder(runs_dir, RUNS_DIR))
    s.results.mkdir(parents=True, exist_ok=True)
    s.figures.mkdir(parents=True, exist_ok=True)
    return s


def check_checkout(cwd=None) -> None:
    """Refuse to run a checkout's notebook with another checkout's lic_utils (a .venv shared by two
    clones imports the package its editable install names, and would write into that clone's
    results/): the checkout is the nearest folder above `cwd` (a notebook's kernel starts in
    notebooks/) holding both lic_utils/ and notebooks/."""
    from lic_utils.files import REPO

    here = Path(cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "lic_utils" / "__init__.py").is_file() and (folder / "notebooks").is_dir():
            if folder != REPO.resolve():
                raise LicError(f"this notebook belongs to the checkout {folder}, but lic_utils was imported from "
                               f"{REPO}: run `make venv` in {folder} (a .venv of its own), or start Jupyter there "
                               f"with PYTHONPATH={folder}")
            return


def profile_dirs(profile: str) -> tuple[Path, Path]:
    """(results, figures) folders of a profile's study: the repository's results/ and figures/ for
    the committed profile, results/PROFILE/ and figures/PROFILE/ for the others, so that rerunning
    another profile never overwrites the committed study."""
    from lic_utils.files import FIGURES_DIR

    if profile == COMMITTED_PROFILE:
        return RESULTS_DIR, FIGURES_DIR
    return RESULTS_DIR / profile, FIGURES_DIR / profile


# --- the study's grid of trained models -----------------------------------------------------------
GROUPS = ("main", "loss", "prior", "seeds")


def sweeps(profile: str | Profile, runs_dir=None, group: str = "main") -> list:
    """The training grids of one group of the study (SweepSpec each), from the profile's row.

    main:  factorized prior × the three loss variants × the profile's λ (the RD curves of notebook 05)
    loss:  the profile's extra β/γ weights at the ablation λ (notebook 06)
    prior: factorized-Gaussian and hyperprior, and the factorized prior without the learned
           per-channel quantization scale, with MSE at the ablation λ (notebook 07)
    seeds: the single-point ablations again with seeds 1 … seeds − 1 (the priors, no scale, and the
           profile's seed_variants), for the seed spread of notebooks 06, 07 and 09
    """
    from lic_utils.sweeps import SweepSpec

    p = get_profile(profile)
    if group not in GROUPS:
        raise LicError(f"unknown group {group!r}; choose from {GROUPS}")
    root = Path(runs_dir or RUNS_DIR)
    out = str(root / f"study-{p.name}")
    one = [p.ablation_lmbda]
    base = base_run(p, root)
    tune = {**p.finetune, "init_from": str(base[0] / "checkpoint.pt")} if base else {}
    if group == "main":
        return [SweepSpec(profile=p.name, out=out, priors=["factorized"],
                          variants=dict(LOSS_VARIANTS), lmbdas=list(p.lmbdas), overrides=tune)]
    if group == "loss":
        return [SweepSpec(profile=p.name, out=out, priors=["factorized"],
                          variants=dict(p.extra_variants), lmbdas=one, overrides=tune)]
    if group == "prior":
        return _prior_specs(p, out, str(root / f"study-{p.name}-noscale"), tune, "")
    variants = {**LOSS_VARIANTS, **p.extra_variants}
    unknown = set(p.seed_variants) - set(variants)
    if unknown:
        raise LicError(f"profile {p.name}: seed_variants {sorted(unknown)} are not loss variants; "
                       f"choose from {sorted(variants)}")
    seeds_out = str(root / f"study-{p.name}-seeds")
    specs = []
    for seed in range(1, p.seeds):
        t, tag = {**tune, "seed": seed}, f"seed{seed}"
        specs += [SweepSpec(profile=p.name, out=seeds_out, priors=["factorized"],
                            variants={v: variants[v] for v in p.seed_variants}, lmbdas=one,
                            overrides=t, tag=tag),
                  *_prior_specs(p, seeds_out, seeds_out, t, tag)]
    return specs


def run_names(profile: str | Profile, runs_dir=None) -> list[str]:
    """The names of every run of the profile's grid (all groups, the base run aside)."""
    return [name for g in GROUPS for spec in sweeps(profile, runs_dir, g) for name, _, _ in spec.runs()]


def _prior_specs(p: Profile, out: str, noscale_out: str, tune: dict, tag: str) -> list:
    """The prior ablation's runs (MSE at the ablation λ): factorized-Gaussian, hyperprior, and the
    factorized prior without its per-channel scale."""
    from lic_utils.sweeps import SweepSpec

    mse, one = {"mse": LOSS_VARIANTS["mse"]}, [p.ablation_lmbda]
    return [*(SweepSpec(profile=p.name, out=out, priors=[prior], variants=mse, lmbdas=one,
                        overrides={**tune, **p.prior_train.get(prior, {})}, tag=tag)
              for prior in ("factorized-gaussian", "hyperprior")),
            SweepSpec(profile=p.name, out=noscale_out, priors=["factorized"], variants=mse, lmbdas=one,
                      overrides={**tune, "channel_scale": False},
                      tag="-".join(t for t in ("noscale", tag) if t))]


def base_run(profile: str | Profile, runs_dir=None):
    """(run folder, TrainConfig) of the profile's base run (an MSE run at the ablation λ that every
    run of the grid is fine-tuned from), or None when the profile trains every run from scratch."""
    from lic_utils.config import TrainConfig

    p = get_profile(profile)
    if not p.base:
        return None
    cfg = TrainConfig.for_profile(p.name, lmbda=p.ablation_lmbda, **p.base)
    return Path(runs_dir or RUNS_DIR) / f"study-{p.name}-base" / "base", cfg


def train_base(profile: str | Profile, runs_dir=None, progress: bool = True) -> bool:
    """Train (or resume, or reuse) the profile's base run with every core; True if it trained now."""
    from lic_utils.run_folder import run_status
    from lic_utils.train import train

    base = base_run(profile, runs_dir)
    if base is None or run_status(base[0]) == "done":
        return False
    print(f"[study] training the base run {base[0]} ({base[1].steps} steps)", flush=True)
    train(base[1].replace(progress=progress and base[1].progress), base[0])
    return True


def ablation_sweep(profile: str | Profile, runs_dir=None):
    """Notebook 04's grid: the three loss variants at the ablation λ (a subset of the main grid)."""
    spec = sweeps(profile, runs_dir, "main")[0]
    spec.lmbdas = [get_profile(profile).ablation_lmbda]
    return spec


def train_all(profile: str | Profile, runs_dir=None, progress: bool = True,
              timings: Path | None = TIMINGS_CSV) -> int:
    """Train every run of the study that is not finished, the profile's `workers` at a time, then
    write each sweep's index.csv. `make study` calls it first; the notebooks then reuse the runs.
    Returns the number of runs trained now."""
    from lic_utils.sweeps import index_row, train_many, write_index
    from lic_utils.run_folder import run_status

    p = get_profile(profile)
    start = time.perf_counter()
    if train_base(p, runs_dir, progress) and timings is not None:
        _log_timing(timings, "train_all: base run", p.name, time.perf_counter() - start)
    specs = [s for g in GROUPS for s in sweeps(p, runs_dir, g)]
    jobs = {}
    for spec in specs:
        for name, _, cfg in spec.runs():
            run_dir = Path(spec.out) / name
            if run_status(run_dir) != "done":
                jobs[run_dir] = cfg
    print(f"[study] {len(jobs)} training run(s) to do for the {p.name} profile", flush=True)
    start = time.perf_counter()
    train_many(list(jobs.items()), p.workers, progress)
    if jobs and timings is not None:
        _log_timing(timings, f"train_all ({len(jobs)} runs)", p.name, time.perf_counter() - start)
    for spec in specs:
        root = Path(spec.out)
        root.mkdir(parents=True, exist_ok=True)
        write_index(root, [index_row(name, point, cfg, root / name)
                           for name, point, cfg in spec.runs()])
    return len(jobs)


def train_runs(profile: str | Profile, runs_dir=None, group: str = "main", progress: bool = True,
               lmbdas=None):
    """Train (or reuse) the runs of a group, only those at `lmbdas` when given; returns their index
    (name, prior, variant, λ, β, γ, channel_scale, status, final metrics, checkpoint) as a
    DataFrame. Finished runs are not retrained."""
    import pandas as pd

    from lic_utils.sweeps import INDEX_COLUMNS, sweep

    p = get_profile(profile)
    train_base(p, runs_dir, progress)
    frames = []
    for spec in sweeps(p, runs_dir, group):
        if lmbdas is not None:
            spec.lmbdas = [lmbda for lmbda in spec.lmbdas if lmbda in lmbdas]
        df = sweep(spec, progress=progress, workers=p.workers)
        df["channel_scale"] = spec.overrides.get("channel_scale", True)
        frames.append(df)
    if not frames:  # a group may have no runs (one seed, no γ sweep): its table is empty
        return pd.DataFrame(columns=[*INDEX_COLUMNS, "channel_scale"])
    return pd.concat(frames, ignore_index=True)


# --- the notebook series, headless ----------------------------------------------------------------
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
        raise LicError(f"{path.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                       f"(executed copy with the traceback: {out})") from None
    from lic_utils.files import atomic_write_text, repo_relative

    atomic_write_text(out, repo_relative(out.read_text()))  # no machine's paths in what is committed
    return out


def executed_dir(profile: str) -> Path:
    """Where `make study` writes a profile's executed notebooks: in place for the committed
    profile, else notebooks/executed/PROFILE/."""
    return NOTEBOOKS_DIR if profile == COMMITTED_PROFILE else NOTEBOOKS_DIR / "executed" / profile


def run_notebooks(profile: str = "cpu", only=None, out_dir: Path | None = None,
                  parameters: dict | None = None, timings: Path | None = TIMINGS_CSV,
                  label: str | None = None) -> list[Path]:
    """Run the series in order with the given profile; returns the executed copies. Wall times go
    to the timing table under `label` (default: the profile's name)."""
    get_profile(profile)  # an unknown profile fails here, before the first notebook
    out_dir = out_dir or executed_dir(profile)
    params = {"profile": profile, **(parameters or {})}
    done = []
    for path in notebook_paths(only):
        print(f"[study] {path.name} (profile={profile})", flush=True)
        start = time.perf_counter()
        done.append(run_notebook(path, out_dir, params))
        seconds = time.perf_counter() - start
        print(f"[study] {path.name} done in {seconds / 60:.1f} min", flush=True)
        if timings is not None:
            _log_timing(timings, path.name, label or profile, seconds)
    return done


def ship(profile: str = SHIPPED_PROFILE, runs_dir=None, progress: bool = True) -> list[Path]:
    """Put a trained study's models in the zoo (lic_utils.zoo.export_profile): each with its Kodak
    numbers on the profile's images (the study's cache, so no model is measured twice), and the
    profile's `zoo_default` family's model nearest 0.2 bpp as compress's default."""
    from lic_utils import evaluate, zoo

    p = get_profile(profile)
    if not p.zoo_default:
        raise LicError(f"the {p.name} profile ships no models (its row has no zoo_default)")
    images = evaluate.kodak_images(p.images, p.crop)
    cache = profile_dirs(p.name)[0] / "learned_kodak.csv"
    return zoo.export_profile(p.name, images, p.zoo_default, runs_dir=runs_dir, cache=cache,
                              progress=progress)


MODEL_CACHES = ("learned_kodak.csv", "matched_kodak.csv")  # rows keyed by model (lic_utils.evaluate)


def prune_caches(profile: str | Profile, results_dir=None, runs_dir=None) -> dict[str, int]:
    """Drop the rows of the model caches whose model is not a run of the profile's grid (a model of an
    earlier grid, e.g. a λ no longer trained), so that the caches describe this study alone: notebook
    09 and the README read them whole. Rows of a grid run with other weights are the evaluation's
    business (it measures them again). Returns the rows dropped per file."""
    import pandas as pd

    from lic_utils.evaluate import read_rows
    from lic_utils.files import atomic_to_csv

    names = set(run_names(profile, runs_dir))
    dropped = {}
    for name in MODEL_CACHES:
        path = Path(results_dir or profile_dirs(get_profile(profile).name)[0]) / name
        if not path.exists():
            continue
        rows = read_rows(path)
        keep = rows["model"].isin(names)
        dropped[name] = int((~keep).sum())
        if dropped[name]:
            atomic_to_csv(rows[keep], path)
    return dropped


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


# --- `make figures`: figures and the README's results section from results/ alone -----------------
def redraw_figures(results_dir=None, figures_dir=None, profile: str = "cpu") -> list[Path]:
    """Redraw the RD figures from the tables in results/ alone (no training, no codec runs), with
    the same figure functions as the notebooks; `profile` names the ablation λ of figure 07."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from lic_utils import compare, evaluate, plots
    from lic_utils.files import FIGURES_DIR

    results_dir, figures_dir = Path(results_dir or RESULTS_DIR), Path(figures_dir or FIGURES_DIR)
    baselines_csv, learned_csv = results_dir / "baselines_kodak.csv", results_dir / "learned_kodak.csv"
    if not baselines_csv.exists():
        raise LicError(f"{baselines_csv} is missing: run `make study` (or notebook 00) first")
    baselines = pd.read_csv(baselines_csv)
    written = [plots.baselines_figure(evaluate.mean_curve(baselines), figures_dir)]
    if learned_csv.exists():
        learned = evaluate.read_rows(learned_csv)
        points = evaluate.learned_points(learned)
        curves = evaluate.mean_curve(baselines[baselines.image.isin(learned.image.unique())])
        written += [plots.learned_figure(points, curves, figures_dir),
                    plots.loss_ablation_figure(points, curves, figures_dir)]
        lmbda = get_profile(profile).ablation_lmbda
        ablation = compare.ablation_points(points, lmbda)
        written += [plots.perception_distortion_figure(ablation, figures_dir),
                    plots.prior_ablation_figure(ablation, lmbda, figures_dir),
                    plots.summary_figure(points, curves, figures_dir)]
        if (results_dir / "matched_kodak.csv").exists():
            matched = evaluate.read_rows(results_dir / "matched_kodak.csv")
            written.append(plots.matched_figure(points, matched, figures_dir))
    plt.close("all")
    return written


def _markers(block: str) -> tuple[str, str]:
    return (f"<!-- BEGIN {block} (written by `make figures` from results/) -->", f"<!-- END {block} -->")


# the README's two computed blocks: the headline near its top, the details in its Results section
README_HEADLINE_BEGIN, README_HEADLINE_END = _markers("study-headline")
README_BEGIN, README_END = _markers("study-results")


def readme_headline(results_dir=None, figures_dir=None) -> str:
    """Markdown for the README's top: the key figure, the original claims' verdicts
    (summary_claims.csv) and every curve at 0.2 bpp (summary_at.csv)."""
    from lic_utils.files import FIGURES_DIR

    results_dir = Path(results_dir or RESULTS_DIR)
    key_figure = Path(figures_dir or FIGURES_DIR) / "09_summary_rd.png"
    parts = ["![The study in one figure](figures/09_summary_rd.png)", ""] \
        if key_figure.exists() else []
    parts += _claims_section(results_dir / "summary_claims.csv")
    parts += _at_section(results_dir / "summary_at.csv")
    return "\n".join(parts).rstrip() + "\n"


def readme_results(results_dir=None, profile: str = COMMITTED_PROFILE, zoo_folder=None) -> str:
    """Markdown for the README's Results section: the shipped models (zoo cards), where the learned
    models stand against each codec (summary_standing.csv and summary_verdicts.csv; all written by
    compare.summarize in notebook 09) and how long each kind of study and each of its steps took
    (study_timings.csv)."""
    results_dir = Path(results_dir or RESULTS_DIR)
    parts = _zoo_section(zoo_folder)
    parts += _standing_section(results_dir / "summary_standing.csv")
    parts += _verdicts_section(results_dir / "summary_verdicts.csv")
    parts += _sittings_section(results_dir / "study_timings.csv", zoo_folder)
    parts += _timings_section(results_dir / "study_timings.csv", profile)
    return "\n".join(parts).rstrip() + "\n"


def _zoo_section(folder=None) -> list[str]:
    """The shipped models as the cards say (zoo.table): what `python -m lic_utils models` lists and
    `models --verify` checks against a fresh evaluation."""
    import pandas as pd

    from lic_utils import zoo

    t = zoo.table(folder)
    if t.empty:
        return []
    lines = [f"The shipped models (`zoo/`, {len(t)} file{'s' if len(t) != 1 else ''} of weights, {t.MB.sum():.0f} MB in all; "
             "Kodak, 24 images, real `.lic` files; * the default of `compress`, `--quality K` walks "
             "its family from fewest bits):", "",
             "| model | quality | bpp | PSNR (dB) | MS-SSIM | LPIPS ↓ | SSIMULACRA2 ↑ |",
             "|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        q = f"{int(r.quality)}" if pd.notna(r.quality) else ""
        s2 = f"{r.ssimulacra2:.1f}" if pd.notna(r.ssimulacra2) else "–"
        lines.append(f"| {r.model}{' *' if r.default else ''} | {q} | {r.bpp:.3f} | {r.psnr:.2f} | "
                     f"{r.ms_ssim:.4f} | {r.lpips:.3f} | {s2} |")
    return lines + [""]


# what each timing label's sitting is, for the README (study_timings.csv's `profile` column)
SITTINGS = {"shipped": "`make study`: the shipped models read, nothing trained",
            "reference": "`make reference`: the shipped models trained from scratch, then read",
            "cpu": "`make study PROFILE=cpu`: the laptop study trained from scratch, then read"}


def _sittings_section(path: Path, folder=None) -> list[str]:
    """How long each kind of `make study` took here (study_timings.csv), the reference's base run
    from its zoo card when it was trained in a sitting of its own."""
    import pandas as pd

    from lic_utils import zoo

    t = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["profile", "notebook", "seconds"])
    shipped_base = [c for c in zoo.cards(folder) if c["family"] == "base"]
    lines = []
    for label, what in SITTINGS.items():
        rows = t[t.profile == label]
        if not len(rows):
            continue
        minutes, parts = rows.seconds.sum() / 60, []
        base = shipped_base if label == SHIPPED_PROFILE else []
        if base and not rows.notebook.str.startswith("train_all: base").any():
            minutes += base[0]["training"]["minutes"]
            parts.append(f"base run {base[0]['training']['minutes']:.0f} min (its card)")
        trained = rows[rows.notebook.str.startswith("train_all")].seconds.sum() / 60
        if trained:
            parts.append(f"training {trained:.0f} min")
        parts.append(f"notebooks {rows[rows.notebook.str.endswith('.ipynb')].seconds.sum() / 60:.0f} min")
        lines.append(f"| {what} | **{minutes:.0f} min** | {'; '.join(parts)} |")
    if not lines:
        return []
    return ["Wall time on 2 CPU cores, measured (`results/study_timings.csv`):", "",
            "| command | minutes | of which |", "|---|---|---|", *lines, ""]


def _claims_section(path: Path) -> list[str]:
    import pandas as pd

    if not path.exists():
        return []
    c = pd.read_csv(path, keep_default_na=False)
    if "verdict" not in c:  # a table written before the claims were tested
        return []
    lines = ["The original study's claims, each tested by the measurement that decides it (notebook "
             "09: equal bpp, seed noise, SSIMULACRA2 held out):", "",
             "| claim | verdict | measured |", "|---|---|---|"]
    for r in c.itertuples():
        codec = f" ({r.codec})" if r.codec else ""
        lines.append(f"| {r.claim}{codec} | **{r.verdict}** | {r.measured} |")
    return lines + [""]


STANDING_METRICS = (("psnr", "Δ PSNR", "+.2f"), ("lpips", "Δ LPIPS", "+.3f"),
                    ("ssimulacra2", "Δ SSIMULACRA2", "+.1f"))


def _at_section(path: Path, bpp: float = 0.2) -> list[str]:
    """Every mean RD curve read at `bpp` (summary_at.csv): the learned families, then the codecs."""
    import pandas as pd

    if not path.exists():
        return []
    at = pd.read_csv(path)
    at = at[(at["bpp"] == bpp) & at["psnr"].notna()]
    if at.empty:
        return []
    lines = [f"Every mean RD curve read at {bpp:g} bpp (Kodak, 24 images, real files; interpolated in "
             "log bpp between each curve's measured points):", "",
             "| curve | PSNR (dB) | MS-SSIM | LPIPS ↓ | SSIMULACRA2 ↑ |", "|---|---|---|---|---|"]
    for r in pd.concat([at[at["kind"] == "learned"], at[at["kind"] != "learned"]]).itertuples():
        name = r.curve if r.kind == "learned" else f"{r.curve} (classical)"
        s2 = f"{r.ssimulacra2:.1f}" if pd.notna(getattr(r, "ssimulacra2", float("nan"))) else "–"
        lines.append(f"| {name} | {r.psnr:.2f} | {r.ms_ssim:.4f} | {r.lpips:.3f} | {s2} |")
    return lines + [""]


def _standing_section(path: Path) -> list[str]:
    import pandas as pd

    if not path.exists():
        return ["*No summary table yet: run `make study`.*", ""]
    s = pd.read_csv(path).dropna(subset=["d_psnr"])
    bpps = sorted(s.bpp.unique())
    metrics = [m for m in STANDING_METRICS if f"d_{m[0]}" in s and s[f"d_{m[0]}"].notna().any()]
    names = " / ".join(name for _, name, _ in metrics)
    lines = ["The best learned curve minus each codec on Kodak (24 images, real files; mean RD "
             "curves interpolated at each bitrate, the best learned curve taken per metric; PSNR "
             "in dB; LPIPS is lower-is-better, so a negative Δ LPIPS favours the learned model; – "
             "where a curve does not reach the bitrate):", "",
             "| codec | " + " | ".join(f"{b:g} bpp: {names}" for b in bpps) + " |",
             "|---|" + "---|" * len(bpps)]
    for codec, g in s.groupby("codec"):
        cells = {r["bpp"]: " / ".join(f"{r[f'd_{m}']:{fmt}}" if pd.notna(r[f"d_{m}"]) else "–"
                                      for m, _, fmt in metrics) for r in g.to_dict("records")}
        lines.append(f"| {codec} | " + " | ".join(cells.get(b, "–") for b in bpps) + " |")
    return lines + [""]


def _verdicts_section(path: Path) -> list[str]:
    import pandas as pd

    if not path.exists():
        return []
    lists = ("wins_psnr", "loses_psnr", "wins_lpips", "loses_lpips")
    v = pd.read_csv(path, converters={c: ast.literal_eval for c in lists})
    lines = ["At equal bytes, image by image (every learned model point against each codec set "
             "per image to the same file size; a win is being better on more than half of the "
             "images):", ""]
    for codec, g in v.groupby("codec"):
        records = g.to_dict("records")
        said = []
        for q, unit, fmt in (("psnr", " dB", "+.2f"), ("lpips", "", "+.3f")):
            wins = [f"{r['family']} at {b:.2f} bpp" for r in records for b in r[f"wins_{q}"]]
            n = sum(len(r[f"wins_{q}"]) + len(r[f"loses_{q}"]) for r in records)
            said.append(f"{q.upper()} better at {len(wins)} of {n} points"
                        + (f" ({'; '.join(wins)})" if wins else "")
                        + f", Δ {g[f'd_{q}_min'].min():{fmt}} to {g[f'd_{q}_max'].max():{fmt}}{unit}")
        lines.append(f"* **{codec}**: " + "; ".join(said) + ".")
    return lines + [""]


def _timings_section(path: Path, profile: str) -> list[str]:
    import pandas as pd

    t = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["profile"])
    t = t[t.profile == profile]
    if not len(t):
        return []
    lines = [f"Wall time of the `{profile}` study on 2 CPU cores, step by step "
             "(`results/study_timings.csv`):", "", "| step | minutes | finished |", "|---|---|---|"]
    lines += [f"| {r.notebook} | {r.seconds / 60:.1f} | {r.finished} |" for r in t.itertuples()]
    return lines + [f"| **total** | **{t.seconds.sum() / 60:.1f}** | |", ""]


def update_readme(readme=None, results_dir=None, profile: str = COMMITTED_PROFILE, figures_dir=None,
                  zoo_folder=None) -> Path:
    """Rewrite the README's two computed blocks (the headline, the results) in place from results/."""
    from lic_utils.files import REPO, atomic_write_text

    readme = Path(readme or REPO / "README.md")
    text = readme.read_text()
    blocks = ((README_HEADLINE_BEGIN, README_HEADLINE_END), (README_BEGIN, README_END))
    for begin, end in blocks:  # before any table is read
        if begin not in text or end not in text:
            raise LicError(f"{readme} has no results section: add the lines {begin!r} and {end!r}")
    sections = (readme_headline(results_dir, figures_dir), readme_results(results_dir, profile, zoo_folder))
    for (begin, end), section in zip(blocks, sections):
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + section + end + tail
    atomic_write_text(readme, text)
    return readme
