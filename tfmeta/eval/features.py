"""Domain feature extractor for Omniglot: the feature space of Fréchet distance/diversity.

Why not Inception: the standard FID (Heusel et al. 2017, arXiv:1706.08500) uses a
specific ImageNet Inception graph whose weights must be downloaded; this workspace is
offline, so Inception-FID is impossible here. Inception features also describe natural
photographs, not pen strokes. Instead, as in few-shot generation papers that report
"FID" on characters with a domain classifier, we train a small CNN to classify the 964
Omniglot *background* characters and use its 256-d penultimate activations. It is never
trained on evaluation characters (the split is checked), so the features of unseen
characters are not memorised. Distances in this space are comparable across tfmeta
runs that use the same extractor config (its cache key), not with published FIDs.

`InceptionFeatureExtractor` is a hook for a local Keras InceptionV3 weights file (no
download); even with one, its numbers differ from the reference TF-slim FID graph.

Input convention (one place, `_model_input`): images are uint8 `[N, H, W, C]`, 0 =
background, 255 = ink, as `tfmeta.data.ClassImages` holds them and as generate_fns
return them; `tfmeta.data.unscale_images` (here also as `images_to_uint8`) converts
generator outputs in [-1, 1] or [0, 1].

Architecture: 4 blocks of 3x3 conv (64, 64, 128, 128 channels) + BatchNorm + ReLU +
2x2 max-pool, global average pool, Dense(256) + ReLU (the features), Dense(classes).
Keras BatchNormalization is fine here: the extractor is trained first-order only.
"""

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from tfmeta.data.cache import CACHE_DIR_ENV, resolve_cache_dir  # noqa: F401 (re-exported)
from tfmeta.data.preprocess import scale_images, unscale_images
from tfmeta.errors import ConfigError, DataError

__all__ = ["FeatureExtractorConfig", "FeatureExtractor", "InceptionFeatureExtractor",
           "train_feature_extractor", "get_feature_extractor", "images_to_uint8",
           "resolve_cache_dir", "TRAIN_SPLITS", "CACHE_DIR_ENV"]

# Splits made only of Omniglot background characters (see tfmeta.data).
TRAIN_SPLITS = ("background", "train", "alphabet_train")
# FeatureExtractorConfig.augment: (max rotation in degrees, max |scale - 1|, max shift in
# px) — half of the harness's jitter baseline, a move no reader would call another letter.
AUGMENT_RANGE = (5.0, 0.05, 1.0)
_PREDICT_BATCH = 512


