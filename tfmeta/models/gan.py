"""DCGAN-style generator and critic for few-shot image generation (Keras 3, subclassed).

Architecture after DCGAN (Radford et al. 2015, arXiv:1511.06434), used as a WGAN-GP pair
(Gulrajani et al. 2017, arXiv:1704.00028) in FIGR-style meta-learning (Clouâtre & Demers
2019, arXiv:1901.02199).

* `Generator`: z [N, latent_dim] (+ optional context [N, context_dim]) -> Dense -> reshape
  to [N, s, s, 2^u f] -> u stride-2 `Conv2DTranspose` blocks (MetaNorm + ReLU) -> 3x3 conv
  -> tanh, images in [-1, 1]. s = H / 2^u with u = 2 for 28/32 px and u = 3 for 64 px.
  Conditioning (when `context_dim > 0`): the context is concatenated to z *and* modulates
  every normalised feature map FiLM-style (Perez et al. 2017, arXiv:1709.07871),
  h <- h * (1 + gamma(c)) + beta(c), with gamma/beta linear in c and initialised to zero
  (the block starts as the unconditional one). The second path lets a support-set
  embedding steer all resolutions, not only the first projection.
* `Discriminator`: strided convs + LeakyReLU(0.2) -> logits [N, 1]. No batch
  normalisation (the WGAN-GP penalty is a per-sample gradient; batch statistics couple
  samples). Optional per-sample MetaNorm ("layer"/"instance"), optional spectral
  normalisation (Miyato et al. 2018, arXiv:1802.05957) and optional projection
  conditioning (Miyato & Koyama 2018, arXiv:1802.05637).

Norms are `tfmeta.models.layers.MetaNorm` (exact second-order gradients), never Keras
BatchNormalization. All layers are created and built in `__init__` (shapes follow from
the config), so `trainable_variables` exist at once for `stateless_call`.
"""

import keras
from keras import ops

from tfmeta.errors import ConfigError
from tfmeta.models.layers import MetaNorm, NORM_MODES

__all__ = ["ACTIVATIONS", "Generator", "Discriminator", "SpectralConv2D", "SpectralDense",
           "UPSAMPLING_STAGES", "split_conditional_inputs", "validate_image_shape"]

# Image height -> number of stride-2 stages between the s x s seed and the image.
UPSAMPLING_STAGES = {28: 2, 32: 2, 64: 3}
_LEAK = 0.2


ACTIVATIONS = ("relu", "leaky_relu", "elu", "swish")


def activate(h, activation):
    """One of ACTIVATIONS (leaky_relu uses slope 0.2, as the critic)."""
    if activation == "leaky_relu":
        return ops.leaky_relu(h, _LEAK)
    return {"relu": ops.relu, "elu": ops.elu, "swish": ops.silu}[activation](h)


def _check_depth(activation, blocks, residual):
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
    if int(blocks) < 0:
        raise ConfigError(f"blocks (extra conv blocks per stage) must be >= 0, got {blocks!r}.")
    return activation, int(blocks), bool(residual)


def validate_image_shape(image_shape, arg="image_shape"):
    """Returns `image_shape` as a tuple (H, W, C); raises ConfigError if unsupported."""
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"{arg} must be (height, width, channels), got {image_shape!r}")
    if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in UPSAMPLING_STAGES \
            or shape[2] not in (1, 3):
        raise ConfigError(
            f"{arg}={image_shape!r} is not supported: use square images of "
            f"{sorted(UPSAMPLING_STAGES)} pixels with 1 or 3 channels.")
    return shape


def split_conditional_inputs(inputs, context_dim, owner):
    """Splits `x` or `(x, context)` and checks it against `context_dim`.

    A rank-1 context [context_dim] is broadcast over the batch of `x`. Returns (x, context
    or None).
    """
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 2:
            raise ConfigError(f"{owner} takes x or (x, context), got {len(inputs)} inputs.")
        x, context = inputs
        if context_dim == 0:
            raise ConfigError(f"{owner} was built with context_dim=0 but got a context; "
                              f"build it with context_dim > 0 or pass x alone.")
        if len(context.shape) == 1:
            context = ops.broadcast_to(context[None, :], (ops.shape(x)[0], context_dim))
        return x, context
    if context_dim:
        raise ConfigError(f"{owner} was built with context_dim={context_dim}: call it "
                          f"with (x, context [N, {context_dim}]).")
    return inputs, None


