"""Any folder of class folders: `--dataset=folder --data_dir=ROOT`.

Layout: `ROOT/<class>/<image files>`, one folder per class (its name is the class name)
holding PNG, JPEG, BMP or GIF files (any size, gray or colour; file names ending in
`.png .jpg .jpeg .bmp .gif`, any case). Classes are sorted by folder name, images by file
name inside a class. Hidden entries (names starting with ".") and other files are
ignored; a class folder without image files is an error (it may be a nested layout).
EXIF orientation (phone photos) is applied.

Each image becomes uint8 `[S, S, channels]` with bright strokes (tfmeta.data.pixels:
luma or RGB, ink polarity given or detected once for the whole folder, area resize to
S = image_size). The whole folder is decoded once and cached (key: the folder's path,
every image file's name, size and modification time, and the options); the split's
classes are then taken from it (`splits.split_classes`: class lists with `split_dir`,
else fractions).
"""

import logging
import os
import time
import zlib

from PIL import Image, ImageOps

from tfmeta.data import cache, pixels, splits
from tfmeta.data.types import ClassImages
from tfmeta.errors import ConfigError, DataError

__all__ = ["list_classes", "decode_folder", "load_folder", "load"]

_log = logging.getLogger(__name__)

_LAYOUT = ("a folder dataset is ROOT/<class>/<image files> (PNG, JPEG, BMP or GIF), one "
           "folder per class")


def _root(data_dir):
    if not data_dir:
        raise ConfigError("--dataset=folder needs --data_dir=ROOT, the folder holding one "
                          f"subfolder of images per class ({_LAYOUT})")
    root = os.path.expanduser(str(data_dir))
    if not os.path.isdir(root):
        raise DataError(f"--data_dir={data_dir!r}: no such folder; {_LAYOUT}")
    return root


def _is_image(name):
    return name.lower().endswith(pixels.IMAGE_EXTENSIONS)


def list_classes(root):
    """[(class name, [image path, ...])] of a folder dataset, sorted by class name,
    paths sorted by file name. DataError for a root without class folders or a class
    folder without image files."""
    try:
        entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list --data_dir={root!r} ({exc})") from exc
    class_dirs = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if not class_dirs:
        loose = sum(_is_image(e) for e in entries)
        found = f"{loose} image files but no subfolders" if loose else "no subfolders"
        raise DataError(f"--data_dir={root!r} holds {found}; {_LAYOUT}")
    classes = []
    for name in class_dirs:
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder)
                       if not f.startswith(".") and _is_image(f)
                       and os.path.isfile(os.path.join(folder, f)))
        if not files:
            subdirs = sorted(f for f in os.listdir(folder)
                             if os.path.isdir(os.path.join(folder, f)))
            hint = (f" (it holds subfolders {subdirs[:3]}: one level of class folders "
                    "only)" if subdirs else "")
            raise DataError(f"class folder {folder} has no image files{hint}; {_LAYOUT}. "
                            "Remove it or move it out of --data_dir")
        classes.append((name, [os.path.join(folder, f) for f in files]))
    return classes


def _read(path, channels):
    """uint8 `[h, w, channels]` of one image file (EXIF orientation applied, e.g. phone
    photos of drawings); DataError naming the file when it cannot be decoded."""
    errors = (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError)
    try:
        with Image.open(path) as image:
            image.load()
            return pixels.to_array(ImageOps.exif_transpose(image), channels)
    except errors as exc:
        raise DataError(f"cannot read image file {path}: {exc}. Replace or remove "
                        "it") from exc


def decode_folder(root, image_size, channels=1, ink_polarity="auto", classes=None):
    """Decodes every image of a folder dataset into `ClassImages` `[N, S, S, channels]`
    (no cache; see `load_folder`). `classes`: `list_classes(root)` if already listed."""
    classes = list_classes(root) if classes is None else classes
    paths = [p for _, files in classes for p in files]
    labels = [label for label, (_, files) in enumerate(classes) for _ in files]
    what = f"folder {root}"
    _log.info("decoding %d images of %d classes from %s (once; then cached)", len(paths),
              len(classes), root)
    start = time.time()

    def read(i):
        return _read(paths[i], channels)

    invert = pixels.resolve_invert(ink_polarity, len(paths), read, what)
    images = pixels.decode_resize(len(paths), read, image_size, channels, invert, what)
    _log.info("decoded %d images of %d classes in %.1f s", len(paths), len(classes),
              time.time() - start)
    return ClassImages(images, labels, [name for name, _ in classes])


def load_folder(data_dir, image_size=28, cache_dir=None, channels=1, ink_polarity="auto"):
    """Every class of the folder dataset `data_dir` as `ClassImages`, through the cache
    (decoded again when a file is added, removed or changed, see the module doc)."""
    root = _root(data_dir)
    pixels.check_ink_polarity(ink_polarity)
    size, channels = int(image_size), int(channels)
    classes = list_classes(root)
    real = os.path.realpath(root)
    fingerprint = "\n".join([
        f"folder\t{real}\t{size}px\t{channels}ch\tink={ink_polarity}",
        cache.file_fingerprint([p for _, files in classes for p in files], root)])
    stem = f"folder-{os.path.basename(real) or 'root'}-{size}px-{channels}ch"
    return cache.cached_entry(
        cache_dir, stem, fingerprint,
        lambda: decode_folder(root, size, channels, ink_polarity, classes),
        what=f"folder {root}")


def load(request):
    """The `sources.SOURCES` entry: the classes of `request.split` of the folder
    `request.data_dir` (class lists with `split_dir`, else `split_fraction`)."""
    everything = load_folder(request.data_dir, request.image_size, request.cache_dir,
                             request.channels, request.ink_polarity)
    return splits.split_classes(everything, request.split, request.split_dir,
                                request.split_fraction, request.split_seed,
                                request.data_dir, "folder", f"folder {request.data_dir}")
