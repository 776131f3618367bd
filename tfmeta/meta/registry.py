"""One place that turns an algorithm name into a learner (used by fewshot and generation)."""

from tfmeta.config import GRADIENT_ALGORITHMS   # the one list of algorithm names
from tfmeta.errors import ConfigError
from tfmeta.meta.aggregation import ModelAggregation
from tfmeta.meta.common import linear_anneal
from tfmeta.meta.inner_loop import SGD, Adam
from tfmeta.meta.maml import MAML
from tfmeta.meta.meta_curvature import MetaCurvature
from tfmeta.meta.meta_sgd import MetaSGD
from tfmeta.meta.reptile import Reptile

__all__ = ["GRADIENT_ALGORITHMS", "learner_from_config", "make_learner"]


def make_learner(algorithm, variables, inner_objectives, outer_objectives, *,
                 inner_optimizer, inner_lr, num_inner_steps, first_order=False,
                 meta_optimizer=None, meta_step_size=1.0, aggregation_weighting="uniform",
                 seed=0, parallel_tasks=1, eval_objectives=None):
    """The learner `algorithm` over `variables` (see tfmeta.meta for each).

    inner_optimizer: "sgd" or "adam" (fixed rules; meta_sgd / meta_curvature learn theirs
    from `inner_lr`). first_order applies to the gradient-based algorithms ("fomaml" is
    MAML with first_order=True). meta_optimizer: a fresh Keras optimizer for those.
    meta_step_size: Reptile / aggregation's epsilon, a number or a callable schedule
      `step -> scalar` (e.g. `common.linear_anneal`).
    aggregation_weighting: "uniform" or "loss" (softmax of negative adapted losses).
    parallel_tasks: tasks of the in-graph loop run at once (see
      `tfmeta.runtime.task_threads`; results do not change).
    eval_objectives: Reptile / aggregation's query objectives (default: the inner ones;
      the MAML family evaluates with `outer_objectives`).
    """
    rule = {"sgd": SGD, "adam": Adam}[inner_optimizer](inner_lr)
    first_order = first_order or algorithm == "fomaml"
    gradient = dict(first_order=first_order, meta_optimizer=meta_optimizer, seed=seed,
                    parallel_tasks=parallel_tasks)
    builders = {
        "maml": lambda: MAML(variables, inner_objectives, outer_objectives, rule,
                             num_inner_steps, **gradient),
        "meta_sgd": lambda: MetaSGD(variables, inner_objectives, outer_objectives, inner_lr,
                                    num_inner_steps, **gradient),
        "meta_curvature": lambda: MetaCurvature(variables, inner_objectives,
                                                outer_objectives, inner_lr,
                                                num_inner_steps, **gradient),
        "reptile": lambda: Reptile(variables, inner_objectives, rule, num_inner_steps,
                                   meta_step_size=meta_step_size, seed=seed,
                                   parallel_tasks=parallel_tasks,
                                   eval_objectives=eval_objectives),
        "aggregation": lambda: ModelAggregation(
            variables, inner_objectives, rule, num_inner_steps, step_size=meta_step_size,
            weighting={"uniform": "uniform", "loss": "softmax"}[aggregation_weighting],
            seed=seed, parallel_tasks=parallel_tasks, eval_objectives=eval_objectives),
    }
    builders["fomaml"] = builders["maml"]
    if algorithm not in builders:
        raise ConfigError(f"unknown meta-learning algorithm {algorithm!r}; one of "
                          f"{sorted(builders)}")
    return builders[algorithm]()


def learner_from_config(config, variables, inner_objectives, outer_objectives,
                        meta_optimizer=None, eval_objectives=None):
    """`make_learner` with the settings of an experiment config (tfmeta.config
    FewShotConfig or GenerationConfig: its `inner`, `outer` and `train` parts and thread
    plan); the one place both experiment kinds turn a config into a learner."""
    from tfmeta import runtime
    inner, outer = config.inner, config.outer
    return make_learner(
        outer.algorithm, variables, inner_objectives, outer_objectives,
        inner_optimizer=inner.optimizer, inner_lr=inner.lr, num_inner_steps=inner.num_steps,
        first_order=inner.first_order, meta_optimizer=meta_optimizer,
        meta_step_size=(linear_anneal(outer.meta_step_size, config.train.num_steps)
                        if outer.meta_step_anneal else outer.meta_step_size),
        aggregation_weighting=outer.aggregation_weighting, seed=config.train.seed,
        parallel_tasks=runtime.task_threads_for(config).parallel_tasks,
        eval_objectives=eval_objectives)
