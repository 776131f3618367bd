"""Augmentation-accuracy protocol: does adding generated images help a classifier?

Protocol (Antoniou et al. 2017, "Data Augmentation Generative Adversarial Networks",
arXiv:1711.04340, in the fixed-character form used here):

1. Characters: C unseen characters (default 200) drawn without replacement by
   `numpy.random.default_rng(selection_seed)` (default 0) from the Omniglot
   *evaluation* split (never background characters: the split is checked and, given
   `background_class_names`, so is disjointness). The same C characters are used for
   every method, n_real and seed.
2. For each repeat seed s (default 0, 1, 2) and each n_real in (5, 10, 15): every
   character's 20 drawings are permuted by `default_rng([s, n_real])`; the first n_real
   are the real training (= support) images, the other 20 - n_real the test images.
   The split is identical for all methods (a paired comparison).
3. For each method, `generate_fn(support uint8 [n_real, H, W, C], G, seed) -> uint8
   [G', H, W, C]` (G' <= G, G = `num_generated`, default 10) is called once per
   character with a seed derived from (s, n_real, character index); the images are
   labelled with that character. `no_augmentation` returns G' = 0.
4. A C-way CNN (3 blocks of 3x3 conv 32/64/64 + ReLU + 2x2 max-pool, then a linear
   layer; He-normal init from `default_rng([s, 1000])`, identical for all methods) is
   trained from scratch on real + generated images with Adam (lr 1e-3, betas 0.9/0.999)
   for a fixed `train_steps` (default 500) mini-batches of `batch_size` (default 64)
   drawn as successive seeded permutations. The number of optimiser steps is the same
   with and without augmentation, so augmentation changes what is learned from, not
   how long. Inputs are uint8 / 255 (ink = 1); no other augmentation, no normalisation.
5. The score is top-1 accuracy on the C * (20 - n_real) test images. Per method and
   n_real we report the per-seed accuracies, their mean and a 95% confidence interval
   of the mean from the t-distribution with (#seeds - 1) degrees of freedom.
6. Optional real reference (`held_real` = h > 0): after the n_real support drawings,
   the next h drawings of each character's permutation are held out of the test set,
   and a method "real_held_out" adds them, cycled to `num_generated` images, like a
   generator's images. Every method is then tested on the other 20 - n_real - h
   drawings, so "how useful are G generated images" is read against "how useful are h
   more real drawings by other people" on the same test images (a paired comparison;
   the n_real curve of `tfmeta.eval.generators.real_drawing_equivalents` compares
   different test sets). h = 0 is the protocol above, unchanged.

Everything is batched; one compiled train step serves all runs (fixed shapes).
"""

import time

import numpy as np
import scipy.stats

from tfmeta.data.preprocess import scale_images
from tfmeta.errors import ConfigError, DataError

__all__ = ["augmentation_accuracy", "select_characters", "to_markdown",
           "confidence_interval", "EVAL_SPLITS", "REAL_HELD_OUT"]

# Splits whose characters no generator meta-trained on: "evaluation" for reported numbers,
# "validation" (held-out background characters) for model selection (trainers.search).
EVAL_SPLITS = ("evaluation", "validation")
# The method name of the real reference of `held_real` (module docstring, point 6).
REAL_HELD_OUT = "real_held_out"
_CONV_WIDTHS = (32, 64, 64)
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPSILON = 1e-7


def select_characters(class_images, num_characters, selection_seed, min_images):
    """Sorted int64 `[num_characters]` class ids with >= min_images images each."""
    eligible = np.flatnonzero(np.bincount(class_images.labels,
                                          minlength=class_images.num_classes) >= min_images)
    if num_characters < 1 or num_characters > eligible.size:
        raise ConfigError(f"num_characters must be in 1..{eligible.size} (classes with >= "
                          f"{min_images} images); got {num_characters}")
    rng = np.random.default_rng(selection_seed)
    return np.sort(rng.choice(eligible, size=num_characters, replace=False)).astype(np.int64)


