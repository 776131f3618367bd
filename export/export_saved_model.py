"""Export a generative module as a versioned TF Serving SavedModel.

Layout written (what `tensorflow_model_server --model_config_file` and `export.serve`
read):

    <base_path>/models.config                  ModelServerConfig (text), one entry per model
    <base_path>/<model_name>/<version>/        SavedModel: saved_model.pb, variables/,
        assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog (warm-up)

Each version is written into `<base_path>/<model_name>/.tmp-export-*` (a name TF Serving
ignores: not a number) and renamed into place, so a polling server never sees half a
model. Versions increase monotonically (largest existing + 1); an existing version is never
overwritten.

CLI:
    python -m export.export_saved_model --checkpoint <ckpt> --model_name <name> \
        --base_path <dir> [--support_images 'dir/*.png'] [--version N]
"""

import glob
import os
import re
import shutil
import sys
import tempfile

import numpy as np

from tfmeta.data import scale_images
from tfmeta.errors import ConfigError, DataError, TfmetaError

__all__ = [
    "export_generative_module",
    "export_checkpoint",
    "list_versions",
    "write_model_config",
    "write_warmup_requests",
    "WARMUP_FILE",
    "MODEL_CONFIG_FILE",
]

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODEL_CONFIG_FILE = "models.config"
TEMP_PREFIX = ".tmp-export-"
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_WARMUP_NUM_SAMPLES = 2


def list_versions(model_dir, require_saved_model=False):
    """Sorted version numbers (int) of the version directories under `model_dir`.

    Like TF Serving's file-system source, only all-digit directory names count; a missing
    `model_dir` has none. The one version listing: the exporter counts every version
    directory (so none is ever overwritten), `export.serve` passes
    `require_saved_model=True` to see only those holding a `saved_model.pb`.
    """
    if not os.path.isdir(model_dir):
        return []

    def is_version(name):
        path = os.path.join(model_dir, name)
        if require_saved_model:
            return os.path.isfile(os.path.join(path, "saved_model.pb"))
        return os.path.isdir(path)

    return sorted(int(name) for name in os.listdir(model_dir)
                  if name.isdigit() and is_version(name))


