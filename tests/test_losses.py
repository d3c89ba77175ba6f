"""The training objective L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS on inputs with known answers."""
import math

import pytest
import torch

from lic_utils import losses
from lic_utils.errors import LicError


@pytest.fixture(scope="module")
def crops(kodim01):
    from lic_utils import data

    x = data.to_tensor(kodim01)
    return torch.cat([x[..., :128, :128], x[..., 200:328, 300:428]])


def test_rate_from_known_likelihoods():
    # likelihood 0.5 for every one of C·h·w latents: C·h·w bits per image
    n, h, w = 2, 64, 48
    y = torch.full((n, 96, h // 16, w // 16), 0.5)
    z = torch.full((n, 64, h // 64, w // 64), 0.25)  # 2 bits each
    expect_y = 96 * (h // 16) * (w // 16) / (h * w)
    assert losses.bpp({"y": y}, n * h * w).item() == pytest.approx(expect_y)
    expect = expect_y + 2 * 64 * (h // 64) * (w // 64) / (h * w)
    assert losses.bpp({"y": y, "z": z}, n * h * w).item() == pytest.approx(expect)
    # 96 channels at 1/256 of the pixels: 0.375 bpp
    assert expect_y == pytest.approx(0.375)


def test_identical_images_cost_only_the_rate(crops):
    y = torch.full((2, 8, 8, 8), 0.5)
    out = {"x_hat": crops.clone(), "likelihoods": {"y": y}}
    t = losses.rd_loss(out, crops, lmbda=0.01, beta=0.5, gamma=0.5)
    assert t["mse"].item() == 0
    assert 1 - t["ms_ssim"].item() == pytest.approx(0, abs=1e-5)
    assert t["lpips"].item() == pytest.approx(0, abs=1e-6)
    rate = 2 * 8 * 8 * 8 / (2 * 128 * 128)
    assert t["bpp"].item() == pytest.approx(rate)
    assert t["loss"].item() == pytest.approx(0.01 * rate, abs=1e-5)
    assert math.isinf(t["psnr"].item()) or t["psnr"].item() > 100


def test_terms_add_up_and_zero_weights_are_not_computed(crops):
    torch.manual_seed(0)
    x_hat = (crops + 0.05 * torch.randn_like(crops)).requires_grad_(True)
    lik = {"y": torch.rand(2, 8, 8, 8).clamp_min(0.01)}
    out = {"x_hat": x_hat, "likelihoods": lik}
    t = losses.rd_loss(out, crops, lmbda=0.004)
    assert math.isnan(t["ms_ssim"].item()) and math.isnan(t["lpips"].item())
    mse = (x_hat - crops).pow(2).mean()
    assert t["mse"].item() == pytest.approx(mse.item())
    assert t["psnr"].item() == pytest.approx(-10 * math.log10(mse.item()), rel=1e-5)
    assert t["loss"].item() == pytest.approx(0.004 * t["bpp"].item() + mse.item(), rel=1e-6)

    full = losses.rd_loss(out, crops, lmbda=0.004, beta=0.1, gamma=0.2)
    expect = 0.004 * full["bpp"] + full["mse"] + 0.1 * (1 - full["ms_ssim"]) + 0.2 * full["lpips"]
    assert full["loss"].item() == pytest.approx(expect.item(), rel=1e-6)
    assert 0 < full["ms_ssim"].item() < 1 and full["lpips"].item() > 0.01
    # the perceptual terms are differentiable w.r.t. the reconstruction
    full["loss"].backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0

    mon = losses.rd_loss({"x_hat": x_hat.detach(), "likelihoods": lik}, crops, lmbda=0.004, monitor=True)
    assert mon["ms_ssim"].item() == pytest.approx(full["ms_ssim"].item(), rel=1e-4)
    assert mon["loss"].item() == pytest.approx(t["loss"].item(), rel=1e-6)  # monitored terms cost nothing


def test_lpips_stays_frozen_and_out_of_the_loss_module(crops):
    from lic_utils import metrics

    fn = losses.RateDistortionLoss(losses.LossConfig(0.01, beta=0.1, gamma=0.1))
    assert list(fn.parameters()) == []
    x_hat = crops.flip(-1).requires_grad_(True)
    fn({"x_hat": x_hat, "likelihoods": {"y": torch.full((2, 4, 8, 8), 0.5)}}, crops)["loss"].backward()
    net = metrics.lpips_model("cpu")
    assert not net.training
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_the_module_computes_rd_loss_with_its_config(crops):
    out = {"x_hat": crops.flip(-1), "likelihoods": {"y": torch.full((2, 4, 8, 8), 0.5)}}
    cfg = losses.LossConfig(lmbda=0.004, beta=0.1)
    got, expect = losses.RateDistortionLoss(cfg)(out, crops), losses.rd_loss(out, crops, 0.004, beta=0.1)
    assert got["loss"].item() == expect["loss"].item() and math.isnan(got["lpips"].item())


@pytest.mark.parametrize("weights", [{"lmbda": -1e-3}, {"beta": float("nan")}, {"gamma": float("inf")},
                                     {"lmbda": "0.01"}, {"beta": True}])
def test_weights_must_be_finite_numbers_not_below_zero(weights):
    with pytest.raises(LicError, match="must be a finite number ≥ 0"):
        losses.LossConfig(**weights)
    assert losses.LossConfig(lmbda=0).lmbda == 0  # λ = 0: a plain autoencoder
