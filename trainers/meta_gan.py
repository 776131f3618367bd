"""Meta-train a few-shot generator (warp, GAN or VAE).

  python -m trainers.meta_gan --flagfile=configs/omniglot_warp.cfg [--workdir=...]

Flags mirror tfmeta.config.GenerationConfig (see trainers/common.py); later flags
override the flagfile. Writes <workdir>/config.json, checkpoints/ (exact resume: run
the same command again) and TensorBoard events (tensorboard --logdir <workdir>).
"""

from absl import app, flags

from tfmeta.config import GenerationConfig
from trainers import common

common.define_flags(GenerationConfig())
FLAGS = flags.FLAGS


@common.main_guard
def main(argv):
    del argv
    config = common.build_config(GenerationConfig(), FLAGS)
    common.setup_training_runtime(config)
    from tfmeta import meta_gan  # imports TF: after the runtime is configured
    result = meta_gan.run(config)
    print(f"[done] checkpoint: {result['checkpoint']}")
    print(f"[done] tensorboard --logdir {config.train.workdir}")


if __name__ == "__main__":
    app.run(main)
