"""Generate_fns backed by generators, for the evaluation harness (tfmeta.eval).

Every method here is a generate_fn (see `tfmeta.eval.baselines`):

    generate_fn(support_images uint8 [K, H, W, C], num: int, seed: int)
        -> uint8 [num, H, W, C]

built the same way: take an initialisation of a generator (`tfmeta.generation.
GenerativeModel`), adapt it to the K support drawings with THE inner loop
(`tfmeta.meta.adapt`, through `generation.adapted_params`, first order, no variable is
written), then draw `num` samples conditioned on the support set. Only the
initialisation differs between methods:

  * `meta_generator_fn(checkpoint, steps)`: the meta-learned initialisation of a
    trainers.meta_gan run (MAML / Reptile / Meta-SGD / ...): FIGR (arXiv:1901.02199)
    for Reptile over WGAN-GP, CAVIA (arXiv:1810.03642) with adapt_scope=context.
  * `pretrained_finetune_fn(checkpoint, steps)`: the transfer baseline; an
    unconditional generator trained *conventionally* on batches pooled over the
    meta-training characters (`pretrain_generator`: no inner loop, no tasks; the CLI
    uses the meta-learned run's `data.train_split`, so both saw the same characters),
    then fine-tuned on the K images.
  * `scratch_gan_fn(preset, steps)`: "GAN from scratch": a freshly initialised generator
    of the same preset family trained only on the K images.

Equal adaptation steps: the meta-learned and the pretrained generator are adapted with
the same update rule (the checkpoint config's `inner.optimizer` / `inner.lr`; the CLI
copies the meta-learned run's inner config into the pretraining config) and the same
number of steps `steps`, so the comparison isolates what meta-learning adds to the
initialisation. The scratch baseline usually needs more steps (its own count).

Seeds: a call with seed s adapts with the stateless seed [s, 0] and samples with
fold_seed([s, 0], 1), exactly as the serving module's `adapt_and_sample` does, so the
harness samples equal the exported model's samples. Same (support, num, seed) → same
images. Adapt + sample is one tf.function with a dynamic-K input signature and the step
count as a tensor (a graph loop), so it traces once for every K and step count.

Reporting for trainers.evaluate: `augmentation_gains` (paired gain over no
augmentation), `real_drawing_equivalents` (a gain read as extra real drawings),
`gains_markdown`, `write_report` (results.json / results.md / TensorBoard).
"""

import dataclasses
import functools
import json
import os

import numpy as np
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import generation
from tfmeta.data import scale_images
from tfmeta.errors import ConfigError, DataError, DivergenceError
from tfmeta.eval.augmentation import confidence_interval
from tfmeta.eval.features import images_to_uint8
from tfmeta.meta import fold_seed
from tfmeta.meta.common import tf_variable
from tfmeta.models import presets

__all__ = ["GeneratorSampler", "meta_generator_fn", "scratch_gan_fn",
           "pretrain_generator", "pretrained_finetune_fn", "ensure_pretrained",
           "method_name", "checkpoint_methods", "augmentation_gains", "gains_markdown",
           "real_drawing_equivalents", "sample_metrics_markdown", "write_report",
           "PRETRAIN_FILE"]

PRETRAIN_FILE = "pretrain.json"   # marks a workdir written by pretrain_generator


