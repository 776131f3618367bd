"""tfmeta.fewshot: published split lists end to end, meta-tests at several ways, the
meta-learning-rate decay, and the errors a run raises before it trains."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfmeta import config as cfg
from tfmeta.errors import ConfigError, DataError
from trainers import common
from fakes import write_split_lists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def _rotated(characters, rotations=("000", "090")):
    return [f"{c}/rot{r}" for c in characters for r in rotations]


# Training: the 6 background characters x 2 rotations; validation: 2 of them (as
# Vinyals' val is part of trainval); test: the 2 evaluation characters x 4 rotations.
TRAIN = _rotated([f"Bg{a}/character{c:02d}" for a in (0, 1) for c in (1, 2, 3)])
VAL = _rotated(["Bg1/character02"])
TEST = _rotated(["Ev0/character01", "Ev0/character02"], ("000", "090", "180", "270"))


def _config(tmp_path, split_dir, data_dir, *extra):
    argv = ["prog", "--algorithm=protonet", "--n_way=2", "--train_n_way=3", "--k_shot=1",
            "--k_query=2", "--meta_batch_size=1", "--num_steps=2", "--log_every=1",
            "--eval_every=2", "--checkpoint_every=2", "--eval_tasks=3",
            f"--workdir={tmp_path / 'run'}", f"--data_dir={data_dir}",
            f"--cache_dir={tmp_path / 'cache'}", f"--split_dir={split_dir}",
            "--train_split=trainval", "--val_split=val", "--eval_split=test", *extra]
    return common.parse_config(cfg.FewShotConfig(), argv)


def test_split_lists_end_to_end_tested_at_every_way(pooled_omniglot_dir, tmp_path):
    from tfmeta import fewshot
    split_dir = write_split_lists(tmp_path / "lists", trainval=TRAIN, val=VAL, test=TEST)
    config = _config(tmp_path, split_dir, pooled_omniglot_dir, "--test_n_ways=5,3",
                     "--protonet_refine_steps=2")
    assert config.test_ways == (2, 3, 5)
    assert config.test_modes == ("transductive", "refined")
    lines = []
    result = fewshot.run(config, log=lines.append)
    listed = os.path.join(split_dir, "{}.txt")
    assert [ln for ln in lines if ln.startswith("[data]")] == [
        f"[data] train: trainval, 12 classes ({listed.format('trainval')})",
        f"[data] val: val, 2 classes ({listed.format('val')})",
        f"[data] test: test, 8 classes ({listed.format('test')})"]
    tests = [ln for ln in lines if ln.startswith("[test]")]
    assert [ln.split(":")[1].split()[0] for ln in tests] == ["2-way", "3-way", "5-way"] * 2
    assert all("refined with the queries, 2 soft k-means steps" in ln for ln in tests[3:])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sorted(saved["tests"]) == ["2way", "2way_refined", "3way", "3way_refined",
                                      "5way", "5way_refined"]
    assert saved["test"] == saved["tests"]["2way"] == result["test"]
    for test in saved["tests"].values():
        assert 0 <= test["accuracy"] <= 1 and test["ci95"] >= 0 and test["num_tasks"] == 3


def test_ways_beyond_a_split_are_refused_before_training(pooled_omniglot_dir, tmp_path):
    from tfmeta import fewshot
    split_dir = write_split_lists(tmp_path / "lists", trainval=TRAIN, val=VAL, test=TEST)
    with pytest.raises(ConfigError, match=r"--test_n_ways: 9-way tasks need 9 classes, "
                                          r"but the test split 'test' has 8 \(.*test.txt\)"):
        fewshot.run(_config(tmp_path, split_dir, pooled_omniglot_dir, "--test_n_ways=9"),
                    log=lambda m: None)
    with pytest.raises(ConfigError, match=r"--n_way: 3-way .* val split 'val' has 2 "
                                          r"\(.*val.txt\)"):
        fewshot.run(_config(tmp_path, split_dir, pooled_omniglot_dir, "--n_way=3"),
                    log=lambda m: None)
    with pytest.raises(ConfigError, match=r"--train_n_way: 13-way .*trainval.txt"):
        fewshot.run(_config(tmp_path, split_dir, pooled_omniglot_dir, "--train_n_way=13"),
                    log=lambda m: None)
    assert not (tmp_path / "run").exists()   # nothing trained, nothing written


def test_training_list_overlapping_the_test_list_is_refused(pooled_omniglot_dir, tmp_path):
    from tfmeta import fewshot
    split_dir = write_split_lists(tmp_path / "lists", trainval=TRAIN + ["Ev0/character02/rot270"],
                       val=VAL, test=TEST)
    with pytest.raises(DataError, match=r"trainval.txt:13: Ev0/character02/rot270 "
                                        r"overlaps the test list \(.*test.txt:5: "):
        fewshot.run(_config(tmp_path, split_dir, pooled_omniglot_dir), log=lambda m: None)


def test_trainer_prints_one_line_naming_file_and_line(pooled_omniglot_dir, tmp_path):
    split_dir = write_split_lists(tmp_path / "lists", trainval=TRAIN[:1] + ["Bg0/character02/rot45"],
                       val=VAL, test=TEST)
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.fewshot", "--algorithm=protonet",
         f"--workdir={tmp_path / 'run'}", f"--data_dir={pooled_omniglot_dir}",
         f"--cache_dir={tmp_path / 'cache'}", f"--split_dir={split_dir}",
         "--train_split=trainval", "--val_split=val", "--eval_split=test", "--threads=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "trainval.txt:2: 'Bg0/character02/rot45'" in errors[0]


@pytest.mark.parametrize("extra,match", [
    (["--algorithm=maml", "--train_n_way=0", "--test_n_ways=5,20"],
     "--test_n_ways=5,20 tests other ways than --n_way=2, which only --algorithm=protonet"),
    (["--test_n_ways=5,x"], "--test_n_ways must be comma-separated integers"),
    (["--test_n_ways=0"], "--test_n_ways must list positive ways"),
    (["--algorithm=reptile", "--train_n_way=0", "--meta_lr_decay_every=10"],
     "--meta_lr_decay_every decays --meta_lr, which --algorithm=reptile does not use"),
    (["--meta_lr_decay_rate=0"], r"--meta_lr_decay_rate must be in \(0, 1\]"),
    (["--rotations=true"], "--rotations with --split_dir"),
    (["--protonet_refine_steps=-1"], "--protonet_refine_steps must be >= 0"),
    (["--algorithm=maml", "--train_n_way=0", "--protonet_refine_steps=1"],
     "--protonet_refine_steps refines prototypes, which only --algorithm=protonet"),
    (["--zero_head"], "--zero_head keeps the logits layer out of the meta-update, which "
     "needs an outer objective"),
    (["--algorithm=reptile", "--train_n_way=0", "--zero_head"],
     "--algorithm=reptile has none"),
    (["--algorithm=maml", "--train_n_way=0", "--prototype_head"],
     "--prototype_head starts each task's head at its support prototypes .* add --zero_head"),
    (["--algorithm=maml", "--train_n_way=0", "--meta_step_anneal"],
     "--meta_step_anneal anneals --meta_step_size, which only reptile and aggregation use"),
    (["--train_k_shot=15", "--train_k_query=6"],
     "--train_k_shot \\+ --train_k_query = 15 \\+ 6 images per class, more than the 20"),
    (["--train_k_shot=-1"], "--train_k_shot must be >= 0"),
    (["--inner_batch=-1"], "--inner_batch must be >= 0"),
    (["--algorithm=meta_sgd", "--train_n_way=0", "--zero_head", "--test_n_ways=5"],
     "which only --algorithm=protonet, or maml/fomaml with --zero_head, support"),
])
def test_config_errors_name_the_flag(extra, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, "unused", "unused", *extra)


def _features(model, images):
    """The network's penultimate features of `images` (float64), batch statistics."""
    import keras
    return np.asarray(keras.Model(model.input, model.get_layer("logits").input)(
        images, training=True), np.float64)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "meta_sgd"])
