"""The entropy models p(v̂) of the study, one file each, registered by name (as CompressAI's
`latent_codecs`): a new one is a file with a class decorated `@register`, imported at the end here.

    factorized           factorized.py      a non-parametric density per channel (Ballé 2018)
    factorized-gaussian  gaussian.py        a learned Gaussian per channel
    hyperprior           hyperprior.py      σ from side information z (Ballé 2018's scale hyperprior)
    mean-scale           mean_scale.py      μ and σ from z (Minnen et al. 2018, without its serial context)
    channel-groups       channel_groups.py  μ, σ of each channel group also from the groups decoded
                                            before it, with latent residual prediction (Minnen & Singh 2020)
    checkerboard         checkerboard.py    μ, σ of half the positions also from the other half,
                                            decoded first (He et al. 2021)
    space-channel        space_channel.py   channel groups, each in two checkerboard passes (ELIC,
                                            He et al. 2022)

Every entropy model is an nn.Module with the same methods and the same kinds of values:
    forward(v, quantizers)     → (v̂ for the decoder, {string name: likelihoods})
    compress(v, exact)         → {"strings": [bytes per name], "shape": (h, w) of the coded latent,
                                  "check": coding.check_value of what its decoder must rebuild}
    decompress(strings, shape, check, exact) → {string name: decoded latent}   ("y" is v̂)
    likelihoods(latents)       → {string name: likelihoods}      (of decoded latents)
    coded_shape((h, w) of v), symbol_counts(shape), update(force, update_quantiles)
and class attributes: `name` (its registry key), `names` (its strings, in order), `stride` (the
downsampling of its last coded latent, to which images are padded), `derives_tables` (whether the
table of a symbol is computed from decoded values, e.g. the hyperprior's σ = h_s(ẑ), rather than
fixed per channel) and `options` (its settings in ModelConfig.prior_options, with their defaults).

Networks whose outputs pick tables or means are lic_utils.exact.ExactSequential: outside training
they compute by their exact twin, the same bits on every machine; `exact=False` computes them in
float, as files of format 1 were written, which decode correctly only where the same floats come
out. `decompress` refuses (coding.TablesMismatch) what does not give the encoder's check value.
Training replaces rounding by a differentiable proxy (lic_utils.priors.quantization).
"""
from __future__ import annotations

REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make an entropy model available under `cls.name` (configs, CLI, bitstreams)."""
    if cls.name in REGISTRY:
        raise ValueError(f"two entropy models are named {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


from lic_utils.priors.quantization import (bottleneck_center, channel_view, quantize,  # noqa: E402
                                           quantize_pair, ste_round, uniform_noise)
from lic_utils.priors.factorized import FactorizedEntropyModel  # noqa: E402
from lic_utils.priors.gaussian import GaussianEntropyModel  # noqa: E402
from lic_utils.priors.hyperprior import HyperpriorEntropyModel  # noqa: E402
from lic_utils.priors.mean_scale import MeanScaleHyperprior  # noqa: E402
from lic_utils.priors.channel_groups import ChannelGroupsPrior  # noqa: E402
from lic_utils.priors.checkerboard import CheckerboardPrior  # noqa: E402
from lic_utils.priors.space_channel import SpaceChannelPrior  # noqa: E402

ENTROPY_MODELS = REGISTRY
__all__ = ["REGISTRY", "ENTROPY_MODELS", "register", "bottleneck_center", "channel_view", "quantize",
           "quantize_pair", "ste_round", "uniform_noise", "FactorizedEntropyModel", "GaussianEntropyModel",
           "HyperpriorEntropyModel", "MeanScaleHyperprior", "ChannelGroupsPrior", "CheckerboardPrior",
           "SpaceChannelPrior"]
