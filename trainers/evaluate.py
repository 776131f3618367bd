"""Evaluate few-shot generators against the baselines (augmentation accuracy + samples).

  python -m trainers.evaluate --flagfile=configs/eval_omniglot.cfg \
      --checkpoint=runs/figr,runs/vae_cavia --out=runs/eval

Methods: no_augmentation, traditional_augmentation, one per --checkpoint (a
trainers.meta_gan workdir) and, with --with_jitter (default), each checkpoint followed by
affine jitter of its samples, optionally --scratch_gan and --pretrained_finetune. Sample
metrics for every --metrics_k_shot (default 5 and 1). Writes
<out>/results.json, results.md, samples.png and TensorBoard scalars in <out>/tensorboard.
"""

import functools
import os

from absl import app, flags

from trainers import common


def define_flags(flag_values=flags.FLAGS):
    """Defines this trainer's flags (on a fresh `flags.FlagValues()` in tests)."""
    _LIST, _INT, _FLOAT, _STR, _BOOL = (
        functools.partial(getattr(flags, f"DEFINE_{kind}"), flag_values=flag_values)
        for kind in ("list", "integer", "float", "string", "bool"))
    _LIST("checkpoint", [], "meta_gan workdirs/checkpoints to evaluate (comma-separated)")
    _LIST("method_names", [], "--checkpoint method names (default: algorithm_model_preset)")
    _STR("out", None, "output folder (results.json, results.md, samples.png, tensorboard/)")
    _STR("data_dir", None, "Omniglot archive folder (default: $TFMETA_DATA_DIR)")
    _STR("cache_dir", None, "image/extractor cache (default: $TFMETA_CACHE_DIR)")
    _INT("image_size", 28, "image side in pixels (must match the checkpoints)")
    _INT("num_characters", 200, "evaluation characters of the augmentation protocol")
    _LIST("n_real", ["5", "10", "15"], "real (support) images per character")
    _INT("num_generated", 10, "generated images added per character")
    _LIST("seeds", ["0", "1", "2"], "repeat seeds (splits, classifier init, generation)")
    _INT("selection_seed", 0, "seed choosing the evaluation characters")
    _INT("train_steps", 500, "Adam steps of the protocol classifier")
    _INT("adapt_steps", -1, "inner steps on the support set for checkpoints and the "
         "pretrained baseline (equal for all; -1: the first checkpoint's eval_inner_steps)")
    _BOOL("scratch_gan", False, "add the GAN-from-scratch baseline")
    _STR("scratch_preset", "", "its preset (default: the first checkpoint's)")
    _INT("scratch_steps", 200, "its training steps on the K support images")
    _FLOAT("scratch_lr", 2e-4, "its Adam learning rate")
    _BOOL("pretrained_finetune", False, "add the transfer baseline "
          "(conventional pretraining + fine-tuning)")
    _STR("pretrained_checkpoint", "", "its pretraining workdir (default <out>/pretrained; "
         "trained there with the first checkpoint's config if missing)")
    _INT("pretrain_steps", 2000, "conventional pretraining steps")
    _FLOAT("pretrain_lr", 2e-4, "pretraining Adam learning rate")
    _INT("metrics_characters", 50, "characters for the sample metrics")
    _LIST("metrics_k_shot", ["5", "1"], "support images per character of the sample "
          "metrics (one table each; the first is also the figure's)")
    _BOOL("jitter_ink", True, "also evaluate traditional augmentation with its source's "
          "ink values restored ('traditional_augmentation_ink': the rendering the warp "
          "generator uses, applied to jitter)")
    _BOOL("with_jitter", True, "also evaluate every --checkpoint followed by traditional "
          "augmentation of its samples ('<name>+jitter')")
    _INT("metrics_samples", 20, "samples per character for the sample metrics")
    _INT("figure_characters", 4, "characters in samples.png")
    _INT("extractor_epochs", 6, "feature-extractor training epochs (cached by config)")
    _INT("extractor_num_classes", 964, "background characters (feature-extractor classes)")
    _INT("threads", 0, "TF intra-op threads (0: all cores)")
    _BOOL("onednn", True, "TF's oneDNN CPU kernels (TF's default on x86)")


def log(message):
    print(message, flush=True)


