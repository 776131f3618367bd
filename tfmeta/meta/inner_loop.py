"""The one functional inner loop of tfmeta: fast weights as tensors, update rules as functions.

Parameters are *lists of tensors* aligned with a list of `tf.Variable`s (a learner's
`variables`, e.g. `generator.trainable_variables + critic.trainable_variables`). Nothing
here assigns to a variable: adaptation returns new tensors, so an outer `tf.GradientTape`
that read the variables sees the whole unrolled computation and second-order MAML
(Finn et al. 2017, arXiv:1703.03400) gets exact meta-gradients.

A loss is `loss_fn(params, batch, seed) -> (scalar, aux)`:
  * `params`: list of tensors, the full list (a loss picks the ones it needs);
  * `batch`: any nested structure of tensors (one task's support or query data);
  * `seed`: int64 `[2]` stateless RNG seed (use `tf.random.stateless_*` ops with it);
  * returns a scalar float loss and a dict `{name: scalar}` of auxiliary metrics.
An `Objective(loss_fn, param_indices)` says which parameters the loss updates. An inner
step applies each objective in order, each seeing the parameters already updated by the
objectives before it (a GAN: critic objective on D's indices, then generator objective on
G's indices — alternating updates, as in a GAN training step).
"""

from typing import NamedTuple

import tensorflow as tf

from tfmeta.errors import ConfigError

__all__ = [
    "Objective", "AdaptResult", "SGD", "Adam", "adapt", "keras_loss", "stateless_apply",
    "param_slices", "fold_seed", "minibatch_objective",
]


