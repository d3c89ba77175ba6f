"""The learned codec (lic_utils.models): config, padding, exact roundtrips, quantizers, scales, checkpoints."""
import io
import itertools

import pytest
import torch

from lic_utils import coding, layers, models, priors
from lic_utils.errors import LicError

TINY = {"N": 8, "M": 12}
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(prior="factorized", quantizer="noise", channel_scale=True, seed=0):
    torch.manual_seed(seed)
    return models.build_model({"prior": prior, "quantizer": quantizer, "channel_scale": channel_scale, **TINY})


def one_training_step(model, x):
    """Move every parameter off its initial value, through the model's own quantizer."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.train()
    out = model(x)
    loss = out["bpp"] + 100 * (out["x_hat"] - x).pow(2).mean() + model.aux_loss()
    loss.backward()
    opt.step()
    return model


def roundtrip(model, x):
    c = model.compress(x)
    return c, model.decompress(c["strings"], c["shape"], c["image_size"])


# --- config -----------------------------------------------------------------------------------------
def test_config_dict_roundtrip_and_hash():
    cfg = models.ModelConfig(prior="hyperprior", quantizer="mixed", channel_scale=False, N=16, M=24)
    assert models.ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == {"prior": "hyperprior", "quantizer": "mixed", "channel_scale": False, "N": 16, "M": 24}
    h = cfg.config_hash()
    assert len(h) == 16 and int(h, 16) >= 0
    # the quantizer shapes training only; the architecture fields change the hash
    assert models.ModelConfig(prior="hyperprior", quantizer="ste", channel_scale=False, N=16, M=24).config_hash() == h
    for change in ({"N": 17}, {"M": 25}, {"channel_scale": True}, {"prior": "factorized"}):
        assert models.ModelConfig.from_dict(cfg.to_dict() | change).config_hash() != h
    defaults = models.ModelConfig()
    assert (defaults.prior, defaults.quantizer, defaults.channel_scale) == ("factorized", "noise", True)
    assert models.build_model(cfg.to_dict()).config == cfg and models.build_model(cfg).config == cfg


@pytest.mark.parametrize("bad", [{"prior": "gmm"}, {"quantizer": "round"}, {"N": 0}, {"M": 2.5}, {"channel_scale": "yes"}, {"lr": 1}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(LicError):
        models.ModelConfig.from_dict(bad)


def test_inference_gdn_gives_compressai_gdn_numbers():
    """The in-place inference pass of InferenceGDN returns exactly what CompressAI's GDN returns."""
    from compressai.layers import GDN

    torch.manual_seed(0)
    for inverse in (False, True):
        ours, ref = layers.InferenceGDN(6, inverse=inverse), GDN(6, inverse=inverse)
        with torch.no_grad():
            ref.gamma.add_(0.05 * torch.rand_like(ref.gamma))
            ref.beta.add_(0.1 * torch.rand_like(ref.beta))
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(2, 6, 9, 7)
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x))
        assert torch.equal(ours(x), ref(x))  # with gradients: CompressAI's own path


def test_transforms_follow_the_paper():
    m = models.build_model({"prior": "hyperprior", "N": 16, "M": 24})
    convs = [l for l in m.g_a if isinstance(l, torch.nn.Conv2d)]
    deconvs = [l for l in m.g_s if isinstance(l, torch.nn.ConvTranspose2d)]
    assert [c.kernel_size + c.stride for c in convs] == [(5, 5, 2, 2)] * 4
    assert [(d.kernel_size, d.stride, d.padding, d.output_padding) for d in deconvs] == [((5, 5), (2, 2), (2, 2), (1, 1))] * 4
    assert [c.out_channels for c in convs] == [16, 16, 16, 24] and deconvs[-1].out_channels == 3
    from compressai.layers import GDN

    assert all(isinstance(l, GDN) and l.inverse for l in m.g_s[1::2]) and len(m.g_s) == 7
    assert all(isinstance(l, GDN) and not l.inverse for l in m.g_a[1::2]) and len(m.g_a) == 7
    y = m.g_a(torch.rand(1, 3, 64, 128))
    assert y.shape == (1, 24, 4, 8) and m.prior.h_a(y).shape == (1, 16, 1, 2)


