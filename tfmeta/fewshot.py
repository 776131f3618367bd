"""Few-shot classification: Conv-4 learners (MAML family, Reptile, aggregation, ProtoNets).

Meta-test protocol (stated next to every number we report): `eval_tasks` N-way K-shot
tasks from the test classes (by default the Omniglot *evaluation* alphabets; with
`--split_dir` the test list, e.g. the Vinyals split's 423 characters x 4 rotations;
never seen in meta-training), k_query query images per class (15 in the configs),
adaptation with `eval_num_steps` inner steps on the support set, accuracy on the query
set; mean and 95% confidence interval (t-distribution) over tasks, for N = n_way and
every way of `test_n_ways` (ProtoNets). Normalisation: MetaNorm batch statistics of the
current call (transductive: the query set is normalised with its own statistics, as in
the original MAML code); `--test_statistics=per_query` (or `both`) also scores each query
image in a batch with the support images only (no query sees another; `per_query_groups`).
ProtoNets: `--protonet_refine_steps=N` adds a test whose prototypes are refined with the
task's query images (soft k-means, `tfmeta.meta.protonets.refined_prototypes`).
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import distribute
from tfmeta import train as train_lib
from tfmeta.data import TaskSampler, load_class_images, splits
from tfmeta.errors import ConfigError
from tfmeta.eval.augmentation import confidence_interval
from tfmeta.meta import Objective, ProtoNet, learner_from_config
from tfmeta.meta.inner_loop import minibatch_objective, stateless_apply
from tfmeta.models.classifiers import classification_objective, conv4, conv4_encoder

__all__ = ["build_learner", "StaircaseAdam", "split_classification_task", "meta_test",
           "run", "zero_head", "head_indices", "learner_for_way", "prototype_head"]

_POOL = {"conv4": "max", "conv4_stride": "stride"}


def split_classification_task(task):
    """Task → ((support_images, support_labels), (query_images, query_labels))."""
    return ((task.support_images, task.support_labels),
            (task.query_images, task.query_labels))


class StaircaseAdam(keras.optimizers.Adam):
    """Adam at `learning_rate * decay_rate ** floor(iterations / decay_every)` (decay_every
    = 0: constant), i.e. a staircase decay over meta-steps (Snell et al. 2017: Adam 1e-3
    halved every 2,000 episodes).

    The rate stays in Adam's own learning-rate variable and the decay is applied on read,
    so the checkpoint holds the same variables with or without a decay: a run trained at a
    constant rate resumes with a decay added (and back). A Keras `LearningRateSchedule`
    would drop that variable and shift every slot of the checkpoint by one. It overrides
    Keras's private rate read (`BaseOptimizer._get_current_learning_rate`, which every
    update calls); tests/test_fewshot.py checks the per-step rates, so a Keras change
    that bypasses it fails there."""

    def __init__(self, learning_rate=1e-3, decay_every=0, decay_rate=0.5, **kwargs):
        super().__init__(learning_rate=float(learning_rate), **kwargs)
        self.decay_every, self.decay_rate = int(decay_every), float(decay_rate)

    def _get_current_learning_rate(self):
        rate = super()._get_current_learning_rate()
        if not self.decay_every:
            return rate
        count = keras.ops.floor(keras.ops.cast(self.iterations, "float32") / self.decay_every)
        return rate * keras.ops.power(self.decay_rate, count)

    def get_config(self):
        return {**super().get_config(), "decay_every": self.decay_every,
                "decay_rate": self.decay_rate}


def build_learner(config):
    """(model, learner) for a FewShotConfig; the model is built with the config's seed."""
    keras.utils.set_random_seed(config.train.seed)
    size, ch = config.data.image_size, config.data.channels
    shape, pool = (size, size, ch), _POOL[config.network]
    outer = config.outer
    meta_opt = StaircaseAdam(outer.meta_lr, config.meta_lr_decay_every,
                             config.meta_lr_decay_rate)
    if outer.algorithm == "protonet":
        encoder = conv4_encoder(shape, norm=config.norm, pool=pool)
        return encoder, ProtoNet(encoder, config.task.n_way, meta_opt)
    model = conv4(config.task.n_way, shape, norm=config.norm, pool=pool)
    objective = classification_objective(model)
    outer_objective = objective
    if config.zero_head:
        zero_head(model)
        head = head_indices(model)
        body = [i for i in range(len(model.trainable_variables)) if i not in head]
        outer_objective = Objective(objective.loss_fn, param_indices=body,
                                    name=objective.name)
    inner_objective = (minibatch_objective(objective, config.inner.batch_size)
                       if config.inner.batch_size else objective)
    learner = learner_from_config(config, model.trainable_variables, inner_objective,
                                  outer_objective, meta_opt, eval_objectives=objective)
    if config.prototype_head:
        learner.task_init = prototype_head(model, config.inner.lr / config.task.n_way)
    return model, learner


