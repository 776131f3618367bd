"""The functional inner loop: update rules, objectives, seeds, tensor step counts."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.errors import ConfigError  # noqa: E402
from tfmeta.meta import (SGD, Adam, Objective, adapt, keras_loss,  # noqa: E402
                         make_learner, minibatch_objective, param_slices)


def _linear(n_in=3, n_out=2, seed=0):
    model = keras.Sequential([keras.Input((n_in,), dtype="float64"),
                              keras.layers.Dense(n_out, dtype="float64")])
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape))
    return model


def _mse(outputs, batch):
    return tf.reduce_mean(tf.square(outputs - batch[1]))


def _data(rng, n=5, n_in=3, n_out=2):
    return (tf.constant(rng.normal(size=(n, n_in))), tf.constant(rng.normal(size=(n, n_out))))


def test_sgd_steps_match_numpy():
    model = _linear()
    x, y = _data(np.random.default_rng(1))
    w, b = (v.numpy() for v in model.trainable_variables)
    result = adapt(Objective(keras_loss(model, _mse)), model.trainable_variables, (x, y), 2,
                   SGD(0.1))
    x, y = x.numpy(), y.numpy()
    losses = []
    for _ in range(2):
        err = x @ w + b - y
        losses.append(np.mean(err ** 2))
        scale = 2.0 / err.size
        w, b = w - 0.1 * scale * x.T @ err, b - 0.1 * scale * err.sum(0)
    np.testing.assert_allclose(result.params[0], w, rtol=1e-12)
    np.testing.assert_allclose(result.params[1], b, rtol=1e-12)
    np.testing.assert_allclose(result.losses[:, 0], losses, rtol=1e-12)
    assert result.losses.shape == (2, 1)


def test_one_inner_step_lowers_support_loss():
    model = _linear(4, 3)
    objective = Objective(keras_loss(model, _mse))
    batch = _data(np.random.default_rng(2), 8, 4, 3)
    result = adapt(objective, model.trainable_variables, batch, 1, SGD(0.05))
    after, _ = objective(result.params, batch, tf.zeros([2], tf.int64))
    assert float(after) < float(result.losses[0, 0]) - 1e-3


def test_functional_adam_equals_keras_adam():
    rng = np.random.default_rng(3)
    # float32: Keras keeps its hyper-parameters in float32 even for float64 variables.
    init = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")]
    grads = [[tf.constant(rng.normal(size=p.shape), tf.float32) for p in init]
             for _ in range(4)]
    variables = [tf.Variable(p) for p in init]
    keras_adam = keras.optimizers.Adam(0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
    rule = Adam(0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
    params = [tf.constant(p) for p in init]
    state = rule.init(params)
    for step, g in enumerate(grads):
        keras_adam.apply_gradients(zip(g, variables))
        params, state = rule.update(params, g, state, step)
    for p, v in zip(params, variables):
        np.testing.assert_allclose(p, v.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(params[0], init[0], atol=1e-3)  # it did move


def test_adam_second_order_is_finite_with_zero_gradients():
    # Parameter entry 2 never touches the loss: its gradient is exactly zero, where a naive
    # sqrt(v) has an infinite derivative and the meta-gradient would be NaN.
    theta = tf.constant([0.5, -1.0, 2.0], tf.float64)
    mask = tf.constant([1.0, 1.0, 0.0], tf.float64)
    objective = Objective(lambda p, batch, seed: tf.reduce_sum(tf.square(p[0] * mask - 1.0)))
    with tf.GradientTape() as tape:
        tape.watch(theta)
        result = adapt(objective, [theta], (), 3, Adam(0.1))
        outer = tf.reduce_sum(tf.square(result.params[0] * mask))
    grad = tape.gradient(outer, theta)
    assert np.all(np.isfinite(grad.numpy()))
    assert grad.numpy()[2] == 0.0 and np.all(grad.numpy()[:2] != 0.0)


def test_tensor_num_steps_matches_unrolled():
    model = _linear()
    objective = Objective(keras_loss(model, _mse))
    batch = _data(np.random.default_rng(4))

    @tf.function
    def with_tensor(steps):
        result = adapt(objective, model.trainable_variables, batch, steps, Adam(0.05),
                       seed=tf.constant([1, 2], tf.int64))
        return result.params, result.losses

    unrolled = adapt(objective, model.trainable_variables, batch, 3, Adam(0.05),
                     seed=tf.constant([1, 2], tf.int64))
    params, losses = with_tensor(tf.constant(3))
    for a, b in zip(params, unrolled.params):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(losses, unrolled.losses, rtol=1e-12)
    params0, losses0 = with_tensor(tf.constant(0))
    assert losses0.shape == (0, 1)
    np.testing.assert_allclose(params0[0], model.trainable_variables[0].numpy())


def test_two_objectives_alternate_on_their_indices():
    # GAN-like: objective "d" updates a with loss f(a, b); objective "g" then updates b
    # with loss h(a', b), seeing the already-updated a'.
    a0, b0, lr = 1.5, -0.5, 0.1
    d = Objective(lambda p, batch, seed: tf.square(p[0] * p[1] - 1.0), [0], name="d")
    g = Objective(lambda p, batch, seed: tf.square(p[0] + p[1]) + p[1], [1], name="g")
    result = adapt([d, g], [tf.constant(a0, tf.float64), tf.constant(b0, tf.float64)], (),
                   2, SGD(lr))
    a, b = a0, b0
    expected_losses = []
    for _ in range(2):
        expected_losses.append([(a * b - 1) ** 2, None])
        a = a - lr * 2 * (a * b - 1) * b
        expected_losses[-1][1] = (a + b) ** 2 + b
        b = b - lr * (2 * (a + b) + 1)
    np.testing.assert_allclose([float(result.params[0]), float(result.params[1])], [a, b],
                               rtol=1e-12)
    np.testing.assert_allclose(result.losses, expected_losses, rtol=1e-12)


def test_step_seeds_are_folded_and_reproducible():
    def noisy(params, batch, seed):
        noise = tf.random.stateless_normal([3], seed=seed, dtype=tf.float64)
        return tf.reduce_sum(params[0] * noise)

    theta = [tf.zeros([3], tf.float64)]
    first = adapt(Objective(noisy), theta, (), 2, SGD(1.0), seed=tf.constant([3, 4]))
    again = adapt(Objective(noisy), theta, (), 2, SGD(1.0), seed=tf.constant([3, 4]))
    other = adapt(Objective(noisy), theta, (), 2, SGD(1.0), seed=tf.constant([3, 5]))
    np.testing.assert_array_equal(first.params[0], again.params[0])
    assert not np.allclose(first.params[0], other.params[0])
    # Step 0 and step 1 draw different noise: the update is not 2 * the first step.
    step0 = adapt(Objective(noisy), theta, (), 1, SGD(1.0), seed=tf.constant([3, 4]))
    assert not np.allclose(first.params[0], 2 * step0.params[0].numpy())


def _subset_code(params, batch, seed):
    """Loss sum_i 2^id_i over the examples it sees: each subset of ids has its own value
    (and params[0] enters it, so adapt has a gradient)."""
    del seed
    return tf.reduce_sum(tf.pow(tf.constant(2.0, tf.float64), batch[0])) + params[0][0] * 0.0


def _ids(code):
    return {i for i in range(16) if int(round(float(code))) >> i & 1}


def test_minibatch_objective_draws_a_seeded_subset_without_replacement():
    ids = (tf.range(10, dtype=tf.float64),)
    objective = minibatch_objective(Objective(_subset_code), 4)
    theta = [tf.zeros([1], tf.float64)]
    draws = [_ids(objective(theta, ids, tf.constant([1, s], tf.int64))[0]) for s in range(6)]
    assert all(len(d) == 4 and d <= set(range(10)) for d in draws)   # distinct ids
    assert len({frozenset(d) for d in draws}) > 1                     # seed-dependent
    again = _ids(objective(theta, ids, tf.constant([1, 0], tf.int64))[0])
    assert again == draws[0]                                          # repeatable
    # a batch no larger than the minibatch is used whole
    small = minibatch_objective(Objective(_subset_code), 10)
    assert _ids(small(theta, ids, tf.constant([1, 2], tf.int64))[0]) == set(range(10))
    with pytest.raises(ConfigError, match="batch_size >= 1"):
        minibatch_objective(Objective(_subset_code), 0)


def test_adapt_draws_a_fresh_minibatch_every_step():
    ids = (tf.range(10, dtype=tf.float64),)
    objective = minibatch_objective(Objective(_subset_code), 3)
    theta = [tf.zeros([1], tf.float64)]
    result = adapt(objective, theta, ids, 4, SGD(0.1), seed=tf.constant([5, 6]))
    steps = [frozenset(_ids(loss)) for loss in result.losses[:, 0]]
    assert all(len(s) == 3 for s in steps) and len(set(steps)) > 1
    repeat = adapt(objective, theta, ids, 4, SGD(0.1), seed=tf.constant([5, 6]))
    np.testing.assert_array_equal(result.losses, repeat.losses)


@pytest.mark.parametrize("algorithm", ["reptile", "aggregation"])
def test_reptile_evaluates_every_query_with_a_minibatched_inner_loop(algorithm):
    model = _linear()
    full = Objective(keras_loss(model, _mse))
    rng = np.random.default_rng(3)
    support, query = _data(rng, 2), _data(rng, 12)
    learner = make_learner(algorithm, model.trainable_variables,
                           minibatch_objective(full, 4), full, inner_optimizer="sgd",
                           inner_lr=0.1, num_inner_steps=2, eval_objectives=full)
    batch = lambda b: tuple(x[None] for x in b)   # noqa: E731  (one task)
    metrics = learner.adapt_and_evaluate(batch(support), batch(query), 0)
    # the 2-image support fits the minibatch: the adapted weights are full-batch SGD's
    w, b = (v.numpy() for v in model.trainable_variables)
    x, y = (t.numpy() for t in support)
    for _ in range(2):
        err = x @ w + b - y
        w, b = w - 0.1 * 2.0 / err.size * x.T @ err, b - 0.1 * 2.0 / err.size * err.sum(0)
    qx, qy = (t.numpy() for t in query)
    assert float(metrics["query_loss"]) == pytest.approx(np.mean((qx @ w + b - qy) ** 2),
                                                         rel=1e-6)   # float32 metric


def test_keras_loss_slices_and_errors():
    g, d = _linear(2, 3, seed=5), _linear(3, 1, seed=6)
    g_slice, d_slice = param_slices(g, d)
    params = g.trainable_variables + d.trainable_variables
    assert (g_slice, d_slice) == (slice(0, 2), slice(2, 4))
    loss_fn = keras_loss(d, lambda out, batch: tf.reduce_mean(out), params_slice=d_slice)
    x = tf.ones([4, 3], tf.float64)
    expected = tf.reduce_mean(d(x))
    np.testing.assert_allclose(loss_fn([tf.convert_to_tensor(p) for p in params], (x,), None),
                               expected, rtol=1e-12)
    with pytest.raises(ConfigError, match="params_slice"):
        keras_loss(d, lambda out, batch: tf.reduce_mean(out))(params, (x,), None)
    with pytest.raises(ConfigError, match="param_indices"):
        adapt(Objective(loss_fn, [7]), params, (x,), 1, SGD(0.1))


def test_meta_gradient_through_tensor_num_steps_matches_unrolled():
    theta = tf.constant([0.5, -1.0, 2.0], tf.float64)
    objective = Objective(lambda p, batch, seed: tf.reduce_sum(tf.sin(p[0]) * p[0] ** 2))

    def meta_gradient(steps):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            result = adapt(objective, [theta], (), steps, SGD(0.1))
            outer = tf.reduce_sum(result.params[0] ** 3)
        return tape.gradient(outer, theta)

    compiled = tf.function(meta_gradient)(tf.constant(3))
    unrolled = meta_gradient(3)
    np.testing.assert_allclose(compiled, unrolled, rtol=1e-12)
    first_order = 3 * adapt(objective, [theta], (), 3, SGD(0.1)).params[0] ** 2
    assert not np.allclose(unrolled, first_order, rtol=1e-3)  # second order matters here


def _docstring_example(obj):
    """The indented code block after 'Example' in `obj`'s docstring."""
    import inspect
    import textwrap
    doc = inspect.getdoc(obj)
    block = doc.split("Example", 1)[1].split("\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_docstring_examples_run():
    """The usage examples of `adapt` and `MAML` run as written."""
    from tfmeta.meta import MAML
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    task = (rng.normal(size=(6, 4)).astype(np.float32), np.arange(6) % 3)
    names = dict(keras=keras, tf=tf, Objective=Objective, keras_loss=keras_loss, adapt=adapt,
                 SGD=SGD, MAML=MAML, model=model, support=task, query=task)
    exec(_docstring_example(adapt), names)
    assert len(names["meta_grads"]) == 2 and all(g is not None for g in names["meta_grads"])
    before = [v.numpy().copy() for v in model.trainable_variables]
    batched = tuple(tf.stack([t, t]) for t in task)   # B = 2 tasks
    names.update(support=batched, query=batched)
    exec(_docstring_example(MAML), names)
    assert np.isfinite(float(names["metrics"]["meta_grad_norm"]))
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(before, model.trainable_variables))
