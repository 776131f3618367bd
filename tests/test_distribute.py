"""Meta-training under tf.distribute (tfmeta.distribute).

In-process (default strategy, 1 device): the learners' meta_update/apply_update hooks
reproduce meta_step, and task_offset seeds a slice of the meta-batch like the whole.
Subprocesses (they need a fresh TF runtime, see tests/distribute_worker.py): MirroredStrategy
on 2 logical CPU devices equals the default strategy; MultiWorkerMirroredStrategy with 2
worker processes on 127.0.0.1 trains the tiny GAN config to identical weights, and only
the chief writes files.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta import distribute
from tfmeta.errors import ConfigError
from tfmeta.meta import MAML, SGD, Adam, MetaSGD, ModelAggregation, Objective, Reptile
from tfmeta.models.classifiers import classification_objective, conv4

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distribute_worker.py")
TIMEOUT_S = 240


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


# ---- in-process: the learner hooks the distributed step is built from -------------------

def _learner(kind, seed=0):
    keras.utils.set_random_seed(seed)
    model = conv4(3, (8, 8, 1), filters=4, pool="stride")
    obj = classification_objective(model)
    v = model.trainable_variables
    return model, {
        "maml": lambda: MAML(v, obj, obj, SGD(0.3), 1, meta_optimizer=keras.optimizers.Adam(0.01),
                             seed=1),
        "meta_sgd": lambda: MetaSGD(v, obj, obj, 0.3, 1,
                                    meta_optimizer=keras.optimizers.Adam(0.01), seed=1),
        "reptile": lambda: Reptile(v, obj, Adam(0.01), 2, meta_optimizer=keras.optimizers.SGD(1.0),
                                   seed=1),
        "aggregation": lambda: ModelAggregation(v, obj, SGD(0.3), 2, step_size=0.7,
                                                weighting="softmax", seed=1),
    }[kind]()


def _tasks(batch=4, seed=0):
    rng = np.random.default_rng(seed)

    def labels(per):
        return tf.constant(np.tile(np.arange(3, dtype="int32"), (batch, per)))
    return ((tf.constant(rng.normal(size=(batch, 3, 8, 8, 1)).astype("float32")), labels(1)),
            (tf.constant(rng.normal(size=(batch, 6, 8, 8, 1)).astype("float32")), labels(2)))


def _flat(model):
    return np.concatenate([v.numpy().ravel() for v in model.trainable_variables])


@pytest.mark.parametrize("kind", ["maml", "meta_sgd", "reptile", "aggregation"])
def test_meta_update_then_apply_update_equals_meta_step(kind):
    support, query = _tasks()
    model_a, a = _learner(kind)
    model_b, b = _learner(kind)
    model_b.set_weights(model_a.get_weights())
    metrics_a = a.meta_step(support, query, 3)
    update = tf.function(b.meta_update)(support, query, tf.constant(3, tf.int64))
    tf.function(b.apply_update)(update.values, tf.constant(3, tf.int64))
    np.testing.assert_allclose(_flat(model_b), _flat(model_a), atol=1e-6)
    assert not np.allclose(_flat(model_a), _flat(_learner(kind)[0]), atol=1e-4)  # it moved
    for key, value in metrics_a.items():
        np.testing.assert_allclose(float(update.metrics[key]), float(value), rtol=1e-5)
    assert len(update.values) == len(b.update_variables)
    expected_log_weight = np.log(4) if kind != "aggregation" else None
    if expected_log_weight is not None:
        np.testing.assert_allclose(float(update.log_weight), expected_log_weight, rtol=1e-12)


def _merge_by_hand(updates):
    """The merge rule of DistributedLearner, in numpy: sum_r softmax(log_weight)_r values_r."""
    logw = np.array([float(u.log_weight) for u in updates])
    share = np.exp(logw - np.logaddexp.reduce(logw))
    return [sum(s * np.asarray(u.values[i]) for s, u in zip(share, updates))
            for i in range(len(updates[0].values))]


def _seeded_learner(kind):
    """A linear model whose loss adds seeded noise, so results depend on task seeds."""
    w = tf.Variable([0.5, -1.0, 2.0], dtype=tf.float64)

    def loss(params, batch, seed):
        x = batch[0]
        noise = tf.random.stateless_normal(tf.shape(x)[:1], seed, dtype=tf.float64)
        return tf.reduce_mean(tf.square(tf.linalg.matvec(x, params[0]) - batch[1] + noise))

    obj = Objective(loss)
    learner = {
        "maml": lambda: MAML([w], obj, obj, SGD(0.1), 2,
                             meta_optimizer=keras.optimizers.SGD(1.0), seed=5),
        "aggregation": lambda: ModelAggregation([w], obj, SGD(0.1), 2, weighting="softmax",
                                                seed=5),
    }[kind]()
    return learner


@pytest.mark.parametrize("kind", ["maml", "aggregation"])
def test_slices_with_task_offset_merge_to_the_whole_batch(kind):
    """Two halves of the meta-batch, seeded by task_offset and merged by the softmax of
    their log-weights, give the whole batch's update (what each replica computes and
    all-reduces); without the offset the second half reuses the first half's seeds."""
    rng = np.random.default_rng(1)
    batch = (tf.constant(rng.normal(size=(4, 6, 3))), tf.constant(rng.normal(size=(4, 6))))
    learner = _seeded_learner(kind)
    step = tf.constant(7, tf.int64)
    half = lambda s: tf.nest.map_structure(lambda x: x[s:s + 2], batch)  # noqa: E731
    whole = learner.meta_update(batch, batch, step)
    halves = [learner.meta_update(half(s), half(s), step, task_offset=s) for s in (0, 2)]
    merged = _merge_by_hand(halves)
    np.testing.assert_allclose(merged[0], whole.values[0].numpy(), rtol=1e-12)
    wrong = _merge_by_hand([learner.meta_update(half(s), half(s), step) for s in (0, 2)])
    assert not np.allclose(wrong[0], whole.values[0].numpy(), rtol=1e-6)


