"""Export round trip: signatures vs the eager module, both SavedModel loaders, versioning,
warm-up records and models.config (export/serving_module.py, export/export_saved_model.py).
"""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from export import export_saved_model as ex
from export.serving_module import build_serving_archive
from tfmeta.data import unscale_images
from tfmeta.errors import ConfigError

sys.path.insert(0, os.path.dirname(__file__))
from serving_toy import ToyGenerativeModule  # noqa: E402

SEED, N = 7, 3


def _call(archive, name, **kwargs):
    dtypes = {"seed": tf.int64, "num_samples": tf.int32, "steps": tf.int32,
              "support_images": tf.uint8}
    return getattr(archive, name)(**{k: tf.constant(v, dtypes[k]) for k, v in kwargs.items()})


@pytest.fixture(scope="module")
def toy():
    return ToyGenerativeModule(inner_lr=2.0)


@pytest.fixture(scope="module")
def support(toy):
    # Bright blobs on dark: far from the toy's grey samples, so adaptation moves them.
    images = np.zeros((4, 28, 28, 1), np.uint8)
    images[:, 8:20, 8:20] = 255
    return images


@pytest.fixture(scope="module")
def exported(tmp_path_factory, toy):
    base = str(tmp_path_factory.mktemp("models"))
    first = ex.export_generative_module(toy, base, "toy")
    second = ex.export_generative_module(toy, base, "toy")
    return base, first, second


def test_signatures_match_eager_module(toy, support):
    archive = build_serving_archive(toy)
    images = _call(archive, "serving_default", seed=SEED, num_samples=N)["images"].numpy()
    expected = unscale_images(toy.sample(tf.constant(N), tf.constant(SEED, tf.int64)),
                              "gan").numpy()
    assert images.shape == (N, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
    # uint8 mapping clips to [-1, 1]: -1 -> 0, 1 -> 255.
    np.testing.assert_array_equal(
        unscale_images(tf.constant([-1.0, 1.0, -2.0, 3.0]), "gan").numpy(), [0, 255, 0, 255])
    again = _call(archive, "serving_default", seed=SEED, num_samples=N)["images"].numpy()
    other = _call(archive, "serving_default", seed=SEED + 1, num_samples=N)["images"].numpy()
    np.testing.assert_array_equal(images, again)
    assert np.abs(images.astype(int) - other).mean() > 0.1

    png = _call(archive, "sample_png", seed=SEED, num_samples=N)["png"].numpy()
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)))[..., None] for b in png])
    np.testing.assert_array_equal(decoded, images)

    unadapted = _call(archive, "adapt_and_sample", support_images=support, num_samples=N,
                      seed=SEED, steps=0)["images"].numpy()
    np.testing.assert_array_equal(unadapted, images)  # 0 steps == plain sampling
    adapted = _call(archive, "adapt_and_sample", support_images=support, num_samples=N,
                    seed=SEED, steps=3)["images"].numpy()
    eager = unscale_images(toy.adapt_and_sample(tf.cast(support, tf.float32) / 127.5 - 1.0,
                                                tf.constant(N), tf.constant(SEED, tf.int64),
                                                tf.constant(3)), "gan").numpy()
    assert np.abs(adapted.astype(int) - eager).max() <= 1  # graph vs eager float rounding
    # The toy's inner loss pulls the mean sample towards the mean support image.
    def distance(x):
        return np.mean((x.astype(float).mean(0) - support.astype(float).mean(0)) ** 2)

    assert distance(adapted) < 0.8 * distance(images)


