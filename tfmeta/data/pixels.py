"""Image conversion shared by the sources of arbitrary images (a folder, TFDS): one
image → uint8 `[h, w, channels]`, ink polarity (given, or detected per dataset), and the
decode → invert → area-resize pipeline with progress lines.

Conventions (docs/DATASETS.md):
  * channels 1: gray; colour images become their luma (ITU-R 601-2, PIL's "L":
    L = 0.299 R + 0.587 G + 0.114 B). channels 3: RGB; gray images are repeated.
  * Transparent pixels are composited over white (paper) first; 16-bit images are scaled
    to 8 bits; an animated GIF gives its first frame.
  * Ink polarity: `ClassImages` has bright strokes (0 = background, 255 = ink).
    "bright": the source is like that; "dark": dark ink on light paper, inverted
    (255 - x); "auto": decided once per dataset from the border of up to 256 images
    spread over it (border median above 127 = light paper = dark ink, by majority).
    Inversion is applied at full size, before the resize.
  * Resizing: `preprocess.area_resize` of each channel to a square `image_size`
    (the aspect ratio is not kept).
"""

import logging
import time

import numpy as np
from PIL import Image

from tfmeta.data.preprocess import area_resize
from tfmeta.errors import ConfigError

__all__ = ["IMAGE_EXTENSIONS", "INK_POLARITIES", "check_ink_polarity", "to_array",
           "border_median", "resolve_invert", "resize_all", "decode_resize"]

_log = logging.getLogger(__name__)

# File name endings (lower case) of the image files a folder source reads.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
INK_POLARITIES = ("auto", "bright", "dark")
_POLARITY_SAMPLE = 256       # images whose border decides "auto"
_CHUNK_IMAGES = 2048         # images decoded before a resize and a progress line
_CHUNK_PIXELS = 32 * 2 ** 20  # ... or fewer, when they are large
_RESIZE_PIXELS = 4 * 2 ** 20  # input pixels per area_resize block (float64 inside)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def check_ink_polarity(ink_polarity):
    """`ink_polarity` if it is one of INK_POLARITIES, else a ConfigError."""
    if ink_polarity not in INK_POLARITIES:
        raise ConfigError(f"--ink_polarity must be one of {INK_POLARITIES} (auto: detect "
                          "from the image borders; bright: light strokes on a dark "
                          "background, kept; dark: dark ink on light paper, inverted); "
                          f"got {ink_polarity!r}")
    return ink_polarity


def to_array(image, channels):
    """uint8 `[h, w, channels]` of a PIL image (see the module docstring for colour,
    transparency and 16-bit images). Raises what PIL raises for undecodable data."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        scale = 1.0 if image.mode == "F" else 257.0   # 16-bit → 8-bit; float as 0..255
        values = np.asarray(image, dtype=np.float64) / scale
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], channels)


def border_median(array):
    """Median luma of the outermost rows and columns of a uint8 `[h, w, c]` image."""
    gray = array.astype(np.float64)
    if gray.shape[-1] == 3:
        gray = gray @ np.array([0.299, 0.587, 0.114])
    else:
        gray = gray[..., 0]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border))


def resolve_invert(ink_polarity, count, read, what):
    """True when images must be inverted to have bright strokes.

    ink_polarity "bright" / "dark" decide; "auto" reads (`read(i)` → uint8
    `[h, w, c]`) up to 256 images spread evenly over `0..count-1` and inverts when most
    have a light border. A sample that is split (over 10% on the minority side) is
    logged as a warning naming `what`, with the flag that settles it.
    """
    check_ink_polarity(ink_polarity)
    if ink_polarity != "auto":
        return ink_polarity == "dark"
    index = np.unique(np.linspace(0, count - 1, min(count, _POLARITY_SAMPLE)).astype(int))
    light = sum(border_median(read(int(i))) > 127 for i in index)
    invert = 2 * light > len(index)
    minority = min(light, len(index) - light)
    _log.info("ink polarity of %s: %d of %d sampled images have a light border → %s",
              what, light, len(index),
              "dark ink on light paper, inverted" if invert else "bright strokes, kept")
    if len(index) >= 10 and minority > 0.1 * len(index):
        _log.warning("%s mixes ink polarities: %d of %d sampled images have a %s border "
                     "(the others do not); all are %s. Set --ink_polarity=bright or "
                     "--ink_polarity=dark if that is wrong", what, minority, len(index),
                     "dark" if invert else "light",
                     "inverted" if invert else "kept as they are")
    return invert


def resize_all(arrays, image_size):
    """Area-resizes a list of uint8 `[h, w, c]` (any sizes, same c) to uint8
    `[n, S, S, c]`, each channel separately."""
    channels = arrays[0].shape[-1]
    out = np.empty((len(arrays), image_size, image_size, channels), dtype=np.uint8)
    by_shape = {}
    for i, array in enumerate(arrays):
        by_shape.setdefault(array.shape, []).append(i)
    for (height, width, _), rows in by_shape.items():
        stack = np.stack([arrays[i] for i in rows])                  # [n, h, w, c]
        planes = np.moveaxis(stack, -1, 1).reshape(-1, height, width)  # [n*c, h, w]
        chunk = max(1, _RESIZE_PIXELS // (height * width))
        resized = area_resize(planes, image_size, chunk=chunk)
        out[rows] = np.moveaxis(resized.reshape(len(rows), channels, image_size,
                                                image_size), 1, -1)
    return out


def decode_resize(count, read, image_size, channels, invert, what):
    """uint8 `[count, S, S, channels]`: `read(i)` (→ uint8 `[h, w, channels]`, full
    size) for every i in order, inverted if `invert`, area-resized to S = `image_size`
    in chunks (bounded memory for large images), with a progress line per chunk."""
    images = np.empty((count, image_size, image_size, channels), dtype=np.uint8)
    start, done, pending, pixels = time.time(), 0, [], 0
    for i in range(count):
        array = read(i)
        pending.append(255 - array if invert else array)
        pixels += array.size
        if len(pending) == _CHUNK_IMAGES or pixels >= _CHUNK_PIXELS or i == count - 1:
            images[done:done + len(pending)] = resize_all(pending, image_size)
            done += len(pending)
            pending, pixels = [], 0
            _log.info("  %s: %d/%d images (%.1f s)", what, done, count, time.time() - start)
    return images