def confidence_interval(values, level=0.95):
    """(mean, half-width) of a t-distribution interval; half-width None for one value."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, None
    sem = values.std(ddof=1) / np.sqrt(values.size)
    return mean, float(scipy.stats.t.ppf(0.5 + level / 2.0, values.size - 1) * sem)


class _Classifier:
    """The protocol's CNN as plain variables + a hand-written Adam, so one traced step
    serves every run (re-initialised by assignment, never rebuilt)."""

    def __init__(self, image_shape, num_classes, learning_rate):
        import tensorflow as tf

        self.tf = tf
        height, width, channels = image_shape
        shapes, in_channels = [], channels
        for out_channels in _CONV_WIDTHS:
            shapes += [(3, 3, in_channels, out_channels), (out_channels,)]
            in_channels, height, width = out_channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise DataError(f"images {image_shape} are too small for the protocol CNN")
        shapes += [(height * width * in_channels, num_classes), (num_classes,)]
        self.shapes = shapes
        self.params = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.moments = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.velocities = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.step = tf.Variable(0.0)
        self.learning_rate = learning_rate
        spec = tf.TensorSpec([None, *image_shape], tf.float32)
        self.train_step = tf.function(self._train_step, input_signature=[
            spec, tf.TensorSpec([None], tf.int32)])
        self.logits = tf.function(self._logits, input_signature=[spec])

    def reset(self, seed):
        rng = np.random.default_rng(seed)
        for variable, shape in zip(self.params, self.shapes):
            if len(shape) == 1:
                value = np.zeros(shape)
            else:
                fan_in = int(np.prod(shape[:-1]))
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            variable.assign(value.astype(np.float32))
        for variable in self.moments + self.velocities:
            variable.assign(self.tf.zeros_like(variable))
        self.step.assign(0.0)

    def _logits(self, x):
        tf = self.tf
        for layer in range(len(_CONV_WIDTHS)):
            kernel, bias = self.params[2 * layer], self.params[2 * layer + 1]
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        return x @ self.params[-2] + self.params[-1]

    def _train_step(self, x, y):
        tf = self.tf
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=self._logits(x)))
        grads = tape.gradient(loss, self.params)
        self.step.assign_add(1.0)
        beta1, beta2 = _ADAM_BETAS
        rate = self.learning_rate * tf.sqrt(1.0 - beta2 ** self.step) / (1.0 - beta1 ** self.step)
        for p, m, v, g in zip(self.params, self.moments, self.velocities, grads):
            m.assign(beta1 * m + (1.0 - beta1) * g)
            v.assign(beta2 * v + (1.0 - beta2) * tf.square(g))
            p.assign_sub(rate * m / (tf.sqrt(v) + _ADAM_EPSILON))
        return loss

    def fit_and_score(self, x_train, y_train, x_test, y_test, init_seed, order_seed,
                      train_steps, batch_size):
        tf = self.tf
        self.reset(init_seed)
        rng = np.random.default_rng(order_seed)
        needed = train_steps * batch_size
        order = np.concatenate([rng.permutation(x_train.shape[0])
                                for _ in range(-(-needed // x_train.shape[0]))])[:needed]
        x_train = tf.constant(x_train)
        y_train = tf.constant(y_train)
        for step in range(train_steps):
            batch = order[step * batch_size:(step + 1) * batch_size]
            loss = self.train_step(tf.gather(x_train, batch), tf.gather(y_train, batch))
        if not np.isfinite(float(loss)):
            raise DataError("augmentation classifier diverged (non-finite loss); check the "
                            "generated images")
        correct = 0
        for start in range(0, x_test.shape[0], 1024):
            logits = self.logits(tf.constant(x_test[start:start + 1024])).numpy()
            correct += int(np.sum(np.argmax(logits, 1) == y_test[start:start + 1024]))
        return correct / x_test.shape[0]


def _derived_seed(*parts):
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _check_generated(images, name, num, image_shape):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != image_shape \
            or images.shape[0] > num:
        raise DataError(f"generate_fn {name!r} must return uint8 [<= {num}, "
                        f"{', '.join(map(str, image_shape))}]; got {images.dtype} "
                        f"{images.shape}")
    return images


def _cell_split(per_class, seed, n, held=0):
    """The (seed, n_real) split shared by every method: per-character support uint8
    [n, H, W, C] list, x_real [C*n, H, W, C] / y_real int32 [C*n], x_test / y_test (the
    drawings after the support and the `held` held-out ones), and the per-character held-
    out drawings [held, H, W, C] list. held = 0 leaves the support and test sets as
    without it."""
    rng = np.random.default_rng([seed, n])
    splits = [rng.permutation(images.shape[0]) for images in per_class]
    support = [images[p[:n]] for images, p in zip(per_class, splits)]
    held_out = [images[p[n:n + held]] for images, p in zip(per_class, splits)]
    x_real = np.concatenate(support)
    y_real = np.repeat(np.arange(len(per_class), dtype=np.int32), n)
    x_test = np.concatenate([im[p[n + held:]] for im, p in zip(per_class, splits)])
    y_test = np.concatenate([np.full(im.shape[0] - n - held, i, np.int32)
                             for i, im in enumerate(per_class)])
    return support, x_real, y_real, x_test, y_test, held_out


def _generated(name, generate_fn, cell, seed, n, num_generated, image_shape):
    """Per-character added images of one method on one split: the generator's, or for
    REAL_HELD_OUT the held-out real drawings cycled to num_generated."""
    support, held_out = cell[0], cell[5]
    if name == REAL_HELD_OUT:
        return [h[np.arange(num_generated) % h.shape[0]] for h in held_out]
    return [_check_generated(generate_fn(s, num_generated, _derived_seed(seed, n, i)),
                             name, num_generated, image_shape)
            for i, s in enumerate(support)]


def _method_cell(classifier, name, generate_fn, cell, seed, n, *, num_generated,
                 image_shape, train_steps, batch_size):
    """One method on one (seed, n_real) split: (test accuracy, generated images per
    character). Generates for every character, trains the classifier from its seeded
    init on real + generated images, scores it on the test images."""
    support, x_real, y_real, x_test, y_test, _ = cell
    generated = _generated(name, generate_fn, cell, seed, n, num_generated, image_shape)
    x_train = np.concatenate([x_real] + generated)
    y_train = np.concatenate([y_real] + [np.full(g.shape[0], i, np.int32)
                                         for i, g in enumerate(generated)])
    accuracy = classifier.fit_and_score(
        scale_images(x_train, "classifier"), y_train,
        scale_images(x_test, "classifier"), y_test,
        init_seed=[seed, 1000], order_seed=[seed, n, 2000],
        train_steps=train_steps, batch_size=batch_size)
    return accuracy, (x_train.shape[0] - x_real.shape[0]) / len(support)


def _summary(per_seed, counts, num_test_images):
    """The results entry of one method and n_real (see `augmentation_accuracy`)."""
    mean, half = confidence_interval(per_seed)
    return {"accuracy_per_seed": per_seed, "mean": mean, "ci95_halfwidth": half,
            "ci95": None if half is None else [mean - half, mean + half],
            "num_test_images": int(num_test_images),
            "generated_per_character": float(np.mean(counts))}


def _selected_characters(class_images, num_characters, selection_seed, min_images,
                         background_class_names):
    """(class ids, names) of the protocol's characters; DataError if any is a
    background class."""
    characters = select_characters(class_images, num_characters, selection_seed,
                                   min_images)
    names = [class_images.class_names[c] for c in characters]
    if background_class_names is not None:
        leaked = sorted(set(names) & set(background_class_names))
        if leaked:
            raise DataError(f"selected characters include background classes {leaked[:5]}; "
                            "pass the evaluation split")
    return characters, names


def _checked_settings(split, generators, n_real, seeds, num_generated, train_steps,
                      held_real=0):
    """(n_real, seeds) as int tuples; ConfigError for settings the protocol refuses."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"the augmentation protocol evaluates unseen characters: split "
                          f"must be one of {EVAL_SPLITS}; got {split!r}")
    if not generators:
        raise ConfigError("generators must name at least one method")
    n_real = tuple(int(n) for n in n_real)
    seeds = tuple(int(s) for s in seeds)
    if min(n_real) < 1 or not seeds or num_generated < 0 or train_steps < 1:
        raise ConfigError("need n_real >= 1, at least one seed, num_generated >= 0, "
                          "train_steps >= 1")
    if held_real < 0 or REAL_HELD_OUT in generators:
        raise ConfigError(f"held_real must be >= 0 and {REAL_HELD_OUT!r} is the name of "
                          f"its reference method; got held_real={held_real}, methods "
                          f"{sorted(generators)}")
    return n_real, seeds