def test_zero_head_starts_every_task_at_zero_and_meta_trains_the_body(algorithm, tmp_path):
    """The zeroing trick: the logits layer is zero at every task's start (the support
    loss before adaptation is log(n_way)), stays out of the meta-update (exactly zero
    after meta-steps, while the body moves), and one inner SGD step from it writes each
    class's mean support features into its column: W1 = lr/N sum_s phi(x_s)(y_s - 1/n)."""
    import tensorflow as tf
    from tfmeta import fewshot
    config = _config(tmp_path, "unused", "unused", f"--algorithm={algorithm}",
                     "--train_n_way=0", "--zero_head", "--inner_lr=0.4", "--inner_steps=1")
    model, learner = fewshot.build_learner(config)
    head = model.get_layer("logits").trainable_variables
    assert not any(v is h for v in learner.meta_variables for h in head)
    assert len(learner.meta_variables) > 0
    rng = np.random.default_rng(0)
    support = (rng.random((2, 2, 28, 28, 1), np.float32), np.array([[0, 1], [1, 0]], np.int32))
    query = (rng.random((2, 4, 28, 28, 1), np.float32),
             np.array([[0, 0, 1, 1], [1, 0, 1, 0]], np.int32))
    kernels = [v for v in model.trainable_variables if len(v.shape) == 4]
    kernels_before = [np.array(v) for v in kernels]
    for step in range(2):
        metrics = learner.meta_step(support, query, step)
        np.testing.assert_allclose(float(metrics["support_loss_first"]), np.log(2), rtol=1e-6)
    for variable in head:
        np.testing.assert_array_equal(np.array(variable), 0.0)
    assert len(kernels) == 4 and all(   # the body's convolutions are meta-trained
        not np.allclose(a, np.array(v)) for a, v in zip(kernels_before, kernels))
    # one inner step from the zero head: the support features, signed by class
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    task = (tf.constant(support[0][0]), tf.constant(support[1][0]))
    adapted = learner._adapt_task(params, task, tf.constant([0, 0], tf.int64), 1,
                                  first_order=True).params
    onehot = np.eye(2)[support[1][0]]
    expected = 0.4 / 2 * _features(model, support[0][0]).T @ (onehot - 0.5)
    index = [i for i, v in enumerate(model.trainable_variables) if v is head[0]][0]
    np.testing.assert_allclose(np.asarray(adapted[index]), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(adapted[index + 1]), 0.0, atol=1e-6)


