"""Loaders, cache and preprocessing of tfmeta.data (tiny fake archives + real data)."""

import gzip
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from tfmeta.data import ClassImages, load_class_images, scale_images, unscale_images
from tfmeta.data import cache, omniglot
from tfmeta.data.preprocess import area_resize
from tfmeta.errors import ConfigError, DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _png_ink(archive_path, member):
    """bool [105, 105] ink mask of one member, read independently of the loader."""
    with zipfile.ZipFile(archive_path) as z:
        return ~np.asarray(Image.open(io.BytesIO(z.read(member))).convert("1"))


# --- Omniglot from tiny fake archives ------------------------------------------------

def test_tiny_background_layout_order_and_exact_pixels(tiny_omniglot_dir, tmp_path):
    data = load_class_images("omniglot", "background", image_size=105,
                             data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path))
    assert data.images.shape == (120, 105, 105, 1) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int32
    np.testing.assert_array_equal(data.labels, np.repeat(np.arange(6), 20))
    assert data.class_names == [f"Alpha{a}/character{c:02d}" for a in (0, 1)
                                for c in (1, 2, 3)]
    np.testing.assert_array_equal(data.counts, [20] * 6)
    # At full size the decode is exactly "ink → 255, background → 0".
    archive = os.path.join(tiny_omniglot_dir, "images_background.zip")
    for label, drawing in [(0, 0), (4, 7), (5, 19)]:
        a, c = divmod(label, 3)
        member = f"images_background/Alpha{a}/character{c + 1:02d}/{c:04d}_{drawing + 1:02d}.png"
        expected = _png_ink(archive, member).astype(np.uint8) * 255
        np.testing.assert_array_equal(data.images_of(label)[drawing, :, :, 0], expected)


