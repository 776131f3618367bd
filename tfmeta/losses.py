"""GAN and VAE losses: pure functions of logits (TF-GAN's naming, `<family>_<role>_loss`).

All GAN losses take critic/discriminator *logits* of any shape whose first axis is the
batch (typically [N, 1]) and return a scalar (mean over every element). Pairs by family
are in `GAN_LOSSES`; the WGAN-GP family additionally needs `gradient_penalty` added to
the critic loss (times its weight, 10 in the paper).

References
  Wasserstein GAN: Arjovsky et al. 2017, arXiv:1701.07875.
  WGAN-GP:         Gulrajani et al. 2017, arXiv:1704.00028.
  Hinge loss:      Lim & Ye 2017, arXiv:1705.02894; Miyato et al. 2018, arXiv:1802.05957.
  Non-saturating:  Goodfellow et al. 2014, arXiv:1406.2661 (sec. 3).
  VAE ELBO:        Kingma & Welling 2013, arXiv:1312.6114; beta-VAE: Higgins et al. 2017.
"""

import tensorflow as tf

__all__ = [
    "wasserstein_generator_loss", "wasserstein_discriminator_loss", "gradient_penalty",
    "hinge_generator_loss", "hinge_discriminator_loss",
    "nonsaturating_generator_loss", "nonsaturating_discriminator_loss",
    "vae_elbo_loss", "gaussian_kl", "gaussian_blur", "warp_elbo_terms", "warp_elbo_loss",
    "warp_regularizer", "GAN_LOSSES",
    "WARP_BLUR_SIGMAS", "WARP_PIXEL_SIGMA",
]


def _mean(x):
    return tf.reduce_mean(tf.convert_to_tensor(x))


# ----------------------------------------------------------------------------- Wasserstein

def wasserstein_generator_loss(fake_logits):
    """-E[D(G(z))]. fake_logits: float [N, ...]. Returns a scalar (arXiv:1701.07875)."""
    return -_mean(fake_logits)


def wasserstein_discriminator_loss(real_logits, fake_logits):
    """E[D(G(z))] - E[D(x)]: the critic's negated Wasserstein estimate (arXiv:1701.07875).

    real_logits, fake_logits: float [N, ...] and [M, ...]. Returns a scalar.
    """
    return _mean(fake_logits) - _mean(real_logits)


def gradient_penalty(critic_fn, real, fake, seed, epsilon=1e-10, target=1.0):
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - target)^2] (Gulrajani et al. 2017).

    x_hat = alpha * real + (1 - alpha) * fake with alpha ~ U(0, 1) drawn once *per sample*
    (stateless, from `seed`) and broadcast over that sample's pixels. The norm is taken
    per sample over *all* non-batch axes (height, width and channels), not per channel.

    Args:
      critic_fn: callable images [N, H, W, C] -> logits [N, 1] (or [N]). Must treat
        samples independently (no batch norm): then the gradient of the summed logits
        w.r.t. x_hat is each sample's own gradient. Any callable works, e.g.
        `lambda x: critic.stateless_call(params, non_trainable, x)[0]` for fast weights.
      real, fake: float [N, ...] of the same shape and dtype.
      seed: int32/int64 [2], stateless RNG seed for alpha.
      epsilon: added under the square root (see below).
      target: the desired gradient norm (1 in the paper).

    Returns:
      Scalar penalty (unweighted: multiply by lambda, 10 in the paper). Differentiable
      w.r.t. the critic's parameters (second order: the inner gradient is recorded by
      any enclosing tape).
    """
    real = tf.convert_to_tensor(real)
    fake = tf.convert_to_tensor(fake, dtype=real.dtype)
    batch = tf.shape(real)[0]
    rank = real.shape.rank
    alpha_shape = tf.concat([[batch], tf.ones([rank - 1], tf.int32)], axis=0)
    alpha = tf.random.stateless_uniform(alpha_shape, seed, dtype=real.dtype)
    interpolates = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        # Samples are independent, so d(sum of logits)/d x_hat_i = d logit_i / d x_hat_i.
        summed_logits = tf.reduce_sum(critic_fn(interpolates))
    grads = tape.gradient(summed_logits, interpolates)
    squared_norms = tf.reduce_sum(tf.square(grads), axis=list(range(1, rank)))
    # epsilon goes *inside* the sqrt: d sqrt(s)/ds = 1/(2 sqrt(s)) is infinite at s = 0,
    # so a zero input gradient (a locally flat critic, e.g. all ReLUs off) would turn
    # the second-order gradient into NaN; sqrt(s + eps) keeps it finite.
    norms = tf.sqrt(squared_norms + epsilon)
    return tf.reduce_mean(tf.square(norms - target))


# -------------------------------------------------------------------------------- hinge

def hinge_generator_loss(fake_logits):
    """-E[D(G(z))] (arXiv:1705.02894). fake_logits: float [N, ...]. Returns a scalar."""
    return -_mean(fake_logits)


def hinge_discriminator_loss(real_logits, fake_logits):
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (arXiv:1705.02894). Returns a scalar."""
    return _mean(tf.nn.relu(1.0 - real_logits)) + _mean(tf.nn.relu(1.0 + fake_logits))