def test_prototype_head_is_the_euclidean_prototype_classifier(tmp_path):
    """--prototype_head: each task's head starts at kernel s * p_c, bias -s |p_c|^2 / 2
    (s = inner_lr / n_way, p_c the class's mean support feature), so its softmax is that
    of -s |phi - p_c|^2 / 2 (the ProtoNet classifier); it differs from the zero head's
    first inner step only by that bias; with 0 inner steps a task is scored by the
    nearest prototype; a learner moved to another way gets a head of that width."""
    import tensorflow as tf
    from tfmeta import fewshot
    config = _config(tmp_path, "unused", "unused", "--algorithm=maml", "--train_n_way=0",
                     "--n_way=3", "--zero_head", "--prototype_head", "--inner_lr=0.6",
                     "--inner_steps=1")
    model, learner = fewshot.build_learner(config)
    rng = np.random.default_rng(2)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)     # 2 shots of 3 classes
    support = (rng.random((1, 6, 28, 28, 1), np.float32), labels[None])
    query = (rng.random((1, 9, 28, 28, 1), np.float32),
             np.array([[0, 1, 2, 2, 1, 0, 0, 1, 2]], np.int32))
    task = (tf.constant(support[0][0]), tf.constant(labels))
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    started = learner.task_init(params, task)
    kernel_index, bias_index = fewshot.head_indices(model)
    phi = _features(model, support[0][0])
    prototypes = np.stack([phi[labels == c].mean(0) for c in range(3)])
    s = 0.6 / 3
    np.testing.assert_allclose(started[kernel_index], s * prototypes.T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(started[bias_index], -s / 2 * (prototypes ** 2).sum(1),
                               rtol=1e-5)
    for i, (a, b) in enumerate(zip(params, started)):   # the body is untouched
        if i not in (kernel_index, bias_index):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    q = _features(model, query[0][0])
    distances = ((q[:, None, :] - prototypes[None]) ** 2).sum(-1)
    logits = q @ np.asarray(started[kernel_index], np.float64) + np.asarray(
        started[bias_index], np.float64)
    np.testing.assert_allclose(softmax(logits), softmax(-s / 2 * distances), atol=1e-5)
    # the zero head's first inner step, without the bias, is the same kernel shifted by
    # the prototypes' mean (a per-image constant of the logits)
    zero_config = dataclasses.replace(config, prototype_head=False)
    _, zero_learner = fewshot.build_learner(zero_config)
    first = zero_learner._adapt_task(params, task, tf.constant([0, 0], tf.int64), 1,
                                     first_order=True).params
    np.testing.assert_allclose(np.asarray(first[kernel_index]),
                               s * (prototypes - prototypes.mean(0)).T, rtol=1e-4, atol=1e-6)
    # no inner step: the nearest prototype, with the query batch's own statistics
    nearest = distances.argmin(1)
    metrics = learner.adapt_and_evaluate(support, query, 0, num_steps=0)
    np.testing.assert_allclose(float(metrics["query_accuracy"]),
                               np.mean(nearest == query[1][0]), atol=1e-6)
    other, other_learner = fewshot.learner_for_way(config, model, 4)
    four = (tf.constant(rng.random((4, 28, 28, 1), np.float32)), tf.constant([3, 2, 1, 0]))
    started = other_learner.task_init([tf.convert_to_tensor(v)
                                       for v in other.trainable_variables], four)
    phi = _features(other, four[0].numpy())
    np.testing.assert_allclose(started[fewshot.head_indices(other)[0]],
                               0.6 / 4 * phi[[3, 2, 1, 0]].T, rtol=1e-5, atol=1e-7)


def test_meta_gradient_flows_through_the_prototypes(tmp_path):
    """The body's meta-gradient with a prototype head and no inner step equals the
    gradient of a hand-written Euclidean prototype loss (query features against the mean
    support features, both from the variables); with a zero head it is zero (its logits
    do not depend on the body)."""
    import keras
    import tensorflow as tf
    from tfmeta import fewshot
    from tfmeta.meta.common import tf_variable
    config = _config(tmp_path, "unused", "unused", "--algorithm=maml", "--train_n_way=0",
                     "--zero_head", "--prototype_head", "--inner_lr=0.4")
    config = dataclasses.replace(config, inner=dataclasses.replace(config.inner, num_steps=0))
    model, learner = fewshot.build_learner(config)
    rng = np.random.default_rng(3)
    support = (rng.random((1, 2, 28, 28, 1), np.float32), np.array([[1, 0]], np.int32))
    query = (rng.random((1, 4, 28, 28, 1), np.float32), np.array([[0, 1, 1, 0]], np.int32))
    grads, _ = learner.meta_gradients(support, query, tf.constant(0, tf.int64))
    features = keras.Model(model.input, model.get_layer("logits").input)
    body = [tf_variable(v) for v in learner.meta_variables]
    with tf.GradientTape() as tape:
        phi = features(support[0][0], training=True)
        prototypes = tf.gather(phi, [1, 0])        # class 0 is the second support image
        q = features(query[0][0], training=True)
        distances = tf.reduce_sum(tf.square(q[:, None] - prototypes[None]), -1)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            query[1][0], -0.4 / 2 / 2 * distances))
    expected = tape.gradient(loss, body)
    assert len(grads) == len(expected) > 0
    largest = max(float(tf.reduce_max(tf.abs(g))) for g in expected)
    assert largest > 1e-3
    for got, want in zip(grads, expected):   # float32 noise: ~1e-6 of the largest
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3,
                                   atol=1e-4 * largest)
    _, zero_learner = fewshot.build_learner(dataclasses.replace(config, prototype_head=False))
    zero_grads, _ = zero_learner.meta_gradients(support, query, tf.constant(0, tf.int64))
    assert all(not np.asarray(g).any() for g in zero_grads)


