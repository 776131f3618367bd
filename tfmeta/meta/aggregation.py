"""Model aggregation: adapt a copy per task, average the adapted weights, move toward them.

A federated-averaging-style meta-update (cf. FedAvg, McMahan et al. 2017,
arXiv:1602.05629, and Reptile, arXiv:1803.02999): every task adapts its own copy phi_t of
the meta-parameters theta with the functional inner loop, and

    theta <- theta + step_size * (sum_t w_t phi_t - theta),   sum_t w_t = 1.

Weighting of the tasks (`weighting`):
  * "uniform": w_t = 1/B (with step_size = epsilon this is Reptile's update);
  * "softmax": w_t = softmax_t(-L_t / temperature): better-adapted tasks count more;
  * "inverse": w_t = (1/L_t) / sum_s (1/L_s); needs L_t > 0 (asserted in the graph, so
    not for WGAN-style losses, which can be negative).
L_t is the sum of the objectives' losses on task t's *query* set after adaptation (so the
weights reward generalisation, not support-set fit); non-uniform weighting needs a query.
The weighted mean is accumulated online with a running log-sum-exp, so the task loop keeps
one running sum instead of B copies of the weights.
"""

import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.common import Learner, MetaUpdate, step_scalar, tf_variable
from tfmeta.meta.inner_loop import fold_seed

__all__ = ["ModelAggregation", "WEIGHTINGS"]

WEIGHTINGS = ("uniform", "softmax", "inverse")


class ModelAggregation(Learner):
    """Weighted averaging of per-task adapted weights.

    variables, objectives, inner_update, num_inner_steps, seed, parallel_tasks,
    eval_objectives (the query objectives, also of the task weights): as Reptile.
    step_size: float in (0, 1] (1 = replace theta by the aggregate), or a callable
      `step (int64 tensor) -> scalar` such as `common.linear_anneal(1.0, num_steps)`.
    weighting: one of WEIGHTINGS; temperature: > 0, for "softmax".
    Metrics: common ones plus `meta_update_norm` (norm of aggregate - theta) and
    `max_task_weight` (largest w_t; 1/B for uniform).
    """

    def __init__(self, variables, objectives, inner_update, num_inner_steps, step_size=1.0,
                 weighting="uniform", temperature=1.0, seed=0, parallel_tasks=1,
                 eval_objectives=None):
        super().__init__(variables, objectives, eval_objectives or objectives, inner_update,
                         num_inner_steps, seed=seed, parallel_tasks=parallel_tasks)
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"ModelAggregation weighting must be one of {WEIGHTINGS}, "
                              f"got {weighting!r}")
        if not callable(step_size) and not 0 < step_size <= 1:
            raise ConfigError(f"ModelAggregation step_size must be in (0, 1], got {step_size}")
        if temperature <= 0:
            raise ConfigError(f"ModelAggregation temperature must be > 0, got {temperature}")
        if num_inner_steps < 1:
            raise ConfigError(f"ModelAggregation num_inner_steps must be >= 1, got "
                              f"{num_inner_steps}")
        self.step_size = step_size if callable(step_size) else float(step_size)
        self.weighting = weighting
        self.temperature = float(temperature)
        self._moved = sorted({i for idx in self._inner_idx for i in idx})

    def _log_weight(self, evals):
        """Unnormalised log task weight from the query losses (float64 scalar)."""
        if self.weighting == "uniform":
            return tf.zeros([], tf.float64)
        loss = tf.add_n([tf.cast(loss, tf.float64) for loss, _ in evals])
        if self.weighting == "softmax":
            return -loss / self.temperature
        with tf.control_dependencies([tf.debugging.assert_positive(
                loss, message="ModelAggregation weighting='inverse' needs positive query "
                              "losses; use weighting='softmax'")]):
            return -tf.math.log(loss)

    @property
    def update_variables(self):
        """The variables aggregation moves (aligned with `MetaUpdate.values`)."""
        return [self.variables[i] for i in self._moved]

    def meta_update(self, support, query, step, task_offset=0):
        """MetaUpdate with values = `sum_t w_t phi_t - theta` over these tasks and
        log_weight = log sum_t exp(task log-weight) (see Learner.meta_update)."""
        if query is None and self.weighting != "uniform":
            raise ConfigError(f"ModelAggregation weighting={self.weighting!r} needs a query "
                              "batch (weights come from query losses after adaptation)")
        step_seed = self._step_seed(tf.cast(step, tf.int64))
        sums = [tf.zeros(self._raw[i].shape, self._raw[i].dtype) for i in self._moved]
        init = (tf.constant(-float("inf"), tf.float64), tf.zeros([], tf.float64), sums,
                self._metric_zeros(support, query, step_seed, self.num_inner_steps,
                                   with_query=query is not None))

        def task_fn(t, task_support, task_query):
            deltas, metrics, evals = self._adapted_deltas(
                task_support, task_query, fold_seed(step_seed, t), self._moved)
            return self._log_weight(evals), deltas, metrics

        def combine(acc, out):
            # Running log-sum-exp: keep sums scaled by exp(-running max) to avoid overflow.
            run_max, norm, sums, metrics = acc
            logit, deltas, task_metrics = out
            new_max = tf.maximum(run_max, logit)
            old_scale, weight = tf.exp(run_max - new_max), tf.exp(logit - new_max)
            sums = [s * tf.cast(old_scale, s.dtype) + tf.cast(weight, s.dtype) * d
                    for s, d in zip(sums, deltas)]
            return (new_max, norm * old_scale + weight, sums,
                    {k: metrics[k] + task_metrics[k] for k in metrics})

        (run_max, norm, sums, metrics), count = self._loop_tasks(
            support, query, task_fn, init, combine, task_offset)
        direction = [s / tf.cast(norm, s.dtype) for s in sums]  # aggregate - theta
        metrics = {k: v / count for k, v in metrics.items()}
        metrics["meta_update_norm"] = tf.cast(tf.linalg.global_norm(direction), tf.float32)
        # The largest task has weight exp(max - max) / norm = 1 / norm.
        metrics["max_task_weight"] = tf.cast(1.0 / norm, tf.float32)
        return MetaUpdate(direction, run_max + tf.math.log(norm), metrics)

    def apply_update(self, values, step):
        """theta += step_size * values (step_size at `step` when it is a schedule)."""
        for v, d in zip(self.update_variables, values):
            tf_variable(v).assign_add(step_scalar(self.step_size, step, d.dtype) * d)

    def _meta_step_graph(self, support, query, step):
        update = self.meta_update(support, query, step)
        self.apply_update(update.values, step)
        return update.metrics
