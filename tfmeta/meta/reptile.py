"""Reptile (Nichol, Achiam & Schulman 2018, arXiv:1803.02999), batched version.

For every task of the batch: adapt from the meta-parameters theta with `num_inner_steps`
functional inner steps on the task's support data, giving phi_t. Then move theta toward the
mean adapted parameters:

    theta <- theta + epsilon * (mean_t(phi_t) - theta)          (meta_step_size = epsilon)

or, with a Keras meta-optimizer, apply the "gradient" `theta - mean_t(phi_t)` with it
(Adam on the Reptile direction, as in the paper's Omniglot experiments with Adam outer).
No gradient flows through the inner loop (Reptile is first order by construction). To
adapt on support and query together, as the paper does, pass them concatenated as
`support`; `query` (optional, may be None) is only used for metrics.
"""

import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.common import Learner, MetaUpdate, step_scalar, tf_variable
from tfmeta.meta.inner_loop import fold_seed

__all__ = ["Reptile"]


class Reptile(Learner):
    """Batched Reptile.

    variables: list of variables (theta). objectives: Objective or list (inner loop, and
      evaluation on the query set for metrics). inner_update: `SGD`/`Adam`, state reset per
      task. num_inner_steps: int >= 1.
    meta_step_size: epsilon, a float or a callable `step (int64 tensor) -> scalar` (e.g.
      `common.linear_anneal(1.0, num_steps)`, the paper's schedule); exclusive with
      meta_optimizer (a Keras 3 optimizer).
    eval_objectives: the query objectives of the metrics and of `adapt_and_evaluate`
      (default: `objectives`; e.g. the full-batch objective when the inner one is a
      `minibatch_objective`).
    Metrics: the common ones (query_* only when query is given) plus `meta_update_norm`,
    the global norm of `mean_t(phi_t) - theta`.
    """

    def __init__(self, variables, objectives, inner_update, num_inner_steps,
                 meta_step_size=None, meta_optimizer=None, seed=0, parallel_tasks=1,
                 eval_objectives=None):
        super().__init__(variables, objectives, eval_objectives or objectives, inner_update,
                         num_inner_steps, seed=seed, parallel_tasks=parallel_tasks)
        if (meta_step_size is None) == (meta_optimizer is None):
            raise ConfigError("Reptile needs exactly one of meta_step_size (epsilon, e.g. "
                              "0.1) and meta_optimizer (a Keras 3 optimizer)")
        if num_inner_steps < 1:
            raise ConfigError(f"Reptile num_inner_steps must be >= 1, got {num_inner_steps}")
        self.meta_step_size = meta_step_size
        self.meta_optimizer = meta_optimizer
        self._moved = sorted({i for idx in self._inner_idx for i in idx})
        if meta_optimizer is not None:
            meta_optimizer.build([self.variables[i] for i in self._moved])

    def trackables(self):
        """Checkpoint objects: meta-parameters (and the meta-optimizer when given)."""
        out = super().trackables()
        if self.meta_optimizer is not None:
            out["meta_optimizer"] = self.meta_optimizer
        return out

    @property
    def update_variables(self):
        """The variables Reptile moves (aligned with `MetaUpdate.values`)."""
        return [self.variables[i] for i in self._moved]

    def meta_update(self, support, query, step, task_offset=0):
        """MetaUpdate with values = `mean_t(phi_t) - theta` (see Learner.meta_update)."""
        step_seed = self._step_seed(tf.cast(step, tf.int64))
        zeros = ([tf.zeros(self._raw[i].shape, self._raw[i].dtype) for i in self._moved],
                 self._metric_zeros(support, query, step_seed, self.num_inner_steps,
                                    with_query=query is not None))

        def task_fn(t, task_support, task_query):
            deltas, metrics, _ = self._adapted_deltas(
                task_support, task_query, fold_seed(step_seed, t), self._moved)
            return deltas, metrics

        def combine(acc, out):
            return ([a + d for a, d in zip(acc[0], out[0])],
                    {k: acc[1][k] + out[1][k] for k in acc[1]})

        (deltas, metrics), count = self._loop_tasks(support, query, task_fn, zeros, combine,
                                                    task_offset)
        direction = [d / tf.cast(count, d.dtype) for d in deltas]  # mean(phi) - theta
        metrics = {k: v / count for k, v in metrics.items()}
        metrics["meta_update_norm"] = tf.cast(tf.linalg.global_norm(direction), tf.float32)
        return MetaUpdate(direction, tf.math.log(tf.cast(count, tf.float64)), metrics)

    def apply_update(self, values, step):
        """theta += epsilon * values, or the meta-optimizer on the gradient -values."""
        moved = self.update_variables
        if self.meta_optimizer is not None:
            self.meta_optimizer.apply_gradients(zip([-d for d in values], moved))
            return
        for v, d in zip(moved, values):
            tf_variable(v).assign_add(step_scalar(self.meta_step_size, step, d.dtype) * d)

    def _meta_step_graph(self, support, query, step):
        update = self.meta_update(support, query, step)
        self.apply_update(update.values, step)
        return update.metrics