def _check_positive(**values):
    for name, value in values.items():
        if int(value) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


# ---------------------------------------------------------------- spectral normalisation

def _spectral_normalise(layer, kernel, training):
    """kernel / sigma(kernel), sigma by power iteration (Miyato et al. 2018).

    Unlike `keras.layers.SpectralNormalization`, the kernel variable is never assigned:
    the normalised kernel is computed in every forward pass (training or not), so
    functional fast weights in `stateless_call` are normalised too and sampling sees the
    same function as training. Only the power-iteration vector u (non-trainable) is
    persisted, and only when `training`.
    """
    weights = ops.reshape(kernel, (-1, kernel.shape[-1]))
    u = ops.cast(layer.vector_u, weights.dtype)
    for _ in range(layer.power_iterations):
        v = ops.matmul(u, ops.transpose(weights))
        v = v / ops.sqrt(ops.sum(ops.square(v)) + 1e-12)
        u = ops.matmul(v, weights)
        u = u / ops.sqrt(ops.sum(ops.square(u)) + 1e-12)
    # The singular vectors are treated as constants (as in the paper).
    u = ops.stop_gradient(u)
    v = ops.stop_gradient(v)
    sigma = ops.sum(ops.matmul(v, weights) * u)
    if training:
        layer.vector_u.assign(ops.cast(u, layer.vector_u.dtype))
    return kernel / sigma


