"""Search generator structure and hyper-parameters on the meta-validation score (Optuna).

  python -m trainers.search --flagfile=configs/search_vae.cfg --workdir=runs/search

The meta_gan flags (flagfile) are the base configuration; each trial overrides the
flags named in the search space. Objective: domain Fréchet distance on held-out
*validation* characters of the background set (see tfmeta.search). Running the same
command again resumes the study (<workdir>/study.db) and any interrupted trial.
Writes <workdir>/results.md (every trial), best.cfg (a trainers.meta_gan flagfile of
the best trial) and TensorBoard hparams summaries in <workdir>/hparams.
"""

from absl import app, flags

from tfmeta import search as search_lib   # TF is imported by its functions
from tfmeta.config import GenerationConfig, SearchConfig
from tfmeta.search import parse_space
from trainers import common

__all__ = ["define_search_flags", "search_config", "run", "parse_space"]


def define_search_flags(flag_values=flags.FLAGS):
    """Defines meta_gan's flags (the base config) and the search's own; the defaults are
    GenerationConfig's and SearchConfig's."""
    d = SearchConfig()
    common.define_flags(GenerationConfig(), flag_values)
    flags.DEFINE_string("space", "", "search space: JSON object or path to a .json file "
                        "(default: tfmeta.search.default_space of --model)",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_trials", d.num_trials, "finished trials to reach (earlier "
                         "runs count)", flag_values=flag_values)
    flags.DEFINE_list("rungs", [str(r) for r in d.rungs], "cumulative meta-training steps "
                      "after which a trial is scored (and may be pruned)",
                      flag_values=flag_values)
    flags.DEFINE_float("max_minutes", d.max_minutes, "wall-clock budget; no trial starts "
                       "after it (0: none)", flag_values=flag_values)
    flags.DEFINE_integer("search_characters", d.search_characters,
                         "validation characters scored", flag_values=flag_values)
    flags.DEFINE_integer("search_k_shot", d.search_k_shot,
                         "support drawings per scored character", flag_values=flag_values)
    flags.DEFINE_integer("search_samples", d.search_samples,
                         "samples per scored character", flag_values=flag_values)
    flags.DEFINE_integer("extractor_epochs", d.extractor_epochs,
                         "feature-extractor epochs (cached)", flag_values=flag_values)
    flags.DEFINE_integer("extractor_num_classes", d.extractor_num_classes,
                         "background characters (feature-extractor classes)",
                         flag_values=flag_values)


def search_config(fv):
    """Validated SearchConfig from parsed flag values `fv` (--space parsed, --rungs ints)."""
    base = common.build_config(GenerationConfig(), fv)
    return SearchConfig(
        base=base, space=parse_space(fv.space, base.model), num_trials=fv.num_trials,
        rungs=tuple(int(r) for r in fv.rungs), max_minutes=fv.max_minutes,
        search_characters=fv.search_characters, search_k_shot=fv.search_k_shot,
        search_samples=fv.search_samples, extractor_epochs=fv.extractor_epochs,
        extractor_num_classes=fv.extractor_num_classes).validate()


def run(fv, log=print):
    """The search of the module docstring with parsed flag values `fv`; returns the study."""
    config = search_config(fv)
    common.setup_training_runtime(config.base)   # before TF starts
    return search_lib.run(config, log=log)


@common.main_guard
def main(argv):
    del argv
    run(flags.FLAGS)


if __name__ == "__main__":
    define_search_flags()
    app.run(main)