def test_subpixel_form_of_the_last_layer_is_the_same_transposed_convolution():
    torch.manual_seed(0)
    layer = layers.SubpixelConvTranspose2d(16, 3)
    x = torch.randn(2, 16, 9, 13, requires_grad=True)
    reference = torch.nn.functional.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=2, output_padding=1)
    assert torch.equal(layer.train()(x), reference)
    fast = layer.eval()(x)
    assert fast.shape == (2, 3, 18, 26) and torch.allclose(fast, reference, atol=1e-5)
    fast.sum().backward()  # still differentiable (eval-mode gradients, e.g. for attacks or analysis)
    assert layer.weight.grad.abs().sum() > 0


# --- padding and cropping ---------------------------------------------------------------------------
@pytest.mark.parametrize("prior", ["factorized", "hyperprior"])
@pytest.mark.parametrize("size", [(37, 61), (1, 300), (768, 512)])
def test_odd_sizes_pad_and_crop(prior, size):
    m = tiny(prior)
    m.update(force=True)
    m.eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = m(x)
    assert out["x_hat"].shape == x.shape and out["likelihoods"]["y"].shape[-2:] == tuple(
        -(-s // m.config.pad_multiple) * m.config.pad_multiple // 16 for s in size)  # fmt: skip
    c, x_hat = roundtrip(m, x)
    assert c["image_size"] == size and tuple(c["shape"]) == m.coded_shape(*size)
    assert torch.equal(x_hat, out["x_hat"])
    assert layers.pad_to_multiple(x, 64).shape[-2:] == tuple(-(-s // 64) * 64 for s in size)


def test_training_output_is_not_clamped_and_bpp_per_original_pixel():
    m = tiny().train()
    x = torch.rand(2, 3, 20, 30)
    out = m(x)
    bits = -torch.log2(out["likelihoods"]["y"]).flatten(1).sum(1)
    assert torch.allclose(out["bpp"], (bits / (20 * 30)).mean())
    assert out["x_hat"].shape == x.shape and out["x_hat"].requires_grad
    with torch.no_grad():
        m.g_s[-1].bias.fill_(5.0)  # push outputs above 1
    assert m(x)["x_hat"].max() > 1 and m.eval()(x)["x_hat"].max() <= 1


# --- exact roundtrip --------------------------------------------------------------------------------
@pytest.mark.parametrize("prior,quantizer,channel_scale", list(itertools.product(models.PRIORS, models.QUANTIZERS, (True, False))))
def test_decode_equals_eval_forward(prior, quantizer, channel_scale, kodim01):
    x = torch.from_numpy(kodim01[100:164, 200:296].copy()).permute(2, 0, 1)[None].float() / 255
    m = one_training_step(tiny(prior, quantizer, channel_scale), x)
    m.update(force=True)
    m.eval()
    with torch.no_grad():
        ref = m(x)
    c, x_hat = roundtrip(m, x)
    assert [type(s) for s in c["strings"]] == [bytes] * len(m.string_names)
    assert torch.equal(x_hat, ref["x_hat"])
    # the latents the model prices are exactly the ones in the strings
    est = m.estimate_bits(c["strings"], c["shape"])
    assert sum(est.values()) == pytest.approx(float(ref["bpp"]) * x.shape[-2] * x.shape[-1], rel=1e-4)


# --- quantizers -------------------------------------------------------------------------------------
def test_ste_rounds_forward_and_passes_gradient():
    v = torch.linspace(-3, 3, 101, requires_grad=True)
    q = priors.ste_round(v)
    assert torch.equal(q, torch.round(v.detach()))
    (q * torch.arange(101.0)).sum().backward()
    assert torch.equal(v.grad, torch.arange(101.0))
    assert torch.round(v).grad_fn is None or torch.autograd.grad(torch.round(v).sum(), v)[0].abs().sum() == 0


def test_noise_stays_within_half_a_step():
    torch.manual_seed(0)
    v = torch.randn(100_000)
    d = priors.uniform_noise(v) - v
    assert d.abs().max() <= 0.5 and d.std() == pytest.approx(12**-0.5, rel=0.02) and d.mean().abs() < 0.01


def test_rounding_is_exact_at_inference_on_the_coders_grid():
    m = tiny("factorized-gaussian")
    with torch.no_grad():
        m.prior.mean.copy_(torch.linspace(-0.4, 0.4, 12))
    v = torch.randn(1, 12, 5, 7) * 3
    center = m.prior.center()
    q = priors.quantize(v, "round", center)
    assert torch.equal(q, torch.round(v - center) + center)  # what the coder reconstructs: symbol + centre
    assert torch.allclose(q - center, torch.round(v - center), atol=1e-6) and (q - v).abs().max() <= 0.5 + 1e-6
    m.eval()
    v_hat, _ = m.prior(v, m.quantizers())
    assert m.quantizers() == ("round", "round") and torch.equal(v_hat, q)


@pytest.mark.parametrize("quantizer", models.QUANTIZERS)
def test_training_proxies_carry_gradients(quantizer):
    m = tiny("hyperprior", quantizer).train()
    x = torch.rand(2, 3, 64, 64)
    v = m.analyze(x)
    rate_q, synth_q = m.quantizers()
    assert (rate_q, synth_q) == {"noise": ("noise", "noise"), "ste": ("ste", "ste"), "mixed": ("noise", "ste")}[quantizer]
    v_hat, lik = m.prior(v, m.quantizers())
    c = m.prior.center() if hasattr(m.prior, "center") else 0.0
    on_grid = torch.equal(v_hat, torch.round(v_hat - c) + c)
    assert on_grid == (synth_q == "ste")
    # reconstruction gradient reaches the encoder through the proxy (STE: identity; noise: additive)
    g = torch.autograd.grad(m.synthesize(v_hat).pow(2).mean(), m.g_a[0].weight, retain_graph=True)[0]
    assert g.abs().sum() > 0
    g = torch.autograd.grad(-torch.log2(lik["y"]).sum(), m.g_a[0].weight)[0]
    assert g.abs().sum() > 0


def test_one_noise_draw_serves_rate_and_reconstruction():
    v = torch.randn(2, 4, 5, 5)
    for_rate, for_decoder = priors.quantize_pair(v, ("noise", "noise"))
    assert for_rate is for_decoder and not torch.equal(for_rate, v)
    for_rate, for_decoder = priors.quantize_pair(v, ("noise", "ste"))  # mixed
    assert torch.equal(for_decoder, torch.round(v)) and (for_rate - v).abs().max() <= 0.5


@pytest.mark.parametrize("prior", ["factorized", "factorized-gaussian"])
def test_noise_proxy_prices_the_values_the_decoder_gets(prior):
    """With `noise`, the rate term and g_s see one and the same v + u (not two draws)."""
    m = tiny(prior, "noise").train()
    v = m.analyze(torch.rand(1, 3, 64, 64))
    v_hat, lik = m.prior(v, m.quantizers())
    assert not torch.equal(v_hat, torch.round(v_hat))
    with torch.no_grad():
        if prior == "factorized":
            again = coding.bottleneck_likelihood(m.prior.entropy_bottleneck, v_hat)
        else:
            scales = m.prior.scale().reshape(1, -1, 1, 1).expand_as(v_hat)
            again = coding.gaussian_likelihood(m.prior.gaussian_conditional, v_hat, scales, m.prior.center())
    assert torch.equal(again, lik["y"])


def test_channel_scale_changes_the_rate(kodim01):
    x = torch.from_numpy(kodim01[:128, :192].copy()).permute(2, 0, 1)[None].float() / 255
    m = tiny("factorized-gaussian")
    with torch.no_grad():
        m.g_a[-1].weight.mul_(20)  # latents spanning many steps, so the step size matters
    assert m.log_channel_scale is not None and torch.equal(m.log_channel_scale, torch.zeros(12))

    def rate(log_s):
        """Bits per channel and file size with step exp(log_s), the Gaussian prior fitted to v each time."""
        with torch.no_grad():
            m.log_channel_scale.copy_(log_s)
            v = m.analyze(x)
            m.prior.mean.copy_(v.mean((0, 2, 3)))
            m.prior.log_scale.copy_(v.std((0, 2, 3)).log())
        m.update(force=True)
        m.eval()
        with torch.no_grad():
            bits = -torch.log2(m(x)["likelihoods"]["y"]).sum((0, 2, 3))
        return bits, sum(map(len, m.compress(x)["strings"]))

    base, base_size = rate(torch.zeros(12))
    coarse, coarse_size = rate(torch.zeros(12).index_fill(0, torch.tensor([0, 1]), 1.0))  # e× the step, channels 0, 1
    assert (coarse[:2] < base[:2] - 1).all() and torch.allclose(coarse[2:], base[2:])
    assert coarse_size < base_size
    fine, fine_size = rate(torch.full((12,), -1.0))
    assert (fine > base).all() and fine_size > base_size
    # the step is learned: the rate term pulls on it
    m.train()
    m(x)["bpp"].backward()
    assert m.log_channel_scale.grad.abs().sum() > 0
    assert tiny(channel_scale=False).log_channel_scale is None


# --- parameters and entropy models ------------------------------------------------------------------
@pytest.mark.parametrize("prior", models.PRIORS)
def test_aux_and_main_parameters_partition(prior):
    m = tiny(prior)
    aux = list(m.aux_parameters())
    main = list(m.main_parameters())
    assert {id(p) for p in aux}.isdisjoint(id(p) for p in main)
    assert len(aux) + len(main) == len(list(m.parameters()))
    loss = m.aux_loss()
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    if prior == "factorized-gaussian":
        assert aux == [] and float(loss) == 0
    else:
        assert len(aux) == 1 and aux[0].shape[-1] == 3 and loss.item() > 0


def test_compress_needs_tables_and_refuses_runaway_latents():
    m = tiny().eval()
    with pytest.raises(LicError, match="update"):
        m.compress(torch.rand(1, 3, 16, 16))
    m.update(force=True)
    with torch.no_grad():
        m.g_a[-1].bias.fill_(1e5)  # far outside the coder tables: escape codes would overrun rANS' buffer
    with pytest.raises(LicError, match="outside the coder tables"):
        m.compress(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        m.g_a[-1].bias.fill_(float("nan"))
    with pytest.raises(LicError, match="diverged"):
        m.compress(torch.rand(1, 3, 32, 32))


# --- checkpoints ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prior", models.PRIORS)
def test_checkpoint_roundtrip(prior, tmp_path):
    x = torch.rand(1, 3, 40, 70)
    m = one_training_step(tiny(prior, "ste"), x)
    m.update(force=True)
    extra = {"step": 7, "rng": [torch.get_rng_state(), [1, 2]], "opt": {"lr": torch.tensor(1e-3)}}
    path = models.save_checkpoint(tmp_path / "ckpt.pt", m, extra=extra)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file
    loaded = models.load_checkpoint(path)
    assert not loaded.training and loaded.config == m.config and loaded.fingerprint() == m.fingerprint()
    assert m.compress(x)["strings"] == loaded.compress(x)["strings"]
    c = m.compress(x)
    assert torch.equal(loaded.decompress(c["strings"], c["shape"], c["image_size"]), m.eval()(x)["x_hat"])
    got = models.load_checkpoint_extra(path)
    assert got["step"] == 7 and torch.equal(got["rng"][0], extra["rng"][0]) and got["rng"][1] == [1, 2]
    assert torch.equal(got["opt"]["lr"], extra["opt"]["lr"])
    models.save_checkpoint(tmp_path / "bare.pt", m)
    assert models.load_checkpoint_extra(tmp_path / "bare.pt") is None


def test_save_builds_missing_tables(tmp_path):
    m = tiny("hyperprior")
    assert not m.coder_ready()
    loaded = models.load_checkpoint(models.save_checkpoint(tmp_path / "c.pt", m))
    assert loaded.coder_ready()
    c, x_hat = roundtrip(loaded, torch.rand(1, 3, 50, 50))
    assert x_hat.shape == (1, 3, 50, 50)


def test_bad_checkpoints_raise_licerror(tmp_path):
    with pytest.raises(LicError, match="not found"):
        models.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LicError, match="not a lic_utils checkpoint"):
        models.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(LicError, match="not a lic_utils checkpoint"):
        models.load_checkpoint(tmp_path / "other.pt")
    m = tiny()
    path = models.save_checkpoint(tmp_path / "c.pt", m)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config_hash"] = "0" * 16
    torch.save(ckpt, tmp_path / "hash.pt")
    with pytest.raises(LicError, match="architecture"):
        models.load_checkpoint(tmp_path / "hash.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["g_s.0.bias"] += 1
    torch.save(ckpt, tmp_path / "weights.pt")
    with pytest.raises(LicError, match="corrupted"):
        models.load_checkpoint(tmp_path / "weights.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["M"] = 13
    ckpt["config_hash"] = models.ModelConfig.from_dict(ckpt["config"]).config_hash()
    torch.save(ckpt, tmp_path / "shape.pt")
    with pytest.raises(LicError, match="do not fit"):
        models.load_checkpoint(tmp_path / "shape.pt")


def test_fingerprint_follows_the_weights():
    m = tiny()
    m.update(force=True)
    fp = m.fingerprint()
    assert m.fingerprint() == fp
    with torch.no_grad():
        m.g_s[0].weight[0, 0, 0, 0] += 1e-3
    assert m.fingerprint() != fp


class _Planted:
    """A pickle that would create a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_training_state_is_refused_without_running_code(tmp_path):
    """A genuine checkpoint whose `extra` blob was swapped for a malicious pickle: resuming reads it
    with weights_only=True, so the pickle is refused and never runs."""
    m = tiny()
    path = models.save_checkpoint(tmp_path / "ckpt.pt", m, extra={"step": 1})
    ckpt = torch.load(path, weights_only=True)
    buf = io.BytesIO()
    torch.save({"step": 1, "evil": _Planted(tmp_path / "pwned")}, buf)
    ckpt["extra"] = buf.getvalue()
    torch.save(ckpt, path)
    with pytest.raises(LicError, match="not plain data"):
        models.load_checkpoint_extra(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_errors_are_short_whole_words_and_never_advise_unsafe_loading(tmp_path):
    """torch's refusal advises weights_only=False (which runs code): never repeated; long messages
    are cut between words."""
    torch.save({"evil": _Planted(tmp_path / "pwned")}, tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, message in [("evil.pt", "refused by the weights-only loader: Unsupported global"),
                          ("junk.pt", "refused by the weights-only loader"),
                          ("empty.pt", r"is empty \(0 bytes\)")]:
        with pytest.raises(LicError, match=message) as err:
            models.load_checkpoint(tmp_path / name)
        msg = str(err.value)
        assert "weights_only" not in msg and "\n" not in msg and "\x1b" not in msg and len(msg) < 300, msg
    assert not (tmp_path / "pwned").exists()
    ckpt = torch.load(models.save_checkpoint(tmp_path / "c.pt", tiny()), weights_only=True)
    ckpt["config"]["M"] = 13
    ckpt["config_hash"] = models.ModelConfig.from_dict(ckpt["config"]).config_hash()
    torch.save(ckpt, tmp_path / "shape.pt")
    with pytest.raises(LicError, match="do not fit") as err:
        models.load_checkpoint(tmp_path / "shape.pt")
    detail = str(err.value).split("(", 2)[-1]
    assert detail.endswith(" …)") and "size mismatch" in detail  # the detail, cut after a whole word


def _tamper(sd, prefix, how):
    cdf, length, offset = (sd[f"{prefix}.{k}"] for k in ("_quantized_cdf", "_cdf_length", "_offset"))
    if how == "zeroed row":  # every frequency 0: CompressAI's encoder divides by it (SIGFPE)
        cdf[0].zero_()
    elif how == "flat step":  # one symbol of frequency 0
        cdf[1, 2] = cdf[1, 1]
    elif how == "short of 2^16":  # the decoder's search would run past the row
        cdf[0, length[0] - 1] = 65535
    elif how == "length past the row":
        length[0] = cdf.shape[1] + 1
    elif how == "offset out of range":
        offset[0] = 2**30
    elif how == "row missing":
        sd[f"{prefix}._quantized_cdf"] = cdf[1:].clone()


@pytest.mark.parametrize("prior, coder", [("factorized", "prior.entropy_bottleneck"),
                                          ("factorized-gaussian", "prior.gaussian_conditional"),
                                          ("hyperprior", "prior.gaussian_conditional")])
def test_coder_tables_are_validated_on_load(prior, coder, tmp_path):
    """A checkpoint that unpickles fine (weights-only) and whose fingerprint was recomputed can still
    carry tables that crash the native coder: each is refused with one line."""
    path = models.save_checkpoint(tmp_path / "c.pt", tiny(prior))
    assert models.load_checkpoint(path).coder_ready()
    for how in ("zeroed row", "flat step", "short of 2^16", "length past the row", "offset out of range",
                "row missing"):
        ckpt = torch.load(path, weights_only=True)
        _tamper(ckpt["state_dict"], coder, how)
        m = models.build_model(ckpt["config"])
        m.load_state_dict(ckpt["state_dict"])
        ckpt["fingerprint"] = m.fingerprint()
        torch.save(ckpt, tmp_path / "bad.pt")
        with pytest.raises(LicError, match=f"is corrupted: the rANS tables of {coder} have") as err:
            models.load_checkpoint(tmp_path / "bad.pt")
        assert "\n" not in str(err.value), how
