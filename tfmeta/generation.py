"""Few-shot image generation: generator families, their objectives, learners, adaptation.

A `GenerativeModel` bundles the Keras models of one family — a GAN (generator +
critic), a VAE, or a warp generator (`tfmeta.models.warp`: every sample is a learned,
smooth deformation of one of the support drawings, so it needs support images to
sample) — plus, when `context_dim > 0`, a permutation-invariant support-set
encoder and a learned context offset. Its meta-parameters are one flat list of
variables; every loss is a pure function of a list of tensors aligned with it, so the
generic learners of `tfmeta.meta` (MAML, FOMAML, Meta-SGD, Reptile, aggregation) train
it without a second inner loop.

Task batches (one character each, see `tfmeta.data.GenerationTask`):
  support = {"images": S [B,K,H,W,C], "context_images": S}
  query   = {"images": Q [B,Q,H,W,C], "context_images": S}
Images are in [-1, 1]. The context of a task is always computed from its *support*
images (`context = context_offset + encoder(S)`), so the outer (query) loss measures
how well the model, adapted on S, draws other drawings of the same character.

Inner objectives:
  GAN: critic loss on the critic's parameters, then generator loss on the generator's
       (and the encoder's and context offset's) — FIGR (Clouâtre & Demers 2019,
       arXiv:1901.02199) when meta-trained with Reptile over WGAN-GP.
  VAE: the negative ELBO.
  warp: the negative warp ELBO of drawing each image as a warp of *another* support
       drawing (`warp_loss`; with K = 1 the inner loss is the trivial identity pair).
`adapt_scope="context"` adapts only the context offset in the inner loop (CAVIA,
Zintgraf et al. 2019, arXiv:1810.03642) while the weights are meta-learned.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import losses, overrides
from tfmeta.data import scale_images
from tfmeta.errors import ConfigError, DataError
from tfmeta.meta import (GRADIENT_ALGORITHMS, Objective, adapt as inner_adapt, fold_seed,
                         learner_from_config)
from tfmeta.meta.common import tf_variable
from tfmeta.models import presets
from tfmeta.models import warp as warp_lib
from tfmeta.models.fitted_prior import FittedPrior, mirrored_pairs, truncated_normal

__all__ = ["GenerativeModel", "build_learner", "split_generation_task", "to_batch",
           "GenerativeModule", "load_generative_module", "adapt", "adapt_and_sample",
           "restore_model", "parse_sampling", "SAMPLING_FIELDS",
           "check_support_images", "fit_prior", "save_fitted_prior", "load_fitted_prior"]


def to_batch(images, context_images):
    """The nested batch structure every generation loss takes."""
    return {"images": images, "context_images": context_images}


def split_generation_task(task):
    """GenerationTask → (support, query) nested structures with a leading task dim."""
    return (to_batch(task.support_images, task.support_images),
            to_batch(task.query_images, task.support_images))


class GenerativeModel:
    """Models, flat meta-parameter list and pure losses of one generator family.

    Attributes:
      variables: list of Keras variables (meta-parameters), in a fixed order.
      generator_indices / critic_indices / context_indices: positions in `variables`.
      image_shape: (H, W, C); latent_dim: size of z.
    """

    def __init__(self, config, seed=0):
        self.config = config
        size, channels = config.data.image_size, config.data.channels
        self.image_shape = (size, size, channels)
        ctx = config.context_dim
        overrides = config.model_overrides()
        keras.utils.set_random_seed(seed)   # reproducible initial weights
        self.generator = self.discriminator = self.vae = self.warp = self.encoder = None
        self.context_offset = None
        # A warp generator's FittedPrior (not a meta-parameter: fitted after training,
        # see fit_prior); prior draws use it when set and config.fitted_prior.
        self.fitted_prior = None
        if config.model == "warp":
            self.warp = presets.build_warp(config.preset, self.image_shape, context_dim=ctx,
                                           **overrides)
            gen_vars, critic_vars = list(self.warp.trainable_variables), []
            self.latent_dim = self.warp.latent_dim
        elif config.model == "gan":
            self.generator, self.discriminator = presets.build_gan(
                config.preset, self.image_shape, context_dim=ctx,
                conditional_discriminator=config.conditional_critic, **overrides)
            gen_vars = list(self.generator.trainable_variables)
            critic_vars = list(self.discriminator.trainable_variables)
            self.latent_dim = self.generator.latent_dim
        else:
            self.vae = presets.build_vae(config.preset, self.image_shape, context_dim=ctx,
                                         **overrides)
            gen_vars, critic_vars = list(self.vae.trainable_variables), []
            self.latent_dim = self.vae.latent_dim
        ctx_vars = []
        if ctx:
            self.encoder = presets.build_support_encoder(config.preset, self.image_shape,
                                                         context_dim=ctx)
            self.context_offset = keras.Variable(np.zeros([ctx], np.float32),
                                                 name="context_offset")
            ctx_vars = list(self.encoder.trainable_variables) + [self.context_offset]
        self.variables = gen_vars + critic_vars + ctx_vars
        n_g, n_c = len(gen_vars), len(critic_vars)
        self.generator_indices = tuple(range(n_g)) + tuple(
            range(n_g + n_c, len(self.variables)))
        self.critic_indices = tuple(range(n_g, n_g + n_c))
        self.context_indices = (len(self.variables) - 1,) if ctx else ()

    # ---- pure functions of a parameter list ------------------------------------------
    def _scope(self, params):
        """Runs Keras calls with `params` standing in for `variables` (no assignment)."""
        return keras.StatelessScope(state_mapping=list(zip(self.variables, params)))

    def _context(self, context_images, n):
        """Context vector broadcast to [n, context_dim] (None without context)."""
        if self.encoder is None:
            return None
        c = self.context_offset + self.encoder(context_images, training=True)
        return tf.broadcast_to(tf.convert_to_tensor(c)[None, :], [n, self.config.context_dim])

    def _with_context(self, x, c):
        return x if c is None else (x, c)

    def vae_loss(self, params, batch, seed):
        """Negative ELBO of batch["images"] given the support context. Returns (loss, aux)."""
        with self._scope(params):
            x = batch["images"]
            c = self._context(batch["context_images"], tf.shape(x)[0])
            out = self.vae(self._with_context(x, c), seed=seed, training=True)
            loss, aux = losses.vae_elbo_loss(out["recon_logits"], (x + 1.0) / 2.0,
                                             out["mean"], out["logvar"],
                                             beta=self.config.kl_weight)
        return loss, aux

    @property
    def requires_support(self):
        """True for families that draw *from* a support set (no unconditional samples)."""
        return self.warp is not None

    def warp_loss(self, params, batch, seed):
        """Negative warp ELBO: each image of batch["images"] drawn as a warp of a support.

        For every target x_i a source s_j is drawn uniformly from the support images that
        differ from x_i (on the support set itself: another support drawing; with K = 1
        the only support, i.e. the identity pair). Returns (loss, aux).
        """
        with self._scope(params):
            x, support = batch["images"], batch["context_images"]
            n = tf.shape(x)[0]
            distance = tf.reduce_sum(tf.square(x[:, None] - support[None]), axis=[2, 3, 4])
            # Equal logits where every support equals x (K = 1 on the support itself).
            logits = tf.where(distance < 1e-6, -1e9, 0.0)
            index = tf.random.stateless_categorical(logits, 1, fold_seed(seed, 0))[:, 0]
            source = tf.gather(support, index)
            c = self._context(support, n)
            mean, logvar = self.warp.encode(source, x, c)
            prior_mean, prior_logvar = self.warp.prior(source, c)
            eps = tf.random.stateless_normal(tf.shape(mean), fold_seed(seed, 1))
            z = mean + tf.exp(0.5 * logvar) * eps
            flow = self.warp.flow(source, z, c)
            warped = self.warp.warp(source, flow)
            loss, aux = losses.warp_elbo_loss(warped, x, mean, logvar,
                                              beta=self.config.kl_weight,
                                              prior_mean=prior_mean,
                                              prior_logvar=prior_logvar)
            penalties, penalty = losses.warp_regularizer(
                flow, source, warped, smoothness=self.config.warp_smoothness,
                ink=self.config.ink_weight)
            loss = loss + penalty
            aux.update(penalties)
        return loss, aux

    def _warp_inputs(self, source, z, c):
        return (source, z) if c is None else (source, z, c)

    def _warp_sample(self, num_samples, seed, support):
        """Warps of support drawings (seeded); see `GenerationConfig.warp_sampling`.

        With `rerank` = r > 1, r * num_samples candidates are drawn and the num_samples
        whose `registration_cost` exceeds their source drawing's own by the least are
        returned, best first. With `copy_guard` or `outlier_guard` > 0 (and K >= 2), at
        least 2 * num_samples candidates are drawn and the copies and outliers of
        `guard_flags` come last (in draw order; they fill in only when too few
        candidates pass).
        """
        r = self.config.rerank
        guard = self.config.copy_guard > 0 or self.config.outlier_guard > 0
        factor = max(r, 2) if guard else r
        images, index = self._warp_candidates(num_samples * factor, seed, support)
        if factor == 1:
            return images
        m = tf.shape(images)[0]
        score = tf.zeros([m])
        if r > 1:
            # Each candidate is judged against its own source drawing: how much harder it
            # is to reach from the other supports than the source itself is (an unusual
            # support - a bold pen, a shifted drawing - is as hard to reach as its
            # warps are).
            k = tf.shape(support)[0]
            cost = self.registration_cost(tf.concat([images, support], 0),
                                          tf.concat([index, tf.range(k)], 0), support)
            score = cost[:m] - tf.gather(cost[m:], index)
        if guard:
            rejected = tf.logical_or(*self.guard_flags(images, support))
            score = score + tf.cast(rejected, score.dtype) * 1e9
        # top_k keeps draw order among equal scores.
        return tf.gather(images, tf.math.top_k(-score, num_samples).indices)

    def guard_flags(self, images, support):
        """(copy, outlier), bool [M] each, from the images' distance to their nearest
        support drawing (`warp.support_distances`) and each support's distance to its
        nearest other support (its gap):
        copy: closer than `copy_guard` times the smallest gap (a new person's drawing is
          rarely closer to one of them than they are to each other);
        outlier: farther than `outlier_guard` times the largest gap (a new drawing of the
          class rarely leaves the set the supports span by more than the most unusual
          of them does).
        All False with one support drawing or a guard of 0; copy is all False when two
        supports are the same drawing (smallest gap 0)."""
        k = tf.shape(support)[0]
        between = warp_lib.support_distances(support, support)
        gaps = tf.reduce_min(
            tf.where(tf.eye(k, dtype=tf.bool), tf.constant(float("inf")), between), 1)
        nearest = tf.reduce_min(warp_lib.support_distances(images, support), 1)
        several = k >= 2
        copy = tf.logical_and(nearest < self.config.copy_guard * tf.reduce_min(gaps),
                              several)
        outlier = tf.logical_and(
            nearest > self.config.outlier_guard * tf.reduce_max(gaps),
            tf.logical_and(several, self.config.outlier_guard > 0))
        return copy, outlier

    def source_logits(self, support):
        """float [K]: log-weights of the support drawings as warp sources, -b * z_i with
        z_i support i's `registration_cost` from the other supports, standardised over
        the set (b = `source_weighting`): the drawings the others register to best are
        the typical ones. All 0 with K = 1 or when every cost is equal."""
        k = tf.shape(support)[0]
        cost = self.registration_cost(support, tf.range(k), support)
        z = tf.math.divide_no_nan(cost - tf.reduce_mean(cost), tf.math.reduce_std(cost))
        return -self.config.source_weighting * z

    def registration_cost(self, images, source_index, support):
        """How badly the supports other than each image's source register to it.

        For every image x_m and support s_j (j != source_index[m]; with K = 1, the
        source itself), the negative warp ELBO of s_j -> x_m with z the posterior mean,
        averaged over j: a drawing of the class can be reached by a plausible warp from
        every drawing of it, an implausible deformation (folded or squeezed strokes)
        only from the drawing it was made from.

        Args:
          images: [M, H, W, C] in [-1, 1]; source_index: int [M] into support;
          support: [K, H, W, C] in [-1, 1].
        Returns:
          float [M] (nats).
        """
        m, k = tf.shape(images)[0], tf.shape(support)[0]
        source = tf.reshape(tf.tile(support[None], [m, 1, 1, 1, 1]),
                            tf.concat([[m * k], tf.shape(support)[1:]], 0))
        target = tf.repeat(images, k, axis=0)
        c = self._context(support, m * k)
        mean, logvar = self.warp.encode(source, target, c)
        prior_mean, prior_logvar = self.warp.prior(source, c)
        warped = self._rendered(self.warp(self._warp_inputs(source, mean, c), training=True),
                                source)
        reconstruction, kl = losses.warp_elbo_terms(warped, target, mean, logvar,
                                                    prior_mean=prior_mean,
                                                    prior_logvar=prior_logvar)
        cost = tf.reshape(reconstruction + self.config.kl_weight * kl, [m, k])
        other = tf.logical_or(tf.range(k)[None, :] != source_index[:, None], k == 1)
        weight = tf.cast(other, cost.dtype)
        return tf.reduce_sum(cost * weight, 1) / tf.reduce_sum(weight, 1)

    def _warp_candidates(self, num_samples, seed, support):
        """(images [num_samples, H, W, C], source index [num_samples]).

        A source s_i is drawn from the supports (uniformly, or by `source_logits` with
        `source_weighting` > 0), then
        "pairs" (K >= 2): another support s_j is drawn, z = the posterior mean of
          q(z | s_i, s_j) + temperature * eps, and the warp is scaled by
          u ~ U(pair_scale_low, pair_scale_high): a point on the learned path from s_i
          towards s_j (deformations the supports themselves show);
        "prior": z from the prior p(z | s_i) with its standard deviation times
          `prior_temperature`, the full warp (the run's fitted prior, if it has one
          and `fitted_prior`, with its Cholesky factors times `prior_temperature`);
          with `prior_truncation` = rho > 0 the standard-normal noise is drawn inside
          the ball of radius rho (`fitted_prior.truncated_normal`): no draw lands
          farther than rho * prior_temperature standard deviations out; with
          `antithetic`, samples come in pairs - one source, one mixture component,
          noise eps and -eps (a deformation and its opposite);
        "pairs+prior": the "pairs" warp (z = the posterior mean), then a "prior" warp
          of its result: a new deformation on top of one the supports show.
        With K = 1 there are no pairs and every mode samples as "prior".
        """
        mode = self.config.warp_sampling
        k = tf.shape(support)[0]
        n = num_samples
        anti = self.config.antithetic      # "prior" mode only (GenerationConfig checks)
        draws = (n + 1) // 2 if anti else n
        if self.config.source_weighting > 0:
            index = tf.cast(tf.random.stateless_categorical(
                self.source_logits(support)[None], draws, fold_seed(seed, 2))[0], tf.int32)
        else:
            index = tf.random.stateless_uniform([draws], fold_seed(seed, 2), 0, k,
                                                dtype=tf.int32)
        if anti:
            index = tf.repeat(index, 2)[:n]
        source = tf.gather(support, index)
        c = self._context(support, n)

        def pair_step():
            # Another support than the source (only run when K >= 2).
            offset = tf.random.stateless_uniform([n], fold_seed(seed, 3), 1,
                                                 tf.maximum(k, 2), dtype=tf.int32)
            target = tf.gather(support, (index + offset) % k)
            z, _ = self.warp.encode(source, target, c)
            if mode == "pairs":
                z = z + self.config.temperature * tf.random.stateless_normal(
                    [n, self.latent_dim], fold_seed(seed, 0))
            scale = tf.random.stateless_uniform([n], fold_seed(seed, 4),
                                                self.config.pair_scale_low,
                                                self.config.pair_scale_high)
            return self.warp(self._warp_inputs(source, z, c), scale=scale, training=True)

        def prior_step(images):
            # With `antithetic` the images come in pairs (one source twice): one draw
            # per pair, its noise used as +eps and -eps.
            first = images[::2] if anti else images
            first_c = c[::2] if anti and c is not None else c
            if self.fitted_prior is not None and self.config.fitted_prior:
                z = self.fitted_prior.sample(self.warp.prior_features(first, first_c),
                                             fold_seed(seed, 5), self.config.prior_temperature,
                                             self.config.prior_truncation, antithetic=anti)
            else:
                mean, logvar = self.warp.prior(first, first_c)
                eps = truncated_normal([tf.shape(first)[0], self.latent_dim],
                                       fold_seed(seed, 5), self.config.prior_truncation)
                if anti:
                    mean, logvar = tf.repeat(mean, 2, axis=0), tf.repeat(logvar, 2, axis=0)
                    eps = mirrored_pairs(eps)
                z = mean + tf.exp(0.5 * logvar) * self.config.prior_temperature * eps
            return self.warp(self._warp_inputs(images, z[:n], c), training=True)

        # With K = 1 there is no pair: every mode samples from the prior.
        has_pairs = k >= 2
        if mode == "prior":
            out = prior_step(source)
        elif mode == "pairs":
            out = tf.cond(has_pairs, pair_step, lambda: prior_step(source))
        else:   # "pairs+prior"
            out = prior_step(tf.cond(has_pairs, pair_step, lambda: source))
        return self._rendered(out, source), index

    def _rendered(self, warped, source):
        """With `match_ink`, the warped drawing carries its source's ink values (and, with
        `ink_area_power`, an ink-pixel count that follows the warp's change of size)."""
        if not self.config.match_ink:
            return warped
        return warp_lib.match_intensities(warped, source, self.config.ink_area_power)

    def _gan_terms(self, batch, seed):
        real = batch["images"]
        n = tf.shape(real)[0]
        c = self._context(batch["context_images"], n)
        z = tf.random.stateless_normal([n, self.latent_dim], fold_seed(seed, 0))
        fake = self.generator(self._with_context(z, c), training=True)
        d_ctx = c if self.discriminator.context_dim else None

        def critic(images):
            return self.discriminator(self._with_context(images, d_ctx), training=True)
        return real, fake, critic

    def critic_loss(self, params, batch, seed):
        """Critic loss (+ λ·gradient penalty for WGAN-GP) on real vs generated images."""
        _, d_loss = losses.GAN_LOSSES[self.config.gan_loss]
        with self._scope(params):
            real, fake, critic = self._gan_terms(batch, seed)
            loss = d_loss(critic(real), critic(fake))
            aux = {}
            if self.config.gan_loss == "wgan_gp":
                gp = losses.gradient_penalty(critic, real, fake, fold_seed(seed, 1))
                aux["gradient_penalty"] = gp
                loss = loss + self.config.gp_weight * gp
        return loss, aux

    def generator_loss(self, params, batch, seed):
        """GAN generator loss of fakes [N, H, W, C] drawn from z ~ N(0, I) with the context
        of batch["context_images"] (N = the batch's image count). Returns (loss, {})."""
        g_loss, _ = losses.GAN_LOSSES[self.config.gan_loss]
        with self._scope(params):
            _, fake, critic = self._gan_terms(batch, seed)
            loss = g_loss(critic(fake))
        return loss, {}

    def sample(self, params, num_samples, seed, context_images=None):
        """Images [num_samples, H, W, C] in [-1, 1] drawn with `params` (stateless seed)."""
        if self.warp is not None and context_images is None:
            raise ConfigError("a warp generator draws from support images: pass them "
                              "(export with --support_images, or use adapt_and_sample)")
        with self._scope(params):
            if self.warp is not None:
                return self._warp_sample(num_samples, seed, context_images)
            c = (self._context(context_images, num_samples)
                 if context_images is not None else self._offset_only(num_samples))
            if self.vae is not None:
                return self.vae.sample(num_samples, seed, c) * 2.0 - 1.0
            z = tf.random.stateless_normal([num_samples, self.latent_dim], fold_seed(seed, 0))
            return self.generator(self._with_context(z, c), training=True)

    def _offset_only(self, n):
        if self.encoder is None:
            return None
        return tf.broadcast_to(tf.convert_to_tensor(self.context_offset)[None, :],
                               [n, self.config.context_dim])

    # ---- objectives -------------------------------------------------------------------
    def objectives(self, inner):
        """Inner (inner=True, honouring adapt_scope) or outer objectives, in order."""
        scope_ctx = inner and self.config.adapt_scope == "context"
        gen_idx = self.context_indices if scope_ctx else self.generator_indices
        if self.vae is not None:
            return [Objective(self.vae_loss, gen_idx, name="elbo")]
        if self.warp is not None:
            return [Objective(self.warp_loss, gen_idx, name="warp")]
        generator = Objective(self.generator_loss, gen_idx, name="generator")
        if scope_ctx:
            # CAVIA for GANs: only the context moves in the inner loop; the critic is
            # the meta-learned judge and is trained by the outer loop alone.
            return [generator]
        critics = [Objective(self.critic_loss, self.critic_indices,
                             name="critic" if i == 0 else f"critic{i + 1}")
                   for i in range(self.config.critic_steps if inner else 1)]
        return critics + [generator]

    def read_params(self):
        """The current values of `variables` as a list of tensors (the meta-parameters)."""
        return [tf.convert_to_tensor(v) for v in self.variables]


