"""Support-conditioned deformation generator: new drawings as learned warps of a support.

A few-shot generator whose samples keep the support character by construction: every
sample is a *support drawing resampled through a smooth displacement field* predicted
from that drawing, a latent z and (optionally) the support-set context. The field is
what is learned — the distribution of how one person's drawing of a character differs
from another person's drawing of it — so the output is sharp (it is the support's own
ink, bilinearly resampled) and recognisable, and its diversity comes from z.

This is the amortised form of "Dreaming more data" (Hauberg et al. 2016,
arXiv:1510.02795: fit a distribution of same-class warps, sample it on an image), with
the warp predicted by a conditional VAE as in unsupervised registration networks
(VoxelMorph, Balakrishnan et al. 2019, arXiv:1809.05231, whose smooth low-resolution
flow and blurred image loss this follows):

  posterior  q(z | s, x, c) = N(mean, diag(exp(logvar)))   conv net on [s, x] (2C ch.)
  decoder    v = Flow(s, z, c): [N, r, r, 2] at r = H / 4, upsampled bilinearly to
             [N, H, W, 2] and bounded by max_displacement * tanh (pixels); with
             integration_steps = T > 0, v is a stationary velocity field and the
             displacement phi = exp(v) is integrated by scaling and squaring (T
             compositions of v / 2^T: a diffeomorphism, so the warp can bend strokes
             but never fold them onto each other or tear them; Arsigny et al. 2006,
             as in VoxelMorph-diff, Dalca et al. 2018, arXiv:1805.04605); T = 0 uses v
             itself as the displacement
  sample     x' = s ∘ (id + phi): bilinear resampling, zero (background) outside
  prior      p(z) = N(0, I), or with conditional_prior a learned
             p(z | s, c) = N(mean_p, diag(exp(logvar_p))) from the source features
             (a conditional VAE's prior network, Sohn et al. 2015): which deformations
             are plausible depends on the drawing being deformed

Trained on pairs (s, x) of two drawings of one character by
`tfmeta.losses.warp_elbo_loss` (blurred multi-scale squared error + beta * KL).

Images are float in [-1, 1] (-1 = background) at the interface; the resampling works on
ink in [0, 1] so that the zero fill is background.
"""

import keras
import tensorflow as tf
from keras import ops

from tfmeta.errors import ConfigError
from tfmeta.models.gan import GenerativeShapes, activate, validate_image_shape

__all__ = ["WarpGenerator", "bilinear_resample", "identity_grid", "match_intensities",
           "support_distances"]


def identity_grid(height, width, dtype=tf.float32):
    """Pixel coordinates (rows [H, W], cols [H, W]) of the identity map."""
    rows, cols = tf.meshgrid(tf.range(height, dtype=dtype), tf.range(width, dtype=dtype),
                             indexing="ij")
    return rows, cols