def test_in_graph_limits_reject_bad_values(toy, support):
    archive = build_serving_archive(toy, max_num_samples=4, max_steps=5)
    for kwargs in [dict(num_samples=0), dict(num_samples=5)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples"):
            _call(archive, "serving_default", seed=1, **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="steps"):
        _call(archive, "adapt_and_sample", support_images=support, num_samples=1, seed=1,
              steps=6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="support_images"):
        _call(archive, "adapt_and_sample", support_images=support[:0], num_samples=1,
              seed=1, steps=1)
    blank = support.copy()
    blank[1] = 255   # one all-white image among drawings
    with pytest.raises(tf.errors.InvalidArgumentError, match="blank"):
        _call(archive, "adapt_and_sample", support_images=blank, num_samples=1, seed=1,
              steps=1)


def test_build_rejects_non_module():
    with pytest.raises(ConfigError, match="adapt_and_sample"):
        build_serving_archive(object())


def test_versioning_is_atomic_and_monotonic(exported, toy):
    base, first, second = exported
    model_dir = os.path.join(base, "toy")
    assert first == os.path.join(model_dir, "1") and second == os.path.join(model_dir, "2")
    # Nothing but the two versions is left (the temp dir was renamed, not copied).
    assert sorted(os.listdir(model_dir)) == ["1", "2"]
    assert ex.list_versions(model_dir) == [1, 2]
    with pytest.raises(ConfigError, match="already exists"):
        ex.export_generative_module(toy, base, "toy", version=2, warmup=False)
    with pytest.raises(ConfigError, match="model_name"):
        ex.export_generative_module(toy, base, "../evil", warmup=False)
    with pytest.raises(ConfigError, match="version"):
        ex.export_generative_module(toy, base, "toy", version=0, warmup=False)
    assert sorted(os.listdir(model_dir)) == ["1", "2"]  # failed exports leave no trace
    # Temp dir names can never be taken for versions by TF Serving (digits only).
    assert not ex.TEMP_PREFIX.strip(".").isdigit() and ex.TEMP_PREFIX.startswith(".")


def test_list_versions_is_the_one_version_listing(tmp_path):
    from export import serve

    assert ex.list_versions(str(tmp_path / "missing")) == []
    for name in ["1", "2", "10", "3x", ".tmp-export-4", "007"]:
        (tmp_path / name).mkdir()
    for name in ["2", "10", "007"]:
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "5").write_text("a file, not a version")
    (tmp_path / "1" / "saved_model.pb").mkdir()   # not a file: no SavedModel
    # The exporter counts every version directory (never overwrites one); the server
    # only those holding a saved_model.pb file.
    assert ex.list_versions(str(tmp_path)) == [1, 2, 7, 10]
    assert ex.list_versions(str(tmp_path), require_saved_model=True) == [2, 7, 10]
    assert serve.list_versions is ex.list_versions and serve.WARMUP_FILE == ex.WARMUP_FILE
    model = serve.ServedModel(None, "m", str(tmp_path))
    model.refresh()   # picks the latest listed version (10, an empty file): fails to load
    assert model.statuses[10][0] == serve._State.END and not model.versions


def test_warmup_records_parse_as_prediction_logs(exported):
    _, first, _ = exported
    path = os.path.join(first, ex.WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    assert 1 <= len(logs) <= 1000
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(names) == ["adapt_and_sample", "sample_png", "serving_default"]
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "toy"
        if request.model_spec.signature_name == "adapt_and_sample":
            assert tf.make_ndarray(request.inputs["support_images"]).shape == (2, 28, 28, 1)


def test_models_config_lists_every_model(exported, toy, tmp_path):
    base, _, _ = exported
    with open(os.path.join(base, ex.MODEL_CONFIG_FILE)) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    entries = config.model_config_list.config
    assert [(e.name, e.base_path, e.model_platform) for e in entries] == [
        ("toy", os.path.join(base, "toy"), "tensorflow")]
    # A second model is added; hidden and empty dirs are not models.
    os.makedirs(os.path.join(str(tmp_path), "empty"))
    ex.export_generative_module(toy, str(tmp_path), "b", warmup=False)
    ex.export_generative_module(toy, str(tmp_path), "a", version=5, warmup=False)
    with open(ex.write_model_config(str(tmp_path))) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    assert [e.name for e in config.model_config_list.config] == ["a", "b"]


# One child process (TF import is ~5 s): reload with tf.saved_model.load, call every
# signature, and drive saved_model_cli's own `show --all` / `run` code (flag parsing and
# the C++/TF1 loader) in-process.
_CHILD = textwrap.dedent("""
    import contextlib, io, json, os, sys
    import numpy as np
    import tensorflow as tf
    from absl import flags
    from tensorflow.python.tools import saved_model_cli as smc

    model_dir, work = sys.argv[1], sys.argv[2]
    loaded = tf.saved_model.load(model_dir)
    sig = loaded.signatures
    out = {
        "images": sig["serving_default"](seed=tf.constant(7, tf.int64),
                                         num_samples=tf.constant(3))["images"].numpy(),
        "png": sig["sample_png"](seed=tf.constant(7, tf.int64),
                                 num_samples=tf.constant(3))["png"].numpy(),
        "adapted": sig["adapt_and_sample"](
            support_images=tf.constant(np.load(os.path.join(work, "support.npy"))),
            num_samples=tf.constant(3), seed=tf.constant(7, tf.int64),
            steps=tf.constant(3))["images"].numpy(),
    }

    def cli(*argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["saved_model_cli", *argv])

    cli("--dir", model_dir, "--all")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        smc.show()
    with open(os.path.join(work, "show.txt"), "w") as f:
        f.write(text.getvalue())
    common = ["--dir", model_dir, "--tag_set", "serve", "--overwrite"]
    for name in ["serving_default", "sample_png"]:
        cli(*common, "--signature_def", name, "--input_exprs", "num_samples=3;seed=7",
            "--outdir", os.path.join(work, "cli_" + name))
        smc.run()
    cli(*common, "--signature_def", "adapt_and_sample",
        "--inputs", "support_images=" + os.path.join(work, "support.npy"),
        "--input_exprs", "num_samples=3;seed=7;steps=3",
        "--outdir", os.path.join(work, "cli_adapt_and_sample"))
    smc.run()
    np.savez(os.path.join(work, "reloaded.npz"), **out)
""")


def test_fresh_process_reload_and_saved_model_cli(exported, toy, support, tmp_path):
    _, first, _ = exported
    work = str(tmp_path)
    np.save(os.path.join(work, "support.npy"), support)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _CHILD, first, work], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    archive = build_serving_archive(toy)
    expected = {
        "images": _call(archive, "serving_default", seed=SEED, num_samples=N)["images"],
        "adapted": _call(archive, "adapt_and_sample", support_images=support,
                         num_samples=N, seed=SEED, steps=3)["images"],
    }
    reloaded = np.load(os.path.join(work, "reloaded.npz"), allow_pickle=True)
    np.testing.assert_array_equal(reloaded["images"], expected["images"].numpy())
    np.testing.assert_array_equal(reloaded["adapted"], expected["adapted"].numpy())
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)))[..., None]
                        for b in reloaded["png"]])
    np.testing.assert_array_equal(decoded, expected["images"].numpy())

    # saved_model_cli run (C++ loader) gives the same images.
    for name, key, want in [("serving_default", "images", expected["images"]),
                            ("adapt_and_sample", "images", expected["adapted"])]:
        got = np.load(os.path.join(work, "cli_" + name, key + ".npy"))
        np.testing.assert_array_equal(got, want.numpy())
    png = np.load(os.path.join(work, "cli_sample_png", "png.npy"), allow_pickle=True)
    assert png.shape == (3,) and all(bytes(b).startswith(b"\x89PNG") for b in png)

    show = open(os.path.join(work, "show.txt")).read()
    blocks = {b.split("']")[0]: b for b in show.split("signature_def['")[1:]}
    assert {"serving_default", "sample_png", "adapt_and_sample"} <= set(blocks)
    expected_io = {
        "serving_default": [("inputs['seed']", "DT_INT64", "()"),
                            ("inputs['num_samples']", "DT_INT32", "()"),
                            ("outputs['images']", "DT_UINT8", "(-1, 28, 28, 1)")],
        "sample_png": [("inputs['seed']", "DT_INT64", "()"),
                       ("inputs['num_samples']", "DT_INT32", "()"),
                       ("outputs['png']", "DT_STRING", "(-1)")],
        "adapt_and_sample": [("inputs['support_images']", "DT_UINT8", "(-1, 28, 28, 1)"),
                             ("inputs['num_samples']", "DT_INT32", "()"),
                             ("inputs['seed']", "DT_INT64", "()"),
                             ("inputs['steps']", "DT_INT32", "()"),
                             ("outputs['images']", "DT_UINT8", "(-1, 28, 28, 1)")],
    }
    for name, entries in expected_io.items():
        block = blocks[name]
        assert block.count("tensor_info:") == len(entries), block
        for key, dtype, shape in entries:
            part = block.split(key, 1)[1]
            assert f"dtype: {dtype}" in part.split("name:")[0], (name, key)
            assert f"shape: {shape}" in part.split("name:")[0], (name, key)


