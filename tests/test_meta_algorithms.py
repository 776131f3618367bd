"""MAML / FOMAML / Meta-SGD / Reptile / aggregation: meta-gradients and updates vs references.

Derivative tests use float64 tiny models (Keras dtype per layer) and central finite
differences of the meta-objective, computed independently of the learner classes.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta.errors import ConfigError  # noqa: E402
from tfmeta.meta import (MAML, SGD, Adam, MetaCurvature, MetaSGD,  # noqa: E402
                         ModelAggregation, Objective, Preconditioned, Reptile, adapt,
                         keras_loss, linear_anneal, param_slices)
from tfmeta.models.classifiers import classification_objective, conv4  # noqa: E402
from tfmeta.models.layers import MetaNorm  # noqa: E402

F64 = "float64"


def _tiny_classifier(seed=0, n_way=3):
    """Conv2D -> MetaNorm(batch) -> tanh -> Dense; 4x4x1 inputs; float64."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1), dtype=F64)
    # No conv bias: MetaNorm("batch") subtracts it again, so its gradient is exactly 0.
    x = keras.layers.Conv2D(2, 3, use_bias=False, dtype=F64)(inputs)
    x = MetaNorm("batch", dtype=F64)(x)
    x = keras.layers.Activation("tanh", dtype=F64)(x)
    x = keras.layers.Flatten(dtype=F64)(x)
    model = keras.Model(inputs, keras.layers.Dense(n_way, dtype=F64)(x))
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:  # non-trivial scale/offset so every term matters
        v.assign(v.numpy() + 0.3 * rng.normal(size=v.shape))
    return model


def _task_batch(rng, tasks, per_class, n_way=3, shape=(4, 4, 1), dtype="float64"):
    images = rng.normal(size=(tasks, n_way * per_class) + shape).astype(dtype)
    labels = np.tile(np.arange(n_way, dtype="int32"), (tasks, per_class))
    return tf.constant(images), tf.constant(labels)


def _meta_objective(objective, support, query, steps, rule, first_order=False):
    """f(params) = mean_t L_query(adapt(params, support_t)) — the reference definition."""
    def f(params):
        losses = []
        for t in range(support[0].shape[0]):
            s = tuple(x[t] for x in support)
            q = tuple(x[t] for x in query)
            adapted = adapt(objective, params, s, steps, rule, first_order=first_order).params
            losses.append(objective(adapted, q, None)[0])
        return tf.add_n(losses) / len(losses)
    return f


def _finite_difference(f, params, h=1e-5):
    """Central differences of scalar f w.r.t. every entry of a list of float64 tensors."""
    f = tf.function(f)
    values = [p.numpy() for p in params]
    grads = []
    for k, value in enumerate(values):
        grad = np.zeros_like(value)
        for j in range(value.size):
            shifted = []
            for sign in (1.0, -1.0):
                v = value.copy().reshape(-1)
                v[j] += sign * h
                trial = [tf.constant(x) for x in values]
                trial[k] = tf.constant(v.reshape(value.shape))
                shifted.append(float(f(trial)))
            grad.reshape(-1)[j] = (shifted[0] - shifted[1]) / (2 * h)
        grads.append(grad)
    return grads


