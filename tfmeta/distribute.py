"""Meta-training under tf.distribute: strategy selection and a replica-parallel learner.

Data parallelism over *tasks*: the global meta-batch of B tasks is split into R equal
slices (R = `strategy.num_replicas_in_sync`, over all workers); replica r runs the
learner's nested inner/outer tapes on tasks `r*B/R .. (r+1)*B/R - 1`, seeded as those
global task indices, so the per-task randomness does not depend on R. The per-replica
`MetaUpdate`s (meta-gradients for the MAML family, `target - theta` directions for
Reptile and aggregation) are all-reduced into the exact global task mean (weighted by
the replicas' task log-weights for loss-weighted aggregation) and applied once, in
cross-replica context, by the learner's own `apply_update`. A meta-step under R
replicas therefore equals a default-strategy meta-step on the same B tasks up to float
rounding (tests/test_distribute.py checks 1e-5).

Every worker of a multi-worker job samples the same global meta-batch (samplers are
seeded identically) and takes its replicas' slices, so the sampler state, and with it
exact resume, is the same on every worker.

Rules the callers follow (trainers via tfmeta.fewshot / tfmeta.meta_gan):
  * create the strategy before any TF op runs (MultiWorkerMirroredStrategy configures
    the collective runtime), and build models, learners and optimisers inside
    `strategy.scope()` — a model built outside is silently *not* mirrored;
  * B must be a multiple of R;
  * only the chief writes files (tfmeta.train.run).
"""

import contextlib
import json
import os

import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.common import num_tasks, tf_variable

__all__ = ["STRATEGY_NAMES", "make_strategy", "local_devices", "scope",
           "DistributedLearner", "distribute_learner", "num_replicas"]

STRATEGY_NAMES = ("default", "mirrored", "multi_worker")

# Metrics that are not task means: recomputed from the merged update ("norm") or merged
# as the largest task weight of all replicas ("max_weight"). Everything else is a mean.
_SPECIAL_METRICS = {"meta_grad_norm": "norm", "meta_update_norm": "norm",
                    "max_task_weight": "max_weight"}


def local_devices():
    """Names of this process's replica devices: all GPUs, else all logical CPUs.

    On a machine without GPUs, `tfmeta.runtime.configure(num_cpu_replicas=N)` (before
    TF initialises) splits the CPU into N logical devices, giving N replicas.
    """
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _default():
    return tf.distribute.get_strategy()


def _mirrored(devices=None):
    return tf.distribute.MirroredStrategy(devices=devices or local_devices())


def _multi_worker(devices=None):
    del devices  # MultiWorkerMirroredStrategy uses all local GPUs, else one CPU device
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment "
                          "variable (cluster and this task); see docs/DISTRIBUTED.md")
    try:
        task = json.loads(raw)["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON with a task type and index "
                          f"({e}); see docs/DISTRIBUTED.md") from None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"could not create MultiWorkerMirroredStrategy ({e}); create "
                          "the strategy before any TensorFlow op runs") from None


def make_strategy(name, devices=None):
    """The tf.distribute strategy called `name` (one of STRATEGY_NAMES).

    "default": the no-op default strategy (one device, `scope()` does nothing).
    "mirrored": MirroredStrategy over `devices` (default `local_devices()`).
    "multi_worker": MultiWorkerMirroredStrategy from TF_CONFIG (one process per worker;
      all local GPUs of each worker, else its CPU).
    Call before any TF op runs (required by "multi_worker").
    """
    builders = {"default": _default, "mirrored": _mirrored, "multi_worker": _multi_worker}
    if name not in builders:
        raise ConfigError(f"strategy must be one of {STRATEGY_NAMES}, got {name!r}")
    if name == "default":
        return builders[name]()
    return builders[name](devices)


def scope(strategy):
    """`strategy.scope()`, or a no-op context for None / the default strategy."""
    if strategy is None or not _is_replicated(strategy):
        return contextlib.nullcontext()
    return strategy.scope()


