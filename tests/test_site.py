"""The rendered study: notebook pages, and a comparison page that works from file:// in a real
headless browser (the system's Chromium through Selenium): its images load, and the slider and
the image, bitrate and codec choices change what is shown."""
import json
import re
import shutil

import nbformat
import pandas as pd
import pytest

from lic_utils import config, site, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A site from one fake executed notebook and three smoke models (MSE at two λ, +LPIPS at one),
    compared on the centred quarter of two Kodak images."""
    root = tmp_path_factory.mktemp("site")
    nbs = root / "executed"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 05 · Rate–distortion on Kodak\nSome prose."),
                nbformat.v4.new_code_cell("1 + 1", outputs=[nbformat.v4.new_output(
                    "execute_result", {"text/plain": "2"}, execution_count=1)], execution_count=1)]
    nbformat.write(nb, nbs / "05_rd_evaluation.ipynb")
    fast = dict(progress=False, num_val_crops=0, device="cpu", threads=1, steps=10)
    rows = []
    for variant, lmbda, gamma in (("mse", 2e-3, 0.0), ("mse", 1.6e-2, 0.0), ("lpips", 2e-3, 0.01)):
        run = root / "runs" / f"{variant}-{lmbda}"
        train.train(config.TrainConfig.for_profile("smoke", lmbda=lmbda, gamma=gamma, **fast), run)
        rows.append({"name": run.name, "variant": variant, "lmbda": lmbda,
                     "checkpoint": str(run / "checkpoint.pt")})
    out = root / "site"
    index = site.build(out, notebooks_dir=nbs, images=("kodim23", "kodim05"), models=pd.DataFrame(rows),
                       part=0.25, progress=False)
    return out, index


def test_the_site_has_the_notebooks_and_every_decode(built):
    out, index = built
    text = index.read_text()
    assert 'href="notebooks/05_rd_evaluation.html"' in text and "Rate–distortion on Kodak" in text
    assert 'href="compare.html"' in text
    page = (out / "notebooks" / "05_rd_evaluation.html").read_text()
    assert "Some prose." in page and 'href="../compare.html"' in page
    data = json.loads(re.search(r"const DATA = (\{.*?\});</script>", (out / "compare.html").read_text()).group(1))
    assert list(data) == ["kodim23", "kodim05"]
    for im in data.values():
        assert (out / im["original"]).is_file() and len(im["levels"]) == 2  # one level per MSE λ
        lpips_at = [level for level, files in im["levels"].items() if "learned · +LPIPS" in files]
        assert len(lpips_at) == 1 and lpips_at[0].startswith("λ=0.002")  # each variant at its own λ
        for files in im["levels"].values():
            labels = list(files)
            assert labels[0] == "learned · MSE" and "WebP" in labels and "AVIF" in labels and len(labels) >= 7
            for f in files.values():
                assert (out / f["src"]).is_file() and f["bpp"] > 0 and f["psnr"] > 5


def _browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no Chromium: install chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_the_comparison_page_works_in_a_headless_browser(built):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out, _ = built
    browser = _browser()
    try:
        browser.get((out / "compare.html").resolve().as_uri())
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        loaded = "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        WebDriverWait(browser, 20).until(lambda b: b.execute_script(loaded))
        state = lambda: (find("decoded").get_attribute("src"), find("decoded").get_attribute("style"),  # noqa: E731
                         find("original").get_attribute("src"))
        first = state()
        assert first[0].endswith(".png") and "inset(0px 50%" in first[1] and first[2].endswith("original.png")

        find("slider").send_keys(*[Keys.ARROW_RIGHT] * 20)  # moves the slider as a user would
        moved = state()
        assert moved[1] != first[1] and "inset(0px 30%" in moved[1] and moved[0] == first[0]

        codec = Select(find("codec"))
        codec.select_by_visible_text("WebP")
        webp = state()
        assert webp[0] != moved[0] and "webp" in webp[0]
        row = browser.find_element(By.CSS_SELECTOR, "#metrics tr.selected td")
        assert row.text == "WebP"

        level = Select(find("level"))
        level.select_by_index(0 if level.first_selected_option.get_attribute("index") != "0" else 1)
        assert state()[0] != webp[0]

        Select(find("zoom")).select_by_value("2")  # actual pixels, twice the size
        width = browser.execute_script("return document.getElementById('original').getBoundingClientRect().width")
        assert width == pytest.approx(2 * browser.execute_script(
            "return document.getElementById('original').naturalWidth"), abs=1)

        Select(find("image")).select_by_visible_text("kodim05")
        WebDriverWait(browser, 20).until(lambda b: b.execute_script(loaded))
        assert "kodim05" in state()[0] and "kodim05" in state()[2]
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
