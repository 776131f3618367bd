"""Pure pixel preprocessing, identical on numpy arrays, eager tensors and in tf.data.

The one home of pixel-range conversion (as big_vision's `value_range` op):
`scale_images` (uint8 pixels → float in a value range) and `unscale_images` (float in a
value range → uint8, the serving convention). Every other module calls these.

Scaling divides (rather than multiplies by a rounded reciprocal) so the end points are
exact in float32: 0 → -1 / 0 and 255 → 1 for both ranges, never 1.0000001.
"""

import numpy as np

from tfmeta.errors import ConfigError, DataError

__all__ = ["VALUE_RANGES", "check_value_range", "scale_images", "unscale_images",
           "area_resize"]

# value_range -> (divisor, offset): float = uint8 / divisor - offset.
VALUE_RANGES = {
    "gan": (127.5, 1.0),        # [-1, 1], the tanh output range of generators
    "classifier": (255.0, 0.0),  # [0, 1]
    "pixels": (1.0, 0.0),        # [0, 255]: float pixel values (e.g. resampled images)
}


def check_value_range(value_range):
    """(divisor, offset) of a named value range; ConfigError names the valid ones."""
    if value_range not in VALUE_RANGES:
        raise ConfigError(f"unknown value_range {value_range!r}; choose one of "
                          f"{sorted(VALUE_RANGES)}")
    return VALUE_RANGES[value_range]


def _is_numpy(x):
    return isinstance(x, (np.ndarray, np.generic))


def scale_images(x, value_range, dtype=np.float32):
    """uint8 pixels → float in a value range: `x / divisor - offset`, computed in `dtype`.

    Args:
      x: uint8 images of any shape (usually `[N, H, W, C]` or `[H, W, C]`), 0..255: a
        numpy array, or anything `tf.convert_to_tensor` takes (eager tensors, symbolic
        tensors inside `tf.function` / `tf.data`).
      value_range: `"gan"` → `[-1, 1]`, `"classifier"` → `[0, 1]`, `"pixels"` →
        `[0, 255]` (see `VALUE_RANGES`). 0 and 255 land exactly on the range's ends.
      dtype: the float dtype of the result: float32 (default), float64 for metrics.

    Returns: the same shape in `dtype`; a numpy array for numpy input, else a `tf.Tensor`.
    Raises: ConfigError for an unknown `value_range`; DataError for non-uint8 input
      (already scaled?).
    """
    divisor, offset = check_value_range(value_range)
    if _is_numpy(x):
        if x.dtype != np.uint8:
            raise DataError(f"scale_images expects uint8 images; got {x.dtype} (already "
                            "scaled?)")
        dtype = np.dtype(dtype)
        return x.astype(dtype) / dtype.type(divisor) - dtype.type(offset)
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if x.dtype != tf.uint8:
        raise DataError(f"scale_images expects uint8 images; got {x.dtype.name} "
                        "(already scaled?)")
    return tf.cast(x, tf.as_dtype(dtype)) / divisor - offset


def unscale_images(x, value_range):
    """Float images in a value range → uint8 pixels 0..255; the inverse of `scale_images`.

    The serving convention (the exported SavedModel's output): in float32, clip to the
    range, then round half to even `(x + offset) * divisor`. So for `"gan"`: -1 → 0,
    0 → 128 (127.5 rounds to even), 1 → 255, values outside `[-1, 1]` are clipped; NaN
    has no defined result.

    Args:
      x: float images of any shape (usually `[N, H, W, C]`) in the range of
        `value_range` (`"gan"` `[-1, 1]`, `"classifier"` `[0, 1]`, `"pixels"`
        `[0, 255]`): a numpy array (any float dtype; cast to float32 first), or a
        tensor / anything `tf.convert_to_tensor` takes (eagerly or inside `tf.function`).
      value_range: as in `scale_images`.

    Returns: uint8, the same shape; a numpy array for numpy input, else a `tf.Tensor`.
    Raises: ConfigError for an unknown `value_range`.
    """
    divisor, offset = check_value_range(value_range)
    low, high = 0.0 / divisor - offset, 255.0 / divisor - offset
    if _is_numpy(x):
        y = np.clip(np.asarray(x, np.float32), np.float32(low), np.float32(high))
        return np.rint((y + np.float32(offset)) * np.float32(divisor)).astype(np.uint8)
    import tensorflow as tf

    y = tf.clip_by_value(tf.cast(x, tf.float32), low, high)
    return tf.cast(tf.round((y + offset) * divisor), tf.uint8)


def _area_weights(size_in, size_out):
    """float64 `[size_out, size_in]`: row i = overlap of each input pixel with output
    pixel i's footprint (length size_in / size_out), divided by that length."""
    edges = np.arange(size_out + 1) * (size_in / size_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size_in)[None, :]
    overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None)
    return overlap / (size_in / size_out)


def area_resize(images, height, width=None, chunk=1024):
    """Exact area (box) resampling of uint8 `[N, H, W]` → uint8 `[N, height, width]`.

    Each output pixel is the mean of the input over its footprint (fractional pixels
    weighted by their covered area), rounded once to the nearest integer. PIL's BOX
    filter does the same in two passes with fixed-point rounding in between and can be
    one level off; this is the reference. Numpy only, `chunk` images at a time.
    """
    images = np.asarray(images)
    width = height if width is None else width
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"area_resize expects uint8 [N, H, W]; got {images.dtype} "
                        f"{images.shape}")
    if images.shape[1:] == (height, width):
        return images.copy()
    rows = _area_weights(images.shape[1], height)
    cols = _area_weights(images.shape[2], width)
    out = np.empty((images.shape[0], height, width), dtype=np.uint8)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].astype(np.float64)
        resized = np.einsum("ih,nhw,jw->nij", rows, block, cols, optimize=True)
        out[start:start + chunk] = np.clip(np.rint(resized), 0, 255)
    return out
