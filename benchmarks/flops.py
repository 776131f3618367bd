"""FLOP counts of traced graphs and the measured compute peak of this machine.

`graph_flops(concrete_function)`: float operations of every op in the graph that has TF
FLOP statistics (convolutions and their two backprop ops, matmuls, element-wise math),
counted by TF's graph profiler — the forward, inner backward, second-order and outer
backward ops actually present, not a formula. `measure_peak()` times a 3x3/64-channel
convolution and a 1024^2 matmul (float32), the machine's practical ceiling for our
networks. Prints, when run as a script:

    peak conv3x3_gflops_per_s=<x> matmul_gflops_per_s=<x> onednn=<0|1>

(oneDNN, TF's default CPU kernels, changes the peak: ~300 (Eigen) vs 420–480 (oneDNN) conv GFLOP/s here.)
"""

import time


def graph_flops(concrete_function):
    """Total float ops of `concrete_function.graph` (TF profiler statistics)."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(concrete_function.graph, options=options).total_float_ops


def _median_seconds(fn, repeats):
    fn()   # trace + warm up
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure_peak(repeats=15):
    """{"conv3x3": GFLOP/s, "matmul": GFLOP/s} measured on this machine (float32)."""
    import tensorflow as tf
    x = tf.random.stateless_normal([64, 14, 14, 64], [0, 0])
    k = tf.random.stateless_normal([3, 3, 64, 64], [0, 1])
    a = tf.random.stateless_normal([1024, 1024], [0, 2])
    conv = tf.function(lambda: tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME")))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    conv_flops = 2 * 64 * 14 * 14 * 9 * 64 * 64
    return {"conv3x3": conv_flops / _median_seconds(conv, repeats) / 1e9,
            "matmul": 2 * 1024 ** 3 / _median_seconds(matmul, repeats) / 1e9}


def peak_line(peak):
    from tfmeta import runtime
    return (f"peak conv3x3_gflops_per_s={peak['conv3x3']:.1f} "
            f"matmul_gflops_per_s={peak['matmul']:.1f} onednn={int(runtime.onednn_enabled())}")


def measure_peak_in_subprocess(onednn):
    """`measure_peak()` of a fresh process with all cores and oneDNN on/off (for callers
    whose own threads are already narrowed to one task's share)."""
    import os
    import re
    import subprocess
    import sys
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": str(int(onednn))}
    out = subprocess.run([sys.executable, "-m", "benchmarks.flops"], env=env, check=True,
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    values = dict(re.findall(r"(\w+)_gflops_per_s=([\d.]+)", out.stdout))
    return {"conv3x3": float(values["conv3x3"]), "matmul": float(values["matmul"])}


if __name__ == "__main__":
    from tfmeta import runtime
    runtime.configure()
    print(peak_line(measure_peak()), flush=True)


def task_flops(learner, support, query):
    """FLOPs of one task's share of a meta-step (the body of the in-graph task loop,
    which the profiler cannot see through), from task 0 of the batch."""
    import tensorflow as tf
    from tfmeta.meta.common import task_slice
    seed = tf.constant([0, 0], tf.int64)
    s = task_slice(support, 0)
    q = None if query is None else task_slice(query, 0)
    if hasattr(learner, "_task_gradients"):          # MAML family
        fn = lambda: learner._task_gradients(s, q, seed)[0]   # noqa: E731
    else:                                            # Reptile / aggregation
        fn = lambda: learner._adapted_deltas(s, q, seed, learner._moved)[0]  # noqa: E731
    return graph_flops(tf.function(fn).get_concrete_function())


def time_steps(step_fn, repeats, warmup=0):
    """(seconds of the first call, [seconds of each of `repeats` timed calls]).

    step_fn(step) runs step `step` and must block until its result is ready (e.g. read a
    metric with float()). The first call (step 0) includes tracing; `warmup` untimed
    calls follow it before the timed ones.
    """
    start = time.perf_counter()
    step_fn(0)
    first = time.perf_counter() - start
    for step in range(1, warmup + 1):
        step_fn(step)
    times = []
    for step in range(warmup + 1, warmup + 1 + repeats):
        start = time.perf_counter()
        step_fn(step)
        times.append(time.perf_counter() - start)
    return first, times


def achieved(flops, seconds, peak_gflops):
    """`gflop_per_meta_iter=.. achieved_gflops_per_s=.. fraction_of_conv_peak=..`."""
    rate = flops / seconds / 1e9
    fraction = f"{rate / peak_gflops:.2f}" if peak_gflops else "nan"
    return (f"gflop_per_meta_iter={flops / 1e9:.2f} achieved_gflops_per_s={rate:.1f} "
            f"fraction_of_conv_peak={fraction}")
