"""Metrics: the official LPIPS values, metric identities and the metrics CLI."""
import json
import math

import pytest
import torch

from lic_utils import data, metrics
from lic_utils.cli import main


@pytest.fixture(scope="module")
def lpips_refs():
    paths = data.lpips_reference_paths()
    return {k: data.to_tensor(data.load_rgb(p)) for k, p in paths.items()}


def test_lpips_reproduces_the_official_values(lpips_refs):
    r = lpips_refs
    assert float(metrics.lpips(r["ex_ref"], r["ex_p0"])) == pytest.approx(0.7219, abs=1e-3)
    assert float(metrics.lpips(r["ex_ref"], r["ex_p1"])) == pytest.approx(0.1376, abs=1e-3)


def test_lpips_network_is_frozen_and_in_eval_mode():
    m = metrics.lpips_model("cpu")
    assert not m.training and not any(p.requires_grad for p in m.parameters())


def test_lpips_is_differentiable_in_its_input(lpips_refs):
    x = lpips_refs["ex_p0"].clone().requires_grad_(True)
    metrics.lpips(x, lpips_refs["ex_ref"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_identical_images(kodim01):
    x = data.to_tensor(kodim01)
    assert float(metrics.mse(x, x)) == 0
    assert math.isinf(float(metrics.psnr(x, x)))
    assert float(metrics.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.lpips(x, x)) == pytest.approx(0.0, abs=1e-6)


def test_psnr_on_a_known_error():
    x = torch.full((2, 3, 40, 40), 100 / 255)
    y = x + 2 / 255  # every 8-bit value off by 2 → MSE 4
    expected = 10 * math.log10(255**2 / 4)
    assert metrics.psnr(x, y).tolist() == pytest.approx([expected] * 2, abs=1e-4)


def test_psnr_rounds_to_8_bit():
    x = torch.full((1, 3, 8, 8), 100 / 255)
    assert math.isinf(float(metrics.psnr(x, x + 0.3 / 255)))


def test_ms_ssim_window_fits_small_crops():
    assert metrics.msssim_window(512, 768) == 11
    assert metrics.msssim_window(128, 128) == 7
    x = torch.rand(1, 3, 128, 128)
    assert 0 < float(metrics.ms_ssim(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1))) < 1
    with pytest.raises(Exception, match="33×33"):
        metrics.msssim_window(32, 100)


def test_ms_ssim_db():
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)


def test_metrics_cli_prints_json_with_bpp_for_compressed_files(tmp_path, capsys, kodak_paths):
    from PIL import Image

    ref = kodak_paths[0]
    out = tmp_path / "d.jpg"
    Image.open(ref).save(out, quality=50)
    assert main(["metrics", str(ref), str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"psnr", "ms_ssim", "lpips", "ssimulacra2", "bpp"}
    assert res["bpp"] == pytest.approx(out.stat().st_size * 8 / (768 * 512))
    assert 25 < res["psnr"] < 40 and 0.9 < res["ms_ssim"] < 1 and 0 < res["lpips"] < 0.5
    assert 30 < res["ssimulacra2"] < 90  # a quality-50 JPEG: medium to high quality on its scale
    assert main(["metrics", str(ref), str(ref)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "bpp" not in res and res["lpips"] == pytest.approx(0, abs=1e-6) and res["ssimulacra2"] == 100


def test_metrics_cli_size_mismatch_is_one_line(tmp_path, capsys, kodak_paths):
    from PIL import Image

    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    assert main(["metrics", str(kodak_paths[0]), str(tmp_path / "small.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_lpips_first_built_in_inference_mode_still_trains(lpips_refs):
    metrics.lpips_model.cache_clear()
    with torch.inference_mode():
        metrics.lpips(lpips_refs["ex_ref"], lpips_refs["ex_p0"])  # first use builds and caches the network
    x = lpips_refs["ex_p0"].clone().requires_grad_(True)
    metrics.lpips(x, lpips_refs["ex_ref"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_metrics_run_on_the_same_threads_whatever_the_caller_uses(monkeypatch):
    """A sum over 2 threads can differ in its last bits from one over 1 (on an AVX-512 Xeon, LPIPS
    0.36008918 serially on 2 threads, 0.36008924 in a one-thread worker): every metric is computed on
    threads.MEASURE_THREADS threads, so a cached row does not depend on which process measured it."""
    from lic_utils import threads

    seen = []
    for name in ("psnr", "ms_ssim", "lpips"):
        real = getattr(metrics, name)
        monkeypatch.setattr(metrics, name, lambda x, y, real=real: seen.append(torch.get_num_threads()) or real(x, y))
    x = torch.rand(1, 3, 64, 64)
    before = torch.get_num_threads()
    for caller in (1, 2):
        torch.set_num_threads(caller)
        try:
            metrics.evaluate(x, x.flip(-1))
            assert torch.get_num_threads() == caller  # restored
        finally:
            torch.set_num_threads(before)
    assert seen == [threads.MEASURE_THREADS] * 6