def zero_head(model):
    """Sets the classifier's logits layer (kernel, bias) to zero; returns its variables.

    The zeroing trick (FewShotConfig.zero_head): with the head outside the outer
    objective's parameters it stays zero, so every task's adaptation starts from it.
    """
    head = model.get_layer("logits").trainable_variables
    for variable in head:
        variable.assign(tf.zeros(variable.shape, variable.dtype))
    return head


def prototype_head(model, scale):
    """`task_init` (see tfmeta.meta.common.Learner) that starts each task's logits layer
    at the support prototypes' Euclidean classifier (Proto-MAML, Triantafillou et al.
    2020): kernel column c = scale * p_c, bias c = -scale * |p_c|^2 / 2, where p_c is
    the mean feature of class c's support images (the body's features under the task's
    parameters, with the support batch's statistics, as the inner loop sees them). The
    logits are then -scale * |phi - p_c|^2 / 2 up to a per-image constant: the ProtoNet
    classifier (Snell et al. 2017) on the network's features, before any inner step.

    With scale = lr / n_way (FewShotConfig.prototype_head) it is the zero head's first
    inner SGD step, scale * (p_c - mean_c p_c) (tested: tests/test_fewshot.py), plus the
    Euclidean bias; the shift by the prototypes' mean changes no softmax. The body's
    parameters enter the head, so meta-gradients flow through the prototypes.
    """
    features = keras.Model(model.input, model.get_layer("logits").input)
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    body = [position[id(v)] for v in features.trainable_variables]
    kernel_index, bias_index = head_indices(model)

    def init(params, support):
        images, labels = support
        phi = stateless_apply(features, [params[i] for i in body], images, training=True)
        n_way = params[kernel_index].shape[-1]
        onehot = tf.one_hot(tf.cast(labels, tf.int32), n_way, dtype=phi.dtype)
        prototypes = (tf.linalg.matmul(onehot, phi, transpose_a=True)
                      / tf.reduce_sum(onehot, axis=0)[:, None])
        params = list(params)
        params[kernel_index] = tf.cast(scale, phi.dtype) * tf.transpose(prototypes)
        params[bias_index] = (-0.5 * tf.cast(scale, phi.dtype)
                              * tf.reduce_sum(tf.square(prototypes), axis=-1))
        return params
    return init


def head_indices(model):
    """Indices of the logits layer's variables in `model.trainable_variables`."""
    head = model.get_layer("logits").trainable_variables
    return [i for i, v in enumerate(model.trainable_variables)
            if any(v is h for h in head)]


def learner_for_way(config, model, n_way):
    """(model, learner) for `n_way`-way tasks with `model`'s network body (values copied)
    and a zero head. The zeroing trick leaves nothing in a MAML/FOMAML learner that
    depends on the number of classes but the head's shape, so a learner meta-trained at
    one way is tested at another (`--test_n_ways`) as a ProtoNet is."""
    other, learner = build_learner(
        dataclasses.replace(config, task=dataclasses.replace(config.task, n_way=n_way)))
    for source, target in zip(_body(model), _body(other), strict=True):
        target.assign(source)
    return other, learner


