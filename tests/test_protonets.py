"""Prototypical Networks and the Conv-4 few-shot classifiers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.errors import ConfigError  # noqa: E402
from tfmeta.meta import ProtoNet  # noqa: E402
from tfmeta.meta.protonets import prototype_logits, prototypes  # noqa: E402
from tfmeta.models.classifiers import (classification_loss, conv4,  # noqa: E402
                                       conv4_encoder)


def test_prototypes_and_logits_golden():
    emb = tf.constant([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0]]])
    labels = tf.constant([[0, 0, 1, 2]])
    protos = prototypes(emb, labels, 3)
    np.testing.assert_allclose(protos[0], [[1.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    query = tf.constant([[[1.0, 2.0]]])
    # squared distances to (1,0), (0,4), (1,1): 4, 5, 1
    np.testing.assert_allclose(prototype_logits(query, protos), [[[-4.0, -5.0, -1.0]]])


def _episodes(rng, tasks, per_class, n_way=3, dim=4):
    """Each task: class c of task t sits around a task-specific centre (separable)."""
    centres = rng.normal(scale=3.0, size=(tasks, n_way, dim))
    labels = np.tile(np.arange(n_way), (tasks, per_class)).astype("int32")
    points = np.take_along_axis(centres, labels[..., None], axis=1)
    points = points + rng.normal(scale=0.5, size=points.shape)
    return tf.constant(points.astype("float32")), tf.constant(labels)


@pytest.mark.parametrize("train_n_way", [3, 20])
def test_evaluate_equals_numpy_nearest_prototype(train_n_way):
    # A net built for 20-way training episodes must still score 3-way episodes right
    # (no empty prototypes for the classes the episode lacks).
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Identity()])
    net = ProtoNet(encoder, train_n_way, keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    support, query = _episodes(rng, 2, 2), _episodes(rng, 2, 5)
    # Shift the query points so that some are misclassified: accuracy is not trivially 1.
    query = (query[0] + tf.constant(rng.normal(scale=3.0, size=query[0].shape), tf.float32),
             query[1])
    metrics = net.adapt_and_evaluate(support, query)
    s, sl, q, ql = (x.numpy() for x in (*support, *query))
    correct, losses = [], []
    for t in range(2):
        protos = np.stack([s[t][sl[t] == c].mean(0) for c in range(3)])
        logits = -((q[t][:, None, :] - protos[None]) ** 2).sum(-1)
        correct += list(logits.argmax(1) == ql[t])
        log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                keepdims=True)) - logits.max(1, keepdims=True)
        losses += list(-log_p[np.arange(len(ql[t])), ql[t]])
    np.testing.assert_allclose(metrics["query_accuracy"], np.mean(correct), rtol=1e-6)
    np.testing.assert_allclose(metrics["query_loss"], np.mean(losses), rtol=1e-4)
    assert 0 < np.mean(correct) < 1


def test_meta_step_learns_and_traces_once():
    keras.utils.set_random_seed(0)
    encoder = conv4_encoder((8, 8, 1), filters=8, norm="layer", pool="stride")
    net = ProtoNet(encoder, 3, keras.optimizers.Adam(3e-3))
    rng = np.random.default_rng(1)

    def batch(per_class):
        # Class c = a fixed random image pattern + noise; the encoder must learn to match it.
        patterns = np.random.default_rng(99).normal(size=(3, 8, 8, 1))
        labels = np.tile(np.arange(3), (4, per_class)).astype("int32")
        images = patterns[labels] + rng.normal(scale=1.0, size=labels.shape + (8, 8, 1))
        return tf.constant(images.astype("float32")), tf.constant(labels)

    losses = [float(net.meta_step(batch(1), batch(3), step)["query_loss"])
              for step in range(25)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert net.compiled_meta_step.experimental_get_tracing_count() == 1
    assert float(net.adapt_and_evaluate(batch(1), batch(5))["query_accuracy"]) > 0.8


def test_conv4_shapes_parameters_and_config():
    stride = conv4(5, (28, 28, 1), pool="stride")
    assert stride.count_params() == 112261  # 640 + 3 * 36928 + 4 * 128 + 325
    pooled = conv4(5, (28, 28, 1))
    assert pooled.output_shape == (None, 5)
    assert conv4_encoder((28, 28, 1)).output_shape == (None, 64)
    assert conv4_encoder((84, 84, 3), filters=32).output_shape == (None, 32 * 5 * 5)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 28, 28, 1)), tf.float32)
    clone = keras.Model.from_config(stride.get_config())
    clone.set_weights(stride.get_weights())
    np.testing.assert_allclose(clone(x), stride(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="pool"):
        conv4(5, (28, 28, 1), pool="avg")


def test_classification_loss_golden():
    logits = tf.constant([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = tf.constant([0, 0, 0])
    loss, aux = classification_loss(logits, (None, labels))
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0)), np.log1p(np.exp(-3.0))])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(aux["accuracy"], 2 / 3, rtol=1e-6)
