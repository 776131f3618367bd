"""Subprocess half of tests/test_onednn.py: meta-updates with TF's oneDNN kernels on or off
(the choice is fixed when TF starts, so each setting needs its own process).

  python tests/onednn_worker.py {on,off} OUT.npz
      float32, fixed weights and data: the second- and first-order MAML meta-gradients of
      the stride-2 Conv-4 (4 tasks, 5-way 1-shot, 28x28) and the Reptile WGAN-GP update
      of the dcgan28 pair (one character, 3 inner critic+generator SGD steps; the graph
      in which grappler's oneDNN remapper logs a failed fusion). Writes them to OUT.npz.
      SGD, not Adam, inside: Adam's first step is lr * g/|g|, which turns rounding-level
      differences of near-zero gradient entries into differences of 2 lr (measured 3e-3
      relative on the update; 3e-6 with SGD).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfmeta import runtime  # noqa: E402  (does not import TF)


def main(mode, out):
    runtime.configure(onednn=mode == "on")
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmeta import config as cfg
    from tfmeta import generation
    from tfmeta.meta import MAML, SGD
    from tfmeta.models.classifiers import classification_objective, conv4

    assert runtime.onednn_enabled() == (mode == "on")
    rng = np.random.default_rng(0)
    results = {}

    keras.utils.set_random_seed(0)
    model = conv4(5, (28, 28, 1), filters=32, pool="stride")

    def episodes(per_class):
        images = rng.random((4, 5 * per_class, 28, 28, 1), dtype=np.float32)
        return tf.constant(images), tf.constant(np.tile(np.arange(5, dtype=np.int32),
                                                        (4, per_class)))
    support, query = episodes(1), episodes(5)
    objective = classification_objective(model)
    for first_order in (False, True):
        learner = MAML(model.trainable_variables, objective, objective, SGD(0.4), 2,
                       first_order=first_order, meta_optimizer=keras.optimizers.SGD(0.1))
        grads, _ = tf.function(learner.meta_gradients)(support, query,
                                                        tf.constant(0, tf.int64))
        for i, g in enumerate(grads):
            results[f"maml{1 if first_order else 2}_{i}"] = g.numpy()

    keras.utils.set_random_seed(1)
    config = cfg.GenerationConfig(
        model="gan", preset="dcgan28", gan_loss="wgan_gp",
        task=cfg.TaskConfig(n_way=1, k_shot=19, k_query=1, meta_batch_size=1),
        inner=cfg.InnerConfig(num_steps=3, lr=1e-2, optimizer="sgd"),
        outer=cfg.OuterConfig(algorithm="reptile", meta_step_size=0.1)).validate()
    gan = generation.GenerativeModel(config)
    learner = generation.build_learner(config, gan)
    images = rng.uniform(-1, 1, (1, 20, 28, 28, 1)).astype(np.float32)
    batch = generation.to_batch(images, images)
    update = tf.function(learner.meta_update)(batch, None, tf.constant(0, tf.int64))
    for i, d in enumerate(update.values):
        results[f"reptile_gan_{i}"] = d.numpy()
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