class GeneratorSampler:
    """A generate_fn over a GenerativeModel: adapt on the support set, then sample.

    Args:
      model: `generation.GenerativeModel` (its variables are the initialisation).
      learner: a learner of `generation.build_learner` (gives the inner update rule,
        e.g. Meta-SGD's learned rates).
      steps: int >= 0, inner steps on the K support images (0: sample the initialisation).
      name: for messages.
    Attributes: `image_shape` (H, W, C), `steps`, `tracing_count()`, `checkpoint` (the
    path it was restored from, or None).
    """

    def __init__(self, model, learner, steps, name="generator"):
        steps = int(steps)
        if steps < 0:
            raise ConfigError(f"{name}: adaptation steps must be >= 0; got {steps}")
        self.model, self.learner, self.steps, self.name = model, learner, steps, name
        self.checkpoint = None
        self.image_shape = tuple(int(d) for d in model.image_shape)
        # One graph for every K (the support batch dim is None) and every step count
        # (a tensor: adapt() runs a tf.while_loop instead of unrolling). A partial, not a
        # method or closure: TF's retracing detector keys on the code object, so the one
        # trace of each of several samplers would be reported as "retracing".
        # No autograph: the only loop is adapt()'s explicit tf.while_loop.
        self._compiled = tf.function(
            functools.partial(generation.adapt_and_sample, learner, model), autograph=False,
            input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32),
                             tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64),
                             tf.TensorSpec([], tf.int32)])

    def tracing_count(self):
        """How many times the adapt-and-sample graph was traced (1 for every K and n)."""
        return self._compiled.experimental_get_tracing_count()

    def __call__(self, support_images, num, seed, steps=None):
        """uint8 [K, H, W, C] support → uint8 [num, H, W, C] samples (seeded)."""
        support = np.asarray(support_images)
        if support.dtype != np.uint8:
            raise DataError(f"{self.name}: support_images must be uint8; got {support.dtype}")
        generation.check_support_images(support, self.image_shape)
        num = int(num)
        if num <= 0:
            return np.zeros((0,) + self.image_shape, np.uint8)
        out = self._compiled(tf.constant(scale_images(support, "gan")), tf.constant(num),
                             tf.constant([int(seed), 0], tf.int64),
                             tf.constant(self.steps if steps is None else int(steps)))
        out = out.numpy()
        if not np.all(np.isfinite(out)):
            raise DivergenceError(f"{self.name}: non-finite samples after {self.steps} "
                                  "adaptation steps; lower the inner learning rate")
        return images_to_uint8(out, "gan")


def meta_generator_fn(checkpoint, steps=None, sampling=None):
    """generate_fn of a meta-trained generator (a trainers.meta_gan workdir/checkpoint).

    The checkpoint is restored once; each call adapts the meta-parameters to its support
    set with `steps` inner steps (default: the run's `inner.eval_num_steps`) of the
    run's own inner update rule, and samples (with the run's sampling settings, or
    `sampling` overrides: see `generation.restore_model`). Returns a `GeneratorSampler`.
    """
    config, model, learner = generation.restore_model(checkpoint, sampling)
    steps = config.inner.eval_num_steps if steps is None else steps
    sampler = GeneratorSampler(model, learner, steps, name=f"checkpoint {checkpoint}")
    sampler.checkpoint = checkpoint
    return sampler


def scratch_gan_fn(preset, steps, *, image_size=28, channels=1, learning_rate=2e-4,
                   optimizer="adam", gan_loss="wgan_gp", critic_steps=1, latent_dim=0,
                   init_seed=0):
    """generate_fn of the "GAN from scratch" baseline: train only on the K images.

    A GenerativeModel of `preset` (GAN or VAE, as the preset's family says;
    unconditional) is initialised once from `init_seed` and never trained on anything
    else. Each call runs the inner loop (adapt_scope "all": every weight, the critic
    objective then the generator objective per step, `optimizer` at `learning_rate`)
    for `steps` steps from that random initialisation on the support images, then
    samples. Same initialisation for every character, so only the K images differ.
    """
    family = presets.resolve_preset(preset)["family"]
    config = cfg.GenerationConfig(
        model=family, preset=preset, gan_loss=gan_loss, critic_steps=critic_steps,
        latent_dim=latent_dim, context_dim=0, adapt_scope="all",
        data=cfg.DataConfig(image_size=image_size, channels=channels),
        inner=cfg.InnerConfig(num_steps=1, eval_num_steps=steps, lr=learning_rate,
                              optimizer=optimizer, first_order=True),
        outer=cfg.OuterConfig(algorithm="reptile", meta_step_size=1.0)).validate()
    model = generation.GenerativeModel(config, seed=init_seed)
    learner = generation.build_learner(config, model)
    return GeneratorSampler(model, learner, steps, name=f"scratch {preset}")


