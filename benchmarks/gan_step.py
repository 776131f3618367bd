"""Seconds per Reptile WGAN-GP meta-step (FIGR setting) on the DCGAN-size generator.

Setting (issue 9's reference): one character (20 drawings, 28x28x1) per meta-step,
k = 10 inner steps, each a critic step then a generator step with the functional Adam
(lr 1e-4), generator `dcgan28` (z = 64, 565,985 parameters) and
critic (431,553), Reptile interpolation 0.1. Synthetic data of Omniglot's shape. Prints

    peak conv3x3_gflops_per_s=<x> matmul_gflops_per_s=<x>
    config=reptile_wgan_gp_k10 seconds_per_meta_iter=<median> compile_seconds=<x>
        peak_rss_mb=<x> gflop_per_meta_iter=<x> achieved_gflops_per_s=<x> ...

`--jit_compile` compiles the meta-step with XLA (measured; see benchmarks/README.md).

    python -m benchmarks.gan_step [--repeats 10] [--inner_steps 10] [--meta_batch_size 1]
"""

import argparse
import resource


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--inner_steps", type=int, default=10)
    parser.add_argument("--meta_batch_size", type=int, default=1)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--preset", default="dcgan28")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="fixed TF thread budget (0: the cores, split over parallel tasks)")
    parser.add_argument("--parallel_tasks", type=int, default=0,
                        help="tasks at once (0: auto, tfmeta.runtime.task_threads)")
    parser.add_argument("--onednn", type=int, choices=[0, 1], default=1,
                        help="TF's oneDNN CPU kernels on (1, TF's default) or off (0)")
    args = parser.parse_args(argv)

    from tfmeta import config as cfg
    from tfmeta import runtime
    config = cfg.GenerationConfig(
        model="gan", preset=args.preset, gan_loss="wgan_gp",
        task=cfg.TaskConfig(n_way=1, k_shot=args.images - 1, k_query=1,
                            meta_batch_size=args.meta_batch_size),
        inner=cfg.InnerConfig(num_steps=args.inner_steps, lr=1e-4, optimizer="adam"),
        outer=cfg.OuterConfig(algorithm="reptile", meta_step_size=0.1),
        train=cfg.TrainConfig(threads=args.threads,
                              parallel_tasks=args.parallel_tasks)).validate()
    plan = runtime.task_threads_for(config)
    runtime.configure(intra_op_threads=plan.intra_op_threads,
                      inter_op_threads=plan.inter_op_threads, onednn=bool(args.onednn))
    import numpy as np
    import tensorflow as tf

    from benchmarks import flops as flops_lib
    peak = flops_lib.measure_peak_in_subprocess(args.onednn)   # all cores
    print(flops_lib.peak_line(peak), flush=True)

    from tfmeta import generation
    model = generation.GenerativeModel(config)
    learner = generation.build_learner(config, model)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (args.meta_batch_size, args.images, 28, 28, 1))
    support = generation.to_batch(images.astype(np.float32), images.astype(np.float32))
    if args.jit_compile:
        learner.compiled_meta_step = tf.function(learner._meta_step_graph, jit_compile=True)
    flops = flops_lib.task_flops(learner, support, None) * args.meta_batch_size
    compile_s, times = flops_lib.time_steps(   # float() waits for the result
        lambda step: float(learner.meta_step(support, None, step)["meta_update_norm"]),
        args.repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"config=reptile_wgan_gp_k{args.inner_steps} preset={args.preset} "
          f"meta_batch_size={args.meta_batch_size} images={args.images} "
          f"seconds_per_meta_iter={np.median(times):.4f} compile_seconds={compile_s:.2f} "
          f"peak_rss_mb={peak_mb:.0f} {flops_lib.achieved(flops, np.median(times), peak['conv3x3'])} "
          f"parallel_tasks={plan.parallel_tasks} intra_op_threads={plan.intra_op_threads} "
          f"jit_compile={args.jit_compile} onednn={int(runtime.onednn_enabled())} "
          f"repeats={args.repeats}", flush=True)


if __name__ == "__main__":
    main()