def build_learner(config, model):
    """The learner of `config.outer.algorithm` over `model`'s meta-parameters."""
    if config.outer.algorithm not in GRADIENT_ALGORITHMS and config.adapt_scope == "context":
        raise ConfigError(f"--adapt_scope=context needs a gradient-based outer loop "
                          f"{GRADIENT_ALGORITHMS}: Reptile/aggregation would only move "
                          "the context offset")
    return learner_from_config(config, model.variables, model.objectives(inner=True),
                               model.objectives(inner=False),
                               keras.optimizers.Adam(config.outer.meta_lr, beta_1=0.5))


def adapt_and_sample(learner, model, support_images, num_samples, seed, steps):
    """THE adapt-then-sample of serving, evaluation and the CLIs: `steps` inner steps on
    support_images [K, H, W, C] in [-1, 1] seeded by `seed` (int64 [2]), then num_samples
    images [num_samples, H, W, C] in [-1, 1] drawn with `fold_seed(seed, 1)`. For a user
    seed s the seed is [s, 0], so one seed gives the same images everywhere (tested)."""
    params = adapted_params(learner, model, support_images, steps, seed)
    return model.sample(params, num_samples, fold_seed(seed, 1), support_images)


def adapted_params(learner, model, support_images, steps, seed):
    """Adapts the meta-parameters on support images [K,H,W,C] in [-1,1] (no assignment).

    `steps` may be a Python int or an int tensor (graph loop, used by serving).
    """
    batch = to_batch(support_images, support_images)
    result = inner_adapt(model.objectives(inner=True), model.read_params(), batch, steps,
                         learner.inner_rule(), first_order=True, seed=seed)
    return result.params


