"""Fitted priors (tfmeta.models.fitted_prior, tfmeta.generation.fit_prior): the mixture's
density against numpy, its samples against the mixture's moments, the fit against the
learned diagonal prior, and the config's checks."""

import numpy as np
import pytest
import tensorflow as tf

from fakes import fake_classes
from tfmeta import config as cfg
from tfmeta import generation
from tfmeta.errors import ConfigError
from tfmeta.models.fitted_prior import FittedPrior, mirrored_pairs, truncated_normal


def _random_prior(seed=0, feature_dim=6, latent_dim=3, components=4):
    """A FittedPrior with large random weights (components far apart) and statistics."""
    prior = FittedPrior(feature_dim, latent_dim, components=components, hidden=8)
    rng = np.random.default_rng(seed)
    for variable in prior.trainable_variables:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))
    prior.set_normalization(rng.normal(size=feature_dim), rng.uniform(0.5, 2.0, feature_dim))
    return prior, rng


def _numpy_mixture_log_prob(logits, means, chol, z):
    """log sum_m softmax(logits)_m N(z; means_m, L_m L_m^T), written out with numpy."""
    out = []
    for n in range(z.shape[0]):
        terms = []
        log_weights = logits[n] - np.log(np.sum(np.exp(logits[n])))
        for m in range(logits.shape[1]):
            cov = chol[n, m] @ chol[n, m].T
            diff = z[n] - means[n, m]
            _, log_det = np.linalg.slogdet(cov)
            terms.append(log_weights[m] - 0.5 * (diff @ np.linalg.solve(cov, diff) + log_det
                                                 + len(diff) * np.log(2 * np.pi)))
        out.append(np.log(np.sum(np.exp(np.array(terms) - max(terms)))) + max(terms))
    return np.array(out)


def test_log_prob_is_the_mixture_density_of_its_components():
    prior, rng = _random_prior()
    features = rng.normal(size=(5, 6)).astype(np.float32)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    logits, means, chol = (t.numpy().astype(np.float64) for t in prior.mixture(features))
    # Cholesky factors: lower triangular with a diagonal above the floor.
    assert np.all(np.triu(chol, 1) == 0) and np.all(np.diagonal(chol, 0, 2, 3) > prior.min_scale)
    np.testing.assert_allclose(prior.log_prob(features, z).numpy(),
                               _numpy_mixture_log_prob(logits, means, chol, z), rtol=1e-4)
    # The stored statistics standardise the features: the same prior without them, fed
    # standardised features, is the same mixture.
    mean, scale = prior.feature_mean.numpy(), prior.feature_scale.numpy()
    standardised = (features - mean) / scale
    prior.set_normalization(np.zeros(6), np.ones(6))
    np.testing.assert_allclose(prior.mixture(standardised)[1].numpy(), means, rtol=1e-4,
                               atol=1e-5)


def test_samples_follow_the_mixture_and_the_temperature_scales_each_component():
    prior, rng = _random_prior(seed=1, components=2)
    features = np.repeat(rng.normal(size=(1, 6)).astype(np.float32), 40000, axis=0)
    logits, means, chol = (t.numpy()[0].astype(np.float64) for t in prior.mixture(features[:1]))
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    seed = tf.constant([3, 4], tf.int64)
    for temperature in (1.0, 0.5):
        z = prior.sample(features, seed, temperature).numpy().astype(np.float64)
        covs = [temperature ** 2 * c @ c.T for c in chol]
        mean = weights @ means
        cov = sum(w * (c + np.outer(m, m)) for w, c, m in zip(weights, covs, means)) \
            - np.outer(mean, mean)
        scale = np.sqrt(np.diag(cov))
        # 40,000 draws: the moments are within a few standard errors.
        np.testing.assert_allclose(z.mean(0), mean, atol=0.05 * scale.max())
        np.testing.assert_allclose(np.cov(z.T), cov, atol=0.06 * np.outer(scale, scale).max())
    # Temperature 0: every draw is one of the component means, both components occur.
    z0 = prior.sample(features[:400], seed, 0.0).numpy()
    nearest = np.abs(z0[:, None] - means[None]).max(-1)
    assert np.all(nearest.min(1) < 1e-5) and len(set(nearest.argmin(1))) == 2
    # Stateless: the same seed gives the same codes, another seed others.
    np.testing.assert_array_equal(prior.sample(features[:8], seed).numpy(),
                                  prior.sample(features[:8], seed).numpy())
    assert not np.allclose(prior.sample(features[:8], seed).numpy(),
                           prior.sample(features[:8], tf.constant([3, 5], tf.int64)).numpy())