def test_cli_missing_checkpoint_is_a_clear_error(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "export.export_saved_model", "--checkpoint",
         str(tmp_path / "nope" / "ckpt-1"), "--model_name", "m", "--base_path",
         str(tmp_path)], env=env, capture_output=True, text=True, timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 1
    assert "error: --checkpoint=" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_checkpoint_reads_and_inverts_support_images(tmp_path, toy, monkeypatch):
    checkpoint = tmp_path / "ckpt-1"
    (tmp_path / "ckpt-1.index").write_bytes(b"")
    (tmp_path / "support").mkdir()
    for i in range(2):  # dark ink on white paper, 105x105 like raw Omniglot
        page = np.full((105, 105), 255, np.uint8)
        page[40:60, 20 + 20 * i:50 + 20 * i] = 0
        Image.fromarray(page).save(tmp_path / "support" / f"{i}.png")
    calls = []

    def fake_restore(path, sampling=None):
        calls.append(path)
        return "config", type("Model", (), {"image_shape": (28, 28, 1)})(), "learner"

    def fake_module(config, model, learner, support_images=None):
        calls.append((config, learner, support_images))
        return toy

    fake = type(sys)("tfmeta.generation")
    fake.restore_model, fake.GenerativeModule = fake_restore, fake_module
    monkeypatch.setitem(sys.modules, "tfmeta.generation", fake)
    version_dir = ex.export_checkpoint(str(checkpoint), str(tmp_path / "models"), "toy",
                                       support_images=str(tmp_path / "support" / "*.png"),
                                       warmup=False)
    assert version_dir.endswith(os.path.join("toy", "1"))
    # Restored once, then the module is built adapted to the support images.
    assert calls[0] == str(checkpoint) and calls[1][:2] == ("config", "learner")
    support = calls[1][2]
    assert support.shape == (2, 28, 28, 1) and support.dtype == np.float32
    # Inverted to bright strokes on dark: background -1, strokes +1.
    assert support[:, 0].max() == -1.0 and support.max() == 1.0
    with pytest.raises(ex.DataError, match="matches no files"):
        ex.export_checkpoint(str(checkpoint), str(tmp_path / "models"), "toy",
                             support_images=str(tmp_path / "none" / "*.png"))
