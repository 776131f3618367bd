"""Published Omniglot class splits given as list files (Vinyals et al. 2016 and kin).

A split directory holds one `<name>.txt` per split, e.g. the Vinyals split as
distributed with the Prototypical Networks code (Snell et al. 2017): `trainval.txt`,
`train.txt`, `val.txt`, `test.txt`. Each line names one class,
`<Alphabet>/<characterNN>/rot<DDD>`: a character of the official Omniglot archives
(background and evaluation alphabets pooled; the names are the archives' folder names)
and a rotation DDD in 000/090/180/270 degrees, counter-clockwise (PIL's `Image.rotate`
in the reference code; `np.rot90` here, exact for quarter turns). The class is that
character's 20 drawings, rotated. Rotation classes come from the list, so
`load_class_images(..., rotations=True)` does not combine with a split directory.

Sources without an official class split (`--dataset=folder`, `tfds:<name>`) use the
same mechanism with plain class lists: one class name per line (a folder source's class
folder name, a TFDS label name), read by `read_class_list`; without a split directory
their classes are split by fractions (`fraction_split`, `--split_fraction`).

Every error names the list file and its line (`path:line: ...`).
"""

import hashlib
import os
from typing import NamedTuple

import numpy as np

from tfmeta.data.locations import resolve_data_dir
from tfmeta.data.types import ClassImages
from tfmeta.errors import ConfigError, DataError

__all__ = ["ROTATIONS", "SplitClass", "resolve_split_dir", "split_list_path",
           "read_split_list", "select_classes", "check_held_out", "run_lists",
           "ListedClass", "read_class_list", "select_listed", "CLASS_SPLITS",
           "DEFAULT_SPLIT_FRACTION", "parse_split_fraction", "fraction_split",
           "split_classes"]

# "rot<DDD>" → counter-clockwise quarter turns.
ROTATIONS = {"rot000": 0, "rot090": 1, "rot180": 2, "rot270": 3}
_LINE_FORMAT = "<Alphabet>/<characterNN>/rot<DDD> with DDD one of 000, 090, 180, 270"


class SplitClass(NamedTuple):
    """One line of a split list.

    character: "Alphabet/characterNN" (an Omniglot archive folder); quarter_turns: 0..3
    counter-clockwise; line: 1-based line number in the list file.
    """
    character: str
    quarter_turns: int
    line: int

    @property
    def name(self):
        """The class name as written in the list, e.g. "Angelic/character01/rot090"."""
        return f"{self.character}/rot{90 * self.quarter_turns:03d}"


def resolve_split_dir(split_dir, data_dir=None, dataset="omniglot"):
    """The folder of the split lists.

    `split_dir` as a path (absolute, or relative to the working directory). Omniglot
    only: a relative path that is not there is looked up under the Omniglot data folder
    (`resolve_data_dir(data_dir, "omniglot")`, e.g. `splits/vinyals` →
    `$TFMETA_DATA_DIR/omniglot/splits/vinyals`), so configs need not hold a machine's
    path. Other datasets' lists are found from the working directory only (a folder
    source's root holds class folders, not lists).
    """
    split_dir = os.path.expanduser(str(split_dir))
    tried = [os.path.abspath(split_dir)]
    if os.path.isdir(split_dir):
        return split_dir
    folder = None
    if dataset == "omniglot" and not os.path.isabs(split_dir):
        folder = resolve_data_dir(data_dir, "omniglot")
    if folder is not None:
        candidate = os.path.join(folder, split_dir)
        tried.append(candidate)
        if os.path.isdir(candidate):
            return candidate
    hint = ("e.g. splits/vinyals under the Omniglot data folder" if dataset == "omniglot"
            else "one class name per line")
    raise DataError(f"--split_dir={split_dir!r}: no such folder (tried "
                    f"{' and '.join(tried)}); point it at a folder of <split>.txt class "
                    f"lists, {hint}")


def split_list_path(split_dir, name):
    """`<split_dir>/<name>.txt`, or a DataError listing the lists that are there."""
    path = os.path.join(split_dir, f"{name}.txt")
    if not os.path.isfile(path):
        there = sorted(f[:-4] for f in os.listdir(split_dir) if f.endswith(".txt"))
        raise DataError(f"split {name!r}: no class list {path}; the split names of "
                        f"{split_dir} are {there} (set --train_split, --val_split and "
                        "--eval_split to them)")
    return path


def _split_line(path, number, text):
    """The SplitClass of line `number`; DataError for a malformed line or rotation."""
    parts = text.split("/")
    if len(parts) != 3 or not all(parts) or parts[2] not in ROTATIONS:
        raise DataError(f"{path}:{number}: {text!r} is not a class of the form "
                        f"{_LINE_FORMAT}")
    return SplitClass(f"{parts[0]}/{parts[1]}", ROTATIONS[parts[2]], number)


