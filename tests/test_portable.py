"""Files that decode the same on every machine: the exact twin of a network (lic_utils.exact), the
check value of format-2 files, format-1 files, and encode/decode in child processes that play two
machines (another CPU kernel set and thread count), on the shipped models of every prior.
"""
import warnings

import pytest
import torch
import torch.nn as nn

from lic_utils import bitstream as bs
from lic_utils import cli, coding, exact, models, priors
from lic_utils.errors import LicError, LicWarning

# one shipped model per prior: trained, so the hyperprior's σ spread over many of its 256 tables
SHIPPED = {"factorized": "factorized-mse-l0.004", "factorized-gaussian": "factorized-gaussian-mse-l0.004",
           "hyperprior": "hyperprior-mse-l0.004"}
IMAGES = {"factorized": 3, "factorized-gaussian": 3, "hyperprior": 24}  # Kodak images per model
# measured on all 24 Kodak images with every shipped model (benchmarks/cross_machine.py): decoded
# pixels differed by at most 1 level, on at most 0.0053 % of an image (the synthesis transform runs in
# float); the bound allows 0.1 %
PIXEL_LEVELS, PIXEL_FRACTION = 1, 1e-3

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the exact twin ---------------------------------------------------------------------------------
def small_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.ConvTranspose2d(8, 16, 5, 2, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1),
                         nn.LeakyReLU(0.1), nn.ConvTranspose2d(16, 12, 5, 2, 2, 1), nn.Identity(),
                         nn.Conv2d(12, 6, 3, 1, 1), nn.ReLU())


def test_the_twin_computes_the_float_network():
    net = small_net(0)
    x = torch.randn(2, 8, 5, 7) * 4
    got, want = exact.ExactNet(net)(x), net(x).double()
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    # per image: each image's result does not depend on the others in the batch
    assert torch.equal(exact.ExactNet(net)(x[1:]), got[1:])


def test_the_twin_gives_the_same_bits_in_any_summation_order():
    """Reordering the input channels (and the weights with them) changes the order of every sum:
    the twin's bits stay, the float network's move (which is what breaks float coding tables)."""
    float_moved = False
    for seed in range(3):
        net, x = small_net(seed), torch.randn(1, 8, 6, 6) * 3
        perm = torch.randperm(8)
        permuted = small_net(seed)
        with torch.no_grad():
            permuted[0].weight.copy_(net[0].weight[perm])  # ConvTranspose2d: in-channels first
        assert torch.equal(exact.ExactNet(permuted)(x[:, perm]), exact.ExactNet(net)(x))
        with torch.no_grad():
            float_moved |= not torch.equal(permuted(x[:, perm]), net(x))
    assert float_moved


def test_the_twin_refuses_what_it_cannot_compute_exactly():
    with pytest.raises(LicError, match="not supported"):
        exact.ExactNet(nn.Sequential(nn.Conv2d(4, 4, 3), nn.Sigmoid()))
    with pytest.raises(LicError, match="groups 1"):
        exact.ExactNet(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)))
    wide = nn.Conv2d(32768, 1, 4)  # 2^19 inputs of 2^14 weight units each: 2^33 · 2^20 reaches 2^53
    with torch.no_grad():
        wide.weight.fill_(1.0)
    with pytest.raises(LicError, match="exact float64 sums"):
        exact.ExactNet(nn.Sequential(wide))


def test_an_exact_sequential_is_float_in_training_and_exact_outside():
    net = exact.ExactSequential(*small_net(0))
    assert list(net.state_dict()) == list(small_net(0).state_dict())  # checkpoints load as before
    x = torch.randn(1, 8, 5, 7) * 4
    with torch.no_grad():
        assert torch.equal(net.train()(x), small_net(0)(x))
        out = net.eval()(x)
        assert out.dtype == x.dtype and torch.equal(out, exact.ExactNet(net)(x).float())
        with exact.float_arithmetic(net):
            assert torch.equal(net(x), small_net(0)(x))
        assert torch.equal(net(x), out)  # exact again after the block
        net[0].bias.add_(1.0)  # new weights: a new twin
        assert not torch.equal(net(x), out)


def test_the_hyperprior_derives_its_tables_by_the_twin():
    m = tiny("hyperprior")
    assert isinstance(m.prior.h_s, exact.ExactSequential)
    z_hat = torch.randn(1, 8, 3, 4).round() * 2
    with torch.no_grad():
        assert torch.equal(m.prior.scales(z_hat), exact.ExactNet(m.prior.h_s)(z_hat).float())


# --- the check value --------------------------------------------------------------------------------
def tiny(prior: str, seed: int = 0):
    torch.manual_seed(seed)
    m = models.build_model({"prior": prior, "N": 8, "M": 12})
    m.update(force=True)
    return m.eval()


def with_check(blob: bytes, check: bytes) -> bytes:
    """The same file with another check value and both CRCs recomputed (a crafted file)."""
    lic = bs.parse(blob)
    return bs.pack(lic.config_hash, lic.fingerprint, lic.height, lic.width, None, list(lic.strings), check)


@pytest.mark.parametrize("prior", models.PRIORS)
def test_a_file_whose_tables_cannot_be_rebuilt_is_refused_in_one_line(prior):
    m = tiny(prior)
    blob = bs.encode_image(m, torch.rand(1, 3, 70, 90))
    bad = with_check(blob, bytes(4))
    for decode in (lambda: bs.decode_image(m, bad), lambda: bs.info(bad, m)):
        with pytest.raises(coding.TablesMismatch, match="cannot be decoded correctly here") as e:
            decode()
        assert isinstance(e.value, LicError) and "\n" not in str(e.value)


