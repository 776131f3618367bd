"""Class-indexed image sets and the one entry point that loads them.

A `ClassImages` holds every image of a split in one uint8 array sorted by class, so a
sampler can gather any set of images with a single fancy-index (no per-image Python).
Strokes are bright (0 = background, 255 = ink) for every dataset, so the same model
and the same `scale_images` work for Omniglot and MNIST alike.
"""

import logging
import os

import numpy as np

from tfmeta.errors import ConfigError, DataError

__all__ = ["ClassImages", "load_class_images", "resolve_data_dir", "DATA_DIR_ENV"]

_log = logging.getLogger(__name__)

DATA_DIR_ENV = "TFMETA_DATA_DIR"


class ClassImages:
    """Images grouped by class, sorted by label.

    Attributes:
      images: uint8 `[N, H, W, C]`, 0 = background, 255 = ink (strokes are bright).
      labels: int32 `[N]`, values in `0..num_classes-1`, non-decreasing.
      class_names: list of `num_classes` str (Omniglot: "Alphabet/characterNN").

    The constructor sorts by label (stable, so the order inside a class is kept) and
    checks that every class in `0..num_classes-1` has at least one image.
    """

    def __init__(self, images, labels, class_names):
        images = np.asarray(images)
        labels = np.asarray(labels)
        class_names = [str(n) for n in class_names]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"ClassImages.images must be uint8 [N, H, W, 1 or 3]; got {images.dtype} "
                f"{images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"ClassImages.labels must be [N={images.shape[0]}]; got "
                            f"{labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"ClassImages.labels must be integers; got {labels.dtype}")
        num_classes = len(class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"ClassImages.labels must lie in 0..{num_classes - 1}")
        labels = labels.astype(np.int32)
        if labels.size and np.any(np.diff(labels) < 0):
            order = np.argsort(labels, kind="stable")
            images, labels = images[order], labels[order]
        counts = np.bincount(labels, minlength=num_classes)
        if num_classes == 0 or np.any(counts == 0):
            empty = [class_names[i] for i in np.flatnonzero(counts == 0)[:5]]
            raise DataError(f"every class needs at least one image; empty: {empty}")
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self._counts = counts.astype(np.int64)
        # offsets[c] is the index of the first image of class c (labels are sorted).
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)

    def __len__(self):
        return int(self.images.shape[0])

    def __repr__(self):
        return (f"ClassImages({len(self)} images, {self.num_classes} classes, "
                f"image_shape={self.image_shape})")

    @property
    def num_classes(self):
        """Number of classes (int)."""
        return len(self.class_names)

    @property
    def image_shape(self):
        """`(H, W, C)` of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    @property
    def counts(self):
        """int64 `[num_classes]`: number of images of each class."""
        return self._counts.copy()

    @property
    def offsets(self):
        """int64 `[num_classes]`: index of each class's first image in `images`."""
        return self._offsets.copy()

    def indices_of(self, class_id):
        """int64 `[count]`: indices into `images` of class `class_id`."""
        class_id = self._check_class(class_id)
        start = self._offsets[class_id]
        return np.arange(start, start + self._counts[class_id], dtype=np.int64)

    def images_of(self, class_id):
        """uint8 `[count, H, W, C]` view (no copy) of the images of `class_id`."""
        class_id = self._check_class(class_id)
        start = self._offsets[class_id]
        return self.images[start:start + self._counts[class_id]]

    def _check_class(self, class_id):
        if not 0 <= int(class_id) < self.num_classes:
            raise DataError(f"class id {class_id} outside 0..{self.num_classes - 1}")
        return int(class_id)

    def subset(self, class_ids):
        """A new `ClassImages` holding only `class_ids`, relabelled `0..len-1` in the
        order given (class_names follow)."""
        class_ids = [self._check_class(c) for c in class_ids]
        if len(set(class_ids)) != len(class_ids):
            raise DataError("subset(class_ids) needs distinct class ids")
        index = np.concatenate([self.indices_of(c) for c in class_ids])
        labels = np.repeat(np.arange(len(class_ids), dtype=np.int32),
                           self._counts[class_ids])
        return ClassImages(self.images[index], labels,
                           [self.class_names[c] for c in class_ids])

    @staticmethod
    def concatenate(parts):
        """One `ClassImages` of several with distinct class names: the classes of
        `parts[0]` first (labels kept), then those of `parts[1]` (labels offset), ..."""
        names = [n for p in parts for n in p.class_names]
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})[:5]
            raise DataError(f"cannot pool image sets that share class names: {repeated}")
        offsets = np.cumsum([0] + [p.num_classes for p in parts[:-1]])
        return ClassImages(np.concatenate([p.images for p in parts]),
                           np.concatenate([p.labels + o for p, o in zip(parts, offsets)]),
                           names)

    def with_channels(self, channels):
        """Gray → RGB by repeating the channel (`channels=3`); `channels=1` keeps gray."""
        if channels == self.image_shape[-1]:
            return self
        if channels == 3 and self.image_shape[-1] == 1:
            return ClassImages(np.repeat(self.images, 3, axis=-1), self.labels,
                               self.class_names)
        raise ConfigError(f"channels must be 1 or 3 (from gray images); got {channels}")

    def with_rotations(self):
        """Class augmentation: each class also rotated by 90, 180 and 270 degrees as a
        new class (4x the classes), as in Santoro et al. 2016 / Finn et al. 2017
        (MAML's Omniglot protocol). Class `r * C + c` is class `c` rotated by
        `90 * r` degrees counter-clockwise; names get a "/rot90" etc. suffix.
        Needs square images."""
        height, width = self.image_shape[:2]
        if height != width:
            raise DataError(f"with_rotations() needs square images; got {height}x{width}")
        images = np.concatenate(
            [np.rot90(self.images, k=r, axes=(1, 2)) for r in range(4)], axis=0)
        labels = np.concatenate(
            [self.labels + r * self.num_classes for r in range(4)]).astype(np.int32)
        names = list(self.class_names) + [
            f"{n}/rot{90 * r}" for r in range(1, 4) for n in self.class_names]
        return ClassImages(np.ascontiguousarray(images), labels, names)