def read_split_list(path):
    """`[SplitClass]` of a list file, in file order (blank lines are skipped).

    Raises DataError `path:line: ...` on a malformed line (not three parts, or a
    rotation outside ROTATIONS), a repeated class, or an empty list.
    """
    return read_class_list(path, parse=_split_line)


def select_classes(source, classes, path):
    """`ClassImages` of the listed classes: label i is `classes[i]`, its images those
    of `classes[i].character` in `source` turned `quarter_turns` times counter-clockwise;
    class names "Alphabet/characterNN/rotDDD". `source`: ClassImages named
    "Alphabet/characterNN" (the pooled archives); `path` is named in errors.
    """
    index = {name: i for i, name in enumerate(source.class_names)}
    missing = [c for c in classes if c.character not in index]
    if missing:
        first = missing[0]
        alphabet = first.character.split("/")[0]
        known = sorted(n.split("/")[1] for n in index if n.split("/")[0] == alphabet)
        hint = (f"the archives' {alphabet} has {known[0]}..{known[-1]}" if known else
                f"no alphabet {alphabet!r} in the archives")
        raise DataError(f"{path}:{first.line}: character {first.character!r} is not in "
                        f"the Omniglot archives (background + evaluation pooled; {hint}); "
                        f"{len(missing)} of the list's {len(classes)} classes are missing")
    height, width = source.image_shape[:2]
    if height != width:
        raise DataError(f"rotated split classes need square images; got {height}x{width}")
    ids = np.array([index[c.character] for c in classes], dtype=np.int64)
    counts = source.counts[ids]
    gather = np.concatenate([source.indices_of(i) for i in ids])
    images = source.images[gather]
    turns = np.repeat(np.array([c.quarter_turns for c in classes]), counts)
    for k in (1, 2, 3):
        rows = turns == k
        images[rows] = np.rot90(images[rows], k=k, axes=(1, 2))
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
    return ClassImages(images, labels, [c.name for c in classes])


def check_held_out(test_path, other_paths, dataset="omniglot"):
    """Raises DataError when a list of `other_paths` (training / validation lists of one
    run) shares a *character* with the test list `test_path`: its rotations are the same
    drawings, so any shared character leaks test drawings into training. For other
    datasets than Omniglot the lists are plain class lists (`read_class_list`) and a
    shared class name is the leak."""
    if dataset == "omniglot":
        read, key = read_split_list, (lambda c: c.character)
    else:
        read, key = read_class_list, (lambda c: c.name)
    test = {}
    for c in read(test_path):
        test.setdefault(key(c), c)
    what = "characters" if dataset == "omniglot" else "classes"
    for path in other_paths:
        if os.path.abspath(path) == os.path.abspath(test_path):
            raise DataError(f"{path} is the test list itself; meta-train and validate "
                            "on other lists (e.g. --train_split=trainval --val_split=val)")
        shared = [c for c in read(path) if key(c) in test]
        if shared:
            first = shared[0]
            held = test[key(first)]
            num = len({key(c) for c in shared})
            raise DataError(f"{path}:{first.line}: {first.name} overlaps the test list "
                            f"({test_path}:{held.line}: {held.name}); {what} in "
                            f"both lists: {num}. Training and validation lists must not "
                            f"share {what} with the test list")


def run_lists(split_dir, names, data_dir=None, test_role="test", dataset="omniglot"):
    """{role: list path} of one run's splits `names` ({role: split name}, e.g.
    {"train": "trainval", "val": "val", "test": "test"}) under `split_dir` (resolved as
    in `resolve_split_dir`), after `check_held_out` of every other role's list against
    the `test_role` list."""
    folder = resolve_split_dir(split_dir, data_dir, dataset)
    paths = {role: split_list_path(folder, name) for role, name in names.items()}
    check_held_out(paths[test_role], [p for r, p in paths.items() if r != test_role],
                   dataset)
    return paths


# --- plain class lists and fraction splits (folder and TFDS sources) ----------------

# The class splits of a source without an official one, in --split_fraction order, and
# "all" (every class).
CLASS_SPLITS = ("train", "validation", "evaluation")
DEFAULT_SPLIT_FRACTION = (0.7, 0.1, 0.2)


class ListedClass(NamedTuple):
    """One line of a plain class list: the class `name` and its 1-based `line`."""
    name: str
    line: int


def read_class_list(path, parse=None):
    """`[ListedClass]` of a plain class list (one class name per line, blank lines
    skipped), in file order. Raises DataError `path:line: ...` on a repeated class, or
    an empty list. parse: `(path, number, text) -> entry with .name` for lists whose
    lines are structured (`read_split_list`); its errors come in line order with the
    repeats'."""
    parse = parse or (lambda _, number, text: ListedClass(text, number))
    classes, first_line = [], {}
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            text = text.strip()
            if not text:
                continue
            entry = parse(path, number, text)
            if entry.name in first_line:
                raise DataError(f"{path}:{number}: {entry.name} repeats line "
                                f"{first_line[entry.name]}; each class is listed once")
            first_line[entry.name] = number
            classes.append(entry)
    if not classes:
        raise DataError(f"{path}: the class list is empty")
    return classes


