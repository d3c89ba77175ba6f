"""The entropy-model registry (lic_utils.priors), prior options, and what the context models add:
means that must be rebuilt exactly, channel groups decoded one after the other from one string, and
latent residual prediction. Round trips of every registered prior are in test_bitstream and
test_models (parametrized over the registry), their files on two machines in test_portable."""
import pytest
import torch

from lic_utils import bitstream as bs
from lic_utils import coding, models, priors
from lic_utils.errors import LicError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(prior: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    m = models.build_model({"prior": prior, "N": 8, "M": 12, "prior_options": options})
    m.update(force=True)
    return m.eval()


@pytest.mark.parametrize("name", sorted(priors.REGISTRY))
def test_every_registered_prior_describes_itself(name):
    cls = priors.REGISTRY[name]
    assert cls.name == name and name in models.PRIORS
    assert cls.names[0] == "y" and cls.stride in (16, 64) and isinstance(cls.options, dict)
    m = tiny(name)
    assert m.config.pad_multiple == cls.stride and m.string_names == cls.names
    assert isinstance(cls.derives_tables, bool)


def test_a_prior_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="two entropy models"):
        priors.register(type("Again", (), {"name": "hyperprior"}))


def test_prior_options_are_checked_hashed_and_kept_in_checkpoints(tmp_path):
    with pytest.raises(LicError, match=r"unknown option\(s\) \['slices'\] of the channel-groups prior"):
        models.ModelConfig(prior="channel-groups", prior_options={"slices": 4})
    with pytest.raises(LicError, match="options: none"):
        models.ModelConfig(prior="hyperprior", prior_options={"groups": [96]})
    with pytest.raises(LicError, match="summing to M = 12"):
        tiny("channel-groups", groups=[4, 4])
    plain = models.ModelConfig(prior="channel-groups")
    grouped = models.ModelConfig(prior="channel-groups", prior_options={"groups": [48, 48]})
    assert plain.config_hash() != grouped.config_hash()
    assert "prior_options" not in plain.to_dict() and grouped.to_dict()["prior_options"] == {"groups": [48, 48]}
    m = tiny("channel-groups", groups=[4, 8], context_kernel=3)
    assert m.prior.groups == (4, 8)
    models.save_checkpoint(tmp_path / "m.pt", m)
    loaded = models.load_checkpoint(tmp_path / "m.pt")
    assert loaded.prior.groups == (4, 8) and loaded.fingerprint() == m.fingerprint()


def test_elic_groups_for_the_study_width():
    from lic_utils.priors.channel_groups import default_groups

    assert default_groups(96) == (8, 8, 16, 32, 32)
    assert default_groups(10) == (3, 3, 2, 2) and sum(default_groups(10)) == 10


PARAMS = {"mean-scale": "gaussian_params", "channel-groups": "group_params", "checkerboard": "pass_params",
          "space-channel": "pass_params"}


@pytest.mark.parametrize("prior", sorted(PARAMS))
def test_a_decoder_with_other_means_gets_an_error_not_a_wrong_image(prior, monkeypatch):
    """The tables can agree while the means do not: the check value covers the means too."""
    m = tiny(prior)
    blob = bs.encode_image(m, torch.rand(1, 3, 128, 128))
    name = PARAMS[prior]
    real = getattr(type(m.prior), name)
    monkeypatch.setattr(type(m.prior), name, lambda self, *a: (lambda mu, s: (mu + 2 ** -10, s))(*real(self, *a)))
    with pytest.raises(coding.TablesMismatch):
        bs.decode_image(m, blob)


def test_mean_scale_codes_the_residual_around_its_means():
    m = tiny("mean-scale")
    v = torch.randn(1, 12, 8, 8) * 3
    with torch.no_grad():
        v_hat, _ = m.prior(v, ("round", "round"))
        means = m.prior.side_information(v)["means"]
    assert torch.equal(v_hat, torch.round(v - means) + means)
    assert not torch.equal(v_hat, torch.round(v))  # the grid is moved by μ


def test_channel_groups_decode_group_by_group_with_lrp():
    m = tiny("channel-groups", groups=[2, 4, 6])
    x = torch.rand(1, 3, 64, 128)
    out = m.compress(x)
    latents = m.decode_latents(out["strings"], out["shape"], out["check"])
    assert latents["y"].shape[1] == 12 and len(out["strings"]) == 2  # one string for all groups
    lrp = latents["y"] - latents["y_coded"]
    assert lrp.abs().max() <= 0.5 and lrp.abs().max() > 0  # ½·clamp(r, −1, 1), and not nothing
    with torch.no_grad():
        assert torch.equal(m.decompress(out["strings"], out["shape"], (64, 128), out["check"]), m(x)["x_hat"])
    bits = m.estimate_bits(out["strings"], out["shape"], out["check"])
    assert bits["y"] > 0 and bits["z"] > 0


def test_parts_of_one_string_decode_one_by_one():
    m = tiny("hyperprior")
    gc = m.prior.gaussian_conditional
    torch.manual_seed(1)
    parts = [(torch.randn(1, c, 4, 5) * 4, torch.randint(0, 200, (1, c, 4, 5), dtype=torch.int32),
              torch.randn(1, c, 4, 5)) for c in (2, 3)]
    stream = coding.GaussianStream(gc, coding.encode_gaussian(gc, parts))
    for values, indexes, means in parts:
        assert torch.equal(stream.decode(indexes, means), torch.round(values - means) + means)


def test_checkerboard_codes_anchors_then_the_rest_with_their_context():
    from lic_utils.priors.checkerboard import anchors

    a = anchors(3, 4)[0, 0]
    assert int(a.sum()) == 6 and bool(a[0, 0]) and not bool(a[0, 1]) and bool(a[1, 1])
    m = tiny("checkerboard")
    with torch.no_grad():
        side = m.prior.side_information(torch.randn(1, 12, 8, 8) * 3)
    first = side["anchors"].expand_as(side["scales"])
    assert torch.equal(side["scales"][first], side["scales_without_context"][first])
    assert not torch.equal(side["scales"][~first], side["scales_without_context"][~first])