def resolve_data_dir(data_dir, dataset):
    """The folder holding `dataset`'s archives, or None (→ TFDS fallback).

    `data_dir` (argument, else env TFMETA_DATA_DIR) may be a root holding `omniglot/`
    and `mnist/` subfolders, or the folder holding the archives directly.
    """
    source = "--data_dir"
    if not data_dir:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        source = f"${DATA_DIR_ENV}"
    if data_dir is None:
        return None
    data_dir = os.path.expanduser(str(data_dir))
    if not os.path.isdir(data_dir):
        raise DataError(
            f"data directory {data_dir!r} (from {source}) does not exist. Set --data_dir "
            f"or ${DATA_DIR_ENV} to a folder holding omniglot/images_background.zip, "
            "omniglot/images_evaluation.zip and mnist/*-ubyte.gz (or to the folder with "
            "the archives themselves); leave both unset to download through TFDS.")
    sub = os.path.join(data_dir, dataset)
    return sub if os.path.isdir(sub) else data_dir


def load_class_images(dataset="omniglot", split="background", image_size=28,
                      data_dir=None, cache_dir=None, channels=1, rotations=False,
                      validation_classes=100, split_seed=0, split_dir=None):
    """Loads a split as `ClassImages` (uint8, strokes bright, sorted by class).

    Args:
      dataset: "omniglot" (Lake et al. 2015) or "mnist" (LeCun et al. 1998).
      split: omniglot "background" (964 characters), "evaluation" (659), "train" /
        "validation" (the background characters split by `split_seed` into
        `964 - validation_classes` / `validation_classes` disjoint characters);
        mnist "train" (60000 images) / "test" (10000). With `split_dir`: the name of
        a class list `<split_dir>/<split>.txt` (tfmeta.data.splits).
      image_size: output side length; Omniglot 105x105 is area-resized to it.
      data_dir: archive folder (see `resolve_data_dir`); None → $TFMETA_DATA_DIR, and
        when that is unset too, TFDS (downloads).
      cache_dir: decoded-array cache; None → $TFMETA_CACHE_DIR or ~/.cache/tfmeta.
      channels: 1 (gray) or 3 (gray repeated).
      rotations: add 90/180/270-degree rotated copies as new classes (x4 classes).
      validation_classes, split_seed: the train/validation character split.
      split_dir: Omniglot only: a folder of published class lists (e.g. the Vinyals
        split, `splits/vinyals` under the Omniglot data folder; see
        `splits.resolve_split_dir`). The classes, rotations included, are the lines of
        the list, drawn from both archives pooled; `rotations=True` is a ConfigError.
    """
    # late: those modules import this one
    from tfmeta.data import mnist, omniglot, splits

    loaders = {"omniglot": omniglot.load_omniglot, "mnist": mnist.load_mnist}
    if dataset not in loaders:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {sorted(loaders)}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3; got {channels}")
    if int(image_size) < 1:
        raise ConfigError(f"image_size must be positive; got {image_size}")
    if split_dir:
        if dataset != "omniglot":
            raise ConfigError("--split_dir lists Omniglot classes; it needs "
                              "--dataset=omniglot")
        if rotations:
            raise ConfigError("--rotations with --split_dir: the split lists name their "
                              "rotation classes (rot000..rot270) themselves; set "
                              "--rotations=false")
        path = splits.split_list_path(splits.resolve_split_dir(split_dir, data_dir), split)
        classes = splits.read_split_list(path)
        source = omniglot.load_pooled(int(image_size), data_dir, cache_dir)
        images = splits.select_classes(source, classes, path)
    else:
        images = loaders[dataset](split=split, image_size=int(image_size),
                                  data_dir=data_dir, cache_dir=cache_dir,
                                  validation_classes=validation_classes,
                                  split_seed=split_seed)
    if rotations:
        images = images.with_rotations()
    images = images.with_channels(channels)
    _log.info("loaded %s/%s: %r", dataset, split, images)
    return images