def _pretrain_config(config):
    """The conventional-training variant of a generation config: unconditional (batches
    mix characters, so a support context would mean nothing), all weights adapted,
    checkpointed with a Reptile learner (only its meta-variables are saved)."""
    return dataclasses.replace(
        config, context_dim=0, adapt_scope="all",
        outer=dataclasses.replace(config.outer, algorithm="reptile",
                                  meta_step_size=min(1.0, config.outer.meta_step_size)),
    ).validate()


def pretrain_generator(config, class_images, num_steps, *, batch_size=64,
                       learning_rate=2e-4, seed=0, workdir=None, log_fn=None):
    """Conventional (non-meta) training of the generator of `config` on pooled images.

    Every step draws `batch_size` images from all characters of `class_images` (uint8
    `ClassImages` of background characters; successive seeded permutations) and applies
    the model's outer objectives in order — GAN: critic loss on the critic, then the
    generator loss on the generator; VAE: the negative ELBO — each with its own Keras
    Adam (beta_1 = 0.5 for GANs, as in DCGAN; 0.9 for the VAE). No inner loop, no tasks:
    this is the initialisation a practitioner would fine-tune without meta-learning.

    The model is unconditional (context_dim = 0, see `_pretrain_config`). With `workdir`
    it writes `config.json`, `checkpoints/ckpt-1` (restorable by
    `generation.restore_model`) and `pretrain.json` (settings).
    Returns (config, model, learner).
    """
    config = _pretrain_config(config)
    if num_steps < 1 or batch_size < 1:
        raise ConfigError(f"pretrain: num_steps and batch_size must be >= 1; got "
                          f"{num_steps}, {batch_size}")
    images = np.asarray(class_images.images)
    if tuple(images.shape[1:]) != (config.data.image_size, config.data.image_size,
                                   config.data.channels):
        raise DataError(f"pretrain: images {images.shape[1:]} do not match the config's "
                        f"{config.data.image_size}px x {config.data.channels} channels")
    model = generation.GenerativeModel(config, seed=seed)
    learner = generation.build_learner(config, model)
    objectives = model.objectives(inner=False)
    beta_1 = 0.5 if config.model == "gan" else 0.9
    import keras
    optimizers = [keras.optimizers.Adam(learning_rate, beta_1=beta_1) for _ in objectives]
    groups = [[model.variables[i] for i in o.indices(len(model.variables))]
              for o in objectives]
    for optimizer, group in zip(optimizers, groups):
        optimizer.build(group)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, *model.image_shape], tf.float32), tf.TensorSpec([2], tf.int64)])
    def train_step(batch_images, step_seed):
        batch = generation.to_batch(batch_images, batch_images)
        losses = []
        for k, (objective, optimizer, group) in enumerate(zip(objectives, optimizers,
                                                              groups)):
            with tf.GradientTape() as tape:
                loss, _ = objective(model.read_params(), batch, fold_seed(step_seed, k))
            grads = tape.gradient(loss, [tf_variable(v) for v in group],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            optimizer.apply_gradients(zip(grads, group))
            losses.append(loss)
        return tf.stack(losses)

    rng = np.random.default_rng(seed)
    order = np.zeros([0], np.int64)
    base_seed = tf.constant([seed, 1], tf.int64)
    names = [o.name for o in objectives]
    for step in range(num_steps):
        if order.size < batch_size:
            order = np.concatenate([order, rng.permutation(images.shape[0])])
        index, order = order[:batch_size], order[batch_size:]
        losses = train_step(tf.constant(scale_images(images[index], "gan")),
                            fold_seed(base_seed, step)).numpy()
        if not np.all(np.isfinite(losses)):
            raise DivergenceError(f"pretrain: non-finite loss at step {step} "
                                  f"({dict(zip(names, losses))}); lower learning_rate")
        if log_fn is not None and (step + 1) % max(1, num_steps // 10) == 0:
            log_fn(f"[pretrain] step {step + 1}/{num_steps} " + " ".join(
                f"{n}={v:.4g}" for n, v in zip(names, losses)))
    if workdir is not None:
        from tfmeta import train as train_lib
        train_lib.write_json(workdir, "config.json", cfg.to_dict(config))
        ckpt, step_var, _ = train_lib.make_checkpoint(learner)
        step_var.assign(num_steps)
        ckpt.save(os.path.join(workdir, "checkpoints", "ckpt"))
        train_lib.write_json(workdir, PRETRAIN_FILE, _pretrain_settings(
            num_steps, batch_size, learning_rate, seed, class_images))
    return config, model, learner


def _pretrain_settings(num_steps, batch_size, learning_rate, seed, class_images):
    return {"num_steps": int(num_steps), "batch_size": int(batch_size),
            "learning_rate": float(learning_rate), "seed": int(seed),
            "num_classes": int(class_images.num_classes),
            "num_images": int(len(class_images.labels))}


def ensure_pretrained(workdir, config, load_images, num_steps, *, batch_size=64,
                      learning_rate=2e-4, seed=0, log_fn=None):
    """`workdir` holding a pretrained generator for these settings (trained if missing).

    load_images: callable () -> ClassImages of the background/training characters
    (called only when training is needed). A workdir pretrained with other settings is
    an error rather than silently reused or overwritten.
    """
    marker = os.path.join(workdir, PRETRAIN_FILE)
    wanted = {"num_steps": int(num_steps), "batch_size": int(batch_size),
              "learning_rate": float(learning_rate), "seed": int(seed)}
    if os.path.exists(marker):
        with open(marker) as f:
            saved = json.load(f)
        if {k: saved.get(k) for k in wanted} != wanted:
            raise ConfigError(f"{workdir} holds a generator pretrained with {saved}, not "
                              f"{wanted}; choose another --out or delete it")
        if log_fn is not None:
            log_fn(f"[pretrain] reusing {workdir}")
        return workdir
    pretrain_generator(config, load_images(), num_steps, batch_size=batch_size,
                       learning_rate=learning_rate, seed=seed, workdir=workdir,
                       log_fn=log_fn)
    return workdir


def pretrained_finetune_fn(checkpoint, steps=None):
    """generate_fn of the transfer baseline: a `pretrain_generator` workdir fine-tuned on
    the K images with `steps` steps of its config's inner update rule (give the same
    `steps` as the meta-learned generator it is compared with)."""
    if not os.path.exists(os.path.join(str(checkpoint), PRETRAIN_FILE)):
        raise ConfigError(f"{checkpoint!r} is not a pretrain_generator workdir (no "
                          f"{PRETRAIN_FILE}); the transfer baseline must be trained "
                          "conventionally, not meta-learned: give its workdir")
    config, model, learner = generation.restore_model(checkpoint)
    steps = config.inner.eval_num_steps if steps is None else steps
    return GeneratorSampler(model, learner, steps, name=f"pretrained {checkpoint}")


def method_name(config):
    """Default method name of a generation config: `<algorithm>_<model>_<preset>`
    (+ `_ctx<d>` for a context-conditioned model)."""
    name = f"{config.outer.algorithm}_{config.model}_{config.preset}"
    return name + (f"_ctx{config.context_dim}" if config.context_dim else "")


def checkpoint_methods(checkpoints, names=None, steps=None, taken=(), log_fn=None,
                       sampling=None):
    """{method name: meta_generator_fn} for meta_gan checkpoints, in the given order.

    names: one per checkpoint (default `method_name` of its config; a name already in
    `taken` or used before gets a numeric suffix). steps: inner steps for all (None:
    each run's `inner.eval_num_steps`). sampling: sampling overrides for all (a dict or
    "field=value,..."; see `generation.restore_model`), or one text per checkpoint
    separated by "|".
    """
    checkpoints = list(checkpoints)
    names = list(names or [None] * len(checkpoints))
    if len(names) != len(checkpoints):
        raise ConfigError(f"{len(names)} method names for {len(checkpoints)} checkpoints; "
                          "give one name per checkpoint")
    overrides = [sampling] * len(checkpoints)
    if isinstance(sampling, str) and "|" in sampling:
        overrides = sampling.split("|")
        if len(overrides) != len(checkpoints):
            raise ConfigError(f"{len(overrides)} '|'-separated sampling entries for "
                              f"{len(checkpoints)} checkpoints; give one for all or one "
                              "per checkpoint")
    methods = {}
    for path, name, override in zip(checkpoints, names, overrides):
        fn = meta_generator_fn(path, steps, override)
        name = name or method_name(fn.model.config)
        base, i = name, 2
        while name in methods or name in taken:
            name, i = f"{base}_{i}", i + 1
        methods[name] = fn
        if log_fn is not None:
            log_fn(f"[methods] {name}: {path} ({fn.steps} adaptation steps)")
    return methods


# ---- reporting ------------------------------------------------------------------------

def augmentation_gains(results, baseline="no_augmentation"):
    """Paired gain of each method over `baseline` in the augmentation protocol.

    results: `augmentation_accuracy(...)` output containing `baseline`. For every other
    method and n_real, the per-seed differences accuracy(method) - accuracy(baseline)
    (same characters, splits and classifier init per seed: a paired comparison) with
    their mean and 95% t-interval half-width. Returns {method: {str(n_real): {...}}}.
    """
    base = _baseline(results, baseline, "augmentation gains")

    def gain(n, entry):
        diffs = list(np.subtract(entry["accuracy_per_seed"], base[n]["accuracy_per_seed"]))
        mean, half = confidence_interval(diffs)
        return {"per_seed": [float(d) for d in diffs], "mean": mean, "ci95_halfwidth": half}

    return _per_method(results, baseline, gain)


def _baseline(results, baseline, what):
    """The baseline method's {str(n_real): entry}; ConfigError naming `what` if absent."""
    if baseline not in results["methods"]:
        raise ConfigError(f"{what} need the {baseline!r} method in the results")
    return results["methods"][baseline]


def _per_method(results, baseline, cell):
    """{method: {str(n_real): cell(n, entry)}} for every method but the baseline."""
    return {name: {n: cell(n, entry) for n, entry in by_n.items()}
            for name, by_n in results["methods"].items() if name != baseline}


def real_drawing_equivalents(results, baseline="no_augmentation"):
    """How many extra *real* drawings per character each method's images are worth.

    The baseline's mean accuracies at the protocol's n_real values (5, 10, 15) form a
    curve "accuracy with n real drawings"; a method's mean accuracy at n_real = n is
    read on it by linear interpolation, giving x real drawings, and the method is worth
    x - n extra real drawings (e.g. 55.6 / 72.4 / 78.9% at 5 / 10 / 15: a method at
    5 real scoring 69.0% is worth 5 + 5 * 13.4 / 16.8 - 5 = 4.0 drawings). The curve's
    points use different test drawings (20 - n per character), so this is an estimate.

    Returns {method: {str(n): worth or None}}; None where the accuracy is below the
    curve at n or above its last point (no extrapolation), or where the baseline has
    fewer than two n_real values or its curve does not rise.
    """
    base = _baseline(results, baseline, "real-drawing equivalents")
    points = sorted((int(n), float(e["mean"])) for n, e in base.items())
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    rising = len(points) >= 2 and all(b > a for a, b in zip(ys, ys[1:]))

    def worth(n, entry):
        n_int, accuracy = int(n), float(entry["mean"])
        usable = rising and n_int in xs and ys[xs.index(n_int)] <= accuracy <= ys[-1]
        return float(np.interp(accuracy, ys, xs)) - n_int if usable else None

    return _per_method(results, baseline, worth)


def gains_markdown(gains, baseline="no_augmentation", equivalents=None):
    """Markdown table of `augmentation_gains` in percentage points; with `equivalents`
    (`real_drawing_equivalents`), each cell also says how many extra real drawings the
    method's images are worth ("≈ 4.0 real"; "—" where the curve cannot say; nothing
    when it can say nothing, e.g. a run with one n_real)."""
    if equivalents is not None and all(w is None for by_n in equivalents.values()
                                       for w in by_n.values()):
        equivalents = None
    columns = list(dict.fromkeys(n for by_n in gains.values() for n in by_n))
    lines = ["| method | " + " | ".join(f"gain n_real={n} (pp)" for n in columns) + " |",
             "|---" * (1 + len(columns)) + "|"]
    for name, by_n in gains.items():
        cells = []
        for n in columns:
            g = by_n[n]
            cell = f"{100 * g['mean']:+.1f}" + (
                "" if g["ci95_halfwidth"] is None else f" ± {100 * g['ci95_halfwidth']:.1f}")
            if equivalents is not None:
                worth = equivalents.get(name, {}).get(n)
                cell += " (—)" if worth is None else f" (≈ {worth:.1f} real)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nGain = accuracy(method) - accuracy({baseline}), paired per seed; "
                 "mean ± 95% t-interval.")
    if equivalents is not None:
        lines.append(f"(≈ x real): the method's images are worth x extra real drawings per "
                     f"character on {baseline}'s accuracy curve over n_real "
                     "(tfmeta.eval.generators.real_drawing_equivalents).")
    return "\n".join(lines)


SAMPLE_COLUMNS = ("class_consistency", "frechet", "diversity", "diversity_ratio",
                  "copy_rate")


def sample_metrics_markdown(samples_by_k):
    """Markdown table of `sample_metrics` results for several K ({str(K): result}).

    One row per (K, method), plus the real support drawings ("real (support)") and the
    held-out real drawings ("real (held-out)": diversity and copy rate, the references
    of diversity_ratio and copy_rate).
    """
    lines = ["| K | method | " + " | ".join(SAMPLE_COLUMNS) + " |",
             "|---" * (2 + len(SAMPLE_COLUMNS)) + "|"]

    def row(k, name, values):
        cells = ["" if values.get(c) is None else f"{values[c]:.3g}" for c in SAMPLE_COLUMNS]
        lines.append(f"| {k} | {name} | " + " | ".join(cells) + " |")

    for k, result in samples_by_k.items():
        row(k, "real (support)", result["real"])
        row(k, "real (held-out)", {**result["real_heldout"], "diversity_ratio": 1.0})
        for name, values in result["methods"].items():
            if values:
                row(k, name, values)
    lines.append("\ndiversity_ratio: diversity / held-out real drawings' diversity at equal "
                 "images per character; copy_rate: share closer to a support than every "
                 "reference held-out drawing (tfmeta.eval.sample_metrics).")
    return "\n".join(lines)


def write_report(out_dir, results, samples, extra=None):
    """Writes the evaluation outputs of `augmentation_accuracy` + `sample_metrics`.

    `<out_dir>/results.json`: {"augmentation": results, "gains": augmentation_gains,
    "real_drawing_equivalents": ..., "samples": samples, **extra}; `results.md`: the
    accuracy table with sample-metric columns (`to_markdown`) and the gain table (with
    each gain's worth in real drawings); `tensorboard/`: scalars
    `accuracy/<method>/n_real=<n>`, `gain/<method>/n_real=<n>`, `samples/<method>/<key>`
    at step 0. Returns the Markdown text.
    """
    from tfmeta import summaries
    from tfmeta import train as train_lib
    from tfmeta.eval.augmentation import to_markdown

    gains = augmentation_gains(results)
    equivalents = real_drawing_equivalents(results)
    train_lib.write_json(out_dir, "results.json", {
        "augmentation": results, "gains": gains, "real_drawing_equivalents": equivalents,
        "samples": samples, **(extra or {})})
    table = (to_markdown(results, samples["methods"]) + "\n\n"
             + gains_markdown(gains, equivalents=equivalents) + "\n")
    if extra and extra.get("samples_by_k_shot"):
        table += "\n" + sample_metrics_markdown(extra["samples_by_k_shot"]) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(table)
    scalars = {f"accuracy/{m}/n_real={n}": e["mean"]
               for m, by_n in results["methods"].items() for n, e in by_n.items()}
    scalars.update({f"gain/{m}/n_real={n}": g["mean"]
                    for m, by_n in gains.items() for n, g in by_n.items()})
    scalars.update({f"samples/{m}/{k}": v for m, row in samples["methods"].items() if row
                    for k, v in row.items() if v is not None})
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    summaries.write_scalars(writer, scalars, step=0)
    writer.flush()
    writer.close()
    return table
