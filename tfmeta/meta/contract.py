"""The learner contract: what tfmeta.train, meta-testing and generation use of a learner.

Every learner (MAML, FOMAML, Meta-SGD, Meta-Curvature, Reptile, ModelAggregation,
ProtoNet) and tfmeta.distribute.DistributedLearner conform; tests/test_meta_algorithms.py
checks each. A typing.Protocol, as Model Garden's `Task` is for its trainer: structural,
so a user's learner needs no base class.
"""

from typing import Protocol, runtime_checkable

__all__ = ["MetaLearner"]


@runtime_checkable
class MetaLearner(Protocol):
    """A meta-learner.

    meta_step(support, query, step) -> {name: float32 scalar tensor}: one meta-update on a
      task batch; support and query are nested structures with a leading task dim B
      (e.g. `(images [B, N*K, H, W, C], labels [B, N*K])`); step: int or int64 scalar.
    adapt_and_evaluate(support, query, step, num_steps=None) -> {name: scalar}: meta-test
      on a task batch: adapts per task on support (`num_steps` inner steps, default the
      learner's; ProtoNet: computes prototypes), query metrics averaged over tasks
      (including "query_accuracy" for classifiers). Changes no variable.
    trackables() -> dict: objects for `tf.train.Checkpoint(**learner.trackables())`.
    inner_rule() -> the inner update rule used by `tfmeta.meta.adapt` (read inside the
      outer tape: Meta-SGD's rates are variables); None for learners without an inner
      loop (ProtoNet).
    update_rule_variables: the meta-learned variables of a learned inner rule (Meta-SGD
      rates, Meta-Curvature factors); empty otherwise.
    """

    update_rule_variables: tuple

    def meta_step(self, support, query, step):
        """One meta-update on a task batch -> {name: float32 scalar tensor}."""

    def adapt_and_evaluate(self, support, query, step, num_steps=None):
        """Meta-test on a task batch (no variable changes) -> {name: scalar}."""

    def trackables(self):
        """Objects for tf.train.Checkpoint(**learner.trackables())."""

    def inner_rule(self):
        """The inner update rule of `tfmeta.meta.adapt` (None without an inner loop)."""
