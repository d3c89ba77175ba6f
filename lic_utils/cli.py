"""The study's command line: `python -m lic_utils COMMAND …` (also installed as `lic`).

Each command is a pair of small functions below: `_args_NAME(parser)` declares its arguments and
`_run_NAME(args)` calls into the module that does the work. Heavy modules are imported inside these
functions, and only the named command's arguments are declared, so that `--help` and light commands
stay instant. A LicError becomes one line on stderr and exit code 1, and so do the failures a
command cannot foresee: running out of memory, and reads or writes the system refuses.
"""
from __future__ import annotations

import argparse
import json
import sys

from lic_utils.errors import LicError


def _print_json(obj, written: str | None = None) -> None:
    """The command's summary on stdout; a failed write says that it was stdout's (and which output
    file, `written`, was finished before it)."""
    try:
        sys.stdout.write(json.dumps(obj, indent=2, default=float) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        after = f" ({written} was written)" if written else ""
        raise LicError(f"cannot write the summary to stdout: {e.strerror or e}{after}") from None


STDIO = "-"  # as an input: stdin; as an output: stdout


def _read_input(path: str):
    """A command's input: a path, or for "-" the bytes of stdin as a file (named "stdin" in messages)."""
    import io

    return (io.BytesIO(sys.stdin.buffer.read()), "stdin") if path == STDIO else (path, path)


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", metavar="COLOR",
                   help="composite a transparent image over this colour (white, #rrggbb); without it "
                        "transparency is refused, as a .lic file does not keep it")
    p.add_argument("--first-frame", action="store_true",
                   help="code the first frame of an animation (without it animations are refused)")


def _print_notes(notes: list) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


# --- data -------------------------------------------------------------------------------------------
def _args_data(p: argparse.ArgumentParser) -> None:
    from lic_utils import data

    p.add_argument("action", choices=["fetch", "verify"],
                   help="fetch: resolve and copy/download; verify: check every sha256")
    p.add_argument("set", nargs="?", default="all", choices=[*data.SETS, "all"])


def _run_data(args) -> int:
    from lic_utils import data

    sets = None if args.set == "all" else [args.set]
    if args.action == "fetch":
        paths = data.fetch(sets)
        print(f"{len(paths)} files present and verified in {data.DATA_DIR}")
    else:
        n = data.verify(sets)
        print(f"{n} files verified (sha256 matches the manifest)")
    return 0


# --- metrics ----------------------------------------------------------------------------------------
def _args_metrics(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="reference image (any format Pillow reads)")
    p.add_argument("dist", help="distorted image, or a compressed file (.jpg/.webp/.avif/.heic/.jp2/.jxl/.lic): then bpp is added")
    p.add_argument("--checkpoint", help="the model that wrote DIST when it is a .lic file "
                                        "(default: the zoo model named by the file's header)")
    p.add_argument("--background", metavar="COLOR",
                   help="compare transparent images composited over this colour (as compress --background)")


def _run_metrics(args) -> int:
    from lic_utils import metrics

    _print_json(metrics.compare_files(args.ref, args.dist, checkpoint=args.checkpoint, background=args.background))
    return 0


# --- baseline ---------------------------------------------------------------------------------------
def _args_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image to compress (any format Pillow reads)")
    from lic_utils.codecs import CODECS

    p.add_argument("--codec", required=True, choices=list(CODECS), help="the classical codec")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--bpp", type=float, help="target bitrate: the largest real file not above it")
    target.add_argument("--quality", type=float, help="the codec's own setting (jpeg2000: its target bpp)")
    p.add_argument("-o", "--output", required=True, help="file to write; the codec's extension is added if missing")
    _image_options(p)


def _run_baseline(args) -> int:
    from lic_utils import codecs, data, metrics
    from lic_utils.files import atomic_write_bytes, check_output

    codec = codecs.get_codec(args.codec)
    out = codecs.output_path(args.output, codec)
    check_output(out, args.image)
    notes = []
    img = data.load_rgb(args.image, background=args.background, first_frame=args.first_frame, notes=notes)
    _print_notes(notes)
    if args.bpp is not None:
        r = codecs.match_bitrate(img, codec, args.bpp)
        quality, blob, decoded, below_floor = r.quality, r.data, r.decoded, r.below_floor
    else:
        quality = codec.check_quality(args.quality)
        blob = codec.encode(img, quality)
        decoded, below_floor = codec.decode(blob), False
    scores = metrics.evaluate_arrays(img, decoded)
    atomic_write_bytes(out, blob)
    h, w, _ = img.shape
    _print_json({
        "file": str(out), "codec": codec.name, "quality": quality, "bytes": len(blob),
        "bpp": codecs.bpp(len(blob), h, w), "target_bpp": args.bpp, **scores, "below_floor": below_floor,
    }, written=str(out))
    return 0


