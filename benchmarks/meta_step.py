"""Seconds per meta-iteration of the meta-learners on the reference few-shot setting.

Reference: Conv-4 stride-2 network (112k parameters, MetaNorm "batch"), Omniglot-shaped
synthetic data (28x28x1), 5-way 1-shot, 15 query images per class, meta-batch 32, inner
SGD lr 0.4, meta-optimizer Adam 1e-3 (`--network=conv4` for the max-pool Conv-4 of the
classification configs). Each configuration runs in its own subprocess so
`peak_rss_mb` (ru_maxrss) is that configuration's own peak and `idle_rss_mb` the RSS
of the same process after importing TF and building the model, before any step. First
a `peak` line (benchmarks.flops: measured conv/matmul GFLOP/s), then one line per config:

    config=maml2_1step meta_batch_size=32 seconds_per_meta_iter=<median> compile_seconds=<x>
        peak_rss_mb=<x> idle_rss_mb=<x> gflop_per_meta_iter=<x> achieved_gflops_per_s=<x>
        fraction_of_conv_peak=<x> repeats=<n>

GFLOP per meta-iteration = TF-profiler FLOPs of one task's graph x meta-batch (the
forward, inner backward, second-order and outer backward ops actually in the graph).

    python -m benchmarks.meta_step                       # all configs, meta-batch 32
    python -m benchmarks.meta_step --repeats 2 --configs maml2_1step,reptile_5step
    # the 20-way 1-shot MAML configs (configs/*maml_20w1s.cfg): 5 steps of lr 0.1,
    # meta-batch 16, 1 training query per class, max-pool Conv-4
    python -m benchmarks.meta_step --configs maml2_5step --network conv4 --n_way 20 \
        --k_query 1 --meta_batch_size 16 --inner_lr 0.1 --repeats 3
"""

import argparse
import os
import resource
import subprocess
import sys

