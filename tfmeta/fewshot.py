"""Few-shot classification: Conv-4 learners (MAML family, Reptile, aggregation, ProtoNets).

Meta-test protocol (stated next to every number we report): `eval_tasks` N-way K-shot
tasks from the Omniglot *evaluation* alphabets (never seen in meta-training), 15 query
images per class (k_query), adaptation with `eval_num_steps` inner steps on the support
set, accuracy on the query set; mean and 95% confidence interval (t-distribution) over
tasks. Normalisation: MetaNorm batch statistics of the current call (transductive: the
query set is normalised with its own statistics, as in the original MAML code).
"""

import keras

from tfmeta import config as cfg
from tfmeta import distribute, runtime
from tfmeta import train as train_lib
from tfmeta.data import TaskSampler, load_class_images
from tfmeta.eval.augmentation import confidence_interval
from tfmeta.meta import ProtoNet, make_learner
from tfmeta.models.classifiers import classification_objective, conv4, conv4_encoder

__all__ = ["build_learner", "split_classification_task", "meta_test", "run"]

_POOL = {"conv4": "max", "conv4_stride": "stride"}


def split_classification_task(task):
    """Task → ((support_images, support_labels), (query_images, query_labels))."""
    return ((task.support_images, task.support_labels),
            (task.query_images, task.query_labels))


def build_learner(config):
    """(model, learner) for a FewShotConfig; the model is built with the config's seed."""
    keras.utils.set_random_seed(config.train.seed)
    size, ch = config.data.image_size, config.data.channels
    shape, pool = (size, size, ch), _POOL[config.network]
    inner, outer = config.inner, config.outer
    meta_opt = keras.optimizers.Adam(outer.meta_lr)
    if outer.algorithm == "protonet":
        encoder = conv4_encoder(shape, norm=config.norm, pool=pool)
        return encoder, ProtoNet(encoder, config.task.n_way, meta_opt)
    model = conv4(config.task.n_way, shape, norm=config.norm, pool=pool)
    objective = classification_objective(model)
    return model, make_learner(
        outer.algorithm, model.trainable_variables, objective, objective,
        inner_optimizer=inner.optimizer, inner_lr=inner.lr, num_inner_steps=inner.num_steps,
        first_order=inner.first_order, meta_optimizer=meta_opt,
        meta_step_size=outer.meta_step_size,
        aggregation_weighting=outer.aggregation_weighting, seed=config.train.seed,
        parallel_tasks=runtime.task_threads_for(config).parallel_tasks)


def meta_test(config, learner, class_images, num_tasks, seed, batch=50):
    """Mean accuracy and 95% CI half-width over `num_tasks` tasks of `class_images`."""
    t = config.task
    sampler = TaskSampler(class_images, t.n_way, t.k_shot, t.k_query, seed=seed)
    accuracies = []
    while len(accuracies) < num_tasks:
        n = min(batch, num_tasks - len(accuracies))
        for i in range(n):   # per task, so the CI is over tasks
            task = sampler.sample(1)
            support, query = split_classification_task(task)
            if isinstance(learner, ProtoNet):
                m = learner.evaluate(support, query)
            else:
                m = learner.adapt_and_evaluate(support, query, i,
                                               num_steps=config.inner.eval_num_steps)
            accuracies.append(float(m["query_accuracy"]))
    mean, half = confidence_interval(accuracies)
    return {"accuracy": mean, "ci95": half or 0.0, "num_tasks": len(accuracies)}


def run(config, log=print):
    """Meta-trains and meta-tests a few-shot classifier; returns a summary dict."""
    config.validate()
    # First: a multi-worker strategy must exist before any TF op runs.
    strategy = distribute.make_strategy(config.train.strategy)
    d = config.data
    def load(split):
        images = load_class_images(d.dataset, split=split, image_size=d.image_size,
                                   data_dir=d.data_dir, cache_dir=d.cache_dir,
                                   channels=d.channels, validation_classes=d.validation_classes)
        log(f"[data] {split}: {images.num_classes} classes")
        return images.with_rotations() if (d.rotations and split == d.train_split) else images
    train_images, val_images = load(d.train_split), load("validation")
    t = config.task
    sampler = TaskSampler(train_images, t.training_n_way, t.k_shot, t.training_k_query,
                          seed=config.train.seed)
    with distribute.scope(strategy):   # variables and optimiser slots are mirrored
        model, learner = build_learner(config)
    log(f"[model] {config.network}: {model.count_params():,} parameters, "
        f"algorithm={config.outer.algorithm}, replicas={distribute.num_replicas(strategy)}")
    learner = distribute.distribute_learner(learner, strategy)

    def evaluate(step, writer):
        del writer
        return meta_test(config, learner, val_images, min(200, config.train.eval_tasks),
                         seed=config.train.seed + 1)

    result = train_lib.run(learner, sampler, split_classification_task, config.train,
                           config_dict=cfg.to_dict(config), meta_batch_size=t.meta_batch_size,
                           evaluate=evaluate, strategy=strategy, log=log)
    eval_images = load(d.eval_split)
    test = meta_test(config, learner, eval_images, config.train.eval_tasks,
                     seed=config.train.seed + 2)
    log(f"[test] {d.eval_split}: {t.n_way}-way {t.k_shot}-shot accuracy "
        f"{100 * test['accuracy']:.2f}% ± {100 * test['ci95']:.2f}% over {test['num_tasks']} tasks")
    result["test"] = test
    if train_lib.is_chief(strategy):
        train_lib.write_json(config.train.workdir, "results.json", result)
    return result
