"""Generator-backed generate_fns (tfmeta.eval.generators) and the evaluation CLI
(trainers.evaluate): seeded uint8 samples equal to the serving path, the scratch and
transfer baselines start where they claim to, paired gains, and one end-to-end CLI run
on fake Omniglot archives with a tiny meta_gan checkpoint made in-process."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import generation
from tfmeta import train as train_lib
from tfmeta.data import ClassImages, GenerationTaskSampler
from tfmeta.errors import ConfigError, DataError
from tfmeta.eval import generators
from tfmeta.eval.features import images_to_uint8
from tfmeta.meta import fold_seed


def _classes(num_classes=4, per_class=20, seed=0):
    """ClassImages: per class a random ink pattern, per image a few flipped pixels."""
    rng = np.random.default_rng(seed)
    protos = rng.random((num_classes, 1, 28, 28, 1)) > 0.85
    noise = rng.random((num_classes, per_class, 28, 28, 1)) > 0.97
    images = (np.logical_xor(protos, noise) * 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return ClassImages(images, np.repeat(np.arange(num_classes), per_class).astype(np.int32),
                       [f"fake/char{i:02d}" for i in range(num_classes)])


def _gan_config(workdir):
    return cfg.GenerationConfig(
        model="gan", preset="tiny", data=cfg.DataConfig(validation_classes=2),
        task=cfg.TaskConfig(n_way=1, k_shot=3, k_query=4, meta_batch_size=2),
        inner=cfg.InnerConfig(num_steps=2, eval_num_steps=2, lr=1e-3, optimizer="adam"),
        outer=cfg.OuterConfig(algorithm="reptile", meta_step_size=0.5),
        train=cfg.TrainConfig(workdir=str(workdir), num_steps=2, log_every=2, eval_every=100,
                              checkpoint_every=2, eval_tasks=2)).validate()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A trainers.meta_gan workdir: Reptile over the tiny WGAN-GP, 2 meta-steps."""
    workdir = tmp_path_factory.mktemp("meta_gan")
    config = _gan_config(workdir)
    sampler = GenerationTaskSampler(_classes(), 3, 4, seed=0)
    model = generation.GenerativeModel(config, seed=0)
    learner = generation.build_learner(config, model)
    train_lib.run(learner, sampler, generation.split_generation_task, config.train,
                  cfg.to_dict(config), config.task.meta_batch_size, None, log=lambda m: None)
    return str(workdir)


def test_meta_generator_seeded_equals_serving_and_traces_once(checkpoint):
    fn = generators.meta_generator_fn(checkpoint, steps=3)
    support = _classes().images_of(0)[:3]
    a, b, c = fn(support, 5, 7), fn(support, 5, 7), fn(support, 5, 8)
    assert a.dtype == np.uint8 and a.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert fn(support, 0, 7).shape == (0, 28, 28, 1)
    # Other K and num: same compiled graph.
    assert fn(_classes().images_of(1)[:5], 4, 7).shape == (4, 28, 28, 1)
    assert fn.tracing_count() == 1
    # The harness samples are the exported module's adapt_and_sample samples.
    module = generation.load_generative_module(checkpoint)
    served = module.adapt_and_sample(support.astype(np.float32) / 127.5 - 1.0,
                                     tf.constant(5), tf.constant(7, tf.int64), tf.constant(3))
    assert np.abs(images_to_uint8(served.numpy()).astype(int) - a).max() <= 1
    with pytest.raises(DataError, match="uint8"):
        fn(support.astype(np.float32), 2, 0)


def test_scratch_gan_starts_at_its_init_and_trains_on_support():
    fn = generators.scratch_gan_fn("tiny", steps=5, learning_rate=1e-2, init_seed=3)
    support = _classes().images_of(2)[:4]
    before = [np.asarray(v).copy() for v in fn.model.variables]
    init = fn(support, 4, 11, steps=0)
    expected = fn.model.sample(fn.model.read_params(), 4,
                               fold_seed(tf.constant([11, 0], tf.int64), 1),
                               tf.constant(support.astype(np.float32) / 127.5 - 1.0))
    np.testing.assert_array_equal(init, images_to_uint8(expected.numpy()))
    trained = fn(support, 4, 11)
    assert trained.shape == (4, 28, 28, 1) and not np.array_equal(init, trained)
    np.testing.assert_array_equal(trained, fn(support, 4, 11))
    for old, new in zip(before, fn.model.variables):   # the inner loop never assigns
        np.testing.assert_array_equal(old, np.asarray(new))
    with pytest.raises(ConfigError, match="preset"):
        generators.scratch_gan_fn("no_such_preset", 1)


