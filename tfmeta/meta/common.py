"""Machinery shared by the optimisation-based learners (MAML, Meta-SGD, Reptile, aggregation).

* Task batches are nested structures whose leaves have a leading task dimension B. The
  learners loop over tasks *inside* the graph (`tf.while_loop`), so the traced graph has one
  copy of the per-task computation whatever B is, and B may change without retracing.
* Seeds: `learner_seed = [seed, 0]`; meta-step `step` uses `fold_seed(learner_seed, step)`,
  task t of it `fold_seed(step_seed, t)`; inside a task the inner loop gets
  `fold_seed(task_seed, 0)` and outer/evaluation objective k `fold_seed(task_seed, 1, k)`.
* Metrics (dict of float32 scalars, means over tasks):
    `support_<name>_first` / `support_<name>_last`: inner objective `<name>`'s loss on the
      support set before the first / before the last inner update;
    `query_<name>`: outer (evaluation) objective `<name>`'s loss on the query set with the
      adapted parameters; `query_<aux key>` for each aux metric it returns.
  Learners add their own (e.g. `meta_grad_norm`).
"""

import functools
from typing import NamedTuple

import keras
import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.inner_loop import Objective, adapt, fold_seed

__all__ = ["Learner", "MetaUpdate", "tf_variable", "as_objectives", "num_tasks",
           "task_slice", "linear_anneal", "step_scalar"]


def tf_variable(variable):
    """The `tf.Variable` behind a Keras 3 variable (tapes cannot watch Keras variables)."""
    if isinstance(variable, keras.Variable):
        return variable.value
    return variable


def as_objectives(objectives, num_params, what):
    """Validates an Objective or list of them; returns (list, list of index tuples)."""
    if isinstance(objectives, Objective):
        objectives = [objectives]
    objectives = list(objectives or [])
    if not objectives or not all(isinstance(o, Objective) for o in objectives):
        raise ConfigError(f"{what} must be an Objective or a non-empty list of Objectives, "
                          f"got {objectives!r}")
    return objectives, [o.indices(num_params) for o in objectives]


def num_tasks(batch):
    """B, the leading (task) dimension of the first leaf of a nested task batch (int32)."""
    return tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int32)[0]


def task_slice(batch, t):
    """Task `t` of a nested task batch (every leaf indexed on its leading axis)."""
    return tf.nest.map_structure(lambda x: tf.gather(x, t), batch)


def linear_anneal(start, num_steps, final=0.0):
    """`step -> start + (final - start) * min(step / num_steps, 1)`: a step size annealed
    linearly over `num_steps` meta-steps, then held at `final` (Nichol et al. 2018 anneal
    Reptile's epsilon from 1 to 0 over training). `step`: an integer tensor (the 0-based
    meta-step); returns a float64 scalar tensor. num_steps = 0 (a meta-test-only run)
    gives `final` at every step."""
    if num_steps < 0:
        raise ConfigError(f"linear_anneal needs num_steps >= 0, got {num_steps}")

    def value(step):
        done = (tf.constant(1.0, tf.float64) if num_steps == 0 else
                tf.minimum(tf.cast(step, tf.float64) / float(num_steps), 1.0))
        return tf.constant(start, tf.float64) + (final - start) * done
    return value


def step_scalar(value, step, dtype):
    """`value` at meta-step `step` as a `dtype` scalar tensor: a Python number, or a
    callable `step -> scalar tensor` (e.g. `linear_anneal`). Numbers become constants of
    `dtype` directly: a float32 detour would perturb float64 variables."""
    if callable(value):
        return tf.cast(value(tf.cast(step, tf.int64)), dtype)
    return tf.constant(value, dtype)


class MetaUpdate(NamedTuple):
    """A meta-update computed on some tasks but not applied (for tf.distribute).

    values: list of tensors aligned with `learner.update_variables`: the task-averaged
      meta-gradient (MAML family) or direction `target - theta` (Reptile, aggregation).
    log_weight: float64 scalar, log of the total weight of the tasks averaged into
      `values`: log(number of tasks) for plain task means, the log-sum-exp of the task
      log-weights for weighted aggregation. Updates from disjoint task sets merge exactly
      as `sum_r softmax_r(log_weight_r) * values_r` (tfmeta.distribute does this).
    metrics: dict of float32 scalars, means over the tasks (see the module docstring).
    """
    values: list
    log_weight: tf.Tensor
    metrics: dict


def _put(metrics, key, value):
    if key in metrics:
        raise ConfigError(f"metric name {key!r} produced twice; give the objectives distinct "
                          "names and aux keys")
    metrics[key] = tf.cast(value, tf.float32)


