"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015) from the official zips.

Reads `images_background.zip` / `images_evaluation.zip` without extracting them. Layout
inside: `images_background/<Alphabet>/<characterNN>/<IIII_DD>.png`, each a 105x105 1-bit
PNG with True = white background. Decoded images are inverted (ink = 255) and
area-resized (`preprocess.area_resize`: the exact mean over each output pixel's
footprint, rounded once) to `image_size`; class names are "Alphabet/characterNN", sorted by (alphabet, character),
drawings sorted by file name inside a class.
"""

import io
import logging
import os
import time
import zipfile
import zlib

import numpy as np
from PIL import Image

from tfmeta.data import cache, splits
from tfmeta.data.locations import resolve_data_dir
from tfmeta.data.preprocess import area_resize
from tfmeta.data.types import ClassImages
from tfmeta.errors import ConfigError, DataError

__all__ = ["SPLITS", "load_omniglot", "load_pooled", "decode_archive",
           "split_train_validation", "load"]

_log = logging.getLogger(__name__)

# split -> (archive stem, part of the background characters or None for all of them).
# "train" / "validation": the background characters split character by character;
# "alphabet_train" / "alphabet_validation": split by whole alphabets, so the validation
# characters come from alphabets never trained on, as the evaluation alphabets do.
SPLITS = {
    "background": ("images_background", None),
    "evaluation": ("images_evaluation", None),
    "train": ("images_background", "train"),
    "validation": ("images_background", "validation"),
    "alphabet_train": ("images_background", "alphabet_train"),
    "alphabet_validation": ("images_background", "alphabet_validation"),
}
_CHUNK = 2048  # images decoded, resized and logged together


def _layout_members(archive, path):
    """{(alphabet, character): [member, ...]} of the PNGs in official layout."""
    classes = {}
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) == 4 and parts[3].lower().endswith(".png"):
            classes.setdefault((parts[1], parts[2]), []).append(name)
    if not classes:
        example = next(iter(archive.namelist()), "<empty archive>")
        raise DataError(
            f"{path} is not in the Omniglot layout: expected members "
            "images_background/<Alphabet>/<characterNN>/<id>_<drawer>.png, found e.g. "
            f"{example!r}. Use the official images_background.zip / "
            "images_evaluation.zip from github.com/brendenlake/omniglot.")
    return classes


def _decode_png(data, member, path):
    """uint8 `[h, w]` ink mask of one PNG, ink = 255 (full size; resized in chunks)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            # "1" → "L" maps True (white background) to 255; invert so ink is bright.
            return 255 - np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, zlib.error) as exc:
        raise DataError(f"corrupt PNG {member!r} in {path}: {exc}. Re-download the "
                        "archive.") from exc


def _resize_all(images, image_size):
    """Area-resizes a list of `[h, w]` arrays to uint8 `[n, S, S]`."""
    if len({im.shape for im in images}) == 1:
        return area_resize(np.stack(images), image_size)
    return np.concatenate([area_resize(im[None], image_size) for im in images])


