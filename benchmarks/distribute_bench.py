"""Meta-step throughput with 1 vs R replicas for the same global meta-batch.

Reference setting of benchmarks/meta_step.py: Conv-4 stride-2 (MetaNorm "batch"),
28x28x1 synthetic Omniglot-shaped tasks, 5-way 1-shot, 15 query images per class, inner
SGD lr 0.4, meta-optimizer Adam 1e-3 (MAML) / Reptile with Adam on the Reptile
direction. Layouts (each in its own subprocess, since logical devices must be configured
before TF initialises):

  default      one device, plain learner (tasks one after another in the task loop)
  parallel     one device, plain learner with parallel_tasks=R (task loop overlaps R tasks)
  mirrored     MirroredStrategy over R logical CPU devices (or R GPUs), meta-batch split

Prints one line per (config, layout):

    config=maml2_1step layout=mirrored replicas=2 meta_batch_size=8
        seconds_per_meta_iter=<median> tasks_per_sec=<x> compile_seconds=<x> repeats=<n>

and one `speedup` line per config (default time / layout time).

    python -m benchmarks.distribute_bench                       # maml2_1step, reptile_5step
    python -m benchmarks.distribute_bench --replicas 2 --meta_batch_size 8 --repeats 3
"""

import argparse
import os
import subprocess
import sys

CONFIGS = {
    # name: (learner, inner steps, first order)
    "maml2_1step": ("maml", 1, False),
    "maml1_1step": ("maml", 1, True),
    "reptile_5step": ("reptile", 5, True),
}
LAYOUTS = ("default", "parallel", "mirrored")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="maml2_1step,reptile_5step",
                        help=f"comma-separated subset of {sorted(CONFIGS)}")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help=f"comma-separated subset of {LAYOUTS}")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--meta_batch_size", type=int, default=8,
                        help="global tasks per meta-step (a multiple of --replicas)")
    parser.add_argument("--n_way", type=int, default=5)
    parser.add_argument("--k_shot", type=int, default=1)
    parser.add_argument("--k_query", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="timed meta-steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", default="", help="internal: 'config:layout' to time")
    return parser.parse_args(argv)


def run_one(args):
    """Times one (config, layout) in this process; prints its key=value line."""
    from tfmeta import runtime

    config, layout = args.single.split(":")
    replicas = args.replicas if layout == "mirrored" else 1
    runtime.configure(num_cpu_replicas=replicas)
    import keras
    import numpy as np

    from benchmarks.meta_step import synthetic_batches, time_meta_steps
    from tfmeta import distribute
    from tfmeta.meta import MAML, SGD, Reptile
    from tfmeta.models.classifiers import classification_objective, conv4

    kind, steps, first_order = CONFIGS[config]
    strategy = distribute.make_strategy("mirrored") if layout == "mirrored" else None
    parallel = args.replicas if layout == "parallel" else 1
    with distribute.scope(strategy):
        keras.utils.set_random_seed(args.seed)
        model = conv4(args.n_way, (28, 28, 1), pool="stride")
        objective = classification_objective(model)
        optimizer = keras.optimizers.Adam(1e-3)
        variables = model.trainable_variables
        learner = {
            "maml": lambda: MAML(variables, objective, objective, SGD(0.4), steps,
                                 first_order=first_order, meta_optimizer=optimizer,
                                 seed=args.seed, parallel_tasks=parallel),
            "reptile": lambda: Reptile(variables, objective, SGD(0.4), steps,
                                       meta_optimizer=optimizer, seed=args.seed,
                                       parallel_tasks=parallel),
        }[kind]()
    learner = distribute.distribute_learner(learner, strategy)

    batches = synthetic_batches(args)
    compile_seconds, times = time_meta_steps(learner, batches, args)
    seconds = float(np.median(times))
    print(f"config={config} layout={layout} replicas={distribute.num_replicas(strategy)} "
          f"parallel_tasks={parallel} meta_batch_size={args.meta_batch_size} "
          f"seconds_per_meta_iter={seconds:.4f} "
          f"tasks_per_sec={args.meta_batch_size / seconds:.2f} "
          f"compile_seconds={compile_seconds:.2f} repeats={args.repeats}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.single:
        run_one(args)
        return
    configs = [c for c in args.configs.split(",") if c]
    layouts = [x for x in args.layouts.split(",") if x]
    bad = [c for c in configs if c not in CONFIGS] + [x for x in layouts if x not in LAYOUTS]
    if bad:
        sys.exit(f"unknown configs/layouts {bad}; choose from {sorted(CONFIGS)} / {LAYOUTS}")
    if args.meta_batch_size % args.replicas:
        sys.exit("--meta_batch_size must be a multiple of --replicas")
    passed = [f"--{k}={v}" for k, v in vars(args).items()
              if k not in ("configs", "layouts", "single")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for config in configs:
        seconds = {}
        for layout in layouts:
            result = subprocess.run(
                [sys.executable, "-m", "benchmarks.distribute_bench", *passed,
                 f"--single={config}:{layout}"],
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                env=env, capture_output=True, text=True, check=False)
            lines = [ln for ln in result.stdout.splitlines() if ln.startswith("config=")]
            if result.returncode or not lines:
                print(f"config={config} layout={layout} error=1", flush=True)
                sys.stderr.write(result.stderr[-3000:])
                continue
            print(lines[-1], flush=True)
            fields = dict(kv.split("=", 1) for kv in lines[-1].split())
            seconds[layout] = float(fields["seconds_per_meta_iter"])
        if "default" in seconds:
            for layout, value in seconds.items():
                if layout != "default":
                    print(f"speedup config={config} layout={layout} "
                          f"replicas={args.replicas} "
                          f"vs_default={seconds['default'] / value:.2f}", flush=True)


if __name__ == "__main__":
    main()
