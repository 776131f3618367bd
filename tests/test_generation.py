"""Meta-trained generators: every algorithm × family runs, resume is exact, the
divergence guard fires, image summaries are written, adaptation and export agree."""

import dataclasses
import glob

import numpy as np
import pytest
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import generation, meta_gan
from fakes import fake_classes
from tfmeta.data import GenerationTaskSampler
from tfmeta.errors import ConfigError, DivergenceError


def _config(tmp_path, model="gan", algorithm="reptile", context_dim=0, scope="all", steps=4):
    return cfg.GenerationConfig(
        model=model, preset={"gan": "tiny", "vae": "tiny_vae", "warp": "tiny_warp"}[model],
        context_dim=context_dim, adapt_scope=scope,
        task=cfg.TaskConfig(n_way=1, k_shot=3, k_query=4, meta_batch_size=2),
        inner=cfg.InnerConfig(num_steps=2, eval_num_steps=2, lr=1e-3, optimizer="adam"),
        outer=cfg.OuterConfig(algorithm=algorithm, meta_lr=1e-3, meta_step_size=0.5),
        train=cfg.TrainConfig(workdir=str(tmp_path), num_steps=steps, log_every=2,
                              eval_every=steps, checkpoint_every=2, eval_tasks=2),
        num_eval_classes=2, num_samples=3).validate()


def _train(config, images, sampler_wrapper=None):
    sampler = GenerationTaskSampler(images, config.task.k_shot, config.task.k_query,
                                    seed=config.train.seed)
    if sampler_wrapper:
        sampler = sampler_wrapper(sampler)
    return meta_gan.fit(config, images, images, log=lambda m: None, sampler=sampler)


