"""PSNR and SSIM, and their "nearest support image" variant for few-shot generation.

SSIM: Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 13(4), with their constants: Gaussian
window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering (no padding), mean of
the SSIM map over positions and then over channels — the same definition as
`tf.image.ssim` (checked against it in tests/test_eval.py).

Input convention (here and in `nearest_support_psnr_ssim`): uint8 images are divided
by 255; float images must already lie in [0, 1]. Everything is computed in float64.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tfmeta.data.preprocess import scale_images
from tfmeta.errors import DataError

__all__ = ["psnr", "ssim", "nearest_support_psnr_ssim", "to_unit_float"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit_float(images, name="images"):
    """uint8 → float64 / 255; float → float64, checked to lie in [0, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return scale_images(images, "classifier", np.float64)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{name} must be uint8 or float in [0, 1]; got dtype {images.dtype}")
    images = images.astype(np.float64)
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise DataError(f"float {name} must lie in [0, 1]; got range "
                        f"[{images.min():.3g}, {images.max():.3g}] (scale [-1, 1] images "
                        "with (x + 1) / 2)")
    return images


def _pair(images1, images2):
    x, y = to_unit_float(images1, "images1"), to_unit_float(images2, "images2")
    if x.shape != y.shape or x.ndim != 4:
        raise DataError(f"images must both be [N, H, W, C] of the same shape; got {x.shape} "
                        f"and {y.shape}")
    return x, y


def psnr(images1, images2):
    """Peak signal-to-noise ratio in dB, per image pair; peak value 1.0.

    images1, images2: `[N, H, W, C]` (see module input convention).
    Returns float64 `[N]`; `inf` where the images are identical.
    """
    x, y = _pair(images1, images2)
    mse = np.mean(np.square(x - y), axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def _gaussian_window():
    offsets = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2.0
    window = np.exp(-0.5 * np.square(offsets / SSIM_SIGMA))
    return window / window.sum()


def _filter_valid(images):
    """Separable Gaussian filter of `[N, H, W, C]` without padding → `[N, H-10, W-10, C]`."""
    window = _gaussian_window()
    rows = sliding_window_view(images, SSIM_WINDOW, axis=1) @ window
    return sliding_window_view(rows, SSIM_WINDOW, axis=2) @ window


def ssim(images1, images2):
    """Structural similarity per image pair, float64 `[N]` in [-1, 1]; 1 for identical.

    images1, images2: `[N, H, W, C]` with H, W >= 11 (see module input convention).
    """
    x, y = _pair(images1, images2)
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise DataError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got "
                        f"{x.shape[1]}x{x.shape[2]}")
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # (K * peak)^2 with peak 1.0
    mu_x, mu_y = _filter_valid(x), _filter_valid(y)
    # Biased local (co)variances under the Gaussian window, as in Wang et al.
    var_x = _filter_valid(x * x) - mu_x * mu_x
    var_y = _filter_valid(y * y) - mu_y * mu_y
    cov_xy = _filter_valid(x * y) - mu_x * mu_y
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    contrast_structure = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    return np.mean(luminance * contrast_structure, axis=(1, 2, 3))


def nearest_support_psnr_ssim(samples, support):
    """PSNR and SSIM of each sample against its nearest support image (pixel MSE).

    This measures *closeness to the support set* — how much a few-shot generator copies
    (memorises) its K examples versus departing from them — not sample quality: a
    generator that returns its support images verbatim scores PSNR = inf and SSIM = 1,
    and a good generator of new drawings of the character scores lower. Report it next
    to the Fréchet distance, diversity and augmentation accuracy, never alone.

    Args:
      samples: `[N, H, W, C]` generated images of one class.
      support: `[K, H, W, C]` the support images they were generated from.

    Returns:
      dict with "psnr" and "ssim" (float64 `[N]`), "nearest" (int64 `[N]` index into
      support), and "mean_psnr" (mean over finite values, inf if none are finite),
      "mean_ssim", "fraction_copies" (share of samples identical to a support image).
    """
    x, s = to_unit_float(samples, "samples"), to_unit_float(support, "support")
    if x.ndim != 4 or s.ndim != 4 or x.shape[1:] != s.shape[1:] or s.shape[0] < 1:
        raise DataError(f"samples [N, H, W, C] and support [K >= 1, H, W, C] must share "
                        f"H, W, C; got {x.shape} and {s.shape}")
    flat_x = x.reshape(x.shape[0], -1)
    flat_s = s.reshape(s.shape[0], -1)
    mse = (np.sum(flat_x ** 2, 1)[:, None] + np.sum(flat_s ** 2, 1)[None, :]
           - 2.0 * flat_x @ flat_s.T) / flat_x.shape[1]
    nearest = np.argmin(mse, axis=1)
    matched = s[nearest]
    psnr_values = psnr(x, matched)
    ssim_values = ssim(x, matched)
    finite = psnr_values[np.isfinite(psnr_values)]
    return {
        "psnr": psnr_values,
        "ssim": ssim_values,
        "nearest": nearest.astype(np.int64),
        "mean_psnr": float(finite.mean()) if finite.size else float("inf"),
        "mean_ssim": float(ssim_values.mean()),
        "fraction_copies": float(np.mean(~np.isfinite(psnr_values))),
    }