def test_maml_tests_only_its_n_way(tmp_path):
    config = _config(tmp_path, "unused", "unused", "--algorithm=maml", "--train_n_way=0",
                     "--test_n_ways=2")
    assert config.test_ways == (2,)
    config = _config(tmp_path, "unused", "unused", "--algorithm=fomaml", "--train_n_way=0",
                     "--zero_head", "--test_n_ways=5")
    assert config.test_ways == (2, 5)


def test_a_zero_head_learner_moves_to_another_way(tmp_path):
    """learner_for_way: the body's values, a zero head of the new width; at the same way
    it adapts and scores a task exactly as the learner it came from; --init_from with
    --zero_head loads a body stored at another way (without it, the head's shape is a
    one-line error)."""
    from tfmeta import fewshot
    from tfmeta import train as train_lib
    config = _config(tmp_path, "unused", "unused", "--algorithm=maml", "--train_n_way=0",
                     "--zero_head", "--inner_lr=0.4", "--inner_steps=2")
    model, learner = fewshot.build_learner(config)
    rng = np.random.default_rng(1)

    def task(n):
        labels = np.tile(np.arange(n, dtype=np.int32), 2)[None]
        return ((rng.random((1, n, 28, 28, 1), np.float32), labels[:, :n]),
                (rng.random((1, 2 * n, 28, 28, 1), np.float32), labels))

    for step in range(2):   # the body moves off its initialisation
        learner.meta_step(*task(2), step)
    ckpt, _, _ = train_lib.make_checkpoint(learner)
    ckpt.save(str(tmp_path / "two" / "checkpoints" / "ckpt"))
    body = [np.array(v) for i, v in enumerate(model.trainable_variables)
            if i not in fewshot.head_indices(model)]

    _, same_learner = fewshot.learner_for_way(config, model, 2)
    support, query = task(2)
    a = learner.adapt_and_evaluate(support, query, 0, num_steps=2)
    b = same_learner.adapt_and_evaluate(support, query, 0, num_steps=2)
    for key in ("query_accuracy", "query_loss"):
        np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-5)

    def check_three_way(other, other_learner):
        head = fewshot.head_indices(other)
        weights = [np.array(v) for v in other.trainable_variables]
        assert weights[head[0]].shape == (64, 3) and not weights[head[0]].any()
        assert weights[head[1]].shape == (3,) and not weights[head[1]].any()
        for x, y in zip(body, [w for i, w in enumerate(weights) if i not in head],
                        strict=True):
            np.testing.assert_array_equal(x, y)
        metrics = other_learner.adapt_and_evaluate(*task(3), 0, num_steps=2)
        assert 0.0 <= float(metrics["query_accuracy"]) <= 1.0

    check_three_way(*fewshot.learner_for_way(config, model, 3))
    three = dataclasses.replace(config, task=dataclasses.replace(config.task, n_way=3),
                                train=dataclasses.replace(config.train, seed=5))
    fresh, fresh_learner = fewshot.build_learner(three)
    with pytest.raises(DataError, match="do not fit this network"):
        train_lib.init_weights(fresh_learner, str(tmp_path / "two"))
    train_lib.init_weights(fresh_learner, str(tmp_path / "two"),
                           skip=fewshot.head_indices(fresh))
    check_three_way(fresh, fresh_learner)


