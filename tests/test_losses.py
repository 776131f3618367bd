"""Golden-value and gradient tests for tfmeta.losses (numbers computed by hand in numpy)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta import losses  # noqa: E402

REAL = np.array([[1.5], [-0.5], [0.25], [3.0]], np.float32)
FAKE = np.array([[-2.0], [0.5], [1.0], [-0.75]], np.float32)
SEED = tf.constant([3, 7], tf.int32)


def _np_softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


def test_wasserstein_losses_golden():
    # mean(FAKE) = (-2 + 0.5 + 1 - 0.75) / 4 = -0.3125; mean(REAL) = 4.25 / 4 = 1.0625.
    assert float(losses.wasserstein_generator_loss(FAKE)) == pytest.approx(0.3125)
    assert float(losses.wasserstein_discriminator_loss(REAL, FAKE)) == pytest.approx(
        -0.3125 - 1.0625)


def test_hinge_losses_golden():
    # relu(1 - real) = [0, 1.5, 0.75, 0] -> 0.5625; relu(1 + fake) = [0, 1.5, 2, 0.25] -> 0.9375
    assert float(losses.hinge_discriminator_loss(REAL, FAKE)) == pytest.approx(1.5)
    assert float(losses.hinge_generator_loss(FAKE)) == pytest.approx(0.3125)


def test_nonsaturating_losses_golden_and_stable():
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    want_g = -np.mean(np.log(sigmoid(FAKE.astype(np.float64))))
    want_d = (-np.mean(np.log(sigmoid(REAL.astype(np.float64))))
              - np.mean(np.log(1.0 - sigmoid(FAKE.astype(np.float64)))))
    assert float(losses.nonsaturating_generator_loss(FAKE)) == pytest.approx(want_g, 1e-6)
    assert float(losses.nonsaturating_discriminator_loss(REAL, FAKE)) == pytest.approx(
        want_d, 1e-6)
    # log(sigmoid(-200)) underflows to -inf in float32; the softplus form gives 200.
    big = np.array([[-200.0], [200.0]], np.float32)
    assert float(losses.nonsaturating_generator_loss(big)) == pytest.approx(100.0)
    assert float(losses.nonsaturating_discriminator_loss(big, big)) == pytest.approx(200.0)


def test_gan_losses_dispatch():
    assert set(losses.GAN_LOSSES) == {"wgan_gp", "hinge", "nonsaturating"}
    for family, (g_loss, d_loss) in losses.GAN_LOSSES.items():
        assert g_loss.__name__.endswith("_generator_loss"), family
        assert d_loss.__name__.endswith("_discriminator_loss"), family
    assert losses.GAN_LOSSES["hinge"][1] is losses.hinge_discriminator_loss


def test_gradient_penalty_linear_critic_closed_form():
    # f(x) = <w, x> has gradient w everywhere: penalty = (sqrt(||w||^2 + eps) - 1)^2 for
    # every alpha; the norm runs over all of H, W, C.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 4, 3)).astype(np.float64)
    real = rng.normal(size=(5, 4, 4, 3))
    fake = rng.normal(size=(5, 4, 4, 3))
    critic = lambda x: tf.reduce_sum(x * w, axis=[1, 2, 3])[:, None]  # noqa: E731
    got = losses.gradient_penalty(critic, real, fake, SEED)
    want = (np.sqrt(np.sum(w ** 2) + 1e-10) - 1.0) ** 2
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_gradient_penalty_per_sample_norm_over_all_axes():
    # f(x) = 0.5 sum(x^2) has per-sample gradient x; with real == fake the interpolate is
    # x itself, so the penalty is mean_i (||x_i||_{H,W,C} - 1)^2.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3, 3, 2)) * np.arange(1, 7)[:, None, None, None] * 0.2
    critic = lambda v: 0.5 * tf.reduce_sum(tf.square(v), axis=[1, 2, 3])  # noqa: E731
    got = float(losses.gradient_penalty(critic, x, x, SEED))
    norms = np.sqrt(np.sum(x.reshape(6, -1) ** 2, axis=1) + 1e-10)
    assert got == pytest.approx(np.mean((norms - 1.0) ** 2), rel=1e-10)
    # A norm over channels only (a known bug) would give a different number.
    wrong = np.mean((np.sqrt(np.sum(x ** 2, axis=-1)) - 1.0) ** 2)
    assert abs(got - wrong) > 1e-3


def test_gradient_penalty_alpha_uniform_per_sample():
    seen = []

    def critic(v):
        seen.append(v)
        return tf.reduce_sum(v, axis=[1, 2, 3])

    n = 4000
    real, fake = np.ones((n, 2, 2, 1), np.float32), np.zeros((n, 2, 2, 1), np.float32)
    losses.gradient_penalty(critic, real, fake, SEED)
    alpha = seen[-1].numpy()  # = alpha * 1 + (1 - alpha) * 0
    # One alpha per sample, shared by all its pixels.
    np.testing.assert_array_equal(alpha, np.broadcast_to(alpha[:, :1, :1, :], alpha.shape))
    a = alpha[:, 0, 0, 0]
    assert a.min() >= 0.0 and a.max() <= 1.0
    # U(0, 1): mean 1/2, variance 1/12, flat histogram (not normal, not constant).
    assert abs(a.mean() - 0.5) < 0.02 and abs(a.var() - 1 / 12) < 0.01
    counts = np.histogram(a, bins=10, range=(0, 1))[0]
    assert counts.min() > 0.8 * n / 10 and counts.max() < 1.2 * n / 10
    # Explicit seed: reproducible, and another seed gives another draw.
    losses.gradient_penalty(critic, real, fake, SEED)
    np.testing.assert_array_equal(seen[-1].numpy(), alpha)
    losses.gradient_penalty(critic, real, fake, tf.constant([3, 8]))
    assert not np.allclose(seen[-1].numpy(), alpha)


def _tanh_critic(params, x):
    w, v = params
    hidden = tf.tanh(tf.reshape(x, [tf.shape(x)[0], -1]) @ w)
    return hidden @ v


def test_gradient_penalty_second_order_matches_finite_differences():
    # d penalty / d critic weights needs the derivative of the input gradient: the
    # penalty is only useful if this second-order path exists and is right.
    rng = np.random.default_rng(2)
    real = rng.normal(size=(3, 2, 2, 1))
    fake = rng.normal(size=(3, 2, 2, 1))
    params = [rng.normal(size=(4, 3)), rng.normal(size=(3, 1))]

    def penalty(ps):
        return losses.gradient_penalty(lambda x: _tanh_critic(ps, x), real, fake, SEED)

    tensors = [tf.constant(p) for p in params]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = penalty(tensors)
    grads = tape.gradient(value, tensors)
    assert all(g is not None for g in grads)
    h = 1e-6
    for i, p in enumerate(params):
        fd = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            plus, minus = [q.copy() for q in params], [q.copy() for q in params]
            plus[i][idx] += h
            minus[i][idx] -= h
            fd[idx] = (float(penalty(plus)) - float(penalty(minus))) / (2 * h)
        np.testing.assert_allclose(grads[i].numpy(), fd, rtol=1e-6, atol=1e-9)
    assert np.abs(grads[0].numpy()).max() > 1e-3


def test_gradient_penalty_epsilon_keeps_gradient_finite_at_zero():
    # A critic whose input gradient is exactly zero: without eps inside the sqrt the
    # derivative of the norm is 0/0 = NaN.
    w = tf.constant(np.zeros((2, 2, 1)))
    x = np.ones((3, 2, 2, 1))
    with tf.GradientTape() as tape:
        tape.watch(w)
        value = losses.gradient_penalty(
            lambda v: tf.reduce_sum(v * w, axis=[1, 2, 3]), x, 2 * x, SEED)
    grad = tape.gradient(value, w)
    assert float(value) == pytest.approx((np.sqrt(1e-10) - 1.0) ** 2)
    assert np.all(np.isfinite(grad.numpy()))


def test_gradient_penalty_inside_tf_function():
    critic = lambda x: 2.0 * tf.reduce_sum(x, axis=[1, 2, 3])  # noqa: E731 ; ||grad|| = 4
    fn = tf.function(lambda r, f, s: losses.gradient_penalty(critic, r, f, s))
    x = tf.zeros((2, 2, 2, 1))
    assert float(fn(x, x, SEED)) == pytest.approx((np.sqrt(16 + 1e-10) - 1.0) ** 2,
                                                  rel=1e-6)


def test_vae_elbo_loss_golden():
    logits = np.array([[[[2.0], [-1.0]], [[0.5], [-3.0]]],
                       [[[0.0], [1.0]], [[-0.5], [4.0]]]], np.float64)
    targets = np.array([[[[1.0], [0.0]], [[1.0], [0.0]]],
                        [[[0.3], [1.0]], [[0.0], [1.0]]]])
    mean = np.array([[0.5, -1.0], [0.0, 2.0]])
    logvar = np.array([[0.0, -0.5], [1.0, 0.2]])
    prob = 1.0 / (1.0 + np.exp(-logits))
    nll = -(targets * np.log(prob) + (1 - targets) * np.log(1 - prob))
    want_recon = nll.reshape(2, -1).sum(axis=1).mean()
    want_kl = (0.5 * (np.exp(logvar) + mean ** 2 - 1 - logvar).sum(axis=1)).mean()
    loss, parts = losses.vae_elbo_loss(logits, targets, mean, logvar, beta=0.5)
    assert float(parts["reconstruction"]) == pytest.approx(want_recon, rel=1e-12)
    assert float(parts["kl"]) == pytest.approx(want_kl, rel=1e-12)
    assert float(loss) == pytest.approx(want_recon + 0.5 * want_kl, rel=1e-12)
    # The KL of the prior to itself is 0.
    _, parts = losses.vae_elbo_loss(logits, targets, np.zeros((2, 2)), np.zeros((2, 2)))
    assert float(parts["kl"]) == 0.0