class _SpectralBase(keras.layers.Layer):
    def __init__(self, units, power_iterations=1, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.power_iterations = int(power_iterations)
        self.use_bias = bool(use_bias)

    def _add_weights(self, kernel_shape):
        self.kernel = self.add_weight(shape=kernel_shape, initializer="glorot_uniform",
                                      name="kernel")
        self.bias = (self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
                     if self.use_bias else None)
        self.vector_u = self.add_weight(
            shape=(1, self.units), initializer=keras.initializers.RandomNormal(seed=0),
            trainable=False, name="vector_u")

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "power_iterations": self.power_iterations, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="tfmeta")
class SpectralConv2D(_SpectralBase):
    """Conv2D with a spectrally normalised kernel. [N, H, W, Cin] -> [N, H', W', units]."""

    def __init__(self, units, kernel_size=3, strides=1, padding="same", **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding

    def build(self, input_shape):
        self._add_weights((self.kernel_size, self.kernel_size, input_shape[-1], self.units))

    def call(self, x, training=False):
        kernel = _spectral_normalise(self, self.kernel, training)
        y = ops.conv(x, kernel, strides=self.strides, padding=self.padding)
        return y + self.bias if self.use_bias else y

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


@keras.saving.register_keras_serializable(package="tfmeta")
class SpectralDense(_SpectralBase):
    """Dense with a spectrally normalised kernel. [N, Din] -> [N, units]."""

    def build(self, input_shape):
        self._add_weights((input_shape[-1], self.units))

    def call(self, x, training=False):
        y = ops.matmul(x, _spectral_normalise(self, self.kernel, training))
        return y + self.bias if self.use_bias else y


# ---------------------------------------------------------------------------- generator

class GenerativeShapes:
    """Read-only `image_shape`, `latent_dim`, `context_dim` of Generator, VAE and
    WarpGenerator."""

    @property
    def image_shape(self):
        """(H, W, C) of the images."""
        return self._image_shape

    @property
    def latent_dim(self):
        """Size of the latent code z."""
        return self._latent_dim

    @property
    def context_dim(self):
        """Size of the support-set context (0: none)."""
        return self._context_dim


@keras.saving.register_keras_serializable(package="tfmeta")
class Generator(GenerativeShapes, keras.Model):
    """DCGAN generator, optionally conditioned on a context vector (see module doc).

    Call: `G(z)` or `G((z, context))`; z float [N, latent_dim], context float
    [N, context_dim] (or [context_dim], broadcast). Returns images [N, H, W, C] in [-1, 1]
    (`output_activation="tanh"`) or unbounded logits (`"linear"`, used by the VAE).

    Args:
      image_shape: (H, W, C), H = W in {28, 32, 64}, C in {1, 3}.
      latent_dim: size of z.
      context_dim: size of the conditioning vector; 0 = unconditional.
      base_filters: f; the seed feature map has 2^u f channels, halved per stage.
      norm: MetaNorm mode after the projection and each upsampling ("batch" = statistics
        of the current call, transductive at meta-test; see `tfmeta.models.layers`).
      kernel_size: kernel of the transposed convolutions.
      output_activation: "tanh" or "linear".
      activation: hidden activation, one of ACTIVATIONS (default "relu", DCGAN's).
      blocks: depth: extra 3x3 conv + norm + activation blocks after each upsampling.
      residual: the extra blocks are residual (`h + block(h)`): skip connections.
    """

    def __init__(self, image_shape=(28, 28, 1), latent_dim=64, context_dim=0,
                 base_filters=64, norm="batch", kernel_size=4, output_activation="tanh",
                 activation="relu", blocks=0, residual=False, **kwargs):
        super().__init__(**kwargs)
        self._image_shape = validate_image_shape(image_shape)
        _check_positive(latent_dim=latent_dim, base_filters=base_filters,
                        kernel_size=kernel_size)
        if int(context_dim) < 0:
            raise ConfigError(f"context_dim must be >= 0, got {context_dim!r}.")
        if norm not in NORM_MODES:
            raise ConfigError(f"Generator norm must be one of {NORM_MODES}, got {norm!r}.")
        if output_activation not in ("tanh", "linear"):
            raise ConfigError("Generator output_activation must be 'tanh' or 'linear', "
                              f"got {output_activation!r}.")
        self._latent_dim = int(latent_dim)
        self._context_dim = int(context_dim)
        self.base_filters = int(base_filters)
        self.norm = norm
        self.kernel_size = int(kernel_size)
        self.output_activation = output_activation
        self.activation, self.blocks, self.residual = _check_depth(activation, blocks,
                                                                   residual)

        height, _, channels = self._image_shape
        stages = UPSAMPLING_STAGES[height]
        self._seed_size = height // 2 ** stages
        # Channels of the seed map and after each upsampling stage: 2^u f, ..., f.
        self._widths = [self.base_filters * 2 ** (stages - i) for i in range(stages + 1)]
        dt = self.dtype_policy
        # No biases before a norm: its offset beta plays that role.
        self.project = keras.layers.Dense(self._seed_size ** 2 * self._widths[0],
                                          use_bias=False, dtype=dt, name="project")
        self.norms = [MetaNorm(norm, dtype=dt, name=f"norm_{i}")
                      for i in range(stages + 1)]
        self.films = [keras.layers.Dense(2 * width, kernel_initializer="zeros", dtype=dt,
                                         name=f"film_{i}")
                      for i, width in enumerate(self._widths)] if self._context_dim else []
        self.ups = [keras.layers.Conv2DTranspose(
            self._widths[i + 1], self.kernel_size, strides=2, padding="same",
            use_bias=False, dtype=dt, name=f"up_{i}") for i in range(stages)]
        self.to_image = keras.layers.Conv2D(channels, 3, padding="same", dtype=dt,
                                            name="to_image")
        # Extra depth: `blocks` 3x3 conv blocks after each upsampling stage (flat lists,
        # stage-major), none by default (the DCGAN layout).
        self.block_convs = [keras.layers.Conv2D(self._widths[i + 1], 3, padding="same",
                                                use_bias=False, dtype=dt,
                                                name=f"block_{i}_{b}")
                            for i in range(stages) for b in range(self.blocks)]
        self.block_norms = [MetaNorm(norm, dtype=dt, name=f"block_norm_{i}_{b}")
                            for i in range(stages) for b in range(self.blocks)]
        self.build()

    def build(self, input_shape=None):
        """Builds every sublayer from the config (input_shape is implied and ignored)."""
        self.project.build((None, self._latent_dim + self._context_dim))
        size = self._seed_size
        for i, norm in enumerate(self.norms):
            norm.build((None, size, size, self._widths[i]))
            if self.films:
                self.films[i].build((None, self._context_dim))
            if i > 0:
                for b in range(self.blocks):
                    k = (i - 1) * self.blocks + b
                    self.block_convs[k].build((None, size, size, self._widths[i]))
                    self.block_norms[k].build((None, size, size, self._widths[i]))
            if i < len(self.ups):
                self.ups[i].build((None, size, size, self._widths[i]))
                size *= 2
        self.to_image.build((None, size, size, self._widths[-1]))
        self.built = True

    def _modulate(self, i, h, context):
        h = self.norms[i](h)
        if context is not None:
            gamma, beta = ops.split(self.films[i](context), 2, axis=-1)
            h = h * (1.0 + gamma[:, None, None, :]) + beta[:, None, None, :]
        return activate(h, self.activation)

    def _blocks(self, stage, h):
        for b in range(self.blocks):
            k = stage * self.blocks + b
            y = activate(self.block_norms[k](self.block_convs[k](h)), self.activation)
            h = h + y if self.residual else y
        return h

    def call(self, inputs, training=None):
        z, context = split_conditional_inputs(inputs, self._context_dim, "Generator")
        h = z if context is None else ops.concatenate([z, ops.cast(context, z.dtype)], -1)
        h = ops.reshape(self.project(h),
                        (-1, self._seed_size, self._seed_size, self._widths[0]))
        h = self._modulate(0, h, context)
        for i, up in enumerate(self.ups):
            h = self._blocks(i, self._modulate(i + 1, up(h), context))
        h = self.to_image(h)
        return ops.tanh(h) if self.output_activation == "tanh" else h

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self._image_shape),
                "latent_dim": self._latent_dim, "context_dim": self._context_dim,
                "base_filters": self.base_filters, "norm": self.norm,
                "kernel_size": self.kernel_size,
                "output_activation": self.output_activation, "activation": self.activation,
                "blocks": self.blocks, "residual": self.residual}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ------------------------------------------------------------------------ discriminator

