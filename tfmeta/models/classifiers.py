"""Few-shot classifiers: the Conv-4 network of MAML / Prototypical Networks, Keras 3.

`conv4` is the 4-block convolutional net of Vinyals et al. 2016 (arXiv:1606.04080) used
by MAML (arXiv:1703.03400) and ProtoNets (arXiv:1703.05175): each block is a 3x3 conv
(`filters` channels), `MetaNorm` (exact second-order normalisation, see
tfmeta.models.layers; "batch" = transductive statistics of the current call), ReLU, and
either a 2x2 max-pool (`pool="max"`, then flatten) or — the MAML Omniglot variant — a
stride-2 "same" conv without pooling (`pool="stride"`, then the spatial mean). For
28x28x1 inputs, 5-way, the stride variant has 112,261 parameters and is the reference
network of benchmarks/meta_step.py.

Models are Keras functional models (serialisable: MetaNorm is registered).
"""

import keras
import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.models.layers import NORM_MODES, MetaNorm

__all__ = ["conv4", "conv4_encoder", "classification_loss", "classification_objective",
           "POOLING"]

POOLING = ("max", "stride")


def _check(image_shape, filters, norm, pool):
    if len(tuple(image_shape)) != 3:
        raise ConfigError(f"image_shape must be (height, width, channels), got {image_shape}")
    if norm not in NORM_MODES:
        raise ConfigError(f"norm must be one of {NORM_MODES}, got {norm!r}")
    if pool not in POOLING:
        raise ConfigError(f"pool must be one of {POOLING}, got {pool!r}")
    if filters < 1:
        raise ConfigError(f"filters must be >= 1, got {filters}")


def _blocks(x, filters, norm, pool, dtype):
    for block in range(4):
        x = keras.layers.Conv2D(filters, 3, strides=2 if pool == "stride" else 1,
                                padding="same", dtype=dtype, name=f"conv{block}")(x)
        x = MetaNorm(norm, dtype=dtype, name=f"norm{block}")(x)
        x = keras.layers.ReLU(dtype=dtype, name=f"relu{block}")(x)
        if pool == "max":
            x = keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{block}")(x)
    if pool == "max":
        return keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    return keras.layers.GlobalAveragePooling2D(dtype=dtype, name="spatial_mean")(x)


def conv4_encoder(image_shape, filters=64, norm="batch", pool="max", dtype=None,
                  name="conv4_encoder"):
    """Conv-4 without the head: images `[N, H, W, C]` float -> embeddings `[N, D]`.

    D = filters * (H/16) * (W/16) (floored per pool) for pool="max" (64 for 28x28 or
    84x84→5x5x64=1600), `filters` for pool="stride". dtype: Keras dtype policy name
    (e.g. "float64" for derivative tests), default the global policy.
    """
    _check(image_shape, filters, norm, pool)
    inputs = keras.Input(tuple(image_shape), dtype=dtype, name="images")
    return keras.Model(inputs, _blocks(inputs, filters, norm, pool, dtype), name=name)


def conv4(n_way, image_shape, filters=64, norm="batch", pool="max", dtype=None,
          name="conv4"):
    """Conv-4 classifier: images `[N, H, W, C]` float -> logits `[N, n_way]`."""
    if n_way < 2:
        raise ConfigError(f"n_way must be >= 2, got {n_way}")
    _check(image_shape, filters, norm, pool)
    inputs = keras.Input(tuple(image_shape), dtype=dtype, name="images")
    features = _blocks(inputs, filters, norm, pool, dtype)
    logits = keras.layers.Dense(n_way, dtype=dtype, name="logits")(features)
    return keras.Model(inputs, logits, name=name)


def classification_loss(logits, batch):
    """Sparse softmax cross-entropy for batch = (images, labels).

    logits: `[N, n_way]` float; labels `batch[1]`: int `[N]` in 0..n_way-1.
    Returns (mean loss scalar, {"accuracy": fraction of argmax == label}).
    """
    labels = tf.cast(batch[1], tf.int32)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    return loss, {"accuracy": tf.reduce_mean(tf.cast(correct, logits.dtype))}


def classification_objective(model, name="loss"):
    """Objective over all of `model`'s trainable variables with `classification_loss`.

    The learner's variables must be `model.trainable_variables` (in that order). Batches
    are (images [N, H, W, C], labels [N]), or, for meta-testing without transduction,
    (groups [Q, G, H, W, C], labels [Q]): each group is one model call (so MetaNorm's
    batch statistics are the group's) and only its last image is scored — a query
    image after the G - 1 support images (`tfmeta.fewshot.meta_test(mode="per_query")`).
    """
    from tfmeta.meta.inner_loop import Objective, keras_loss, stateless_apply

    plain = keras_loss(model, classification_loss)
    spec = tf.TensorSpec(model.output_shape[1:], model.outputs[0].dtype)

    def loss_fn(params, batch, seed):
        if len(batch[0].shape) != 5:
            return plain(params, batch, seed)
        params = list(params)
        logits = tf.map_fn(
            lambda group: stateless_apply(model, params, group, training=True)[-1],
            batch[0], fn_output_signature=spec)
        return classification_loss(logits, batch)

    return Objective(loss_fn, name=name)