# ---- checkpoints, adaptation and the exported module -------------------------------------

def _resolve_workdir(checkpoint):
    """Accepts a workdir (its final weights: `train.final_checkpoint`), its checkpoints/
    folder (the latest there) or a checkpoint prefix."""
    from tfmeta import train as train_lib
    path = os.path.abspath(checkpoint)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return path, train_lib.final_checkpoint(path)
    if os.path.isdir(path):
        return os.path.dirname(path), tf.train.latest_checkpoint(path)
    if os.path.exists(path + ".index"):
        return os.path.dirname(os.path.dirname(path)), path
    return None, None


# Fields of GenerationConfig that only change how a trained generator samples (never its
# variables or training): a restored model can be sampled with other values.
SAMPLING_FIELDS = ("warp_sampling", "temperature", "prior_temperature", "prior_truncation",
                   "antithetic", "pair_scale_low", "pair_scale_high", "rerank", "match_ink",
                   "ink_area_power", "fitted_prior", "copy_guard", "outlier_guard",
                   "source_weighting")


def parse_sampling(text):
    """`"key=value,key=value"` over SAMPLING_FIELDS -> {field: typed value} (ConfigError
    names an unknown field or a bad value); empty text -> {}."""
    defaults = cfg.GenerationConfig()
    out = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in SAMPLING_FIELDS:
            raise ConfigError(f"--sampling: {item!r} is not <field>=<value> with a field "
                              f"of {SAMPLING_FIELDS}")
        kind = type(getattr(defaults, key))
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            else:
                out[key] = kind(value)
        except ValueError:
            raise ConfigError(f"--sampling: {key}={value!r} is not a {kind.__name__}"
                              ) from None
    return out