def test_tiny_area_resize_is_block_mean(tiny_omniglot_dir, tmp_path):
    # The fake drawings are 7x7 blocks of 15x15 pixels: a 7-pixel area resize must
    # return each block's value exactly.
    full = load_class_images("omniglot", "evaluation", image_size=105,
                             data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path))
    small = load_class_images("omniglot", "evaluation", image_size=7,
                              data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(small.images, full.images[:, ::15, ::15, :])
    mid = load_class_images("omniglot", "evaluation", image_size=28,
                            data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(mid.images[..., 0], area_resize(full.images[..., 0], 28))


def test_data_dir_root_direct_and_env_agree(tiny_omniglot_dir, tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(tiny_omniglot_dir, root / "omniglot")
    kwargs = dict(image_size=14, cache_dir=str(tmp_path / "c"))
    direct = load_class_images("omniglot", "evaluation", data_dir=tiny_omniglot_dir,
                               **kwargs)
    via_root = load_class_images("omniglot", "evaluation", data_dir=str(root), **kwargs)
    monkeypatch.setenv("TFMETA_DATA_DIR", str(root))
    via_env = load_class_images("omniglot", "evaluation", **kwargs)
    for other in (via_root, via_env):
        np.testing.assert_array_equal(direct.images, other.images)
        assert direct.class_names == other.class_names


def test_cache_hit_rebuild_on_change_and_corrupt_entry(tiny_omniglot_dir, tmp_path,
                                                      monkeypatch):
    data_dir = tmp_path / "d"
    shutil.copytree(tiny_omniglot_dir, data_dir)
    cache_dir = tmp_path / "cache"
    first = load_class_images("omniglot", "evaluation", data_dir=str(data_dir),
                              cache_dir=str(cache_dir))
    entries = os.listdir(cache_dir)
    assert len(entries) == 1 and entries[0].endswith(".npz")  # no temporary left over
    calls = []
    real_decode = omniglot.decode_archive
    monkeypatch.setattr(omniglot, "decode_archive",
                        lambda *a: calls.append(a) or real_decode(*a))
    again = load_class_images("omniglot", "evaluation", data_dir=str(data_dir),
                              cache_dir=str(cache_dir))
    assert calls == []  # served from the cache
    np.testing.assert_array_equal(first.images, again.images)
    assert first.class_names == again.class_names
    # A different archive (new size/mtime) is a different key: decoded again.
    from conftest import write_omniglot_zip
    write_omniglot_zip(str(data_dir / "images_evaluation.zip"), 1, 3, 20, seed=5)
    changed = load_class_images("omniglot", "evaluation", data_dir=str(data_dir),
                                cache_dir=str(cache_dir))
    assert len(calls) == 1 and changed.num_classes == 3
    # A corrupt entry is rebuilt, not fatal.
    path = cache.cache_path(str(cache_dir), "omniglot",
                            str(data_dir / "images_evaluation.zip"), 28)
    with open(path, "wb") as f:
        f.write(b"not an npz")
    rebuilt = load_class_images("omniglot", "evaluation", data_dir=str(data_dir),
                                cache_dir=str(cache_dir))
    assert len(calls) == 2 and rebuilt.num_classes == 3


def test_cache_dir_from_env(tiny_omniglot_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFMETA_CACHE_DIR", str(tmp_path / "envcache"))
    load_class_images("omniglot", "evaluation", data_dir=tiny_omniglot_dir)
    assert len(os.listdir(tmp_path / "envcache")) == 1


def test_train_validation_split_is_disjoint_cover_and_seeded(tiny_omniglot_dir, tmp_path):
    kw = dict(data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path), validation_classes=2)
    background = load_class_images("omniglot", "background", **kw)
    splits = {}
    for seed in range(4):
        train = load_class_images("omniglot", "train", split_seed=seed, **kw)
        val = load_class_images("omniglot", "validation", split_seed=seed, **kw)
        assert (train.num_classes, val.num_classes) == (4, 2)
        assert not set(train.class_names) & set(val.class_names)
        assert sorted(train.class_names + val.class_names) == sorted(background.class_names)
        # Relabelled subsets keep the images of each character.
        for name in val.class_names:
            np.testing.assert_array_equal(
                val.images_of(val.class_names.index(name)),
                background.images_of(background.class_names.index(name)))
        splits[seed] = tuple(val.class_names)
    assert splits[0] == tuple(load_class_images("omniglot", "validation", split_seed=0,
                                                **kw).class_names)
    assert len(set(splits.values())) > 1


def test_channels_and_rotations(tiny_omniglot_dir, tmp_path):
    kw = dict(data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path))
    gray = load_class_images("omniglot", "evaluation", **kw)
    rgb = load_class_images("omniglot", "evaluation", channels=3, **kw)
    assert rgb.image_shape == (28, 28, 3)
    for ch in range(3):
        np.testing.assert_array_equal(rgb.images[..., ch], gray.images[..., 0])
    rot = load_class_images("omniglot", "evaluation", rotations=True, **kw)
    assert rot.num_classes == 4 * gray.num_classes and len(rot) == 4 * len(gray)
    c = gray.num_classes
    for r in range(4):
        np.testing.assert_array_equal(rot.images_of(r * c + 1),
                                      np.rot90(gray.images_of(1), r, axes=(1, 2)))
    assert rot.class_names[c + 1] == gray.class_names[1] + "/rot90"


def test_mirrors_with_rotations_give_the_eight_symmetries_as_classes(tiny_omniglot_dir,
                                                                     tmp_path):
    kw = dict(data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path))
    gray = load_class_images("omniglot", "evaluation", **kw)
    c = gray.num_classes
    mirrored = load_class_images("omniglot", "evaluation", mirrors=True, **kw)
    assert mirrored.num_classes == 2 * c and len(mirrored) == 2 * len(gray)
    np.testing.assert_array_equal(mirrored.images_of(c + 1), gray.images_of(1)[:, :, ::-1])
    assert mirrored.class_names[c + 1] == gray.class_names[1] + "/mirror"
    both = gray.with_class_copies(rotations=True, mirrors=True)
    assert both.num_classes == 8 * c and len(both) == 8 * len(gray)
    # class 1's eight copies are the eight symmetries of the square, all different
    first = np.stack([both.images_of(k * c + 1)[0, ..., 0] for k in range(8)])
    expected = [np.rot90(m, r) for r in range(4)
                for m in (gray.images_of(1)[0, ..., 0], gray.images_of(1)[0, :, ::-1, 0])]
    keys = {a.tobytes() for a in first}
    assert keys == {e.tobytes() for e in expected} and len(keys) == 8
    assert gray.with_class_copies() is gray


def test_class_images_sorts_subsets_and_validates():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 1)
    data = ClassImages(images, [2, 0, 1, 0, 2], ["a", "b", "c"])
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(data.images[:, 0, 0, 0], [4, 12, 8, 0, 16])  # stable
    np.testing.assert_array_equal(data.indices_of(2), [3, 4])
    sub = data.subset([2, 0])
    assert sub.class_names == ["c", "a"]
    np.testing.assert_array_equal(sub.images[:, 0, 0, 0], [0, 16, 4, 12])
    np.testing.assert_array_equal(sub.labels, [0, 0, 1, 1])
    with pytest.raises(DataError, match="empty"):
        ClassImages(images, [0, 0, 0, 0, 0], ["a", "b"])
    with pytest.raises(DataError, match="uint8"):
        ClassImages(images.astype(np.float32), [0] * 5, ["a"])
    with pytest.raises(DataError, match="square"):
        ClassImages(np.zeros((1, 2, 3, 1), np.uint8), [0], ["a"]).with_rotations()