CONFIGS = {
    # name: (learner, inner steps, first order)
    "maml2_1step": ("maml", 1, False),
    "maml2_5step": ("maml", 5, False),
    "maml1_1step": ("maml", 1, True),
    "maml1_5step": ("maml", 5, True),
    "reptile_5step": ("reptile", 5, True),
    # Second order with each inner step recomputed in the outer backward pass.
    "maml2_5step_recompute": ("maml", 5, "recompute"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {sorted(CONFIGS)}")
    parser.add_argument("--meta_batch_size", type=int, default=32)
    parser.add_argument("--n_way", type=int, default=5)
    parser.add_argument("--k_shot", type=int, default=1)
    parser.add_argument("--k_query", type=int, default=15)
    parser.add_argument("--inner_lr", type=float, default=0.4)
    parser.add_argument("--meta_lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5, help="timed meta-steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compile")
    parser.add_argument("--parallel_tasks", type=int, default=0,
                        help="tasks of the in-graph loop at once (0: auto, as the trainers: "
                        "tfmeta.runtime.task_threads)")
    parser.add_argument("--threads", type=int, default=0,
                        help="fixed TF thread budget (0: the cores, split over parallel tasks)")
    parser.add_argument("--onednn", type=int, choices=[0, 1], default=1,
                        help="TF's oneDNN CPU kernels on (1, TF's default) or off (0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--network", default="conv4_stride", choices=["conv4_stride", "conv4"],
                        help="stride-2 Conv-4 (the reference) or max-pool Conv-4")
    parser.add_argument("--peak_gflops", type=float, default=0.0,
                        help="internal: measured conv peak passed to each config")
    parser.add_argument("--single", action="store_true",
                        help="internal: run exactly one config in this process")
    return parser.parse_args(argv)


def synthetic_batches(args, count=2):
    """`count` (support, query) pairs of random Omniglot-shaped episodes (seeded)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(args.seed)

    def episodes(per_class):
        shape = (args.meta_batch_size, args.n_way * per_class, 28, 28, 1)
        labels = np.tile(np.arange(args.n_way, dtype="int32"),
                         (args.meta_batch_size, per_class))
        return (tf.constant(rng.random(shape, dtype=np.float32)), tf.constant(labels))

    return [(episodes(args.k_shot), episodes(args.k_query)) for _ in range(count)]


def time_meta_steps(learner, batches, args):
    """(compile seconds of the first step, [seconds of each timed step]) after warm-up."""
    from benchmarks import flops as flops_lib

    def step_fn(step):   # float() waits for the step to finish
        float(learner.meta_step(*batches[step % 2], step)["query_loss"])
    return flops_lib.time_steps(step_fn, args.repeats, args.warmup)


def run_one(args):
    """Times one configuration in this process; prints its key=value line."""
    from tfmeta import runtime

    plan = runtime.task_threads(args.parallel_tasks, args.meta_batch_size, args.threads)
    runtime.configure(intra_op_threads=plan.intra_op_threads,
                      inter_op_threads=plan.inter_op_threads, onednn=bool(args.onednn))
    import keras
    import numpy as np

    from benchmarks import flops as flops_lib
    from tfmeta.meta import MAML, SGD, Reptile
    from tfmeta.models.classifiers import classification_objective, conv4

    kind, steps, order = CONFIGS[args.configs]
    keras.utils.set_random_seed(args.seed)
    model = conv4(args.n_way, (28, 28, 1),
                  pool="stride" if args.network == "conv4_stride" else "max")
    objective = classification_objective(model)
    optimizer = keras.optimizers.Adam(args.meta_lr)
    if kind == "maml":
        learner = MAML(model.trainable_variables, objective, objective, SGD(args.inner_lr),
                       steps, first_order=order is True, meta_optimizer=optimizer,
                       seed=args.seed, parallel_tasks=plan.parallel_tasks,
                       recompute=order == "recompute")
    else:
        learner = Reptile(model.trainable_variables, objective, SGD(args.inner_lr), steps,
                          meta_optimizer=optimizer, seed=args.seed,
                          parallel_tasks=plan.parallel_tasks)

    batches = synthetic_batches(args)
    idle_mb = current_rss_mb()
    flops = flops_lib.task_flops(learner, *batches[0]) * args.meta_batch_size
    compile_seconds, times = time_meta_steps(learner, batches, args)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    seconds = float(np.median(times))
    print(f"config={args.configs} network={args.network} n_way={args.n_way} "
          f"k_shot={args.k_shot} k_query={args.k_query} inner_lr={args.inner_lr} "
          f"meta_batch_size={args.meta_batch_size} seconds_per_meta_iter={seconds:.4f} "
          f"compile_seconds={compile_seconds:.2f} peak_rss_mb={peak_mb:.0f} "
          f"idle_rss_mb={idle_mb:.0f} {flops_lib.achieved(flops, seconds, args.peak_gflops)} "
          f"repeats={args.repeats} parallel_tasks={plan.parallel_tasks} "
          f"intra_op_threads={plan.intra_op_threads} "
          f"onednn={int(runtime.onednn_enabled())} "
          f"traces={learner.compiled_meta_step.experimental_get_tracing_count()}", flush=True)


def current_rss_mb():
    """Resident set size of this process now (Linux /proc), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv=None):
    args = parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        sys.exit(f"--configs: unknown {unknown}; choose from {sorted(CONFIGS)}")
    if args.single:
        if len(names) != 1:
            sys.exit("--single needs exactly one config in --configs")
        run_one(args)
        return
    if not args.peak_gflops:
        import benchmarks.flops as flops_lib
        from tfmeta import runtime
        runtime.configure(intra_op_threads=args.threads, onednn=bool(args.onednn))
        peak = flops_lib.measure_peak()
        print(flops_lib.peak_line(peak), flush=True)
        args.peak_gflops = peak["conv3x3"]
    passed = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("configs", "single")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in names:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.meta_step", *passed, f"--configs={name}",
             "--single"], env=env, capture_output=True, text=True, check=False,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("config=")]
        if result.returncode or not lines:
            print(f"config={name} error=1", flush=True)
            sys.stderr.write(result.stderr[-3000:])
        for line in lines:
            print(line, flush=True)


if __name__ == "__main__":
    main()