def restore_model(checkpoint, sampling=None):
    """(config, model, learner) restored from a meta_gan workdir/checkpoint.

    sampling: optional {field: value} over SAMPLING_FIELDS, or its "field=value,..."
    text (`parse_sampling`): the run's config with these sampling settings replaced
    (validated), e.g. reranked prior draws for offline augmentation from a checkpoint
    trained with "pairs" sampling.
    """
    from tfmeta import train as train_lib
    workdir, prefix = _resolve_workdir(checkpoint)
    if workdir is None or prefix is None:
        raise ConfigError(f"--checkpoint {checkpoint!r}: no checkpoint found (give the "
                          "training workdir, its checkpoints/ folder or a ckpt-N prefix)")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise ConfigError(f"{config_path} is missing: the checkpoint's config is needed to "
                          "rebuild the model; point --checkpoint at a trainers.meta_gan workdir")
    with open(config_path) as f:
        config = cfg.from_dict(cfg.GenerationConfig, json.load(f))
    if isinstance(sampling, str):
        sampling = parse_sampling(sampling)
    if sampling:
        unknown = sorted(set(sampling) - set(SAMPLING_FIELDS))
        if unknown:
            raise ConfigError(f"sampling overrides {unknown} are not sampling settings "
                              f"{SAMPLING_FIELDS}")
        config = overrides.with_flag_values(config, sampling)
    model = GenerativeModel(config, seed=config.train.seed)
    learner = build_learner(config, model)
    ckpt, _, _ = train_lib.make_checkpoint(learner)
    status = None
    try:
        # Strict: every variable of the rebuilt model must come from the checkpoint (a
        # silent partial restore would serve freshly initialised weights).
        status = ckpt.restore(prefix)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        if status is not None:
            status.expect_partial()   # no second warning about the unrestored values
        what = train_lib.checkpoint_mismatch(ckpt, prefix, e, learner.trackables())
        raise ConfigError(f"{workdir}: checkpoint {os.path.basename(prefix)} does not match "
                          f"the model that its config.json describes ({what}); was "
                          "config.json edited or the checkpoint copied from another run?"
                          ) from None
    status.expect_partial()   # optimiser slots the rebuilt learner has not created yet
    if config.model == "warp" and config.prior_components:
        model.fitted_prior = load_fitted_prior(workdir, model)
        if model.fitted_prior is None and config.fitted_prior:
            raise ConfigError(
                f"{workdir} was configured with --prior_components="
                f"{config.prior_components} but has no fitted prior "
                f"({os.path.join(workdir, FITTED_PRIOR_FILE)}.weights.h5): run its "
                "trainers.meta_gan command again (it fits the prior after the last step), "
                "or sample with --sampling=fitted_prior=false")
    return config, model, learner