@dataclasses.dataclass(frozen=True)
class FeatureExtractorConfig:
    """Everything that determines the trained weights (hashed into the cache key).

    Attributes:
      image_size, channels: input `[image_size, image_size, channels]`.
      num_classes: number of training characters (964 for the background split).
      widths: conv channels per block; feature_dim: size of the penultimate layer.
      epochs, batch_size, learning_rate: Adam training schedule.
      holdout_per_class: last images of each class (drawers 19-20 in Omniglot's order)
        kept out of training to measure held-out accuracy.
      seed: weight initialisation and batch order.
      dataset, split: where the training images came from (part of the key).
      augment: train on randomly moved copies (every image, every epoch: rotation
        within ±AUGMENT_RANGE[0] degrees, scale within 1 ± AUGMENT_RANGE[1], shift within
        ±AUGMENT_RANGE[2] px, bilinear), so that the features describe the character
        rather than its exact rendering: without it a half-pixel move of a real drawing
        changes its nearest class (docs/GENERATION_ATTEMPTS.md section 8). Left out of
        the key when False, so unaugmented extractors keep their cache files.
    """
    image_size: int = 28
    channels: int = 1
    num_classes: int = 964
    widths: tuple = (64, 64, 128, 128)
    feature_dim: int = 256
    epochs: int = 6
    batch_size: int = 128
    learning_rate: float = 1e-3
    holdout_per_class: int = 2
    seed: int = 0
    dataset: str = "omniglot"
    split: str = "background"
    augment: bool = False

    def validate(self):
        """Raises ConfigError for an invalid extractor setting; returns self."""
        if self.split not in TRAIN_SPLITS:
            raise ConfigError(
                f"the feature extractor trains only on background characters (split in "
                f"{TRAIN_SPLITS}); got split={self.split!r}. Training on evaluation "
                "characters would leak the test classes into the metric.")
        for name in ("image_size", "channels", "num_classes", "feature_dim", "epochs",
                     "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"FeatureExtractorConfig.{name} must be >= 1")
        if self.holdout_per_class < 0:
            raise ConfigError("FeatureExtractorConfig.holdout_per_class must be >= 0")
        return self

    def key(self):
        """Short hash naming the cached weights file."""
        fields = dataclasses.asdict(self)
        if not fields["augment"]:
            del fields["augment"]   # the key of extractors trained before the field existed
        text = json.dumps(fields, sort_keys=True, default=list)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def images_to_uint8(images, value_range="gan"):
    """Kept name for `tfmeta.data.unscale_images` with numpy output: float images
    (numpy or eager tensors) in [-1, 1] (`"gan"`) or [0, 1] (`"classifier"`) → uint8."""
    return unscale_images(np.asarray(images), value_range)


def _model_input(images, image_shape):
    """The one conversion: uint8 `[N, H, W, C]` → float32 in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"feature extractor input must be uint8 [N, H, W, C] (0 background, "
                        f"255 ink); got {images.dtype}. Convert generator outputs with "
                        "tfmeta.data.unscale_images")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"feature extractor input must be [N, {', '.join(map(str, image_shape))}]"
                        f"; got {images.shape}")
    return scale_images(images, "classifier")


def _build_classifier(config):
    import keras

    inputs = keras.Input((config.image_size, config.image_size, config.channels))
    x = inputs
    size = config.image_size
    for index, width in enumerate(config.widths):
        x = keras.layers.Conv2D(
            width, 3, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=config.seed * 101 + index))(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2)(x)
            size //= 2
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(
        config.feature_dim, activation="relu", name="features",
        kernel_initializer=keras.initializers.HeNormal(seed=config.seed * 101 + 50))(x)
    logits = keras.layers.Dense(
        config.num_classes, name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=config.seed * 101 + 51))(
            features)
    return keras.Model(inputs, [features, logits], name="omniglot_feature_extractor")


class FeatureExtractor:
    """A trained domain classifier; `features` gives its 256-d penultimate activations.

    Attributes: `config` (FeatureExtractorConfig), `model` (Keras, outputs
    `[features, logits]`), `metrics` (dict: held-out accuracy, training time, ...).
    """

    def __init__(self, config, model=None, metrics=None):
        self.config = config.validate()
        self.model = model if model is not None else _build_classifier(config)
        self.metrics = dict(metrics or {})
        self._forward = None

    @property
    def image_shape(self):
        """(H, W, C) of the images the extractor takes."""
        return (self.config.image_size, self.config.image_size, self.config.channels)

    def _outputs(self, images):
        import tensorflow as tf

        x = _model_input(images, self.image_shape)
        if self._forward is None:
            self._forward = tf.function(lambda batch: self.model(batch, training=False),
                                        reduce_retracing=True)
        features, logits = [], []
        for start in range(0, x.shape[0], _PREDICT_BATCH):
            f, l = self._forward(tf.constant(x[start:start + _PREDICT_BATCH]))
            features.append(f.numpy())
            logits.append(l.numpy())
        if not features:
            return (np.zeros((0, self.config.feature_dim), np.float32),
                    np.zeros((0, self.config.num_classes), np.float32))
        return np.concatenate(features), np.concatenate(logits)

    def features(self, images):
        """uint8 `[N, H, W, C]` (0 background, 255 ink) → float32 `[N, feature_dim]`."""
        return self._outputs(images)[0]

    def predict_classes(self, images):
        """uint8 `[N, H, W, C]` → int64 `[N]` predicted training-class ids."""
        return np.argmax(self._outputs(images)[1], axis=1)

    def save(self, path):
        """Writes `<path>.weights.h5` and `<path>.json` (config + metrics)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        self.model.save_weights(path + ".weights.h5")
        with open(path + ".json", "w") as f:
            json.dump({"config": dataclasses.asdict(self.config), "metrics": self.metrics},
                      f, indent=2, default=list)

    @classmethod
    def load(cls, path):
        """Reads what `save(path)` wrote."""
        if not os.path.exists(path + ".json") or not os.path.exists(path + ".weights.h5"):
            raise DataError(f"no feature extractor at {path!r} (.json / .weights.h5 missing); "
                            "train one with train_feature_extractor or get_feature_extractor")
        with open(path + ".json") as f:
            saved = json.load(f)
        config = saved["config"]
        config["widths"] = tuple(config["widths"])
        extractor = cls(FeatureExtractorConfig(**config), metrics=saved.get("metrics"))
        extractor.model.load_weights(path + ".weights.h5")
        return extractor


def _holdout_split(labels, holdout_per_class):
    """Boolean mask of the last `holdout_per_class` images of each class."""
    counts = np.bincount(labels)
    position = np.arange(labels.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    return position >= np.repeat(counts - holdout_per_class, counts)


def _moved(images, rng):
    """float [N, H, W, C] in [0, 1], each moved by a random small affine (AUGMENT_RANGE)."""
    import keras
    from tfmeta.eval.baselines import affine_transforms

    rotation, scale, shift = AUGMENT_RANGE
    transforms = affine_transforms(rng, images.shape[0], images.shape[1], images.shape[2],
                                    shift, rotation, (1.0 - scale, 1.0 + scale))
    return keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        images, transforms, interpolation="bilinear", fill_mode="constant", fill_value=0.0,
        data_format="channels_last"))


