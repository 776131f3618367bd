"""MNIST (LeCun, Bottou, Bengio & Haffner 1998) from the raw IDX files.

Reads `train-images-idx3-ubyte.gz` / `train-labels-idx1-ubyte.gz` (split "train",
60000 images) and `t10k-*` (split "test", 10000), gzip-compressed or not. Digits are
already bright on a dark background, as `ClassImages` wants. Classes are ragged (e.g.
5421 fives, 6742 ones in train); no image is dropped.
"""

import gzip
import os

import numpy as np

from tfmeta.data import cache
from tfmeta.data.locations import resolve_data_dir
from tfmeta.data.preprocess import area_resize
from tfmeta.data.types import ClassImages
from tfmeta.errors import ConfigError, DataError

__all__ = ["SPLITS", "load_mnist", "read_idx", "load"]

# split -> file prefix of the official files.
SPLITS = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


def read_idx(path, expected_magic):
    """Parses an IDX file (optionally gzipped) into a uint8 array of its dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}); re-download the MNIST file") from exc
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != expected_magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic "
                        f"{raw[:4].hex()} instead of {expected_magic:08x})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or padded: header says {dims}, "
                        f"{len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise DataError(f"MNIST file {name}.gz not found in {folder}. Put the four official "
                    "files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in "
                    "<data_dir>/mnist/ and pass --data_dir or set $TFMETA_DATA_DIR.")


def decode_files(images_path, labels_path, image_size):
    """`ClassImages` `[N, S, S, 1]` from a pair of IDX files, sorted by digit."""
    images = read_idx(images_path, _IMAGES_MAGIC)
    labels = read_idx(labels_path, _LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} has {images.shape[0]} images but {labels_path} "
                        f"has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path} holds labels outside 0..9")
    images = area_resize(images, image_size)[..., None]
    return ClassImages(images, labels.astype(np.int32), [str(d) for d in range(10)])


def load_mnist(split="train", image_size=28, data_dir=None, cache_dir=None, **unused):
    """`ClassImages` of an MNIST split ("train" / "test"), uint8 `[N, S, S, 1]`.

    Falls back to TFDS when neither `data_dir` nor $TFMETA_DATA_DIR is set. `unused`
    swallows the Omniglot-only arguments of `load_class_images`.
    """
    del unused
    if split not in SPLITS:
        raise ConfigError(f"unknown MNIST split {split!r}; choose one of {sorted(SPLITS)}")
    folder = resolve_data_dir(data_dir, "mnist")
    if folder is None:
        from tfmeta.data import tfds_source  # imports tensorflow_datasets: only here
        return tfds_source.load_mnist_tfds(split, image_size)
    prefix = SPLITS[split]
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    return cache.cached(cache_dir, "mnist", images_path, image_size,
                        lambda: decode_files(images_path, labels_path, image_size))


def load(request):
    """The `sources.SOURCES` entry: `load_mnist` of `request.split`."""
    return load_mnist(split=request.split, image_size=request.image_size,
                      data_dir=request.data_dir, cache_dir=request.cache_dir)