# ---- fitted priors (ex-post density estimation, tfmeta.models.fitted_prior) ---------------

FITTED_PRIOR_FILE = "fitted_prior"


def _prior_fit_data(model, params, class_images, k_shot, contexts_per_class, rng):
    """Real pairs of every class: (prior features [P, F], posterior mean codes [P, D],
    the learned prior's mean and log-variance [P, D], class index [P]). Per class and
    context draw: k_shot random drawings are the support (the context), every other
    drawing a target, its source a random support drawing."""

    @tf.function(autograph=False, reduce_retracing=True)
    def codes(support, source, target):
        with model._scope(params):
            c = model._context(support, tf.shape(source)[0])
            code, _ = model.warp.encode(source, target, c)
            prior_mean, prior_logvar = model.warp.prior(source, c)
            return model.warp.prior_features(source, c), code, prior_mean, prior_logvar

    out = [[], [], [], [], []]
    for label in range(class_images.num_classes):
        images = scale_images(class_images.images_of(label), "gan")
        if len(images) <= k_shot:
            continue
        for _ in range(contexts_per_class):
            order = rng.permutation(len(images))
            support, targets = images[order[:k_shot]], images[order[k_shot:]]
            sources = support[rng.integers(0, k_shot, len(targets))]
            for part, value in zip(out, codes(tf.constant(support), tf.constant(sources),
                                              tf.constant(targets))):
                part.append(value.numpy())
            out[4].append(np.full(len(targets), label))
    if not out[4]:
        raise DataError(f"fit_prior: no class has more than k_shot={k_shot} images")
    return [np.concatenate(part) for part in out]


