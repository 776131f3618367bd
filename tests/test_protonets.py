"""Prototypical Networks and the Conv-4 few-shot classifiers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.errors import ConfigError  # noqa: E402
from tfmeta.meta import ProtoNet  # noqa: E402
from tfmeta.meta.protonets import (prototype_logits, prototypes,  # noqa: E402
                                   refined_prototypes)
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


def _numpy_soft_kmeans(s, sl, q, n_way, steps):
    """Ren et al. (2018) eq. 3-4 written out per task, class and query."""
    out = []
    for t in range(s.shape[0]):
        protos = np.stack([s[t][sl[t] == c].mean(0) for c in range(n_way)])
        for _ in range(steps):
            d = ((q[t][:, None, :] - protos[None]) ** 2).sum(-1)
            w = np.exp(-d - (-d).max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            protos = np.stack([(s[t][sl[t] == c].sum(0) + (w[:, c:c + 1] * q[t]).sum(0))
                               / ((sl[t] == c).sum() + w[:, c].sum()) for c in range(n_way)])
        out.append(protos)
    return np.stack(out)


def test_refined_prototypes_equal_soft_kmeans_reference():
    rng = np.random.default_rng(3)
    support, query = _episodes(rng, 2, 1), _episodes(rng, 2, 6)
    s, sl, q = support[0].numpy(), support[1].numpy(), query[0].numpy()
    np.testing.assert_allclose(refined_prototypes(*support, query[0], 3, 0),
                               prototypes(*support, 3), rtol=1e-6)
    for steps in (1, 3):
        got = refined_prototypes(*support, query[0], 3, steps).numpy()
        np.testing.assert_allclose(got, _numpy_soft_kmeans(s, sl, q, 3, steps), rtol=1e-4,
                                   atol=1e-5)
        assert np.abs(got - prototypes(*support, 3).numpy()).max() > 0.1


def test_refinement_uses_the_queries_and_is_transductive():
    # Class 0's support sits at 0, class 1's at 0.9; class 0's queries cluster at 0.6
    # (nearer class 1's support: plain prototypes get them wrong), class 1's at 3.
    # Soft k-means pulls each prototype into its query cluster (hand-computed: after 3
    # steps c0 ~ 0.45, c1 ~ 2.4), so every query is then right.
    encoder = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    net = ProtoNet(encoder, 2, keras.optimizers.SGD(0.1))
    support = (tf.constant([[[0.0, 0.0], [0.9, 0.0]]]), tf.constant([[0, 1]]))
    query = (tf.constant([[[0.6, 0.0], [0.6, 0.1], [0.55, 0.0], [3.0, 0.1], [3.1, 0.0],
                           [2.9, -0.1]]]), tf.constant([[0, 0, 0, 1, 1, 1]]))
    assert float(net.adapt_and_evaluate(support, query)["query_accuracy"]) == 0.5
    assert float(net.adapt_and_evaluate(support, query, num_steps=0)["query_accuracy"]) == 0.5
    assert float(net.adapt_and_evaluate(support, query, num_steps=3)["query_accuracy"]) == 1.0
    with pytest.raises(ConfigError, match="refinement"):
        net.adapt_and_evaluate(support, query, num_steps=-1)


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
