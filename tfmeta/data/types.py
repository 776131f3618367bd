"""`ClassImages`: every image of a split in one uint8 array sorted by class.

A sampler gathers any set of images with a single fancy-index (no per-image Python).
Strokes are bright (0 = background, 255 = ink) for every source, so the same model and
the same `scale_images` work for all of them.

`LoadRequest`: the arguments of `load_class_images` as one value, what every source of
`tfmeta.data.sources` is called with.

This module imports nothing from `tfmeta.data`: every loader, the cache and the samplers
import it (the package's import graph has no cycle; tests/test_data_sources.py checks).
"""

import dataclasses
from typing import Optional

import numpy as np

from tfmeta.errors import ConfigError, DataError

__all__ = ["ClassImages", "LoadRequest"]


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """What `load_class_images` asks a source (`tfmeta.data.sources.SOURCES`) for.

    Attributes are `load_class_images`' arguments (see there), except:
      source: the source's name in the table ("omniglot", "folder", "tfds", ...).
      name: what follows "<source>:" in `dataset` ("tfds:emnist/balanced" →
        "emnist/balanced"); "" for sources without one.
    A source returns the split's `ClassImages`; rotations, channels (gray → RGB) and
    the `min_images` filter are applied by `load_class_images` afterwards.
    """
    dataset: str
    source: str
    name: str
    split: str
    image_size: int
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    channels: int = 1
    validation_classes: int = 100
    split_seed: int = 0
    split_dir: Optional[str] = None
    ink_polarity: str = "auto"
    split_fraction: str = ""


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

    def with_mirrors(self):
        """Class augmentation: each class also mirrored left-right as a new class (2x
        the classes). Class `C + c` is class `c` mirrored; names get a "/mirror"
        suffix. Mirrors, then `with_rotations()`, give all 8 symmetries of the square
        (the dihedral group) as classes."""
        images = np.concatenate([self.images, self.images[:, :, ::-1]], axis=0)
        labels = np.concatenate([self.labels, self.labels + self.num_classes])
        names = list(self.class_names) + [f"{n}/mirror" for n in self.class_names]
        return ClassImages(np.ascontiguousarray(images), labels.astype(np.int32), names)

    def with_class_copies(self, rotations=False, mirrors=False):
        """The training-class augmentation of `DataConfig`: `with_mirrors()` if
        `mirrors`, then `with_rotations()` if `rotations` (both: 8x the classes)."""
        out = self.with_mirrors() if mirrors else self
        return out.with_rotations() if rotations else out
