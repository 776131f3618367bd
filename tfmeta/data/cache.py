"""Decoded-array cache: one `.npz` per (dataset, source archive, image size, archive
version), so only the first load pays for decoding ~32k PNGs.

The key holds the archive's size and modification time, so replacing an archive makes
the old entry unreachable and the next load rebuilds it. Sources that are not one
archive (a folder of image files, a prepared TFDS dataset) key their entry by a
fingerprint instead (`cached_entry`, `file_fingerprint`: every file's path, size and
modification time, plus the decoding options), so adding, removing or changing a file
rebuilds it. Entries are written to a temporary file in the cache folder and renamed
into place (`os.replace` is atomic), so a crash or a concurrent process never sees half
a file.
"""

import hashlib
import logging
import os
import tempfile

import numpy as np

from tfmeta.data.types import ClassImages

__all__ = ["CACHE_DIR_ENV", "resolve_cache_dir", "cache_path", "cached",
           "entry_path", "cached_entry", "file_fingerprint"]

_log = logging.getLogger(__name__)

CACHE_DIR_ENV = "TFMETA_CACHE_DIR"
# Bump when the decoding changes (resize filter, inversion, ordering) to drop old entries.
_FORMAT_VERSION = 1


def resolve_cache_dir(cache_dir=None):
    """`cache_dir`, else $TFMETA_CACHE_DIR, else ~/.cache/tfmeta."""
    if cache_dir:
        return os.path.expanduser(str(cache_dir))
    return os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or "~/.cache/tfmeta")


def cache_path(cache_dir, dataset, archive_path, image_size):
    """Path of the entry for `archive_path` decoded at `image_size`."""
    stat = os.stat(archive_path)
    version = f"{_FORMAT_VERSION}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha1(version.encode()).hexdigest()[:12]
    stem = os.path.basename(archive_path).split(".")[0]
    name = f"{dataset}-{stem}-{int(image_size)}px-{digest}.npz"
    return os.path.join(resolve_cache_dir(cache_dir), name)


def _read(path):
    with np.load(path, allow_pickle=False) as data:
        return ClassImages(data["images"], data["labels"], list(data["class_names"]))


def _write(path, class_images):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            # Uncompressed: loading 25 MB raw is faster than inflating it.
            np.savez(f, images=class_images.images, labels=class_images.labels,
                     class_names=np.asarray(class_images.class_names, dtype=np.str_))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cached(cache_dir, dataset, archive_path, image_size, build):
    """Returns the cached `ClassImages` for the key, or `build()` and stores it.

    A missing, unreadable or corrupt entry is rebuilt; a cache folder that cannot be
    written only costs the rebuild next time (logged), it never fails the load.
    """
    path = cache_path(cache_dir, dataset, archive_path, image_size)
    return _cached_at(path, os.path.basename(archive_path), build)


def file_fingerprint(paths, root=None):
    """str describing `paths` (each one's path relative to `root`, size and modification
    time, in the order given): changes when a file is added, removed, renamed, replaced
    or touched."""
    lines = []
    for path in paths:
        stat = os.stat(path)
        name = os.path.relpath(path, root) if root else path
        lines.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return "\n".join(lines)


def entry_path(cache_dir, stem, fingerprint):
    """Path of the entry `<stem>-<digest>.npz`, digest of the format version and
    `fingerprint` (a str naming everything the decoded arrays depend on)."""
    key = f"{_FORMAT_VERSION}\n{fingerprint}"
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return os.path.join(resolve_cache_dir(cache_dir), f"{stem}-{digest}.npz")


def cached_entry(cache_dir, stem, fingerprint, build, what=None):
    """`cached` for sources that are not one archive: the entry of (`stem`,
    `fingerprint`) (see `entry_path`), else `build()`, stored. `what` names the source
    in log lines (default: `stem`)."""
    return _cached_at(entry_path(cache_dir, stem, fingerprint), what or stem, build)


def _cached_at(path, what, build):
    if os.path.exists(path):
        try:
            return _read(path)
        except Exception as exc:  # corrupt entry: rebuild rather than fail
            _log.warning("ignoring unreadable cache entry %s (%s); rebuilding", path, exc)
    result = build()
    try:
        _write(path, result)
        _log.info("cached decoded %s at %s", what, path)
    except OSError as exc:
        _log.warning("could not write cache entry %s (%s); set --cache_dir or $%s to "
                     "a writable folder to avoid decoding again", path, exc, CACHE_DIR_ENV)
    return result