# --- bad input: one test per case ------------------------------------------------

def test_missing_data_dir_names_flag_and_env(tmp_path):
    with pytest.raises(DataError, match="--data_dir.*TFMETA_DATA_DIR") as err:
        load_class_images("omniglot", "background", data_dir=str(tmp_path / "nope"))
    assert "images_background.zip" in str(err.value)


def test_missing_archive(tmp_path):
    with pytest.raises(DataError, match="images_evaluation.zip not found"):
        load_class_images("omniglot", "evaluation", data_dir=str(tmp_path))


def test_archive_not_in_omniglot_layout(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as z:
        z.writestr("flat.png", b"x")
    with pytest.raises(DataError, match="not in the Omniglot layout"):
        load_class_images("omniglot", "background", data_dir=str(tmp_path),
                          cache_dir=str(tmp_path / "c"))


def test_corrupt_zip(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04 garbage" * 10)
    with pytest.raises(DataError, match="not a readable zip"):
        load_class_images("omniglot", "background", data_dir=str(tmp_path),
                          cache_dir=str(tmp_path / "c"))


def test_corrupt_png_names_member(tmp_path):
    member = "images_evaluation/A/character01/0001_01.png"
    with zipfile.ZipFile(tmp_path / "images_evaluation.zip", "w") as z:
        z.writestr(member, b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="corrupt PNG.*0001_01.png"):
        load_class_images("omniglot", "evaluation", data_dir=str(tmp_path),
                          cache_dir=str(tmp_path / "c"))


@pytest.mark.parametrize("dataset,split", [("omniglot", "test"), ("mnist", "background")])
def test_unknown_split(dataset, split, tiny_omniglot_dir):
    with pytest.raises(ConfigError, match="unknown .*split"):
        load_class_images(dataset, split, data_dir=tiny_omniglot_dir)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        load_class_images("cifar", "train", data_dir="/unused")


def test_alphabet_split_holds_out_whole_alphabets_seeded():
    """split_train_validation(by_alphabet=True): whole alphabets, drawn by the seed until
    at least validation_classes characters; a cover of the background; every alphabet
    held out is a ConfigError."""
    from tfmeta.data.omniglot import split_train_validation
    sizes = {"A": 5, "B": 2, "C": 7, "D": 3, "E": 4}
    names = [f"{a}/character{i:02d}" for a, n in sizes.items() for i in range(1, n + 1)]
    images = np.zeros((2 * len(names), 4, 4, 1), np.uint8)
    background = ClassImages(images, np.repeat(np.arange(len(names)), 2), names)
    held = set()
    for seed in range(6):
        train, val = split_train_validation(background, 6, seed, by_alphabet=True)
        val_alphabets = {n.split("/")[0] for n in val.class_names}
        assert val_alphabets.isdisjoint(n.split("/")[0] for n in train.class_names)
        assert sorted(train.class_names + val.class_names) == sorted(names)
        assert val.num_classes == sum(sizes[a] for a in val_alphabets) >= 6
        # No alphabet more than needed: without the last one drawn it would be < 6.
        assert min(val.num_classes - sizes[a] for a in val_alphabets) < 6
        again = split_train_validation(background, 6, seed, by_alphabet=True)[1]
        assert again.class_names == val.class_names
        held.add(tuple(val.class_names))
    assert len(held) > 1
    with pytest.raises(ConfigError, match="every background alphabet"):
        split_train_validation(background, 20, 0, by_alphabet=True)


def test_alphabet_splits_load_by_name(tiny_omniglot_dir, tmp_path):
    kw = dict(data_dir=tiny_omniglot_dir, cache_dir=str(tmp_path), validation_classes=2)
    train = load_class_images("omniglot", "alphabet_train", **kw)
    val = load_class_images("omniglot", "alphabet_validation", **kw)
    assert (train.num_classes, val.num_classes) == (3, 3)   # one alphabet of 3 each
    assert len({n.split("/")[0] for n in val.class_names}) == 1
    assert {n.split("/")[0] for n in val.class_names}.isdisjoint(
        n.split("/")[0] for n in train.class_names)


def test_bad_validation_classes(tiny_omniglot_dir, tmp_path):
    with pytest.raises(ConfigError, match="validation_classes"):
        load_class_images("omniglot", "train", data_dir=tiny_omniglot_dir,
                          cache_dir=str(tmp_path), validation_classes=6)


# --- MNIST from fake IDX files -----------------------------------------------------

def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist_dir(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.array([3, 1, 1, 0, 9, 2, 4, 5, 6, 7, 8, 3, 3], np.uint8)
    images = rng.integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, 0x803)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x801)
    return tmp_path, images, labels


def test_mnist_idx_ragged_sorted_no_image_dropped(tiny_mnist_dir):
    folder, images, labels = tiny_mnist_dir
    data = load_class_images("mnist", "test", data_dir=str(folder),
                             cache_dir=str(folder / "c"))
    assert len(data) == labels.size and data.class_names == [str(d) for d in range(10)]
    np.testing.assert_array_equal(data.counts, np.bincount(labels, minlength=10))
    order = np.argsort(labels, kind="stable")
    np.testing.assert_array_equal(data.images[..., 0], images[order])
    np.testing.assert_array_equal(data.labels, labels[order])
    small = load_class_images("mnist", "train", image_size=14, data_dir=str(folder),
                              cache_dir=str(folder / "c"), channels=3)
    assert small.image_shape == (14, 14, 3)
    # Area resize by 2: each output pixel is the rounded mean of a 2x2 block.
    block = images[order].reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(small.images[..., 0], np.rint(block))


def test_mnist_bad_magic_and_truncation(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), 0x801)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((2,)), 0x801)
    with pytest.raises(DataError, match="magic"):
        load_class_images("mnist", "test", data_dir=str(tmp_path))
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write((0x803).to_bytes(4, "big") + (2).to_bytes(4, "big") * 3 + b"\0" * 5)
    with pytest.raises(DataError, match="truncated"):
        load_class_images("mnist", "test", data_dir=str(tmp_path))