def test_make_strategy_and_wrapping_rules(monkeypatch):
    with pytest.raises(ConfigError, match="strategy must be one of"):
        distribute.make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    default = distribute.make_strategy("default")
    _, learner = _learner("reptile")
    assert distribute.distribute_learner(learner, default) is learner
    assert distribute.distribute_learner(learner, None) is learner
    assert distribute.num_replicas(default) == 1
    # A one-device MirroredStrategy wraps, but refuses variables built outside its scope.
    mirrored = distribute.make_strategy("mirrored")
    with pytest.raises(ConfigError, match="strategy.scope"):
        distribute.DistributedLearner(learner, mirrored)
    with pytest.raises(ConfigError, match="cannot run under"):   # e.g. ProtoNet
        distribute.DistributedLearner(object(), mirrored)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid"):
        distribute.make_strategy("multi_worker")


def test_one_replica_mirrored_meta_step_equals_default():
    strategy = distribute.make_strategy("mirrored", devices=["/cpu:0"])
    support, query = _tasks(batch=3)
    model_a, plain = _learner("maml")
    with strategy.scope():
        model_b, learner = _learner("maml")
    model_b.set_weights(model_a.get_weights())
    wrapped = distribute.distribute_learner(learner, strategy)
    assert isinstance(wrapped, distribute.DistributedLearner)
    plain.meta_step(support, query, 2)
    metrics = wrapped.meta_step(support, query, 2)
    np.testing.assert_allclose(_flat(model_b), _flat(model_a), atol=1e-6)
    assert set(metrics) >= {"query_loss", "meta_grad_norm"}
    assert wrapped.learner.num_inner_steps == 1 and wrapped.inner_rule() is learner.inner_rule()


