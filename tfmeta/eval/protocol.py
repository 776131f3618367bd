"""The evaluation harness as one library call: `run_evaluation(EvalConfig)`.

Library half of `trainers.evaluate` (which owns the flags). Methods: the baselines
(`no_augmentation`, `traditional_augmentation`, with `jitter_ink` also
`traditional_augmentation_ink`), one per checkpoint (a trainers.meta_gan workdir) and,
with `with_jitter`, each checkpoint followed by affine jitter of its samples
("<name>+jitter"), optionally `scratch_gan` and `pretrained_finetune`. Every method
goes through the augmentation protocol (tfmeta.eval.augmentation) on the Omniglot
evaluation characters and the sample metrics (tfmeta.eval.baselines.sample_metrics) for
every `metrics_k_shot` (on the `split` characters: "evaluation" for reported numbers,
"validation" for choosing settings); the report is <out>/results.json, results.md, samples.png and
TensorBoard scalars in <out>/tensorboard.

Importing this module does not import TensorFlow (the trainer configures the runtime
first); the functions do.
"""

import dataclasses
import os

__all__ = ["build_methods", "run_evaluation"]


def build_methods(config, log=print):
    """{method name: generate_fn} of an evaluation, in report order.

    A generate_fn maps (support uint8 [K, H, W, C], num, seed) to uint8 [G, H, W, C]
    (G <= num). Loads every `config.checkpoint`; with `config.pretrained_finetune` it
    also pretrains the transfer baseline in its workdir if that is missing.

    Args:
      config: `tfmeta.config.EvalConfig` (validated here).
      log: callable(str) for progress lines.
    Raises:
      ConfigError: an invalid config (see `EvalConfig.validate`) or checkpoint.
    """
    from tfmeta import eval as eval_lib, meta_gan
    from tfmeta.eval import generators
    config.validate()
    methods = dict(eval_lib.BASELINES)
    if config.jitter_ink:
        methods["traditional_augmentation_ink"] = eval_lib.make_traditional_augmentation(
            match_ink=True)
    checkpoints = generators.checkpoint_methods(
        config.checkpoint, config.method_names, None if config.adapt_steps < 0
        else config.adapt_steps, taken=methods, log_fn=log, sampling=config.sampling)
    methods.update(checkpoints)
    if config.with_jitter:
        methods.update({f"{name}+jitter": eval_lib.with_jitter(fn)
                        for name, fn in checkpoints.items()})
    # validate() guarantees a checkpoint where the generator baselines need one.
    first = next((f for f in methods.values() if hasattr(f, "model")), None)
    base = first.model.config if first else None
    if config.scratch_gan:
        methods["scratch_gan"] = generators.scratch_gan_fn(
            config.scratch_preset or base.preset, config.scratch_steps,
            image_size=config.image_size, learning_rate=config.scratch_lr,
            gan_loss=base.gan_loss if base else "wgan_gp")
    if config.pretrained_finetune:
        pretrain_config = dataclasses.replace(base, data=dataclasses.replace(
            base.data, data_dir=config.data_dir, cache_dir=config.cache_dir))
        workdir = config.pretrained_checkpoint or os.path.join(config.out, "pretrained")
        generators.ensure_pretrained(
            workdir, pretrain_config,
            lambda: meta_gan.load_split(pretrain_config.data,
                                        pretrain_config.data.train_split, log),
            config.pretrain_steps, learning_rate=config.pretrain_lr, log_fn=log)
        methods["pretrained_finetune"] = generators.pretrained_finetune_fn(workdir,
                                                                           first.steps)
    return methods


# The training splits whose held-out background characters `--split=validation` reads:
# training split -> its validation split (tfmeta.data.omniglot.SPLITS).
_VALIDATION_OF = {"train": "validation", "alphabet_train": "alphabet_validation"}