def _rel_error(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def tiny():
    model = _tiny_classifier()
    rng = np.random.default_rng(0)
    return model, _task_batch(rng, 2, 1), _task_batch(rng, 2, 2)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("compiled", [False, True])
def test_maml_meta_gradient_matches_finite_differences(tiny, steps, compiled):
    model, support, query = tiny
    objective = classification_objective(model)
    learner = MAML(model.trainable_variables, objective, objective, SGD(0.5), steps,
                   meta_optimizer=keras.optimizers.SGD(0.1))
    compute = tf.function(learner.meta_gradients) if compiled else learner.meta_gradients
    grads, metrics = compute(support, query, tf.constant(0, tf.int64))
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    reference = _finite_difference(
        _meta_objective(objective, support, query, steps, SGD(0.5)), params)
    assert _rel_error(grads, reference) < 1e-4
    # Every trainable variable gets a non-zero outer gradient.
    assert all(np.linalg.norm(g) > 1e-8 for g in grads)
    assert set(metrics) == {"support_loss_first", "support_loss_last", "query_loss",
                            "query_accuracy", "meta_grad_norm"}


def test_overlapped_task_loop_gives_the_same_meta_gradients(tiny):
    """parallel_tasks > 1 (tasks overlapped in the in-graph loop) changes no number."""
    model, support, query = tiny
    objective = classification_objective(model)
    step = tf.constant(0, tf.int64)
    grads = [tf.function(MAML(model.trainable_variables, objective, objective, SGD(0.5), 2,
                              meta_optimizer=keras.optimizers.SGD(0.1),
                              parallel_tasks=p).meta_gradients)(support, query, step)[0]
             for p in (1, 2)]
    assert _rel_error(grads[1], grads[0]) < 1e-12


@pytest.mark.parametrize("rule", [SGD(0.5), Adam(0.05)], ids=["sgd", "adam"])
def test_recomputed_inner_steps_give_the_same_meta_gradients(tiny, rule):
    """The memory-saving path (tf.recompute_grad per inner step) changes no number."""
    model, support, query = tiny
    objective = classification_objective(model)
    step = tf.constant(0, tf.int64)
    grads = {}
    for recompute in (False, True):
        learner = MAML(model.trainable_variables, objective, objective, rule, 3,
                       meta_optimizer=keras.optimizers.SGD(0.1), recompute=recompute)
        grads[recompute], _ = tf.function(learner.meta_gradients)(support, query, step)
    assert _rel_error(grads[True], grads[False]) < 1e-10
    with pytest.raises(ConfigError, match="fixed update rule"):
        learner = MetaSGD(model.trainable_variables, objective, objective, 0.3, 1,
                          meta_optimizer=keras.optimizers.SGD(0.1))
        learner.recompute = True
        learner.meta_gradients(support, query, step)


def test_fomaml_equals_first_order_formula_and_differs_from_maml(tiny):
    model, support, query = tiny
    objective = classification_objective(model)
    make = lambda first_order: MAML(  # noqa: E731
        model.trainable_variables, objective, objective, SGD(0.5), 2,
        first_order=first_order, meta_optimizer=keras.optimizers.SGD(0.1))
    step = tf.constant(0, tf.int64)
    second, _ = make(False).meta_gradients(support, query, step)
    first, _ = make(True).meta_gradients(support, query, step)
    # Hand-written FOMAML: gradient of the query loss at the adapted parameters.
    expected = None
    for t in range(2):
        adapted = adapt(objective, model.trainable_variables, (support[0][t], support[1][t]),
                        2, SGD(0.5)).params
        with tf.GradientTape() as tape:
            tape.watch(adapted)
            loss, _ = objective(adapted, (query[0][t], query[1][t]), None)
        g = [x.numpy() / 2 for x in tape.gradient(loss, adapted)]
        expected = g if expected is None else [a + b for a, b in zip(expected, g)]
    assert _rel_error(first, expected) < 1e-10
    assert _rel_error(first, second) > 1e-2


def test_adam_inner_loop_meta_gradient_matches_finite_differences(tiny):
    model, support, query = tiny
    objective = classification_objective(model)
    rule = Adam(0.05)
    learner = MAML(model.trainable_variables, objective, objective, rule, 2,
                   meta_optimizer=keras.optimizers.SGD(0.1))
    grads, _ = learner.meta_gradients(support, query, tf.constant(0, tf.int64))
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    reference = _finite_difference(_meta_objective(objective, support, query, 2, rule), params)
    assert _rel_error(grads, reference) < 1e-4


def _gan_pair():
    """A 1-D 'generator' z -> x and 'critic' x -> logit, float64, with GAN-style losses."""
    keras.utils.set_random_seed(1)
    g = keras.Sequential([keras.Input((2,), dtype=F64), keras.layers.Dense(3, dtype=F64),
                          keras.layers.Activation("tanh", dtype=F64)])
    d = keras.Sequential([keras.Input((3,), dtype=F64), keras.layers.Dense(4, dtype=F64),
                          keras.layers.LeakyReLU(0.2, dtype=F64),
                          keras.layers.Dense(1, dtype=F64)])
    g_slice, d_slice = param_slices(g, d)
    n = len(g.trainable_variables) + len(d.trainable_variables)
    g_idx, d_idx = list(range(n))[g_slice], list(range(n))[d_slice]

    def critic_loss(params, batch, seed):  # batch = (real [N,3], z [N,2])
        fake = g.stateless_call(params[g_slice], [], batch[1], training=True)[0]
        d_real = d.stateless_call(params[d_slice], [], batch[0], training=True)[0]
        d_fake = d.stateless_call(params[d_slice], [], fake, training=True)[0]
        return tf.reduce_mean(tf.nn.softplus(-d_real) + tf.nn.softplus(d_fake))

    def generator_loss(params, batch, seed):
        fake = g.stateless_call(params[g_slice], [], batch[1], training=True)[0]
        return tf.reduce_mean(tf.nn.softplus(-d.stateless_call(params[d_slice], [], fake,
                                                                 training=True)[0]))

    objectives = [Objective(critic_loss, d_idx, name="critic"),
                  Objective(generator_loss, g_idx, name="generator")]
    return g.trainable_variables + d.trainable_variables, objectives, g_idx, d_idx


def test_two_objective_maml_meta_gradient_matches_finite_differences():
    variables, (critic, generator), g_idx, d_idx = _gan_pair()
    rng = np.random.default_rng(2)
    support = (tf.constant(rng.normal(size=(2, 4, 3))), tf.constant(rng.normal(size=(2, 4, 2))))
    query = (tf.constant(rng.normal(size=(2, 4, 3))), tf.constant(rng.normal(size=(2, 4, 2))))
    learner = MAML(variables, [critic, generator], [critic, generator], SGD(0.3), 2,
                   meta_optimizer=keras.optimizers.SGD(0.1))
    grads, metrics = learner.meta_gradients(support, query, tf.constant(0, tf.int64))
    assert {"support_critic_first", "support_generator_last", "query_critic",
            "query_generator"} <= set(metrics)
    params = [tf.convert_to_tensor(v) for v in variables]
    # Reference: each outer objective differentiated w.r.t. its own parameters only.
    for outer, idx in ((critic, d_idx), (generator, g_idx)):
        def f(p, outer=outer):
            total = 0.0
            for t in range(2):
                s, q = (support[0][t], support[1][t]), (query[0][t], query[1][t])
                adapted = adapt([critic, generator], p, s, 2, SGD(0.3)).params
                total += outer(adapted, q, None)[0]
            return total / 2
        reference = _finite_difference(f, params)
        assert _rel_error([grads[i] for i in idx], [reference[i] for i in idx]) < 1e-4


def _linear_model(seed):
    model = keras.Sequential([keras.Input((3,), dtype=F64), keras.layers.Dense(1, dtype=F64)])
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape))
    return model