def test_truncated_normal_is_the_gaussian_inside_the_ball():
    """Radius 0 is the plain stateless draw; radius rho keeps every vector inside the
    ball, leaves the draws already inside untouched, and follows the truncated
    Gaussian's radial law (2-d: P(r < 1 | r < 2) = (1 - e^-1/2) / (1 - e^-2) = 0.455,
    E[r | r < 2] from the Rayleigh density); seeded."""
    seed = tf.constant([7, 2], tf.int64)
    plain = tf.random.stateless_normal([40000, 2], seed).numpy()
    np.testing.assert_array_equal(truncated_normal([40000, 2], seed, 0.0).numpy(), plain)
    cut = truncated_normal([40000, 2], seed, 2.0).numpy()
    radius = np.linalg.norm(cut, axis=1)
    assert radius.max() <= 2.0 + 1e-5
    inside = np.linalg.norm(plain, axis=1) <= 2.0
    assert 0.8 < inside.mean() < 0.9                         # 1 - e^-2 = 0.865 kept
    np.testing.assert_array_equal(cut[inside], plain[inside])
    assert np.mean(radius < 1.0) == pytest.approx(0.455, abs=0.01)
    r = np.linspace(0.0, 2.0, 200001)
    density = r * np.exp(-r ** 2 / 2)
    assert radius.mean() == pytest.approx(np.sum(r * density) / np.sum(density), abs=0.01)
    # The redraws are new directions, not the outside draws scaled in.
    outside = ~inside
    cosine = np.sum(cut[outside] * plain[outside], 1) / (radius[outside]
                                                         * np.linalg.norm(plain[outside], axis=1))
    assert np.mean(cosine > 0.999) < 0.1
    again = truncated_normal([40000, 2], seed, 2.0).numpy()
    np.testing.assert_array_equal(again, cut)
    other = truncated_normal([40000, 2], tf.constant([7, 3], tf.int64), 2.0).numpy()
    assert not np.allclose(other, cut)


def test_a_truncated_prior_sample_stays_within_rho_standard_deviations():
    prior, rng = _random_prior(seed=2, components=1)
    features = rng.normal(size=(2000, 6)).astype(np.float32)
    _, means, chol = (t.numpy()[:, 0].astype(np.float64) for t in prior.mixture(features))
    seed = tf.constant([1, 9], tf.int64)
    for temperature in (1.0, 1.8):
        z = prior.sample(features, seed, temperature, truncation=1.5).numpy()
        white = np.linalg.solve(chol, (z - means)[..., None])[..., 0] / temperature
        norms = np.linalg.norm(white, axis=1)
        assert norms.max() <= 1.5 + 1e-3 and norms.mean() > 1.0      # 3-d: mean ~1.08
        plain = prior.sample(features, seed, temperature).numpy()
        white_plain = np.linalg.solve(chol, (plain - means)[..., None])[..., 0] / temperature
        assert np.linalg.norm(white_plain, axis=1).max() > 2.5
    assert generation.parse_sampling("prior_truncation=2") == {"prior_truncation": 2.0}


def test_antithetic_codes_mirror_each_other_about_their_component_mean():
    """antithetic=True: two codes per row, mean +- T L eps of one component; the first
    of each pair is the plain draw of the same seed."""
    prior, rng = _random_prior(seed=3, components=3)
    features = rng.normal(size=(7, 6)).astype(np.float32)
    seed = tf.constant([4, 2], tf.int64)
    plain = prior.sample(features, seed, 1.8, truncation=2.0).numpy()
    pairs = prior.sample(features, seed, 1.8, truncation=2.0, antithetic=True).numpy()
    assert pairs.shape == (14, 3)
    np.testing.assert_allclose(pairs[0::2], plain, rtol=1e-5, atol=1e-6)
    logits, means, _ = (t.numpy() for t in prior.mixture(features))
    centre = (pairs[0::2] + pairs[1::2]) / 2.0      # the picked component's mean
    nearest = np.abs(centre[:, None] - means).max(-1).min(1)
    assert nearest.max() < 1e-4 and not np.allclose(pairs[0::2], pairs[1::2])
    np.testing.assert_array_equal(mirrored_pairs(tf.constant([[1.0, -2.0], [3.0, 0.5]])),
                                  [[1.0, -2.0], [-1.0, 2.0], [3.0, 0.5], [-3.0, -0.5]])


