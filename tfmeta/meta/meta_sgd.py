"""Meta-SGD (Li, Zhou, Chen & Li 2017, arXiv:1707.09835): MAML with learned inner rates.

The inner update is `phi = theta - alpha * grad` where `alpha` has one learned rate per
parameter *element* (as in the paper; `per_element=False` learns one scalar per variable).
The rates are Keras variables initialised to `inner_lr` and trained jointly with theta by
the meta-optimizer, through the same outer objectives as the parameter they scale (the
rates are read inside the outer tape, so they get exact meta-gradients; second order by
default; with `first_order` the inner gradients are constants and alpha's meta-gradient is
`-sum_s stop_gradient(grad_s) * dL/dphi`, chained through the identity Jacobians).
Rates may become negative; the paper does not constrain them and neither do we.
"""

import re

import keras
import numpy as np
import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.inner_loop import SGD
from tfmeta.meta.maml import MAML

__all__ = ["MetaSGD"]


class MetaSGD(MAML):
    """MAML whose inner SGD learning rates are meta-learned.

    Same arguments as `MAML` except `inner_update`, replaced by `inner_lr` (float, initial
    value of every rate) and `per_element` (True: rates shaped like each variable; False:
    one scalar per variable). `learning_rates` holds the rate variables (one per variable;
    rates of variables no objective updates stay at `inner_lr`). Extra metric:
    `inner_lr_mean` (mean over all rate elements).
    """

    def __init__(self, variables, inner_objectives, outer_objectives, inner_lr,
                 num_inner_steps, first_order=False, meta_optimizer=None, seed=0,
                 per_element=True, parallel_tasks=1):
        if not isinstance(inner_lr, (int, float)) or inner_lr <= 0:
            raise ConfigError(f"MetaSGD inner_lr must be a float > 0, got {inner_lr!r}")
        self.inner_lr = float(inner_lr)
        self.per_element = bool(per_element)
        self.learning_rates = []
        for v in variables:
            shape = tuple(v.shape) if self.per_element else ()
            name = re.sub(r"[^A-Za-z0-9_]", "_", getattr(v, "path", None) or v.name)
            self.learning_rates.append(keras.Variable(
                keras.initializers.Constant(self.inner_lr)(shape, dtype=v.dtype),
                dtype=v.dtype, trainable=True, name=f"inner_lr_{name}"))
        super().__init__(variables, inner_objectives, outer_objectives,
                         SGD(self.learning_rates), num_inner_steps, first_order=first_order,
                         meta_optimizer=meta_optimizer, seed=seed,
                         parallel_tasks=parallel_tasks)

    def _make_companions(self):
        return list(self.learning_rates)

    def inner_rule(self):
        """SGD with the learned per-parameter rates (read inside the outer tape)."""
        # Read the rates here, inside the caller's outer tape, so they get meta-gradients.
        return SGD([tf.convert_to_tensor(lr) for lr in self.learning_rates])

    def meta_gradients(self, support, query, step, task_offset=0):
        """MAML's meta-gradients plus the inner_lr_mean metric: (grads, metrics)."""
        grads, metrics = super().meta_gradients(support, query, step, task_offset)
        total = tf.add_n([tf.reduce_sum(tf.cast(tf.convert_to_tensor(lr), tf.float32))
                          for lr in self.learning_rates])
        size = sum(int(np.prod(lr.shape)) for lr in self.learning_rates)
        metrics["inner_lr_mean"] = total / size
        return grads, metrics