def test_meta_lr_halves_every_decay_steps(tmp_path):
    from tfmeta import fewshot
    assert float(fewshot.StaircaseAdam(1e-3).learning_rate) == pytest.approx(1e-3)
    # The learner's optimiser halves it every two meta-steps.
    config = _config(tmp_path, "unused", "unused", "--meta_lr_decay_every=2")
    _, learner = fewshot.build_learner(config)
    rng = np.random.default_rng(0)
    support = (rng.random((1, 2, 28, 28, 1), np.float32), np.array([[0, 1]], np.int32))
    query = (rng.random((1, 4, 28, 28, 1), np.float32), np.array([[0, 0, 1, 1]], np.int32))
    rates = []
    for step in range(5):
        rates.append(float(learner.optimizer.learning_rate))
        learner.meta_step(support, query, step)
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4], rtol=1e-6)


def test_constant_rate_checkpoint_resumes_with_a_decay(tmp_path):
    """A run trained at a constant --meta_lr resumes with --meta_lr_decay_every added:
    same checkpoint layout, slots restored in place, the decay counted from the restored
    step (a Keras LearningRateSchedule would shift every slot by one and fail)."""
    import keras
    import tensorflow as tf
    from tfmeta import fewshot
    var = keras.Variable(np.ones((3, 2), np.float32))
    before = keras.optimizers.Adam(1e-3)   # how constant-rate runs were checkpointed
    for _ in range(3):
        before.apply([tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))], [var])
    path = tf.train.Checkpoint(optimizer=before).save(str(tmp_path / "ckpt"))
    after = fewshot.StaircaseAdam(1e-3, decay_every=2, decay_rate=0.5)
    after.build([var])
    tf.train.Checkpoint(optimizer=after).restore(path).assert_existing_objects_matched()
    assert int(after.iterations) == 3
    assert float(after.learning_rate) == pytest.approx(5e-4)   # floor(3 / 2) = 1 decay
    for old, new in zip(before.variables, after.variables):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