def _mse(outputs, batch):
    return tf.reduce_mean(tf.square(outputs - batch[1]))


def _numpy_adapt(w, b, x, y, lr, steps):
    for _ in range(steps):
        err = x @ w + b - y
        scale = 2.0 / err.size
        w, b = w - lr * scale * x.T @ err, b - lr * scale * err.sum(0)
    return w, b


def _regression_tasks(rng, tasks=3):
    x = rng.normal(size=(tasks, 5, 3))
    y = rng.normal(size=(tasks, 5, 1))
    return tf.constant(x), tf.constant(y)


@pytest.mark.parametrize("use_optimizer", [False, True])
def test_reptile_update_equals_numpy_interpolation(use_optimizer):
    model = _linear_model(3)
    objective = Objective(keras_loss(model, _mse))
    w0, b0 = (v.numpy() for v in model.trainable_variables)
    support = _regression_tasks(np.random.default_rng(4))
    kwargs = ({"meta_optimizer": keras.optimizers.SGD(0.5)} if use_optimizer
              else {"meta_step_size": 0.5})
    learner = Reptile(model.trainable_variables, objective, SGD(0.1), 2, **kwargs)
    metrics = learner.meta_step(support, None, 0)
    adapted = [_numpy_adapt(w0, b0, support[0][t].numpy(), support[1][t].numpy(), 0.1, 2)
               for t in range(3)]
    mean_w = np.mean([a[0] for a in adapted], 0)
    mean_b = np.mean([a[1] for a in adapted], 0)
    np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                               w0 + 0.5 * (mean_w - w0), rtol=1e-12)
    np.testing.assert_allclose(model.trainable_variables[1].numpy(),
                               b0 + 0.5 * (mean_b - b0), rtol=1e-12)
    direction = np.concatenate([(mean_w - w0).ravel(), (mean_b - b0).ravel()])
    np.testing.assert_allclose(metrics["meta_update_norm"], np.linalg.norm(direction),
                               rtol=1e-5)