# --- train / sweep ----------------------------------------------------------------------------------
TRAIN_FLAGS = ("prior", "quantizer", "lmbda", "beta", "gamma", "steps", "lr", "lr_schedule", "batch",
               "crop", "device", "seed")


def _args_train(p: argparse.ArgumentParser) -> None:
    from lic_utils import config, models, profiles

    p.add_argument("--profile", choices=list(profiles.PROFILES),
                   help="base settings (default: the config file's `profile`, else cpu)")
    p.add_argument("--config", help="YAML or JSON file of training options, applied over the profile")
    p.add_argument("--prior", choices=models.PRIORS)
    p.add_argument("--quantizer", choices=models.QUANTIZERS)
    p.add_argument("--lmbda", type=float, help="rate weight λ in L = λ·R + MSE + … (larger: fewer bits)")
    p.add_argument("--beta", type=float, help="weight of 1 − MS-SSIM")
    p.add_argument("--gamma", type=float, help="weight of LPIPS")
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-schedule", choices=config.SCHEDULES, help="after a linear warm-up")
    p.add_argument("--batch", type=int, help="crops per step (per process under torchrun)")
    p.add_argument("--crop", type=int)
    p.add_argument("--device", help="auto (cuda → mps → cpu), cpu, cuda, …")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training option, value in YAML syntax (repeatable), "
                        "e.g. --set warmup=200")
    p.add_argument("--out", required=True,
                   help="run folder, e.g. runs/NAME (resumed if interrupted, skipped if done)")
    p.add_argument("--max-minutes", type=float,
                   help="stop after this many minutes with a checkpoint; the same command resumes it")


def _parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LicError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _run_train(args) -> int:
    from lic_utils import config, train

    options = {**{k: getattr(args, k) for k in TRAIN_FLAGS}, **_parse_sets(args.set)}
    if args.config:
        cfg = config.TrainConfig.from_file(args.config, profile=args.profile, **options)
    else:
        cfg = config.TrainConfig.for_profile(args.profile or "cpu", **options)
    limit = [train.TimeLimit(args.max_minutes)] if args.max_minutes is not None else []
    result = train.train(cfg, args.out, callbacks=limit)
    if result["status"] == "stopped":
        print(f"stopped at step {result['steps']} of {cfg.steps} after {args.max_minutes:g} min; "
              "run the same command to resume")
    return 0


def _args_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config",
                   help="sweep YAML: profile, out, priors, variants {name: {beta, gamma}}, lmbdas, overrides")
    p.add_argument("--only", nargs="*", help="train only these run names")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, one process each (2 on 2 CPU cores: ≈1.2× the throughput)")
    p.add_argument("--no-progress", action="store_true")


def _run_sweep(args) -> int:
    from lic_utils import sweeps

    df = sweeps.sweep(args.config, progress=not args.no_progress, only=args.only, workers=args.workers)
    shown = ["name", "status", "steps", "train_bpp", "train_psnr", "val_bpp", "val_psnr"]
    print(df[shown].to_string(index=False))
    return 0


# --- study ------------------------------------------------------------------------------------------
def _args_study(p: argparse.ArgumentParser) -> None:
    from lic_utils.profiles import PROFILES

    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="train this profile's models (resuming, reusing finished runs) and run the series "
                        "with them (default: train nothing, read the zoo's shipped models: the "
                        "reference profile)")
    p.add_argument("--only", nargs="*",
                   help="run only notebooks whose name starts with one of these (e.g. 00 05)")
    p.add_argument("--no-pretrain", action="store_true",
                   help="do not train the study's runs up front "
                        "(the notebooks then train what they need, one at a time)")


