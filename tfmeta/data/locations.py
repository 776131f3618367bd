"""Where the data are: the data folder of a dataset (`--data_dir`, else $TFMETA_DATA_DIR).

Imports nothing from `tfmeta.data`, so every loader can use it.
"""

import os

from tfmeta.errors import DataError

__all__ = ["DATA_DIR_ENV", "resolve_data_dir"]

DATA_DIR_ENV = "TFMETA_DATA_DIR"


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
