"""The training loop: exact resume, divergence guard, summaries, config validation."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import train as train_lib
from tfmeta.errors import ConfigError, DivergenceError


class _ToySampler:
    """Seeded stream of regression tasks with JSON-able state (stands in for TaskSampler)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def sample(self, n):
        x = self.rng.normal(size=(n, 8, 3)).astype(np.float32)
        y = x @ np.array([1.0, -2.0, 0.5], np.float32)
        return x, y

    def get_state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


class _ToyLearner:
    """Linear regression with Adam; `poison_at` injects a NaN loss at that step."""

    def __init__(self, poison_at=-1):
        self.w = tf.Variable(tf.zeros([3]), name="w")
        self.opt = tf.keras.optimizers.Adam(0.05)
        self.poison_at = poison_at
        self.meta_step = tf.function(self._step)

    def _step(self, support, query, step):
        with tf.GradientTape() as tape:
            pred = tf.einsum("bnd,d->bn", support, self.w)
            loss = tf.reduce_mean(tf.square(pred - query))
        self.opt.apply_gradients(zip(tape.gradient(loss, [self.w]), [self.w]))
        loss = tf.where(step == self.poison_at, tf.constant(np.nan, tf.float32), loss)
        return {"loss": loss}

    def trackables(self):
        return {"meta_variables": [self.w], "optimizer": self.opt}


def _run(workdir, num_steps, poison_at=-1, average=1):
    learner = _ToyLearner(poison_at)
    sampler = _ToySampler(seed=3)
    train = cfg.TrainConfig(workdir=str(workdir), num_steps=num_steps, log_every=2,
                            eval_every=100, checkpoint_every=2, average_checkpoints=average)
    out = train_lib.run(learner, sampler, lambda t: t, train, config_dict={"a": 1},
                        meta_batch_size=4, log=lambda m: None)
    return learner, out


def test_resume_matches_uninterrupted_run(tmp_path):
    straight, _ = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 4)                      # "interrupted" after 4 steps
    resumed, _ = _run(tmp_path / "b", 6)         # new process state, resumes at 4
    np.testing.assert_array_equal(straight.w.numpy(), resumed.w.numpy())
    assert json.load(open(tmp_path / "b" / "config.json")) == {"a": 1}


def _stored_w(prefix):
    return tf.train.load_checkpoint(prefix).get_tensor(
        "meta_variables/0/.ATTRIBUTES/VARIABLE_VALUE")


def test_average_checkpoints_is_the_mean_of_the_last_ones_and_keeps_exact_resume(tmp_path):
    learner, out = _run(tmp_path / "a", 8, average=4)
    ckpt_dir = tmp_path / "a" / "checkpoints"
    kept = [str(ckpt_dir / f"ckpt-{n}") for n in (2, 4, 6, 8)]   # 4 kept, not the usual 3
    expected = np.mean([_stored_w(p) for p in kept], axis=0)
    assert not np.allclose(_stored_w(kept[0]), _stored_w(kept[-1]))   # a real average
    np.testing.assert_allclose(learner.w.numpy(), expected, rtol=1e-6)
    averaged = str(tmp_path / "a" / "averaged" / "ckpt-8")
    assert out["checkpoint"] == averaged == train_lib.final_checkpoint(str(tmp_path / "a"))
    np.testing.assert_allclose(_stored_w(averaged), expected, rtol=1e-6)
    # training on resumes from the raw ckpt-8, not the average: equal to a straight run
    _run(tmp_path / "a", 10, average=4)
    straight, _ = _run(tmp_path / "b", 10)
    np.testing.assert_array_equal(_stored_w(str(ckpt_dir / "ckpt-10")), straight.w.numpy())
    assert train_lib.final_checkpoint(str(tmp_path / "a")).endswith("averaged/ckpt-10")
    # a run without averaging: its last checkpoint is final
    assert train_lib.final_checkpoint(str(tmp_path / "b")).endswith("checkpoints/ckpt-10")
    # nothing to average with a single checkpoint: the weights stay as trained
    _, out0 = _run(tmp_path / "c", 0, average=3)
    assert out0["checkpoint"].endswith("checkpoints/ckpt-0")
    with pytest.raises(ConfigError, match="--average_checkpoints"):
        cfg.TrainConfig(average_checkpoints=0).validate()
    with pytest.raises(ConfigError, match="multi_worker"):
        cfg.TrainConfig(average_checkpoints=2, strategy="multi_worker").validate()


def test_divergence_guard_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(DivergenceError, match="step 4"):
        _run(tmp_path, 8, poison_at=4)
    ckpts = sorted(glob.glob(str(tmp_path / "checkpoints" / "ckpt-*.index")))
    assert [os.path.basename(c) for c in ckpts] == ["ckpt-2.index", "ckpt-4.index"]
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-4")


def test_zero_steps_writes_the_initial_checkpoint(tmp_path):
    learner, _ = _run(tmp_path, 0)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-0")
    np.testing.assert_array_equal(learner.w.numpy(), np.zeros(3))


def test_scalars_written_to_event_file(tmp_path):
    _run(tmp_path, 4)
    tags = set()
    for path in glob.glob(str(tmp_path / "train" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"loss", "steps_per_sec"} <= tags


def test_config_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--k_query"):
        cfg.FewShotConfig(task=cfg.TaskConfig(k_shot=5, k_query=16)).validate()
    with pytest.raises(ConfigError, match="--algorithm"):
        cfg.FewShotConfig(outer=cfg.OuterConfig(algorithm="magic")).validate()
    with pytest.raises(ConfigError, match="--n_way"):
        cfg.GenerationConfig(task=cfg.TaskConfig(n_way=5)).validate()
    config = cfg.GenerationConfig().validate()
    assert cfg.from_dict(cfg.GenerationConfig, cfg.to_dict(config)) == config