def augmentation_accuracy(class_images, generators, *, split, num_characters=200,
                          n_real=(5, 10, 15), num_generated=10, seeds=(0, 1, 2),
                          selection_seed=0, train_steps=500, batch_size=64,
                          learning_rate=1e-3, background_class_names=None, log_fn=None,
                          held_real=0):
    """Runs the protocol of the module docstring for every method in `generators`.

    Args:
      class_images: `tfmeta.data.ClassImages` of unseen characters (uint8 [N, H, W, C]).
      generators: {method name: generate_fn} (see `tfmeta.eval.baselines`).
      split: the split `class_images` came from; must be in EVAL_SPLITS.
      background_class_names: if given, any overlap with the selected characters is an
        error (the protocol must only see classes the generators never trained on).
      held_real: real drawings per character held out of the test set for the
        REAL_HELD_OUT reference method (module docstring, point 6); 0: none.
      Other args: see the module docstring.

    Returns:
      JSON-able dict: {"protocol": {...settings, "characters": [names]},
      "methods": {name: {str(n_real): {"accuracy_per_seed", "mean", "ci95_halfwidth",
      "ci95", "num_test_images", "generated_per_character"}}},
      "runtime_s": {name: seconds}}. Only "runtime_s" varies between identical calls.
    """
    n_real, seeds = _checked_settings(split, generators, n_real, seeds, num_generated,
                                      train_steps, held_real)
    if held_real:
        generators = {REAL_HELD_OUT: None, **generators}
    image_shape = tuple(int(d) for d in class_images.images.shape[1:])
    characters, names = _selected_characters(class_images, num_characters, selection_seed,
                                             max(n_real) + held_real + 1,
                                             background_class_names)
    per_class = [class_images.images_of(c) for c in characters]
    classifier = _Classifier(image_shape, len(characters), learning_rate)
    methods = {name: {} for name in generators}
    runtime = {name: 0.0 for name in generators}
    for n in n_real:
        per_seed = {name: [] for name in generators}
        counts = {name: [] for name in generators}
        for seed in seeds:
            cell = _cell_split(per_class, seed, n, held_real)
            for name, generate_fn in generators.items():
                start = time.perf_counter()
                accuracy, count = _method_cell(
                    classifier, name, generate_fn, cell, seed, n,
                    num_generated=num_generated, image_shape=image_shape,
                    train_steps=train_steps, batch_size=batch_size)
                runtime[name] += time.perf_counter() - start
                per_seed[name].append(accuracy)
                counts[name].append(count)
                if log_fn is not None:
                    log_fn(f"augmentation {name} n_real={n} seed={seed}: accuracy "
                           f"{accuracy:.4f}")
        num_test_images = cell[4].shape[0]
        for name in generators:
            methods[name][str(n)] = _summary(per_seed[name], counts[name], num_test_images)
    protocol = {"split": split, "num_characters": len(characters), "n_real": list(n_real),
                "num_generated": int(num_generated), "held_real": int(held_real),
                "seeds": list(seeds),
                "selection_seed": int(selection_seed), "train_steps": int(train_steps),
                "batch_size": int(batch_size), "learning_rate": float(learning_rate),
                "classifier": f"conv3x3 {list(_CONV_WIDTHS)} + ReLU + maxpool, linear; Adam",
                "characters": names}
    return {"protocol": protocol, "methods": methods,
            "runtime_s": {k: round(v, 3) for k, v in runtime.items()}}