def test_mnist_missing_file(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found"):
        load_class_images("mnist", "train", data_dir=str(tmp_path))


def test_area_resize_matches_upsampled_block_mean():
    # 105 → 28 has 3.75-pixel footprints; repeating each pixel 4x makes them whole
    # 15x15 blocks, an independent way to get the exact area mean.
    images = np.random.default_rng(7).integers(0, 256, (5, 105, 105), dtype=np.uint8)
    up = images.repeat(4, axis=1).repeat(4, axis=2).astype(np.float64)
    expected = np.rint(up.reshape(5, 28, 15, 28, 15).mean(axis=(2, 4)))
    np.testing.assert_array_equal(area_resize(images, 28, chunk=2), expected)
    assert area_resize(images, 35, 21).shape == (5, 35, 21)


# --- scale_images ------------------------------------------------------------------

PIXELS = np.array([[0, 1, 51, 127, 128, 204, 254, 255]], np.uint8)


@pytest.mark.parametrize("value_range,expected", [
    ("gan", [-1.0, 1 / 127.5 - 1, 51 / 127.5 - 1, 127 / 127.5 - 1, 128 / 127.5 - 1,
             204 / 127.5 - 1, 254 / 127.5 - 1, 1.0]),
    ("classifier", [0.0, 1 / 255, 0.2, 127 / 255, 128 / 255, 0.8, 254 / 255, 1.0]),
])
def test_scale_images_golden_numpy_eager_and_tf_data(value_range, expected):
    import tensorflow as tf

    out = scale_images(PIXELS, value_range)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=1e-7)
    assert out.min() == {"gan": -1.0, "classifier": 0.0}[value_range] and out.max() == 1.0
    eager = scale_images(tf.constant(PIXELS), value_range)
    assert eager.dtype == tf.float32
    np.testing.assert_array_equal(eager.numpy(), out)
    ds = tf.data.Dataset.from_tensor_slices(PIXELS).map(
        lambda x: scale_images(x, value_range))
    np.testing.assert_array_equal(np.stack(list(ds.as_numpy_iterator())), out)
    every = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(unscale_images(scale_images(every, value_range),
                                                 value_range), every)
    np.testing.assert_array_equal(
        unscale_images(scale_images(tf.constant(every), value_range), value_range).numpy(),
        every)