def test_antithetic_warp_samples_share_a_source_and_mirror_their_noise(monkeypatch):
    """GenerativeModel with antithetic (learned prior): candidates 2i and 2i + 1 warp the
    same support with codes symmetric about the prior mean; an odd count works; the
    config refuses it outside "prior" sampling."""
    config = cfg.GenerationConfig(model="warp", preset="tiny_warp", context_dim=3,
                                  adapt_scope="context", conditional_prior=True,
                                  antithetic=True, prior_temperature=1.5,
                                  outer=cfg.OuterConfig(algorithm="fomaml")).validate()
    model = generation.GenerativeModel(config, seed=0)
    seen = {}

    def record(source, z, c):
        seen["source"], seen["z"], seen["c"] = source, z, c
        return (source, z) if c is None else (source, z, c)

    monkeypatch.setattr(model, "_warp_inputs", record)
    support = tf.constant(fake_classes().images_of(0)[:4].astype(np.float32) / 127.5 - 1.0)
    images, index = model._warp_candidates(5, tf.constant([1, 2], tf.int64), support)
    assert images.shape[0] == 5 and seen["z"].shape[0] == 5
    index = index.numpy()
    assert index[0] == index[1] and index[2] == index[3]
    mean, _ = model.warp.prior(seen["source"], seen["c"])
    centre = (seen["z"][0:4:2] + seen["z"][1:4:2]) / 2.0
    np.testing.assert_allclose(centre.numpy(), mean.numpy()[0:4:2], atol=1e-5)
    assert not np.allclose(seen["z"][0].numpy(), seen["z"][1].numpy())
    with pytest.raises(ConfigError, match="--antithetic needs"):
        cfg.GenerationConfig(model="warp", preset="tiny_warp", antithetic=True,
                             warp_sampling="pairs").validate()
    assert generation.parse_sampling("antithetic=true") == {"antithetic": True}


def _warp_model():
    config = cfg.GenerationConfig(model="warp", preset="tiny_warp", context_dim=3,
                                  adapt_scope="context", conditional_prior=True,
                                  outer=cfg.OuterConfig(algorithm="fomaml")).validate()
    return generation.GenerativeModel(config, seed=0)


def test_fit_prior_recovers_a_known_conditional_density(monkeypatch):
    """Codes z = A x + 0.1 eps given features x (a known conditional density): the fit
    gets within 0.4 nats of its entropy on held-out classes, far below the diagonal
    N(0, I) prior, keeps its best evaluation, and runs on a warp model's real pairs."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 50)
    x = rng.normal(size=(len(labels), 6)).astype(np.float32)
    a = rng.normal(size=(6, 2)).astype(np.float32)
    z = (x @ a + 0.1 * rng.normal(size=(len(labels), 2))).astype(np.float32)
    zeros = np.zeros_like(z)
    monkeypatch.setattr(generation, "_prior_fit_data",
                        lambda *args: [x, z, zeros, zeros, labels])
    model = _warp_model()
    logs = []
    prior, stats = generation.fit_prior(model, None, None, components=2, steps=1500,
                                        eval_every=250, learning_rate=2e-3, dropout=0.0, seed=1,
                                        log=logs.append)
    entropy = 2 * (0.5 * np.log(2 * np.pi * np.e) + np.log(0.1))        # -1.77 nats
    diagonal = np.mean(0.5 * np.sum(z ** 2 + np.log(2 * np.pi), 1))
    assert stats["held_out_nll"] < entropy + 0.4
    assert stats["diagonal_prior_held_out_nll"] == pytest.approx(diagonal, rel=0.2)
    held = [float(line.split("held_out_nll=")[1].split()[0]) for line in logs]
    assert len(held) == 6 and stats["held_out_nll"] == pytest.approx(min(held), abs=0.006)
    assert stats["held_out_classes"] == 3 and stats["classes"] == 40   # round(0.075 * 40)
    monkeypatch.undo()
    # The real pair data of a (tiny, untrained) warp model: one code per support/target
    # pair, features of the width the model's prior sees.
    features, codes, _, _, classes = generation._prior_fit_data(
        model, model.read_params(), fake_classes(), 3, 2, np.random.default_rng(0))
    assert features.shape == (6 * 2 * 17, model.warp.prior_feature_dim)
    assert codes.shape == (6 * 2 * 17, model.latent_dim)
    np.testing.assert_array_equal(np.bincount(classes), np.full(6, 34))


@pytest.mark.parametrize("fields, flag", [
    ({"model": "warp", "preset": "tiny_warp", "prior_components": -1}, "--prior_components"),
    ({"model": "gan", "preset": "tiny", "prior_components": 2}, "needs --model=warp"),
    ({"model": "warp", "preset": "tiny_warp", "prior_fit_steps": 0}, "--prior_fit_steps"),
    ({"model": "warp", "preset": "tiny_warp", "prior_truncation": -1.0}, "--prior_truncation"),
    ({"model": "gan", "preset": "tiny", "prior_truncation": 2.0},
     "--prior_truncation needs --model=warp"),
])
def test_config_checks_name_the_flag(fields, flag):
    with pytest.raises(ConfigError, match=flag):
        cfg.GenerationConfig(**fields).validate()