def test_linear_anneal_reaches_final_at_num_steps_then_holds():
    anneal = linear_anneal(0.8, 4)
    values = [float(anneal(tf.constant(s, tf.int64))) for s in (0, 1, 2, 4, 9)]
    assert values == pytest.approx([0.8, 0.6, 0.4, 0.0, 0.0], abs=1e-15)
    assert float(linear_anneal(1.0, 10, final=0.5)(tf.constant(5, tf.int64))) == 0.75
    assert float(linear_anneal(1.0, 0)(tf.constant(3, tf.int64))) == 0.0   # test-only run
    with pytest.raises(ConfigError, match="num_steps >= 0"):
        linear_anneal(1.0, -1)


@pytest.mark.parametrize("kind", ["reptile", "aggregation"])
def test_annealed_step_size_moves_by_its_value_at_that_step(kind):
    """Meta-step 3 of linear_anneal(1, 4) interpolates by 0.25 (numpy reference)."""
    model = _linear_model(3)
    objective = Objective(keras_loss(model, _mse))
    w0, b0 = (v.numpy() for v in model.trainable_variables)
    support = _regression_tasks(np.random.default_rng(4))
    schedule = linear_anneal(1.0, 4)
    learner = (Reptile(model.trainable_variables, objective, SGD(0.1), 2,
                       meta_step_size=schedule) if kind == "reptile" else
               ModelAggregation(model.trainable_variables, objective, SGD(0.1), 2,
                                step_size=schedule))
    learner.meta_step(support, None, 3)
    adapted = [_numpy_adapt(w0, b0, support[0][t].numpy(), support[1][t].numpy(), 0.1, 2)
               for t in range(3)]
    mean_w = np.mean([a[0] for a in adapted], 0)
    np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                               w0 + 0.25 * (mean_w - w0), rtol=1e-12)


@pytest.mark.parametrize("weighting", ["uniform", "softmax", "inverse"])
def test_aggregation_update_equals_numpy_weighted_mean(weighting):
    model = _linear_model(5)
    objective = Objective(keras_loss(model, _mse))
    w0, b0 = (v.numpy() for v in model.trainable_variables)
    rng = np.random.default_rng(6)
    support, query = _regression_tasks(rng), _regression_tasks(rng)
    learner = ModelAggregation(model.trainable_variables, objective, SGD(0.1), 2,
                               step_size=0.7, weighting=weighting, temperature=0.5)
    learner.meta_step(support, query, 0)
    adapted, losses = [], []
    for t in range(3):
        w, b = _numpy_adapt(w0, b0, support[0][t].numpy(), support[1][t].numpy(), 0.1, 2)
        adapted.append((w, b))
        losses.append(np.mean((query[0][t].numpy() @ w + b - query[1][t].numpy()) ** 2))
    losses = np.array(losses)
    weights = {"uniform": np.ones(3), "softmax": np.exp(-losses / 0.5),
               "inverse": 1 / losses}[weighting]
    weights = weights / weights.sum()
    agg_w = sum(wt * a[0] for wt, a in zip(weights, adapted))
    agg_b = sum(wt * a[1] for wt, a in zip(weights, adapted))
    np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                               w0 + 0.7 * (agg_w - w0), rtol=1e-10)
    np.testing.assert_allclose(model.trainable_variables[1].numpy(),
                               b0 + 0.7 * (agg_b - b0), rtol=1e-10)


