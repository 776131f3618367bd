"""Published class-split lists (tfmeta.data.splits): tiny archives with synthetic lists,
every bad-input case naming the file and line, and the real Vinyals split."""

import os

import numpy as np
import pytest

from tfmeta.config import DataConfig
from tfmeta.data import load_class_images, splits
from tfmeta.errors import ConfigError, DataError
from fakes import write_split_lists




def _load(split, split_dir, pooled_omniglot_dir, tmp_path, **kw):
    return load_class_images("omniglot", split, data_dir=pooled_omniglot_dir,
                             cache_dir=str(tmp_path / "cache"), split_dir=split_dir, **kw)


def test_listed_classes_rotated_from_both_archives(pooled_omniglot_dir, tmp_path):
    lines = ["Ev0/character02/rot090", "Bg1/character01/rot000", "Bg0/character03/rot270",
             "Bg0/character03/rot180"]
    split_dir = write_split_lists(tmp_path / "lists", mine=lines + [""])   # trailing blank line
    data = _load("mine", split_dir, pooled_omniglot_dir, tmp_path)
    assert data.class_names == lines
    np.testing.assert_array_equal(data.counts, [20] * 4)
    kw = dict(data_dir=pooled_omniglot_dir, cache_dir=str(tmp_path / "cache"))
    background = load_class_images("omniglot", "background", **kw)
    evaluation = load_class_images("omniglot", "evaluation", **kw)
    expected = [(evaluation, "Ev0/character02", 1), (background, "Bg1/character01", 0),
                (background, "Bg0/character03", 3), (background, "Bg0/character03", 2)]
    for label, (source, name, turns) in enumerate(expected):
        original = source.images_of(source.class_names.index(name))
        np.testing.assert_array_equal(data.images_of(label),
                                      np.rot90(original, turns, axes=(1, 2)))
    # Counter-clockwise, as PIL's Image.rotate(90) in the reference code: the top row
    # becomes the left column, read bottom to top.
    np.testing.assert_array_equal(data.images_of(0)[:, ::-1, 0, 0],
                                  evaluation.images_of(1)[:, 0, :, 0])


def test_relative_split_dir_is_found_under_the_data_folder(pooled_omniglot_dir, tmp_path,
                                                            monkeypatch):
    write_split_lists(os.path.join(pooled_omniglot_dir, "splits", "tiny"), test=["Bg1/character02/rot000"])
    monkeypatch.chdir(tmp_path)   # no splits/tiny here
    data = _load("test", "splits/tiny", pooled_omniglot_dir, tmp_path)
    assert data.class_names == ["Bg1/character02/rot000"]
    with pytest.raises(DataError, match="no such folder.*splits/nope"):
        _load("test", "splits/nope", pooled_omniglot_dir, tmp_path)


# --- bad input: errors name the file and the line -----------------------------------

@pytest.mark.parametrize("lines,match", [
    (["Bg0/character01/rot000", "Bg0/character09/rot090"],
     r"bad.txt:2: character 'Bg0/character09' is not in the Omniglot archives.*"
     r"Bg0 has character01..character03"),
    (["Zulu/character01/rot000"], r"bad.txt:1: .*no alphabet 'Zulu'"),
    (["Bg0/character01/rot000", "Bg1/character01/rot000", "Bg0/character01/rot000"],
     r"bad.txt:3: Bg0/character01/rot000 repeats line 1"),
    (["Bg0/character01/rot000", "Bg0/character02/rot045"],
     r"bad.txt:2: 'Bg0/character02/rot045' is not a class of the form"),
    (["Bg0/character01"], r"bad.txt:1: 'Bg0/character01' is not a class"),
    (["Bg0//rot000"], r"bad.txt:1: "),
    ([], r"bad.txt: the class list is empty"),
])
def test_bad_list_names_file_and_line(lines, match, pooled_omniglot_dir, tmp_path):
    split_dir = write_split_lists(tmp_path / "lists", bad=lines)
    with pytest.raises(DataError, match=match):
        _load("bad", split_dir, pooled_omniglot_dir, tmp_path)


