"""Seconds and GFLOP/s per meta-step of the warp generator (configs/omniglot_warp.cfg).

Setting: the model and meta-learner of --config (default configs/omniglot_warp.cfg:
`warp28`, 4-d warp code, 32-d support context, FOMAML with 1 inner Adam step on the
context, CAVIA), meta-batch 8 characters of K = 5 support + 10 query drawings (28x28x1,
synthetic data of Omniglot's shape); --meta_batch_size, --inner_steps and --preset,
when given, override the config's. Prints the machine's peak (benchmarks.flops, all
cores, fresh process) and

    config=warp_fomaml_context ... seconds_per_meta_iter=<median> gflop_per_meta_iter=<x>
        achieved_gflops_per_s=<x> fraction_of_conv_peak=<x> ...

    python -m benchmarks.warp_step [--config configs/omniglot_warp.cfg] [--repeats 20]
        [--meta_batch_size 8] [--threads 0]
"""

import argparse
import os
import resource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "omniglot_warp.cfg"),
                        help="trainers.meta_gan flagfile of the warp model (nested "
                             "flagfiles are read relative to the working directory)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--meta_batch_size", type=int, default=None,
                        help="default: the config's (8)")
    parser.add_argument("--inner_steps", type=int, default=None,
                        help="default: the config's (1)")
    parser.add_argument("--preset", default=None, help="default: the config's (warp28)")
    parser.add_argument("--threads", type=int, default=0,
                        help="fixed TF thread budget (0: the cores, split over parallel tasks)")
    parser.add_argument("--parallel_tasks", type=int, default=0,
                        help="tasks at once (0: auto, tfmeta.runtime.task_threads)")
    parser.add_argument("--onednn", type=int, choices=[0, 1], default=1)
    args = parser.parse_args(argv)

    from tfmeta import config as cfg
    from tfmeta import runtime
    from trainers import common
    given = {name: getattr(args, name) for name in ("preset", "meta_batch_size", "inner_steps")
             if getattr(args, name) is not None}
    config = common.parse_config(cfg.GenerationConfig(), [
        "prog", f"--flagfile={args.config}", f"--threads={args.threads}",
        f"--parallel_tasks={args.parallel_tasks}", *(f"--{k}={v}" for k, v in given.items())])
    if config.model != "warp":
        parser.error(f"--config {args.config} is not a warp model (--model={config.model})")
    k_shot, k_query = config.task.k_shot, config.task.k_query
    plan = runtime.task_threads_for(config)
    runtime.configure(intra_op_threads=plan.intra_op_threads,
                      inter_op_threads=plan.inter_op_threads, onednn=bool(args.onednn))
    import numpy as np

    from benchmarks import flops as flops_lib
    peak = flops_lib.measure_peak_in_subprocess(args.onednn)
    print(flops_lib.peak_line(peak), flush=True)

    from tfmeta import generation
    model = generation.GenerativeModel(config)
    learner = generation.build_learner(config, model)
    rng = np.random.default_rng(0)
    shape = (config.task.meta_batch_size, k_shot + k_query, 28, 28, 1)
    images = np.where(rng.uniform(size=shape) < 0.15, 1.0, -1.0).astype(np.float32)
    support = generation.to_batch(images[:, :k_shot], images[:, :k_shot])
    query = generation.to_batch(images[:, k_shot:], images[:, :k_shot])
    flops = flops_lib.task_flops(learner, support, query) * config.task.meta_batch_size
    compile_s, times = flops_lib.time_steps(   # float() waits for the result
        lambda step: float(learner.meta_step(support, query, step)["meta_grad_norm"]),
        args.repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"config=warp_{config.outer.algorithm}_{config.adapt_scope} preset={config.preset} "
          f"latent_dim={config.latent_dim} "
          f"meta_batch_size={config.task.meta_batch_size} inner_steps={config.inner.num_steps} "
          f"seconds_per_meta_iter={np.median(times):.4f} compile_seconds={compile_s:.2f} "
          f"peak_rss_mb={peak_mb:.0f} "
          f"{flops_lib.achieved(flops, np.median(times), peak['conv3x3'])} "
          f"parallel_tasks={plan.parallel_tasks} intra_op_threads={plan.intra_op_threads} "
          f"onednn={int(runtime.onednn_enabled())} repeats={args.repeats}", flush=True)


if __name__ == "__main__":
    main()
