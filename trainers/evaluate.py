"""Evaluate few-shot generators against the baselines (augmentation accuracy + samples).

  python -m trainers.evaluate --flagfile=configs/eval_omniglot.cfg \
      --checkpoint=runs/figr,runs/vae_cavia --out=runs/eval

Methods: no_augmentation, traditional_augmentation, one per --checkpoint (a
trainers.meta_gan workdir) and, with --with_jitter (default), each checkpoint followed by
affine jitter of its samples, optionally --scratch_gan and --pretrained_finetune. Sample
metrics for every --metrics_k_shot (default 5 and 1). Writes
<out>/results.json, results.md, samples.png and TensorBoard scalars in <out>/tensorboard.
"""

import dataclasses
import functools

from absl import app, flags

from tfmeta.config import EvalConfig
from trainers import common

_INT_LISTS = ("n_real", "seeds", "metrics_k_shot")


def define_flags(flag_values=flags.FLAGS):
    """Defines this trainer's flags (on a fresh `flags.FlagValues()` in tests); the
    defaults are EvalConfig's."""
    _LIST, _INT, _FLOAT, _STR, _BOOL = (
        functools.partial(getattr(flags, f"DEFINE_{kind}"), flag_values=flag_values)
        for kind in ("list", "integer", "float", "string", "bool"))
    d = EvalConfig()
    d = dataclasses.replace(d, **{n: [str(v) for v in getattr(d, n)]
                                  for n in ("checkpoint", "method_names") + _INT_LISTS})
    _LIST("checkpoint", d.checkpoint,
          "meta_gan workdirs/checkpoints to evaluate (comma-separated)")
    _LIST("method_names", d.method_names,
          "--checkpoint method names (default: algorithm_model_preset)")
    _STR("out", d.out, "output folder (results.json, results.md, samples.png, tensorboard/)")
    _STR("data_dir", d.data_dir, "Omniglot archive folder (default: $TFMETA_DATA_DIR)")
    _STR("cache_dir", d.cache_dir, "image/extractor cache (default: $TFMETA_CACHE_DIR)")
    _INT("image_size", d.image_size, "image side in pixels (must match the checkpoints)")
    _INT("num_characters", d.num_characters,
         "evaluation characters of the augmentation protocol")
    _LIST("n_real", d.n_real, "real (support) images per character")
    _INT("num_generated", d.num_generated, "generated images added per character")
    _INT("held_real", d.held_real, "real drawings per character held out of the test "
         "set and added by a 'real_held_out' reference method, so that generated images "
         "are read against more real drawings on the same test images (0: none)")
    _LIST("seeds", d.seeds, "repeat seeds (splits, classifier init, generation)")
    _INT("selection_seed", d.selection_seed, "seed choosing the evaluation characters")
    _INT("train_steps", d.train_steps, "Adam steps of the protocol classifier")
    _INT("adapt_steps", d.adapt_steps, "inner steps on the support set for checkpoints "
         "and the pretrained baseline (equal for all; -1: the first checkpoint's "
         "eval_inner_steps)")
    _BOOL("scratch_gan", d.scratch_gan, "add the GAN-from-scratch baseline")
    _STR("scratch_preset", d.scratch_preset, "its preset (default: the first checkpoint's)")
    _INT("scratch_steps", d.scratch_steps, "its training steps on the K support images")
    _FLOAT("scratch_lr", d.scratch_lr, "its Adam learning rate")
    _BOOL("pretrained_finetune", d.pretrained_finetune, "add the transfer baseline "
          "(conventional pretraining + fine-tuning)")
    _STR("pretrained_checkpoint", d.pretrained_checkpoint, "its pretraining workdir "
         "(default <out>/pretrained; trained there with the first checkpoint's config if "
         "missing)")
    _INT("pretrain_steps", d.pretrain_steps, "conventional pretraining steps")
    _FLOAT("pretrain_lr", d.pretrain_lr, "pretraining Adam learning rate")
    _INT("metrics_characters", d.metrics_characters, "characters for the sample metrics")
    _LIST("metrics_k_shot", d.metrics_k_shot, "support images per character of the "
          "sample metrics (one table each; the first is also the figure's)")
    _BOOL("jitter_ink", d.jitter_ink, "also evaluate traditional augmentation with its "
          "source's ink values restored ('traditional_augmentation_ink': the rendering "
          "the warp generator uses, applied to jitter)")
    _BOOL("with_jitter", d.with_jitter, "also evaluate every --checkpoint followed by "
          "traditional augmentation of its samples ('<name>+jitter')")
    _INT("metrics_samples", d.metrics_samples, "samples per character for the sample metrics")
    _INT("figure_characters", d.figure_characters, "characters in samples.png")
    _INT("extractor_epochs", d.extractor_epochs,
         "feature-extractor training epochs (cached by config)")
    _INT("extractor_num_classes", d.extractor_num_classes,
         "background characters (feature-extractor classes)")
    _BOOL("extractor_augment", d.extractor_augment, "train the feature extractor on "
          "randomly moved copies, so that its metrics judge the character, not its exact "
          "rendering (false: the unaugmented extractor of the earlier README tables)")
    _INT("threads", d.threads, "TF intra-op threads (0: all cores)")
    _BOOL("onednn", d.onednn, "TF's oneDNN CPU kernels (TF's default on x86)")
    _STR("sampling", d.sampling, "sampling overrides for every --checkpoint, "
         "field=value,... (e.g. warp_sampling=prior,prior_temperature=0.7,rerank=4; "
         "default: each run's own), or one entry per checkpoint separated by '|'")
    _STR("split", d.split, "characters evaluated: evaluation (reported numbers) or "
         "validation (background characters held out of the generators' training split: "
         "for choosing settings; judged by a feature extractor trained on the training "
         "split only)")


def log(message):
    print(message, flush=True)


def eval_config(fv):
    """EvalConfig from parsed flag values `fv` (list flags → tuples; ints parsed)."""
    values = {f.name: getattr(fv, f.name) for f in dataclasses.fields(EvalConfig)}
    values.update({n: tuple(values[n]) for n in ("checkpoint", "method_names")})
    values.update({n: tuple(int(v) for v in values[n]) for n in _INT_LISTS})
    return EvalConfig(**values)


def run(fv):
    """The evaluation of the module docstring with parsed flag values `fv`."""
    config = eval_config(fv).validate()
    common.setup_runtime(threads=config.threads, onednn=config.onednn)
    from tfmeta.eval import protocol   # imports TF: after the runtime is configured
    protocol.run_evaluation(config, log=log)


@common.main_guard
def main(argv):
    del argv
    run(flags.FLAGS)


if __name__ == "__main__":
    define_flags()   # here, not at import: tests import this module next to other trainers
    app.run(main)
