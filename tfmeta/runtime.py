"""Process-level TensorFlow set-up that must happen before TF initialises.

Call `configure()` first thing in trainers, benchmarks and test processes (TF raises
RuntimeError if threads or logical devices are configured after it initialised).
"""

import os
from typing import NamedTuple

__all__ = ["configure", "onednn_enabled", "quiet_tensorflow", "cpu_count", "TaskThreads",
           "task_threads", "task_threads_for"]


def cpu_count():
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


class TaskThreads(NamedTuple):
    """How a meta-step uses the cores: `parallel_tasks` tasks of the in-graph task loop run
    at once, each op with `intra_op_threads` threads (0 = TF's default); inter-op threads
    `inter_op_threads` (0 = TF's default, the core count)."""
    parallel_tasks: int
    intra_op_threads: int
    inter_op_threads: int


def task_threads(parallel_tasks=0, tasks_per_step=1, threads=0, cores=None):
    """The thread plan of a learner's meta-step (see TaskThreads).

    parallel_tasks: tasks adapted at once; 0 = auto, min(cores, tasks_per_step).
    tasks_per_step: the meta-batch (tasks per meta-step); at most that many run at once.
    threads: a fixed per-process budget (> 0, e.g. 1 to share the machine): intra- and
      inter-op threads are both `threads`; 0 = use the cores: with several tasks at once,
      each op gets `cores // parallel` threads (small per-task ops scale badly over cores,
      whole tasks side by side scale well: 2.2x for 5-step MAML on 2 cores,
      benchmarks/README.md).
    """
    cores = cores or cpu_count()
    if parallel_tasks < 0 or threads < 0:
        raise ValueError("parallel_tasks and threads must be >= 0")
    budget = threads or cores
    parallel = parallel_tasks or min(budget, max(1, tasks_per_step))
    if threads:
        return TaskThreads(parallel, threads, threads)
    at_once = min(parallel, max(1, tasks_per_step))
    return TaskThreads(parallel, max(1, cores // at_once) if at_once > 1 else 0, 0)


def task_threads_for(config):
    """`task_threads` of a FewShotConfig / GenerationConfig (its train and task parts)."""
    return task_threads(config.train.parallel_tasks, config.task.meta_batch_size,
                        config.train.threads)


def quiet_tensorflow():
    """Silences most TF C++ log noise; effective only before `import tensorflow`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def onednn_enabled():
    """Whether this process's TensorFlow runs its oneDNN CPU kernels (TF's x86 default;
    `TF_ENABLE_ONEDNN_OPTS=0` before TF starts turns them off). Fixed once TF has read it.
    TF has no public API for this (TF 2.21): the private util below is what
    `tf.sysconfig`-style checks in TF's own tests use."""
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())


def _choose_onednn(enabled):
    import sys
    value = "1" if enabled else "0"
    if "tensorflow" not in sys.modules:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = value
        return
    if onednn_enabled() != bool(enabled):
        started = "on" if onednn_enabled() else "off"
        raise RuntimeError(
            f"oneDNN {'on' if enabled else 'off'} was asked for, but TensorFlow had already "
            f"started with it {started}; choose it before TF initialises "
            "(tfmeta.runtime.configure first thing, or TF_ENABLE_ONEDNN_OPTS="
            f"{value} in the environment)")


def configure(num_cpu_replicas=1, intra_op_threads=0, inter_op_threads=0, onednn=None):
    """Configures TF threads and splits the CPU into `num_cpu_replicas` logical devices.

    onednn: True/False turns TF's oneDNN CPU kernels on/off (must happen before TF starts;
      None leaves TF's default, which is on for x86, or `TF_ENABLE_ONEDNN_OPTS`). Measured
      on our 2-core machines (benchmarks/README.md): on is 2.4x faster for the GAN
      meta-step; see there for the meta-learning steps.
    Safe to call more than once with the same arguments. Returns the `tensorflow` module.
    """
    quiet_tensorflow()
    if onednn is not None:
        _choose_onednn(onednn)
    import tensorflow as tf

    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        if num_cpu_replicas > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_replicas)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if num_cpu_replicas > 1 and have != num_cpu_replicas:
            raise RuntimeError(
                f"TensorFlow was initialised with {have} logical CPU device(s) before "
                f"{num_cpu_replicas} could be configured; call tfmeta.runtime.configure() "
                "before any TensorFlow op runs") from None
    return tf