def test_pretrain_trains_conventionally_restores_and_is_required(tmp_path, checkpoint):
    base = generation.restore_model(checkpoint)[0]
    images = _classes(num_classes=3)
    workdir = str(tmp_path / "pretrained")
    config, model, _ = generators.pretrain_generator(base, images, 3, batch_size=8,
                                                     workdir=workdir)
    fresh = generation.GenerativeModel(config, seed=0)
    moved = [not np.allclose(np.asarray(a), np.asarray(b))
             for a, b in zip(model.variables, fresh.variables)]
    # Generator and critic both trained (the WGAN critic's output bias has zero gradient).
    assert moved[model.generator_indices[0]] and moved[model.critic_indices[0]]
    fn = generators.pretrained_finetune_fn(workdir, steps=2)
    for a, b in zip(model.variables, fn.model.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert fn(images.images_of(0)[:3], 2, 0).shape == (2, 28, 28, 1) and fn.steps == 2
    with pytest.raises(ConfigError, match="pretrain"):
        generators.pretrained_finetune_fn(checkpoint)   # meta-learned: not the baseline
    loads = []
    generators.ensure_pretrained(workdir, base, loads.append, 3, batch_size=8)
    assert loads == []   # reused, not retrained
    with pytest.raises(ConfigError, match="pretrained with"):
        generators.ensure_pretrained(workdir, base, loads.append, 4, batch_size=8)


def test_augmentation_gains_are_paired_differences():
    results = {"protocol": {"n_real": [5]}, "methods": {
        "no_augmentation": {"5": {"accuracy_per_seed": [0.50, 0.60, 0.70]}},
        "gen": {"5": {"accuracy_per_seed": [0.55, 0.62, 0.78]}}}}
    gains = generators.augmentation_gains(results)
    gain = gains["gen"]["5"]
    np.testing.assert_allclose(gain["per_seed"], [0.05, 0.02, 0.08], atol=1e-12)
    assert gain["mean"] == pytest.approx(0.05)
    # t(0.975, 2) = 4.302653; sd of (0.05, 0.02, 0.08) = 0.03.
    assert gain["ci95_halfwidth"] == pytest.approx(4.302653 * 0.03 / np.sqrt(3), rel=1e-5)
    assert "| gen | +5.0 ± 7.5 |" in generators.gains_markdown(gains)
    with pytest.raises(ConfigError, match="no_augmentation"):
        generators.augmentation_gains({"methods": {"gen": {}}})


def test_real_drawing_equivalents_read_the_baseline_curve():
    def entry(mean):
        return {"mean": mean, "accuracy_per_seed": [mean]}
    results = {"methods": {
        "no_augmentation": {"5": entry(0.556), "10": entry(0.724), "15": entry(0.789)},
        "gen": {"5": entry(0.690), "10": entry(0.80), "15": entry(0.80)},
        "worse": {"5": entry(0.50), "10": entry(0.75), "15": entry(0.79)}}}
    worth = generators.real_drawing_equivalents(results)
    # 0.690 lies 0.134 / 0.168 of the way from 5 to 10 real drawings.
    assert worth["gen"]["5"] == pytest.approx(5 * 0.134 / 0.168)
    assert worth["worse"]["10"] == pytest.approx(5 * 0.026 / 0.065)
    # below the curve at n, or beyond its last point: no reading, no extrapolation
    assert worth["worse"]["5"] is None and worth["gen"]["10"] is None
    assert worth["gen"]["15"] is None and worth["worse"]["15"] is None
    table = generators.gains_markdown(generators.augmentation_gains(results),
                                      equivalents=worth)
    assert "+13.4 (≈ 4.0 real)" in table and "(—)" in table
    flat = {"methods": {"no_augmentation": {"5": entry(0.6), "10": entry(0.6)},
                        "gen": {"5": entry(0.6)}}}
    assert generators.real_drawing_equivalents(flat)["gen"]["5"] is None   # no rise
    table = generators.gains_markdown(generators.augmentation_gains(flat),
                                      equivalents=generators.real_drawing_equivalents(flat))
    assert "| gen | +0.0 |" in table and "≈" not in table and "(—)" not in table
    with pytest.raises(ConfigError, match="no_augmentation"):
        generators.real_drawing_equivalents({"methods": {"gen": {}}})


def _distinct_alphabets(tiny_omniglot_dir, folder):
    """Copy of the tiny archives whose evaluation alphabets are renamed: both fake zips
    name their alphabets Alpha0.., but real Omniglot's splits share no character name
    and the protocol's leak check compares names."""
    import shutil
    import zipfile

    os.makedirs(folder)
    shutil.copy(os.path.join(tiny_omniglot_dir, "images_background.zip"), folder)
    with zipfile.ZipFile(os.path.join(tiny_omniglot_dir, "images_evaluation.zip")) as src, \
            zipfile.ZipFile(os.path.join(folder, "images_evaluation.zip"), "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename.replace("/Alpha", "/EvalAlpha"), src.read(item))
    return str(folder)


def test_cli_end_to_end_on_tiny_data(tiny_omniglot_dir, checkpoint, tmp_path):
    from absl import flags
    from trainers import evaluate

    data_dir = _distinct_alphabets(tiny_omniglot_dir, tmp_path / "data")

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "eval"
    values = flags.FlagValues()
    evaluate.define_flags(values)
    values(["prog", f"--flagfile={os.path.join(root, 'configs/eval_tiny.cfg')}",
            f"--data_dir={data_dir}", f"--cache_dir={tmp_path / 'cache'}",
            f"--checkpoint={checkpoint}", "--scratch_gan", "--pretrained_finetune",
            f"--out={out}"])
    evaluate.run(values)
    with open(out / "results.json") as f:
        results = json.load(f)
    methods = ["no_augmentation", "traditional_augmentation",
               "traditional_augmentation_ink", "reptile_gan_tiny",
               "reptile_gan_tiny+jitter", "scratch_gan", "pretrained_finetune"]
    assert sorted(results["augmentation"]["methods"]) == sorted(methods)
    assert results["augmentation"]["protocol"]["n_real"] == [5, 10]
    assert set(results["gains"]) == set(methods[1:])
    assert results["checkpoints"] == {"reptile_gan_tiny": checkpoint}
    # Sample metrics for each --metrics_k_shot (3 and 1), with the real references.
    by_k = results["samples_by_k_shot"]
    assert sorted(by_k) == ["1", "3"] and by_k["3"] == results["samples"]
    assert by_k["1"]["protocol"]["k_shot"] == 1 and by_k["1"]["real"]["diversity"] is None
    for k in by_k:
        row = by_k[k]["methods"]["reptile_gan_tiny"]
        assert row["diversity_ratio"] > 0 and 0.0 <= row["copy_rate"] <= 1.0
        assert 0.0 <= by_k[k]["real_heldout"]["copy_rate"] <= 1.0
    for name in methods[3:]:
        assert results["adapt_steps"][name] == (None if name.endswith("+jitter") else 2)
        by_n = results["augmentation"]["methods"][name]
        assert by_n["5"]["generated_per_character"] == 2.0
        assert 0.0 <= by_n["10"]["mean"] <= 1.0
        assert np.isfinite(results["samples"]["methods"][name]["frechet"])
    table = (out / "results.md").read_text()
    assert "| reptile_gan_tiny |" in table and "gain n_real=5" in table
    assert "| 1 | real (held-out) |" in table and "| 3 | reptile_gan_tiny+jitter |" in table
    from PIL import Image
    assert Image.open(out / "samples.png").size[1] > 0
    tags = set()
    for name in os.listdir(out / "tensorboard"):
        for event in tf.compat.v1.train.summary_iterator(str(out / "tensorboard" / name)):
            tags.update(v.tag for v in event.summary.value)
    assert "gain/reptile_gan_tiny/n_real=5" in tags
    assert os.path.exists(out / "pretrained" / generators.PRETRAIN_FILE)

    values = flags.FlagValues()
    evaluate.define_flags(values)
    values(["prog", f"--checkpoint={checkpoint}", "--method_names=a,b", f"--out={out}"])
    with pytest.raises(ConfigError, match="method names"):
        evaluate.run(values)


def test_validation_split_holds_out_what_the_generators_did_not_train_on(tiny_omniglot_dir,
                                                                         tmp_path):
    """--split=validation evaluates the background characters the checkpoints' training
    split held out, refuses checkpoints trained on another split, and refuses names other
    than evaluation/validation."""
    import types
    from tfmeta.eval import protocol

    def method(**data):
        data_config = cfg.DataConfig(**data)
        return types.SimpleNamespace(model=types.SimpleNamespace(
            config=types.SimpleNamespace(data=data_config)))

    config = cfg.EvalConfig(out=str(tmp_path), split="validation", data_dir=tiny_omniglot_dir,
                            cache_dir=str(tmp_path / "cache"))
    images, seen, judge = protocol._unseen_characters(
        config, {"no_augmentation": None, "gen": method(validation_classes=2)})
    assert images.num_classes == 2 and len(seen) == 4
    assert not set(images.class_names) & set(seen)
    # Their judge is trained on the training split's characters only.
    assert judge == {"split": "train", "validation_classes": 2, "num_classes": 4}
    evaluation, background, judge = protocol._unseen_characters(
        dataclasses.replace(config, split="evaluation"), {})
    assert judge == {"split": "background", "num_classes": 964}
    assert set(images.class_names) | set(seen) == set(background)
    assert evaluation.num_classes == 2
    # Checkpoints trained on whole alphabets: the held-out alphabets' characters, judged
    # by an extractor of the other alphabets (tiny archive: 2 alphabets x 3 characters).
    images, seen, judge = protocol._unseen_characters(
        config, {"gen": method(validation_classes=2, train_split="alphabet_train")})
    assert images.num_classes == 3 and len(seen) == 3
    assert {n.split("/")[0] for n in images.class_names}.isdisjoint(
        n.split("/")[0] for n in seen)
    assert judge == {"split": "alphabet_train", "validation_classes": 2, "num_classes": 3}
    for bad in (method(validation_classes=2, train_split="background"),
                method(validation_classes=2, train_split="alphabet_train"),
                method(validation_classes=3)):
        with pytest.raises(ConfigError, match="split=validation"):
            protocol._unseen_characters(config, {"a": method(validation_classes=2), "b": bad})
    with pytest.raises(ConfigError, match="--split must be"):
        dataclasses.replace(config, split="test").validate()


# ---- strict restore: a checkpoint that does not match its config.json --------------------

def _edited_workdir(checkpoint, folder, **changes):
    """Copy of the checkpoint's workdir whose config.json has `changes` (section.key)."""
    import shutil
    shutil.copytree(checkpoint, folder)
    with open(folder / "config.json") as f:
        config = json.load(f)
    for key, value in changes.items():
        section, name = key.split("__")
        config[section][name] = value
    with open(folder / "config.json", "w") as f:
        json.dump(config, f)
    return str(folder)


@pytest.mark.parametrize("changes,unmatched", [
    ({"outer__algorithm": "meta_sgd"}, "inner_lr_"),   # variables the run never had
    ({"data__channels": 3}, "to_image"),                   # same names, other shapes
])
def test_restore_is_strict(checkpoint, tmp_path, changes, unmatched):
    workdir = _edited_workdir(checkpoint, tmp_path / "edited", **changes)
    with pytest.raises(ConfigError, match="does not match the model") as info:
        generation.restore_model(workdir)
    assert workdir in str(info.value) and unmatched in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cli", ["trainers.adapt", "trainers.evaluate",
                                 "export.export_saved_model"])
