"""A conditional mixture of full-covariance Gaussians p(z | features): fitted priors.

A warp generator (tfmeta.models.warp) learns its prior p(z | source, context) only
through the KL term of its ELBO, as a diagonal Gaussian. The codes that real pairs of
drawings need (the posterior means of q(z | s_i, s_j, c) on training characters) are
neither independent across dimensions nor Gaussian: on the headline checkpoint their
standardised residuals have covariance eigenvalues from 0.23 to 2.24, and a density
fitted to them afterwards explains held-out characters' codes 3.9 nats per code better
(25.5 vs 29.4) than the learned prior (docs/GENERATION_ATTEMPTS.md section 10).
Fitting a more expressive density to the latent codes of a trained model after training
is "ex-post density estimation" (Ghosh et al. 2020, arXiv:1903.12436; Dai & Wipf 2019's
two-stage VAE, arXiv:1903.05789); here it is conditional on what the learned prior sees.

`FittedPrior(feature_dim, latent_dim, components=M)`: features [N, F] (standardised with
stored statistics) -> a two-layer MLP -> M mixture weights, means [M, D] and lower-
triangular Cholesky factors [M, D, D] with a positive diagonal. `log_prob(features, z)`
and `sample(features, seed, temperature, truncation, antithetic)` (the temperature
scales each component's factor, like `prior_temperature` scales the learned prior's
standard deviation; `truncation` = rho > 0 draws the standard-normal noise inside the
ball of radius rho: `truncated_normal`; `antithetic` gives two mirrored codes per row:
`mirrored_pairs`).
`tfmeta.generation.fit_prior` trains it; weights and config live beside a run's
checkpoints (`fitted_prior.weights.h5`, `fitted_prior.json`).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfmeta.errors import ConfigError

__all__ = ["FittedPrior", "mirrored_pairs", "truncated_normal"]

_REDRAWS = 4


def truncated_normal(shape, seed, radius=0.0):
    """Standard-normal vectors (along the last axis of `shape`) inside a ball.

    radius = rho > 0: a vector whose norm exceeds rho is redrawn (up to 4 times, from
    seeds derived from `seed`), and one still outside after that is scaled onto the
    sphere of radius rho. With p the chance that one draw lands outside, a fraction p^5
    is scaled instead of redrawn: 1e-4 at p = 0.16 (rho 1.9 in 2-d, 2.6 in 4-d), 0.4%
    at rho 1.5 in 2-d (p = 0.32); otherwise the exact truncated Gaussian. The first
    draw is `tf.random.stateless_normal(shape, seed)`, so vectors already inside the
    ball, and every vector with radius 0 (off), equal the plain draw's. Stateless: the
    same seed gives the same vectors.

    Args:
      shape: 1-D int shape, last axis the vector's dimension.
      seed: int [2] (stateless seed).
      radius: python float >= 0.
    """
    seed = tf.cast(seed, tf.int64)
    eps = tf.random.stateless_normal(shape, seed)
    if not radius:
        return eps
    for i in range(_REDRAWS):
        fresh = tf.random.stateless_normal(
            shape, tf.random.experimental.stateless_fold_in(seed, i + 1))
        eps = tf.where(tf.norm(eps, axis=-1, keepdims=True) > radius, fresh, eps)
    norm = tf.norm(eps, axis=-1, keepdims=True)
    return eps * tf.minimum(1.0, radius / tf.maximum(norm, 1e-12))


def mirrored_pairs(eps):
    """[N, D] -> [2N, D]: each row followed by its negation (antithetic noise: the pair
    sits symmetrically about the distribution's centre, and each row alone keeps the
    standard-normal or truncated law)."""
    return tf.reshape(tf.stack([eps, -eps], 1), [-1, tf.shape(eps)[-1]])


class FittedPrior(keras.Model):
    """Mixture density network over z given prior features (see module docstring).

    Args:
      feature_dim: F, width of the features (`WarpGenerator.prior_feature_dim`).
      latent_dim: D, size of z.
      components: M, mixture components.
      hidden: width of the two hidden layers.
      dropout: input dropout while fitting (the features are 3,000+ wide and the
        characters few: without it the fit memorises training characters).
      init_scale: the Cholesky diagonal at initialisation (about the learned prior's
        standard deviation); `min_scale` its lower bound.
    """

    def __init__(self, feature_dim, latent_dim, components=8, hidden=256, dropout=0.2,
                 init_scale=1.5, min_scale=0.05, **kwargs):
        super().__init__(**kwargs)
        if min(int(feature_dim), int(latent_dim), int(components), int(hidden)) < 1 \
                or not 0 <= float(dropout) < 1 or not 0 < float(min_scale) < float(init_scale):
            raise ConfigError(
                "FittedPrior needs feature_dim, latent_dim, components, hidden >= 1, dropout "
                f"in [0, 1) and 0 < min_scale < init_scale; got {feature_dim!r}, "
                f"{latent_dim!r}, {components!r}, {hidden!r}, {dropout!r}, {min_scale!r}, "
                f"{init_scale!r}")
        self.feature_dim, self.latent_dim = int(feature_dim), int(latent_dim)
        self.components, self.hidden_width = int(components), int(hidden)
        self.dropout_rate = float(dropout)
        self.init_scale, self.min_scale = float(init_scale), float(min_scale)
        m, d = self.components, self.latent_dim
        self.feature_mean = self.add_weight(shape=(self.feature_dim,), initializer="zeros",
                                            trainable=False, name="feature_mean")
        self.feature_scale = self.add_weight(shape=(self.feature_dim,), initializer="ones",
                                             trainable=False, name="feature_scale")
        self.input_dropout = keras.layers.Dropout(self.dropout_rate)
        self.hidden_layers = [keras.layers.Dense(self.hidden_width, activation="silu",
                                                 name=f"hidden_{i}") for i in range(2)]
        # Near-zero read-out: every component starts as N(0, init_scale^2 I).
        self.readout = keras.layers.Dense(
            m * (1 + d + d * d), name="readout",
            kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3))
        width = self.feature_dim
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = self.hidden_width
        self.readout.build((None, width))
        self.built = True

    def set_normalization(self, mean, scale):
        """Stores the statistics that standardise the features (fitted on training data)."""
        self.feature_mean.assign(np.asarray(mean, np.float32))
        self.feature_scale.assign(np.asarray(scale, np.float32))

    def mixture(self, features, training=False):
        """(logits [N, M], means [N, M, D], Cholesky factors [N, M, D, D])."""
        m, d = self.components, self.latent_dim
        h = (tf.cast(features, tf.float32) - self.feature_mean) / self.feature_scale
        h = self.input_dropout(h, training=training)
        for layer in self.hidden_layers:
            h = layer(h)
        out = tf.reshape(self.readout(h), [-1, m, 1 + d + d * d])
        logits, means = out[..., 0], out[..., 1:1 + d]
        raw = tf.reshape(out[..., 1 + d:], [-1, m, d, d])
        # softplus(0) = log 2: the diagonal starts at init_scale.
        diag = self.min_scale + (self.init_scale - self.min_scale) / math.log(2.0) \
            * tf.nn.softplus(tf.linalg.diag_part(raw))
        chol = tf.linalg.set_diag(tf.linalg.band_part(raw, -1, 0), diag)
        return logits, means, chol

    def log_prob(self, features, z, training=False):
        """log p(z | features) [N] (nats)."""
        logits, means, chol = self.mixture(features, training=training)
        diff = tf.cast(z, tf.float32)[:, None, :] - means
        white = tf.linalg.triangular_solve(chol, diff[..., None], lower=True)[..., 0]
        log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), -1)
        component = (-0.5 * tf.reduce_sum(tf.square(white), -1) - log_det
                     - 0.5 * self.latent_dim * math.log(2.0 * math.pi))
        return tf.reduce_logsumexp(tf.nn.log_softmax(logits) + component, -1)

    def sample(self, features, seed, temperature=1.0, truncation=0.0, antithetic=False):
        """z [N, D]: a component drawn by its weight, then its mean + temperature * L eps,
        eps standard normal (inside the ball of radius `truncation` when > 0:
        `truncated_normal`). With `antithetic`, z [2N, D]: two codes per row, the
        component's mean +- temperature * L eps (`mirrored_pairs`), rows 2i and 2i + 1
        from row i. Stateless: `seed` int [2]."""
        logits, means, chol = self.mixture(features)
        n = tf.shape(logits)[0]
        seed = tf.cast(seed, tf.int64)
        pick = tf.random.stateless_categorical(logits, 1, seed)[:, 0]
        index = tf.stack([tf.range(n, dtype=pick.dtype), pick], 1)
        mean, factor = tf.gather_nd(means, index), tf.gather_nd(chol, index)
        eps = truncated_normal([n, self.latent_dim], tf.stack([seed[0], seed[1] + 1]),
                               truncation)
        if antithetic:
            mean, factor = tf.repeat(mean, 2, axis=0), tf.repeat(factor, 2, axis=0)
            eps = mirrored_pairs(eps)
        return mean + tf.cast(temperature, tf.float32) * tf.matmul(factor, eps[..., None])[..., 0]

    def get_config(self):
        return {"feature_dim": self.feature_dim, "latent_dim": self.latent_dim,
                "components": self.components, "hidden": self.hidden_width,
                "dropout": self.dropout_rate, "init_scale": self.init_scale,
                "min_scale": self.min_scale}
