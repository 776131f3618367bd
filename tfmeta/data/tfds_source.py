"""TFDS: any prepared image-classification dataset (`--dataset=tfds:<name>`), and the
fallback of the Omniglot/MNIST loaders on machines without local archives.

`tfds:<name>` (e.g. `tfds:emnist/balanced`, `tfds:mnist:3.0.1`) reads a dataset that
is already prepared in a TFDS data folder (`--data_dir`, else $TFMETA_DATA_DIR, else
TFDS's default $TFDS_DATA_DIR or ~/tensorflow_datasets; `--data_dir` may also be the
prepared version folder itself, the one holding dataset_info.json). It never downloads:
data that are not prepared are a DataError saying how to prepare them elsewhere. The
dataset's one Image feature gives the images, its one ClassLabel feature (or "label")
the classes, named by the label names; every TFDS split is pooled (classes, not TFDS
splits, separate meta-training from evaluation). Images are converted as a folder
source's are (tfmeta.data.pixels: channels, ink polarity, area resize), decoded once and
cached (key: the prepared folder's files), and the classes of a split are chosen by
`splits.split_classes` (class lists with `split_dir`, else fractions).

The fallback (`load_omniglot_tfds`, `load_mnist_tfds`; downloads, needs internet)
produces the same `ClassImages` as the archive loaders: Omniglot inverted (ink = 255),
area-resized, classes named and ordered "Alphabet/characterNN"; MNIST as is. TFDS
verifies the official checksums, so it cannot read re-zipped local copies: for those,
use `data_dir`.
"""

import logging
import os
import time

import numpy as np
from PIL import Image

from tfmeta.data import cache, pixels, splits
from tfmeta.data.locations import DATA_DIR_ENV
from tfmeta.data.preprocess import area_resize
from tfmeta.data.types import ClassImages
from tfmeta.errors import DataError

__all__ = ["load_omniglot_tfds", "load_mnist_tfds", "TFDS_SPLITS", "prepared_builder",
           "decode_builder", "load_tfds", "load"]

_log = logging.getLogger(__name__)

# (dataset, our split / archive stem) -> TFDS split name.
TFDS_SPLITS = {
    ("omniglot", "images_background"): "train",
    ("omniglot", "images_evaluation"): "test",
    ("mnist", "train"): "train",
    ("mnist", "test"): "test",
}


def _load(name, split, data_dir=None):
    import tensorflow_datasets as tfds  # heavy; only when the fallback is used

    tfds.disable_progress_bar()
    _log.info("loading %s/%s through TFDS (downloads on first use)", name, split)
    dataset, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True)
    return tfds.as_numpy(dataset), info


def load_omniglot_tfds(stem, image_size, tfds_data_dir=None):
    """`ClassImages` of TFDS "omniglot" for archive stem "images_background" (TFDS
    "train") or "images_evaluation" (TFDS "test")."""
    examples, info = _load("omniglot", TFDS_SPLITS[("omniglot", stem)], tfds_data_dir)
    alphabet_names = info.features["alphabet"].names
    images, keys = [], []
    for ex in examples:
        # TFDS stores the 1-bit PNG as RGB with a white background: take one channel.
        images.append(255 - ex["image"][..., 0])
        keys.append((alphabet_names[int(ex["alphabet"])],
                     f"character{int(ex['alphabet_char_id']) + 1:02d}"))
    names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    labels = np.array([index[k] for k in keys], dtype=np.int32)
    return ClassImages(area_resize(np.stack(images), image_size)[..., None], labels,
                       [f"{a}/{c}" for a, c in names])


def load_mnist_tfds(split, image_size, tfds_data_dir=None):
    """`ClassImages` of TFDS "mnist" split "train" / "test" (digits already bright)."""
    examples, _ = _load("mnist", TFDS_SPLITS[("mnist", split)], tfds_data_dir)
    images, labels = [], []
    for ex in examples:
        images.append(ex["image"][..., 0])
        labels.append(int(ex["label"]))
    return ClassImages(area_resize(np.stack(images), image_size)[..., None],
                       np.array(labels, dtype=np.int32), [str(d) for d in range(10)])


# --- tfds:<name> -------------------------------------------------------------------

_PREPARE_HINT = ("tfmeta reads prepared TFDS data and never downloads them: on a machine "
                 "with internet run `tfds build {name} --data_dir=DIR` (or "
                 "tfds.builder({name!r}, data_dir=DIR).download_and_prepare() in Python), "
                 "copy DIR here and pass --data_dir=DIR")


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # heavy (imports TensorFlow): only here
    except ImportError as exc:
        raise DataError("--dataset=tfds:<name> needs the tensorflow-datasets package "
                        f"(pip install tensorflow-datasets): {exc}") from exc
    tfds.disable_progress_bar()
    return tfds


def _tfds_data_dir(data_dir):
    """The TFDS data folder: `data_dir`, else $TFMETA_DATA_DIR, else None (TFDS's
    default). A folder that is given must exist."""
    source = "--data_dir"
    if not data_dir:
        data_dir, source = os.environ.get(DATA_DIR_ENV) or None, f"${DATA_DIR_ENV}"
    if data_dir is None:
        return None
    folder = os.path.expanduser(str(data_dir))
    if not os.path.isdir(folder):
        raise DataError(f"TFDS data folder {data_dir!r} (from {source}) does not exist; "
                        "point --data_dir at a folder of prepared TFDS datasets")
    return folder


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def prepared_builder(name, data_dir=None):
    """The TFDS builder of `name` ("emnist/balanced", "mnist:3.0.1", ...) whose data are
    prepared in the TFDS data folder (see `_tfds_data_dir`), or a DataError: unknown
    name, or data not prepared there (nothing is downloaded)."""
    tfds = _import_tfds()
    folder = _tfds_data_dir(data_dir)
    where = folder or "TFDS's default data folder ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        if folder and os.path.isfile(os.path.join(folder, "dataset_info.json")):
            builder = tfds.builder_from_directory(folder)
        else:
            builder = tfds.builder(name, data_dir=folder)
    except (ValueError, KeyError, OSError) as exc:   # DatasetNotFoundError is a ValueError
        raise DataError(f"--dataset=tfds:{name}: neither a dataset registered in "
                        f"tensorflow_datasets {tfds.__version__} nor one prepared under "
                        f"{where} ({_first_line(exc)}). {_PREPARE_HINT.format(name=name)}"
                        ) from None
    if not builder.is_prepared():
        raise DataError(f"--dataset=tfds:{name}: the data are not prepared under {where} "
                        f"(no {builder.data_dir}). {_PREPARE_HINT.format(name=name)}")
    return builder


