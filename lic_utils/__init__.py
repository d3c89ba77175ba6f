"""lic_utils: the package behind the notebook study of learned image compression with perceptual losses.

One concept per module, in the order an image meets them:
- `data`      datasets (Kodak, BSDS500, the LPIPS backbone), resolved and checked by sha256
- `layers`    the transforms g_a, g_s, h_a, h_s
- `priors`    quantization and the entropy models, one file each, registered by name
- `coding`    CompressAI's rANS coder, the guards around it and the check value of the tables
- `exact`     the exact twin of a network of convolutions: coding tables that are the same bits on
              every machine
- `models`    the codec (`LearnedCodec`: g_a → ÷s → Q → prior → ×s → g_s) and its checkpoints
- `bitstream` .lic files
- `losses`    L = λ·R + MSE + β·(1 − MS-SSIM) + γ·LPIPS
- `train`     the trainer, with `config` (TrainConfig), `run_folder` (what a run leaves on disk) and
              `distributed` (devices, torchrun, RNG state); `sweeps` grids of runs; `profiles` the
              one table of smoke / cpu / gpu
- `metrics`   PSNR, MS-SSIM, LPIPS;  `codecs` JPEG, WebP, AVIF, HEIC, JPEG 2000 with real files
- `evaluate`  real files on Kodak;  `compare` BD-rates, standings, ablations and the claims check
- `visual`    notebook 08's images at matched bytes;  `plots` one function per figure;  `probes` what
              notebooks inspect inside a codec
- `study`     the notebooks' one-call set-up, the study's grid and `make study`
- `cli`       `python -m lic_utils …`;  `files` folders and atomic writes;  `errors` the one-line LicError;
              `threads` torch's thread count, fixed for code whose numbers are compared
Modules are imported lazily by whoever needs them.
"""

__version__ = "0.1.0"