def _body(model):
    head = set(head_indices(model))
    return [v for i, v in enumerate(model.trainable_variables) if i not in head]


def per_query_groups(support, query):
    """The query batch of a meta-test without transduction: every query image after all
    support images, one group each.

    support, query: (images [T, S, H, W, C], labels [T, S]) / ([T, Q, ...], [T, Q]).
    Returns (groups [T, Q, S + 1, H, W, C], labels [T, Q]) for
    `tfmeta.models.classifiers.classification_objective` (scores each group's last image).
    """
    support_images, query_images = np.asarray(support[0]), np.asarray(query[0])
    tasks, num_query = query_images.shape[:2]
    repeated = np.broadcast_to(support_images[:, None],
                               (tasks, num_query) + support_images.shape[1:])
    return np.concatenate([repeated, query_images[:, :, None]], axis=2), query[1]


def meta_test(config, learner, class_images, num_tasks, seed, batch=50, n_way=None,
              mode="transductive"):
    """Mean accuracy and 95% CI half-width over `num_tasks` `n_way`-way tasks of
    `class_images` (n_way None: config.task.n_way). mode (one of config.test_modes):
    "transductive"; "per_query": score each query image in a batch with the support
    images only (no transduction; see `per_query_groups`); "refined": ProtoNet
    prototypes refined with the query images (config.protonet_refine_steps). The tasks
    are the same in every mode (same sampler seed)."""
    t = config.task
    n_way = n_way or t.n_way
    per_query = mode == "per_query"
    if config.outer.algorithm == "protonet":   # its "steps" refine the prototypes
        num_steps = config.protonet_refine_steps if mode == "refined" else 0
    else:
        num_steps = config.inner.eval_num_steps
    sampler = TaskSampler(class_images, n_way, t.k_shot, t.k_query, seed=seed)
    accuracies = []
    while len(accuracies) < num_tasks:
        n = min(batch, num_tasks - len(accuracies))
        for i in range(n):   # per task, so the CI is over tasks
            task = sampler.sample(1)
            support, query = split_classification_task(task)
            if per_query:
                query = per_query_groups(support, query)
            m = learner.adapt_and_evaluate(support, query, i, num_steps=num_steps)
            accuracies.append(float(m["query_accuracy"]))
    mean, half = confidence_interval(accuracies)
    return {"accuracy": mean, "ci95": half or 0.0, "num_tasks": len(accuracies)}


def _load_splits(config, log):
    """{"train", "val", "test": ClassImages} of a config, checked before any training:
    with a split_dir, the training and validation lists share no character with the test
    list, and every way fits its split (errors name the list file)."""
    d, t = config.data, config.task
    names = {"train": d.train_split, "val": d.val_split, "test": d.eval_split}
    where = {role: "" for role in names}   # the list file, named in logs and errors
    if d.split_dir:
        paths = splits.run_lists(d.split_dir, names, d.data_dir, test_role="test",
                                 dataset=d.dataset)
        where = {role: f" ({path})" for role, path in paths.items()}
    out = {}
    # images of one class per task: classes with fewer are skipped (named in a warning)
    per_task = {"train": t.training_k_shot + t.training_k_query,
                "val": t.k_shot + t.k_query, "test": t.k_shot + t.k_query}
    for role, name in names.items():
        images = load_class_images(d.dataset, split=name, image_size=d.image_size,
                                   data_dir=d.data_dir, cache_dir=d.cache_dir,
                                   channels=d.channels, split_dir=d.split_dir,
                                   validation_classes=d.validation_classes,
                                   ink_polarity=d.ink_polarity,
                                   split_fraction=d.split_fraction,
                                   min_images=per_task[role])
        if role == "train":
            images = images.with_class_copies(rotations=d.rotations, mirrors=d.mirrors)
        log(f"[data] {role}: {name}, {images.num_classes} classes{where[role]}")
        out[role] = images
    ways = {"train": [("--train_n_way" if t.train_n_way else "--n_way", t.training_n_way)],
            "val": [("--n_way", t.n_way)],
            "test": [("--test_n_ways" if w != t.n_way else "--n_way", w)
                     for w in config.test_ways]}
    for role, checks in ways.items():
        for flag, n in checks:
            if n > out[role].num_classes:
                raise ConfigError(f"{flag}: {n}-way tasks need {n} classes, but the "
                                  f"{role} split {names[role]!r} has "
                                  f"{out[role].num_classes}{where[role]}; lower {flag}")
    return out