def _run_study(args) -> int:
    from lic_utils import study, zoo
    from lic_utils.files import RUNS_DIR

    shipped = args.profile is None  # the zoo's models, installed as finished runs: no training
    profile = args.profile or study.SHIPPED_PROFILE
    runs_dir = study.SHIPPED_RUNS if shipped else None
    label = "shipped" if shipped else profile  # the timing table's
    if not args.only:
        study.start_timings(label)  # the timing table then describes this sitting alone
        for name, n in study.prune_caches(profile).items():  # models of another grid
            if n:
                print(f"[study] {name}: {n} rows of models outside the {profile} grid dropped", flush=True)
    if shipped:
        n = zoo.install(profile, runs_dir)
        print(f"[study] the zoo's {len(zoo.shipped_models(profile))} models of the {profile} study in "
              f"{runs_dir} ({n} installed now); nothing is trained", flush=True)
    elif not args.only and not args.no_pretrain:
        study.train_all(profile)  # the whole grid, runs side by side; the notebooks reuse them
    # the shipped profile's notebooks read the zoo unless given runs/ (study.setup): retraining gives it
    study.run_notebooks(profile=profile, only=args.only, label=label,
                        parameters=None if shipped else {"runs_dir": str(RUNS_DIR)})
    if not shipped and profile == study.SHIPPED_PROFILE and not args.only:
        print(f"[study] shipping the {profile} study's models to {zoo.zoo_dir()}", flush=True)
        study.ship(profile)
    if profile == study.COMMITTED_PROFILE:  # the committed results are its
        print("updated", study.update_readme())
    return 0


# --- evaluate ---------------------------------------------------------------------------------------
def _args_evaluate(p: argparse.ArgumentParser) -> None:
    from lic_utils.codecs import CODECS

    p.add_argument("runs", nargs="+", help="run folders (with checkpoint.pt) or checkpoint files")
    p.add_argument("--images", type=int, default=None,
                   help="only the first N Kodak images (default: all 24)")
    p.add_argument("--results", default=None, help="folder of the CSV tables (default: results/)")
    p.add_argument("--codecs", nargs="*", default=None, choices=list(CODECS),
                   help="classical codecs to match (default: all five)")
    p.add_argument("--no-matched", action="store_true",
                   help="skip the matched-bitrate classical codecs")


def _run_evaluate(args) -> int:
    from pathlib import Path

    from lic_utils import evaluate
    from lic_utils.files import RESULTS_DIR

    results = Path(args.results) if args.results else RESULTS_DIR
    images = evaluate.kodak_images(args.images)
    for run in args.runs:
        learned = evaluate.evaluate_model(run, images, cache=results / "learned_kodak.csv")
        model = {"model": learned["model"].iloc[0], "fingerprint": learned["fingerprint"].iloc[0]}
        means = learned[["bpp", "psnr", "ms_ssim", "lpips", "encode_ms", "decode_ms"]].mean()
        print(json.dumps({**model, "images": len(learned), **means.round(4).to_dict()}))
        if not args.no_matched:
            matched = evaluate.matched_codecs(learned, images, args.codecs,
                                              cache=results / "matched_kodak.csv")
            for codec, g in matched.groupby("codec"):
                means = g[["bpp", "psnr", "ms_ssim", "lpips"]].mean()
                print(json.dumps({"codec": codec, "at_bpp_of": model["model"],
                                  "below_floor": int(g["below_floor"].sum()),
                                  **means.round(4).to_dict()}))
    return 0


# --- the learned codec: .lic files ------------------------------------------------------------------
def _args_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="the full cards as JSON")
    p.add_argument("--verify", action="store_true",
                   help="evaluate every model again on Kodak (real files) and compare with its card")