def train_feature_extractor(class_images, epochs, seed, *, split, batch_size=128,
                            learning_rate=1e-3, holdout_per_class=2, dataset="omniglot",
                            widths=(64, 64, 128, 128), feature_dim=256, augment=False,
                            log_fn=None):
    """Trains the domain classifier on background characters; returns a FeatureExtractor.

    Args:
      class_images: `tfmeta.data.ClassImages` of `split` (uint8, labels sorted by class).
      epochs, seed: passes over the training images; init + batch-order seed.
      split: the split `class_images` was loaded from; must be in TRAIN_SPLITS
        (ConfigError otherwise: evaluation characters must stay unseen).
      holdout_per_class: last images per class held out; `metrics["holdout_accuracy"]`.
      augment: train on randomly moved copies (FeatureExtractorConfig.augment).
      log_fn: optional callable(str) for per-epoch progress.
    """
    import tensorflow as tf
    import keras

    height, width, channels = class_images.images.shape[1:]
    if height != width:
        raise DataError(f"feature extractor needs square images; got {height}x{width}")
    config = FeatureExtractorConfig(
        image_size=int(height), channels=int(channels),
        num_classes=int(class_images.num_classes), widths=tuple(widths),
        feature_dim=feature_dim, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, holdout_per_class=holdout_per_class, seed=seed,
        dataset=dataset, split=split, augment=bool(augment)).validate()
    labels = np.asarray(class_images.labels, np.int32)
    held_out = _holdout_split(labels, holdout_per_class)
    if np.all(held_out):
        raise DataError("holdout_per_class leaves no training images; lower it")
    x_train = _model_input(class_images.images[~held_out],
                           (height, width, channels))
    y_train = labels[~held_out]

    extractor = FeatureExtractor(config)
    model = extractor.model
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            _, logits = model(x, training=True)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    loss = float("nan")
    for epoch in range(epochs):
        order = rng.permutation(x_train.shape[0])
        losses = []
        for begin in range(0, order.shape[0], batch_size):
            batch = order[begin:begin + batch_size]
            x = _moved(x_train[batch], rng) if augment else x_train[batch]
            losses.append(train_step(tf.constant(x), tf.constant(y_train[batch])))
        loss = float(np.mean([float(v) for v in losses]))
        if not np.isfinite(loss):
            from tfmeta.errors import DivergenceError
            raise DivergenceError(f"feature extractor loss is {loss} at epoch {epoch}; "
                                  "lower learning_rate")
        if log_fn is not None:
            log_fn(f"feature extractor epoch {epoch + 1}/{epochs}: loss {loss:.4f}")
    train_seconds = time.perf_counter() - start

    metrics = {"train_loss": loss, "train_seconds": train_seconds,
               "num_train_images": int(x_train.shape[0]),
               "num_holdout_images": int(held_out.sum())}
    if held_out.any():
        predicted = extractor.predict_classes(class_images.images[held_out])
        metrics["holdout_accuracy"] = float(np.mean(predicted == labels[held_out]))
    extractor.metrics = metrics
    return extractor


