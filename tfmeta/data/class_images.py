"""The one entry point that loads class-indexed image sets: `load_class_images`.

It dispatches through the table of sources (`tfmeta.data.sources.SOURCES`: Omniglot,
MNIST, a folder of class folders, any prepared TFDS image-classification dataset), then
applies what every source shares: rotated classes, channels, and skipping classes with
too few images for a task. `ClassImages` lives in `tfmeta.data.types` and
`resolve_data_dir` in `tfmeta.data.locations`; both are re-exported here for existing
imports.
"""

import logging

import numpy as np

from tfmeta.data import sources
from tfmeta.data.locations import DATA_DIR_ENV, resolve_data_dir
from tfmeta.data.types import ClassImages, LoadRequest
from tfmeta.errors import ConfigError, DataError

__all__ = ["ClassImages", "load_class_images", "resolve_data_dir", "DATA_DIR_ENV",
           "drop_small_classes"]

_log = logging.getLogger(__name__)
_NAMED = 10   # skipped classes named in the warning line


def drop_small_classes(images, min_images, what):
    """`images` without the classes that have fewer than `min_images` images; those are
    named (up to 10, with their counts) in one warning line. DataError when no class is
    left. `what` names the split in the messages."""
    counts = images.counts
    small = np.flatnonzero(counts < int(min_images))
    if not small.size:
        return images
    listed = ", ".join(f"{images.class_names[i]} ({counts[i]})" for i in small[:_NAMED])
    more = f" and {small.size - _NAMED} more" if small.size > _NAMED else ""
    if small.size == images.num_classes:
        raise DataError(f"{what}: every class has fewer than {min_images} images (a task "
                        f"needs --k_shot + --k_query of one class): {listed}{more}")
    _log.warning("%s: skipping %d of %d classes with fewer than %d images (a task needs "
                 "--k_shot + --k_query of one class): %s%s", what, small.size,
                 images.num_classes, min_images, listed, more)
    return images.subset(np.flatnonzero(counts >= int(min_images)))


def load_class_images(dataset="omniglot", split="background", image_size=28,
                      data_dir=None, cache_dir=None, channels=1, rotations=False,
                      mirrors=False, validation_classes=100, split_seed=0, split_dir=None,
                      ink_polarity="auto", split_fraction="", min_images=1):
    """Loads a split as `ClassImages` (uint8, strokes bright, sorted by class).

    Args:
      dataset: "omniglot" (Lake et al. 2015), "mnist" (LeCun et al. 1998), "folder"
        (`data_dir` = ROOT holding ROOT/<class>/<image files>, tfmeta.data.folder) or
        "tfds:<name>" (a prepared TFDS image-classification dataset, e.g.
        "tfds:emnist/balanced"; never downloaded, tfmeta.data.tfds_source). See
        `sources.SOURCES` and docs/DATASETS.md.
      split: omniglot "background" (964 characters), "evaluation" (659), "train" /
        "validation" (the background characters split by `split_seed` into
        `964 - validation_classes` / `validation_classes` disjoint characters),
        "alphabet_train" / "alphabet_validation" (split by whole alphabets: at least
        `validation_classes` characters of alphabets drawn by `split_seed`);
        mnist "train" (60000 images) / "test" (10000); folder and tfds "train",
        "validation", "evaluation" (classes split by `split_fraction` and `split_seed`)
        or "all". With `split_dir`: the name of a class list `<split_dir>/<split>.txt`
        (tfmeta.data.splits).
      image_size: output side length; images are area-resized to it.
      data_dir: omniglot/mnist: archive folder (see `resolve_data_dir`; None →
        $TFMETA_DATA_DIR, and when that is unset too, TFDS, which downloads); folder:
        the ROOT (required); tfds: the TFDS data folder (None → $TFMETA_DATA_DIR, else
        TFDS's default).
      cache_dir: decoded-array cache; None → $TFMETA_CACHE_DIR or ~/.cache/tfmeta.
      channels: 1 (gray; colour folder/tfds images become their luma) or 3 (gray
        repeated; colour folder/tfds images keep their colour).
      rotations: add 90/180/270-degree rotated copies as new classes (x4 classes).
      mirrors: add left-right mirrored copies as new classes (x2; with rotations: the
        8 symmetries of the square, x8).
      validation_classes, split_seed: the Omniglot train/validation character split;
        `split_seed` also seeds the folder/tfds `split_fraction` split.
      split_dir: a folder of class lists `<split>.txt`. Omniglot: published lists
        (e.g. the Vinyals split, `splits/vinyals` under the Omniglot data folder; see
        `splits.resolve_split_dir`), one "Alphabet/characterNN/rotDDD" per line, drawn
        from both archives pooled; `rotations=True` is then a ConfigError. Folder/tfds:
        one class name per line.
      ink_polarity: folder/tfds: "auto" (detected once per dataset from the image
        borders), "bright" (light strokes on dark, kept) or "dark" (dark ink on light
        paper, inverted). See tfmeta.data.pixels.
      split_fraction: folder/tfds without `split_dir`: "train,validation,evaluation"
        fractions of the classes, e.g. "0.7,0.1,0.2" ("" = that default).
      min_images: classes of the split with fewer images (e.g. k_shot + k_query) are
        skipped, named in a warning line; DataError when none is left.
    """
    source, name = sources.check_options(dataset, split_dir=split_dir,
                                         ink_polarity=ink_polarity,
                                         split_fraction=split_fraction)
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3; got {channels}")
    if int(image_size) < 1:
        raise ConfigError(f"image_size must be positive; got {image_size}")
    if int(min_images) < 1:
        raise ConfigError(f"min_images must be positive; got {min_images}")
    if split_dir and rotations and source == "omniglot":
        raise ConfigError("--rotations with --split_dir: the split lists name their "
                          "rotation classes (rot000..rot270) themselves; set "
                          "--rotations=false")
    request = LoadRequest(
        dataset=str(dataset), source=source, name=name, split=split,
        image_size=int(image_size), data_dir=data_dir, cache_dir=cache_dir,
        channels=int(channels), validation_classes=validation_classes,
        split_seed=split_seed, split_dir=split_dir, ink_polarity=ink_polarity or "auto",
        split_fraction=split_fraction or "")
    images = sources.load(request)
    images = drop_small_classes(images, min_images, f"{dataset}/{split}")
    images = images.with_class_copies(rotations=rotations, mirrors=mirrors)
    images = images.with_channels(channels)
    _log.info("loaded %s/%s: %r", dataset, split, images)
    return images