def select_listed(source, listed, path, what):
    """`source.subset` of the `listed` classes (`[ListedClass]`, the order of the list);
    a name that is not a class of `source` is a DataError naming `path:line` and `what`
    (the source, e.g. "folder /data/glyphs")."""
    index = {name: i for i, name in enumerate(source.class_names)}
    missing = [c for c in listed if c.name not in index]
    if missing:
        first = missing[0]
        known = source.class_names
        examples = ", ".join(repr(n) for n in known[:3])
        examples += ", ..." if len(known) > 3 else ""
        raise DataError(f"{path}:{first.line}: class {first.name!r} is not a class of "
                        f"{what} ({len(missing)} of the list's {len(listed)} classes are "
                        f"not; its {len(known)} classes are {examples})")
    return source.subset([index[c.name] for c in listed])


def parse_split_fraction(text):
    """(train, validation, evaluation) fractions of `--split_fraction` text "a,b,c"
    ("" → DEFAULT_SPLIT_FRACTION): non-negative, summing to 1, train and evaluation
    positive. ConfigError otherwise."""
    text = "" if text is None else str(text).strip()
    if not text:
        return DEFAULT_SPLIT_FRACTION
    usage = (f"--split_fraction must be three fractions train,validation,evaluation "
             f"summing to 1, e.g. 0.7,0.1,0.2; got {text!r}")
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(usage) from None
    if (len(values) != 3 or not all(np.isfinite(values)) or min(values) < 0
            or abs(sum(values) - 1.0) > 1e-6 or values[0] <= 0 or values[2] <= 0):
        raise ConfigError(usage + " (train and evaluation above 0)")
    return values


def _rank_key(seed, name):
    key = f"{int(seed)}\0{name}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).digest()


def fraction_split(source, fractions, seed=0, what="the dataset"):
    """{"train", "validation", "evaluation": sorted class ids of `source`}: disjoint
    parts that cover it, in the proportions `fractions` (see `parse_split_fraction`).

    Classes are ranked by a hash of (`seed`, class name): the first
    round(evaluation * n) are the evaluation split, the next round(validation * n) the
    validation split (at least one class for a positive fraction), the rest train. So
    the split depends on the class names, the seed and the fractions only, and adding a
    class moves at most a few others. The ids are sorted (each part keeps `source`'s
    class order).
    """
    n = source.num_classes
    _, f_val, f_eval = fractions
    counts = []
    for f in (f_eval, f_val):
        count = int(np.floor(f * n + 0.5))
        counts.append(max(count, 1) if f > 0 else 0)
    n_eval, n_val = counts
    if n - n_eval - n_val < 1:
        raise DataError(f"{what} has {n} classes: too few for --split_fraction="
                        f"{','.join(f'{f:g}' for f in fractions)} (each split with a "
                        "positive fraction needs a class); add classes or give class "
                        "lists with --split_dir")
    order = sorted(range(n), key=lambda i: _rank_key(seed, source.class_names[i]))
    parts = {"evaluation": order[:n_eval], "validation": order[n_eval:n_eval + n_val],
             "train": order[n_eval + n_val:]}
    return {name: sorted(ids) for name, ids in parts.items()}


def split_classes(source, split, split_dir=None, split_fraction="", split_seed=0,
                  data_dir=None, dataset="folder", what="the dataset"):
    """The classes of `split` of a source without an official split (folder, TFDS).

    With `split_dir`: the classes of the list `<split_dir>/<split>.txt`
    (`read_class_list`), in its order. Without: `split` is "all", or one of
    CLASS_SPLITS drawn by `fraction_split` with the fractions of `split_fraction` and
    `split_seed`. `what` names the source in errors.
    """
    if split_dir:
        path = split_list_path(resolve_split_dir(split_dir, data_dir, dataset), split)
        return select_listed(source, read_class_list(path), path, what)
    if split == "all":
        return source
    if split not in CLASS_SPLITS:
        raise ConfigError(f"unknown split {split!r} of {what}; choose one of "
                          f"{['all', *CLASS_SPLITS]} (classes drawn by --split_fraction), "
                          "or give class lists <split>.txt with --split_dir")
    ids = fraction_split(source, parse_split_fraction(split_fraction), split_seed,
                         what)[split]
    if not ids:
        raise DataError(f"split {split!r} of {what} is empty: --split_fraction="
                        f"{split_fraction} gives it no class; give it a positive fraction")
    return source.subset(ids)