def write_warmup_requests(archive, export_dir, model_name):
    """Writes `assets.extra/tf_serving_warmup_requests`: one PredictRequest per signature.

    The records are small (2 samples, 1 adaptation step) but trace and run every op, so
    the first real request of each signature does not pay for graph optimisation.
    Returns the number of records written (3, well under TF Serving's limit of 1000).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    seed = np.int64(0)
    num_samples = np.int32(_WARMUP_NUM_SAMPLES)
    # Realistic support images: the model's own samples.
    support = archive.serving_default(seed=tf.constant(seed),
                                      num_samples=tf.constant(num_samples))["images"].numpy()
    inputs_by_signature = {
        "serving_default": {"seed": seed, "num_samples": num_samples},
        "sample_png": {"seed": seed, "num_samples": num_samples},
        "adapt_and_sample": {"support_images": support, "num_samples": num_samples,
                             "seed": seed, "steps": np.int32(1)},
    }
    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in inputs_by_signature.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(inputs_by_signature)


def write_model_config(base_path):
    """Writes `<base_path>/models.config` listing every model directory under `base_path`.

    A model directory is a non-hidden subdirectory holding at least one numeric version.
    The file is ModelServerConfig text format (TF Serving's `--model_config_file`), with
    absolute base paths, and replaced atomically. Returns its path.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base_path = os.path.abspath(base_path)
    config = model_server_config_pb2.ModelServerConfig()
    for name in sorted(os.listdir(base_path)):
        model_dir = os.path.join(base_path, name)
        if name.startswith(".") or not list_versions(model_dir):
            continue
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = model_dir
        entry.model_platform = "tensorflow"
    path = os.path.join(base_path, MODEL_CONFIG_FILE)
    fd, tmp = tempfile.mkstemp(prefix=".models.config.", dir=base_path)
    with os.fdopen(fd, "w") as f:
        f.write(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path


def export_generative_module(module, base_path, model_name, version=None, warmup=True,
                             max_num_samples=1024, max_steps=1000, max_support=256):
    """Exports `module` to `<base_path>/<model_name>/<version>/` and refreshes models.config.

    Args:
      module: a generative module (WORKSPACE.md "Serving"; see export/serving_module.py
        for the signatures written).
      base_path: root of the model repository (created if missing).
      model_name: directory/model name, `[A-Za-z0-9_][A-Za-z0-9_.-]*`.
      version: positive int; default: largest existing version + 1 (1 for a new model).
      warmup: whether to write `assets.extra/tf_serving_warmup_requests`.
      max_num_samples, max_steps, max_support: in-graph request limits.

    Returns:
      The absolute path of the new version directory.

    Raises:
      ConfigError: bad `model_name`/`version`, or the version already exists.
    """
    from export.serving_module import build_serving_archive

    if not isinstance(model_name, str) or not _MODEL_NAME_RE.match(model_name):
        raise ConfigError(f"model_name={model_name!r} is not a valid model name: use letters, "
                          "digits, '_', '-', '.', not starting with '.' or '-'")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ConfigError(f"version={version!r} must be a positive integer (or None for "
                          "the next free version)")
    model_dir = os.path.join(os.path.abspath(base_path), model_name)
    os.makedirs(model_dir, exist_ok=True)
    if version is not None and version in list_versions(model_dir):
        raise ConfigError(f"version {version} of model {model_name!r} already exists in "
                          f"{model_dir}; exported versions are never overwritten: choose "
                          "another --version or omit it")

    archive = build_serving_archive(module, max_num_samples, max_steps, max_support)
    tmp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=model_dir)
    try:
        archive.save(tmp_dir)
        if warmup:
            write_warmup_requests(archive, tmp_dir, model_name)
        while True:
            target_version = version if version is not None else max(
                list_versions(model_dir), default=0) + 1
            target = os.path.join(model_dir, str(target_version))
            if os.path.exists(target):  # lost a race with a concurrent export
                if version is not None:
                    raise ConfigError(f"version {version} of model {model_name!r} appeared "
                                      "while exporting; not overwritten")
                continue
            try:
                os.rename(tmp_dir, target)  # atomic on one file system
                break
            except OSError:
                if version is not None or not os.path.exists(target):
                    raise
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    write_model_config(base_path)
    return target


def _load_support_paths(pattern):
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise DataError(f"--support_images={pattern!r} matches no files; give a glob such "
                        "as 'dir/*.png' (quote it so the shell does not expand it)")
    return paths


def _read_support_images(paths, image_shape):
    """Image files -> float32 [K, H, W, C] in [-1, 1], bright strokes on dark.

    Same conversion as the gRPC client (`export.client.load_support_images`: channel
    conversion, area resize, auto-inversion of dark-ink-on-paper scans).
    """
    from export.client import ClientError, load_support_images

    height, width, channels = (int(d) for d in image_shape)
    try:
        images = load_support_images(paths, height, width, channels)
    except ClientError as e:
        raise DataError(f"--support_images: {e}") from e
    return scale_images(images, "gan")


def _checkpoint_exists(checkpoint):
    # A TF checkpoint is a prefix (`ckpt-5` -> `ckpt-5.index`, ...) or a directory.
    return os.path.exists(checkpoint) or bool(glob.glob(glob.escape(checkpoint) + ".*"))


def export_checkpoint(checkpoint, base_path, model_name, support_images=None, version=None,
                      warmup=True, sampling=None):
    """What the CLI does: checkpoint -> generative module -> exported version dir.

    `support_images` is an optional glob of image files (required for support-only
    families such as the warp generator); when given, the restored model's module is
    built adapted to them (`tfmeta.generation.GenerativeModule`'s `support_images`,
    float32 [K, H, W, C] in [-1, 1], read at the model's image size). `sampling`:
    "field=value,..." sampling overrides (`tfmeta.generation.parse_sampling`). Raises
    TfmetaError subclasses with user-facing messages.
    """
    if not _checkpoint_exists(checkpoint):
        raise DataError(f"--checkpoint={checkpoint!r} does not exist (expected a "
                        "checkpoint directory or prefix such as 'workdir/ckpt-1000')")
    paths = _load_support_paths(support_images) if support_images else None
    try:
        from tfmeta.generation import GenerativeModule, restore_model
    except ImportError as e:
        raise ConfigError("tfmeta.generation is not available in this installation "
                          f"({e}); cannot build a module to export") from e
    config, model, learner = restore_model(checkpoint, sampling)
    # The image size is the model's, known only once it is restored.
    support = _read_support_images(paths, model.image_shape) if paths else None
    module = GenerativeModule(config, model, learner, support_images=support)
    return export_generative_module(module, base_path, model_name, version=version,
                                    warmup=warmup)


def main(argv):
    from absl import flags, logging

    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel INFO lines are noise here
    f = flags.FLAGS
    try:
        version_dir = export_checkpoint(f.checkpoint, f.base_path, f.model_name,
                                        f.support_images, f.version, f.warmup,
                                        sampling=f.sampling)
    except (TfmetaError, OSError) as e:
        sys.exit(f"error: {e}")
    print(f"exported {version_dir}")
    print(f"model config: {os.path.join(os.path.abspath(f.base_path), MODEL_CONFIG_FILE)}")


def _define_flags():
    from absl import flags

    flags.DEFINE_string("checkpoint", None, "Checkpoint (directory or prefix) to export.")
    flags.DEFINE_string("support_images", None,
                        "Optional glob of support images: the exported `sample` signatures "
                        "then draw from the generator adapted to them.")
    flags.DEFINE_string("model_name", None, "Model name (directory under --base_path).")
    flags.DEFINE_string("base_path", None, "Model repository root.")
    flags.DEFINE_integer("version", None, "Version number; default: next free one.")
    flags.DEFINE_boolean("warmup", True, "Write TF Serving warm-up requests.")
    flags.DEFINE_string("sampling", "", "Sampling overrides, field=value,... (e.g. "
                        "rerank=4; default: the run's own settings).")
    flags.mark_flags_as_required(["checkpoint", "model_name", "base_path"])


if __name__ == "__main__":
    from tfmeta.runtime import quiet_tensorflow

    quiet_tensorflow()
    from absl import app

    _define_flags()
    app.run(main)