@pytest.mark.parametrize("model,algorithm,context_dim,scope", [
    ("gan", "reptile", 0, "all"),          # FIGR: Reptile over WGAN-GP
    ("gan", "fomaml", 4, "all"),
    ("gan", "aggregation", 0, "all"),
    ("vae", "maml", 4, "context"),        # CAVIA-style, second order
    ("vae", "reptile", 0, "all"),
    ("vae", "meta_sgd", 0, "all"),
    ("gan", "meta_curvature", 0, "all"),  # learned preconditioner through WGAN-GP
    ("warp", "fomaml", 4, "context"),      # deformation generator, CAVIA context
    ("warp", "maml", 4, "context"),        # second order through the warp's resampling
    ("warp", "reptile", 0, "all"),
])
def test_every_algorithm_and_family_trains_and_summarises(tmp_path, model, algorithm,
                                                          context_dim, scope):
    config = _config(tmp_path, model, algorithm, context_dim, scope, steps=2)
    _, _, result = _train(config, fake_classes())
    assert all(np.isfinite(v) for v in result["train"].values())
    assert result["eval"], "evaluation metrics missing"
    tags = set()
    for path in glob.glob(str(tmp_path / "eval" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert "adaptation/support|before|after" in tags


def test_resume_continues_with_identical_weights(tmp_path):
    images = fake_classes()
    straight, _, _ = _train(_config(tmp_path / "a", steps=4), images)
    _train(_config(tmp_path / "b", steps=2), images)
    resumed, _, _ = _train(_config(tmp_path / "b", steps=4), images)
    for a, b in zip(straight.variables, resumed.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _PoisonAt:
    """Sampler wrapper that injects NaN images into the batch of one step."""

    def __init__(self, sampler, step):
        self.sampler, self.step, self.calls = sampler, step, 0

    def sample(self, n):
        task = self.sampler.sample(n)
        self.calls += 1
        if self.calls - 1 == self.step:
            task = task._replace(support_images=task.support_images * np.nan)
        return task

    def get_state(self):
        return self.sampler.get_state()

    def set_state(self, state):
        self.sampler.set_state(state)


def test_divergence_guard_names_the_step_and_keeps_checkpoint(tmp_path):
    config = _config(tmp_path, steps=6)
    with pytest.raises(DivergenceError, match="step 3"):
        _train(config, fake_classes(), lambda s: _PoisonAt(s, 3))
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")


def test_adapt_library_call_and_module_are_seeded(tmp_path):
    config = _config(tmp_path, model="vae", algorithm="fomaml", context_dim=4,
                     scope="context", steps=2)
    images = fake_classes()
    _train(config, images)
    support = images.images_of(0)[:3]
    adapted = generation.adapt(str(tmp_path), support, steps=3, seed=1)
    a = adapted.sample(tf.constant(5), tf.constant(7, tf.int64)).numpy()
    b = adapted.sample(tf.constant(5), tf.constant(7, tf.int64)).numpy()
    c = adapted.sample(tf.constant(5), tf.constant(8, tf.int64)).numpy()
    assert a.shape == (5, 28, 28, 1) and np.all(np.abs(a) <= 1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Adapting in-graph from the meta-parameters equals the library adaptation.
    scaled = support.astype(np.float32) / 127.5 - 1.0
    d = adapted.adapt_and_sample(scaled, tf.constant(5), tf.constant(7, tf.int64),
                                 tf.constant(3)).numpy()
    e = adapted.adapt_and_sample(scaled, tf.constant(5), tf.constant(7, tf.int64),
                                 tf.constant(3)).numpy()
    np.testing.assert_array_equal(d, e)


def test_context_scope_requires_gradient_based_learner(tmp_path):
    config = dataclasses.replace(_config(tmp_path, model="vae", context_dim=4),
                                 adapt_scope="context")
    model = generation.GenerativeModel(config)
    with pytest.raises(ConfigError, match="adapt_scope"):
        generation.build_learner(config, model)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint found"):
        generation.restore_model(str(tmp_path / "nothing"))


def test_learned_update_rule_is_checkpointed_used_and_exported(tmp_path):
    """Meta-Curvature factors of a meta-trained VAE move, are restored by `adapt`, and
    the exported `adapt_and_sample` signature uses them (identity factors differ)."""
    from export import export_saved_model as ex
    config = _config(tmp_path / "run", model="vae", algorithm="meta_curvature", steps=3)
    config = dataclasses.replace(config, inner=dataclasses.replace(
        config.inner, optimizer="sgd", lr=0.05))
    images = fake_classes()
    _, learner, _ = _train(config, images)
    trained = [v.numpy() for v in learner.update_rule_variables]
    assert any(not np.allclose(v, np.eye(v.shape[0]) if v.ndim == 2 else 1.0)
               for v in trained)
    module = generation.load_generative_module(str(tmp_path / "run"))
    restored = [np.asarray(v) for v in module.update_rule]
    for a, b in zip(trained, restored):
        np.testing.assert_array_equal(a, b)
    version = ex.export_generative_module(module, str(tmp_path / "models"), "mc",
                                          warmup=False)
    loaded = tf.saved_model.load(str(tmp_path / "models" / "mc" / str(version)))
    # The exported signatures read the trained factors (tracked = captured by a trace)...
    exported = [v.numpy() for v in loaded.tracked_variables]
    for factor in trained:
        assert any(e.shape == factor.shape and np.array_equal(e, factor) for e in exported)
    # ... and its adapt_and_sample signature equals the eager module's.
    support = images.images_of(1)[:3]
    args = dict(support_images=tf.constant(support), num_samples=tf.constant(4, tf.int32),
                seed=tf.constant(5, tf.int64), steps=tf.constant(3, tf.int32))
    from export.serving_module import build_serving_archive
    served = loaded.signatures["adapt_and_sample"](**args)["images"].numpy()
    eager = build_serving_archive(module).adapt_and_sample(**args)["images"].numpy()
    np.testing.assert_array_equal(served, eager)
    # The factors take part in adaptation: identity factors (plain SGD) sample otherwise.
    scaled = tf.constant(support.astype(np.float32) / 127.5 - 1.0)
    float_args = (scaled, tf.constant(4), tf.constant(5, tf.int64), tf.constant(3))
    learned = module.adapt_and_sample(*float_args).numpy()
    for v in module.update_rule:
        v.assign(np.eye(v.shape[0]) if len(v.shape) == 2 else np.ones(v.shape))
    plain = module.adapt_and_sample(*float_args).numpy()
    assert np.abs(plain - learned).max() > 1e-6


def test_warp_generator_exports_with_supports_and_serves_any_support_set(tmp_path):
    """The warp family draws from supports: exported with them (without: a clear error);
    the SavedModel's signatures equal the eager module for K = 1 and K = 5, seeded."""
    from export import export_saved_model as ex
    from export.serving_module import build_serving_archive
    config = dataclasses.replace(
        _config(tmp_path / "run", model="warp", algorithm="fomaml", context_dim=4,
                scope="context", steps=2),
        match_ink=True, warp_sampling="pairs", pair_scale_low=0.5)
    images = fake_classes()
    _train(config, images)
    with pytest.raises(ConfigError, match="--support_images"):
        generation.load_generative_module(str(tmp_path / "run"))
    support = images.images_of(0)[:5]
    module = generation.adapt(str(tmp_path / "run"), support, steps=2, seed=3)
    version = ex.export_generative_module(module, str(tmp_path / "models"), "warp")
    loaded = tf.saved_model.load(version)
    archive = build_serving_archive(module)
    for k in (1, 5):
        args = dict(support_images=tf.constant(images.images_of(1)[:k]),
                    num_samples=tf.constant(6, tf.int32), seed=tf.constant(9, tf.int64),
                    steps=tf.constant(2, tf.int32))
        served = loaded.signatures["adapt_and_sample"](**args)["images"].numpy()
        np.testing.assert_array_equal(served, archive.adapt_and_sample(**args)["images"])
        again = loaded.signatures["adapt_and_sample"](**args)["images"].numpy()
        np.testing.assert_array_equal(served, again)
        assert served.shape == (6, 28, 28, 1)
    sample = loaded.signatures["serving_default"](num_samples=tf.constant(4, tf.int32),
                                                  seed=tf.constant(1, tf.int64))["images"]
    # match_ink: every served sample carries exactly the ink values of a support drawing.
    values = {tuple(np.sort(s.ravel())) for s in support}
    assert all(tuple(np.sort(x.ravel())) in values for x in sample.numpy())


def test_averaged_weights_are_what_a_workdir_restores(tmp_path):
    """--average_checkpoints: restore_model (so adapt, export and the harness) reads the
    run's averaged weights from its workdir, the raw ones from its checkpoints/ folder."""
    config = _config(tmp_path / "run", model="warp", algorithm="fomaml", context_dim=4,
                     scope="context", steps=4)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                   average_checkpoints=2))
    _, learner, result = _train(config, fake_classes())
    run = tmp_path / "run"
    assert result["checkpoint"] == str(run / "averaged" / "ckpt-4")

    def stored(prefix):
        reader = tf.train.load_checkpoint(str(prefix))
        return [reader.get_tensor(f"meta_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
                for i in range(len(learner.trackables()["meta_variables"]))]

    mean = [(a + b) / 2 for a, b in zip(stored(run / "checkpoints" / "ckpt-2"),
                                        stored(run / "checkpoints" / "ckpt-4"))]
    for path, expected in ((run, mean), (run / "checkpoints",
                                         stored(run / "checkpoints" / "ckpt-4"))):
        _, _, restored = generation.restore_model(str(path))
        for v, e in zip(restored.trackables()["meta_variables"], expected):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(mean, stored(run / "checkpoints" /
                                                                 "ckpt-4")))


def test_fitted_prior_is_saved_restored_sampled_and_exported(tmp_path):
    """--prior_components: fitted once per checkpoint beside it, restored with the model,
    used by prior draws (seeded; fitted_prior=false draws the learned prior) and carried
    by the SavedModel (with the copy guard, the pen width and the truncated,
    antithetic draws in the graph); a run configured with one but missing it is a clear
    error."""
    import os
    from export import export_saved_model as ex
    from export.serving_module import build_serving_archive
    config = dataclasses.replace(
        _config(tmp_path / "run", model="warp", algorithm="fomaml", context_dim=4,
                scope="context", steps=2),
        conditional_prior=True, match_ink=True, ink_area_power=0.5, warp_sampling="prior",
        prior_truncation=2.0, antithetic=True, prior_components=2, prior_fit_steps=20,
        copy_guard=1.0)
    images = fake_classes()
    model, _, result = _train(config, images)
    logs = []
    meta_gan.fit_prior_once(config, model, images, result["checkpoint"], logs.append)
    assert any("held-out NLL" in line for line in logs)
    meta_gan.fit_prior_once(config, model, images, result["checkpoint"], logs.append)
    assert "already fitted to ckpt-2" in logs[-1]      # once per checkpoint

    run = str(tmp_path / "run")
    _, restored, _ = generation.restore_model(run)
    assert restored.fitted_prior is not None
    _, learned, _ = generation.restore_model(run, sampling="fitted_prior=false")
    for m in (restored, learned):   # a warp that z moves (two steps barely leave identity)
        m.warp.flow_out.kernel.assign(tf.random.stateless_normal(
            m.warp.flow_out.kernel.shape, [0, 1], stddev=0.5))
    support = tf.constant(images.images_of(0)[:5].astype(np.float32) / 127.5 - 1.0)
    seed = tf.constant([5, 0], tf.int64)
    fitted = restored.sample(restored.read_params(), 6, seed, support).numpy()
    np.testing.assert_array_equal(
        fitted, restored.sample(restored.read_params(), 6, seed, support).numpy())
    assert not np.array_equal(fitted, learned.sample(learned.read_params(), 6, seed,
                                                     support).numpy())

    module = generation.adapt(run, images.images_of(0)[:5], steps=0, seed=3)
    version = ex.export_generative_module(module, str(tmp_path / "models"), "warp")
    loaded = tf.saved_model.load(version)
    args = dict(support_images=tf.constant(images.images_of(1)[:5]),
                num_samples=tf.constant(6, tf.int32), seed=tf.constant(9, tf.int64),
                steps=tf.constant(0, tf.int32))
    served = loaded.signatures["adapt_and_sample"](**args)["images"].numpy()
    np.testing.assert_array_equal(
        served, build_serving_archive(module).adapt_and_sample(**args)["images"])
    prior_weights = [v.numpy() for v in restored.fitted_prior.weights]
    exported = [v.numpy() for v in loaded.tracked_variables]
    assert all(any(e.shape == w.shape and np.array_equal(e, w) for e in exported)
               for w in prior_weights)   # the SavedModel carries the fitted prior

    os.remove(os.path.join(run, "fitted_prior.weights.h5"))
    with pytest.raises(ConfigError, match="no fitted prior"):
        generation.restore_model(run)
    assert generation.restore_model(run, sampling="fitted_prior=false")[1].fitted_prior is None