def fit_prior(model, params, class_images, *, components=8, steps=500,
              contexts_per_class=4, k_shot=5, held_out_fraction=0.075, batch_size=256,
              learning_rate=5e-4, dropout=0.2, eval_every=250, seed=0, log=print):
    """Fits a FittedPrior to the posterior codes of real pairs (warp generators).

    The warp generator (`params`, frozen) registers real drawings of each training class
    onto each other (`_prior_fit_data`); the mixture is fitted by maximum likelihood to
    those codes given what the learned prior sees (`WarpGenerator.prior_features`), with
    Adam (with `dropout` on the features, FittedPrior). A fraction of the classes is held
    out: every `eval_every` steps their negative log-likelihood is measured and the best
    weights are kept.

    Returns (FittedPrior, stats): stats has the held-out NLL (nats per code) of the fit
    and of the learned diagonal prior, the step kept, the pair and class counts.
    """
    if model.warp is None:
        raise ConfigError("fit_prior needs a warp generator (--model=warp)")
    rng = np.random.default_rng(seed)
    features, codes, prior_mean, prior_logvar, labels = _prior_fit_data(
        model, params, class_images, k_shot, contexts_per_class, rng)
    classes = np.unique(labels)
    held_classes = rng.permutation(classes)[:max(1, int(round(held_out_fraction
                                                               * len(classes))))]
    held = np.isin(labels, held_classes)
    train = np.flatnonzero(~held)
    if not len(train):
        raise DataError("fit_prior: every class is held out; give more classes")
    prior = FittedPrior(features.shape[1], codes.shape[1], components=components,
                        dropout=dropout)
    # A feature (nearly) constant on the training classes must not blow up on others:
    # its scale is at least a tenth of the features' mean spread.
    spread = features[train].std(0)
    prior.set_normalization(features[train].mean(0),
                            np.maximum(spread, 0.1 * spread.mean() + 1e-6))
    diagonal = 0.5 * np.mean(np.sum(np.square(codes[held] - prior_mean[held])
                                    / np.exp(prior_logvar[held]) + prior_logvar[held]
                                    + np.log(2 * np.pi), 1))
    optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=10.0)
    weights = prior.trainable_variables

    @tf.function(autograph=False)
    def step(x, z):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(prior.log_prob(x, z, training=True))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    held_x, held_z = tf.constant(features[held]), tf.constant(codes[held])
    best = (np.inf, 0, [w.numpy() for w in weights])
    for i in range(1, steps + 1):
        batch = train[rng.integers(0, len(train), batch_size)]
        loss = step(tf.constant(features[batch]), tf.constant(codes[batch]))
        if i % eval_every == 0 or i == steps:
            nll = float(-tf.reduce_mean(prior.log_prob(held_x, held_z)))
            if nll < best[0]:
                best = (nll, i, [w.numpy() for w in weights])
            log(f"[prior] step {i}/{steps} train_nll={float(loss):.2f} "
                f"held_out_nll={nll:.2f} (learned diagonal prior {diagonal:.2f})")
    for w, value in zip(weights, best[2]):
        w.assign(value)
    stats = {"held_out_nll": best[0], "diagonal_prior_held_out_nll": float(diagonal),
             "step": best[1], "steps": steps, "pairs": int(len(codes)),
             "classes": int(len(classes)), "held_out_classes": int(len(held_classes))}
    return prior, stats


