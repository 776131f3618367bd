"""T tasks' copies of one Keras model, run as one computation ("vectorised tasks").

A meta-batch of T tasks adapts T copies of a network, each with its own fast weights. A
loop over tasks runs T small computations one after another; `task_batched_apply` runs
them together: task t's activations are channel group t of one tensor
(`[N, H, W, T*C]`, channels task-major), so every convolution becomes one *grouped*
convolution (groups = T, the T kernels stacked on the output axis), every dense layer one
batched matmul (`[T, N, D] @ [T, D, K]`), and normalisation statistics stay per task. The
layers interpret the model's own configuration (strides, padding, activations, MetaNorm
mode): the Keras model stays the one definition of the network, and per-task outputs equal
T separate `stateless_call`s (tests/test_meta_algorithms.py).

Requirements: a chain of layers (one input, each layer feeding the next) built from the
kinds in `SUPPORTED`; every task has the same number of images N; on CPU, gradients of
grouped convolutions exist only in TF's oneDNN kernels (float32/bfloat16; TF's default,
see tfmeta.runtime) — without them this raises a ConfigError.
"""

import keras
import tensorflow as tf

from tfmeta.errors import ConfigError
from tfmeta.models.layers import MetaNorm

__all__ = ["task_batched_apply", "task_batched_loss", "SUPPORTED"]

# Activations that act element by element (safe on task-grouped channels).
_ELEMENTWISE = {"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu",
                "swish", "tanh", "sigmoid", "softplus", "mish"}
# Weightless layers that act per element, or per spatial window and channel.
_ELEMENTWISE_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU)
_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
SUPPORTED = ("Conv2D", "Dense", "MetaNorm", "ReLU", "LeakyReLU", "Activation",
             "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten")


def _activation(layer, x):
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", "linear")
    if name not in _ELEMENTWISE:
        raise ConfigError(f"task_batched_apply: activation {name!r} of layer {layer.name!r} "
                          "is not element-wise")
    return x if name == "linear" else fn(x)