def test_clis_refuse_a_mismatched_checkpoint_in_one_line(cli, checkpoint, tmp_path,
                                                         tiny_omniglot_dir):
    import subprocess
    import sys
    from PIL import Image
    workdir = _edited_workdir(checkpoint, tmp_path / "edited", outer__algorithm="meta_sgd")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    page = np.full((28, 28), 255, np.uint8)
    page[8:20, 10:14] = 0
    Image.fromarray(page).save(tmp_path / "a.png")
    args = {
        "trainers.adapt": [f"--images={tmp_path / 'a.png'}", f"--out={tmp_path / 'g.png'}"],
        "trainers.evaluate": [
            f"--flagfile={os.path.join(root, 'configs/eval_tiny.cfg')}",
            f"--data_dir={_distinct_alphabets(tiny_omniglot_dir, tmp_path / 'data')}",
            f"--cache_dir={tmp_path / 'cache'}", f"--out={tmp_path / 'eval'}"],
        "export.export_saved_model": ["--model_name=m", f"--base_path={tmp_path / 'm'}"],
    }[cli]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", cli, f"--checkpoint={workdir}", *args],
                          env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode != 0
    assert "does not match the model" in proc.stderr and workdir in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_one_seed_gives_the_same_images_in_serving_evaluation_and_the_cli(checkpoint,
                                                                          tmp_path):
    """Seed s: the harness (generators), the exported SavedModel's adapt_and_sample and
    serving_default of a module adapted with s (the path of trainers.adapt and of the
    demo export) draw identical images."""
    from export import export_saved_model as ex
    from export.serving_module import build_serving_archive
    support = _classes().images_of(2)[:4]
    harness = generators.meta_generator_fn(checkpoint, steps=2)(support, 6, 11)
    adapted = generation.adapt(checkpoint, support, steps=2, seed=11)    # trainers.adapt
    cli = images_to_uint8(adapted.sample(tf.constant(6), tf.constant(11, tf.int64)).numpy())
    np.testing.assert_array_equal(cli, harness)
    loaded = tf.saved_model.load(ex.export_generative_module(adapted, str(tmp_path), "m"))
    served = loaded.signatures["adapt_and_sample"](
        support_images=tf.constant(support), num_samples=tf.constant(6),
        seed=tf.constant(11, tf.int64), steps=tf.constant(2))["images"].numpy()
    default = loaded.signatures["serving_default"](
        num_samples=tf.constant(6), seed=tf.constant(11, tf.int64))["images"].numpy()
    np.testing.assert_array_equal(default, served)
    assert np.abs(served.astype(int) - harness).max() <= 1   # graph vs eager float32
    archive = build_serving_archive(adapted)
    np.testing.assert_array_equal(
        archive.adapt_and_sample(support_images=tf.constant(support),
                                 num_samples=tf.constant(6), seed=tf.constant(11, tf.int64),
                                 steps=tf.constant(2))["images"].numpy(), served)