def test_scale_images_rejects_bad_range_and_dtype():
    with pytest.raises(ConfigError, match="value_range"):
        scale_images(PIXELS, "tanh")
    with pytest.raises(DataError, match="uint8"):
        scale_images(PIXELS.astype(np.float32), "gan")
    with pytest.raises(ConfigError, match="value_range"):
        unscale_images(np.zeros(2, np.float32), "tanh")


def test_scale_images_float64_and_pixels_range():
    import tensorflow as tf

    every = np.arange(256, dtype=np.uint8)
    out = scale_images(every, "classifier", np.float64)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, every.astype(np.float64) / 255.0)
    np.testing.assert_array_equal(
        scale_images(tf.constant(every), "classifier", np.float64).numpy(), out)
    pixels = scale_images(every, "pixels")
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, every)
    np.testing.assert_array_equal(unscale_images(pixels, "pixels"), every)


# float → uint8 golden values: the serving convention (the exported SavedModel's output):
# in float32, clip to the range, then round half to even. The float32 inputs marked *
# land exactly on k + 0.5 in float32; float64 arithmetic (the former
# tfmeta.eval.features.images_to_uint8) gave 129, 255 and 65 for them instead.
UNSCALE_GOLDEN = {
    "gan": ([-1.0, 1.0, -2.0, 3.0, -np.inf, np.inf, 0.0, -0.007843137718737125,
             0.007843137718737125,  # *
             0.9960784316062927,    # *
             -0.4941176176071167],  # *
            [0, 255, 0, 255, 0, 255, 128, 126, 128, 254, 64]),
    "classifier": ([0.0, 1.0, -0.5, 1.5, 0.5, 0.2], [0, 255, 0, 255, 128, 51]),
    "pixels": ([-3.0, 0.5, 1.5, 2.5, 254.5, 255.5, 300.0], [0, 0, 2, 2, 254, 255, 255]),
}


