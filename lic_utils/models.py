"""The learned codec, read top to bottom in the order an image flows through it (Ballé et al. 2018):

    x ─g_a─► y ─÷s─► v ─Q─► v̂ ─×s─► ŷ ─g_s─► x̂        s: a learned quantization step per channel
                          │
                          └─ entropy model p(v̂) (lic_utils.priors, one file each, by name)

The transforms are in `layers`, quantization and the entropy models in `priors`, the calls into
CompressAI's rANS coder in `coding`. In training, Q is a differentiable proxy (`ModelConfig.quantizer`:
"noise", "ste", or "mixed" = noise for the rate and STE for the reconstruction); in eval mode Q rounds,
exactly the values the entropy coder codes, so `decompress(compress(x))` equals
`model.eval()(x)["x_hat"]` bit for bit. Checkpoints hold the config, the weights and the coder tables.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import textwrap
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn

with warnings.catch_warnings():  # compressai's import triggers torch.jit.script deprecation notices
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.models import CompressionModel

from lic_utils import coding
from lic_utils.errors import LicError
from lic_utils.layers import analysis_transform, inference_layout, pad_to_multiple, synthesis_transform
from lic_utils.priors import ENTROPY_MODELS, channel_view

# Bump when the network's structure changes: checkpoints and .lic files of older code are refused.
ARCH_VERSION = 1
PRIORS = tuple(ENTROPY_MODELS)
QUANTIZERS = ("noise", "ste", "mixed")
# Fields that define the network (and so the bitstream). The quantizer only shapes training.
# prior_options joins them when it is not empty (so the hashes of models without options stay).
ARCH_FIELDS = ("prior", "channel_scale", "N", "M")

CHECKPOINT_FORMAT = "lic_utils.checkpoint"
CHECKPOINT_VERSION = 1


# --- configuration ----------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Everything needed to rebuild a codec; `config_hash` names the architecture in .lic files."""

    prior: str = "factorized"  # an entropy model of lic_utils.priors.REGISTRY
    quantizer: str = "noise"  # "noise" | "ste" | "mixed"
    channel_scale: bool = True  # learn a quantization step per latent channel
    N: int = 48  # hidden channels (48: encode + decode of a Kodak image ≤ 150 ms on 2 cores)
    M: int = 96  # latent channels
    prior_options: dict = field(default_factory=dict)  # the prior's own settings (its `options`)

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise LicError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        if not isinstance(self.prior_options, dict):
            raise LicError(f"prior_options must be a mapping, got {self.prior_options!r}")
        unknown = set(self.prior_options) - set(ENTROPY_MODELS[self.prior].options)
        if unknown:
            known = ", ".join(ENTROPY_MODELS[self.prior].options) or "none"
            raise LicError(f"unknown option(s) {sorted(unknown)} of the {self.prior} prior; its options: {known}")
        if self.quantizer not in QUANTIZERS:
            raise LicError(f"unknown quantizer {self.quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
        if not isinstance(self.channel_scale, bool):
            raise LicError(f"channel_scale must be true or false, got {self.channel_scale!r}")
        for name in ("N", "M"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise LicError(f"{name} must be an integer in 1..1024, got {value!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["prior_options"]:  # as configs were written before priors had options
            del d["prior_options"]
        return d

    @classmethod
    def from_dict(cls, d: dict | ModelConfig) -> ModelConfig:
        if isinstance(d, ModelConfig):
            return d
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            known = [f.name for f in fields(cls)]
            raise LicError(f"unknown model setting(s) {sorted(unknown)}; known: {known}")
        return cls(**d)

    def config_hash(self) -> str:
        """16 hex digits of sha256 over the architecture-defining fields (stable across runs)."""
        arch = {k: getattr(self, k) for k in ARCH_FIELDS} | {"arch_version": ARCH_VERSION}
        if self.prior_options:
            arch["prior_options"] = self.prior_options
        return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def pad_multiple(self) -> int:
        """Image sides are padded to this: the total downsampling of the latents that get coded."""
        return ENTROPY_MODELS[self.prior].stride


# --- the codec ---------------------------------------------------------------------------------------
class LearnedCodec(CompressionModel):
    """g_a / g_s of Ballé et al. 2018 around an entropy model of lic_utils.priors, with a learned step per channel."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        # (built in this order, which fixes the random initial weights and the parameter order)
        self.g_a = analysis_transform(N, M)
        self.g_s = synthesis_transform(N, M)
        # s = exp(log_channel_scale): the entropy model sees y/s, the decoder gets round(y/s)·s.
        self.log_channel_scale = nn.Parameter(torch.zeros(M)) if config.channel_scale else None
        self.prior = ENTROPY_MODELS[config.prior](N, M, **config.prior_options)
        self._fingerprint_cache: tuple | None = None

    # --- the forward pass, in data-flow order: g_a → ÷s → Q and prior → ×s → g_s
    def forward(self, x: torch.Tensor) -> dict:
        """x (B×3×H×W in [0, 1]) → {"x_hat", "likelihoods", "bpp"}: bpp per original pixel, batch mean."""
        H, W = x.shape[-2:]
        v = self.analyze(pad_to_multiple(x, self.config.pad_multiple))
        v_hat, likelihoods = self.prior(v, self.quantizers())
        bits = sum(-torch.log2(p).flatten(1).sum(1) for p in likelihoods.values())
        return {"x_hat": self.synthesize(v_hat, (H, W)), "likelihoods": likelihoods,
                "bpp": (bits / (H * W)).mean()}

    def analyze(self, x: torch.Tensor) -> torch.Tensor:
        """Padded image → v = g_a(x)/s, the values the entropy model sees."""
        y = self.g_a(x if self.training else inference_layout(x))
        return y / self.channel_scale() if self.log_channel_scale is not None else y

    def channel_scale(self) -> torch.Tensor:
        """s, shape 1×M×1×1 (ones when the config has no learned scale)."""
        if self.log_channel_scale is None:
            return torch.ones(1, self.config.M, 1, 1, device=self.g_a[0].weight.device)
        return channel_view(self.log_channel_scale.exp())

    def quantizers(self) -> tuple[str, str]:
        """(proxy for the rate term, proxy for the reconstruction); rounding for both in eval mode."""
        if not self.training:
            return "round", "round"
        q = self.config.quantizer
        return ("noise", "ste") if q == "mixed" else (q, q)

    def synthesize(self, v_hat: torch.Tensor, size=None) -> torch.Tensor:
        """v̂ → x̂ = g_s(v̂·s), cropped to `size` (H, W); clamped to [0, 1] outside training."""
        y_hat = v_hat * self.channel_scale() if self.log_channel_scale is not None else v_hat
        x_hat = self.g_s(y_hat if self.training else inference_layout(y_hat))
        if size is not None:
            x_hat = x_hat[..., : size[0], : size[1]]
        if not self.training:
            x_hat = x_hat.nan_to_num(0.0).clamp(0, 1)
        return x_hat.contiguous()

    # --- entropy coding: the same path with rounding, and bytes instead of likelihoods
    @torch.inference_mode()
    def compress(self, x: torch.Tensor, exact: bool = True) -> dict:
        """One image (1×3×H×W) → {"strings": [bytes per name], "shape": coded latent (h, w),
        "image_size": (H, W), "check": the check value of its coding tables}.

        `exact=False` derives the coding tables in float, as files of format 1 were written (they
        decode correctly only where the same floats are computed): for comparisons only."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise LicError(f"compress takes one RGB image as a 1×3×H×W tensor, got shape {tuple(x.shape)}")
        if not self.coder_ready():
            raise LicError("the entropy coder tables are not built: call model.update(force=True) first")
        with self._eval_mode():
            v = self.analyze(pad_to_multiple(x, self.config.pad_multiple))
            coding.check_latents(v)
            coded = self.prior.compress(v, exact)
        return {"strings": list(coded["strings"]), "shape": coded["shape"], "image_size": tuple(x.shape[-2:]),
                "check": coded["check"]}

    @torch.inference_mode()
    def decompress(self, strings: list[bytes], shape, image_size=None, check: bytes | None = None,
                   exact: bool = True) -> torch.Tensor:
        """Strings and the coded latent shape (from `compress`) → x̂ (1×3×H×W), cropped to `image_size`.

        With `check` (from `compress`), a coding.TablesMismatch instead of a wrong image when this
        machine derives other coding tables than the encoder did."""
        with self._eval_mode():
            return self.synthesize(self.decode_latents(strings, shape, check, exact)["y"], image_size)

    @torch.inference_mode()
    def decode_latents(self, strings: list[bytes], shape, check: bytes | None = None,
                       exact: bool = True) -> dict[str, torch.Tensor]:
        """The entropy-decoded latents of a bitstream, per string name ("y" is v̂), before synthesis."""
        with self._eval_mode():
            return self.prior.decompress(self._guarded(strings, shape), shape, check, exact)

    @torch.inference_mode()
    def estimate_bits(self, strings: list[bytes], shape, check: bytes | None = None,
                      exact: bool = True) -> dict[str, float]:
        """The model's −log2 p of the latents a bitstream holds, per string name (no image needed)."""
        with self._eval_mode():
            likelihoods = self.prior.likelihoods(self.decode_latents(strings, shape, check, exact))
        return {k: float(-torch.log2(p).sum()) for k, p in likelihoods.items()}

    def _guarded(self, strings: list[bytes], shape) -> list[bytes]:
        """Strings checked against the coded shape and padded for the native decoder (coding.rans_safe)."""
        if len(strings) != len(self.string_names):
            raise LicError(f"expected {len(self.string_names)} strings ({', '.join(self.string_names)}), "
                           f"got {len(strings)}")
        if len(shape) != 2 or not all(isinstance(n, int) and 1 <= n <= 4096 for n in shape):
            raise LicError(f"latent shape {tuple(shape)} is not two integers in 1..4096")
        return [coding.rans_safe(bytes(s), n) for s, n in zip(strings, self.symbol_counts(shape))]

    @contextmanager
    def _eval_mode(self):
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @property
    def string_names(self) -> tuple[str, ...]:
        """Names of the strings `compress` returns, in order ("y"; "y", "z" for the hyperprior)."""
        return self.prior.names

    def coded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The latent shape `compress` reports for an image of this size (y's; z's for the hyperprior)."""
        m = self.config.pad_multiple
        return self.prior.coded_shape((math.ceil(height / m) * m // 16, math.ceil(width / m) * m // 16))

    def symbol_counts(self, shape) -> list[int]:
        """How many symbols each string codes, for a coded latent shape."""
        return self.prior.symbol_counts(tuple(shape))

    def update(self, force: bool = False, update_quantiles: bool = True) -> bool:
        """Build the rANS tables from the current densities (call after training, before compress).

        `update_quantiles` first moves the EntropyBottleneck's tail quantiles to where the aux loss
        would converge (bisection), so the tables cover the densities' mass.
        """
        with torch.no_grad():
            updated = self.prior.update(force=force, update_quantiles=update_quantiles)
        self._fingerprint_cache = None
        return updated

    def coder_ready(self) -> bool:
        return all(coding.tables_ready(m) for m in self.modules()
                   if isinstance(m, (coding.EntropyBottleneck, coding.GaussianConditional)))

    # --- parameters and identity
    def aux_parameters(self):
        """The EntropyBottleneck quantiles: trained by the aux loss alone, with their own optimizer."""
        return (p for n, p in self.named_parameters() if n.endswith("quantiles"))

    def main_parameters(self):
        return (p for n, p in self.named_parameters() if not n.endswith("quantiles"))

    def aux_loss(self) -> torch.Tensor:
        losses = [m.loss() for m in self.modules() if isinstance(m, coding.EntropyBottleneck)]
        return sum(losses) if losses else torch.zeros((), device=self.g_a[0].weight.device)

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the whole state_dict: the model's identity (.lic headers,
        evaluation caches, tables).

        Checkpoints of one architecture (say, trained for different λ) share a config hash; this tells
        them apart. Cached until a tensor changes (tracked through torch's in-place version counters).
        """
        sd = self.state_dict()
        key = tuple((k, t.data_ptr(), t._version, tuple(t.shape)) for k, t in sd.items())
        if self._fingerprint_cache is not None and self._fingerprint_cache[0] == key:
            return self._fingerprint_cache[1]
        h = hashlib.sha256()
        for name in sorted(sd):
            t = sd[name].detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().tobytes())
        digest = h.hexdigest()[:16]
        self._fingerprint_cache = (key, digest)
        return digest


def build_model(cfg: ModelConfig | dict | None = None) -> LearnedCodec:
    """A fresh (untrained) codec for a config or its dict (defaults if None)."""
    return LearnedCodec(ModelConfig.from_dict(cfg if cfg is not None else {}))


# --- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(path, model: LearnedCodec, extra: dict | None = None) -> Path:
    """Write config, config hash, weights and coder tables (and the trainer's `extra`) atomically.

    The coder tables are built if they are missing; after further training call
    `model.update(force=True)` first. `extra` is stored as an opaque blob so that `load_checkpoint` never unpickles it.
    """
    from lic_utils.files import atomic_torch_save

    if not model.coder_ready():
        model.update(force=True)
    blob = None
    if extra is not None:
        buf = io.BytesIO()
        torch.save(extra, buf)
        blob = buf.getvalue()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "config_hash": model.config.config_hash(),
        "fingerprint": model.fingerprint(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": blob,
    }
    return atomic_torch_save(payload, path)


def _read_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise LicError(f"checkpoint {path} not found "
                       "(train one with `python -m lic_utils train`, or fix the path)")
    if path.stat().st_size == 0:
        raise LicError(f"{path} is empty (0 bytes), not a checkpoint: copy or train it again")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused it: say why, not how to bypass that
        lines = str(e).partition("WeightsUnpickler error:")[2].strip().splitlines() or ["unknown"]
        raise LicError(f"{path} is not a lic_utils checkpoint (refused by the weights-only loader: "
                       f"{_brief(lines[0].split('. Please')[0])})") from None
    except Exception as e:  # noqa: BLE001 - any unpickling problem means "not our checkpoint"
        raise LicError(f"{path} is not a lic_utils checkpoint ({type(e).__name__}: {_brief(e)})"
                       ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise LicError(f"{path} is not a lic_utils checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise LicError(f"{path} is checkpoint format version {ckpt.get('version')}; "
                       f"this code reads version {CHECKPOINT_VERSION}")
    return ckpt


def load_checkpoint(path, map_location="cpu") -> LearnedCodec:
    """A codec ready for compress/decompress (eval mode, coder tables loaded); needs no training code."""
    ckpt = _read_checkpoint(path, map_location)
    cfg = ModelConfig.from_dict(ckpt["config"])
    if cfg.config_hash() != ckpt["config_hash"]:
        raise LicError(
            f"{path} was written for architecture {ckpt['config_hash']} but its config now hashes to "
            f"{cfg.config_hash()} (the model code changed: ARCH_VERSION {ARCH_VERSION}); "
            "retrain or use matching code"
        )
    model = LearnedCodec(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise LicError(f"{path}: weights do not fit config {cfg.to_dict()} ({_brief(e)})") from None
    model = model.to(map_location).eval()
    if not model.coder_ready():
        model.update(force=True)
        return model
    if ckpt.get("fingerprint") not in (None, model.fingerprint()):
        raise LicError(f"{path} is corrupted: its weights hash to {model.fingerprint()}, "
                       f"the file says {ckpt['fingerprint']}")
    for name, coder in model.named_modules():
        if isinstance(coder, (coding.EntropyBottleneck, coding.GaussianConditional)):
            try:
                coding.validate_tables(coder, name)
            except LicError as e:
                raise LicError(f"{path} is corrupted: {e}; retrain or use another checkpoint") from None
    return model


def _brief(e) -> str:
    """An exception's message on one line, at most 200 characters, cut between words."""
    return textwrap.shorten(" ".join(str(e).split()), 200, placeholder=" …") or type(e).__name__


def load_checkpoint_extra(path, map_location="cpu") -> dict | None:
    """The `extra` dict given to save_checkpoint (the trainer's state), or None.

    Loaded with `weights_only=True`, like the checkpoint itself: plain tensors, numbers, strings,
    lists and dicts only, so that a planted blob can never run code when a run is resumed.
    """
    path = Path(path)
    blob = _read_checkpoint(path, map_location).get("extra")
    if blob is None:
        return None
    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything but plain data is refused
        raise LicError(f"{path}: its training state is not plain data ({type(e).__name__}); "
                       "delete the run folder to retrain") from None