def fold_seed(seed, *data):
    """Folds integers (Python or scalar tensors) into a stateless seed.

    seed: int64 `[2]` tensor (or anything convertible). Returns int64 `[2]`. Used to derive
    independent per-step / per-task / per-objective seeds from one base seed.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    for d in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int64))
    return seed


class Objective:
    """A loss and the indices of the parameters it updates (None = all).

    loss_fn: `(params, batch, seed) -> (scalar loss, aux dict of scalars)`; a bare scalar
      return is accepted and means an empty aux dict.
    param_indices: sequence of ints into the parameter list, or None for all parameters.
    name: used in metric names (`query_<name>`, `support_<name>_first`, ...).
    """

    def __init__(self, loss_fn, param_indices=None, name="loss"):
        if not callable(loss_fn):
            raise ConfigError(f"Objective loss_fn must be callable, got {loss_fn!r}")
        self.loss_fn = loss_fn
        self.param_indices = None if param_indices is None else tuple(
            int(i) for i in param_indices)
        self.name = name

    def indices(self, num_params):
        """The parameter indices as a tuple, validated against `num_params`."""
        if self.param_indices is None:
            return tuple(range(num_params))
        bad = [i for i in self.param_indices if not 0 <= i < num_params]
        if bad or not self.param_indices:
            raise ConfigError(
                f"Objective {self.name!r}: param_indices {self.param_indices} must be a "
                f"non-empty subset of range({num_params}) (the learner's variable list)")
        return self.param_indices

    def __call__(self, params, batch, seed):
        """Evaluates the loss; always returns `(loss, aux_dict)`."""
        out = self.loss_fn(params, batch, seed)
        if isinstance(out, (tuple, list)):
            loss, aux = out
            return loss, dict(aux or {})
        return out, {}

    def __repr__(self):
        return f"Objective(name={self.name!r}, param_indices={self.param_indices})"


_MINIBATCH_STREAM = 0x6D62   # folded into an objective's seed: the minibatch draw's own


def minibatch_objective(objective, batch_size):
    """`objective` evaluated on `batch_size` examples of its batch, a different random
    subset (without replacement) at every call: every leaf of the batch is gathered along
    its leading axis by a permutation drawn from the call's seed, so each inner step of
    `adapt` sees its own minibatch (step s gets seed `fold_seed(seed, s, k)`), seeded and
    repeatable. A batch of at most `batch_size` examples is used whole (in a permuted
    order). Nichol et al. (2018) train Reptile's inner loop on minibatches of 10 of a
    task's 50 images; Finn et al. take every inner step on the whole support.
    """
    if batch_size < 1:
        raise ConfigError(f"minibatch_objective needs batch_size >= 1, got {batch_size}")

    def loss_fn(params, batch, seed):
        n = tf.shape(tf.nest.flatten(batch)[0])[0]
        draw = tf.random.stateless_uniform([n], fold_seed(seed, _MINIBATCH_STREAM))
        take = tf.argsort(draw)[:tf.minimum(batch_size, n)]
        return objective(params, tf.nest.map_structure(lambda x: tf.gather(x, take), batch),
                         seed)

    return Objective(loss_fn, objective.param_indices, objective.name)


class AdaptResult(NamedTuple):
    """Result of `adapt`.

    params: list of adapted parameter tensors (aligned with the input list).
    state: the update rule's final state (e.g. Adam moments).
    losses: float tensor `[num_steps, num_objectives]`, each objective's loss *before* the
      update it drove (row s = inner step s).
    """
    params: list
    state: object
    losses: tf.Tensor


def _learning_rates(learning_rate, name):
    """Normalises a learning rate spec to a function `(index, dtype) -> tensor`."""
    if isinstance(learning_rate, (list, tuple)):
        rates = list(learning_rate)

        def lr(i, dtype):
            if i >= len(rates):
                raise ConfigError(f"{name}: {len(rates)} per-parameter learning rates but "
                                  f"parameter index {i} was updated; pass one per parameter")
            if isinstance(rates[i], (int, float)):
                return tf.constant(rates[i], dtype)
            return tf.cast(tf.convert_to_tensor(rates[i]), dtype)
        return lr
    if isinstance(learning_rate, (int, float)):
        if learning_rate <= 0:
            raise ConfigError(f"{name}: learning_rate must be > 0, got {learning_rate}")
        # A Python number becomes a constant of the parameter dtype directly (going
        # through float32 would perturb float64 updates at the 1e-8 level).
        return lambda i, dtype: tf.constant(learning_rate, dtype)
    return lambda i, dtype: tf.cast(tf.convert_to_tensor(learning_rate), dtype)


class SGD:
    """Functional gradient descent: `p <- p - lr * g` (lr: float or per-parameter list).

    A per-parameter list holds tensors / variables broadcastable to each parameter; this is
    how Meta-SGD (Li et al. 2017, arXiv:1707.09835) plugs its learned rates in: they are read
    inside the outer tape, so they receive meta-gradients.
    """

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate
        self._lr = _learning_rates(learning_rate, "SGD")

    def init(self, params):
        """Returns the (empty) state."""
        del params
        return ()

    def update(self, params, grads, state, step):
        """Returns `(new_params, state)`; parameters whose grad is None are unchanged."""
        del step
        new = [p if g is None else p - self._lr(i, p.dtype) * g
               for i, (p, g) in enumerate(zip(params, grads))]
        return new, state


def _safe_sqrt(x):
    # d sqrt(x)/dx is infinite at 0, which turns an exactly-zero gradient entry into NaN
    # meta-gradients (inf * 0). Use the subgradient 0 there; values are unchanged.
    positive = x > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, x, tf.ones_like(x))),
                    tf.zeros_like(x))


class Adam:
    """Functional Adam (Kingma & Ba 2015, arXiv:1412.6980), bit-for-bit the Keras 3 formula.

    `alpha_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`, `m += (g - m)(1 - b1)`,
    `v += (g^2 - v)(1 - b2)`, `p -= alpha_t * m / (sqrt(v) + epsilon)` (epsilon not
    bias-corrected, as in keras.optimizers.Adam). State = (counts, m, v), one entry per
    parameter; each parameter counts its own updates, so a parameter shared by two
    objectives gets correct bias correction. Differentiable to any order (sqrt(0) has
    subgradient 0, so exactly-zero gradients give finite meta-gradients).
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self._lr = _learning_rates(learning_rate, "Adam")

    def init(self, params):
        """Returns `(counts, m, v)`: lists of zeros (counts are scalars of each dtype)."""
        counts = [tf.zeros([], p.dtype) for p in params]
        return (counts, [tf.zeros_like(p) for p in params],
                [tf.zeros_like(p) for p in params])

    def update(self, params, grads, state, step):
        """Returns `(new_params, new_state)`; parameters whose grad is None are unchanged."""
        del step
        counts, ms, vs = (list(s) for s in state)
        new = list(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            dtype = p.dtype
            b1, b2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
            counts[i] = counts[i] + 1
            alpha = (self._lr(i, dtype) * tf.sqrt(1 - tf.pow(b2, counts[i]))
                     / (1 - tf.pow(b1, counts[i])))
            ms[i] = ms[i] + (g - ms[i]) * (1 - b1)
            vs[i] = vs[i] + (tf.square(g) - vs[i]) * (1 - b2)
            new[i] = p - alpha * ms[i] / (_safe_sqrt(vs[i]) + tf.constant(self.epsilon, dtype))
        return new, (counts, ms, vs)


def _inner_step(objectives, indices, params, state, batch, step, update_rule, first_order,
                step_seed):
    """One inner step: each objective in order. Returns (params, state, losses [n_obj])."""
    losses = []
    for k, (objective, idx) in enumerate(zip(objectives, indices)):
        # FOMAML: the inner gradients are constants for the outer tape, so
        # d(adapted)/d(initial) = identity. Computing them from stop_gradient copies keeps
        # the whole inner forward/backward off any outer tape (nothing recorded, nothing
        # kept alive for an outer backward pass that would only multiply it by zero).
        source = [tf.stop_gradient(p) for p in params] if first_order else params
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            watched = [source[i] for i in idx]
            tape.watch(watched)
            loss, _ = objective(source, batch, fold_seed(step_seed, k))
        grads = tape.gradient(loss, watched,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        full = [None] * len(params)
        for i, g in zip(idx, grads):
            full[i] = g
        params, state = update_rule.update(params, full, state, step)
        params = list(params)
        losses.append(loss)
    return params, state, tf.stack(losses)


def _recomputed_step(objectives, indices, params, state, batch, step, update_rule,
                     first_order, step_seed):
    """`_inner_step` as a gradient checkpoint: its activations are not kept for the outer
    backward pass but recomputed from the step's inputs (memory for compute). Written
    with tf.custom_gradient: tf.recompute_grad gave wrong meta-gradients here (TF 2.21,
    tested)."""
    fixed = getattr(update_rule, "learning_rate", None)
    if not isinstance(fixed, (int, float)):
        raise ConfigError("recompute=True needs a fixed update rule (SGD/Adam with a float "
                          "learning rate): tensors captured by a recomputed step (learned "
                          "rates) would get no meta-gradient")
    structure = (list(params), state)

    def step_fn(*flat):
        p, st = tf.nest.pack_sequence_as(structure, list(flat))
        p, st, losses = _inner_step(objectives, indices, list(p), st, batch, step,
                                    update_rule, first_order, step_seed)
        return tf.nest.flatten((list(p), st)) + [losses]

    @tf.custom_gradient
    def checkpointed(*flat):
        # Forward: not recorded by outer tapes (custom_gradient records one op).
        outputs = step_fn(*flat)

        def grad_fn(*output_grads):
            # Backward: recompute the step under a tape and pull the output gradients
            # back to the step's inputs (the inner gradient is recomputed inside this
            # tape, so its second-order term is included).
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                inputs = [tf.identity(x) for x in flat]
                tape.watch(inputs)
                again = step_fn(*inputs)
            return tape.gradient(again, inputs, output_gradients=list(output_grads),
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return outputs, grad_fn

    out = checkpointed(*tf.nest.flatten(structure))
    p, st = tf.nest.pack_sequence_as(structure, list(out[:-1]))
    return list(p), st, out[-1]


def adapt(objectives, params, batch, num_steps, update_rule, first_order=False, seed=None,
          state=None, recompute=False):
    """Adapts `params` on `batch` with `num_steps` inner steps. THE inner loop.

    objectives: an `Objective` or a list of them, applied in order every step.
    params: list of float tensors (or variables; they are read once).
    batch: nested structure of tensors passed to every loss (one task's support data).
    num_steps: Python int (the loop is unrolled into the graph) or an int scalar tensor (a
      `tf.while_loop`: one graph for any step count, e.g. a serving signature; outer
      gradients through it are exact too, tested, but the unrolled form is what the
      learners use).
    update_rule: `SGD`, `Adam` or anything with `init(params)` and
      `update(params, grads, state, step) -> (params, state)`.
    first_order: if True, gradients do not flow through the inner gradients (FOMAML).
    seed: int64 `[2]` stateless seed (default [0, 0]); step s, objective k gets
      `fold_seed(seed, s, k)`.
    state: initial update-rule state (default `update_rule.init(params)`).
    recompute: second order only: an outer backward pass keeps only the step boundaries
      and recomputes each unrolled step's activations (less peak memory, ~one more
      forward+inner-backward per step; same meta-gradients, tested). Written with
      `tf.custom_gradient`, not `tf.recompute_grad` (which gave wrong meta-gradients
      here, see `_recomputed_step`). Needs a fixed (float learning-rate) update rule.

    Gradient flow: the inner tapes are ordinary tapes nested inside whatever tape the caller
    holds, so with `first_order=False` a caller's `tape.gradient(f(result.params), theta)`
    is the exact second-order meta-gradient. Never assigns any variable.

    Example (one task's second-order meta-gradient; support and query are
    (images, labels) tuples; tested in tests/test_inner_loop.py):

        xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        objective = Objective(keras_loss(model, lambda logits, b: xent(b[1], logits)))
        with tf.GradientTape() as tape:
            result = adapt(objective, model.trainable_variables, support, 1, SGD(0.4))
            query_loss, _ = objective(result.params, query, None)
        meta_grads = tape.gradient(query_loss, model.trainable_variables)
    """
    if isinstance(objectives, Objective):
        objectives = [objectives]
    objectives = list(objectives)
    if not objectives:
        raise ConfigError("adapt: objectives must hold at least one Objective")
    params = [tf.convert_to_tensor(p) for p in params]
    indices = [o.indices(len(params)) for o in objectives]
    seed = tf.zeros([2], tf.int64) if seed is None else fold_seed(seed)
    if state is None:
        state = update_rule.init(params)
    loss_dtype = params[0].dtype

    if isinstance(num_steps, int):
        if num_steps < 0:
            raise ConfigError(f"adapt: num_steps must be >= 0, got {num_steps}")
        rows = []
        step_fn = _recomputed_step if recompute and not first_order else _inner_step
        for s in range(num_steps):
            params, state, losses = step_fn(
                objectives, indices, params, state, batch, tf.constant(s, tf.int64),
                update_rule, first_order, fold_seed(seed, s))
            rows.append(losses)
        if rows:
            losses = tf.stack(rows)
        else:
            losses = tf.zeros([0, len(objectives)], loss_dtype)
        return AdaptResult(params, state, losses)

    num_steps = tf.cast(num_steps, tf.int64)
    array = tf.TensorArray(loss_dtype, size=tf.cast(num_steps, tf.int32),
                           element_shape=[len(objectives)])

    def body(s, params, state, array):
        params, state, losses = _inner_step(
            objectives, indices, list(params), state, batch, s, update_rule, first_order,
            fold_seed(seed, s))
        return s + 1, params, state, array.write(tf.cast(s, tf.int32),
                                                 tf.cast(losses, loss_dtype))

    _, params, state, array = tf.while_loop(
        lambda s, *_: s < num_steps, body,
        (tf.constant(0, tf.int64), params, state, array))
    return AdaptResult(list(params), state, array.stack())


def stateless_apply(model, params, inputs, training=True):
    """Runs a Keras 3 model with `params` (its trainable variables' order) as weights.

    Non-trainable variables are read as they are; their updated values (none for MetaNorm,
    moving statistics for Keras BatchNormalization) are discarded: the inner loop never
    writes state. Returns the model outputs.
    """
    non_trainable = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
    outputs, _ = model.stateless_call(list(params), non_trainable, inputs, training=training)
    return outputs


def param_slices(*models):
    """Slices into the concatenated parameter list of `models` (in order).

    For a learner over `g.trainable_variables + d.trainable_variables`,
    `g_slice, d_slice = param_slices(g, d)`; `params[d_slice]` are D's parameters and
    `range(len(params))[d_slice]` its param_indices.
    """
    out, start = [], 0
    for model in models:
        n = len(model.trainable_variables)
        out.append(slice(start, start + n))
        start += n
    return out


def keras_loss(model, output_loss, inputs_fn=None, training=True, params_slice=None,
               with_seed=False):
    """Builds `loss_fn(params, batch, seed)` from a Keras 3 model.

    model: built Keras model; its parameters are `params[params_slice]` (default: all of
      `params`, which must then have exactly `len(model.trainable_variables)` entries).
    output_loss: `(outputs, batch) -> scalar` or `-> (scalar, aux dict)`; with
      `with_seed=True` it is called as `(outputs, batch, seed)`.
    inputs_fn: `batch -> model inputs` (default `batch[0]`); with `with_seed=True`
      `(batch, seed) -> inputs` (e.g. to draw latent noise from the seed).
    training: passed to `stateless_call` (True: MetaNorm uses batch statistics of this call).

    Randomness: Keras random layers (Dropout, GaussianNoise) draw from their SeedGenerator
    state, which `stateless_call` reads but never advances here, so they would repeat the
    same draw every inner step. Draw noise from `seed` instead (`with_seed=True`).
    """
    if inputs_fn is None:
        inputs_fn = (lambda batch, seed: batch[0]) if with_seed else (lambda batch: batch[0])
    num_model_params = len(model.trainable_variables)
    if num_model_params == 0:
        raise ConfigError(f"keras_loss: model {model.name!r} has no trainable variables; "
                          "build it (call it once or pass an Input) before making a loss")

    def loss_fn(params, batch, seed):
        mine = list(params) if params_slice is None else list(params)[params_slice]
        if len(mine) != num_model_params:
            raise ConfigError(
                f"keras_loss: model {model.name!r} has {num_model_params} trainable "
                f"variables but got {len(mine)} parameters; pass params_slice (see "
                "param_slices) when the learner holds several models' variables")
        inputs = inputs_fn(batch, seed) if with_seed else inputs_fn(batch)
        outputs = stateless_apply(model, mine, inputs, training=training)
        return output_loss(outputs, batch, seed) if with_seed else output_loss(outputs, batch)

    return loss_fn