def to_markdown(results, sample_metrics=None):
    """Markdown table: one row per method, accuracy (%) mean ± 95% CI per n_real.

    sample_metrics: optional {method: {column: float or None} or None} (e.g.
    `tfmeta.eval.baselines.sample_metrics(...)["methods"]`) appended as extra columns,
    in first-seen order; missing values are left blank.
    """
    protocol = results["protocol"]
    columns = [f"n_real={n}" for n in protocol["n_real"]]
    extra = list(dict.fromkeys(c for m in (sample_metrics or {}).values() if m for c in m))
    lines = ["| method | " + " | ".join(columns + extra) + " |",
             "|---" * (1 + len(columns) + len(extra)) + "|"]
    for name, by_n in results["methods"].items():
        cells = []
        for n in protocol["n_real"]:
            entry = by_n[str(n)]
            half = entry["ci95_halfwidth"]
            cells.append(f"{100 * entry['mean']:.1f}" +
                         ("" if half is None else f" ± {100 * half:.1f}"))
        row = (sample_metrics or {}).get(name) or {}
        cells += ["" if row.get(c) is None else f"{row[c]:.3g}" for c in extra]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    held = protocol.get("held_real", 0)
    lines.append(
        f"\nAccuracy (%) of a {protocol['num_characters']}-way CNN on held-out real "
        f"drawings; {protocol['num_generated']} generated images per character added; "
        + (f"{held} more real drawings per character held out of the test set and added "
           f"by {REAL_HELD_OUT} (cycled to {protocol['num_generated']}); " if held else "") +
        f"mean ± 95% t-interval over seeds {protocol['seeds']}; {protocol['train_steps']} "
        f"Adam steps of batch {protocol['batch_size']} (tfmeta.eval.augmentation).")
    return "\n".join(lines)