def save_fitted_prior(workdir, prior, stats):
    """Writes `<workdir>/fitted_prior.weights.h5` and `fitted_prior.json` (its config
    and the fit's stats)."""
    from tfmeta import train as train_lib
    path = os.path.join(workdir, FITTED_PRIOR_FILE)
    prior.save_weights(path + ".weights.h5")
    train_lib.write_json(workdir, FITTED_PRIOR_FILE + ".json",
                         {"config": prior.get_config(), "stats": stats})


def load_fitted_prior(workdir, model):
    """The FittedPrior saved in `workdir` for `model` (a warp GenerativeModel), or None."""
    path = os.path.join(workdir, FITTED_PRIOR_FILE)
    if not (os.path.exists(path + ".json") and os.path.exists(path + ".weights.h5")):
        return None
    with open(path + ".json") as f:
        prior = FittedPrior(**json.load(f)["config"])
    if (prior.feature_dim, prior.latent_dim) != (model.warp.prior_feature_dim,
                                                 model.latent_dim):
        raise ConfigError(f"{path}.json: fitted for features/codes of width "
                          f"{prior.feature_dim}/{prior.latent_dim}, the model has "
                          f"{model.warp.prior_feature_dim}/{model.latent_dim}")
    prior.load_weights(path + ".weights.h5")
    return prior