def _unseen_characters(config, methods):
    """(ClassImages of `config.split`, names of characters the generators trained on,
    the judge's training settings for `get_feature_extractor`).

    "evaluation": the evaluation alphabets; every background character is excluded.
    "validation": the background characters that the checkpoints' training split
    ("train", or "alphabet_train": whole alphabets) held out; every checkpoint must have
    trained on one such split with the same validation_classes / split_seed, otherwise
    its "unseen" characters were seen. Its judge trains on that training split only, so
    it never saw the validation characters (trained on them, it reads every sample of
    theirs as consistent).
    """
    from tfmeta.data import load_class_images
    from tfmeta.errors import ConfigError
    data = dict(image_size=config.image_size, data_dir=config.data_dir,
                cache_dir=config.cache_dir)
    if config.split == "evaluation":
        return (load_class_images("omniglot", "evaluation", **data),
                load_class_images("omniglot", "background", **data).class_names,
                {"split": "background", "num_classes": config.extractor_num_classes})
    held_out = {(fn.model.config.data.train_split, fn.model.config.data.validation_classes)
                for fn in methods.values() if hasattr(fn, "model")}
    if not held_out:
        held_out = {("train", 100)}
    if len(held_out) > 1 or next(iter(held_out))[0] not in _VALIDATION_OF:
        raise ConfigError(f"--split=validation needs checkpoints trained on one of the "
                          f"splits {sorted(_VALIDATION_OF)} with one validation_classes "
                          f"(got train_split, validation_classes = {sorted(held_out)}): "
                          "otherwise the validation characters were training characters")
    train_split, validation_classes = next(iter(held_out))
    seen = load_class_images("omniglot", train_split, validation_classes=validation_classes,
                             **data).class_names
    return (load_class_images("omniglot", _VALIDATION_OF[train_split],
                              validation_classes=validation_classes, **data),
            seen,
            {"split": train_split, "validation_classes": validation_classes,
             "num_classes": len(seen)})


def _sample_metrics_by_k(config, eval_images, methods, extractor, log):
    """{str(k): sample_metrics(...)} for every k of `config.metrics_k_shot`."""
    from tfmeta import eval as eval_lib
    samples_by_k = {}
    for k in config.metrics_k_shot:
        log(f"[eval] sample metrics, {k}-shot")
        samples_by_k[str(k)] = eval_lib.sample_metrics(
            eval_images, methods, extractor, split=config.split, k_shot=k,
            num_characters=min(config.metrics_characters, eval_images.num_classes),
            num_samples=config.metrics_samples, selection_seed=config.selection_seed)
    return samples_by_k


def run_evaluation(config, log=print):
    """Runs the evaluation of the module docstring and writes its report into `config.out`.

    Args:
      config: `tfmeta.config.EvalConfig`.
      log: callable(str) for progress lines (the trainer passes a flushing print).
    Returns:
      The markdown results table (also in <out>/results.md).
    Raises:
      ConfigError / DataError: invalid config, checkpoints or data.
    """
    config.validate()
    os.makedirs(config.out, exist_ok=True)
    from tfmeta import eval as eval_lib
    from tfmeta.eval import generators
    methods = build_methods(config, log)
    eval_images, seen_names, judge = _unseen_characters(config, methods)
    extractor = eval_lib.get_feature_extractor(
        config.image_size, config.extractor_epochs, data_dir=config.data_dir,
        cache_dir=config.cache_dir, log_fn=log, augment=config.extractor_augment, **judge)
    log(f"[eval] methods: {', '.join(methods)}")
    results = eval_lib.augmentation_accuracy(
        eval_images, methods, split=config.split, num_characters=config.num_characters,
        n_real=list(config.n_real), num_generated=config.num_generated,
        seeds=list(config.seeds), selection_seed=config.selection_seed,
        train_steps=config.train_steps, background_class_names=seen_names,
        log_fn=log, held_real=config.held_real)
    log("[eval] sample metrics and figure")
    samples_by_k = _sample_metrics_by_k(config, eval_images, methods, extractor, log)
    k_shot = config.metrics_k_shot[0]
    eval_lib.save_sample_figure(
        os.path.join(config.out, "samples.png"), eval_images, methods, k_shot=k_shot,
        num_characters=min(config.figure_characters, eval_images.num_classes),
        selection_seed=config.selection_seed)
    table = generators.write_report(config.out, results, samples_by_k[str(k_shot)], extra={
        "checkpoints": {name: getattr(fn, "checkpoint") for name, fn in methods.items()
                        if getattr(fn, "checkpoint", None)},
        "adapt_steps": {name: getattr(fn, "steps", None) for name, fn in methods.items()},
        "extractor": extractor.config.key(), "samples_by_k_shot": samples_by_k})
    log(table)
    log(f"[done] {config.out}: results.json, results.md, samples.png, tensorboard/")
    return table