# ---- subprocesses -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirrored")
    out = folder / "results.npz"
    proc = subprocess.run([sys.executable, WORKER, "mirrored", str(out), str(folder)],
                          env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("kind", ["maml", "reptile", "aggregation"])
def test_mirrored_two_replicas_equal_default_strategy(mirrored_results, kind):
    r = mirrored_results
    assert int(r["num_replicas"]) == 2
    default, replicas = r[f"{kind}/default"], r[f"{kind}/mirrored"]
    assert replicas.shape[0] == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])   # mirrored copies agree
    np.testing.assert_allclose(replicas[0], default, atol=1e-5, rtol=0)
    assert np.abs(default - r[f"{kind}/initial"]).max() > 1e-3   # the step moved weights
    for key in [k for k in r if k.startswith(f"{kind}/metric/")]:
        np.testing.assert_allclose(r[key][1], r[key][0], rtol=1e-5, err_msg=key)
    if kind == "aggregation":   # softmax weights of 4 tasks: neither uniform nor one-hot
        assert 0.3 < r["aggregation/metric/max_task_weight"][0] < 0.9


def test_mirrored_meta_batch_must_split_evenly(mirrored_results):
    assert "multiple of the number of replicas" in str(mirrored_results["odd_batch_error"])


def test_mirrored_resume_continues_exactly(mirrored_results):
    r = mirrored_results
    np.testing.assert_allclose(r["resume/resumed"], r["resume/straight"], atol=1e-5, rtol=0)
    # A checkpoint written under the strategy restores without it (and vice versa).
    np.testing.assert_array_equal(r["resume/default_restore"], r["resume/resumed"])


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _checkpoint_variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    names = sorted((k for k in reader.get_variable_to_shape_map()
                    if k.startswith("meta_variables/") and k.endswith("VARIABLE_VALUE")),
                   key=lambda k: int(k.split("/")[1]))
    return [reader.get_tensor(k) for k in names], reader


def _load_weights(path):
    data = np.load(path)
    return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def test_multi_worker_two_processes_identical_weights_chief_writes(tmp_path):
    """2 workers x 1 CPU replica on 127.0.0.1 train configs/tiny_gan.cfg (meta-batch 2:
    one task per worker) for 4 steps; a default-strategy process on the same data is the
    reference (it runs alongside, to save wall time)."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    try:
        for index in range(3):
            tmp = tmp_path / f"tmp{index}"
            tmp.mkdir()
            log = open(tmp_path / f"worker{index}.log", "w")
            logs.append(log)
            if index < 2:
                mode, env = "multi_worker", _env(TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}),
                    TMPDIR=str(tmp))
            else:
                mode, env = "default_gan", _env(TMPDIR=str(tmp))
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, mode, str(tmp_path / f"w{index}.npz"),
                 str(tmp_path / f"worker{index}")],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:   # always clean up, whatever failed
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    output = [(tmp_path / f"worker{i}.log").read_text() for i in range(3)]
    assert codes == [0, 0, 0], "\n".join(o[-3000:] for o in output)
    assert "replicas=2" in output[0] and "replicas=2" in output[1]

    chief, other, reference = (_load_weights(tmp_path / f"w{i}.npz") for i in range(3))
    for a, b, c in zip(chief, other, reference):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-5, rtol=0)
    # Only the chief wrote: checkpoints, config, results, events; worker 1 left nothing,
    # not even its temporary checkpoint folder.
    chief_dir = tmp_path / "worker0"
    assert {"config.json", "results.json", "checkpoints", "train"} <= set(os.listdir(chief_dir))
    assert not (tmp_path / "worker1").exists() or not list((tmp_path / "worker1").rglob("*"))
    assert not list((tmp_path / "tmp1").iterdir())
    latest = tf.train.latest_checkpoint(str(chief_dir / "checkpoints"))
    assert latest.endswith("ckpt-4")
    saved, reader = _checkpoint_variables(latest)
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 4
    assert len(saved) == len(chief)
    for a, b in zip(saved, chief):
        np.testing.assert_array_equal(a, b)
    earlier, _ = _checkpoint_variables(latest[:-1] + "2")
    assert any(not np.allclose(a, b) for a, b in zip(earlier, saved))   # it trained