def test_missing_list_names_the_lists_there(pooled_omniglot_dir, tmp_path):
    split_dir = write_split_lists(tmp_path / "lists", train=["Bg0/character01/rot000"],
                       test=["Ev0/character01/rot000"])
    with pytest.raises(DataError, match=r"no class list .*validation.txt.*\['test', 'train'\]"):
        _load("validation", split_dir, pooled_omniglot_dir, tmp_path)


def test_training_list_sharing_a_test_character_is_refused(tmp_path):
    split_dir = write_split_lists(tmp_path / "lists",
                       train=["Bg0/character01/rot000", "Bg0/character02/rot090"],
                       val=["Bg1/character01/rot000"],
                       test=["Ev0/character01/rot000", "Bg0/character02/rot000"])
    names = {"train": "train", "val": "val", "test": "test"}
    with pytest.raises(DataError, match=r"train.txt:2: Bg0/character02/rot090 overlaps "
                                        r"the test list \(.*test.txt:2: "):
        splits.run_lists(split_dir, names)
    with pytest.raises(DataError, match="is the test list itself"):
        splits.run_lists(split_dir, {"val": "test", "test": "test"})
    disjoint = splits.run_lists(split_dir, {"val": "val", "test": "test"})
    assert disjoint["val"].endswith("val.txt")


def test_generation_runs_check_the_lists_too(pooled_omniglot_dir, tmp_path):
    import dataclasses

    from tfmeta import config as cfg
    from tfmeta import meta_gan
    split_dir = write_split_lists(tmp_path / "lists", train=["Ev0/character01/rot090"],
                       test=["Ev0/character01/rot000"])
    base = cfg.GenerationConfig()
    config = dataclasses.replace(base, data=DataConfig(
        data_dir=pooled_omniglot_dir, cache_dir=str(tmp_path / "cache"),
        split_dir=split_dir, train_split="train", eval_split="test"))
    with pytest.raises(DataError, match=r"train.txt:1: .* overlaps the test list"):
        meta_gan.run(config, log=lambda m: None)


def test_rotations_flag_with_a_split_dir_is_an_error(pooled_omniglot_dir, tmp_path):
    split_dir = write_split_lists(tmp_path / "lists", train=["Bg0/character01/rot000"])
    with pytest.raises(ConfigError, match="--rotations with --split_dir"):
        _load("train", split_dir, pooled_omniglot_dir, tmp_path, rotations=True)
    with pytest.raises(ConfigError, match="--rotations with --split_dir"):
        DataConfig(split_dir=split_dir, rotations=True).validate()
    with pytest.raises(ConfigError, match="--split_dir .*--dataset=omniglot"):
        DataConfig(split_dir=split_dir, dataset="mnist").validate()


# --- the real Vinyals split (skipped without TFMETA_DATA_DIR) ------------------------

def test_real_vinyals_split(data_dir, cache_dir):
    kw = dict(data_dir=data_dir, cache_dir=cache_dir, split_dir="splits/vinyals")
    counts = {}
    for name in ("trainval", "train", "val", "test"):
        data = load_class_images("omniglot", name, **kw)
        assert data.image_shape == (28, 28, 1)
        np.testing.assert_array_equal(data.counts, np.full(data.num_classes, 20))
        counts[name] = (data.num_classes, len({n.rsplit("/", 1)[0] for n in data.class_names}))
        if name == "test":
            test = data
    # README.txt of the split: 1,028 + 172 = 1,200 training and 423 test characters, x4.
    assert counts == {"trainval": (4800, 1200), "train": (4112, 1028),
                      "val": (688, 172), "test": (1692, 423)}
    paths = splits.run_lists(kw["split_dir"], {"train": "trainval", "val": "val",
                                               "test": "test"}, data_dir)
    assert paths["test"].endswith(os.path.join("splits", "vinyals", "test.txt"))
    evaluation = load_class_images("omniglot", "evaluation", data_dir=data_dir,
                                   cache_dir=cache_dir)
    original = evaluation.images_of(evaluation.class_names.index("Gurmukhi/character42"))
    for turns in range(4):
        label = test.class_names.index(f"Gurmukhi/character42/rot{90 * turns:03d}")
        np.testing.assert_array_equal(test.images_of(label),
                                      np.rot90(original, turns, axes=(1, 2)))