def _assert_checkpointed(learner, variables, name):
    """`variables` are saved by the learner's checkpoint and restored exactly."""
    path = tf.train.Checkpoint(**learner.trackables()).write(
        os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{name}_{os.getpid()}"))
    saved = [v.numpy().copy() for v in variables]
    for v in variables:
        v.assign(tf.zeros_like(v))
    tf.train.Checkpoint(**learner.trackables()).read(path).assert_consumed()
    for s, v in zip(saved, variables):
        np.testing.assert_array_equal(s, v.numpy())


def test_meta_sgd_learning_rates_get_meta_gradients_and_move(tiny):
    model, support, query = tiny
    objective = classification_objective(model)
    learner = MetaSGD(model.trainable_variables, objective, objective, 0.3, 2,
                      meta_optimizer=keras.optimizers.SGD(0.1))
    lr_vars = learner.learning_rates
    grads, _ = learner.meta_gradients(support, query, tf.constant(0, tf.int64))
    by_var = dict(zip([id(v) for v in learner.meta_variables], grads))
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    rates = [tf.convert_to_tensor(lr) for lr in lr_vars]

    # Reference: finite differences of the meta-objective w.r.t. the rates.
    def f(r):
        return _meta_objective(objective, support, query, 2, SGD(list(r)))(params)
    reference = _finite_difference(f, rates)
    assert _rel_error([by_var[id(lr)] for lr in lr_vars], reference) < 1e-4
    assert all(np.linalg.norm(by_var[id(lr)]) > 0 for lr in lr_vars)
    before = [lr.numpy().copy() for lr in lr_vars]
    metrics = learner.meta_step(support, query, 0)
    assert all(not np.allclose(b, lr.numpy()) for b, lr in zip(before, lr_vars))
    assert float(metrics["inner_lr_mean"]) == pytest.approx(0.3, abs=1e-6)  # before update
    _assert_checkpointed(learner, lr_vars, "metasgd")


def test_meta_curvature_at_identity_is_maml_with_sgd(tiny):
    model, support, query = tiny
    objective = classification_objective(model)
    step = tf.constant(0, tf.int64)
    curvature = MetaCurvature(model.trainable_variables, objective, objective, 0.5, 2,
                              meta_optimizer=keras.optimizers.SGD(0.1))
    maml = MAML(model.trainable_variables, objective, objective, SGD(0.5), 2,
                meta_optimizer=keras.optimizers.SGD(0.1))
    mc_grads, mc_metrics = curvature.meta_gradients(support, query, step)
    maml_grads, _ = maml.meta_gradients(support, query, step)
    by_var = dict(zip([id(v) for v in curvature.meta_variables], mc_grads))
    theta = [by_var[id(v)] for v in model.trainable_variables]
    assert _rel_error(theta, maml_grads) < 1e-12
    assert float(mc_metrics["curvature_change"]) == 0.0


def test_preconditioner_is_the_kronecker_mode_product():
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(5, 3))          # [fan_in, fan_out]
    conv = rng.normal(size=(2, 2, 3, 4))     # [kh, kw, fan_in, fan_out]
    m_in, m_out = rng.normal(size=(5, 5)), rng.normal(size=(3, 3))
    m_sp, m_ci, v_co = rng.normal(size=(4, 4)), rng.normal(size=(3, 3)), rng.normal(size=4)
    bias = rng.normal(size=3)
    rule = Preconditioned(0.1, [[None, m_in, m_out], [m_sp, m_ci, v_co], [bias]],
                          [(1, 5, 3), (4, 3, 4), None])
    # Dense: M_in G M_out^T. Conv: the same per spatial position, mixed across positions
    # by M_sp, and a diagonal (vector) factor on the output channels.
    np.testing.assert_allclose(rule.precondition(0, tf.constant(dense)),
                               m_in @ dense @ m_out.T, rtol=1e-12)
    flat = conv.reshape(4, 3, 4)
    expected = np.stack([sum(m_sp[p, q] * (m_ci @ flat[q]) for q in range(4))
                         for p in range(4)]) * v_co
    np.testing.assert_allclose(rule.precondition(1, tf.constant(conv)),
                               expected.reshape(conv.shape), rtol=1e-12)
    np.testing.assert_allclose(rule.precondition(2, tf.constant(bias)), bias * bias)
    new, _ = rule.update([tf.constant(dense)], [tf.constant(dense)], (), 0)
    np.testing.assert_allclose(new[0], dense - 0.1 * (m_in @ dense @ m_out.T), rtol=1e-12)


