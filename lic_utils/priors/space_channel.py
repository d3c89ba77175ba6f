"""ELIC's space-channel context (He et al. 2022): the channel groups of channel_groups.py coded one
after the other, each in the two checkerboard passes of checkerboard.py. The μ and σ of group k come
from the hyperprior's features and the groups decoded before it, and, for the group's non-anchors,
from its own decoded anchors around them (a checkerboard-masked 5×5 convolution). 2 × (number of
groups) sequential steps, each decoded in parallel over space; CompressAI's published Kodak curves
put ELIC ≈ 34 % in bits ahead of the scale hyperprior.

All networks are ExactSequential; every pass of every group goes into one rANS string
(coding.GaussianStream); the check value covers every pass's tables and means.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from lic_utils import coding
from lic_utils.exact import ExactSequential, float_arithmetic
from lic_utils.priors import register
from lic_utils.priors.channel_groups import checked_groups, group_network
from lic_utils.priors.checkerboard import CheckerboardContext, anchors
from lic_utils.priors.mean_scale import MeanScaleHyperprior
from lic_utils.priors.quantization import bottleneck_center, quantize_pair


@register
class SpaceChannelPrior(MeanScaleHyperprior):
    """The mean-scale hyperprior's features, then per channel group its anchors and non-anchors."""

    name = "space-channel"
    names = ("y", "z")
    stride = 64
    derives_tables = True
    options: dict = {"groups": None}

    def __init__(self, N: int, M: int, groups=None):
        super().__init__(N, M)
        self.groups = checked_groups(groups, M)
        hidden = max(N, 2 * max(self.groups))
        before = [sum(self.groups[:k]) for k in range(len(self.groups))]
        self.spatial = nn.ModuleList(ExactSequential(CheckerboardContext(g, 2 * g, 5, padding=2))
                                     for g in self.groups)
        self.params = nn.ModuleList(group_network(2 * M + b + 2 * g, hidden, 2 * g, 1)
                                    for b, g in zip(before, self.groups))

    def pass_params(self, k: int, features, decoded: list, own_anchors):
        """(μ, σ) of group k: without spatial context (its anchors' pass, `own_anchors` None), or
        with the context of its decoded anchors."""
        g = self.groups[k]
        ctx = (features.new_zeros(features.shape[0], 2 * g, *features.shape[-2:]) if own_anchors is None
               else self.spatial[k](own_anchors))
        scales, means = self.params[k](torch.cat([features, *decoded, ctx], 1)).chunk(2, 1)
        return means.contiguous(), scales.contiguous()

    def _walk(self, features, quantizers, v=None, stream=None):
        """Every pass in coding order: (positions, coded values, μ, σ); and v̂."""
        first = anchors(*features.shape[-2:], features.device)
        decoded, out = [], []
        parts = v.split(self.groups, 1) if v is not None else [None] * len(self.groups)
        for k, part in enumerate(parts):
            y_k = None
            for mask in (first, ~first):
                means, scales = self.pass_params(k, features, decoded, None if y_k is None else y_k * first)
                if stream is not None:
                    pick = mask.expand_as(means)
                    coded = torch.zeros_like(means)
                    coded[pick] = stream.decode(self.table_indexes(scales[pick]), means[pick])
                    for_rate = coded
                else:
                    for_rate, coded = quantize_pair(part, quantizers, means)
                y_k = torch.where(mask, coded, 0.0 if y_k is None else y_k)
                out.append((mask, for_rate, means, scales))
            decoded.append(y_k)
        return out, torch.cat(decoded, 1)

    def _parts(self, v_hat_or_v, walked):
        """Split a whole latent into the passes' pieces, in coding order."""
        pieces, groups = [], v_hat_or_v.split(self.groups, 1)
        for i, (mask, _, means, scales) in enumerate(walked):
            pick = mask.expand_as(means)
            pieces.append((groups[i // 2][pick], means[pick], scales[pick]))
        return pieces

    def forward(self, v, quantizers):
        z = self.h_a(v)
        z_rate, z_synth = quantize_pair(z, quantizers, bottleneck_center(self.entropy_bottleneck))
        walked, v_hat = self._walk(self.h_s(z_synth), quantizers, v=v)
        gc, lik = self.gaussian_conditional, []
        for i in range(0, len(walked), 2):
            (m1, r1, mu1, s1), (_, r2, mu2, s2) = walked[i], walked[i + 1]
            lik.append(torch.where(m1, coding.gaussian_likelihood(gc, r1, s1, mu1),
                                   coding.gaussian_likelihood(gc, r2, s2, mu2)))
        return v_hat, {"y": torch.cat(lik, 1), "z": coding.bottleneck_likelihood(self.entropy_bottleneck, z_rate)}

    def compress(self, v, exact: bool = True) -> dict:
        gc = self.gaussian_conditional
        z_string, z_hat, z_indexes = self.code_side_information(v)
        with float_arithmetic(self, not exact):
            walked, _ = self._walk(self.h_s(z_hat), ("round", "round"), v=v)
        parts, checked = [], [z_indexes]
        for values, means, scales in self._parts(v, walked):
            indexes = self.table_indexes(scales)
            coding.check_encodable(torch.round(values - means).int(), indexes, gc)
            parts.append((values, indexes, means))
            checked += [indexes, means]
        return {"strings": [coding.encode_gaussian(gc, parts), z_string], "shape": tuple(z_hat.shape[-2:]),
                "check": coding.check_value(checked)}

    def decompress(self, strings, shape, check=None, exact: bool = True) -> dict:
        z_hat, z_indexes = self.decode_side_information(strings[1], shape)
        with float_arithmetic(self, not exact):
            walked, v_hat = self._walk(self.h_s(z_hat), None,
                                       stream=coding.GaussianStream(self.gaussian_conditional, strings[0]))
        checked = [z_indexes]
        for _, means, scales in self._parts(v_hat, walked):
            checked += [self.table_indexes(scales), means]
        coding.verify_check(checked, check)  # later passes' tables depend on earlier passes' values
        return {"y": v_hat, "z": z_hat}

    def likelihoods(self, latents: dict) -> dict:
        v_hat, features = latents["y"], self.h_s(latents["z"])
        first = anchors(*v_hat.shape[-2:], v_hat.device)
        groups, gc, lik = v_hat.split(self.groups, 1), self.gaussian_conditional, []
        for k, y_k in enumerate(groups):
            mu1, s1 = self.pass_params(k, features, list(groups[:k]), None)
            mu2, s2 = self.pass_params(k, features, list(groups[:k]), y_k * first)
            lik.append(torch.where(first, coding.gaussian_likelihood(gc, y_k, s1, mu1),
                                   coding.gaussian_likelihood(gc, y_k, s2, mu2)))
        return {"y": torch.cat(lik, 1), "z": coding.bottleneck_likelihood(self.entropy_bottleneck, latents["z"])}

    def side_information(self, v: torch.Tensor) -> dict:
        z_hat = self.quantized_side_information(v)
        walked, _ = self._walk(self.h_s(z_hat), ("round", "round"), v=v)
        merged = [torch.where(walked[i][0], walked[i][j], walked[i + 1][j]) for i in range(0, len(walked), 2)
                  for j in (2, 3)]
        return {"z_hat": z_hat, "anchors": walked[0][0], "groups": self.groups,
                "means": torch.cat(merged[0::2], 1), "scales": torch.cat(merged[1::2], 1)}