def num_replicas(strategy):
    """Replicas in sync over all workers (1 for None / the default strategy)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def _is_replicated(strategy):
    return isinstance(strategy, (tf.distribute.MirroredStrategy,
                                 tf.distribute.MultiWorkerMirroredStrategy))


def distribute_learner(learner, strategy):
    """`learner` itself for None / the default strategy, else a DistributedLearner."""
    if strategy is None or not _is_replicated(strategy):
        if strategy is not None and num_replicas(strategy) != 1:
            raise ConfigError(f"unsupported strategy {type(strategy).__name__}; use "
                              f"{STRATEGY_NAMES}")
        return learner
    return DistributedLearner(learner, strategy)


def _leading_dim(batch):
    return tf.nest.flatten(batch)[0].shape[0]


def _slice_tasks(batch, start, size):
    if batch is None:
        return None
    return tf.nest.map_structure(lambda x: x[start:start + size], batch)


class DistributedLearner:
    """Runs an optimisation-based learner's meta-step data-parallel over tasks.

    learner: a tfmeta.meta learner with `meta_update` / `apply_update` (MAML, FOMAML,
      Meta-SGD, Reptile, ModelAggregation), built inside `strategy.scope()`.
    strategy: MirroredStrategy or MultiWorkerMirroredStrategy.

    Conforms to tfmeta.meta.MetaLearner: `meta_step(support, query, step)` (same task
    batch and metrics as the wrapped learner's), `trackables()`, `adapt_and_evaluate(...)`
    (meta-test on the local device, read-only), `inner_rule()` and
    `update_rule_variables` (the wrapped learner's); `variables` and `learner` give the
    wrapped learner's parameters and the learner itself.
    """

    def __init__(self, learner, strategy):
        if not (hasattr(learner, "meta_update") and hasattr(learner, "apply_update")):
            raise ConfigError(f"{type(learner).__name__} cannot run under a tf.distribute "
                              "strategy (no meta_update/apply_update); use "
                              "--strategy=default")
        variables = getattr(learner, "update_variables", [])
        if not all(isinstance(tf_variable(v), tf.distribute.DistributedValues)
                   for v in variables):
            raise ConfigError("the learner's variables are not mirrored: build the model, "
                              "the learner and its optimiser inside strategy.scope()")
        self.learner = learner
        self.strategy = strategy
        self.num_replicas = num_replicas(strategy)
        self.compiled_meta_step = tf.function(self._meta_step_graph, reduce_retracing=True)

    @property
    def variables(self):
        """The wrapped learner's meta-parameters (mirrored variables)."""
        return self.learner.variables

    @property
    def update_rule_variables(self):
        """The wrapped learner's learned update-rule variables (MetaLearner)."""
        return self.learner.update_rule_variables

    def inner_rule(self):
        """The wrapped learner's inner update rule (MetaLearner)."""
        return self.learner.inner_rule()

    def meta_step(self, support, query, step):
        """One meta-update on the global task batch (leading dim B, a multiple of R)."""
        batch = _leading_dim(support)
        if batch is not None and batch % self.num_replicas:
            raise ConfigError(f"the meta-batch ({batch} tasks) must be a multiple of the "
                              f"number of replicas ({self.num_replicas}); change "
                              "--meta_batch_size or the replicas")
        step = tf.cast(tf.convert_to_tensor(step), tf.int64)
        return self.compiled_meta_step(support, query, step)

    def trackables(self):
        """The wrapped learner's checkpoint objects (MetaLearner)."""
        return self.learner.trackables()

    def adapt_and_evaluate(self, support, query, step, num_steps=None):
        """Meta-test on the local device, read-only: the wrapped learner's (MetaLearner)."""
        return self.learner.adapt_and_evaluate(support, query, step, num_steps=num_steps)

    # ---- graph --------------------------------------------------------------------------
    def _meta_step_graph(self, support, query, step):
        per_replica = num_tasks(support) // self.num_replicas

        def replica_fn(support, query, step):
            ctx = tf.distribute.get_replica_context()
            start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * per_replica
            update = self.learner.meta_update(
                _slice_tasks(support, start, per_replica),
                _slice_tasks(query, start, per_replica), step, task_offset=start)
            return self._merge(ctx, update)

        values, metrics = self.strategy.run(replica_fn, args=(support, query, step))
        # After the all-reduce every replica holds the same merged update; take one.
        first = lambda x: self.strategy.experimental_local_results(x)[0]  # noqa: E731
        values = [first(v) for v in values]
        metrics = {k: first(v) for k, v in metrics.items()}
        # Applied once, in cross-replica context: a Keras optimizer called per replica
        # would sum the replicas' gradients (TF_NOTES), and Reptile's assign_add on a
        # mirrored variable needs an aggregation in replica context.
        self.learner.apply_update(values, step)
        return metrics

    def _merge(self, ctx, update):
        """All-reduces one replica's MetaUpdate into the global one (same on all replicas).

        Replica r's share is softmax_r(log_weight_r): 1/R for equal task counts (plain
        means), the aggregation's normalised weight mass of its tasks otherwise.
        """
        metrics = dict(update.metrics)
        log_w = tf.cast(update.log_weight, tf.float64)
        log_max = tf.math.log(tf.cast(metrics.get("max_task_weight", 1.0), tf.float64))
        stats = ctx.all_gather(tf.stack([log_w, log_max])[None], axis=0)   # [R, 2]
        log_total = tf.reduce_logsumexp(stats[:, 0])
        share = tf.exp(log_w - log_total)
        means = {k: v / ctx.num_replicas_in_sync for k, v in metrics.items()
                 if k not in _SPECIAL_METRICS}
        values, means = ctx.all_reduce(
            tf.distribute.ReduceOp.SUM,
            ([v * tf.cast(share, v.dtype) for v in update.values], means))
        for key in metrics:
            kind = _SPECIAL_METRICS.get(key)
            if kind == "norm":
                means[key] = tf.cast(tf.linalg.global_norm(values), tf.float32)
            elif kind == "max_weight":
                # Largest task weight overall: max_r(max weight within r * share_r).
                means[key] = tf.cast(tf.exp(tf.reduce_max(stats[:, 1] + stats[:, 0])
                                            - log_total), tf.float32)
        return values, means