class Learner:
    """Base of the optimisation-based learners: validation, task loop, evaluation, seeds.

    Subclasses implement `_meta_step_graph(support, query, step)`, and, to run under
    tf.distribute, `meta_update(support, query, step, task_offset)` -> MetaUpdate,
    `update_variables` and `apply_update(values, step)` (so that `meta_step` equals
    `apply_update(meta_update(...).values)`).

    `update_rule_variables`: the meta-learned variables of a learned inner update rule
    (Meta-SGD rates, Meta-Curvature factors); empty for a fixed rule. They are
    checkpointed with the learner and exported with the generator.
    """

    update_rule_variables = ()
    # Optional `task_init(params, support) -> params`: rewrites every task's starting
    # parameters from its support set before the inner loop, in meta-training (inside the
    # outer tape, so meta-gradients flow through it) and at meta-test alike; e.g. the
    # prototype head of Proto-MAML (`tfmeta.fewshot.prototype_head`). MAML family only
    # (Reptile and aggregation step towards the adapted weights, which would carry it).
    task_init = None

    def __init__(self, variables, inner_objectives, eval_objectives, inner_update,
                 num_inner_steps, seed=0, parallel_tasks=1, recompute=False):
        self.variables = list(variables)
        if not self.variables:
            raise ConfigError("variables must be a non-empty list of variables "
                              "(e.g. model.trainable_variables)")
        self._raw = [tf_variable(v) for v in self.variables]
        n = len(self.variables)
        self.inner_objectives, self._inner_idx = as_objectives(
            inner_objectives, n, "inner objectives")
        self.eval_objectives, self._eval_idx = as_objectives(
            eval_objectives, n, "outer objectives")
        if not isinstance(num_inner_steps, int) or num_inner_steps < 0:
            raise ConfigError(f"num_inner_steps must be an int >= 0, got {num_inner_steps!r}")
        if not isinstance(parallel_tasks, int) or parallel_tasks < 1:
            raise ConfigError(f"parallel_tasks must be an int >= 1, got {parallel_tasks!r}")
        self.inner_update = inner_update
        self.num_inner_steps = num_inner_steps
        self.parallel_tasks = parallel_tasks
        self.recompute = bool(recompute)
        self.seed = int(seed)
        self.compiled_meta_step = tf.function(self._meta_step_graph, reduce_retracing=True)
        self._eval_fns = {}

    # ---- public -----------------------------------------------------------------------
    def meta_step(self, support, query, step):
        """One meta-update on a task batch; returns a dict of float32 scalar tensors.

        support, query: nested structures (e.g. `(images [B,N*K,H,W,C], labels [B,N*K])`)
        with a leading task dimension B. step: int (converted to an int64 tensor, so the
        compiled step traces once).
        """
        return self.compiled_meta_step(support, query, tf.constant(step, tf.int64)
                                       if isinstance(step, int) else tf.cast(step, tf.int64))

    def adapt_and_evaluate(self, support, query, step, num_steps=None):
        """Meta-test: adapts a copy per task on support, returns mean query metrics.

        Variables are not changed. num_steps: Python int (default `num_inner_steps`); one
        compiled function per distinct value and query-image rank (a query batch of
        support + query groups, `tfmeta.fewshot.per_query_groups`, has one more axis).
        Adaptation is first order (no outer gradient is needed), so it is cheaper than a
        meta-step.
        """
        num_steps = self.num_inner_steps if num_steps is None else int(num_steps)
        key = (num_steps, len(tf.nest.flatten(query)[0].shape))
        if key not in self._eval_fns:
            self._eval_fns[key] = tf.function(
                functools.partial(self._evaluate_graph, num_steps=num_steps),
                reduce_retracing=True)
        step = tf.cast(tf.convert_to_tensor(step), tf.int64)
        return self._eval_fns[key](support, query, step)

    def trackables(self):
        """Objects to put in `tf.train.Checkpoint(**learner.trackables())`."""
        return {"meta_variables": list(self._raw)}

    def meta_update(self, support, query, step, task_offset=0):
        """The meta-update of these tasks without applying it (traceable): a MetaUpdate.

        task_offset: int32 scalar, index of this batch's first task in the global
        meta-batch; task t is seeded as global task `task_offset + t`, so a meta-batch
        split into slices gives the same per-task randomness as the whole batch.
        """
        raise NotImplementedError(f"{type(self).__name__} has no meta_update")

    def apply_update(self, values, step):
        """Applies `MetaUpdate.values` (aligned with `update_variables`) to the variables."""
        raise NotImplementedError(f"{type(self).__name__} has no apply_update")

    # ---- helpers for subclasses -------------------------------------------------------
    def inner_rule(self):
        """The inner update rule; called inside the outer tape (Meta-SGD reads its rates)."""
        return self.inner_update

    def _read_params(self):
        return [tf.convert_to_tensor(v) for v in self._raw]

    def _step_seed(self, step):
        return fold_seed(tf.constant([self.seed, 0], tf.int64), step)

    def _metrics(self, adapt_losses, num_steps, eval_results):
        """Per-task metric dict from adapt losses and [(loss, aux)] of eval objectives."""
        metrics = {}
        if num_steps > 0:
            for k, objective in enumerate(self.inner_objectives):
                _put(metrics, f"support_{objective.name}_first", adapt_losses[0, k])
                _put(metrics, f"support_{objective.name}_last", adapt_losses[-1, k])
        for objective, (loss, aux) in zip(self.eval_objectives, eval_results):
            _put(metrics, f"query_{objective.name}", loss)
            for key, value in aux.items():
                _put(metrics, f"query_{key}", value)
        return metrics

    def _metric_zeros(self, support, query, step_seed, num_steps, with_query=True):
        """Zero accumulators for the per-task metrics (keys found by tracing a forward pass).

        The aux keys of the losses are only known by calling them; we trace each evaluation
        loss once in a throw-away concrete function (never executed).
        """
        keys = []
        if num_steps > 0:
            for objective in self.inner_objectives:
                keys += [f"support_{objective.name}_first", f"support_{objective.name}_last"]
        if with_query:
            params = self._read_params()
            q0 = task_slice(query, 0)
            for objective in self.eval_objectives:
                probe = tf.function(lambda o=objective: o(params, q0, step_seed))
                _, aux = probe.get_concrete_function().structured_outputs
                keys += [f"query_{objective.name}"] + [f"query_{k}" for k in aux]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"metric names {keys} repeat; give the objectives distinct "
                              "names and aux keys")
        return {k: tf.zeros([], tf.float32) for k in keys}

    def _loop_tasks(self, support, query, task_fn, init, combine, task_offset=0):
        """acc = combine(acc, task_fn(task_offset + t, support_t, query_t)) for t < B.

        One while_loop. The index passed to task_fn only seeds the task (see meta_update).
        """
        count = num_tasks(support)
        task_offset = tf.cast(task_offset, tf.int32)

        def body(t, acc):
            q = None if query is None else task_slice(query, t)
            return t + 1, combine(acc, task_fn(task_offset + t, task_slice(support, t), q))

        _, acc = tf.while_loop(lambda t, _: t < count, body, (tf.constant(0), init),
                               parallel_iterations=self.parallel_tasks)
        return acc, tf.cast(count, tf.float32)

    def _adapt_task(self, params, support, task_seed, num_steps, first_order):
        if self.task_init is not None:
            params = self.task_init(params, support)
        return adapt(self.inner_objectives, params, support, num_steps, self.inner_rule(),
                     first_order=first_order, seed=fold_seed(task_seed, 0),
                     recompute=self.recompute)

    def _evaluate(self, params, query, task_seed):
        return [objective(params, query, fold_seed(task_seed, 1, k))
                for k, objective in enumerate(self.eval_objectives)]

    def _adapted_deltas(self, task_support, task_query, task_seed, indices):
        """Adapts one task from the meta-parameters; returns (deltas, metrics, eval losses).

        deltas: `adapted - initial` for the parameters in `indices` (differences rather than
        adapted values, so averaging does not lose precision to cancellation).
        """
        params = self._read_params()
        result = self._adapt_task(params, task_support, task_seed, self.num_inner_steps,
                                  first_order=True)
        evals = [] if task_query is None else self._evaluate(result.params, task_query,
                                                             task_seed)
        deltas = [result.params[i] - params[i] for i in indices]
        return deltas, self._metrics(result.losses, self.num_inner_steps, evals), evals

    def _evaluate_graph(self, support, query, step, num_steps):
        step_seed = self._step_seed(step)

        def task_fn(t, task_support, task_query):
            task_seed = fold_seed(step_seed, t)
            result = self._adapt_task(self._read_params(), task_support, task_seed,
                                      num_steps, first_order=True)
            return self._metrics(result.losses, num_steps,
                                 self._evaluate(result.params, task_query, task_seed))

        zeros = self._metric_zeros(support, query, step_seed, num_steps)
        total, count = self._loop_tasks(
            support, query, task_fn, zeros,
            lambda acc, out: {k: acc[k] + out[k] for k in acc})
        return {k: v / count for k, v in total.items()}

    def _meta_step_graph(self, support, query, step):
        raise NotImplementedError