def _run_models(args) -> int:
    from lic_utils import zoo

    if args.verify:
        checked = zoo.verify()
        bad = checked[~checked["match"]]
        print(checked.pivot(index="model", columns="measure", values="measured").to_string()
              if bad.empty else bad.to_string(index=False))
        print(f"{checked['model'].nunique()} models, {len(checked)} numbers: "
              + ("all match their cards" if bad.empty else f"{len(bad)} differ from their cards"))
        return 0 if bad.empty else 1
    if args.json:
        _print_json(zoo.cards())
        return 0
    df = zoo.table()
    if df.empty:
        raise zoo.no_models_error(None)
    df["default"] = df["default"].map({True: "*", False: ""})
    df["quality"] = [str(int(q)) if q == q and q is not None else "" for q in df["quality"]]  # NaN: off the ladder
    print(df.drop(columns=["fingerprint"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"Kodak, 24 images, real .lic files; * compress's default, quality 1 = fewest bits ({zoo.zoo_dir()})")
    return 0


def _model_choice(p: argparse.ArgumentParser, verb: str) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help=f"{verb} with this zoo model (python -m lic_utils models lists them)")
    which.add_argument("--quality", type=int, help="rung K of the default model's family, 1 = fewest bits")
    which.add_argument("--checkpoint", help="a model you trained (checkpoint.pt of a training run)")


def _args_compress(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image to compress (any format Pillow reads; - reads stdin)")
    p.add_argument("output", help="the .lic file to write (- writes stdout, and the summary to stderr)")
    _model_choice(p, "compress")
    _image_options(p)


def _run_compress(args) -> int:
    from lic_utils import bitstream, data, models, zoo
    from lic_utils.files import check_output

    if args.output != STDIO:
        check_output(args.output, args.input, bitstream.MAGIC, ".lic")
    if args.checkpoint:
        model, name = models.load_checkpoint(args.checkpoint), args.checkpoint
    else:
        card = zoo.choose(args.model, args.quality)
        model, name = zoo.load(card), card["name"]
    notes, (source, label) = [], _read_input(args.input)
    img = data.load_rgb(source, background=args.background, first_frame=args.first_frame, notes=notes,
                        name=label)
    _print_notes(notes)
    if args.output == STDIO:
        lic = bitstream.encode_image(model, data.to_tensor(img))
        _write_stdout(lic)
        size = len(lic)
    else:
        size = bitstream.write_lic(args.output, model, data.to_tensor(img))
    h, w, _ = img.shape
    summary = {"file": args.output, "model": name, "bytes": size, "bpp": size * 8 / (h * w), "height": h, "width": w}
    if args.output == STDIO:  # stdout holds the file
        print(json.dumps(summary, default=float), file=sys.stderr)
    else:
        _print_json(summary, written=args.output)
    return 0


def _args_decompress(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a .lic file (- reads stdin)")
    p.add_argument("output", help="the image to write, in the lossless format its extension names "
                                  "(.png, .tif, .bmp, .ppm, lossless .webp; - writes a PNG to stdout), "
                                  "tagged sRGB")
    p.add_argument("--checkpoint", help="the checkpoint of the model that wrote the file "
                                        "(default: the zoo model named by the file's header)")


def _run_decompress(args) -> int:
    import os

    from lic_utils import bitstream, data, zoo
    from lic_utils.files import check_output

    if args.output != STDIO:
        check_output(args.output, args.input)  # never over the input, whatever its extension
    fmt = "PNG" if args.output == STDIO else data.image_format(args.output)
    if args.output != STDIO:
        check_output(args.output, args.input, data.FORMAT_MAGIC[fmt], fmt)
    if args.input == STDIO:
        lic, label = sys.stdin.buffer.read(), "stdin"
    else:
        lic, label = bitstream.read_bytes(args.input), args.input
    x_hat = bitstream.decode_image(zoo.decoder_for_bytes(lic, label, args.checkpoint), lic)
    if args.output == STDIO:
        _write_stdout(data.encode_image_file(data.to_uint8(x_hat), fmt))
        return 0
    data.save_image(data.to_uint8(x_hat), args.output)
    if os.path.isfile(args.output) and args.output != "/dev/stdout":  # not after the image itself
        print(args.output)
    return 0


def _args_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a .lic file")
    p.add_argument("--checkpoint", help="the model that wrote it: adds its estimated bits (−log2 likelihood); "
                                        "found in the zoo when it is one of its models")


def _run_info(args) -> int:
    from lic_utils import bitstream, models, zoo

    if args.checkpoint:
        model = models.load_checkpoint(args.checkpoint)
    else:  # the zoo's model when it wrote the file: its estimated bits too
        card = zoo.writer_of(args.input)
        model = zoo.load(card) if card else None
    _print_json(bitstream.info_file(args.input, model))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def _args_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="model checkpoint (default: an untrained default model, as fast as a trained one)")
    p.add_argument("--images", type=int, default=24, help="the first N Kodak images (default: all 24)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="time each image this many times, keep the best")
    p.add_argument("--threads", type=_positive_int, default=2, help="torch CPU threads (default 2)")


def _run_bench(args) -> int:
    import torch

    from lic_utils import bitstream, data, evaluate, models

    torch.set_num_threads(args.threads)
    images = [(name, data.to_tensor(img)[0]) for name, img in evaluate.kodak_images(args.images)]
    if args.checkpoint:
        model = models.load_checkpoint(args.checkpoint)
    else:
        model = models.build_model()
        model.update(force=True)
    rows = bitstream.benchmark(model.eval(), images, repeats=args.repeats)
    print(f"{'image':10} {'encode_ms':>9} {'decode_ms':>9} {'bpp':>8} {'est_bpp':>8} {'overhead':>8}")
    for r in rows:
        over = 100 * (r["payload_bpp"] / r["estimated_bpp"] - 1) if r["estimated_bpp"] > 0 else float("nan")
        print(f"{r['image']:10} {r['encode_ms']:9.1f} {r['decode_ms']:9.1f} {r['bpp']:8.4f} {r['estimated_bpp']:8.4f} {over:7.2f}%")
    mean = {k: sum(r[k] for r in rows) / len(rows)
            for k in ("encode_ms", "decode_ms", "encode_cpu_ms", "decode_cpu_ms", "bpp", "payload_bpp", "estimated_bpp")}
    _print_json({"model": args.checkpoint or "untrained default", "config": model.config.to_dict(), "images": len(rows),
                 "threads": args.threads, **{f"mean_{k}": round(v, 4) for k, v in mean.items()},
                 "mean_total_ms": round(mean["encode_ms"] + mean["decode_ms"], 1),
                 "all_exact": all(r["exact"] for r in rows)})
    return 0


# --- figures ----------------------------------------------------------------------------------------
def _args_figures(p: argparse.ArgumentParser) -> None:
    from lic_utils.profiles import PROFILES

    p.add_argument("--results", default=None, help="folder of the tables (default: results/)")
    p.add_argument("--figures", default=None, help="folder of the figures (default: figures/)")
    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="the profile the tables come from (default: the committed results')")


def _run_figures(args) -> int:
    from lic_utils import study

    for path in study.redraw_figures(args.results, args.figures, args.profile or study.COMMITTED_PROFILE):
        print(path)
    if args.results is None:  # the committed results: the README's results section follows them
        print(study.update_readme())
    return 0


# --- the rendered study ----------------------------------------------------------------------------
def _args_book(p: argparse.ArgumentParser) -> None:
    from lic_utils.profiles import PROFILES

    p.add_argument("--out", default=None, help="folder of the site (default: site/)")
    p.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="whose executed notebooks the site shows, and whose trained runs the comparison "
                        "page shows when the zoo is empty (default: the committed study's)")


def _run_book(args) -> int:
    from lic_utils import site, study

    index = site.build(args.out, profile=args.profile or study.COMMITTED_PROFILE)
    print(f"open {index.resolve().as_uri()}")
    return 0


COMMANDS = {
    "data": (_args_data, _run_data, "fetch or verify the datasets and the LPIPS backbone"),
    "metrics": (_args_metrics, _run_metrics, "PSNR, MS-SSIM, LPIPS, SSIMULACRA2 (and bpp) of one image pair, as JSON"),
    "baseline": (_args_baseline, _run_baseline, "one image through a classical codec: real file, metrics as JSON"),
    "evaluate": (_args_evaluate, _run_evaluate, "real .lic files on Kodak, metrics, and classical codecs at the same bytes"),
    "figures": (_args_figures, _run_figures, "redraw the RD figures from results/ alone"),
    "study": (_args_study, _run_study, "run the numbered notebooks headless with papermill"),
    "book": (_args_book, _run_book, "the rendered study: HTML of the executed notebooks and a codec comparison page"),
    "train": (_args_train, _run_train, "train the learned codec (resumes interrupted runs; torchrun → DDP)"),
    "sweep": (_args_sweep, _run_sweep, "train a grid prior × loss variant × λ from a YAML file, keeping index.csv"),
    "models": (_args_models, _run_models, "the trained models shipped in zoo/, with their Kodak numbers"),
    "compress": (_args_compress, _run_compress, "compress an image to a .lic file (a zoo model, or your checkpoint)"),
    "decompress": (_args_decompress, _run_decompress, "decode a .lic file to a PNG (its zoo model, or your checkpoint)"),
    "info": (_args_info, _run_info, "header fields and sizes of a .lic file (and estimated bits, given its checkpoint)"),
    "bench": (_args_bench, _run_bench, "encode/decode ms, real and estimated bpp on Kodak images"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's arguments are declared (some import the tables
    their choices come from, e.g. lic_utils.models for `train`: other commands stay instant)."""
    parser = argparse.ArgumentParser(prog="python -m lic_utils", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only in (None, name):
            add_args(p)
        p.set_defaults(func=run)
    return parser


def _one_line_warnings(python_show):
    """warnings.showwarning for the CLI: a LicWarning as one line on stderr ("warning: …"), other
    warnings as Python shows them (`python_show`)."""
    from lic_utils.errors import LicWarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, LicWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            python_show(message, category, *args, **kwargs)

    return show


def main(argv: list[str] | None = None) -> int:
    import warnings

    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else ""
    args = build_parser(command).parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores showwarning afterwards
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.func(args) or 0)
    except LicError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of our output left (`| head`): end quietly, as cat does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e):  # torch's CPU OOM
            raise
        print("error: out of memory: use a smaller image, or free memory and retry", file=sys.stderr)
        return 1
    except OSError as e:  # a read or write no command foresaw: still one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check the path, its permissions and the free space",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