def test_sampling_overrides_change_how_a_checkpoint_samples_not_its_weights(checkpoint):
    """--sampling: validated sampling fields only; the restored weights are the same."""
    base_config, base_model, _ = generation.restore_model(checkpoint)
    assert generation.parse_sampling("") == {}
    assert generation.parse_sampling("match_ink=false, temperature=0.5") == {
        "match_ink": False, "temperature": 0.5}
    for bad, match in [("kl_weight=2", "not <field>=<value>"), ("rerank", "not <field>"),
                       ("rerank=two", "not a int")]:
        with pytest.raises(ConfigError, match=match):
            generation.parse_sampling(bad)
    with pytest.raises(ConfigError, match="--rerank needs --model=warp"):
        generation.restore_model(checkpoint, {"rerank": 2})   # the checkpoint is a GAN
    config, model, _ = generation.restore_model(checkpoint, {"temperature": 1.0})
    assert config == base_config
    for a, b in zip(model.variables, base_model.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # One entry per checkpoint ("|"): two samplers of one checkpoint in one evaluation.
    from tfmeta.eval import generators
    methods = generators.checkpoint_methods(
        [checkpoint, checkpoint], ["a", "b"], sampling="temperature=1|")
    assert list(methods) == ["a", "b"]
    with pytest.raises(ConfigError, match="--rerank needs --model=warp"):   # the 2nd entry
        generators.checkpoint_methods([checkpoint] * 2, sampling="temperature=1|rerank=2")
    with pytest.raises(ConfigError, match="3 '[|]'-separated sampling entries"):
        generators.checkpoint_methods([checkpoint] * 2, sampling="|temperature=2|")
    with pytest.raises(ConfigError, match="3 '[|]'-separated entries for 2 checkpoints"):
        cfg.EvalConfig(out="x", checkpoint=(checkpoint,) * 2, sampling="||").validate()


def test_walkthrough_bad_inputs_are_one_line_errors(checkpoint, tmp_path):
    """trainers.meta_gan --workdir=<a file> and trainers.adapt --images=<not an image>:
    one clear error line and exit status 2, no traceback (issue 18's walk-through)."""
    import subprocess
    import sys
    from trainers import common
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("a file, not a run folder")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        common.parse_config(cfg.GenerationConfig(), ["prog", f"--workdir={not_a_dir}"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.adapt", f"--checkpoint={checkpoint}",
         f"--images={not_a_dir}", f"--out={tmp_path / 'grid.png'}"],
        env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 2, proc.stderr
    assert "error: --images: cannot read support image" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("changes,match", [
    ({"held_real": -1}, "--held_real must be >= 0"),
    ({"held_real": 5}, r"--n_real up to 15 plus --held_real=5 leave no test drawing"),
])
def test_eval_config_refuses_held_real_without_test_drawings(changes, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        cfg.EvalConfig(out=str(tmp_path), **changes).validate()
    assert cfg.EvalConfig(out=str(tmp_path), n_real=(5,), held_real=5).validate()