@pytest.mark.parametrize("value_range", sorted(UNSCALE_GOLDEN))
def test_unscale_images_golden_serving_convention(value_range):
    import tensorflow as tf

    values, expected = UNSCALE_GOLDEN[value_range]
    x32 = np.array(values, np.float32)
    for x in (x32, x32.astype(np.float64), x32.reshape(1, -1, 1, 1)):
        out = unscale_images(x, value_range)
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == x.shape
        assert out.ravel().tolist() == expected
    eager = unscale_images(tf.constant(x32), value_range)
    assert eager.dtype == tf.uint8 and eager.numpy().tolist() == expected
    graph = tf.function(lambda t: unscale_images(t, value_range))(tf.constant(x32))
    assert graph.numpy().tolist() == expected


# --- real data (skipped without TFMETA_DATA_DIR) -------------------------------------

@pytest.fixture(scope="module")
def real_background(data_dir, cache_dir):
    return load_class_images("omniglot", "background", data_dir=data_dir,
                             cache_dir=cache_dir)


@pytest.fixture(scope="module")
def real_evaluation(data_dir, cache_dir):
    return load_class_images("omniglot", "evaluation", data_dir=data_dir,
                             cache_dir=cache_dir)


@pytest.mark.parametrize("split,classes,alphabets", [("background", 964, 30),
                                                     ("evaluation", 659, 20)])
def test_real_omniglot_splits(split, classes, alphabets, request):
    data = request.getfixturevalue(f"real_{split}")
    assert data.num_classes == classes and len(set(data.class_names)) == classes
    assert len({n.split("/")[0] for n in data.class_names}) == alphabets
    np.testing.assert_array_equal(data.counts, np.full(classes, 20))
    assert data.images.shape == (classes * 20, 28, 28, 1) and data.images.dtype == np.uint8
    assert data.images.min() == 0 and data.images.max() == 255
    # Strokes bright on a dark page: most pixels are background (0).
    assert np.median(data.images) == 0 and 5 < data.images.mean() < 60
    assert data.class_names == sorted(data.class_names, key=lambda n: n.split("/"))


def test_real_train_validation(data_dir, cache_dir, real_background):
    kw = dict(data_dir=data_dir, cache_dir=cache_dir)
    train = load_class_images("omniglot", "train", **kw)
    val = load_class_images("omniglot", "validation", **kw)
    assert (train.num_classes, val.num_classes) == (864, 100)
    assert not set(train.class_names) & set(val.class_names)
    assert set(train.class_names) | set(val.class_names) == set(real_background.class_names)


@pytest.mark.parametrize("split,counts", [("train", MNIST_TRAIN_COUNTS),
                                          ("test", MNIST_TEST_COUNTS)])
def test_real_mnist(split, counts, data_dir, cache_dir):
    data = load_class_images("mnist", split, data_dir=data_dir, cache_dir=cache_dir)
    assert len(data) == sum(counts) and data.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(data.counts, counts)
    assert np.median(data.images) == 0 and data.images.max() == 255  # bright digits


def test_real_class_names_are_plain_str(real_background):
    # Cache entries store names as numpy str; the loader must hand back plain str.
    assert all(type(n) is str for n in real_background.class_names)
    json.dumps(real_background.class_names)


# --- TFDS fallback (no data dir; TFDS mock data, no download) -----------------------

def test_tfds_fallback_with_mock_data(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("TFMETA_DATA_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=12):
        raw = list(tfds.as_numpy(tfds.load("omniglot", split="test")))
        data = load_class_images("omniglot", "evaluation", image_size=105,
                                 cache_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=100):  # enough for every digit to occur
        digits = load_class_images("mnist", "test", image_size=14, channels=3)
    assert len(data) == 12 and data.image_shape == (105, 105, 1)
    assert all(n.split("/")[1].startswith("character") for n in data.class_names)
    # Same pixels as TFDS, inverted (TFDS keeps the white page; we make ink bright).
    inverted = sorted((255 - ex["image"][..., 0]).tobytes() for ex in raw)
    assert sorted(im.tobytes() for im in data.images[..., 0]) == inverted
    assert len(digits) == 100 and digits.image_shape == (14, 14, 3)
