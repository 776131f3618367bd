"""Convolutional variational autoencoder with Bernoulli pixels (Keras 3, subclassed).

Kingma & Welling 2013, arXiv:1312.6114: q(z|x) = N(mean, diag(exp(logvar))) from a conv
encoder, p(x|z) = Bernoulli(sigmoid(logits)) per pixel from a DCGAN-shaped decoder (the
`Generator` of `tfmeta.models.gan` with a linear output). Images are in [0, 1] (ink
probability). With `context_dim > 0` both encoder and decoder are conditioned on a
context vector (a conditional VAE; e.g. the `SupportEncoder` output). Train with
`tfmeta.losses.vae_elbo_loss`.

Randomness is explicit: `call(..., seed=[2] int)` draws eps with a stateless op; with
`seed=None` it decodes the posterior mean (deterministic reconstruction).
"""

import keras
import tensorflow as tf
from keras import ops

from tfmeta.errors import ConfigError
from tfmeta.models.gan import (UPSAMPLING_STAGES, GenerativeShapes, Generator, activate,
                               split_conditional_inputs, validate_image_shape)

__all__ = ["VAE"]


@keras.saving.register_keras_serializable(package="tfmeta")
class VAE(GenerativeShapes, keras.Model):
    """Conv encoder -> (mean, logvar) [N, latent_dim]; decoder -> logits [N, H, W, C].

    `call(x or (x, context), seed=None)` returns {"recon_logits": [N, H, W, C],
    "mean": [N, latent_dim], "logvar": [N, latent_dim]}, all in the compute dtype; it
    works with `model.stateless_call(trainable, non_trainable, x, seed=seed)`.

    Args:
      image_shape: (H, W, C), H = W in {28, 32, 64}, C in {1, 3}.
      latent_dim: size of z.
      context_dim: size of the conditioning vector; 0 = unconditional.
      base_filters: f; encoder widths f, 2f, ... (stride 2, 4x4, ReLU); decoder as
        `Generator(base_filters=f)`.
      norm: MetaNorm mode of the decoder (default "none": per-sample, no batch coupling).
      activation, blocks, residual: hidden activation (encoder and decoder), extra
        decoder depth and its skip connections, as for `Generator`.
    """

    def __init__(self, image_shape=(28, 28, 1), latent_dim=32, context_dim=0,
                 base_filters=32, norm="none", activation="relu", blocks=0, residual=False,
                 **kwargs):
        super().__init__(**kwargs)
        self._image_shape = validate_image_shape(image_shape)
        if int(latent_dim) < 1 or int(base_filters) < 1 or int(context_dim) < 0:
            raise ConfigError(
                "VAE needs latent_dim >= 1, base_filters >= 1, context_dim >= 0; got "
                f"{latent_dim!r}, {base_filters!r}, {context_dim!r}.")
        self._latent_dim = int(latent_dim)
        self._context_dim = int(context_dim)
        self.base_filters = int(base_filters)
        self.norm = norm
        self.activation, self.blocks, self.residual = activation, int(blocks), bool(residual)
        dt = self.dtype_policy
        stages = UPSAMPLING_STAGES[self._image_shape[0]]
        self._widths = [self.base_filters * 2 ** i for i in range(stages)]
        self.enc_convs = [keras.layers.Conv2D(w, 4, strides=2, padding="same", dtype=dt,
                                              name=f"enc_conv_{i}")
                          for i, w in enumerate(self._widths)]
        self.enc_out = keras.layers.Dense(2 * self._latent_dim, dtype=dt, name="enc_out")
        self.decoder = Generator(self._image_shape, self._latent_dim, self._context_dim,
                                 self.base_filters, norm=norm, output_activation="linear",
                                 activation=activation, blocks=blocks, residual=residual,
                                 dtype=dt, name="decoder")
        self.build()

    def build(self, input_shape=None):
        """Builds every sublayer from the config (input_shape is implied and ignored)."""
        size, channels = self._image_shape[0], self._image_shape[2]
        for conv, width in zip(self.enc_convs, self._widths):
            conv.build((None, size, size, channels))
            size, channels = (size + 1) // 2, width
        self.enc_out.build((None, size * size * channels + self._context_dim))
        self.built = True

    def _context_args(self, context, owner):
        if (context is None) != (self._context_dim == 0):
            raise ConfigError(f"VAE.{owner}: built with context_dim={self._context_dim}; "
                              "pass a context exactly when context_dim > 0.")

    def encode(self, images, context=None):
        """images [N, H, W, C] in [0, 1] (+ context [N, context_dim]) -> (mean, logvar)."""
        self._context_args(context, "encode")
        h = images
        for conv in self.enc_convs:
            h = activate(conv(h), self.activation)
        h = ops.reshape(h, (ops.shape(h)[0], -1))
        if context is not None:
            h = ops.concatenate([h, ops.cast(context, h.dtype)], axis=-1)
        mean, logvar = ops.split(self.enc_out(h), 2, axis=-1)
        return mean, logvar

    def decode(self, z, context=None):
        """z [N, latent_dim] (+ context) -> Bernoulli logits [N, H, W, C]."""
        self._context_args(context, "decode")
        return self.decoder(z if context is None else (z, context))

    def sample(self, num_samples, seed, context=None):
        """Draws z ~ N(0, I) with stateless `seed` ([2] int); returns pixel probabilities."""
        z = tf.random.stateless_normal((num_samples, self._latent_dim), seed,
                                       dtype=self.compute_dtype)
        if context is not None and len(context.shape) == 1:
            context = ops.broadcast_to(context[None, :], (num_samples, self._context_dim))
        return ops.sigmoid(self.decode(z, context))

    def call(self, inputs, seed=None, training=None):
        images, context = split_conditional_inputs(inputs, self._context_dim, "VAE")
        mean, logvar = self.encode(images, context)
        if seed is None:
            z = mean
        else:
            # Reparameterisation: z = mean + sigma * eps keeps z differentiable in mean
            # and logvar (Kingma & Welling 2013, sec. 2.4).
            eps = tf.random.stateless_normal(ops.shape(mean), seed, dtype=mean.dtype)
            z = mean + ops.exp(0.5 * logvar) * eps
        return {"recon_logits": self.decode(z, context), "mean": mean, "logvar": logvar}

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self._image_shape),
                "latent_dim": self._latent_dim, "context_dim": self._context_dim,
                "base_filters": self.base_filters, "norm": self.norm,
                "activation": self.activation, "blocks": self.blocks,
                "residual": self.residual}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