def decode_archive(path, image_size):
    """Decodes every drawing of an Omniglot zip into `ClassImages` `[N, S, S, 1]`."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path} is not a readable zip archive ({exc}); re-download "
                        "it from github.com/brendenlake/omniglot/tree/master/python") from exc
    with archive:
        classes = _layout_members(archive, path)
        keys = sorted(classes)
        total = sum(len(v) for v in classes.values())
        images = np.empty((total, image_size, image_size, 1), dtype=np.uint8)
        labels = np.empty((total,), dtype=np.int32)
        _log.info("decoding %d Omniglot PNGs from %s (once; then cached)", total, path)
        start, done, pending = time.time(), 0, []
        members = [(label, m) for label, key in enumerate(keys)
                   for m in sorted(classes[key])]
        for i, (label, member) in enumerate(members):
            try:
                data = archive.read(member)
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                raise DataError(f"corrupt member {member!r} in {path}: {exc}. "
                                "Re-download the archive.") from exc
            pending.append(_decode_png(data, member, path))
            labels[i] = label
            if len(pending) == _CHUNK or i == total - 1:
                # Resize a chunk at a time: vectorised, without holding all 105x105s.
                images[done:done + len(pending), :, :, 0] = _resize_all(pending, image_size)
                done += len(pending)
                pending = []
                _log.info("  %d/%d images (%.1f s)", done, total, time.time() - start)
    _log.info("decoded %d images of %d characters in %.1f s", total, len(keys),
              time.time() - start)
    return ClassImages(images, labels, [f"{a}/{c}" for a, c in keys])


def split_train_validation(background, validation_classes, split_seed, by_alphabet=False):
    """(train, validation) `ClassImages`: disjoint characters of `background`, drawn
    with `np.random.default_rng(split_seed)`; each keeps the background order.

    by_alphabet: hold out whole alphabets (class names "Alphabet/character"), drawn in
    a seeded order until at least `validation_classes` characters are held out, so no
    validation character shares an alphabet with a training one.
    """
    num = background.num_classes
    if not 1 <= int(validation_classes) < num:
        raise ConfigError(f"validation_classes must be in 1..{num - 1} (the background "
                          f"split has {num} characters); got {validation_classes}")
    rng = np.random.default_rng(split_seed)
    if not by_alphabet:
        perm = rng.permutation(num)
        validation = np.sort(perm[:validation_classes])
    else:
        alphabets = np.array([name.split("/")[0] for name in background.class_names])
        names = sorted(set(alphabets))
        held, count = [], 0
        for index in rng.permutation(len(names)):
            if count >= validation_classes:
                break
            held.append(names[index])
            count += int(np.sum(alphabets == names[index]))
        if count >= num:
            raise ConfigError(f"validation_classes={validation_classes} by alphabet holds "
                              f"out every background alphabet ({len(names)}); ask for "
                              "fewer characters")
        validation = np.flatnonzero(np.isin(alphabets, held))
    train = np.setdiff1d(np.arange(num), validation)
    return background.subset(train), background.subset(validation)


def _archive_path(folder, stem):
    path = os.path.join(folder, stem + ".zip")
    if not os.path.isfile(path):
        raise DataError(
            f"Omniglot archive {stem}.zip not found in {folder}. Put the official "
            "images_background.zip and images_evaluation.zip (github.com/brendenlake/"
            "omniglot/tree/master/python) in <data_dir>/omniglot/ and pass --data_dir "
            "or set $TFMETA_DATA_DIR.")
    return path


def load_omniglot(split="background", image_size=28, data_dir=None, cache_dir=None,
                  validation_classes=100, split_seed=0):
    """`ClassImages` of an Omniglot split (see `SPLITS`), uint8 `[N, S, S, 1]`, ink 255.

    Falls back to TFDS when neither `data_dir` nor $TFMETA_DATA_DIR is set.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown Omniglot split {split!r}; choose one of "
                          f"{sorted(SPLITS)}")
    stem, part = SPLITS[split]
    folder = resolve_data_dir(data_dir, "omniglot")
    if folder is None:
        from tfmeta.data import tfds_source  # imports tensorflow_datasets: only here
        source = tfds_source.load_omniglot_tfds(stem, image_size)
    else:
        path = _archive_path(folder, stem)
        source = cache.cached(cache_dir, "omniglot", path, image_size,
                              lambda: decode_archive(path, image_size))
    if part is None:
        return source
    by_alphabet = part.startswith("alphabet_")
    train, validation = split_train_validation(source, validation_classes, split_seed,
                                               by_alphabet=by_alphabet)
    return train if part.endswith("train") else validation


def load_pooled(image_size=28, data_dir=None, cache_dir=None):
    """Every Omniglot character: the background then the evaluation archive (1,623
    classes named "Alphabet/characterNN"; their alphabets are disjoint), each decoded
    once through the cache. The source of published class lists (tfmeta.data.splits).
    """
    return ClassImages.concatenate([
        load_omniglot(split, image_size, data_dir, cache_dir)
        for split in ("background", "evaluation")])


def load(request):
    """The `sources.SOURCES` entry: `load_omniglot` of `request.split`, or with
    `request.split_dir` the classes of the published list `<split_dir>/<split>.txt`
    (tfmeta.data.splits), drawn from both archives pooled and rotated as listed."""
    if not request.split_dir:
        return load_omniglot(split=request.split, image_size=request.image_size,
                             data_dir=request.data_dir, cache_dir=request.cache_dir,
                             validation_classes=request.validation_classes,
                             split_seed=request.split_seed)
    folder = splits.resolve_split_dir(request.split_dir, request.data_dir)
    path = splits.split_list_path(folder, request.split)
    classes = splits.read_split_list(path)
    source = load_pooled(request.image_size, request.data_dir, request.cache_dir)
    return splits.select_classes(source, classes, path)