def get_feature_extractor(image_size=28, epochs=6, seed=0, data_dir=None, cache_dir=None,
                          log_fn=None, split="background", validation_classes=100,
                          **train_kwargs):
    """The cached extractor for this config, trained on Omniglot `split` if missing.

    split: "background" (every background character), "train" or "alphabet_train" (the
    background characters less the `validation_classes` held out for validation, one by
    one or as whole alphabets: a judge of the validation characters that never saw them;
    its key differs by split and class count).
    The cache file is `<cache_dir>/feature_extractor/<config key>` (see
    `resolve_cache_dir`), so evaluation runs with the same config never retrain.
    """
    from tfmeta.data import load_class_images

    config_kwargs = {k: v for k, v in train_kwargs.items()
                     if k in {f.name for f in dataclasses.fields(FeatureExtractorConfig)}}
    config = FeatureExtractorConfig(image_size=image_size, epochs=epochs, seed=seed,
                                    split=split, **config_kwargs).validate()
    path = os.path.join(resolve_cache_dir(cache_dir), "feature_extractor", config.key())
    if os.path.exists(path + ".json") and os.path.exists(path + ".weights.h5"):
        return FeatureExtractor.load(path)
    held = {"validation_classes": validation_classes} if split != "background" else {}
    class_images = load_class_images("omniglot", split, image_size=image_size,
                                     data_dir=data_dir, cache_dir=cache_dir,
                                     channels=config.channels, **held)
    extractor = train_feature_extractor(
        class_images, epochs, seed, split=split, log_fn=log_fn,
        **{k: v for k, v in train_kwargs.items() if k not in ("channels", "num_classes")})
    if extractor.config.key() != config.key():
        raise DataError(f"{split} split has an unexpected shape (config mismatch "
                        f"{extractor.config} vs {config}); clear the data cache")
    extractor.save(path)
    return extractor


class InceptionFeatureExtractor:
    """Hook: Keras InceptionV3 pool features (2048-d) from a *local* weights file.

    Nothing is downloaded (the workspace is offline; without a file this cannot run).
    Gray uint8 images are repeated to RGB, resized to 299x299 and scaled to [-1, 1].
    Keras' InceptionV3 is not the TF-slim graph of the reference FID code, so even these
    numbers are not comparable with published FIDs.
    """

    def __init__(self, weights_path):
        import keras

        if not os.path.isfile(str(weights_path)):
            raise DataError(f"Inception weights file {weights_path!r} not found; pass the "
                            "path of a local InceptionV3 (include_top=False) .h5 file")
        self.model = keras.applications.InceptionV3(
            include_top=False, weights=str(weights_path), pooling="avg",
            input_shape=(299, 299, 3))

    def features(self, images):
        """uint8 `[N, H, W, 1 or 3]` → float32 `[N, 2048]`."""
        import keras
        import tensorflow as tf

        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"images must be uint8 [N, H, W, C]; got {images.dtype} "
                            f"{images.shape}")
        out = []
        for start in range(0, images.shape[0], 64):
            x = tf.image.resize(tf.cast(images[start:start + 64], tf.float32), (299, 299))
            if x.shape[-1] == 1:
                x = tf.repeat(x, 3, axis=-1)
            x = keras.applications.inception_v3.preprocess_input(x)   # x / 127.5 - 1
            out.append(self.model(x, training=False).numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)