def run(config, log=print):
    """Meta-trains and meta-tests a few-shot classifier; returns a summary dict with
    `test` (the n_way meta-test) and `tests` ({"<N>way": ...} for every tested way)."""
    config.validate()
    # First: a multi-worker strategy must exist before any TF op runs.
    strategy = distribute.make_strategy(config.train.strategy)
    d, t = config.data, config.task
    images = _load_splits(config, log)
    sampler = TaskSampler(images["train"], t.training_n_way, t.training_k_shot,
                          t.training_k_query, seed=config.train.seed)
    with distribute.scope(strategy):   # variables and optimiser slots are mirrored
        model, learner = build_learner(config)
    log(f"[model] {config.network}: {model.count_params():,} parameters, "
        f"algorithm={config.outer.algorithm}, replicas={distribute.num_replicas(strategy)}"
        + (", zero head (not meta-trained)" if config.zero_head else "")
        + (", each task's head starts at its support prototypes" if config.prototype_head
           else ""))
    own = tf.train.latest_checkpoint(os.path.join(config.train.workdir, "checkpoints"))
    if config.init_from and not own:   # a resume continues this run's own checkpoint
        # a zero head is not read, so the body may come from a run at another n_way
        path = train_lib.init_weights(learner, config.init_from,
                                      skip=head_indices(model) if config.zero_head else ())
        log(f"[model] network weights from {path} (optimiser, step and learned rates "
            "start fresh" + ("; the stored head is not read" if config.zero_head else "") + ")")
    learner = distribute.distribute_learner(learner, strategy)

    def evaluate(step, writer):
        del writer
        return meta_test(config, learner, images["val"], min(200, config.train.eval_tasks),
                         seed=config.train.seed + 1)

    result = train_lib.run(learner, sampler, split_classification_task, config.train,
                           config_dict=cfg.to_dict(config), meta_batch_size=t.meta_batch_size,
                           evaluate=evaluate, strategy=strategy, log=log)
    tests = {}
    # a ProtoNet tests any way; a zero-head MAML/FOMAML learner gets a head per way
    learners = {n_way: learner if n_way == t.n_way or config.outer.algorithm == "protonet"
                else learner_for_way(config, model, n_way)[1] for n_way in config.test_ways}
    for mode in config.test_modes:
        suffix = "" if mode == "transductive" else f"_{mode}"
        for n_way in config.test_ways:
            test = meta_test(config, learners[n_way], images["test"], config.train.eval_tasks,
                             seed=config.train.seed + 2, n_way=n_way, mode=mode)
            how = (f"prototypes refined with the queries, {config.protonet_refine_steps} "
                   "soft k-means steps" if mode == "refined" else f"{mode} statistics")
            log(f"[test] {d.eval_split}: {n_way}-way {t.k_shot}-shot accuracy "
                f"{100 * test['accuracy']:.2f}% ± {100 * test['ci95']:.2f}% over "
                f"{test['num_tasks']} tasks ({how})")
            tests[f"{n_way}way{suffix}"] = test
    first = "" if config.test_modes[0] == "transductive" else f"_{config.test_modes[0]}"
    result["test"] = tests[f"{t.n_way}way{first}"]
    result["tests"] = tests
    if train_lib.is_chief(strategy):
        train_lib.write_json(config.train.workdir, "results.json", result)
    return result
