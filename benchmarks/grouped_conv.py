"""Per-task convolutions in a loop vs one grouped convolution over all tasks.

Why tfmeta loops over tasks instead of vectorising them: a meta-batch of T tasks with
per-task fast weights can run its convolutions either as T ordinary convolutions (the
in-graph `tf.while_loop` the learners use) or as one grouped convolution (task t = channel
group t, groups = T). This times forward + backward (input and kernel gradients) of each
layer of the stride-2 Conv-4 for T = 32 tasks of N = 80 images (5-way, 1 support + 15
query per class), both ways, and prints per layer

    layer=<H>x<H>x<C> looped_ms=<x> grouped_ms=<x> looped_gflops_per_s=<x>
        grouped_gflops_per_s=<x> onednn=<0|1>

Grouped-convolution gradients exist on CPU only in TF's oneDNN kernels (TF's default):
with `TF_ENABLE_ONEDNN_OPTS=0` the grouped column reports `error`.

    python -m benchmarks.grouped_conv [--tasks 32] [--images 80] [--repeats 7]
"""

import argparse
import time


def _median_ms(fn, args, repeats):
    import numpy as np
    for out in fn(*args):   # trace + warm up
        out.numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for out in fn(*args):
            out.numpy()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    from tfmeta import runtime
    tf = runtime.configure()
    tasks, images, filters = args.tasks, args.images, args.filters

    def looped(x, w):
        def body(t, acc):
            with tf.GradientTape() as tape:
                xt, wt = x[t], w[t]
                tape.watch([xt, wt])
                loss = tf.reduce_sum(tf.square(tf.nn.conv2d(xt, wt, 2, "SAME")))
            gx, gw = tape.gradient(loss, [xt, wt])
            return t + 1, acc + tf.reduce_sum(gx) + tf.reduce_sum(gw)
        return [tf.while_loop(lambda t, _: t < tasks, body, (0, 0.0))[1]]

    def grouped(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(tf.square(tf.nn.conv2d(x, w, 2, "SAME")))
        return tape.gradient(loss, [x, w])

    looped, grouped = tf.function(looped), tf.function(grouped)
    for side, channels in [(28, 1), (14, filters), (7, filters), (4, filters)]:
        x = tf.random.stateless_normal([tasks, images, side, side, channels], [0, 0])
        w = 0.05 * tf.random.stateless_normal([tasks, 3, 3, channels, filters], [0, 1])
        # Task-grouped layouts: [N, H, W, T*C] and [3, 3, C, T*O] (group t = task t).
        xg = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [images, side, side, -1])
        wg = tf.reshape(tf.transpose(w, [1, 2, 3, 0, 4]), [3, 3, channels, -1])
        out_side = (side + 1) // 2
        # forward + input gradient + kernel gradient: 3 convolutions' worth.
        flops = 3 * 2 * tasks * images * out_side ** 2 * 9 * channels * filters
        looped_ms = _median_ms(looped, (x, w), args.repeats)
        try:
            grouped_ms = _median_ms(grouped, (xg, wg), args.repeats)
            grouped_text = (f"grouped_ms={grouped_ms:.1f} "
                            f"grouped_gflops_per_s={flops / grouped_ms / 1e6:.0f}")
        except tf.errors.InvalidArgumentError:
            grouped_text = "grouped_ms=error grouped_gflops_per_s=error"
        print(f"layer={side}x{side}x{channels} looped_ms={looped_ms:.1f} "
              f"looped_gflops_per_s={flops / looped_ms / 1e6:.0f} {grouped_text} "
              f"onednn={int(runtime.onednn_enabled())}", flush=True)


if __name__ == "__main__":
    main()
