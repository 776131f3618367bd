"""Search generator structure and hyper-parameters on the meta-validation score (Optuna).

  python -m trainers.search --flagfile=configs/search_vae.cfg --workdir=runs/search

The meta_gan flags (flagfile) are the base configuration; each trial overrides the
flags named in the search space. Objective: domain Fréchet distance on held-out
*validation* characters of the background set (see tfmeta.search). Running the same
command again resumes the study (<workdir>/study.db) and any interrupted trial.
Writes <workdir>/results.md (every trial), best.cfg (a trainers.meta_gan flagfile of
the best trial) and TensorBoard hparams summaries in <workdir>/hparams.
"""

import json
import os

from absl import app, flags

from tfmeta.config import GenerationConfig
from trainers import common


def define_search_flags(flag_values=flags.FLAGS):
    common.define_flags(GenerationConfig(), flag_values)
    flags.DEFINE_string("space", "", "search space: JSON object or path to a .json file "
                        "(default: tfmeta.search.default_space of --model)",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_trials", 20, "finished trials to reach (earlier runs count)",
                         flag_values=flag_values)
    flags.DEFINE_list("rungs", ["150", "300", "450"], "cumulative meta-training steps after "
                      "which a trial is scored (and may be pruned)", flag_values=flag_values)
    flags.DEFINE_float("max_minutes", 0.0, "wall-clock budget; no trial starts after it "
                       "(0: none)", flag_values=flag_values)
    flags.DEFINE_integer("search_characters", 20, "validation characters scored",
                         flag_values=flag_values)
    flags.DEFINE_integer("search_k_shot", 5, "support drawings per scored character",
                         flag_values=flag_values)
    flags.DEFINE_integer("search_samples", 10, "samples per scored character",
                         flag_values=flag_values)
    flags.DEFINE_integer("extractor_epochs", 6, "feature-extractor epochs (cached)",
                         flag_values=flag_values)
    flags.DEFINE_integer("extractor_num_classes", 964, "background characters (feature-"
                         "extractor classes)", flag_values=flag_values)


def parse_space(text, model):
    """The search space from --space (JSON text or a file path; empty: the default)."""
    from tfmeta import search
    from tfmeta.errors import ConfigError
    if not text:
        return search.default_space(model)
    if os.path.exists(text):
        with open(text) as f:
            text = f.read()
    try:
        space = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--space is neither a file nor valid JSON: {e}") from None
    return search.validate_space(space)


def baseline_params(config, space):
    """The base config in the space's terms ("0"/"" structure flags resolved to the
    preset's values), or None if a value lies outside the space (then it is not queued)."""
    from tfmeta.models import presets
    values = common.flag_values_of(config)
    preset = presets.resolve_preset(config.preset)
    gan = config.model == "gan"
    resolved = {
        "width": preset["generator_filters" if gan else "base_filters"],
        "critic_width": preset.get("discriminator_filters"),
        "norm": preset["generator_norm" if gan else "norm"],
        "activation": preset["activation"],
    }
    params = {}
    for name, spec in space.items():
        value = values[name] or resolved.get(name, values[name])
        if isinstance(spec, list) and value not in spec:
            return None
        if isinstance(spec, dict):
            low, high = next(iter(spec.values()))
            if not low <= value <= high:
                return None
        params[name] = value
    return params


def run(fv, log=print):
    """The search of the module docstring with parsed flag values `fv`."""
    from tfmeta.errors import ConfigError
    base = common.build_config(GenerationConfig(), fv)
    space = parse_space(fv.space, base.model)
    unknown = sorted(set(space) - set(common.flag_values_of(base)))
    if unknown:
        raise ConfigError(f"--space names unknown flags {unknown}")
    if base.data.train_split != "train" or base.data.dataset != "omniglot" \
            or base.data.split_dir:
        raise ConfigError("trainers.search scores held-out validation characters: it needs "
                          "--dataset=omniglot and the 'train' split for meta-training "
                          "(no --split_dir)")
    common.setup_training_runtime(base)
    from tfmeta import meta_gan, search
    from tfmeta.eval import get_feature_extractor
    workdir = base.train.workdir
    data = base.data
    train_images = meta_gan.load_split(data, data.train_split, log)
    validation_images = meta_gan.load_split(data, "validation", log)
    extractor = get_feature_extractor(data.image_size, fv.extractor_epochs,
                                      data_dir=data.data_dir, cache_dir=data.cache_dir,
                                      log_fn=log, num_classes=fv.extractor_num_classes)

    def report(study):
        table, best = search.trial_table(study)
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(f"# Search results ({base.model}/{base.preset}, validation FD, "
                    f"lower is better)\n\n{table}")
        if best is not None:
            best_trial = study.best_trial
            header = (f"Best trial {best_trial.number} of trainers.search in {workdir}: "
                      f"validation FD {best_trial.value:.2f} after "
                      f"{best_trial.user_attrs.get('steps')} steps.\n"
                      f"Search space: {json.dumps(space, sort_keys=True)}\n"
                      f"python -m trainers.meta_gan --flagfile=<this file> --workdir=runs/best")
            with open(os.path.join(workdir, "best.cfg"), "w") as f:
                f.write(common.to_flagfile(common.with_flag_values(base, best), header))

    log(f"[search] space: {json.dumps(space, sort_keys=True)}")
    baseline = baseline_params(base, space)
    study = search.run_search(
        space, lambda params: common.with_flag_values(base, params), train_images,
        validation_images, extractor, workdir=workdir, num_trials=fv.num_trials,
        rungs=[int(r) for r in fv.rungs], max_minutes=fv.max_minutes, seed=base.train.seed,
        num_characters=fv.search_characters, k_shot=fv.search_k_shot,
        num_samples=fv.search_samples, baseline=baseline, log=log, on_trial_end=report)
    report(study)
    log(f"[done] {workdir}: results.md, best.cfg, tensorboard --logdir {workdir}/hparams")
    return study


@common.main_guard
def main(argv):
    del argv
    run(flags.FLAGS)


if __name__ == "__main__":
    define_search_flags()
    app.run(main)