# ----------------------------------------------------------------------- non-saturating

def nonsaturating_generator_loss(fake_logits):
    """-E[log sigmoid(D(G(z)))] = E[softplus(-logits)] (arXiv:1406.2661, sec. 3).

    softplus is evaluated stably for large |logits| (no log(sigmoid) underflow).
    """
    return _mean(tf.nn.softplus(-tf.convert_to_tensor(fake_logits)))


def nonsaturating_discriminator_loss(real_logits, fake_logits):
    """-E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))]
    = E[softplus(-real)] + E[softplus(fake)] (arXiv:1406.2661). Returns a scalar."""
    return (_mean(tf.nn.softplus(-tf.convert_to_tensor(real_logits)))
            + _mean(tf.nn.softplus(tf.convert_to_tensor(fake_logits))))


# ---------------------------------------------------------------------------------- VAE

def vae_elbo_loss(recon_logits, targets01, mean, logvar, beta=1.0):
    """Negative ELBO with Bernoulli pixels and a diagonal-Gaussian posterior.

    loss = E_batch[ -sum_pixels log Bernoulli(t | sigmoid(l)) + beta * KL(q(z|x) || N(0,I)) ]
    with KL = 0.5 * sum_j (exp(logvar_j) + mean_j^2 - 1 - logvar_j) (Kingma & Welling
    2013, appendix B; beta-VAE for beta != 1).

    Args:
      recon_logits: float [N, H, W, C] Bernoulli logits.
      targets01: float [N, H, W, C] in [0, 1] (grey levels are allowed: the cross entropy
        is then the continuous relaxation used for MNIST/Omniglot).
      mean, logvar: float [N, latent_dim].
      beta: weight of the KL term.

    Returns:
      (loss scalar, {"reconstruction": scalar, "kl": scalar}), all batch means (nats).
    """
    recon_logits = tf.convert_to_tensor(recon_logits)
    targets01 = tf.cast(targets01, recon_logits.dtype)
    rank = recon_logits.shape.rank
    # Stable -log p: max(l, 0) - l t + log(1 + exp(-|l|)).
    nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets01, logits=recon_logits)
    reconstruction = tf.reduce_mean(tf.reduce_sum(nll, axis=list(range(1, rank))))
    kl = tf.reduce_mean(gaussian_kl(mean, logvar))
    return reconstruction + beta * kl, {"reconstruction": reconstruction, "kl": kl}


def gaussian_kl(mean, logvar, prior_mean=None, prior_logvar=None):
    """KL(N(mean, diag(exp(logvar))) || N(prior_mean, diag(exp(prior_logvar)))) per
    sample, [N] (nats); the prior defaults to N(0, I)."""
    if prior_mean is None:
        return 0.5 * tf.reduce_sum(tf.exp(logvar) + tf.square(mean) - 1.0 - logvar, axis=-1)
    return 0.5 * tf.reduce_sum(
        prior_logvar - logvar - 1.0
        + (tf.exp(logvar) + tf.square(mean - prior_mean)) * tf.exp(-prior_logvar), axis=-1)


# Scales of the warp reconstruction: raw pixels, then Gaussian blurs of 1 and 2 px. The
# blurred terms give the warp a gradient when strokes of two drawings do not overlap
# (a 1-px bilinear sampler alone sees only its immediate neighbours), as the smoothed
# image losses of registration networks do.
WARP_BLUR_SIGMAS = (0.0, 1.0, 2.0)
# Standard deviation of the Gaussian pixel likelihood of the warp ELBO (ink in [0, 1]).
WARP_PIXEL_SIGMA = 0.1


def gaussian_blur(images, sigma):
    """Separable Gaussian blur (kernel radius 3 sigma, zero padding) of [N, H, W, C]."""
    if sigma <= 0:
        return images
    radius = int(3 * sigma + 0.5)
    offsets = tf.range(-radius, radius + 1, dtype=images.dtype)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = images.shape[-1]
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(images, rows, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "SAME")