def bilinear_resample(images, rows, cols, fill="zeros"):
    """Bilinear sampling of images [N, H, W, C] at float pixel coords rows/cols [N, H', W'].

    fill="zeros": points outside the image read 0 (each of the four neighbours is masked
    separately, so ink fades out at the border instead of being clamped); "border":
    coordinates are clamped to the image (the edge values continue outwards, as for
    displacement fields). Differentiable in the images and in the coordinates
    (piecewise linear). Returns [N, H', W', C].

    With a static channel count, each channel is gathered from its own plane with the
    shared neighbour indices: the gradient of a gather is a scatter-add, and TF's CPU
    kernel is several times slower on rows of two values than on single values, so the
    warp model's training step runs 1.1-1.2x faster this way (benchmarks/README.md).
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    n, height, width = shape[0], shape[1], shape[2]
    out_shape = tf.shape(rows)
    h_max = tf.cast(height - 1, rows.dtype)
    w_max = tf.cast(width - 1, rows.dtype)
    if fill == "border":
        rows, cols = tf.clip_by_value(rows, 0.0, h_max), tf.clip_by_value(cols, 0.0, w_max)
    elif fill != "zeros":
        raise ConfigError(f"bilinear_resample fill must be 'zeros' or 'border', got {fill!r}")
    r0, c0 = tf.floor(rows), tf.floor(cols)
    fr, fc = rows - r0, cols - c0
    corners = ((r0, c0, (1.0 - fr) * (1.0 - fc)), (r0, c0 + 1.0, (1.0 - fr) * fc),
               (r0 + 1.0, c0, fr * (1.0 - fc)), (r0 + 1.0, c0 + 1.0, fr * fc))
    neighbours = []
    for r, c, weight in corners:
        valid = tf.cast((r >= 0.0) & (r <= h_max) & (c >= 0.0) & (c <= w_max), images.dtype)
        index = (tf.cast(tf.clip_by_value(r, 0.0, h_max), tf.int32) * width
                 + tf.cast(tf.clip_by_value(c, 0.0, w_max), tf.int32))
        neighbours.append((tf.reshape(index, [n, -1]), weight * valid))

    def resample(flat, value_shape):
        """flat [N, H * W (, C)] -> the weighted sum of its four neighbours."""
        total = 0.0
        for index, weight in neighbours:
            values = tf.reshape(tf.gather(flat, index, batch_dims=1), value_shape)
            total += (weight if len(flat.shape) == 2 else weight[..., None]) * values
        return total

    if images.shape[-1] is None:
        flat = tf.reshape(images, [n, height * width, shape[3]])
        return resample(flat, tf.concat([out_shape, shape[3:]], 0))
    planes = tf.unstack(tf.reshape(images, [n, height * width, images.shape[-1]]), axis=-1)
    return tf.stack([resample(plane, out_shape) for plane in planes], axis=-1)


def match_intensities(images, reference, ink_area_power=0.0):
    """Each image's pixel values replaced, rank for rank, by its reference's values.

    images, reference: [N, H, W, C]. The brightest pixel of image i gets the brightest
    value of reference i, and so on (ties by position): the output has exactly the
    reference's intensity histogram and the image's ordering of pixels. For a warp this
    undoes the softening of bilinear resampling — the warp moves the source's ink, so
    the output should carry the same ink values (histogram specification; Gonzalez &
    Woods, "Digital Image Processing", sec. 3.3.2). Gradients reach `reference` only.

    ink_area_power p (python float, >= 0): 0 keeps the reference's number of ink pixels
    whatever the warp did to the drawing's size — a warp that shrinks a drawing thickens
    its strokes, one that enlarges it thins them. With p > 0 the reference's histogram
    is used with its bright (ink) end stretched by f = clip(r ** p, 1/2, 2), where
    r = (ink mass of image i) / (ink mass of reference i) in [0, 1] units is the warp's
    area change over the ink (bilinear resampling keeps mass): the k-th brightest pixel
    gets the reference's value at rank k / f (linearly interpolated), so the output has
    about f times the reference's ink pixels, with the same values. p = 0.5 keeps the pen
    width when a drawing is scaled evenly (a smaller drawing has shorter strokes, not
    thinner ones: ink ~ stroke length ~ sqrt(area)); p = 1 scales the width as well.
    Images are in [-1, 1] (background -1) for the mass.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    flat = tf.reshape(images, [shape[0], -1])
    ranks = tf.argsort(tf.argsort(flat, axis=1, stable=True), axis=1, stable=True)
    reference = tf.reshape(tf.cast(reference, images.dtype), [shape[0], -1])
    if not ink_area_power:
        values = tf.sort(reference, axis=1)
        return tf.reshape(tf.gather(values, ranks, batch_dims=1), shape)
    mass = tf.reduce_sum(tf.stop_gradient(flat) + 1.0, 1)
    reference_mass = tf.reduce_sum(reference + 1.0, 1)
    factor = tf.clip_by_value(
        tf.math.divide_no_nan(mass, reference_mass) ** ink_area_power, 0.5, 2.0)
    descending = tf.sort(reference, axis=1, direction="DESCENDING")
    last = tf.shape(flat)[1] - 1
    position = tf.minimum(tf.cast(tf.range(last + 1), images.dtype)[None, :] / factor[:, None],
                          tf.cast(last, images.dtype))
    low = tf.cast(tf.floor(position), tf.int32)
    frac = position - tf.floor(position)
    values = ((1.0 - frac) * tf.gather(descending, low, batch_dims=1)
              + frac * tf.gather(descending, tf.minimum(low + 1, last), batch_dims=1))
    # values[k] is the k-th brightest output value; ranks count from the darkest.
    return tf.reshape(tf.gather(tf.reverse(values, [1]), ranks, batch_dims=1), shape)