def test_meta_curvature_factors_get_exact_meta_gradients_and_move(tiny):
    model, support, query = tiny
    objective = classification_objective(model)
    learner = MetaCurvature(model.trainable_variables, objective, objective, 0.3, 1,
                            meta_optimizer=keras.optimizers.SGD(0.1))
    factors = learner.update_rule_variables
    # conv kernel: spatial 9x9 + out 2x2; dense kernel: 8x8 + 3x3; biases/norm: vectors.
    assert sorted(tuple(f.shape) for f in factors) == sorted(
        [(9, 9), (2, 2), (2,), (2,), (8, 8), (3, 3), (3,)])
    grads, _ = learner.meta_gradients(support, query, tf.constant(0, tf.int64))
    by_var = dict(zip([id(v) for v in learner.meta_variables], grads))
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    values = [tf.convert_to_tensor(f) for f in factors]

    def f(flat):
        it = iter(flat)
        rebuilt = [[None if x is None else next(it) for x in fs] for fs in learner.factors]
        rule = Preconditioned(0.3, rebuilt, learner.views)
        return _meta_objective(objective, support, query, 1, rule)(params)
    reference = _finite_difference(f, values)
    assert _rel_error([by_var[id(v)] for v in factors], reference) < 1e-4
    assert all(np.linalg.norm(by_var[id(v)]) > 0 for v in factors)
    before = [v.numpy().copy() for v in factors]
    learner.meta_step(support, query, 0)
    assert all(not np.allclose(b, v.numpy()) for b, v in zip(before, factors))
    assert float(learner.meta_step(support, query, 1)["curvature_change"]) > 0
    _assert_checkpointed(learner, factors, "metacurv")


LEARNERS = {
    "maml": lambda v, o: MAML(v, o, o, SGD(0.4), 1, meta_optimizer=keras.optimizers.Adam(1e-3)),
    "fomaml": lambda v, o: MAML(v, o, o, SGD(0.4), 2, first_order=True,
                                meta_optimizer=keras.optimizers.Adam(1e-3)),
    "meta_sgd": lambda v, o: MetaSGD(v, o, o, 0.4, 1,
                                     meta_optimizer=keras.optimizers.Adam(1e-3)),
    "meta_curvature": lambda v, o: MetaCurvature(v, o, o, 0.4, 1,
                                                 meta_optimizer=keras.optimizers.Adam(1e-3)),
    "reptile": lambda v, o: Reptile(v, o, Adam(1e-3), 2, meta_step_size=0.1),
    "aggregation": lambda v, o: ModelAggregation(v, o, SGD(0.1), 2, weighting="softmax"),
}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_compiled_meta_step_traces_once_and_moves_every_variable(name):
    # norm="layer": with "batch" the conv biases are cancelled by the norm (zero gradient).
    model = conv4(3, (8, 8, 1), filters=4, norm="layer", pool="stride")
    variables = model.trainable_variables
    learner = LEARNERS[name](variables, classification_objective(model))
    rng = np.random.default_rng(7)
    before = [v.numpy().copy() for v in variables]
    for step in range(3):
        support = _task_batch(rng, 2, 1, shape=(8, 8, 1), dtype="float32")
        query = _task_batch(rng, 2, 3, shape=(8, 8, 1), dtype="float32")
        metrics = learner.meta_step(support, query, step)
        assert all(np.isfinite(float(v)) for v in metrics.values())
    assert learner.compiled_meta_step.experimental_get_tracing_count() == 1
    assert all(not np.allclose(b, v.numpy()) for b, v in zip(before, variables))