def warp_elbo_terms(warped, targets, mean, logvar, blur_sigmas=WARP_BLUR_SIGMAS,
                    pixel_sigma=WARP_PIXEL_SIGMA, prior_mean=None, prior_logvar=None):
    """Per-pair terms of the negative warp ELBO (see `warp_elbo_loss`).

    Args:
      warped, targets: float [N, H, W, C] in [-1, 1].
      mean, logvar: float [N, latent_dim] of the posterior.
      prior_mean, prior_logvar: of a learned conditional prior (default N(0, I)).

    Returns:
      (reconstruction [N], kl [N]) in nats.
    """
    warped = tf.convert_to_tensor(warped)
    diff = (warped - tf.cast(targets, warped.dtype)) / 2.0
    reconstruction = 0.0
    for sigma in blur_sigmas:
        blurred = gaussian_blur(diff, sigma)
        reconstruction += tf.reduce_sum(tf.square(blurred), axis=[1, 2, 3])
    reconstruction = reconstruction / (2.0 * pixel_sigma ** 2)
    return reconstruction, gaussian_kl(mean, logvar, prior_mean, prior_logvar)


def warp_elbo_loss(warped, targets, mean, logvar, beta=1.0, blur_sigmas=WARP_BLUR_SIGMAS,
                   pixel_sigma=WARP_PIXEL_SIGMA, prior_mean=None, prior_logvar=None):
    """Negative ELBO of a warp VAE (tfmeta.models.warp) on pairs (source -> target).

    loss = E_batch[ sum_{sigma in blur_sigmas} sum_pixels (G_sigma * (w - t))^2
                    / (2 pixel_sigma^2) + beta * KL(q(z|s,t) || p(z|s)) ]
    with w, t the warped source and the target as ink in [0, 1] and G_sigma a Gaussian
    blur (identity for sigma = 0): a Gaussian likelihood of the image and of its blurred
    copies, up to constants.

    Args:
      warped, targets: float [N, H, W, C] in [-1, 1].
      mean, logvar: float [N, latent_dim] of the posterior.
      prior_mean, prior_logvar: of a learned conditional prior (default N(0, I)).

    Returns:
      (loss scalar, {"reconstruction", "kl"}), batch means (nats).
    """
    reconstruction, kl = warp_elbo_terms(warped, targets, mean, logvar, blur_sigmas,
                                         pixel_sigma, prior_mean, prior_logvar)
    reconstruction, kl = tf.reduce_mean(reconstruction), tf.reduce_mean(kl)
    return reconstruction + beta * kl, {"reconstruction": reconstruction, "kl": kl}


def warp_regularizer(flow, source, warped, smoothness=0.0, ink=0.0):
    """Penalties that keep a warp a plausible re-drawing, per-sample means summed.

    Intensity losses reward a warp that *erases* strokes the target lacks (compressing
    them until bilinear sampling loses their ink) instead of moving them; these terms
    price that:
      smoothness * sum_pixels ||grad flow||^2   (bending energy of the displacement,
        forward differences; translations are free, local squeezes are not);
      ink * ((sum warped ink - sum source ink) / sum source ink)^2  (relative change of
        the amount of ink; ink in [0, 1]).

    Args:
      flow: [N, H, W, 2] displacement in pixels; source, warped: [N, H, W, C] in [-1, 1].
    Returns: ({"smoothness": scalar, "ink_change": scalar}, weighted sum scalar).
    """
    d_rows = flow[:, 1:] - flow[:, :-1]
    d_cols = flow[:, :, 1:] - flow[:, :, :-1]
    bending = tf.reduce_mean(tf.reduce_sum(tf.square(d_rows), axis=[1, 2, 3])
                             + tf.reduce_sum(tf.square(d_cols), axis=[1, 2, 3]))
    source_ink = tf.reduce_sum((source + 1.0) / 2.0, axis=[1, 2, 3])
    warped_ink = tf.reduce_sum((warped + 1.0) / 2.0, axis=[1, 2, 3])
    change = tf.reduce_mean(tf.square((warped_ink - source_ink)
                                      / tf.maximum(source_ink, 1.0)))
    return ({"smoothness": bending, "ink_change": change},
            smoothness * bending + ink * change)


# Family -> (generator_loss(fake_logits), discriminator_loss(real_logits, fake_logits)).
# "wgan_gp" critics also add weight * gradient_penalty(...).
GAN_LOSSES = {
    "wgan_gp": (wasserstein_generator_loss, wasserstein_discriminator_loss),
    "hinge": (hinge_generator_loss, hinge_discriminator_loss),
    "nonsaturating": (nonsaturating_generator_loss, nonsaturating_discriminator_loss),
}
