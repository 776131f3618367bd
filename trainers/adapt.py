"""Adapt a meta-trained generator to K images and write a PNG grid (no server needed).

  python -m trainers.adapt --checkpoint=runs/mygen --images='my_drawings/*.png' \
      --num_samples=16 --seed=3 --out=grid.png   # [--steps=N; default: the run's]

Images may be any format PIL reads; they are converted to the model's size and
channels, and dark-ink-on-light drawings are inverted (the models draw bright strokes).
The grid's first row is the support set, then the samples (the same layout as
`python -m export.client`, whose image loading this reuses).
"""

import glob

import numpy as np
from absl import app, flags

from trainers import common

flags.DEFINE_string("checkpoint", None, "trainers.meta_gan workdir or checkpoint prefix")
flags.DEFINE_string("images", None, "glob of 1-20 support images")
flags.DEFINE_integer("steps", -1, "adaptation steps on the images (-1: the run's "
                     "--eval_inner_steps, 0 for the warp generator configs)")
flags.DEFINE_integer("num_samples", 16, "samples to draw")
flags.DEFINE_integer("seed", 0, "seed of adaptation and sampling")
flags.DEFINE_string("invert", "auto", "auto, always or never (see export.client)")
flags.DEFINE_string("out", "grid.png", "output PNG")
flags.DEFINE_string("sampling", "", "sampling overrides, field=value,... (e.g. "
                    "warp_sampling=prior,prior_temperature=0.7,rerank=4; default: the run's)")
flags.mark_flags_as_required(["checkpoint", "images"])
FLAGS = flags.FLAGS


@common.main_guard
def main(argv):
    del argv
    from tfmeta.errors import ConfigError, DataError
    paths = sorted(glob.glob(FLAGS.images))
    if not 1 <= len(paths) <= 20:
        raise ConfigError(f"--images {FLAGS.images!r} matched {len(paths)} files; give 1-20")
    common.setup_runtime()
    import tensorflow as tf
    from PIL import Image

    from export.client import ClientError, load_support_images, make_grid
    from tfmeta import generation, summaries
    from tfmeta.data import scale_images
    config, model, learner = generation.restore_model(FLAGS.checkpoint, FLAGS.sampling)
    size, channels = config.data.image_size, config.data.channels
    try:
        support = load_support_images(paths, size, size, channels, invert=FLAGS.invert)
    except ClientError as e:
        raise DataError(f"--images: {e}") from None
    steps = config.inner.eval_num_steps if FLAGS.steps < 0 else FLAGS.steps
    module = generation.GenerativeModule(config, model, learner, scale_images(support, "gan"),
                                         steps=steps, seed=FLAGS.seed)
    samples = module.sample(tf.constant(FLAGS.num_samples), tf.constant(FLAGS.seed, tf.int64))
    grid = make_grid(summaries.to_uint8(samples.numpy()), support)
    Image.fromarray(np.squeeze(grid, -1) if grid.shape[-1] == 1 else grid).save(FLAGS.out)
    print(f"[adapt] {len(paths)} support images, {steps} steps → {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