@pytest.mark.parametrize("shot", [1, 5])
def test_vinyals_protonet_configs_state_the_published_recipe(shot):
    config = common.parse_config(cfg.FewShotConfig(), [
        "prog", f"--flagfile={ROOT}/configs/vinyals_protonet_{shot}shot.cfg"])
    d, t = config.data, config.task
    assert (d.split_dir, d.train_split, d.val_split, d.eval_split, d.rotations) == (
        "splits/vinyals", "trainval", "val", "test", False)
    assert (t.training_n_way, t.k_shot, t.training_k_query, t.k_query) == (60, shot, 5, 15)
    assert config.test_ways == (5, 20) and config.train.eval_tasks == 1000
    assert config.test_modes == ("transductive", "refined")   # the plain test first
    assert (config.outer.meta_lr, config.meta_lr_decay_every,
            config.meta_lr_decay_rate) == (1e-3, 2000, 0.5)


@pytest.mark.parametrize("way", [5, 20])
def test_vinyals_maml_configs_nest_the_omniglot_ones(way, monkeypatch):
    monkeypatch.chdir(ROOT)   # the nested --flagfile is relative to the repository
    parse = lambda name: common.parse_config(   # noqa: E731
        cfg.FewShotConfig(), ["prog", f"--flagfile=configs/{name}.cfg"])
    base, vinyals = parse(f"omniglot_maml_{way}w1s"), parse(f"vinyals_maml_{way}w1s")
    assert (vinyals.task, vinyals.inner, vinyals.outer) == (base.task, base.inner, base.outer)
    assert vinyals.data == cfg.DataConfig(split_dir="splits/vinyals", train_split="trainval",
                                          val_split="val", eval_split="test")
    assert base.data.rotations and base.data.split_dir is None


def test_per_query_statistics_score_each_query_with_the_support_only():
    """Without transduction a query's logits are those of model(support + that query)'s
    last row: independent of the other queries, and different from the transductive
    (all queries in one batch) logits where batch statistics matter."""
    import tensorflow as tf
    from tfmeta.fewshot import per_query_groups
    from tfmeta.models.classifiers import classification_objective, conv4

    tf.keras.utils.set_random_seed(0)
    model = conv4(3, (28, 28, 1), filters=8, norm="batch")
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    support = (rng.random((1, 3, 28, 28, 1)).astype(np.float32), np.array([[0, 1, 2]]))
    query = (rng.random((1, 4, 28, 28, 1)).astype(np.float32), np.array([[0, 1, 2, 0]]))
    groups, labels = per_query_groups(support, query)
    assert groups.shape == (1, 4, 4, 28, 28, 1)
    np.testing.assert_array_equal(groups[0, 2, :3], support[0][0])
    np.testing.assert_array_equal(groups[0, 2, 3], query[0][0, 2])
    objective = classification_objective(model)
    loss, aux = objective(params, (groups[0], labels[0]), tf.constant([0, 0]))
    expected_logits = np.stack([model(np.concatenate([support[0][0], query[0][0, j:j + 1]]),
                                      training=True)[-1] for j in range(4)])
    expected = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels[0], expected_logits))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # only the query itself matters: dropping the other queries leaves its loss unchanged
    alone, _ = objective(params, (groups[0, :1], labels[0, :1]), tf.constant([0, 0]))
    np.testing.assert_allclose(alone, tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels[0, :1], expected_logits[:1])[0], rtol=1e-5)
    transductive, _ = objective(params, (query[0][0], labels[0]), tf.constant([0, 0]))
    assert abs(float(transductive) - float(loss)) > 1e-3


