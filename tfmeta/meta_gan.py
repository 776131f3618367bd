"""Meta-training of few-shot generators: data → learner → `tfmeta.train.run`.

Evaluation during training (every `eval_every` steps) on *evaluation-split* characters,
never seen in meta-training:
  * `eval/query_<loss>`: query losses after adapting on K support drawings
    (`eval_num_steps` inner steps), mean over `eval_tasks` fixed tasks;
  * image grid `adaptation`: for `num_eval_classes` fixed characters one row each:
    support images | samples before adaptation | samples after adaptation.
"""

import json
import os

import numpy as np
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import distribute, generation, summaries
from tfmeta import train as train_lib
from tfmeta.data import GenerationTaskSampler, load_class_images, splits
from tfmeta.meta import fold_seed

__all__ = ["load_split", "make_evaluator", "fit", "fit_prior_once", "run"]


def load_split(data, split, log=print, min_images=1):
    """ClassImages of `split` for a DataConfig (rotated/mirrored class copies only for the
    training split); classes with fewer than `min_images` images are skipped (named in a
    warning)."""
    log(f"[data] loading {data.dataset}/{split} at {data.image_size}px")
    images = load_class_images(
        data.dataset, split=split, image_size=data.image_size, data_dir=data.data_dir,
        cache_dir=data.cache_dir, channels=data.channels,
        validation_classes=data.validation_classes, split_dir=data.split_dir,
        ink_polarity=data.ink_polarity, split_fraction=data.split_fraction,
        min_images=min_images)
    if split == data.train_split:
        images = images.with_class_copies(rotations=data.rotations, mirrors=data.mirrors)
    log(f"[data] {split}: {images.num_classes} classes, {len(images.labels)} images")
    return images


def make_evaluator(config, model, learner, eval_images):
    """Returns evaluate(step, writer) → dict for `train.run` (fixed tasks, fixed seeds)."""
    seed = config.train.seed
    k, q = config.task.k_shot, config.task.k_query
    tasks = GenerationTaskSampler(eval_images, k, q, value_range="gan",
                                  seed=seed + 7919).sample(config.train.eval_tasks)
    support, query = generation.split_generation_task(tasks)
    grid_tasks = GenerationTaskSampler(eval_images, k, 1, value_range="gan",
                                       seed=seed + 104729).sample(config.num_eval_classes)
    n = config.num_samples
    sample_seed = tf.constant([seed, 1], tf.int64)

    def evaluate(step, writer):
        metrics = learner.adapt_and_evaluate(support, query, 0,
                                             num_steps=config.inner.eval_num_steps)
        rows = []
        meta_params = model.read_params()
        for i, s in enumerate(grid_tasks.support_images):
            s = tf.constant(s)
            task_seed = fold_seed(sample_seed, i)
            before = model.sample(meta_params, n, task_seed, s)
            adapted = generation.adapted_params(learner, model, s,
                                                config.inner.eval_num_steps, task_seed)
            after = model.sample(adapted, n, task_seed, s)
            rows.append(np.concatenate([summaries.to_uint8(x) for x in (s, before, after)]))
        grid = summaries.image_grid(rows)
        summaries.write_image_grid(writer, "adaptation/support|before|after", grid, step)
        return {key: float(v) for key, v in metrics.items() if key.startswith("query_")}

    return evaluate


def fit(config, train_images, eval_images, strategy=None, log=print, sampler=None):
    """Meta-trains on given ClassImages; returns (model, learner, train.run's dict).

    strategy: a tf.distribute strategy (tfmeta.distribute.make_strategy) or None; the
    model and learner are built inside its scope and the meta-batch is split across its
    replicas.
    sampler: task sampler over `train_images` (default: a seeded GenerationTaskSampler).
    """
    if sampler is None:
        sampler = GenerationTaskSampler(train_images, config.task.k_shot,
                                        config.task.k_query, value_range="gan",
                                        seed=config.train.seed)
    with distribute.scope(strategy):
        model = generation.GenerativeModel(config, seed=config.train.seed)
        learner = generation.build_learner(config, model)
    log(f"[model] {config.model}/{config.preset}: "
        f"{sum(int(np.prod(v.shape)) for v in model.variables):,} meta-parameters, "
        f"algorithm={config.outer.algorithm}, replicas={distribute.num_replicas(strategy)}")
    learner = distribute.distribute_learner(learner, strategy)
    evaluate = make_evaluator(config, model, learner, eval_images)
    result = train_lib.run(learner, sampler, generation.split_generation_task, config.train,
                           config_dict=cfg.to_dict(config),
                           meta_batch_size=config.task.meta_batch_size, evaluate=evaluate,
                           strategy=strategy, log=log)
    return model, learner, result


def run(config, log=print):
    """Meta-trains a generator as configured; returns train.run's summary dict."""
    config.validate()
    # First: a multi-worker strategy must exist before any TF op runs.
    strategy = distribute.make_strategy(config.train.strategy)
    if config.data.split_dir:   # published class lists: no test character in training
        splits.run_lists(config.data.split_dir, {"train": config.data.train_split,
                                                 "test": config.data.eval_split},
                         config.data.data_dir, dataset=config.data.dataset)
    per_task = config.task.k_shot + config.task.k_query   # images of one class per task
    train_images = load_split(config.data, config.data.train_split, log, per_task)
    eval_images = load_split(config.data, config.data.eval_split, log, per_task)
    model, _, result = fit(config, train_images, eval_images, strategy, log)
    if config.model == "warp" and config.prior_components and train_lib.is_chief(strategy):
        fit_prior_once(config, model, train_images, result["checkpoint"], log)
    return result


def _checkpoint_label(prefix):
    """The name fitted_prior.json records for the weights it was fitted to: ckpt-N for a
    training checkpoint, averaged/ckpt-N for averaged weights (--average_checkpoints)."""
    parent = os.path.basename(os.path.dirname(prefix))
    name = os.path.basename(prefix)
    return name if parent == "checkpoints" else f"{parent}/{name}"


def fit_prior_once(config, model, train_images, checkpoint, log=print):
    """Fits and saves the warp generator's prior (`generation.fit_prior`) on its training
    classes, unless the run's workdir already holds one fitted to this checkpoint."""
    workdir = config.train.workdir
    path = os.path.join(workdir, generation.FITTED_PRIOR_FILE + ".json")
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f)["stats"].get("checkpoint") == _checkpoint_label(checkpoint):
                log(f"[prior] {path} already fitted to {_checkpoint_label(checkpoint)}")
                return
    log(f"[prior] fitting a {config.prior_components}-component prior to the codes of "
        f"real pairs ({train_images.num_classes} training classes, "
        f"{config.prior_fit_steps} steps)")
    prior, stats = generation.fit_prior(
        model, model.read_params(), train_images, components=config.prior_components,
        steps=config.prior_fit_steps, k_shot=config.task.k_shot, seed=config.train.seed,
        log=log)
    stats["checkpoint"] = _checkpoint_label(checkpoint)
    generation.save_fitted_prior(workdir, prior, stats)
    log(f"[prior] held-out NLL {stats['held_out_nll']:.2f} nats per code (learned "
        f"diagonal prior {stats['diagonal_prior_held_out_nll']:.2f}); saved {path}")
