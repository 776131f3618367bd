"""The table of image sources that `load_class_images` dispatches through.

`dataset` names a row of `SOURCES`: "omniglot", "mnist", "folder", or "<source>:<name>"
for a source that takes a name ("tfds:emnist/balanced"). Each row's `load(request)`
gets a `types.LoadRequest` and returns the split's `ClassImages` (uint8, strokes bright,
sorted by class); `load_class_images` then applies rotations, channels and the
`min_images` filter. A new source is one new module with a `load(request)` function
plus one row here (and its name in docs/DATASETS.md).

`check_options` is the one check of which options a source takes (used by
`load_class_images` and `tfmeta.config.DataConfig.validate`).
"""

from typing import Callable, NamedTuple

from tfmeta.data import folder, mnist, omniglot, pixels, splits, tfds_source
from tfmeta.errors import ConfigError

__all__ = ["Source", "SOURCES", "OPTIONS", "dataset_choices", "parse_dataset",
           "check_options", "load"]


class Source(NamedTuple):
    """One row of SOURCES.

    load: `load(request: LoadRequest) -> ClassImages` of `request.split`.
    help: one line for help texts and docs.
    named: the dataset is written "<source>:<name>" (the name goes to `request.name`).
    options: the options of OPTIONS this source honours; any other left at its
      default (a non-default value is a ConfigError naming the flag).
    """
    load: Callable
    help: str
    named: bool = False
    options: tuple = ()


_CLASS_SPLIT_OPTIONS = ("split_dir", "ink_polarity", "split_fraction")

SOURCES = {
    "omniglot": Source(omniglot.load, "Omniglot archives: splits background, evaluation, "
                       "train, validation; published class lists with --split_dir",
                       options=("split_dir",)),
    "mnist": Source(mnist.load, "MNIST IDX files: splits train, test"),
    "folder": Source(folder.load, "--data_dir=ROOT holding ROOT/<class>/<image files>; "
                     "classes split by --split_fraction or --split_dir lists",
                     options=_CLASS_SPLIT_OPTIONS),
    "tfds": Source(tfds_source.load, "tfds:<name>: a TFDS image-classification dataset "
                   "prepared in --data_dir (never downloaded); classes split as for folder",
                   named=True, options=_CLASS_SPLIT_OPTIONS),
}

# option → (flag, default): the options only some sources take.
OPTIONS = {
    "split_dir": ("--split_dir", None),
    "ink_polarity": ("--ink_polarity", "auto"),
    "split_fraction": ("--split_fraction", ""),
}


def dataset_choices():
    """The valid `dataset` values as text: "omniglot, mnist, folder, tfds:<name>"."""
    return ", ".join(f"{n}:<name>" if s.named else n for n, s in SOURCES.items())


def parse_dataset(dataset):
    """(source, name) of a `dataset` value: "folder" → ("folder", ""),
    "tfds:emnist/balanced" → ("tfds", "emnist/balanced"). ConfigError otherwise."""
    text = str(dataset)
    source, sep, name = text.partition(":")
    row = SOURCES.get(source)
    if row is None:
        raise ConfigError(f"--dataset: unknown dataset {text!r}; choose one of "
                          f"{dataset_choices()}")
    if row.named and not name.strip():
        raise ConfigError(f"--dataset={text}: give the {source} dataset's name, "
                          f"{source}:<name> (e.g. tfds:emnist/balanced)")
    if not row.named and sep:
        raise ConfigError(f"--dataset={text}: {source} takes no name after a colon; "
                          f"choose one of {dataset_choices()}")
    return source, name.strip()


def check_options(dataset, **options):
    """Raises ConfigError when an option of OPTIONS (`split_dir`, `ink_polarity`,
    `split_fraction`) is set for a dataset whose source does not take it, or has a bad
    value; returns (source, name) of `dataset`."""
    source, name = parse_dataset(dataset)
    takes = SOURCES[source].options
    for option, value in options.items():
        flag, default = OPTIONS[option]
        if value not in (default, None, "") and option not in takes:
            users = [f"{n}:<name>" if s.named else n for n, s in SOURCES.items()
                     if option in s.options]
            raise ConfigError(f"{flag} applies to --dataset="
                              f"{' / '.join(users)}, not {dataset}; leave it unset")
    if "ink_polarity" in options:
        pixels.check_ink_polarity(options["ink_polarity"] or "auto")
    if options.get("split_fraction"):
        splits.parse_split_fraction(options["split_fraction"])
        if options.get("split_dir"):
            raise ConfigError("--split_fraction and --split_dir both choose the classes "
                              "of each split; give one of them")
    return source, name


def load(request):
    """`ClassImages` of `request` (a `types.LoadRequest`) from its source's row."""
    return SOURCES[request.source].load(request)