def build_methods(fv, eval_lib, generators, load_background):
    """Baselines, one method per --checkpoint, and the optional generator baselines."""
    from tfmeta.errors import ConfigError
    methods = dict(eval_lib.BASELINES)
    if fv.jitter_ink:
        methods["traditional_augmentation_ink"] = eval_lib.make_traditional_augmentation(
            match_ink=True)
    checkpoints = generators.checkpoint_methods(
        fv.checkpoint, fv.method_names, None if fv.adapt_steps < 0
        else fv.adapt_steps, taken=methods, log_fn=log)
    methods.update(checkpoints)
    if fv.with_jitter:
        methods.update({f"{name}+jitter": eval_lib.with_jitter(fn)
                        for name, fn in checkpoints.items()})
    first = next((f for f in methods.values() if hasattr(f, "model")), None)
    base = first.model.config if first else None
    if fv.scratch_gan:
        if not (base or fv.scratch_preset):
            raise ConfigError("--scratch_gan needs --scratch_preset or a --checkpoint")
        methods["scratch_gan"] = generators.scratch_gan_fn(
            fv.scratch_preset or base.preset, fv.scratch_steps,
            image_size=fv.image_size, learning_rate=fv.scratch_lr,
            gan_loss=base.gan_loss if base else "wgan_gp")
    if fv.pretrained_finetune:
        if base is None:
            raise ConfigError("--pretrained_finetune needs a --checkpoint (its config and "
                              "adaptation steps are copied)")
        import dataclasses
        config = dataclasses.replace(base, data=dataclasses.replace(
            base.data, data_dir=fv.data_dir, cache_dir=fv.cache_dir))
        workdir = fv.pretrained_checkpoint or os.path.join(fv.out, "pretrained")
        generators.ensure_pretrained(workdir, config, lambda: load_background(config),
                                     fv.pretrain_steps, learning_rate=fv.pretrain_lr,
                                     log_fn=log)
        methods["pretrained_finetune"] = generators.pretrained_finetune_fn(workdir,
                                                                           first.steps)
    return methods


def run(fv):
    """The evaluation of the module docstring with parsed flag values `fv`."""
    from tfmeta.errors import ConfigError
    if not fv.out:
        raise ConfigError("--out is required (the results folder)")
    shots = [int(k) for k in fv.metrics_k_shot]
    if not shots or min(shots) < 1:
        raise ConfigError("--metrics_k_shot needs one or more support sizes >= 1")
    os.makedirs(fv.out, exist_ok=True)
    common.setup_runtime(threads=fv.threads, onednn=fv.onednn)
    from tfmeta import eval as eval_lib, meta_gan
    from tfmeta.data import load_class_images
    from tfmeta.eval import generators
    methods = build_methods(fv, eval_lib, generators,
                            lambda c: meta_gan.load_split(c.data, c.data.train_split, log))
    data = dict(image_size=fv.image_size, data_dir=fv.data_dir, cache_dir=fv.cache_dir)
    eval_images = load_class_images("omniglot", "evaluation", **data)
    background_names = load_class_images("omniglot", "background", **data).class_names
    extractor = eval_lib.get_feature_extractor(
        fv.image_size, fv.extractor_epochs, data_dir=fv.data_dir,
        cache_dir=fv.cache_dir, log_fn=log, num_classes=fv.extractor_num_classes)
    log(f"[eval] methods: {', '.join(methods)}")
    results = eval_lib.augmentation_accuracy(
        eval_images, methods, split="evaluation", num_characters=fv.num_characters,
        n_real=[int(n) for n in fv.n_real], num_generated=fv.num_generated,
        seeds=[int(s) for s in fv.seeds], selection_seed=fv.selection_seed,
        train_steps=fv.train_steps, background_class_names=background_names, log_fn=log)
    log("[eval] sample metrics and figure")
    selection = fv.selection_seed
    samples_by_k = {}
    for k in shots:
        log(f"[eval] sample metrics, {k}-shot")
        samples_by_k[str(k)] = eval_lib.sample_metrics(
            eval_images, methods, extractor, split="evaluation", k_shot=k,
            num_characters=min(fv.metrics_characters, eval_images.num_classes),
            num_samples=fv.metrics_samples, selection_seed=selection)
    k_shot, samples = shots[0], samples_by_k[str(shots[0])]
    eval_lib.save_sample_figure(
        os.path.join(fv.out, "samples.png"), eval_images, methods, k_shot=k_shot,
        num_characters=min(fv.figure_characters, eval_images.num_classes),
        selection_seed=selection)
    table = generators.write_report(fv.out, results, samples, extra={
        "checkpoints": {name: getattr(fn, "checkpoint") for name, fn in methods.items()
                        if getattr(fn, "checkpoint", None)},
        "adapt_steps": {name: getattr(fn, "steps", None) for name, fn in methods.items()},
        "extractor": extractor.config.key(), "samples_by_k_shot": samples_by_k})
    log(table)
    log(f"[done] {fv.out}: results.json, results.md, samples.png, tensorboard/")


@common.main_guard
def main(argv):
    del argv
    run(flags.FLAGS)


if __name__ == "__main__":
    define_flags()   # here, not at import: tests import this module next to other trainers
    app.run(main)