def test_adapt_and_evaluate_leaves_variables_and_matches_plain_evaluation(tiny):
    model, support, query = tiny
    objective = classification_objective(model)
    learner = MAML(model.trainable_variables, objective, objective, SGD(0.5), 1,
                   meta_optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in model.trainable_variables]
    zero = learner.adapt_and_evaluate(support, query, 0, num_steps=0)
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    plain = np.mean([objective(params, (query[0][t], query[1][t]), None)[0] for t in range(2)])
    np.testing.assert_allclose(zero["query_loss"], plain, rtol=1e-6)
    assert "support_loss_first" not in zero
    adapted = learner.adapt_and_evaluate(support, query, 0, num_steps=3)
    reference = _meta_objective(objective, support, query, 3, SGD(0.5))(params)
    np.testing.assert_allclose(adapted["query_loss"], reference, rtol=1e-6)
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_learner_arguments_are_validated():
    model = _linear_model(0)
    objective = Objective(keras_loss(model, _mse))
    with pytest.raises(ConfigError, match="meta_optimizer"):
        MAML(model.trainable_variables, objective, objective, SGD(0.1), 1)
    with pytest.raises(ConfigError, match="exactly one"):
        Reptile(model.trainable_variables, objective, SGD(0.1), 1)
    with pytest.raises(ConfigError, match="weighting"):
        ModelAggregation(model.trainable_variables, objective, SGD(0.1), 1, weighting="max")
    with pytest.raises(ConfigError, match="param_indices"):
        MAML(model.trainable_variables, Objective(objective.loss_fn, [5]), objective,
             SGD(0.1), 1, meta_optimizer=keras.optimizers.SGD(0.1))


def test_every_learner_conforms_to_the_learner_contract(tiny):
    """tfmeta.meta.MetaLearner: each algorithm of make_learner, ProtoNet and the
    tf.distribute wrapper; adapt_and_evaluate works the same way on all of them."""
    from tfmeta import distribute
    from tfmeta.config import META_ALGORITHMS
    from tfmeta.meta import MetaLearner, ProtoNet, make_learner
    model, support, query = tiny
    objective = classification_objective(model)
    learners = {name: make_learner(name, model.trainable_variables, objective, objective,
                                   inner_optimizer="sgd", inner_lr=0.1, num_inner_steps=1,
                                   meta_optimizer=keras.optimizers.SGD(0.01))
                for name in META_ALGORITHMS}   # the one list: every name builds
    encoder = keras.Sequential([keras.Input((4, 4, 1), dtype=F64),
                                keras.layers.Flatten(dtype=F64), keras.layers.Dense(4, dtype=F64)])
    learners["protonet"] = ProtoNet(encoder, 3, keras.optimizers.Adam(1e-3))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        mirrored = make_learner("maml", [tf.Variable(v) for v in model.trainable_variables],
                                objective, objective, inner_optimizer="sgd", inner_lr=0.1,
                                num_inner_steps=1, meta_optimizer=keras.optimizers.SGD(0.01))
    learners["distributed"] = distribute.DistributedLearner(mirrored, strategy)
    for name, learner in learners.items():
        assert isinstance(learner, MetaLearner), name
        assert (learner.inner_rule() is None) == (name == "protonet"), name
        assert isinstance(learner.trackables(), dict) and learner.trackables(), name
        if name in ("protonet", "distributed"):
            continue
        metrics = learner.adapt_and_evaluate(support, query, 0, num_steps=1)
        assert 0.0 <= float(metrics["query_accuracy"]) <= 1.0, name
    metrics = learners["protonet"].adapt_and_evaluate(support, query, 0)
    assert 0.0 <= float(metrics["query_accuracy"]) <= 1.0