def _grouped_to_tasks(x, tasks):
    """`[N, *S, T*C]` -> `[N, *S, T, C]`."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([shape[:-1], [tasks, shape[-1] // tasks]], 0))


def _check_grouped_conv(dtype):
    if tf.config.list_logical_devices("GPU"):
        return
    from tfmeta import runtime
    if not runtime.onednn_enabled() or dtype not in (tf.float32, tf.bfloat16):
        raise ConfigError(
            "vectorised tasks run convolutions as grouped convolutions, whose gradients "
            "TensorFlow implements on CPU only in its oneDNN kernels (float32/bfloat16): "
            f"this process has oneDNN {'on' if runtime.onednn_enabled() else 'off'} and "
            f"dtype {dtype.name}; use --onednn (TF's default) and float32, or turn "
            "vectorize_tasks off")


def _conv(layer, kernel, bias, x, tasks):
    if layer.groups != 1 or layer.data_format != "channels_last":
        raise ConfigError(f"task_batched_apply: layer {layer.name!r} needs groups=1 and "
                          "channels_last")
    _check_grouped_conv(x.dtype)
    kh, kw, cin, cout = kernel.shape[1:]
    # [T, kh, kw, C, O] -> [kh, kw, C, T*O]: the output channels of group t are task t's.
    k = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, cin, tasks * cout])
    y = tf.nn.conv2d(x, k, strides=layer.strides, padding=layer.padding.upper(),
                     dilations=layer.dilation_rate)
    if bias is not None:
        y = y + tf.reshape(bias, [tasks * cout])
    return _activation(layer, y)


def _meta_norm(layer, gamma, beta, x, grouped, tasks):
    # Per task: view as [N, *S, T, C] (grouped) or use [T, N, D] as it is (vector).
    if grouped:
        x = _grouped_to_tasks(x, tasks)
        rank = len(x.shape)
        spatial = list(range(1, rank - 2))
        axes = {"batch": [0] + spatial, "instance": spatial,
                "layer": spatial + [rank - 1]}.get(layer.mode)
        scale_shape = [tasks, -1]
    else:
        axes = {"batch": [1], "instance": [], "layer": [2]}.get(layer.mode)
        scale_shape = [tasks, 1, -1]
    out = x
    if layer.mode != "none":
        if not axes:
            raise ConfigError(f"task_batched_apply: MetaNorm {layer.name!r} mode "
                              f"{layer.mode!r} on vectors normalises nothing")
        mean = tf.reduce_mean(out, axis=axes, keepdims=True)
        var = tf.reduce_mean(tf.square(out - mean), axis=axes, keepdims=True)
        out = (out - mean) * tf.math.rsqrt(var + layer.epsilon)
    out = out * tf.reshape(gamma, scale_shape) + tf.reshape(beta, scale_shape)
    if grouped:
        shape = tf.shape(out)
        out = tf.reshape(out, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
    return out


def _to_vectors(x, layer, tasks):
    """Grouped `[N, *S, T*C]` -> per-task vectors `[T, N, D]` (Flatten / global mean)."""
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        if layer.keepdims or layer.data_format != "channels_last":
            raise ConfigError(f"task_batched_apply: {layer.name!r} needs keepdims=False "
                              "and channels_last")
        x = tf.reduce_mean(_grouped_to_tasks(x, tasks), axis=[1, 2])     # [N, T, C]
        return tf.transpose(x, [1, 0, 2])
    x = _grouped_to_tasks(x, tasks)                                       # [N, *S, T, C]
    rank = len(x.shape)
    x = tf.transpose(x, [rank - 2, 0] + list(range(1, rank - 2)) + [rank - 1])
    shape = tf.shape(x)
    return tf.reshape(x, [shape[0], shape[1], -1])                        # [T, N, S*C]


def task_batched_apply(model, params, inputs):
    """Runs `model` for T tasks at once with per-task parameters.

    model: built Keras functional model, a chain of `SUPPORTED` layers.
    params: list aligned with `model.trainable_variables`, each with a leading task axis T.
    inputs: `[T, N, ...]` (images `[T, N, H, W, C]` or vectors `[T, N, D]`).
    Returns `[T, N, ...]`, task t's slice equal to `model(inputs[t])` with weights
    `params[.][t]` (training-mode MetaNorm statistics, i.e. per task).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"task_batched_apply: model {model.name!r} must have one input "
                          "and one output")
    if model.non_trainable_variables:
        raise ConfigError(f"task_batched_apply: model {model.name!r} has non-trainable "
                          "state (e.g. BatchNormalization); use MetaNorm")
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    if len(params) != len(index):
        raise ConfigError(f"task_batched_apply: {len(params)} parameters for "
                          f"{len(index)} trainable variables of {model.name!r}")
    tasks = tf.shape(inputs)[0]
    rank = len(inputs.shape)
    if rank == 3:
        x, grouped = inputs, False
    else:
        perm = list(range(1, rank - 1)) + [0, rank - 1]   # [N, *S, T, C]
        x = tf.transpose(inputs, perm)
        shape = tf.shape(x)
        x = tf.reshape(x, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
        grouped = True
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        weights = [params[index[id(v)]] for v in layer.trainable_variables]
        if isinstance(layer, keras.layers.Conv2D) and grouped:
            x = _conv(layer, weights[0], weights[1] if layer.use_bias else None, x, tasks)
        elif isinstance(layer, keras.layers.Dense) and not grouped:
            x = tf.linalg.matmul(x, weights[0])
            if layer.use_bias:
                x = x + weights[1][:, None, :]
            x = _activation(layer, x)
        elif isinstance(layer, MetaNorm):
            x = _meta_norm(layer, weights[0], weights[1], x, grouped, tasks)
        elif isinstance(layer, (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D)) \
                and grouped:
            x, grouped = _to_vectors(x, layer, tasks), False
        elif isinstance(layer, keras.layers.Activation):
            x = _activation(layer, x)
        elif isinstance(layer, _ELEMENTWISE_LAYERS) or (isinstance(layer, _POOLS)
                                                        and grouped):
            x = layer(x)
        else:
            raise ConfigError(
                f"task_batched_apply: layer {layer.name!r} ({type(layer).__name__}) is not "
                f"supported here; supported: {', '.join(SUPPORTED)}")
    if grouped:   # [N, *S, T*C] -> [T, N, *S, C]
        x = _grouped_to_tasks(x, tasks)
        rank = len(x.shape)
        x = tf.transpose(x, [rank - 2] + list(range(rank - 2)) + [rank - 1])
    return x


def task_batched_loss(model, output_loss, inputs_fn=None):
    """`loss_fn(params, batch, seed)` over T tasks: the mean over tasks of
    `output_loss(task outputs, task batch)` (and of its aux values).

    The vectorised counterpart of `tfmeta.meta.inner_loop.keras_loss(model, output_loss)`
    for `Objective(task_batched_fn=...)`. output_loss must be a mean over the examples of
    its batch (then, with equal N per task, the mean over all T*N examples equals the
    mean over tasks of the per-task losses, which is what is computed). batch leaves have
    a leading task axis; inputs_fn: `batch -> [T, N, ...]` (default `batch[0]`).
    """
    inputs_fn = inputs_fn or (lambda batch: batch[0])

    def flat(x):
        shape = tf.shape(x)
        return tf.reshape(x, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))

    def loss_fn(params, batch, seed):
        del seed
        outputs = task_batched_apply(model, params, inputs_fn(batch))
        return output_loss(flat(outputs), tf.nest.map_structure(flat, batch))

    return loss_fn
