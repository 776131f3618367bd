"""Meta-Curvature (Park & Oliva 2019, arXiv:1902.03356): a meta-learned preconditioner.

The inner update is `phi = theta - lr * MC(grad)`, where MC multiplies the gradient tensor
along each of its modes by a learned matrix (a Kronecker-factored curvature). A kernel of
shape `[..., fan_in, fan_out]` is viewed as `[spatial, fan_in, fan_out]` (spatial = the
product of the leading axes, 1 for a Dense kernel) and transformed by

  MC(G) = G x_1 M_spatial x_2 M_in x_3 M_out          (x_k: mode-k product)

A mode longer than `max_matrix_dim` gets a learned diagonal (a vector) instead of a
matrix, so a 64 x 6272 Dense kernel costs 64^2 + 6272 factor entries, not 6272^2. Rank-0/1
parameters (biases, norm scales) get a learned per-element scale. Every factor starts at
the identity (matrices) or ones (vectors), so an untrained Meta-Curvature learner *is*
MAML with SGD(lr) — tested — and the outer loop then learns how the inner loop should
move each layer: rotations and scalings of its gradient across channels, which Meta-SGD's
per-element rates cannot express. Factors get exact meta-gradients (read inside the outer
tape, second order by default), are checkpointed, used by `tfmeta.adapt` and exported
inside the `adapt_and_sample` serving signature.
"""

import re
import string

import keras
import numpy as np
import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.meta.maml import MAML

__all__ = ["MetaCurvature", "Preconditioned", "curvature_modes"]


def curvature_modes(shape, max_matrix_dim):
    """`(view_shape, kinds)` of a parameter: the 3-D view and, per mode, the factor kind.

    kinds[k] is "matrix", "vector" or None (a mode of length 1 has no factor). Rank-0/1
    parameters have view_shape None and one "elementwise" factor of their own shape.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        return None, ("elementwise",)
    view = (int(np.prod(shape[:-2])), shape[-2], shape[-1])
    kinds = tuple(None if n == 1 else "matrix" if n <= max_matrix_dim else "vector"
                  for n in view)
    return view, kinds


def _mode_product(g, factor, axis):
    """g (rank 3) multiplied along `axis` by a matrix [n, n] (g x_axis M) or a vector [n]."""
    if factor.shape.rank == 1:
        shape = [1, 1, 1]
        shape[axis] = -1
        return g * tf.reshape(factor, shape)
    letters = string.ascii_lowercase[:3]
    out = letters.replace(letters[axis], "z")
    return tf.einsum(f"{letters},z{letters[axis]}->{out}", g, factor)


class Preconditioned:
    """Functional update `p <- p - lr * MC_i(g)` with per-parameter factor lists.

    factors: one entry per parameter — None (plain SGD for it) or the list of factor
    tensors in `curvature_modes` order (None for modes without a factor). lr: float.
    """

    def __init__(self, learning_rate, factors, views):
        if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
            raise ConfigError(f"Preconditioned: learning_rate must be a float > 0, got "
                              f"{learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.factors, self.views = list(factors), list(views)

    def init(self, params):
        """Update-rule state for params (list of tensors): none is kept (an empty tuple)."""
        del params
        return ()

    def precondition(self, i, g):
        """MC_i(g): the transformed gradient of parameter i (same shape as g)."""
        factors = self.factors[i] if i < len(self.factors) else None
        if factors is None:
            return g
        view = self.views[i]
        if view is None:
            return g * tf.cast(factors[0], g.dtype)
        out = tf.reshape(g, view)
        for axis, factor in enumerate(factors):
            if factor is not None:
                out = _mode_product(out, tf.cast(factor, g.dtype), axis)
        return tf.reshape(out, tf.shape(g))

    def update(self, params, grads, state, step):
        """One preconditioned SGD step: (params - lr * M(g), state), lists aligned with params."""
        del step
        new = [p if g is None else
               p - tf.constant(self.learning_rate, p.dtype) * self.precondition(i, g)
               for i, (p, g) in enumerate(zip(params, grads))]
        return new, state


class MetaCurvature(MAML):
    """MAML whose inner SGD step is preconditioned by learned Kronecker factors.

    Same arguments as `MAML` except `inner_update`, replaced by `inner_lr` (float) and
    `max_matrix_dim` (modes longer than this get a diagonal factor). `factors[i]` lists
    parameter i's factor variables (None for factor-less modes). Extra metric:
    `curvature_change` (root-mean-square distance of all factor entries from their
    identity initialisation).
    """

    def __init__(self, variables, inner_objectives, outer_objectives, inner_lr,
                 num_inner_steps, first_order=False, meta_optimizer=None, seed=0,
                 max_matrix_dim=256, parallel_tasks=1):
        if not isinstance(inner_lr, (int, float)) or inner_lr <= 0:
            raise ConfigError(f"MetaCurvature inner_lr must be a float > 0, got {inner_lr!r}")
        if not isinstance(max_matrix_dim, int) or max_matrix_dim < 1:
            raise ConfigError(f"max_matrix_dim must be an int >= 1, got {max_matrix_dim!r}")
        self.inner_lr = float(inner_lr)
        self.views, self.factors, self._initial = [], [], []
        for v in variables:
            view, kinds = curvature_modes(v.shape, max_matrix_dim)
            name = re.sub(r"[^A-Za-z0-9_]", "_", getattr(v, "path", None) or v.name)
            sizes = tuple(v.shape) if view is None else view
            factors = []
            for k, kind in enumerate(kinds):
                if kind is None:
                    factors.append(None)
                    continue
                if kind == "matrix":
                    init = np.eye(sizes[k])
                else:
                    init = np.ones(sizes if kind == "elementwise" else (sizes[k],))
                factors.append(keras.Variable(init.astype(v.dtype), dtype=v.dtype,
                                              trainable=True, name=f"curvature{k}_{name}"))
                self._initial.append(init)
            self.views.append(view)
            self.factors.append(factors)
        super().__init__(variables, inner_objectives, outer_objectives,
                         Preconditioned(self.inner_lr, self.factors, self.views),
                         num_inner_steps, first_order=first_order,
                         meta_optimizer=meta_optimizer, seed=seed,
                         parallel_tasks=parallel_tasks)

    def _make_companions(self):
        return [[f for f in factors if f is not None] for factors in self.factors]

    def inner_rule(self):
        """The preconditioned rule reading the current curvature factors (inside the outer tape)."""
        # Read the factors here, inside the caller's outer tape, so they get meta-gradients.
        return Preconditioned(
            self.inner_lr,
            [[None if f is None else tf.convert_to_tensor(f) for f in factors]
             for factors in self.factors], self.views)

    def meta_gradients(self, support, query, step, task_offset=0):
        """MAML's meta-gradients plus the curvature_change metric: (grads, metrics)."""
        grads, metrics = super().meta_gradients(support, query, step, task_offset)
        squares = [tf.reduce_sum(tf.square(tf.cast(tf.convert_to_tensor(v) - init,
                                                   tf.float32)))
                   for v, init in zip(self.update_rule_variables, self._initial)]
        size = sum(init.size for init in self._initial)
        metrics["curvature_change"] = tf.sqrt(tf.add_n(squares) / size)
        return grads, metrics
