"""Tests of tfmeta.eval: golden values for the metrics, protocol determinism and
hygiene (no background characters, no evaluation training), baselines' behaviour."""

import hashlib
import json
import os

import numpy as np
import pytest

from tfmeta.errors import ConfigError, DataError
from tfmeta.eval import augmentation, baselines, diversity, features, frechet, image_quality


try:
    from tfmeta.data import ClassImages
except ImportError:  # tfmeta.data not there yet: a stand-in with the same attributes
    class ClassImages:
        def __init__(self, images, labels, class_names):
            self.images, self.labels = images, labels.astype(np.int32)
            self.class_names = list(class_names)
            self.num_classes = len(self.class_names)

        def images_of(self, c):
            return self.images[self.labels == c]


def synthetic_class_images(num_classes=8, per_class=20, size=28, seed=0, prefix="Eval"):
    """Each class is a random stroke pattern; its drawings are shifted (+-1 px) copies
    with a few flipped pixels. uint8, 0 background / 255 ink, sorted by class."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_classes):
        prototype = np.zeros((size, size), bool)
        for _ in range(3):
            r, c = rng.integers(4, size - 8, 2)
            if rng.random() < 0.5:
                prototype[r:r + 2, c:c + rng.integers(3, 8)] = True
            else:
                prototype[r:r + rng.integers(3, 8), c:c + 2] = True
        for _ in range(per_class):
            image = np.roll(prototype, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            image ^= rng.random((size, size)) < 0.01
            images.append(image)
    images = (np.stack(images)[..., None] * 255).astype(np.uint8)
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    names = [f"{prefix}/character{c:02d}" for c in range(num_classes)]
    return ClassImages(images, labels, names)


# ---------------------------------------------------------------- Fréchet distance

def test_frechet_self_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    noise = rng.normal(size=base.shape)
    assert frechet.frechet_distance_from_features(base, base) == pytest.approx(0.0, abs=1e-6)
    values = [frechet.frechet_distance_from_features(base, base + scale * noise)
              for scale in (0.1, 0.3, 1.0, 3.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_frechet_gaussian_closed_form_and_symmetry():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    got = frechet.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2.
    assert frechet.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0)
    # Symmetric for full covariances too.
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T
    assert frechet.frechet_distance(mu1[:1].repeat(6), c1, mu2[:1].repeat(6), c2) == \
        pytest.approx(frechet.frechet_distance(mu2[:1].repeat(6), c2, mu1[:1].repeat(6), c1),
                      rel=1e-7)


def test_frechet_singular_covariance_is_finite_and_bad_shapes_raise():
    rng = np.random.default_rng(2)
    few = rng.normal(size=(4, 16))  # fewer samples than dimensions: rank-3 covariance
    value = frechet.frechet_distance_from_features(few, rng.normal(size=(5, 16)))
    assert np.isfinite(value) and value > 0
    with pytest.raises(DataError):
        frechet.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(DataError):
        frechet.frechet_distance_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------- diversity

def test_diversity_zero_for_identical_and_hand_values():
    same = np.tile(np.arange(4.0), (5, 1))
    assert diversity.intra_class_diversity(same, np.zeros(5, int)) == 0.0
    points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = np.array([0, 0, 1, 1, 1])
    # class 0: one pair at distance 5; class 1: distances 1, 3, 2 → mean 2.
    value, per_class = diversity.intra_class_diversity(points, labels, per_class=True)
    assert per_class == {0: pytest.approx(5.0), 1: pytest.approx(2.0)}
    assert value == pytest.approx(3.5)
    images = np.zeros((2, 2, 2, 1), np.uint8)
    images[1] = 255  # every pixel differs: per-pixel RMS distance 1
    assert diversity.pixel_diversity(images, [0, 0]) == pytest.approx(1.0)
    with pytest.raises(DataError):
        diversity.intra_class_diversity(points, np.arange(5))  # no class with 2 samples


# ---------------------------------------------------------------- PSNR / SSIM

def test_psnr_golden_values():
    x = np.zeros((2, 8, 8, 1))
    y = x.copy()
    y[0] += 0.1  # MSE 0.01 → 20 dB
    values = image_quality.psnr(x, y)
    assert values[0] == pytest.approx(20.0)
    assert values[1] == np.inf
    # uint8 convention: 255 ↔ 1.0; half the pixels off by 255 → MSE 0.5 → 3.0103 dB.
    a = np.zeros((1, 4, 4, 1), np.uint8)
    b = a.copy()
    b[:, :2] = 255
    assert image_quality.psnr(a, b)[0] == pytest.approx(10 * np.log10(2.0))
    with pytest.raises(DataError):
        image_quality.psnr(x - 1.0, y)  # [-1, 0] is not the documented range


def test_ssim_constants_identity_and_tf_reference():
    import tensorflow as tf

    a, b = 0.2, 0.7
    x = np.full((1, 16, 16, 1), a)
    y = np.full((1, 16, 16, 1), b)
    c1 = 0.01 ** 2
    # Zero variances: the contrast-structure term is c2/c2 = 1, leaving luminance.
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert image_quality.ssim(x, y)[0] == pytest.approx(expected, rel=1e-10)
    rng = np.random.default_rng(3)
    images = rng.random((3, 20, 24, 2))
    others = np.clip(images + 0.2 * rng.normal(size=images.shape), 0, 1)
    assert np.allclose(image_quality.ssim(images, images), 1.0)
    reference = tf.image.ssim(tf.constant(images, tf.float32), tf.constant(others, tf.float32),
                              max_val=1.0).numpy()
    assert np.allclose(image_quality.ssim(images, others), reference, atol=1e-4)


def test_nearest_support_finds_copies():
    support = synthetic_class_images(num_classes=1, per_class=3, size=16).images
    samples = np.concatenate([support[2:3], 255 - support[:1]])
    result = image_quality.nearest_support_psnr_ssim(samples, support)
    assert result["nearest"][0] == 2 and result["psnr"][0] == np.inf
    assert result["ssim"][0] == pytest.approx(1.0)
    assert result["fraction_copies"] == 0.5 and np.isfinite(result["mean_psnr"])


# ---------------------------------------------------------------- baselines

def test_traditional_augmentation_seeded_and_small():
    support = synthetic_class_images(num_classes=1, per_class=5, size=28).images
    first = baselines.traditional_augmentation(support, 12, seed=5)
    assert first.dtype == np.uint8 and first.shape == (12, 28, 28, 1)
    assert np.array_equal(first, baselines.traditional_augmentation(support, 12, seed=5))
    assert not np.array_equal(first, baselines.traditional_augmentation(support, 12, seed=6))
    # Identity jitter returns the chosen support images exactly.
    identity = baselines.make_traditional_augmentation(
        max_shift=0.0, max_rotation_deg=0.0, scale_range=(1.0, 1.0))(support, 12, 5)
    chosen = support[np.random.default_rng(5).integers(0, 5, 12)]
    assert np.array_equal(identity, chosen)
    # Small change: each output overlaps its source far more than an unrelated drawing.
    def overlap(a, b):
        a, b = a > 127, b > 127
        return (a & b).sum() / max((a | b).sum(), 1)
    other = synthetic_class_images(num_classes=2, per_class=1, size=28, seed=9).images[1]
    for out, src in zip(first, chosen):
        ink = out.sum(dtype=np.float64) / src.sum(dtype=np.float64)
        assert 0.7 < ink < 1.4  # bilinear jitter with scale 0.9-1.1 keeps the total ink
        assert np.abs(out.astype(int) - src).mean() < 40  # a few px of jitter
    assert np.mean([overlap(o, s) for o, s in zip(first, chosen)]) > \
        3 * np.mean([overlap(o, other) for o in first])
    assert baselines.no_augmentation(support, 10, 0).shape == (0, 28, 28, 1)
    elastic = baselines.traditional_augmentation(support, 3, seed=1, elastic_alpha=1.5)
    assert elastic.shape == (3, 28, 28, 1)


def test_with_jitter_jitters_every_generated_image_once():
    support = synthetic_class_images(num_classes=1, per_class=5, size=28).images
    # A generator of ten distinct images (shifted supports), seeded.
    def generate(images, num, seed):
        rolled = [np.roll(images[i % len(images)], i // len(images) + seed % 3, axis=1)
                  for i in range(num)]
        return np.stack(rolled) if num else images[:0]
    generated = generate(support, 10, 4)
    assert len({g.tobytes() for g in generated}) == 10
    identity = baselines.with_jitter(generate, max_shift=0.0, max_rotation_deg=0.0,
                                     scale_range=(1.0, 1.0))(support, 10, 4)
    assert np.array_equal(identity, generated)  # all ten kept, in order, none repeated
    jittered = baselines.with_jitter(generate)(support, 10, 4)
    assert jittered.shape == generated.shape and not np.array_equal(jittered, generated)
    assert np.array_equal(jittered, baselines.with_jitter(generate)(support, 10, 4))
    assert np.mean([np.abs(j.astype(int) - g).mean() for j, g in zip(jittered, generated)]) \
        < 40
    assert baselines.with_jitter(generate)(support, 0, 4).shape == (0, 28, 28, 1)


# ---------------------------------------------------------------- augmentation protocol

def _small_protocol(data, **kwargs):
    settings = dict(split="evaluation", num_characters=6, n_real=(5, 10), num_generated=4,
                    seeds=(0, 1), train_steps=15, batch_size=16)
    settings.update(kwargs)
    return augmentation.augmentation_accuracy(data, baselines.BASELINES, **settings)


def test_augmentation_protocol_deterministic_and_json():
    data = synthetic_class_images(num_classes=8)
    first, second = _small_protocol(data), _small_protocol(data)
    first.pop("runtime_s"), second.pop("runtime_s")
    assert first == second
    json.dumps(first)
    none = first["methods"]["no_augmentation"]["5"]
    jitter = first["methods"]["traditional_augmentation"]["5"]
    assert none["generated_per_character"] == 0 and jitter["generated_per_character"] == 4
    assert none["num_test_images"] == 6 * 15 and len(none["accuracy_per_seed"]) == 2
    mean, half = augmentation.confidence_interval(none["accuracy_per_seed"])
    assert none["mean"] == mean and none["ci95"] == [mean - half, mean + half]
    table = augmentation.to_markdown(first, {"traditional_augmentation": {"frechet": 1.5},
                                             "no_augmentation": None})
    assert "| no_augmentation |" in table and "n_real=10" in table
    assert "| frechet |" in table and " 1.5 |" in table


def test_held_real_reference_is_paired_and_disjoint():
    data = synthetic_class_images(num_classes=8)
    per_class = [data.images_of(c) for c in range(3)]
    plain = augmentation._cell_split(per_class, 1, 5)
    held = augmentation._cell_split(per_class, 1, 5, held=4)
    for a, b in zip(plain[0], held[0]):          # the same supports with or without
        np.testing.assert_array_equal(a, b)
    def keys(images):
        return {im.tobytes() for im in images}

    for c, images in enumerate(per_class):
        support, out = keys(held[0][c]), keys(held[5][c])
        test = keys(held[3][held[4] == c])
        assert len(out) == 4 and len(test) == 11 and len(support) == 5
        assert not (support & out) and not (support & test) and not (out & test)
        assert support | out | test == keys(images)
    # REAL_HELD_OUT adds exactly the held-out drawings, cycled to num_generated.
    added = augmentation._generated(augmentation.REAL_HELD_OUT, None, held, 1, 5, 6,
                                    (28, 28, 1))
    np.testing.assert_array_equal(added[2], held[5][2][[0, 1, 2, 3, 0, 1]])
    result = _small_protocol(data, n_real=(5,), held_real=4)
    assert list(result["methods"])[0] == augmentation.REAL_HELD_OUT
    assert result["protocol"]["held_real"] == 4
    for by_n in result["methods"].values():
        assert by_n["5"]["num_test_images"] == 6 * 11
    assert result["methods"][augmentation.REAL_HELD_OUT]["5"]["generated_per_character"] == 4
    assert "4 more real drawings per character held out" in augmentation.to_markdown(result)
    with pytest.raises(ConfigError, match="held_real"):
        _small_protocol(data, held_real=-1)
    with pytest.raises(ConfigError, match="held_real"):
        augmentation.augmentation_accuracy(
            data, {augmentation.REAL_HELD_OUT: baselines.no_augmentation},
            split="evaluation", num_characters=3, n_real=(5,), seeds=(0,), train_steps=1)


def test_confidence_interval_t_value():
    mean, half = augmentation.confidence_interval([1.0, 2.0, 3.0])
    # sd 1, n 3: t_{0.975, 2} = 4.302653 → 4.302653 / sqrt(3).
    assert mean == 2.0 and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)


def test_protocol_never_uses_background_characters():
    data = synthetic_class_images(num_classes=10)
    chosen = augmentation.select_characters(data, 6, selection_seed=3, min_images=16)
    assert len(set(chosen)) == 6 and chosen.min() >= 0 and chosen.max() < 10
    background_names = [f"Background/character{c:02d}" for c in range(10)]
    result = _small_protocol(data, n_real=(5,), seeds=(0,), train_steps=2,
                             background_class_names=background_names)
    assert set(result["protocol"]["characters"]) <= set(data.class_names)
    assert not set(result["protocol"]["characters"]) & set(background_names)
    with pytest.raises(DataError, match="background"):
        _small_protocol(data, n_real=(5,), seeds=(0,), train_steps=2,
                        background_class_names=data.class_names[:3])
    with pytest.raises(ConfigError):
        _small_protocol(data, split="background")
    with pytest.raises(DataError):
        augmentation.augmentation_accuracy(
            data, {"bad": lambda s, n, seed: s.astype(np.float32)}, split="evaluation",
            num_characters=3, n_real=(5,), seeds=(0,), train_steps=1)


# ---------------------------------------------------------------- feature extractor

@pytest.fixture(scope="module")
def tiny_extractor():
    data = synthetic_class_images(num_classes=5, size=16, seed=4, prefix="Background")
    extractor = features.train_feature_extractor(
        data, epochs=20, seed=0, split="background", batch_size=16, widths=(8, 16),
        feature_dim=16, holdout_per_class=4, learning_rate=3e-3)
    return extractor, data


def test_feature_extractor_trains_and_round_trips(tiny_extractor, tmp_path):
    extractor, data = tiny_extractor
    assert extractor.metrics["num_holdout_images"] == 20
    assert extractor.metrics["holdout_accuracy"] >= 0.6  # 5 easy classes, chance 0.2
    values = extractor.features(data.images[:7])
    assert values.shape == (7, 16) and values.dtype == np.float32
    path = os.path.join(tmp_path, extractor.config.key())
    extractor.save(path)
    loaded = features.FeatureExtractor.load(path)
    assert loaded.config == extractor.config and loaded.metrics == extractor.metrics
    assert np.allclose(loaded.features(data.images[:7]), values, atol=1e-5)
    with pytest.raises(DataError):
        extractor.features(data.images[:2].astype(np.float32))


def test_feature_extractor_refuses_evaluation_split():
    data = synthetic_class_images(num_classes=3, size=16)
    for split in ("evaluation", "validation", "test"):
        with pytest.raises(ConfigError, match="background"):
            features.train_feature_extractor(data, epochs=1, seed=0, split=split)


def test_kept_uint8_names_follow_the_serving_convention():
    import tensorflow as tf

    from tfmeta import summaries
    from tfmeta.data import unscale_images

    # Float32 values landing exactly on k + 0.5 (float64 arithmetic rounded them up), and
    # clipping; numpy or eager tensors in, numpy out (tests/test_data.py pins the rest).
    x = np.array([0.007843137718737125, 0.9960784316062927, -0.4941176176071167, 3.0])
    expected = [128, 254, 64, 255]
    for to_uint8 in (features.images_to_uint8, summaries.to_uint8):
        assert to_uint8(x).tolist() == expected
        out = to_uint8(tf.constant(x, tf.float32))
        assert isinstance(out, np.ndarray) and out.tolist() == expected
        assert to_uint8(x / 2 + 0.5, "classifier").tolist() == expected
    assert unscale_images(x, "gan").tolist() == expected


def test_images_to_uint8_and_cache_dir(monkeypatch):
    assert features.images_to_uint8(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert features.images_to_uint8(np.array([0.0, 1.0]), "classifier").tolist() == [0, 255]
    monkeypatch.setenv(features.CACHE_DIR_ENV, "/tmp/somewhere")
    assert features.resolve_cache_dir() == "/tmp/somewhere"
    assert features.resolve_cache_dir("/x") == "/x"


def test_get_feature_extractor_caches_by_config(monkeypatch, tmp_path):
    import tfmeta.data

    calls = []

    def fake_load(dataset, split, image_size, **kwargs):
        calls.append((dataset, split))
        return synthetic_class_images(num_classes=4, size=image_size, seed=1)

    monkeypatch.setattr(tfmeta.data, "load_class_images", fake_load)
    settings = dict(image_size=16, epochs=1, seed=0, cache_dir=str(tmp_path), num_classes=4,
                    widths=(4,), feature_dim=8, batch_size=32)
    first = features.get_feature_extractor(**settings)
    second = features.get_feature_extractor(**settings)
    assert calls == [("omniglot", "background")]  # second call read the cache
    assert second.metrics == first.metrics and second.config == first.config
    images = synthetic_class_images(num_classes=1, per_class=3, size=16).images
    assert np.allclose(first.features(images), second.features(images), atol=1e-5)
    features.get_feature_extractor(**{**settings, "seed": 1})
    assert len(calls) == 2  # another config is another cache entry
    augmented = features.get_feature_extractor(**{**settings, "augment": True})
    assert len(calls) == 3 and augmented.config.augment
    assert augmented.config.key() != first.config.key()
    # A judge of the validation characters: trained on the training split only.
    judge = features.get_feature_extractor(**{**settings, "split": "train",
                                              "validation_classes": 2})
    assert calls[-1] == ("omniglot", "train") and judge.config.split == "train"
    assert judge.config.key() != first.config.key()
    with pytest.raises(ConfigError, match="trains only on background characters"):
        features.get_feature_extractor(**{**settings, "split": "evaluation"})
    assert len(calls) == 4   # refused before loading anything


def test_extractor_key_and_training_augmentation():
    """augment=False keeps the key extractors had before the field (their cache files);
    augmented training sees every image moved by a small affine, its ink kept."""
    import dataclasses
    plain = features.FeatureExtractorConfig()
    fields = {k: v for k, v in dataclasses.asdict(plain).items() if k != "augment"}
    text = json.dumps(fields, sort_keys=True, default=list)
    assert plain.key() == hashlib.sha1(text.encode()).hexdigest()[:12]
    images = np.zeros((64, 16, 16, 1), np.float32)
    images[:, 5:11, 7:9] = 1.0                                  # a vertical bar
    moved = features._moved(images, np.random.default_rng(0))
    assert moved.shape == images.shape
    changed = np.abs(moved - images).reshape(64, -1).max(1)
    assert np.mean(changed > 0.05) > 0.9                       # (almost) every image moved
    ink = moved.reshape(64, -1).sum(1) / images.reshape(64, -1).sum(1)
    assert np.all((ink > 0.8) & (ink < 1.2))                   # moved, not erased or smeared


def test_nearest_support_distance_sees_through_small_moves():
    rng = np.random.default_rng(3)
    support = np.zeros((2, 20, 20, 1), np.uint8)
    support[:, 5:15, 5:15] = (rng.random((2, 10, 10, 1)) < 0.4) * 255
    moved = np.roll(support[1:], (2, -1), axis=(1, 2))      # ink stays inside the frame
    assert baselines.nearest_support_distance(moved, support)[0] == pytest.approx(0.0, abs=1e-9)
    assert baselines.nearest_support_distance(moved, support, max_shift=0)[0] > 1.0
    far = np.roll(support[1:], (4, 0), axis=(1, 2))          # beyond COPY_MAX_SHIFT = 2
    assert baselines.nearest_support_distance(far, support)[0] > 1.0


def test_sample_metrics_and_figure(tiny_extractor, tmp_path):
    extractor, _ = tiny_extractor
    data = synthetic_class_images(num_classes=6, size=16, seed=8)
    copy_support = lambda support, num, seed: support[np.arange(num) % support.shape[0]]
    moved = lambda support, num, seed: np.pad(copy_support(support, num, seed),
                                              [(0, 0), (0, 0), (2, 0), (0, 0)])[:, :, :-2]
    generators = {"copy": copy_support, "moved_copy": moved, **baselines.BASELINES}
    metrics = baselines.sample_metrics(data, generators, extractor, split="evaluation",
                                       num_characters=5, k_shot=5, num_samples=6)
    assert metrics["methods"]["no_augmentation"] is None
    copy = metrics["methods"]["copy"]
    assert copy["fraction_copies"] == 1.0 and copy["nearest_support_psnr"] is None
    # Copies are closer to a support than any real drawing; moved ones mostly too (these
    # synthetic drawings are themselves 1-px moves of one pattern, so real ones are close).
    assert copy["copy_rate"] == 1.0 and metrics["methods"]["moved_copy"]["copy_rate"] >= 0.5
    assert metrics["methods"]["moved_copy"]["fraction_copies"] == 0.0
    assert 0.0 <= metrics["real_heldout"]["copy_rate"] < 0.5
    # Diversity at equal counts: the held-out reference is the real drawings themselves.
    assert metrics["protocol"]["diversity_images_per_character"] == 6
    assert copy["diversity_ratio"] == pytest.approx(
        copy["diversity"] / metrics["real_heldout"]["diversity"], rel=0.5)
    jitter = metrics["methods"]["traditional_augmentation"]
    assert jitter["fraction_copies"] < 1.0 and np.isfinite(jitter["frechet"])
    assert 0.0 <= jitter["class_consistency"] <= 1.0 and jitter["diversity"] > 0
    json.dumps(metrics)
    from PIL import Image

    path = baselines.save_sample_figure(os.path.join(tmp_path, "grid.png"), data, generators,
                                        num_characters=2, k_shot=3, num_samples=4, zoom=1)
    width, height = Image.open(path).size
    assert height == 2 * (1 + len(generators)) * (16 + 2) and width == baselines.FIGURE_LABEL_WIDTH + 4 * 18


# ---------------------------------------------------------------- real data (slow)

@pytest.mark.slow
def test_real_feature_extractor_background_only():
    data_dir = os.environ.get("TFMETA_DATA_DIR")
    if not data_dir:
        pytest.skip("TFMETA_DATA_DIR is not set")
    from tfmeta.data import load_class_images

    background = load_class_images("omniglot", "background", 28, data_dir=data_dir)
    evaluation = load_class_images("omniglot", "evaluation", 28, data_dir=data_dir)
    assert background.num_classes == 964 and evaluation.num_classes == 659
    assert not set(background.class_names) & set(evaluation.class_names)
    extractor = features.train_feature_extractor(background, epochs=1, seed=0,
                                                 split="background")
    # Chance is 1/964; one epoch measured 0.19 (AMD EPYC, oneDNN) to > 0.2 (Intel).
    assert extractor.metrics["holdout_accuracy"] > 0.1
    result = augmentation.augmentation_accuracy(
        evaluation, baselines.BASELINES, split="evaluation", num_characters=20,
        n_real=(5,), seeds=(0,), train_steps=50,
        background_class_names=background.class_names)
    assert not set(result["protocol"]["characters"]) & set(background.class_names)
