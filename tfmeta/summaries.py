"""TensorBoard helpers: image grids and scalar dicts."""

import numpy as np

from tfmeta.data.preprocess import unscale_images

__all__ = ["image_grid", "to_uint8", "write_scalars", "write_image_grid"]


def to_uint8(images, value_range="gan"):
    """Kept name for `tfmeta.data.unscale_images` with numpy output: float images
    (numpy or eager tensors) in [-1, 1] ("gan") or [0, 1] ("classifier") → uint8 numpy."""
    return unscale_images(np.asarray(images), value_range)


def image_grid(rows, pad=2, pad_value=128):
    """Tiles a list of rows into one image.

    Args:
      rows: list of uint8 arrays [n_i, H, W, C] (rows may have different lengths;
        short rows are padded with `pad_value`).
    Returns:
      uint8 [H_total, W_total, C].
    """
    rows = [np.asarray(r) for r in rows if len(r)]
    if not rows:
        raise ValueError("image_grid needs at least one non-empty row")
    _, h, w, c = rows[0].shape
    ncols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value,
                   dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = img
    return grid


def write_scalars(writer, metrics, step, prefix=""):
    """Writes each scalar of `metrics` (dict name → number) at `step`."""
    import tensorflow as tf
    with writer.as_default(step=step):
        for name, value in metrics.items():
            tf.summary.scalar(prefix + name, float(value))


def write_image_grid(writer, name, grid, step):
    """Writes one uint8 [H, W, C] grid as an image summary."""
    import tensorflow as tf
    with writer.as_default(step=step):
        tf.summary.image(name, grid[None], step=step, max_outputs=1)
