"""The rendered study (`make book`): static HTML that opens from file:// with no server and no kernel.

- `notebooks/NN_name.html`: each executed notebook through nbconvert, its figures embedded.
- `compare.html`: a few Kodak images × codec × bitrate level. Each decode is a real file of the
  matched-bitrate evaluation (lic_utils.visual: the learned models' .lic files, every classical
  codec set to the largest file not above the MSE model's at each λ), shown over the original
  with a before/after slider, with its bpp, PSNR, MS-SSIM, LPIPS and SSIMULACRA2.
- `index.html`: the series in order, the key figure, the verdict table, and the comparison page.

Images are files beside the pages and the comparison's numbers are inline JSON, so nothing is
fetched at run time (browsers refuse fetch() from file://).
"""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lic_utils.files import FIGURES_DIR, REPO, RESULTS_DIR, repo_relative

SITE_DIR = REPO / "site"
COMPARE_IMAGES = ("kodim23", "kodim05", "kodim15")  # parrots (notebook 08), the example, a face
KEY_FIGURE = "09_summary_rd.png"
TITLE = "Learned image compression with perceptual losses"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:0 auto;
padding:0 1rem 3rem;color:#222;line-height:1.5}
nav{padding:.6rem 0;border-bottom:1px solid #ddd;margin-bottom:1rem}
nav a{margin-right:1rem}
table{border-collapse:collapse;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}
th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
tr.selected td{background:#fff3c4;font-weight:600}
table.prose td,table.prose th{text-align:left;vertical-align:top}
.controls label{margin-right:1.2rem}
.viewer{position:relative;display:inline-block;line-height:0;max-width:100%;cursor:ew-resize}
.viewer img{max-width:100%;height:auto;display:block}
#decoded{position:absolute;top:0;left:0;width:100%;height:100%}
.frame{overflow:auto;max-width:100%}
.viewer.zoomed img{max-width:none;width:100%;image-rendering:pixelated}
#handle{position:absolute;top:0;bottom:0;width:2px;background:#fff;box-shadow:0 0 3px #000;pointer-events:none}
.tag{position:absolute;top:.4rem;padding:.1rem .4rem;background:rgba(0,0,0,.6);color:#fff;
font-size:.8rem;line-height:1.3}
#slider{width:100%;max-width:768px;display:block}
img.figure{max-width:100%}
"""


def _page(title: str, body: str, nav: str = "") -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def _nav(prefix: str = "") -> str:
    return (f'<a href="{prefix}index.html">The study</a>'
            f'<a href="{prefix}compare.html">Compare codecs at equal bytes</a>')


# --- the comparison page ----------------------------------------------------------------------------
def comparison_models(profile: str = "cpu", runs_dir=None) -> pd.DataFrame:
    """The models the comparison page shows (name, variant, lmbda, checkpoint): the zoo's
    MSE, +MS-SSIM and +LPIPS families when the zoo has them, else the profile's finished main-grid
    runs (its RD curves)."""
    from lic_utils import study, zoo
    from lic_utils.errors import LicError
    from lic_utils.run_folder import run_status

    cards = [c for c in zoo.cards() if c["model"]["prior"] == "factorized" and c["family"] in ("mse", "msssim", "lpips")]
    if cards:
        return pd.DataFrame({"name": [c["name"] for c in cards], "variant": [c["family"] for c in cards],
                             "lmbda": [c["lmbda"] for c in cards], "checkpoint": [c["path"] for c in cards]})
    rows = []
    for spec in study.sweeps(profile, runs_dir, "main"):
        for name, point, _ in spec.runs():
            run = Path(spec.out) / name
            if run_status(run) == "done":
                rows.append({"name": name, "variant": point["variant"], "lmbda": point["lmbda"],
                             "checkpoint": str(run / "checkpoint.pt")})
    if not rows:
        raise LicError(f"no trained model to compare: the zoo is empty and no run of the {profile} "
                       f"study has finished (make study PROFILE={profile})")
    return pd.DataFrame(rows)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def comparison_data(models: pd.DataFrame, images=COMPARE_IMAGES, out_dir: Path = SITE_DIR,
                    part: float | None = None, progress: bool = True) -> dict:
    """Code each image with every model and, at each λ, every classical codec matched to the MSE
    model's file; write the original and each decode as PNG under out_dir/compare/IMAGE/, and
    return the page's data: {image: {original, width, height, levels: {level: {label: entry}}}}.
    `part`: only the centred part of each image, that fraction of each side (quick tests)."""
    from tqdm.auto import tqdm

    from lic_utils import data, visual

    out = {}
    for name in tqdm(list(images), desc="comparison page", unit="image", disable=not progress):
        img = visual.load_image(name, part)
        learned, decodes = visual.learned_files(models, img, name)
        table, decodes = visual.matched_files(learned, decodes, img, name, target_bpp=0.2)
        entries = visual.viewer_entries(table, decodes)
        folder = out_dir / "compare" / name
        folder.mkdir(parents=True, exist_ok=True)
        data.save_png(img, folder / "original.png")
        levels: dict = {}
        for (label, level), e in entries.items():
            file = f"{_slug(label)}-{_slug(level)}.png"
            data.save_png(e["image"], folder / file)
            levels.setdefault(level, {})[label] = {
                "src": f"compare/{name}/{file}",
                **{k: _number(e[k]) for k in ("bpp", "psnr", "ms_ssim", "lpips", "ssimulacra2", "target_bpp")},
                "below_floor": bool(e["below_floor"])}
        h, w, _ = img.shape
        out[name] = {"original": f"compare/{name}/original.png", "width": w, "height": h, "levels": levels}
    return out


def _number(v):
    v = float(v)
    return round(v, 5) if np.isfinite(v) else None


COMPARE_BODY = """
<h1>Compare codecs at equal bytes</h1>
<p>Every picture below is a real file, decoded: the learned codec's own <code>.lic</code> files, and
each classical codec set to the largest file not above the MSE model's at the same λ. Drag the
slider (or the image) to move between the <b>decoded</b> file (left) and the <b>original</b> (right).
The table lists every file at this bitrate; click a row to show it.</p>
<div class="controls">
<label>Image <select id="image"></select></label>
<label>Bitrate <select id="level"></select></label>
<label>Codec <select id="codec"></select></label>
<label>Zoom <select id="zoom"><option value="1">1×</option><option value="2">2×</option>
<option value="3">3×</option></select></label>
</div>
<p id="caption"></p>
<div class="frame"><div class="viewer" id="viewer">
<img id="original" alt="original">
<img id="decoded" alt="decoded">
<div id="handle"></div>
<span class="tag" style="left:.4rem">decoded</span><span class="tag" style="right:.4rem">original</span>
</div></div>
<input type="range" id="slider" min="0" max="100" value="50" aria-label="decoded | original">
<table id="metrics"><thead><tr><th>codec</th><th>bpp</th><th>PSNR (dB)</th><th>MS-SSIM</th>
<th>LPIPS ↓</th><th>SSIMULACRA2 ↑</th></tr></thead><tbody></tbody></table>
<script>const DATA = __DATA__;</script>
<script>
const $ = id => document.getElementById(id);
function fill(sel, names, keep) {
  sel.innerHTML = "";
  for (const n of names) { const o = document.createElement("option"); o.value = o.textContent = n; sel.appendChild(o); }
  if (names.includes(keep)) sel.value = keep;
}
function fmt(v, d) { return v === null || v === undefined ? "–" : v.toFixed(d); }
function slide() {
  const p = Number($("slider").value);
  $("decoded").style.clipPath = `inset(0 ${100 - p}% 0 0)`;
  $("handle").style.left = p + "%";
}
function show() {
  const im = DATA[$("image").value], files = im.levels[$("level").value], e = files[$("codec").value];
  const zoom = Number($("zoom").value);
  $("viewer").style.width = zoom > 1 ? (im.width * zoom) + "px" : "";
  $("viewer").classList.toggle("zoomed", zoom > 1);
  $("original").src = im.original;
  $("decoded").src = e.src;
  $("caption").textContent = `${$("codec").value}: ${fmt(e.bpp, 3)} bpp` +
    (e.below_floor ? ` (this codec cannot go as low as ${fmt(e.target_bpp, 3)} bpp: its smallest file)` : "");
  const body = $("metrics").tBodies[0];
  body.innerHTML = "";
  for (const [label, f] of Object.entries(files)) {
    const tr = body.insertRow();
    tr.className = label === $("codec").value ? "selected" : "";
    for (const v of [label, fmt(f.bpp, 3), fmt(f.psnr, 2), fmt(f.ms_ssim, 4), fmt(f.lpips, 3), fmt(f.ssimulacra2, 1)])
      tr.insertCell().textContent = v;
    tr.onclick = () => { $("codec").value = label; show(); };
  }
  slide();
}
function pickImage() {
  const levels = Object.keys(DATA[$("image").value].levels);
  fill($("level"), levels, $("level").value || levels[Math.floor(levels.length / 2)]);
  pickLevel();
}
function pickLevel() {
  const files = Object.keys(DATA[$("image").value].levels[$("level").value]);
  fill($("codec"), files, $("codec").value);
  show();
}
fill($("image"), Object.keys(DATA), null);
$("image").onchange = pickImage;
$("level").onchange = pickLevel;
$("codec").onchange = show;
$("zoom").onchange = show;
$("slider").oninput = slide;
$("viewer").onpointermove = ev => {
  if (!ev.buttons) return;
  const r = $("viewer").getBoundingClientRect();
  $("slider").value = Math.round(100 * (ev.clientX - r.left) / r.width);
  slide();
};
pickImage();
</script>
"""


def write_comparison(data_: dict, out_dir: Path = SITE_DIR) -> Path:
    """out_dir/compare.html from comparison_data's result."""
    payload = json.dumps(data_, separators=(",", ":")).replace("</", "<\\/")
    body = COMPARE_BODY.replace("__DATA__", payload)
    path = Path(out_dir) / "compare.html"
    path.write_text(_page(f"Compare codecs at equal bytes · {TITLE}", body, _nav()))
    return path


# --- the notebooks and the index ------------------------------------------------------------------
def executed_notebooks(profile: str = "cpu", folder: Path | None = None) -> list[Path]:
    """The profile's executed series (study.executed_dir: the committed notebooks for the committed
    profile), or the notebooks in `folder`."""
    from lic_utils import study

    return sorted(Path(folder or study.executed_dir(profile)).glob("[0-9][0-9]_*.ipynb"))


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def write_notebooks(paths: list[Path], out_dir: Path = SITE_DIR) -> list[tuple[str, str]]:
    """Each notebook as out_dir/notebooks/NAME.html (nbconvert, outputs and figures embedded);
    returns (file, title) per notebook."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    folder = Path(out_dir) / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        nav = f'<nav style="font-family:sans-serif;padding:.5rem 1rem">{_nav("../")}</nav>'
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
        out = folder / f"{path.stem}.html"
        out.write_text(repo_relative(body))  # (notebooks executed before paths were made relative)
        done.append((f"notebooks/{out.name}", _title(nb) or path.stem))
    return done


def _verdicts_table(results: Path) -> str:
    path = results / "summary_claims.csv"
    if not path.exists():
        return ""
    claims = pd.read_csv(path)
    cols = [c for c in ("claim", "codec", "measured", "verdict") if c in claims]
    return "<h2>The original claims, tested</h2>\n" + claims[cols].to_html(index=False, na_rep="", border=0, classes="prose")


def write_index(notebooks: list[tuple[str, str]], out_dir: Path = SITE_DIR, results: Path = RESULTS_DIR,
                figures: Path = FIGURES_DIR) -> Path:
    """out_dir/index.html: the series, the key figure and the verdicts."""
    out_dir = Path(out_dir)
    parts = [f"<h1>{html.escape(TITLE)}</h1>",
             "<p>A numbered series of notebooks that builds a small neural image codec, trains it with "
             "L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS, and compares it with JPEG, WebP, AVIF, HEIC, "
             "JPEG 2000 and JPEG XL at matched bitrates, with real files, on Kodak. "
             '<a href="compare.html">Compare the codecs yourself, image by image.</a></p>']
    key = Path(figures) / KEY_FIGURE
    if key.exists():
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copy2(key, out_dir / "figures" / key.name)
        parts.append(f'<img class="figure" src="figures/{key.name}" alt="rate–distortion summary">')
    parts.append("<h2>The notebooks</h2>\n<ol start=\"0\">" + "".join(
        f'<li><a href="{html.escape(href)}">{html.escape(title)}</a></li>' for href, title in notebooks) + "</ol>")
    parts.append(_verdicts_table(Path(results)))
    path = out_dir / "index.html"
    path.write_text(_page(TITLE, "\n".join(parts), _nav()))
    return path


def build(out_dir=None, profile: str = "cpu", notebooks_dir=None, images=COMPARE_IMAGES,
          models: pd.DataFrame | None = None, part: float | None = None, progress: bool = True) -> Path:
    """The whole site in out_dir (default site/); returns its index.html."""
    from lic_utils import study
    from lic_utils.errors import LicError

    out_dir = Path(out_dir or SITE_DIR)
    paths = executed_notebooks(profile, notebooks_dir)
    if not paths:
        raise LicError(f"no executed notebooks of the {profile} profile to render: run make study "
                       f"PROFILE={profile} first")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = write_notebooks(paths, out_dir)
    models = comparison_models(profile) if models is None else models
    write_comparison(comparison_data(models, images, out_dir, part, progress), out_dir)
    results, figures = study.profile_dirs(profile)
    return write_index(pages, out_dir, results, figures)