def _feature_keys(tfds, builder, name):
    """(image feature key, label feature key) of an image-classification dataset."""
    features = builder.info.features
    items = dict(features.items()) if hasattr(features, "items") else {}

    def pick(kind, preferred):
        keys = [k for k, f in items.items() if isinstance(f, kind)]
        return preferred if preferred in keys else (keys[0] if len(keys) == 1 else None)

    image_key = pick(tfds.features.Image, "image")
    label_key = pick(tfds.features.ClassLabel, "label")
    if image_key is None or label_key is None:
        raise DataError(f"tfds:{name} is not an image-classification dataset: it needs one "
                        "Image feature and one ClassLabel feature (or ones named image and "
                        f"label); its features are {sorted(items)}")
    return image_key, label_key


def decode_builder(builder, name, image_size, channels=1, ink_polarity="auto"):
    """Every example of every split of a prepared TFDS dataset as `ClassImages`
    `[N, S, S, channels]`: classes are its label names (labels without examples are left
    out), images in split-name then file order inside a class (no cache; see
    `load_tfds`)."""
    tfds = _import_tfds()
    image_key, label_key = _feature_keys(tfds, builder, name)
    names = list(builder.info.features[label_key].names)
    raw, labels = [], []
    start = time.time()
    _log.info("reading tfds:%s from %s (once; then cached)", name, builder.data_dir)
    for split in sorted(builder.info.splits):
        dataset = builder.as_dataset(split=split, shuffle_files=False)
        dataset = dataset.map(lambda ex: (ex[image_key], ex[label_key]))
        for image, label in tfds.as_numpy(dataset):
            raw.append(image)
            labels.append(int(label))
            if len(raw) % 10000 == 0:
                _log.info("  tfds:%s: read %d examples (%.1f s)", name, len(raw),
                          time.time() - start)
    if not raw:
        raise DataError(f"tfds:{name} under {builder.data_dir} holds no examples")
    labels = np.asarray(labels, dtype=np.int64)
    present = np.flatnonzero(np.bincount(labels, minlength=len(names)))
    if len(present) < len(names):
        _log.info("tfds:%s: %d of its %d labels have no examples and are left out", name,
                  len(names) - len(present), len(names))
    relabel = np.full(max(len(names), int(labels.max()) + 1), -1, dtype=np.int64)
    relabel[present] = np.arange(len(present))
    what = f"tfds:{name}"

    def read(i):
        array = raw[i]
        array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
        try:
            return pixels.to_array(Image.fromarray(array), channels)
        except (TypeError, ValueError, OSError) as exc:
            raise DataError(f"{what}: example {i} has an image of shape {raw[i].shape} "
                            f"and dtype {raw[i].dtype} that cannot be converted ({exc})"
                            ) from exc

    invert = pixels.resolve_invert(ink_polarity, len(raw), read, what)
    images = pixels.decode_resize(len(raw), read, image_size, channels, invert, what)
    _log.info("decoded %d images of %d classes of %s in %.1f s", len(raw), len(present),
              what, time.time() - start)
    return ClassImages(images, relabel[labels], [str(names[i]) for i in present])


def _prepared_files(folder):
    try:
        return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                      if os.path.isfile(os.path.join(folder, f)))
    except OSError:   # not a local folder (e.g. a gs:// path): the path alone
        return []


def load_tfds(name, data_dir=None, image_size=28, cache_dir=None, channels=1,
              ink_polarity="auto"):
    """Every class of the prepared TFDS dataset `name` as `ClassImages`, through the
    cache (decoded again when the prepared files change)."""
    pixels.check_ink_polarity(ink_polarity)
    builder = prepared_builder(name, data_dir)
    folder = str(builder.data_dir)
    fingerprint = "\n".join([
        f"tfds\t{name}\t{folder}\t{int(image_size)}px\t{int(channels)}ch\t"
        f"ink={ink_polarity}",
        cache.file_fingerprint(_prepared_files(folder), folder)])
    slug = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
    stem = f"tfds-{slug}-{builder.info.version}-{int(image_size)}px-{int(channels)}ch"
    return cache.cached_entry(
        cache_dir, stem, fingerprint,
        lambda: decode_builder(builder, name, int(image_size), channels, ink_polarity),
        what=f"tfds:{name}")


def load(request):
    """The `sources.SOURCES` entry of `tfds:<name>`: the classes of `request.split`
    (class lists with `split_dir`, else `split_fraction`)."""
    if not request.name:
        raise DataError("--dataset=tfds:<name> needs a TFDS dataset name after the colon, "
                        "e.g. tfds:emnist/balanced")
    everything = load_tfds(request.name, request.data_dir, request.image_size,
                           request.cache_dir, request.channels, request.ink_polarity)
    return splits.split_classes(everything, request.split, request.split_dir,
                                request.split_fraction, request.split_seed,
                                request.data_dir, "tfds", f"tfds:{request.name}")
