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

Every error names the list file and its line (`path:line: ...`).
"""

import os
from typing import NamedTuple

import numpy as np

from tfmeta.data.class_images import ClassImages, resolve_data_dir
from tfmeta.errors import DataError

__all__ = ["ROTATIONS", "SplitClass", "resolve_split_dir", "split_list_path",
           "read_split_list", "select_classes", "check_held_out", "run_lists"]

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


def resolve_split_dir(split_dir, data_dir=None):
    """The folder of the split lists.

    `split_dir` as a path (absolute, or relative to the working directory); a relative
    path that is not there is looked up under the Omniglot data folder
    (`resolve_data_dir(data_dir, "omniglot")`, e.g. `splits/vinyals` →
    `$TFMETA_DATA_DIR/omniglot/splits/vinyals`), so configs need not hold a
    machine's path.
    """
    split_dir = os.path.expanduser(str(split_dir))
    tried = [os.path.abspath(split_dir)]
    if os.path.isdir(split_dir):
        return split_dir
    folder = None if os.path.isabs(split_dir) else resolve_data_dir(data_dir, "omniglot")
    if folder is not None:
        candidate = os.path.join(folder, split_dir)
        tried.append(candidate)
        if os.path.isdir(candidate):
            return candidate
    raise DataError(f"--split_dir={split_dir!r}: no such folder (tried "
                    f"{' and '.join(tried)}); point it at a folder of <split>.txt class "
                    "lists, e.g. splits/vinyals under the Omniglot data folder")


def split_list_path(split_dir, name):
    """`<split_dir>/<name>.txt`, or a DataError listing the lists that are there."""
    path = os.path.join(split_dir, f"{name}.txt")
    if not os.path.isfile(path):
        there = sorted(f[:-4] for f in os.listdir(split_dir) if f.endswith(".txt"))
        raise DataError(f"split {name!r}: no class list {path}; the split names of "
                        f"{split_dir} are {there} (set --train_split, --val_split and "
                        "--eval_split to them)")
    return path


def read_split_list(path):
    """`[SplitClass]` of a list file, in file order (blank lines are skipped).

    Raises DataError `path:line: ...` on a malformed line (not three parts, or a
    rotation outside ROTATIONS), a repeated class, or an empty list.
    """
    classes, first_line = [], {}
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            text = text.strip()
            if not text:
                continue
            parts = text.split("/")
            if len(parts) != 3 or not all(parts) or parts[2] not in ROTATIONS:
                raise DataError(f"{path}:{number}: {text!r} is not a class of the form "
                                f"{_LINE_FORMAT}")
            entry = SplitClass(f"{parts[0]}/{parts[1]}", ROTATIONS[parts[2]], number)
            if entry.name in first_line:
                raise DataError(f"{path}:{number}: {entry.name} repeats line "
                                f"{first_line[entry.name]}; each class is listed once")
            first_line[entry.name] = number
            classes.append(entry)
    if not classes:
        raise DataError(f"{path}: the class list is empty")
    return classes


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


def check_held_out(test_path, other_paths):
    """Raises DataError when a list of `other_paths` (training / validation lists of one
    run) shares a *character* with the test list `test_path`: its rotations are the same
    drawings, so any shared character leaks test drawings into training."""
    test = {}
    for c in read_split_list(test_path):
        test.setdefault(c.character, c)
    for path in other_paths:
        if os.path.abspath(path) == os.path.abspath(test_path):
            raise DataError(f"{path} is the test list itself; meta-train and validate "
                            "on other lists (e.g. --train_split=trainval --val_split=val)")
        shared = [c for c in read_split_list(path) if c.character in test]
        if shared:
            first = shared[0]
            held = test[first.character]
            num = len({c.character for c in shared})
            raise DataError(f"{path}:{first.line}: {first.name} overlaps the test list "
                            f"({test_path}:{held.line}: {held.name}); characters in "
                            f"both lists: {num}. Training and validation lists must not "
                            "share characters with the test list")


def run_lists(split_dir, names, data_dir=None, test_role="test"):
    """{role: list path} of one run's splits `names` ({role: split name}, e.g.
    {"train": "trainval", "val": "val", "test": "test"}) under `split_dir` (resolved as
    in `resolve_split_dir`), after `check_held_out` of every other role's list against
    the `test_role` list."""
    folder = resolve_split_dir(split_dir, data_dir)
    paths = {role: split_list_path(folder, name) for role, name in names.items()}
    check_held_out(paths[test_role], [p for r, p in paths.items() if r != test_role])
    return paths