def test_test_statistics_config():
    base = cfg.FewShotConfig()
    assert base.test_modes == ("transductive",)
    assert dataclasses.replace(base, test_statistics="both").validate().test_modes == (
        "transductive", "per_query")
    with pytest.raises(ConfigError, match="--test_statistics must be"):
        dataclasses.replace(base, test_statistics="query").validate()
    protonet = dataclasses.replace(base, outer=cfg.OuterConfig(algorithm="protonet"),
                                   test_statistics="per_query")
    with pytest.raises(ConfigError, match="gradient-based"):
        protonet.validate()


def test_run_reports_both_test_statistics(tmp_path, data_dir):
    from tfmeta import fewshot
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = common.parse_config(cfg.FewShotConfig(), [
        "prog", f"--flagfile={os.path.join(root, 'configs/tiny_fewshot.cfg')}",
        f"--workdir={tmp_path}", "--num_steps=1", "--log_every=1", "--eval_every=1",
        "--checkpoint_every=1", "--eval_tasks=2", "--test_statistics=both"])
    result = fewshot.run(config, log=lambda m: None)
    n = config.task.n_way
    assert sorted(result["tests"]) == [f"{n}way", f"{n}way_per_query"]
    assert result["test"] == result["tests"][f"{n}way"]
    for test in result["tests"].values():
        assert test["num_tasks"] == 2 and 0.0 <= test["accuracy"] <= 1.0


@pytest.mark.parametrize("algorithm", ["reptile", "aggregation"])
def test_meta_step_anneal_builds_the_linear_schedule(algorithm, tmp_path):
    import tensorflow as tf
    from tfmeta import fewshot
    config = _config(tmp_path, "unused", "unused", f"--algorithm={algorithm}",
                     "--train_n_way=0", "--meta_step_size=0.8", "--meta_step_anneal",
                     "--num_steps=10")
    learner = fewshot.build_learner(config)[1]
    schedule = getattr(learner, "meta_step_size", None) or learner.step_size
    assert float(schedule(tf.constant(5, tf.int64))) == pytest.approx(0.4)
    constant = fewshot.build_learner(dataclasses.replace(
        config, outer=dataclasses.replace(config.outer, meta_step_anneal=False)))[1]
    assert (getattr(constant, "meta_step_size", None) or constant.step_size) == 0.8
    # a meta-test-only run of an annealed config builds its learner
    assert fewshot.build_learner(dataclasses.replace(
        config, train=dataclasses.replace(config.train, num_steps=0)))[1] is not None


def test_training_tasks_take_train_k_shot_and_tests_k_shot(tmp_path, monkeypatch):
    from tfmeta import fewshot
    shots = []

    class Recording(fewshot.TaskSampler):
        def __init__(self, images, n_way, k_shot, k_query, **kwargs):
            shots.append((k_shot, k_query))
            super().__init__(images, n_way, k_shot, k_query, **kwargs)

    monkeypatch.setattr(fewshot, "TaskSampler", Recording)
    config = _tiny(tmp_path, tmp_path / "run", "--algorithm=reptile", "--num_steps=1",
                   "--train_k_shot=3", "--train_k_query=1", "--meta_step_anneal")
    result = fewshot.run(config, log=lambda m: None)
    # training (3 shots, 1 query), then validation and the test (1 shot, 5 queries)
    assert shots[0] == (3, 1) and set(shots[1:]) == {(1, 5)} and len(shots) >= 3
    assert 0.0 <= result["test"]["accuracy"] <= 1.0


def _tiny(tmp_path, workdir, *extra):
    return common.parse_config(cfg.FewShotConfig(), [
        "prog", f"--flagfile={os.path.join(ROOT, 'configs/tiny_fewshot.cfg')}",
        f"--workdir={workdir}", "--log_every=1", "--eval_every=1", "--checkpoint_every=1",
        "--eval_tasks=2", *extra])


