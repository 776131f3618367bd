"""Dataset sources beyond the built-in two (tfmeta.data.sources): folders of class
folders, prepared TFDS datasets, the table `load_class_images` dispatches through, and
the import graph of tfmeta.data (no cycle).

Real data (the official Omniglot zip laid out as folders) is skipped without
$TFMETA_DATA_DIR; everything else makes its own tiny data.
"""

import ast
import json
import logging
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from tfmeta.config import DataConfig
from tfmeta.data import ClassImages, load_class_images, sources, splits
from tfmeta.data import folder as folder_source
from tfmeta.data.preprocess import area_resize
from tfmeta.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_PACKAGE = os.path.join(REPO, "tfmeta", "data")


def _drawing(rng, size=(28, 28), dark_ink=True):
    """uint8 [h, w]: a random blocky stroke pattern, ink dark on white (or bright on
    black), with a clean 2-pixel border of paper."""
    h, w = size
    ink = np.zeros((h, w), bool)
    ink[2:-2, 2:-2] = rng.random((h - 4, w - 4)) < 0.25
    return np.where(ink, 0, 255).astype(np.uint8) if dark_ink else (ink * 255).astype(np.uint8)


def _save(path, array, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def _make_folder(root, counts, size=(28, 28), dark_ink=True, seed=0, ext="png"):
    """ROOT/<class>/<NN>.<ext> with `counts` {class: number of images}; returns
    {class: [uint8 arrays as written]}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in counts.items():
        written[name] = []
        for i in range(count):
            array = _drawing(rng, size, dark_ink)
            _save(os.path.join(root, name, f"{i:02d}.{ext}"), array)
            written[name].append(array)
    return written


def _load(root, split="all", tmp_path=None, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache") if tmp_path else None)
    return load_class_images("folder", split, data_dir=str(root), **kw)


# --- (a) the official Omniglot archive laid out as folders ---------------------------

OMNIGLOT_ALPHABETS = ("Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian")


def test_omniglot_as_folders_equals_the_builtin_loader(data_dir, cache_dir, tmp_path):
    archive = os.path.join(data_dir, "omniglot", "images_background.zip")
    if not os.path.isfile(archive):
        pytest.skip(f"no {archive}")
    root = tmp_path / "omniglot_folders"
    with zipfile.ZipFile(archive) as z:
        for member in z.namelist():
            parts = member.split("/")
            if len(parts) == 4 and parts[1] in OMNIGLOT_ALPHABETS and parts[3].endswith(".png"):
                target = root / f"{parts[1]}_{parts[2]}" / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(member))
    builtin = load_class_images("omniglot", "background", data_dir=data_dir,
                                cache_dir=cache_dir)
    ids = [i for i, n in enumerate(builtin.class_names)
           if n.split("/")[0] in OMNIGLOT_ALPHABETS]
    expected = builtin.subset(ids)
    for channels in (1, 3):
        folders = _load(root, tmp_path=tmp_path, channels=channels)
        reference = expected.with_channels(channels)
        # same classes in the same order (folder "A_characterNN" is class "A/characterNN")
        assert [n.replace("_character", "/character") for n in folders.class_names] == \
            reference.class_names
        np.testing.assert_array_equal(folders.labels, reference.labels)
        assert folders.images.dtype == np.uint8
        np.testing.assert_array_equal(folders.images, reference.images)
    assert expected.num_classes == 20 + 29 + 26


# --- (b) synthetic folders -------------------------------------------------------------

def test_formats_sizes_and_exact_area_resize(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "root"
    sources_written = {}
    for fmt, ext in [("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif")]:
        for i, size in enumerate([(28, 28), (56, 56), (45, 30), (105, 105)]):
            array = _drawing(rng, size)
            _save(str(root / f"class_{ext}" / f"{i}.{ext.upper() if i == 1 else ext}"),
                  array, format=fmt)
            sources_written.setdefault(f"class_{ext}", []).append(array)
    data = _load(root, tmp_path=tmp_path)
    assert data.class_names == ["class_bmp", "class_gif", "class_png"]
    assert data.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(data.counts, [4, 4, 4])
    for label, name in enumerate(data.class_names):
        for j, array in enumerate(sources_written[name]):
            # dark ink on white, detected → inverted at full size, then area-resized
            np.testing.assert_array_equal(data.images_of(label)[j, :, :, 0],
                                          area_resize((255 - array)[None], 28)[0])
    # JPEG (lossy): what PIL decodes, inverted and area-resized.
    _save(str(tmp_path / "jpg" / "a" / "0.jpeg"), _drawing(rng, (64, 48)), quality=95)
    _save(str(tmp_path / "jpg" / "a" / "1.JPG"), _drawing(rng, (64, 48)), quality=95)
    jpg = _load(tmp_path / "jpg", image_size=32, tmp_path=tmp_path)
    assert jpg.image_shape == (32, 32, 1)
    for j, path in enumerate(sorted((tmp_path / "jpg" / "a").iterdir())):
        decoded = np.asarray(Image.open(path).convert("L"))
        np.testing.assert_array_equal(jpg.images[j, :, :, 0],
                                      area_resize((255 - decoded)[None], 32)[0])


def test_ink_polarity_auto_bright_dark_and_mixed_warning(tmp_path, caplog, monkeypatch):
    # the trainers print tfmeta.data's lines themselves (trainers.common.show_data_progress)
    # and stop their propagation; caplog listens at the root
    monkeypatch.setattr(logging.getLogger("tfmeta.data"), "propagate", True)
    dark = _make_folder(str(tmp_path / "dark"), {"a": 3, "b": 3}, dark_ink=True)
    bright = _make_folder(str(tmp_path / "bright"), {"a": 3, "b": 3}, dark_ink=False)
    auto_dark = _load(tmp_path / "dark", tmp_path=tmp_path)
    auto_bright = _load(tmp_path / "bright", tmp_path=tmp_path)
    np.testing.assert_array_equal(auto_dark.images[0, :, :, 0], 255 - dark["a"][0])
    np.testing.assert_array_equal(auto_bright.images[0, :, :, 0], bright["a"][0])
    for data in (auto_dark, auto_bright):   # strokes bright: the border is background
        assert data.images[:, 0, :, :].max() == 0 and data.images.max() == 255
    kept = _load(tmp_path / "dark", tmp_path=tmp_path, ink_polarity="bright")
    np.testing.assert_array_equal(kept.images[0, :, :, 0], dark["a"][0])
    flipped = _load(tmp_path / "bright", tmp_path=tmp_path, ink_polarity="dark")
    np.testing.assert_array_equal(flipped.images[0, :, :, 0], 255 - bright["a"][0])
    # A folder mixing both: the majority decides, and a warning says so.
    _make_folder(str(tmp_path / "mixed"), {"a": 8}, dark_ink=True)
    _make_folder(str(tmp_path / "mixed"), {"b": 4}, dark_ink=False, seed=1)
    with caplog.at_level(logging.WARNING, logger="tfmeta.data"):
        mixed = _load(tmp_path / "mixed", tmp_path=tmp_path)
    assert "mixes ink polarities: 4 of 12" in caplog.text and "--ink_polarity" in caplog.text
    assert mixed.images_of(0)[:, 0, :, :].max() == 0    # the dark-ink majority inverted


def test_channels_colour_kept_luma_and_transparency(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    rgb[0, :] = rgb[-1, :] = rgb[:, 0] = rgb[:, -1] = 0      # dark border: kept
    gray = (rng.random((30, 30)) < 0.3).astype(np.uint8) * 255
    _save(str(tmp_path / "root" / "colour" / "0.png"), rgb)
    _save(str(tmp_path / "root" / "colour" / "1.bmp"), rgb)
    _save(str(tmp_path / "root" / "gray" / "0.png"), gray)
    three = _load(tmp_path / "root", tmp_path=tmp_path, channels=3)
    one = _load(tmp_path / "root", tmp_path=tmp_path, channels=1)
    assert three.image_shape == (28, 28, 3) and one.image_shape == (28, 28, 1)
    for c in range(3):   # colour kept: each channel area-resized
        np.testing.assert_array_equal(three.images[0, :, :, c],
                                      area_resize(rgb[None, :, :, c], 28)[0])
    np.testing.assert_array_equal(three.images[0], three.images[1])   # PNG = BMP
    for c in range(3):   # gray repeated
        np.testing.assert_array_equal(three.images[2, :, :, c], one.images[2, :, :, 0])
    # channels=1: ITU-R 601 luma (PIL's "L"), then the area resize
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(one.images[0, :, :, 0], area_resize(luma[None], 28)[0])
    weights = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert np.abs(luma - weights).max() <= 1
    # Transparent pixels are paper (white): black strokes on a transparent page are
    # detected as dark ink and inverted.
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[10:18, 5:20, 3] = 255           # opaque black stroke, the rest transparent black
    _save(str(tmp_path / "alpha" / "a" / "0.png"), rgba)
    alpha = _load(tmp_path / "alpha", tmp_path=tmp_path)
    expected = np.zeros((28, 28), np.uint8)
    expected[10:18, 5:20] = 255
    np.testing.assert_array_equal(alpha.images[0, :, :, 0], expected)


def test_too_few_images_are_named_and_skipped(tmp_path, caplog, monkeypatch):
    # the trainers print tfmeta.data's lines themselves (trainers.common.show_data_progress)
    # and stop their propagation; caplog listens at the root
    monkeypatch.setattr(logging.getLogger("tfmeta.data"), "propagate", True)
    _make_folder(str(tmp_path / "root"), {"big": 6, "small": 3, "tiny": 1, "ok": 5})
    with caplog.at_level(logging.WARNING, logger="tfmeta.data"):
        data = _load(tmp_path / "root", tmp_path=tmp_path, min_images=5)
    assert data.class_names == ["big", "ok"]
    np.testing.assert_array_equal(data.counts, [6, 5])
    line = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(line) == 1
    assert "skipping 2 of 4 classes with fewer than 5 images" in line[0]
    assert "small (3)" in line[0] and "tiny (1)" in line[0]
    with pytest.raises(DataError, match="every class has fewer than 7 images"):
        _load(tmp_path / "root", tmp_path=tmp_path, min_images=7)


def test_split_fraction_is_deterministic_disjoint_and_stable(tmp_path):
    names = [f"glyph{i:02d}" for i in range(20)]
    _make_folder(str(tmp_path / "root"), {n: 2 for n in names})
    kw = dict(tmp_path=tmp_path, split_fraction="0.6,0.15,0.25")
    parts = {s: _load(tmp_path / "root", s, **kw).class_names
             for s in ("train", "validation", "evaluation")}
    assert [len(parts[s]) for s in ("train", "validation", "evaluation")] == [12, 3, 5]
    assert sorted(sum(parts.values(), [])) == names              # disjoint cover
    for s, listed in parts.items():
        assert listed == sorted(listed)                            # folder order kept
        # the same in another cache (decoded again) and with another split_seed not
        again = _load(tmp_path / "root", s, split_fraction="0.6,0.15,0.25",
                      cache_dir=str(tmp_path / "other_cache"))
        assert again.class_names == listed
    other = _load(tmp_path / "root", "evaluation", split_seed=1, **kw).class_names
    assert other != parts["evaluation"] and len(other) == 5
    # The default fractions 0.7, 0.1, 0.2; "all" is every class.
    default = {s: _load(tmp_path / "root", s, tmp_path=tmp_path).num_classes
               for s in ("train", "validation", "evaluation", "all")}
    assert default == {"train": 14, "validation": 2, "evaluation": 4, "all": 20}
    # A class added to the folder moves at most one class per split boundary.
    _make_folder(str(tmp_path / "root"), {"glyph20": 2}, seed=9)
    grown = _load(tmp_path / "root", "evaluation", **kw).class_names
    assert len(set(grown) ^ set(parts["evaluation"])) <= 2
    # Zero validation classes is allowed, but loading that split says why it is empty.
    with pytest.raises(DataError, match="split 'validation' .* is empty"):
        _load(tmp_path / "root", "validation", tmp_path=tmp_path, split_fraction="0.8,0,0.2")


def test_class_lists_name_folder_classes(tmp_path):
    _make_folder(str(tmp_path / "root"), {n: 2 for n in ("cat", "dog", "emu", "fox")})
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("fox\ncat\n\n")
    (lists / "test.txt").write_text("dog\n")
    (lists / "bad.txt").write_text("cat\nyak\n")
    (lists / "leak.txt").write_text("emu\ndog\n")
    kw = dict(tmp_path=tmp_path, split_dir=str(lists))
    train = _load(tmp_path / "root", "train", **kw)
    assert train.class_names == ["fox", "cat"]                  # the list's order
    everything = _load(tmp_path / "root", tmp_path=tmp_path)
    np.testing.assert_array_equal(train.images_of(0), everything.images_of(3))
    with pytest.raises(DataError, match=r"bad.txt:2: class 'yak' is not a class of folder"):
        _load(tmp_path / "root", "bad", **kw)
    paths = splits.run_lists(str(lists), {"train": "train", "test": "test"},
                             dataset="folder")
    assert paths["train"].endswith("train.txt")
    with pytest.raises(DataError, match=r"leak.txt:2: dog overlaps the test list"):
        splits.run_lists(str(lists), {"train": "leak", "test": "test"}, dataset="folder")
    with pytest.raises(DataError, match=r"split 'nope': no class list .*\['bad', 'leak', "
                                        r"'test', 'train'\]"):
        _load(tmp_path / "root", "nope", **kw)


def test_decoded_folder_is_cached_and_rebuilt_when_files_change(tmp_path, monkeypatch):
    root = str(tmp_path / "root")
    _make_folder(root, {"a": 3, "b": 3})
    calls = []
    real = folder_source.decode_folder
    monkeypatch.setattr(folder_source, "decode_folder",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    first = _load(root, tmp_path=tmp_path)
    again = _load(root, tmp_path=tmp_path, min_images=3)   # another request, same entry
    assert len(calls) == 1
    np.testing.assert_array_equal(again.images, first.images)
    assert len(os.listdir(tmp_path / "cache")) == 1
    _load(root, tmp_path=tmp_path, image_size=32)        # other options: another entry
    assert len(calls) == 2
    path = os.path.join(root, "a", "00.png")
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))   # touched
    _load(root, tmp_path=tmp_path)
    assert len(calls) == 3
    _make_folder(root, {"c": 2}, seed=4)                 # a new class folder
    grown = _load(root, tmp_path=tmp_path)
    assert len(calls) == 4 and grown.num_classes == 3
    np.testing.assert_array_equal(grown.images[:6], first.images)


def test_a_new_source_is_one_table_row(monkeypatch):
    def load(request):
        assert (request.source, request.name, request.split) == ("fake", "v2", "train")
        images = np.full((3, request.image_size, request.image_size, 1), 7, np.uint8)
        return ClassImages(images, [0, 0, 1], ["x", "y"])

    monkeypatch.setitem(sources.SOURCES, "fake", sources.Source(load, "a test source",
                                                                named=True))
    data = load_class_images("fake:v2", "train", image_size=14, channels=3, min_images=2)
    assert data.class_names == ["x"] and data.image_shape == (14, 14, 3)
    assert "fake:<name>" in sources.dataset_choices()
    DataConfig(dataset="fake:v2").validate()
    with pytest.raises(ConfigError, match="--ink_polarity applies to --dataset=folder / "
                                          "tfds:<name>, not fake:v2"):
        load_class_images("fake:v2", "train", ink_polarity="dark")


# --- every error path: one clear ConfigError / DataError ----------------------------

def test_folder_errors(tmp_path):
    _make_folder(str(tmp_path / "good"), {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="--dataset=folder needs --data_dir=ROOT"):
        load_class_images("folder", "all", data_dir=None)
    with pytest.raises(DataError, match="--data_dir=.*nope.*: no such folder"):
        _load(tmp_path / "nope", tmp_path=tmp_path)
    flat = tmp_path / "flat"
    _save(str(flat / "0.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="holds 1 image files but no subfolders"):
        _load(flat, tmp_path=tmp_path)
    empty = tmp_path / "empty_class"
    _make_folder(str(empty), {"a": 2})
    (empty / "b").mkdir()
    (empty / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder .*empty_class/b has no image files"):
        _load(empty, tmp_path=tmp_path)
    nested = tmp_path / "nested"
    _make_folder(str(nested / "Alphabet"), {"character01": 2})
    with pytest.raises(DataError, match=r"Alphabet has no image files \(it holds "
                                        r"subfolders \['character01'\]"):
        _load(nested, tmp_path=tmp_path)
    broken = tmp_path / "broken"
    _make_folder(str(broken), {"a": 2})
    (broken / "a" / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"cannot read image file .*broken/a/03.png"):
        _load(broken, tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'background' of folder"):
        _load(tmp_path / "good", "background", tmp_path=tmp_path)
    with pytest.raises(DataError, match="has 2 classes: too few for --split_fraction"):
        _load(tmp_path / "good", "train", tmp_path=tmp_path)
    with pytest.raises(DataError, match="--split_dir='nolists': no such folder"):
        _load(tmp_path / "good", "train", tmp_path=tmp_path, split_dir="nolists")


@pytest.mark.parametrize("kw,match", [
    (dict(dataset="cifar"), "unknown dataset 'cifar'; choose one of omniglot, mnist, "
                            "folder, tfds:<name>"),
    (dict(dataset="tfds"), r"give the tfds dataset's name, tfds:<name>"),
    (dict(dataset="mnist:x"), "mnist takes no name"),
    (dict(dataset="folder"), "--dataset=folder needs --data_dir=ROOT"),
    (dict(dataset="folder", data_dir="r", ink_polarity="grey"), "--ink_polarity must be one"),
    (dict(dataset="folder", data_dir="r", split_fraction="0.5,0.5"),
     "--split_fraction must be three fractions"),
    (dict(dataset="folder", data_dir="r", split_fraction="0.9,0.1,0"),
     "--split_fraction must be"),
    (dict(dataset="folder", data_dir="r", split_fraction="a,b,c"), "--split_fraction must"),
    (dict(dataset="folder", data_dir="r", split_fraction="0.7,0.1,0.2", split_dir="l"),
     "--split_fraction and --split_dir both"),
    (dict(dataset="omniglot", ink_polarity="dark"), "--ink_polarity applies to"),
    (dict(dataset="mnist", split_fraction="0.7,0.1,0.2"), "--split_fraction applies to"),
    (dict(dataset="mnist", split_dir="l"), "--split_dir applies to --dataset=omniglot"),
])
def test_data_config_rejects(kw, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig(**kw).validate()


def test_data_config_accepts_the_new_sources():
    for kw in (dict(dataset="folder", data_dir="/any", ink_polarity="dark",
                    split_fraction="0.8,0.1,0.1", rotations=True),
               dict(dataset="folder", data_dir="/any", split_dir="lists", rotations=True),
               dict(dataset="tfds:emnist/balanced", channels=3, ink_polarity="bright")):
        DataConfig(**kw).validate()


# --- TFDS ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
    """A TFDS data folder with a tiny prepared dataset `tfmeta_test_glyphs` (4 labels,
    one without examples; splits train + test; 12x10 gray images, bright strokes), made
    by a local builder: nothing is downloaded."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class TfmetaTestGlyphs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(names=["alpha", "beta", "gamma",
                                                         "unused"])}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples(0), "test": self._generate_examples(1)}

        def _generate_examples(self, seed):
            for i in range(9):
                yield f"{seed}-{i}", {"image": tiny_tfds_image(seed, i), "label": i % 3}

    folder = tmp_path_factory.mktemp("tfds")
    TfmetaTestGlyphs(data_dir=str(folder)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return str(folder)


def tiny_tfds_image(seed, i):
    """The image of example i of split seed (0 train, 1 test) of the tiny TFDS set."""
    image = np.zeros((12, 10, 1), np.uint8)
    image[2:10, 2:8, 0] = (np.random.default_rng([seed, i]).random((8, 6)) < 0.4) * 255
    return image


def test_tfds_prepared_dataset_offline(tiny_tfds_dir, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def no_download(*args, **kwargs):
        raise AssertionError("tfmeta must not download or prepare TFDS data")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    kw = dict(data_dir=tiny_tfds_dir, cache_dir=str(tmp_path / "cache"), image_size=28)
    data = load_class_images("tfds:tfmeta_test_glyphs", "all", **kw)
    assert data.class_names == ["alpha", "beta", "gamma"]       # "unused" has no example
    np.testing.assert_array_equal(data.counts, [6, 6, 6])
    # class "beta" (label 1): examples 1, 4, 7 of both splits (TFDS stores them in its
    # own shuffled order), bright strokes kept, area-resized 12x10 → 28x28.
    raw = np.stack([tiny_tfds_image(seed, i)[..., 0] for seed in (0, 1) for i in (1, 4, 7)])
    assert _same_images(data.images_of(1)[..., 0], area_resize(raw, 28))
    again = load_class_images("tfds:tfmeta_test_glyphs", "all", data_dir=tiny_tfds_dir,
                              cache_dir=str(tmp_path / "other_cache"))
    np.testing.assert_array_equal(again.images, data.images)    # a deterministic order
    # class split, channels, polarity and the version folder itself as --data_dir
    parts = [load_class_images("tfds:tfmeta_test_glyphs", s, split_fraction="0.34,0.33,0.33",
                               **kw).class_names for s in ("train", "validation", "evaluation")]
    assert sorted(sum(parts, [])) == data.class_names and all(len(p) == 1 for p in parts)
    version_dir = os.path.join(tiny_tfds_dir, "tfmeta_test_glyphs", "1.0.0")
    rgb = load_class_images("tfds:tfmeta_test_glyphs", "all", data_dir=version_dir,
                            cache_dir=str(tmp_path / "cache"), channels=3,
                            ink_polarity="dark")
    assert rgb.image_shape == (28, 28, 3)
    for c in range(3):   # gray repeated, inverted at full size
        assert _same_images(rgb.images_of(1)[..., c], area_resize(255 - raw, 28))


def _same_images(a, b):
    """Whether two uint8 [N, H, W] stacks hold the same images, in any order."""
    def rows(x):
        return sorted(bytes(image) for image in np.ascontiguousarray(x))
    return a.shape == b.shape and rows(a) == rows(b)


def test_tfds_absent_data_is_a_clear_error_without_download(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_download(*args, **kwargs):
        raise AssertionError("tfmeta must not download or prepare TFDS data")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    empty = tmp_path / "tfds_empty"
    empty.mkdir()
    kw = dict(data_dir=str(empty), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"tfds:emnist/balanced: the data are not prepared "
                                        r"under .*tfds_empty.*never downloads.*tfds build"):
        load_class_images("tfds:emnist/balanced", "train", **kw)
    with pytest.raises(DataError, match=r"tfds:no_such_dataset_xyz: neither a dataset "
                                        r"registered .* nor one prepared under"):
        load_class_images("tfds:no_such_dataset_xyz", "train", **kw)
    with pytest.raises(DataError, match="TFDS data folder .*missing.* does not exist"):
        load_class_images("tfds:mnist", "train", data_dir=str(tmp_path / "missing"))


# --- (c) the trainer on a folder -------------------------------------------------------

def _run_trainer(args, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "trainers.meta_gan", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_meta_gan_trainer_flag_errors_are_one_line(tmp_path):
    result = _run_trainer(["--dataset=folder", "--flagfile=configs/tiny_warp.cfg",
                           f"--workdir={tmp_path / 'run'}"], timeout=120)
    assert result.returncode == 2, result.stderr
    assert "error: --dataset=folder needs --data_dir=ROOT" in result.stderr
    assert "Traceback" not in result.stderr


def _class_landing_in(split, names, candidates):
    """The first of `candidates` that the default fraction split (seed 0) puts in
    `split` when added to the classes `names`."""
    for candidate in candidates:
        every = sorted(names + [candidate])
        stub = ClassImages(np.zeros((len(every), 1, 1, 1), np.uint8), range(len(every)), every)
        ids = splits.fraction_split(stub, splits.DEFAULT_SPLIT_FRACTION)[split]
        if every.index(candidate) in ids:
            return candidate
    raise AssertionError("no candidate lands in " + split)


def test_meta_gan_trainer_runs_on_a_folder(tmp_path):   # 23-36 s on 2 shared cores
    root = tmp_path / "glyphs"
    counts = {f"glyph{i:02d}": 12 for i in range(10)}
    small = _class_landing_in("train", list(counts), [f"small{i}" for i in range(50)])
    counts[small] = 4           # < k_shot 5 + k_query 5 of configs/tiny_warp.cfg
    _make_folder(str(root), counts)
    workdir = tmp_path / "run"
    start = time.time()
    result = _run_trainer(["--dataset=folder", f"--data_dir={root}",
                           "--flagfile=configs/tiny_warp.cfg", "--num_steps=2",
                           f"--workdir={workdir}", f"--cache_dir={tmp_path / 'cache'}"],
                          timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "[done] checkpoint" in output
    # the class with 4 images is named, with its count, in a warning line
    assert "skipping 1 of 8 classes with fewer than 10 images" in output, output[-3000:]
    assert f"{small} (4)" in output
    saved = json.load(open(workdir / "config.json"))
    assert saved["data"]["dataset"] == "folder" and saved["data"]["data_dir"] == str(root)
    assert saved["data"]["ink_polarity"] == "auto"
    print(f"meta_gan on a folder: {time.time() - start:.1f} s")


# --- (d) no import cycle in tfmeta.data ------------------------------------------------

def _data_imports():
    """{module: set of tfmeta.data modules it imports (module level or inside functions)}
    for every module of the package ("tfmeta.data" is __init__)."""
    modules = {f[:-3] for f in os.listdir(DATA_PACKAGE) if f.endswith(".py")}
    graph = {}
    for name in modules:
        module = "tfmeta.data" if name == "__init__" else f"tfmeta.data.{name}"
        with open(os.path.join(DATA_PACKAGE, f"{name}.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("tfmeta.data")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "tfmeta.data":   # submodules, or names of __init__
                    for alias in node.names:
                        edges.add(f"tfmeta.data.{alias.name}" if alias.name in modules
                                  else "tfmeta.data")
                elif node.module.startswith("tfmeta.data."):
                    edges.add(node.module)
        graph[module] = edges - {module}
    return graph


def _find_cycle(graph):
    """A list of modules forming an import cycle of `graph`, or None."""
    state = {}

    def visit(module, path):
        if state.get(module) == "open":
            return path[path.index(module):] + [module]
        if state.get(module) == "done":
            return None
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            cycle = visit(other, path + [module])
            if cycle:
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_tfmeta_data_has_no_import_cycle():
    graph = _data_imports()
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert "tfmeta.data.sources" in graph["tfmeta.data.class_images"]
    # leaves: they import nothing from the package
    for leaf in ("types", "locations", "preprocess"):
        assert graph[f"tfmeta.data.{leaf}"] == set(), leaf
    # no submodule imports the package itself (its __init__ imports them)
    assert not [m for m, edges in graph.items() if "tfmeta.data" in edges]
    # the check sees late (function-level) imports too: on the former layout it finds
    # class_images -> mnist -> cache -> class_images
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_every_data_module_imports_alone_without_tensorflow():
    modules = sorted(m for m in _data_imports() if m != "tfmeta.data")
    # leaves last-imported first would hide nothing: import the consumers first
    code = ("import importlib, sys\n"
            f"for m in {modules[::-1]!r}:\n"
            "    importlib.import_module(m)\n"
            "from tfmeta.data.class_images import ClassImages as A\n"
            "from tfmeta.data.types import ClassImages as B\n"
            "assert A is B\n"
            "assert 'tensorflow' not in sys.modules, 'tfmeta.data imported TensorFlow'\n"
            "assert 'tensorflow_datasets' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
