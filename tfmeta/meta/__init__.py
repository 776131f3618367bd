"""Meta-learning core: the functional inner loop and the learners built on it.

See WORKSPACE.md ("Meta-learning core") for the contract. Importing this imports TF.
"""

from tfmeta.meta.aggregation import ModelAggregation
from tfmeta.meta.common import linear_anneal
from tfmeta.meta.contract import MetaLearner
from tfmeta.meta.inner_loop import (SGD, Adam, AdaptResult, Objective, adapt, fold_seed,
                                    keras_loss, minibatch_objective, param_slices,
                                    stateless_apply)
from tfmeta.meta.maml import MAML
from tfmeta.meta.meta_curvature import MetaCurvature, Preconditioned
from tfmeta.meta.meta_sgd import MetaSGD
from tfmeta.meta.protonets import ProtoNet
from tfmeta.meta.registry import GRADIENT_ALGORITHMS, learner_from_config, make_learner
from tfmeta.meta.reptile import Reptile

__all__ = ["SGD", "Adam", "AdaptResult", "Objective", "adapt", "fold_seed", "keras_loss",
           "param_slices", "stateless_apply", "MAML", "MetaSGD", "MetaCurvature",
           "Preconditioned", "Reptile", "make_learner", "learner_from_config",
           "GRADIENT_ALGORITHMS",
           "ModelAggregation", "ProtoNet", "MetaLearner", "linear_anneal",
           "minibatch_objective"]