@keras.saving.register_keras_serializable(package="tfmeta")
class Discriminator(keras.Model):
    """DCGAN/WGAN-GP critic. `D(images)` or `D((images, context))` -> logits [N, 1].

    images float [N, H, W, C] in [-1, 1]. Layout: one stride-2 conv per halving down to
    4 x 4 (28 -> 14 -> 7 -> 4; 64 -> ... -> 4), widths f, 2f, 4f(, 8f), LeakyReLU(0.2),
    then a linear read-out of the flattened features. The last stride-2 conv is 3 x 3
    (others `kernel_size`): it is the widest layer, and this keeps the dcgan28 critic at
    0.43M parameters. With `context_dim > 0` a projection term <W c, sum_hw h> is added
    (Miyato & Koyama 2018), which leaves each sample's logit a function of that sample
    only, as the gradient penalty requires.

    Args:
      image_shape, base_filters: as for `Generator`.
      context_dim: 0 = unconditional.
      spectral_norm: spectrally normalise every conv/dense kernel.
      norm: "none", "layer" or "instance" (MetaNorm after every conv but the first).
        "batch" is refused: it couples samples and breaks per-sample gradient penalties.
      kernel_size: kernel of all stride-2 convs but the last.
      blocks: depth: extra 3x3 stride-1 conv blocks after each stride-2 conv.
      residual: the extra blocks are residual (`h + block(h)`).
    """

    def __init__(self, image_shape=(28, 28, 1), base_filters=64, context_dim=0,
                 spectral_norm=False, norm="none", kernel_size=4, blocks=0, residual=False,
                 **kwargs):
        super().__init__(**kwargs)
        self._image_shape = validate_image_shape(image_shape)
        _check_positive(base_filters=base_filters, kernel_size=kernel_size)
        if int(context_dim) < 0:
            raise ConfigError(f"context_dim must be >= 0, got {context_dim!r}.")
        if norm not in ("none", "layer", "instance"):
            raise ConfigError(
                f"Discriminator norm must be 'none', 'layer' or 'instance', got {norm!r} "
                "(batch statistics couple samples, which breaks the per-sample gradient "
                "penalty of WGAN-GP).")
        self.base_filters = int(base_filters)
        self._context_dim = int(context_dim)
        self.spectral_norm = bool(spectral_norm)
        self.norm = norm
        self.kernel_size = int(kernel_size)
        _, self.blocks, self.residual = _check_depth("leaky_relu", blocks, residual)

        height = self._image_shape[0]
        stages = UPSAMPLING_STAGES[height] + 1
        self._widths = [self.base_filters * 2 ** i for i in range(stages)]
        dt = self.dtype_policy

        def conv(filters, kernel, name, strides=2):
            if self.spectral_norm:
                return SpectralConv2D(filters, kernel, strides=strides, dtype=dt, name=name)
            return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                                       dtype=dt, name=name)

        def dense(units, use_bias, name):
            if self.spectral_norm:
                return SpectralDense(units, use_bias=use_bias, dtype=dt, name=name)
            return keras.layers.Dense(units, use_bias=use_bias, dtype=dt, name=name)

        self.convs = [conv(width, self.kernel_size if i < stages - 1 else 3, f"conv_{i}")
                      for i, width in enumerate(self._widths)]
        self.norms = ([MetaNorm(norm, dtype=dt, name=f"norm_{i}")
                       for i in range(1, stages)] if norm != "none" else [])
        self.readout = dense(1, True, "readout")
        self.embed = dense(self._widths[-1], False, "embed") if self._context_dim else None
        self.block_convs = [conv(width, 3, f"block_{i}_{b}", strides=1)
                            for i, width in enumerate(self._widths)
                            for b in range(self.blocks)]
        self.block_norms = ([MetaNorm(norm, dtype=dt, name=f"block_norm_{k}")
                             for k in range(len(self.block_convs))]
                            if norm != "none" else [])
        self.build()

    @property
    def image_shape(self):
        """(H, W, C) of the images."""
        return self._image_shape

    @property
    def context_dim(self):
        """Size of the support-set context (0: none)."""
        return self._context_dim

    def build(self, input_shape=None):
        """Builds every sublayer from the config (input_shape is implied and ignored)."""
        size, channels = self._image_shape[0], self._image_shape[2]
        for i, conv in enumerate(self.convs):
            conv.build((None, size, size, channels))
            size, channels = (size + 1) // 2, self._widths[i]
            if i > 0 and self.norms:
                self.norms[i - 1].build((None, size, size, channels))
            for k in range(i * self.blocks, (i + 1) * self.blocks):
                self.block_convs[k].build((None, size, size, channels))
                if self.block_norms:
                    self.block_norms[k].build((None, size, size, channels))
        self.readout.build((None, size * size * channels))
        if self.embed is not None:
            self.embed.build((None, self._context_dim))
        self.built = True

    def call(self, inputs, training=None):
        images, context = split_conditional_inputs(inputs, self._context_dim,
                                                   "Discriminator")
        h = images
        for i, conv in enumerate(self.convs):
            h = conv(h, training=training) if self.spectral_norm else conv(h)
            if i > 0 and self.norms:
                h = self.norms[i - 1](h)
            h = ops.leaky_relu(h, _LEAK)
            for k in range(i * self.blocks, (i + 1) * self.blocks):
                conv_k = self.block_convs[k]
                y = conv_k(h, training=training) if self.spectral_norm else conv_k(h)
                y = ops.leaky_relu(self.block_norms[k](y) if self.block_norms else y, _LEAK)
                h = h + y if self.residual else y
        flat = ops.reshape(h, (ops.shape(h)[0], -1))
        logits = (self.readout(flat, training=training) if self.spectral_norm
                  else self.readout(flat))
        if context is not None:
            embedded = (self.embed(ops.cast(context, h.dtype), training=training)
                        if self.spectral_norm else self.embed(ops.cast(context, h.dtype)))
            logits = logits + ops.sum(ops.sum(h, axis=(1, 2)) * embedded, axis=-1,
                                      keepdims=True)
        return logits

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self._image_shape),
                "base_filters": self.base_filters, "context_dim": self._context_dim,
                "spectral_norm": self.spectral_norm, "norm": self.norm,
                "kernel_size": self.kernel_size, "blocks": self.blocks,
                "residual": self.residual}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