def test_init_from_loads_only_the_network_weights(tmp_path):
    """Meta-SGD started from a MAML run: the MAML weights, fresh rates and optimiser;
    a learner whose weights do not fit, or a folder without a checkpoint, is refused."""
    from tfmeta import fewshot
    from tfmeta import train as train_lib
    maml_config = _tiny(tmp_path, tmp_path / "maml", "--algorithm=maml")
    model, maml = fewshot.build_learner(maml_config)
    rng = np.random.default_rng(0)
    n = maml_config.task.n_way
    support = (rng.random((1, n, 28, 28, 1), np.float32), np.arange(n, dtype=np.int32)[None])
    maml.meta_step(support, support, 0)   # weights and Adam slots move off the init
    ckpt, _, _ = train_lib.make_checkpoint(maml)
    ckpt.save(str(tmp_path / "maml" / "checkpoints" / "ckpt"))

    sgd_config = _tiny(tmp_path, tmp_path / "sgd", "--algorithm=meta_sgd", "--seed=7")
    sgd_model, meta_sgd = fewshot.build_learner(sgd_config)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(),
                                                        sgd_model.get_weights()))
    path = train_lib.init_weights(meta_sgd, str(tmp_path / "maml"))
    assert path.endswith("ckpt-1")
    for a, b in zip(model.get_weights(), sgd_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for rate in meta_sgd.learning_rates:   # learned rates and optimiser start fresh
        np.testing.assert_array_equal(np.asarray(rate), np.float32(sgd_config.inner.lr))
    assert int(meta_sgd.meta_optimizer.iterations) == 0

    _, protonet = fewshot.build_learner(_tiny(tmp_path, tmp_path / "pn",
                                              "--algorithm=protonet"))
    with pytest.raises(DataError, match="do not fit this network and learner"):
        train_lib.init_weights(protonet, str(tmp_path / "maml"))
    with pytest.raises(DataError, match="no checkpoint in"):
        train_lib.init_weights(meta_sgd, str(tmp_path / "sgd"))
    # Resuming into a learner whose state does not match (the ProtoNet in the MAML
    # run's folder) is a one-line error that names the way to reuse the weights.
    # It names what does not match from both checkpoints' variable lists (the same
    # message every time; TF's own lists ten arbitrary objects).
    pn_ckpt, _, _ = train_lib.make_checkpoint(protonet)
    messages = []
    for _ in range(2):
        with pytest.raises(DataError, match=r"cannot resume from .*ckpt-1.*--init_from=.*maml"
                           ) as info:
            train_lib.restore_latest(pn_ckpt, str(tmp_path / "maml" / "checkpoints"),
                                     protonet.trackables())
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]
    assert "(unmatched: " in messages[0], messages[0]


def test_init_from_is_used_once_then_the_run_resumes(tmp_path, data_dir):
    from tfmeta import fewshot
    fewshot.run(_tiny(tmp_path, tmp_path / "maml", "--algorithm=maml", "--num_steps=1"),
                log=lambda m: None)
    lines = []
    args = ("--algorithm=meta_sgd", f"--init_from={tmp_path / 'maml'}")
    fewshot.run(_tiny(tmp_path, tmp_path / "sgd", *args, "--num_steps=1"), log=lines.append)
    assert any(ln.startswith("[model] network weights from") for ln in lines)
    lines.clear()
    fewshot.run(_tiny(tmp_path, tmp_path / "sgd", *args, "--num_steps=2"), log=lines.append)
    assert not any(ln.startswith("[model] network weights from") for ln in lines)
    assert any(ln.startswith("[train] resumed from") for ln in lines)
    # with a zero head: the 5-way run's body starts a 3-way run, tested at both ways
    lines.clear()
    result = fewshot.run(_tiny(tmp_path, tmp_path / "three", "--zero_head", "--n_way=3",
                               "--test_n_ways=5", f"--init_from={tmp_path / 'maml'}",
                               "--num_steps=1"), log=lines.append)
    assert any("the stored head is not read" in ln for ln in lines)
    assert sorted(result["tests"]) == ["3way", "5way"]
    assert [ln.split(":")[1].split()[0] for ln in lines if ln.startswith("[test]")] == [
        "3-way", "5-way"]
    with pytest.raises(ConfigError, match="--init_from .* is not a directory"):
        _tiny(tmp_path, tmp_path / "x", f"--init_from={tmp_path / 'missing'}").validate()