def support_distances(images, support, max_shift=2):
    """Pixel distance of every image to every support drawing, forgiving small moves.

    images [M, H, W, C], support [K, H, W, C], both in [-1, 1]. Returns float [M, K]: the
    L2 distance of the ink (in [0, 1]) of image m to support k moved by the integer
    translation (|dy|, |dx| <= max_shift, zero fill) that brings it closest — a drawing
    moved by a pixel or two is still the same drawing. (The harness's copy rate,
    tfmeta.eval.baselines.nearest_support_distance, uses the same definition.)
    """
    images = tf.convert_to_tensor(images)
    ink = tf.reshape((images + 1.0) / 2.0, [tf.shape(images)[0], -1])
    support = (tf.cast(support, images.dtype) + 1.0) / 2.0
    height, width = tf.shape(support)[1], tf.shape(support)[2]
    padded = tf.pad(support, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
    image_norms = tf.reduce_sum(ink * ink, 1)[:, None]
    best = None
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            # moved[y, x] = support[y - dy, x - dx]
            moved = padded[:, max_shift - dy:max_shift - dy + height,
                           max_shift - dx:max_shift - dx + width]
            moved = tf.reshape(moved, [tf.shape(moved)[0], -1])
            squared = (image_norms + tf.reduce_sum(moved * moved, 1)[None]
                       - 2.0 * tf.matmul(ink, moved, transpose_b=True))
            best = squared if best is None else tf.minimum(best, squared)
    return tf.sqrt(tf.maximum(best, 0.0))


@keras.saving.register_keras_serializable(package="tfmeta")
class WarpGenerator(GenerativeShapes, keras.Model):
    """Source drawing + latent (+ context) -> warped drawing; posterior over warps.

    `call((source, z) or (source, z, context))` -> images [N, H, W, C] in [-1, 1];
    `flow(...)` -> displacement [N, H, W, 2] in pixels (rows, cols);
    `encode(source, target, context=None)` -> (mean, logvar) [N, latent_dim];
    `prior(source, context=None)` -> (mean, logvar) of p(z | source, context).
    Works with `stateless_call` and `keras.StatelessScope` (no state besides weights).

    Args:
      image_shape: (H, W, C), H = W in {28, 32, 64}.
      latent_dim: size of z (the warp code).
      context_dim: size of the support-set context; 0 = none.
      base_filters: f; source features f, 2f at H/2, H/4; decoder 2f.
      max_displacement: bound of the velocity (displacement for T = 0) in pixels.
      integration_steps: T, scaling-and-squaring steps (0: plain displacement field).
      conditional_prior: learn p(z | source, context) instead of N(0, I).
      activation: hidden activation.
      flow_stride: the velocity field's grid, in pixels: 4 (H/4 x W/4, bilinearly
        upsampled) or 2 (H/2: the decoder upsamples once more, with the source's H/2
        features, for finer, stroke-level deformations).
    """

    def __init__(self, image_shape=(28, 28, 1), latent_dim=16, context_dim=0,
                 base_filters=32, max_displacement=4.0, integration_steps=0,
                 conditional_prior=False, activation="relu", flow_stride=4, **kwargs):
        super().__init__(**kwargs)
        self._image_shape = validate_image_shape(image_shape)
        if int(latent_dim) < 1 or int(base_filters) < 1 or int(context_dim) < 0 \
                or float(max_displacement) <= 0 or int(integration_steps) < 0:
            raise ConfigError(
                "WarpGenerator needs latent_dim >= 1, base_filters >= 1, context_dim >= 0, "
                f"max_displacement > 0, integration_steps >= 0; got {latent_dim!r}, "
                f"{base_filters!r}, {context_dim!r}, {max_displacement!r}, "
                f"{integration_steps!r}.")
        if int(flow_stride) not in (2, 4):
            raise ConfigError(f"WarpGenerator flow_stride must be 2 or 4; got {flow_stride!r}")
        self.flow_stride = int(flow_stride)
        self._latent_dim, self._context_dim = int(latent_dim), int(context_dim)
        self.base_filters, self.max_displacement = int(base_filters), float(max_displacement)
        self.integration_steps = int(integration_steps)
        self.conditional_prior = bool(conditional_prior)
        self.activation = activation
        f, dt = self.base_filters, self.dtype_policy
        self._coarse = self._image_shape[0] // 4

        def conv(width, name, strides=1):
            return keras.layers.Conv2D(width, 3, strides=strides, padding="same", dtype=dt,
                                       name=name)
        self.src_convs = [conv(f, "src_conv_0", 2), conv(2 * f, "src_conv_1", 2)]
        self.post_convs = [conv(f, "post_conv_0", 2), conv(2 * f, "post_conv_1", 2),
                           conv(2 * f, "post_conv_2", 2)]
        self.post_out = keras.layers.Dense(2 * self._latent_dim, dtype=dt, name="post_out")
        # Zero-initialised: the learned prior starts as N(0, I).
        self.prior_out = (keras.layers.Dense(2 * self._latent_dim, dtype=dt, name="prior_out",
                                             kernel_initializer="zeros")
                          if self.conditional_prior else None)
        self.code_proj = keras.layers.Dense(self._coarse * self._coarse * f, dtype=dt,
                                            name="code_proj")
        self.dec_convs = [conv(2 * f, "dec_conv_0"), conv(2 * f, "dec_conv_1")]
        self.fine_conv = conv(2 * f, "fine_conv") if self.flow_stride == 2 else None
        # Zero-initialised read-out: training starts from the identity warp.
        self.flow_out = keras.layers.Conv2D(2, 3, padding="same", dtype=dt, name="flow_out",
                                            kernel_initializer="zeros")
        self.build()

    def build(self, input_shape=None):
        """Builds every sublayer from the config (input_shape is implied and ignored)."""
        size, channels = self._image_shape[0], self._image_shape[2]
        f, r = self.base_filters, self._coarse
        c = channels
        for layer, width in zip(self.src_convs, (f, 2 * f)):
            layer.build((None, None, None, c))
            c = width
        c, s = 2 * channels, size
        for layer, width in zip(self.post_convs, (f, 2 * f, 2 * f)):
            layer.build((None, None, None, c))
            c, s = width, (s + 1) // 2
        self.post_out.build((None, s * s * c + self._context_dim))
        if self.prior_out is not None:
            self.prior_out.build((None, self.prior_feature_dim))
        self.code_proj.build((None, self._latent_dim + self._context_dim))
        c = 2 * f + f
        for layer in self.dec_convs:
            layer.build((None, r, r, c))
            c = 2 * f
        if self.fine_conv is not None:
            self.fine_conv.build((None, 2 * r, 2 * r, c + f))
        self.flow_out.build((None, None, None, c))
        self.built = True

    def _code(self, z, context):
        if (context is None) != (self._context_dim == 0):
            raise ConfigError(f"WarpGenerator: built with context_dim={self._context_dim}; "
                              "pass a context exactly when context_dim > 0.")
        if context is None:
            return z
        if len(context.shape) == 1:
            context = ops.broadcast_to(context[None, :], (ops.shape(z)[0], self._context_dim))
        return ops.concatenate([z, ops.cast(context, z.dtype)], axis=-1)

    def encode(self, source, target, context=None):
        """Posterior q(z | source, target, context): (mean, logvar) [N, latent_dim]."""
        h = ops.concatenate([source, target], axis=-1)
        for layer in self.post_convs:
            h = activate(layer(h), self.activation)
        h = ops.reshape(h, (ops.shape(h)[0], -1))
        h = self._code(h, context)
        mean, logvar = ops.split(self.post_out(h), 2, axis=-1)
        return mean, logvar

    def _source_pyramid(self, source):
        """The source's features at H/2 and H/4."""
        half = activate(self.src_convs[0](source), self.activation)
        return half, activate(self.src_convs[1](half), self.activation)

    def _source_features(self, source):
        return self._source_pyramid(source)[1]

    def prior_features(self, source, context=None):
        """What the prior sees of a source drawing: [N, r * r * 2f + context_dim] (its
        flattened source features and the context; the input of the learned prior and
        of a fitted one, tfmeta.models.fitted_prior)."""
        h = self._source_features(source)
        return self._code(ops.reshape(h, (ops.shape(h)[0], -1)), context)

    @property
    def prior_feature_dim(self):
        """Width of `prior_features`."""
        return self._coarse * self._coarse * 2 * self.base_filters + self._context_dim

    def prior(self, source, context=None):
        """Prior over z for warping `source`: (mean, logvar) [N, latent_dim]
        (zeros = N(0, I) without conditional_prior)."""
        if self.prior_out is None:
            zeros = ops.zeros((ops.shape(source)[0], self._latent_dim), source.dtype)
            return zeros, zeros
        mean, logvar = ops.split(self.prior_out(self.prior_features(source, context)), 2,
                                 axis=-1)
        return mean, logvar

    def flow(self, source, z, context=None, scale=None):
        """Displacement field [N, H, W, 2] (pixels; rows, cols) for warping `source`.

        scale: optional [N] factor on the velocity (on the displacement for T = 0):
        0 = identity, 1 = the full warp, in between a point on the path (for a
        diffeomorphic warp exp(scale * v), the one-parameter subgroup through exp(v)).
        """
        half, h = self._source_pyramid(source)
        r, f = self._coarse, self.base_filters
        code = self.code_proj(self._code(z, context))
        code = ops.reshape(activate(code, self.activation), (-1, r, r, f))
        h = ops.concatenate([h, code], axis=-1)
        for layer in self.dec_convs:
            h = activate(layer(h), self.activation)
        if self.fine_conv is not None:
            h = tf.image.resize(h, tf.shape(half)[1:3], method="bilinear")
            h = activate(self.fine_conv(ops.concatenate([h, half], axis=-1)),
                         self.activation)
        coarse = self.max_displacement * ops.tanh(self.flow_out(h))
        height, width = self._image_shape[:2]
        flow = tf.image.resize(coarse, (height, width), method="bilinear")
        if scale is not None:
            flow = flow * ops.cast(scale, flow.dtype)[:, None, None, None]
        if not self.integration_steps:
            return flow
        # Scaling and squaring: phi_{2t} = phi_t + phi_t o (id + phi_t), phi_0 = v / 2^T.
        rows, cols = identity_grid(height, width, flow.dtype)
        flow = flow / 2.0 ** self.integration_steps
        for _ in range(self.integration_steps):
            flow = flow + bilinear_resample(flow, rows[None] + flow[..., 0],
                                            cols[None] + flow[..., 1], fill="border")
        return flow

    def warp(self, source, flow):
        """source [-1, 1] resampled at id + flow; background fill; returns [-1, 1]."""
        height, width = self._image_shape[:2]
        rows, cols = identity_grid(height, width, flow.dtype)
        ink = (source + 1.0) / 2.0
        out = bilinear_resample(ink, rows[None] + flow[..., 0], cols[None] + flow[..., 1])
        return out * 2.0 - 1.0

    def call(self, inputs, scale=None, training=None):
        if not isinstance(inputs, (tuple, list)) or len(inputs) not in (2, 3):
            raise ConfigError("WarpGenerator takes (source, z) or (source, z, context).")
        source, z = inputs[0], inputs[1]
        context = inputs[2] if len(inputs) == 3 else None
        return self.warp(source, self.flow(source, z, context, scale))

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self._image_shape),
                "latent_dim": self._latent_dim, "context_dim": self._context_dim,
                "base_filters": self.base_filters,
                "max_displacement": self.max_displacement,
                "integration_steps": self.integration_steps,
                "conditional_prior": self.conditional_prior, "activation": self.activation,
                "flow_stride": self.flow_stride}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
