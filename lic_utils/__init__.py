"""lic_utils: the package behind the notebook study of learned image compression with perceptual losses.

One concept per module: `data` (datasets and checksums), `metrics` (PSNR, MS-SSIM, LPIPS), `codecs`
(JPEG, WebP, AVIF, HEIC, JPEG 2000), `models` (the learned codec), `bitstream` (.lic files),
`losses`, `train`, `evaluate`, `plots`, `cli`. Modules are imported lazily by whoever needs them.
"""

__version__ = "0.1.0"