def test_a_machine_that_derives_other_scales_gets_an_error_not_a_wrong_image(monkeypatch):
    """What a decoder on a machine that computed other σ would do: stop before decoding y."""
    m = tiny("hyperprior")
    blob = bs.encode_image(m, torch.rand(1, 3, 128, 128))
    scales = priors.HyperpriorEntropyModel.scales
    monkeypatch.setattr(priors.HyperpriorEntropyModel, "scales", lambda self, z: scales(self, z) * 1.05)
    decoded_y = []
    monkeypatch.setattr(m.prior.gaussian_conditional, "decompress", lambda *a, **k: decoded_y.append(1))
    with pytest.raises(coding.TablesMismatch):
        bs.decode_image(m, blob)
    assert decoded_y == []  # the check comes before y's payload is decoded


@pytest.mark.parametrize("prior", SHIPPED)  # the priors of format 1's time
def test_format_1_files_still_decode_where_they_were_made(prior, tmp_path, capsys, monkeypatch):
    """Written as the previous version did (float tables, no check value): the same image as then,
    with a one-line warning when its tables were derived in float (the hyperprior's)."""
    m = tiny(prior)
    x = torch.rand(1, 3, 70, 90)
    out = m.compress(x, exact=False)
    v1 = bs.pack(m.config.config_hash(), m.fingerprint(), 70, 90, out["shape"], out["strings"], None)
    lic = bs.parse(v1)
    assert lic.version == 1 and lic.check is None and lic.header_bytes == bs.parse(bs.encode_image(m, x)).header_bytes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x_hat = bs.decode_image(m, v1)
    assert torch.equal(x_hat, m.decompress(out["strings"], out["shape"], (70, 90), exact=False))
    assert torch.equal(x_hat, m(x)["x_hat"])
    derived = m.prior.derives_tables
    assert [w.category for w in caught] == ([LicWarning] if derived else [])

    from lic_utils import zoo

    monkeypatch.setattr(zoo, "decoder_for_bytes", lambda lic, name, checkpoint=None: m)
    (tmp_path / "v1.lic").write_bytes(v1)
    assert cli.main(["decompress", str(tmp_path / "v1.lic"), str(tmp_path / "v1.png")]) == 0
    err = capsys.readouterr().err
    assert (err.count("\n"), err.startswith("warning: this is a .lic file of format 1")) == \
        ((1, True) if derived else (0, False))


def test_a_tampered_file_is_one_error_line_in_the_cli(tmp_path, capsys, monkeypatch):
    from lic_utils import zoo

    m = tiny("hyperprior")
    monkeypatch.setattr(zoo, "decoder_for_bytes", lambda lic, name, checkpoint=None: m)
    (tmp_path / "bad.lic").write_bytes(with_check(bs.encode_image(m, torch.rand(1, 3, 64, 64)), b"\1" * 4))
    assert cli.main(["decompress", str(tmp_path / "bad.lic"), str(tmp_path / "bad.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this .lic file cannot be decoded correctly here") and err.count("\n") == 1
    assert not (tmp_path / "bad.png").exists()


# --- two machines in child processes ----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_new_priors(tmp_path_factory):
    """The priors no model of zoo/ uses yet: small codecs (N=16, M=24) trained 300 steps, enough that
    their σ and μ spread over many tables and values."""
    from lic_utils import config, train

    out = {}
    for prior in set(models.PRIORS) - set(SHIPPED):
        cfg = config.TrainConfig.for_profile("smoke", prior=prior, N=16, M=24, steps=300, batch=8, lmbda=4e-3,
                                            num_val_crops=0, progress=False)
        run = tmp_path_factory.mktemp(prior)
        train.train(cfg, run)
        out[prior] = str(run / "checkpoint.pt")
    return out


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory, trained_new_priors):
    """Each "machine" (lic_utils.portability) encodes Kodak images with a trained model of every
    prior (a shipped one where there is one), then decodes both machines' files: one row per file."""
    from lic_utils import portability

    refs = {**{SHIPPED[p]: n for p, n in IMAGES.items()}, **{ckpt: 2 for ckpt in trained_new_priors.values()}}
    return portability.cross_decode(refs, tmp_path_factory.mktemp("machines"))


def test_every_prior_decodes_the_same_latents_on_another_machine(two_machines, trained_new_priors):
    rows = two_machines
    assert len(rows) == 2 * (sum(IMAGES.values()) + 2 * len(trained_new_priors))  # both directions
    assert rows["model"].nunique() == len(models.PRIORS)
    assert rows["latents_same"].all()
    assert rows["max_pixel_diff"].max() <= PIXEL_LEVELS and rows["pixels_differing_pct"].max() <= 100 * PIXEL_FRACTION


def test_without_the_exact_path_the_same_machines_decode_other_latents(two_machines):
    """The control: with h_s in float, as format 1 coded, the two machines decode other latents from
    some of the shipped hyperprior's files (its files of format 1 decoded to garbage there)."""
    hyper = two_machines[two_machines["model"] == SHIPPED["hyperprior"]]
    assert len(hyper) == 2 * IMAGES["hyperprior"] and hyper["latents_same"].all()
    assert not hyper["float_latents_same"].all(), "float h_s decoded the same latents under both kernel sets"
