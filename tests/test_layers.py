"""Second-order exactness of every layer type the meta-learners use (finite differences).

The meta-gradient of a 2-step MAML objective (exact second order through the inner
gradients) is compared with central finite differences in float64. Known fact, asserted
here so it stays true: Keras `BatchNormalization` is NOT second-order exact (tf.nn.moments
stops the gradient through the mean inside the variance), while `MetaNorm` is.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.meta import SGD, Objective, adapt, keras_loss  # noqa: E402
from tfmeta.models.layers import MetaNorm  # noqa: E402

F64 = "float64"
L = keras.layers


def _tanh():
    return L.Activation("tanh", dtype=F64)


# name -> (input shape, layers). Heads end in Dense(2); smooth activations keep the
# objective twice differentiable so finite differences are meaningful.
MODELS = {
    "dense": ((3,), lambda: [L.Dense(4, dtype=F64), _tanh(), L.Dense(2, dtype=F64)]),
    "conv2d": ((4, 4, 1), lambda: [L.Conv2D(2, 3, dtype=F64), _tanh(), L.Flatten(dtype=F64),
                                   L.Dense(2, dtype=F64)]),
    "conv2d_transpose": ((2, 2, 1), lambda: [
        L.Conv2DTranspose(2, 3, strides=2, padding="same", dtype=F64), _tanh(),
        L.Flatten(dtype=F64), L.Dense(2, dtype=F64)]),
    "leaky_relu": ((3,), lambda: [L.Dense(5, dtype=F64), L.LeakyReLU(0.2, dtype=F64),
                                  L.Dense(2, dtype=F64)]),
    **{f"metanorm_{mode}": ((3, 3, 2), lambda mode=mode: [
        L.Conv2D(3, 2, use_bias=mode == "layer", dtype=F64), MetaNorm(mode, dtype=F64),
        _tanh(), L.Flatten(dtype=F64), L.Dense(2, dtype=F64)])
       for mode in ("batch", "instance", "layer")},
    # Same net with Keras BatchNormalization / MetaNorm("batch") over 6 samples: the
    # missing second-order term is largest when few elements share a statistic.
    "keras_batchnorm": ((3,), lambda: [
        L.Dense(3, use_bias=False, dtype=F64), L.BatchNormalization(dtype=F64), _tanh(),
        L.Dense(2, dtype=F64)]),
    "metanorm_batch_dense": ((3,), lambda: [
        L.Dense(3, use_bias=False, dtype=F64), MetaNorm("batch", dtype=F64), _tanh(),
        L.Dense(2, dtype=F64)]),
}


def _model(name, seed=0):
    keras.utils.set_random_seed(seed)
    shape, layers = MODELS[name]
    model = keras.Sequential([keras.Input(shape, dtype=F64)] + layers())
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:  # move gamma/beta away from 1/0
        v.assign(v.numpy() + 0.3 * rng.normal(size=v.shape))
    return model


def _mse(outputs, batch):
    return tf.reduce_mean(tf.square(outputs - batch[1]))


def _meta_gradient_errors(name):
    """Errors of the 2-step second-order MAML gradient vs central differences.

    Returns (relative error of the whole meta-gradient, relative error of its
    second-order part, i.e. ||analytic - numeric|| / ||numeric - first_order||: the first
    order term dominates the meta-gradient and would hide a wrong second-order term).
    """
    model = _model(name)
    shape = MODELS[name][0]
    rng = np.random.default_rng(1)
    support = (tf.constant(rng.normal(size=(6,) + shape)), tf.constant(rng.normal(size=(6, 2))))
    query = (tf.constant(rng.normal(size=(6,) + shape)), tf.constant(rng.normal(size=(6, 2))))
    objective = Objective(keras_loss(model, _mse))

    def meta_objective(params, first_order=False):
        adapted = adapt(objective, params, support, 2, SGD(0.3), first_order=first_order)
        return objective(adapted.params, query, None)[0]

    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    grads = []
    for first_order in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(params)
            value = meta_objective(params, first_order)
        grads.append(np.concatenate([g.numpy().ravel() for g in tape.gradient(value, params)]))
    analytic, first_order_grad = grads

    f = tf.function(meta_objective)
    flat = np.concatenate([p.numpy().ravel() for p in params])
    sizes = [int(np.prod(p.shape)) for p in params]

    def unflatten(x):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        return [tf.constant(part.reshape(p.shape)) for part, p in zip(parts, params)]

    h, numeric = 1e-5, np.zeros_like(flat)
    for j in range(flat.size):
        e = np.zeros_like(flat)
        e[j] = h
        numeric[j] = (float(f(unflatten(flat + e))) - float(f(unflatten(flat - e)))) / (2 * h)
    error = np.linalg.norm(analytic - numeric)
    return (error / np.linalg.norm(numeric),
            error / np.linalg.norm(numeric - first_order_grad))


@pytest.mark.parametrize("name", [n for n in MODELS if n != "keras_batchnorm"])
def test_layer_is_second_order_exact(name):
    total, second_order_part = _meta_gradient_errors(name)
    assert total < 1e-4 and second_order_part < 1e-3


def test_keras_batch_normalization_is_not_second_order_exact():
    # Known fact (TF_NOTES): the discrepancy is large, not round-off. If this ever fails,
    # Keras fixed it and MetaNorm may no longer be needed.
    # Measured: 5.7% error of the whole meta-gradient (3.6% of its second-order part) for
    # BatchNormalization, 2e-10 for MetaNorm in the same network.
    total, second_order_part = _meta_gradient_errors("keras_batchnorm")
    assert total > 1e-2 and second_order_part > 1e-2
    assert _meta_gradient_errors("metanorm_batch_dense")[0] < 1e-4


def test_metanorm_normalises_and_round_trips_config():
    layer = MetaNorm("instance", epsilon=1e-3)
    x = tf.constant(np.random.default_rng(2).normal(3.0, 2.0, size=(2, 4, 4, 3)), tf.float32)
    y = layer(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, atol=1e-3)
    clone = MetaNorm.from_config(layer.get_config())
    assert (clone.mode, clone.epsilon) == ("instance", 1e-3)


if __name__ == "__main__":
    for model_name in MODELS:
        print(model_name, _meta_gradient_errors(model_name))