class GenerativeModule(tf.Module):
    """The serving contract (see export/): sample and adapt_and_sample, tracked variables.

    If `support_images` are given, they are adapted to once here (`steps` steps) and
    `sample` draws from that adapted generator; otherwise `sample` draws from the
    meta-learned initialisation. `adapt_and_sample` adapts in-graph to any support set.
    """

    def __init__(self, config, model, learner, support_images=None, steps=None, seed=0):
        super().__init__(name="tfmeta_generator")
        if model.requires_support and support_images is None:
            raise ConfigError(f"a {config.model} generator draws from support images and "
                              "has no unconditional samples: export it with "
                              "--support_images (adapt_and_sample then adapts to any others)")
        self.config, self._model, self._learner = config, model, learner
        self.image_shape = model.image_shape
        self.latent_dim = model.latent_dim
        self.meta_variables = [tf_variable(v) for v in model.variables]
        self.update_rule = [tf_variable(v) for v in learner.update_rule_variables]
        self.default_steps = int(steps if steps is not None else config.inner.eval_num_steps)
        self.support = None
        if support_images is not None:
            check_support_images(support_images, model.image_shape)
            support = tf.constant(np.asarray(support_images, np.float32))
            params = adapted_params(learner, model, support, self.default_steps,
                                    tf.constant([seed, 0], tf.int64))
            self.adapted_variables = [tf.Variable(p, trainable=False) for p in params]
            self.support = tf.Variable(support, trainable=False, name="support_images")
        else:
            self.adapted_variables = None

    @property
    def variables(self):
        """Every variable the signatures read: meta-parameters, learned update rule and,
        when adapted at construction, the adapted parameters and the support images."""
        out = list(self.meta_variables) + list(self.update_rule)
        if self.adapted_variables is not None:
            out += list(self.adapted_variables) + [self.support]
        return out

    def sample(self, num_samples, seed):
        """Images drawn with the sampling seed of `adapt_and_sample` (fold_seed([s, 0], 1)):
        a module adapted with seed s and sampled with s equals adapt_and_sample(s)."""
        seed = fold_seed(tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]), 1)
        if self.adapted_variables is None:
            params = [tf.convert_to_tensor(v) for v in self.meta_variables]
            return self._model.sample(params, num_samples, seed)
        params = [tf.convert_to_tensor(v) for v in self.adapted_variables]
        return self._model.sample(params, num_samples, seed, tf.convert_to_tensor(self.support))

    def adapt_and_sample(self, support_images, num_samples, seed, steps):
        """support_images [K, H, W, C] in [-1, 1], int32 num_samples, int64 seed, int32
        steps -> images [num_samples, H, W, C] in [-1, 1] (module-level
        `adapt_and_sample` with seed [seed, 0])."""
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return adapt_and_sample(self._learner, self._model, tf.cast(support_images, tf.float32),
                                num_samples, seed, steps)


def load_generative_module(checkpoint, support_images=None, steps=None, seed=0):
    """A GenerativeModule from a meta_gan checkpoint (optionally adapted to supports)."""
    config, model, learner = restore_model(checkpoint)
    return GenerativeModule(config, model, learner, support_images, steps, seed)


def adapt(checkpoint, support_images, steps=None, seed=0):
    """Adapts a meta-trained generator to K support images; returns a GenerativeModule.

    support_images: uint8 [K,H,W,C] (0..255, bright strokes) or float in [-1, 1].
    Its `.sample(num_samples, seed)` draws new images of the support class in [-1, 1].
    """
    images = check_support_images(support_images)
    if images.dtype == np.uint8:
        images = scale_images(images, "gan")
    return load_generative_module(checkpoint, images, steps, seed)


def check_support_images(support_images, image_shape=None):
    """The support set as an array, or DataError: [K >= 1, H, W, C] (of `image_shape`
    when given), finite, and no blank image (one grey level: all black or all white)."""
    images = np.asarray(support_images)
    if images.ndim != 4 or images.shape[0] < 1 or (
            image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape)):
        want = "H, W, C" if image_shape is None else ", ".join(map(str, image_shape))
        raise DataError(f"support_images must be [K >= 1, {want}]; got shape {images.shape}")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"support_images must be uint8 (0..255) or float in [-1, 1]; got "
                        f"{images.dtype}")
    if not np.all(np.isfinite(images)):
        raise DataError("support_images contain NaN or infinite values")
    flat = images.reshape(images.shape[0], -1)
    blank = np.flatnonzero(flat.max(1) == flat.min(1))
    if blank.size:
        raise DataError(f"support image(s) {blank.tolist()} are blank (a single grey level, "
                        "e.g. all black or all white): every support image must hold a "
                        "drawing")
    return images
