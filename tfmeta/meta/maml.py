"""MAML and first-order MAML (Finn, Abbeel & Levine 2017, arXiv:1703.03400).

For every task of the batch: start from the meta-parameters theta, adapt on the support
set with the functional inner loop (`adapt`), evaluate the outer objectives on the query
set with the adapted parameters phi(theta), differentiate w.r.t. theta (through the inner
gradients unless `first_order`), average over tasks, apply the meta-optimizer.

Generic over any list of variables and objectives: few-shot classification uses one
objective over all parameters; a GAN passes a critic and a generator objective with
disjoint `param_indices`, and each outer objective's meta-gradient is taken w.r.t. its own
indices only (the outer critic loss trains D's initialisation, the outer generator loss G's).
"""

import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.common import Learner, MetaUpdate, num_tasks, tf_variable
from tfmeta.meta.inner_loop import fold_seed

__all__ = ["MAML"]


class MAML(Learner):
    """Model-agnostic meta-learning; `first_order=True` gives FOMAML.

    variables: list of variables (Keras or tf) = the meta-parameters theta; the order is
      the parameter order seen by every loss.
    inner_objectives: Objective or list, applied in order each inner step (support set).
    outer_objectives: Objective or list, evaluated on the query set with adapted params.
    inner_update: functional update rule (`SGD(lr)`, `Adam(...)`).
    num_inner_steps: Python int, unrolled.
    first_order: stop gradients through inner gradients (FOMAML).
    meta_optimizer: a Keras 3 optimizer (built here on the trained variables).
    seed: int base seed (stateless; the step is folded in).
    parallel_tasks: `parallel_iterations` of the in-graph task loop (1 = tasks run one after
      another; more overlaps tasks at the cost of memory).
    recompute: recompute each inner step's activations in the outer backward pass instead
      of keeping them (gradient checkpoints; second order, fixed inner rule): lower peak
      memory for many inner steps, same meta-gradients.

    `meta_step(support, query, step)` returns the common metrics (see tfmeta.meta.common)
    plus `meta_grad_norm` (global norm of the task-averaged meta-gradient).

    Example (support and query are (images, labels) with a leading task dim B; tested in
    tests/test_inner_loop.py):

        xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        objective = Objective(keras_loss(model, lambda logits, b: xent(b[1], logits)))
        learner = MAML(model.trainable_variables, objective, objective, SGD(0.4), 1,
                       meta_optimizer=keras.optimizers.Adam(1e-3))
        metrics = learner.meta_step(support, query, step=0)   # one outer update
    """

    def __init__(self, variables, inner_objectives, outer_objectives, inner_update,
                 num_inner_steps, first_order=False, meta_optimizer=None, seed=0,
                 parallel_tasks=1, recompute=False):
        super().__init__(variables, inner_objectives, outer_objectives, inner_update,
                         num_inner_steps, seed=seed, parallel_tasks=parallel_tasks,
                         recompute=recompute)
        if meta_optimizer is None:
            raise ConfigError("MAML needs a meta_optimizer (a Keras 3 optimizer, e.g. "
                              "keras.optimizers.Adam(1e-3))")
        self.first_order = bool(first_order)
        self.meta_optimizer = meta_optimizer
        # Companion variables: per-parameter extras of a learned update rule (Meta-SGD's
        # rates, Meta-Curvature's factors), trained by the same outer objectives as their
        # parameter. Per parameter: None, a variable or a list of variables.
        companions = [[] if c is None else list(c) if isinstance(c, (list, tuple)) else [c]
                      for c in self._make_companions()]
        self.update_rule_variables = [c for cs in companions for c in cs]
        trained = sorted({i for idx in self._eval_idx for i in idx})
        self._meta_vars, self._slots = [], {}
        for i in trained:
            self._slots[i] = [len(self._meta_vars)]
            self._meta_vars.append(self.variables[i])
            for c in companions[i]:
                self._slots[i].append(len(self._meta_vars))
                self._meta_vars.append(c)
        self.meta_optimizer.build(self._meta_vars)

    def _make_companions(self):
        return [None] * len(self.variables)

    def trackables(self):
        """Checkpoint objects: meta-parameters, meta-optimizer, learned update rule."""
        out = super().trackables()
        out["meta_optimizer"] = self.meta_optimizer
        if self.update_rule_variables:
            out["update_rule"] = [tf_variable(v) for v in self.update_rule_variables]
        return out

    def _task_gradients(self, support, query, task_seed):
        """One task's meta-gradient (list aligned with `self._meta_vars`) and metrics."""
        sources = [tf_variable(v) for v in self._meta_vars]
        with tf.GradientTape(persistent=len(self.eval_objectives) > 1,
                             watch_accessed_variables=False) as tape:
            tape.watch(sources)
            result = self._adapt_task(self._read_params(), support, task_seed,
                                      self.num_inner_steps, first_order=self.first_order)
            evals = self._evaluate(result.params, query, task_seed)
        total = [tf.zeros(v.shape, v.dtype) for v in sources]
        for idx, (loss, _) in zip(self._eval_idx, evals):
            positions = [p for i in idx for p in self._slots[i]]
            grads = tape.gradient(loss, [sources[p] for p in positions],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            for p, g in zip(positions, grads):
                total[p] = total[p] + g
        del tape
        return total, self._metrics(result.losses, self.num_inner_steps, evals)

    @property
    def meta_variables(self):
        """The variables the meta-optimizer updates (aligned with `meta_gradients`)."""
        return list(self._meta_vars)

    def meta_gradients(self, support, query, step, task_offset=0):
        """Task-averaged meta-gradient without applying it: `(grads, metrics)`.

        grads: list aligned with `meta_variables`. Traceable (call it inside your own
        tf.function, e.g. per replica under tf.distribute, then `apply_update`).
        task_offset: global index of the first task (seeds; see Learner.meta_update).
        """
        step = tf.cast(step, tf.int64)
        step_seed = self._step_seed(step)
        grad_zeros = [tf.zeros(tf_variable(v).shape, tf_variable(v).dtype)
                      for v in self._meta_vars]
        metric_zeros = self._metric_zeros(support, query, step_seed, self.num_inner_steps)

        def task_fn(t, task_support, task_query):
            return self._task_gradients(task_support, task_query, fold_seed(step_seed, t))

        def combine(acc, out):
            return ([a + g for a, g in zip(acc[0], out[0])],
                    {k: acc[1][k] + out[1][k] for k in acc[1]})

        (grads, metrics), count = self._loop_tasks(
            support, query, task_fn, (grad_zeros, metric_zeros), combine, task_offset)
        grads = [g / tf.cast(count, g.dtype) for g in grads]
        metrics = {k: v / count for k, v in metrics.items()}
        metrics["meta_grad_norm"] = tf.cast(tf.linalg.global_norm(grads), tf.float32)
        return grads, metrics

    @property
    def update_variables(self):
        """The Learner interface's name for `meta_variables`."""
        return self.meta_variables

    def meta_update(self, support, query, step, task_offset=0):
        """`meta_gradients` as a MetaUpdate (log task count as its weight)."""
        grads, metrics = self.meta_gradients(support, query, step, task_offset)
        count = tf.cast(num_tasks(support), tf.float64)
        return MetaUpdate(grads, tf.math.log(count), metrics)

    def apply_update(self, values, step):
        """Applies meta-gradients (aligned with `meta_variables`) with the meta-optimizer."""
        del step
        self.meta_optimizer.apply_gradients(zip(values, self._meta_vars))

    def _meta_step_graph(self, support, query, step):
        grads, metrics = self.meta_gradients(support, query, step)
        self.apply_update(grads, step)
        return metrics
