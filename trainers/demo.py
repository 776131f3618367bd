"""The main job end to end: meta-train → adapt → export → serve → sample over gRPC.

  python -m trainers.demo [--out=out/demo] [--config=configs/demo.cfg] [--data_dir=...]

Each stage runs the same command a user would run (printed before it runs), so the demo
is also the documentation of the pipeline. Everything it starts is stopped on exit.
"""

import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from absl import app, flags

from trainers import common

flags.DEFINE_string("out", "out/demo", "output folder (run, models, support PNGs, grid)")
flags.DEFINE_string("config", "configs/demo.cfg", "meta_gan flagfile")
flags.DEFINE_string("data_dir", None, "data folder (default: $TFMETA_DATA_DIR, else TFDS)")
flags.DEFINE_integer("character", 7, "index of the unseen evaluation character to adapt to")
flags.DEFINE_integer("k_shot", 5, "support drawings given to the served model")
flags.DEFINE_integer("steps", -1, "adaptation steps in the served adapt_and_sample call "
                     "(-1: the config's --eval_inner_steps)")
flags.DEFINE_integer("num_samples", 16, "samples fetched over gRPC")
flags.DEFINE_integer("seed", 3, "sampling seed")
flags.DEFINE_multi_string("train_flag", [], "extra flag for meta_gan, e.g. --train_flag=--num_steps=10")
flags.DEFINE_string("model_name", "omniglot", "served model name")
FLAGS = flags.FLAGS

_PY = sys.executable


def _stage(i, title):
    print(f"\n=== [{i}/5] {title}", flush=True)


def _run(cmd):
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code:
        from tfmeta.errors import TfmetaError
        raise TfmetaError(f"the command above exited with status {code} (its error is "
                          "printed above); the demo stopped there")


def _write_support_pngs(out_dir, data_dir, character, k_shot):
    """Saves K drawings of an evaluation character as dark-ink-on-white PNGs (user style)."""
    from PIL import Image
    from tfmeta.data import load_class_images
    images = load_class_images("omniglot", split="evaluation", data_dir=data_dir)
    drawings = images.images_of(character % images.num_classes)[:k_shot]
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "*.png")):
        os.remove(old)
    for i, img in enumerate(drawings):
        Image.fromarray(255 - img[..., 0]).save(os.path.join(out_dir, f"support_{i}.png"))
    return images.class_names[character % images.num_classes]


def _config_eval_steps(flagfile):
    """The --eval_inner_steps a meta_gan flagfile resolves to."""
    from tfmeta.config import GenerationConfig
    config = common.parse_config(GenerationConfig(), ["demo", f"--flagfile={flagfile}"])
    return config.inner.eval_num_steps


def _start_server(base_path, model_name):
    cmd = [_PY, "-m", "export.serve", f"--model_base_path={base_path}",
           f"--model_name={model_name}", "--port=0"]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    for line in proc.stdout:
        print("  [server] " + line.rstrip(), flush=True)
        if line.startswith("listening on "):
            return proc, line.split()[-1]
        if time.time() > deadline:
            break
    proc.kill()
    raise RuntimeError("the server did not start; see its output above")


def _stop_server(proc):
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode if proc is not None else None


@common.main_guard
def main(argv):
    del argv
    out = os.path.abspath(FLAGS.out)
    run_dir, models = os.path.join(out, "run"), os.path.join(out, "models")
    support_dir, grid = os.path.join(out, "support"), os.path.join(out, "samples.png")
    data_flag = [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
    steps = FLAGS.steps if FLAGS.steps >= 0 else _config_eval_steps(FLAGS.config)
    t0 = time.time()
    _stage(1, "meta-train on Omniglot background characters")
    _run([_PY, "-m", "trainers.meta_gan", f"--flagfile={FLAGS.config}",
          f"--workdir={run_dir}", *data_flag, *FLAGS.train_flag])
    _stage(2, f"take {FLAGS.k_shot} drawings of an unseen (evaluation) character")
    name = _write_support_pngs(support_dir, FLAGS.data_dir, FLAGS.character, FLAGS.k_shot)
    print(f"character {name!r} → {support_dir}/support_*.png", flush=True)
    _stage(3, "export a versioned SavedModel (TF Serving layout)")
    # With the support drawings, serving_default samples the generator adapted to them
    # (support-conditioned families such as the warp generator need them there);
    # adapt_and_sample adapts to any support set sent with the request.
    _run([_PY, "-m", "export.export_saved_model", f"--checkpoint={run_dir}",
          f"--model_name={FLAGS.model_name}", f"--base_path={models}",
          f"--support_images={support_dir}/*.png"])
    _stage(4, "serve it over the TF Serving gRPC API")
    server = None
    try:
        server, target = _start_server(os.path.join(models, FLAGS.model_name), FLAGS.model_name)
        _stage(5, "adapt to the support drawings and sample, over gRPC")
        _run([_PY, "-m", "export.client", f"--target={target}", f"--model={FLAGS.model_name}",
              f"--support={support_dir}/*.png", f"--steps={steps}",
              f"--num_samples={FLAGS.num_samples}", f"--seed={FLAGS.seed}", f"--out={grid}"])
    finally:
        code = _stop_server(server)
        print(f"server stopped (exit code {code})", flush=True)
    results = os.path.join(run_dir, "results.json")
    metrics = json.load(open(results)).get("eval", {}) if os.path.exists(results) else {}
    print(f"\n=== done in {(time.time() - t0) / 60:.1f} min")
    print(f"grid (support | served samples): {grid}")
    print(f"meta-training run: {run_dir}   (tensorboard --logdir {run_dir})")
    print(f"SavedModel repository: {models}   (models.config inside)")
    for key, value in sorted(metrics.items()):
        print(f"held-out eval {key} = {value:.4g}")
    print("the demo server has been stopped; start one yourself with:\n"
          f"  python -m export.serve --model_base_path={models}/{FLAGS.model_name} "
          f"--model_name={FLAGS.model_name} --port=8500")


if __name__ == "__main__":
    app.run(main)
