"""Structure and hyper-parameter search for few-shot generators, scored on meta-validation.

Library half of `trainers.search` (which owns the flags): `run(SearchConfig)`. Optuna
(define-by-run, RDB storage) is used rather than KerasTuner: our trials are custom
meta-training loops, not `model.fit`, so KerasTuner's fit-centred Tuner would be bypassed
anyway; Optuna gives conditional spaces, median pruning on intermediate scores and a
resumable study in one SQLite file.

A *space* maps a parameter name (a trainers.meta_gan flag name, e.g. "width",
"inner_lr") to a spec:
  [a, b, ...]               categorical choice;
  {"log": [low, high]}      float, log-uniform;
  {"float": [low, high]}    float, uniform;
  {"int": [low, high]}      integer, inclusive.

Objective (minimised): the domain Fréchet distance (tfmeta.eval, features of the
classifier trained on background characters) between samples of the adapted generator
and the held-out real drawings of `num_characters` *validation* characters, each adapted
from `k_shot` drawings with the config's `eval_num_steps`. Validation characters are
background characters excluded from the meta-training split; the evaluation split is
never read, so a search cannot overfit the numbers we report.

Each trial meta-trains in `len(rungs)` stages (cumulative step counts); after each stage
the score is reported and Optuna's median pruner may stop the trial (early stopping).
A trial's workdir is keyed by its parameters, and a trial left unfinished by an
interrupted search is re-queued with the same parameters on restart, so it resumes from
its last checkpoint: running the same command again continues the search.
"""

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from tfmeta.errors import ConfigError, DivergenceError
from tfmeta.overrides import flag_values_of, to_flagfile, with_flag_values

__all__ = ["default_space", "validate_space", "parse_space", "baseline_params", "suggest",
           "validation_score", "run_search", "trial_table", "write_results", "run"]

STUDY_NAME = "tfmeta_search"


def default_space(model):
    """The default space of a family (structure + inner/outer loop), see module doc."""
    space = {
        "width": [16, 32, 48],
        "depth": [0, 1, 2],
        "residual": [False, True],
        "activation": ["relu", "leaky_relu", "elu", "swish"],
        "norm": ["none", "instance", "layer"],
        "inner_steps": [1, 2, 3],
        "inner_lr": {"log": [0.01, 1.0]},
        "meta_lr": {"log": [1e-4, 3e-3]},
        "algorithm": ["fomaml", "maml", "meta_sgd", "meta_curvature"],
    }
    if model == "gan":
        space.update(critic_width=[32, 64], critic_depth=[0, 1],
                     norm=["none", "batch", "instance"])
    if model == "warp":   # no extra blocks or normalisation in the warp network
        for name in ("depth", "residual", "norm"):
            del space[name]
    return space


def validate_space(space):
    """Raises ConfigError for a malformed space (see module doc); returns it."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("the search space must be a non-empty JSON object "
                          "{flag name: spec}")
    for name, spec in space.items():
        if isinstance(spec, list):
            if not spec or not all(isinstance(v, (bool, int, float, str)) for v in spec):
                raise ConfigError(f"search space {name!r}: a choice list needs >= 1 "
                                  f"bool/int/float/str values, got {spec!r}")
            continue
        kind = next(iter(spec), None) if isinstance(spec, dict) and len(spec) == 1 else None
        bounds = spec.get(kind) if kind else None
        if kind not in ("log", "float", "int") or not (
                isinstance(bounds, list) and len(bounds) == 2 and bounds[0] < bounds[1]
                and (kind != "log" or bounds[0] > 0)):
            raise ConfigError(f"search space {name!r}: expected a list of choices or "
                              f"{{'log'|'float'|'int': [low, high]}} with low < high "
                              f"(low > 0 for log), got {spec!r}")
    return space


def parse_space(text, model):
    """The search space from JSON text or the path of a .json file; empty text: the
    default space of `model` ("gan", "vae", "warp"). Validated (ConfigError if not)."""
    if not text:
        return default_space(model)
    if os.path.exists(text):
        with open(text) as f:
            text = f.read()
    try:
        space = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--space is neither a file nor valid JSON: {e}") from None
    return validate_space(space)


def baseline_params(config, space):
    """The base `GenerationConfig` in the space's terms: {flag name: value} with the
    "0"/"" structure flags resolved to the preset's values, or None if a value lies
    outside the space (then it is not queued as a trial)."""
    from tfmeta.models import presets
    values = flag_values_of(config)
    preset = presets.resolve_preset(config.preset)
    gan = config.model == "gan"
    resolved = {
        "width": preset["generator_filters" if gan else "base_filters"],
        "critic_width": preset.get("discriminator_filters"),
        "norm": preset.get("generator_norm" if gan else "norm"),
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


def suggest(trial, space):
    """Parameters of an Optuna trial drawn from `space`: {name: value}."""
    params = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            params[name] = trial.suggest_categorical(name, spec)
        elif "int" in spec:
            params[name] = trial.suggest_int(name, *spec["int"])
        else:
            params[name] = trial.suggest_float(name, *spec.get("log", spec.get("float")),
                                               log="log" in spec)
    return params


def validation_score(model, learner, config, validation_images, extractor, *,
                     num_characters, k_shot, num_samples, seed=0):
    """(Fréchet distance, all sample metrics) of the adapted generator on validation."""
    from tfmeta.eval.baselines import sample_metrics
    from tfmeta.eval.generators import GeneratorSampler
    sampler = GeneratorSampler(model, learner, config.inner.eval_num_steps, name="trial")
    metrics = sample_metrics(validation_images, {"trial": sampler}, extractor,
                             split="validation", num_characters=num_characters,
                             k_shot=k_shot, num_samples=num_samples, selection_seed=seed,
                             seed=seed)["methods"]["trial"]
    return float(metrics["frechet"]), metrics


def _trial_dir(workdir, params):
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(workdir, "trials", key)


def _checkpoint_step(trial_dir):
    """Meta-step of the latest checkpoint in a trial's workdir (0 if none)."""
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(os.path.join(trial_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _write_hparams(workdir, number, params, rung, score, space, first):
    """TensorBoard hparams-plugin summaries of one trial (score after each rung)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    root = os.path.join(workdir, "hparams")
    if not os.path.exists(root):
        with tf.summary.create_file_writer(root).as_default():
            hp.hparams_config(
                hparams=[hp.HParam(n, hp.Discrete(s) if isinstance(s, list) else None)
                         for n, s in space.items()],
                metrics=[hp.Metric("validation_frechet", display_name="validation FD")])
    with tf.summary.create_file_writer(os.path.join(root, f"trial_{number:04d}")).as_default():
        if first:   # the trial's first reported rung (a resumed trial may skip rung 0)
            hp.hparams(params, trial_id=f"trial_{number:04d}")
        tf.summary.scalar("validation_frechet", score, step=rung)


def _requeue_interrupted(study, log):
    """Marks trials left RUNNING by a killed search as failed and re-queues their params."""
    import optuna
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params)
        log(f"[search] trial {t.number} was interrupted; re-queued (resumes from its "
            "checkpoint)")


def _open_study(workdir, seed, baseline, log):
    """The study in <workdir>/study.db (created or resumed): interrupted trials re-queued,
    the baseline queued unless it has completed already."""
    import optuna
    os.makedirs(workdir, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{os.path.join(workdir, 'study.db')}",
        load_if_exists=True, direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    _requeue_interrupted(study, log)
    complete = optuna.trial.TrialState.COMPLETE
    if baseline is not None and not any(t.params == baseline and t.state == complete
                                        for t in study.trials):
        study.enqueue_trial(baseline)
        log(f"[search] baseline queued: {json.dumps(baseline, sort_keys=True)}")
    return study


def _train_and_score(trial, base, trial_dir, steps, rung, train_images, validation_images,
                     extractor, score_args, log):
    """Meta-trains a trial up to `steps` (resuming its workdir) and scores it: (FD,
    metrics). A diverged run prunes the trial."""
    import optuna
    from tfmeta import meta_gan
    config = dataclasses.replace(base, train=dataclasses.replace(
        base.train, workdir=trial_dir, num_steps=steps,
        eval_every=max(base.train.eval_every, steps)))
    try:
        model, learner, _ = meta_gan.fit(config, train_images, validation_images,
                                         log=lambda message: None)
        return validation_score(model, learner, config, validation_images, extractor,
                                **score_args)
    except DivergenceError as e:
        trial.set_user_attr("diverged", str(e))
        log(f"[search] trial {trial.number} diverged at rung {rung}: pruned")
        raise optuna.TrialPruned() from None


def _objective(space, make_config, train_images, validation_images, extractor, *,
               workdir, rungs, baseline, score_args, log):
    """The Optuna objective: a trial meta-trains rung by rung and is scored after each."""
    import optuna

    def objective(trial):
        params = suggest(trial, space)
        base = make_config(params)
        trial_dir = _trial_dir(workdir, params)
        started = time.time()
        log(f"[search] trial {trial.number}: {json.dumps(params, sort_keys=True)}")
        trial.set_user_attr("workdir", trial_dir)
        done_steps = _checkpoint_step(trial_dir)   # > 0 when re-running an interrupted trial
        first = True   # hparams are written with the first reported rung
        for rung, steps in enumerate(rungs):
            if steps < done_steps:
                # The resumed weights are past this rung: a score now would be mislabelled.
                log(f"[search] trial {trial.number}: resumed at step {done_steps}, rung "
                    f"{rung} ({steps} steps) skipped")
                continue
            score, metrics = _train_and_score(trial, base, trial_dir, steps, rung,
                                              train_images, validation_images, extractor,
                                              score_args, log)
            if not np.isfinite(score):
                raise optuna.TrialPruned()
            trial.report(score, rung)
            trial.set_user_attr("rung", rung)
            trial.set_user_attr("steps", steps)
            trial.set_user_attr("minutes", (time.time() - started) / 60)
            trial.set_user_attr("metrics", metrics)
            _write_hparams(workdir, trial.number, params, rung, score, space, first)
            first = False
            log(f"[search] trial {trial.number} rung {rung} ({steps} steps): validation "
                f"FD {score:.1f} ({(time.time() - started) / 60:.1f} min)")
            # The baseline is never pruned: it is the reference every result is read
            # against, so it always gets the full budget.
            if rung < len(rungs) - 1 and params != baseline and trial.should_prune():
                log(f"[search] trial {trial.number}: pruned (worse than the median)")
                raise optuna.TrialPruned()
        return score

    return objective


def run_search(space, make_config, train_images, validation_images, extractor, *,
               workdir, num_trials, rungs, max_minutes=0.0, seed=0, num_characters=20,
               k_shot=5, num_samples=10, baseline=None, log=print, on_trial_end=None):
    """Runs (or resumes) the search; returns the Optuna study.

    Args:
      space: see module doc (validated).
      make_config: `params -> GenerationConfig` (the trainer applies the parameters as
        flags over its base flagfile, so a trial config is exactly what trainers.meta_gan
        would build); its `train.workdir` is replaced per trial.
      train_images / validation_images: ClassImages of the meta-training and validation
        splits.
      extractor: tfmeta.eval feature extractor (background characters only).
      workdir: study.db, trials/<key>/, hparams/ (TensorBoard).
      num_trials: finished (complete or pruned) trials to reach, counting earlier runs.
      rungs: increasing cumulative meta-training steps; a trial reports after each.
      max_minutes: wall-clock budget of this call (0: none); no new trial starts after it.
      baseline: optional {name: value} (the hand-written default in the space's terms);
        queued as the first trial unless the study already has it, so the default is
        scored by the same protocol as every candidate.
      on_trial_end: called with the study after every finished trial (reporting).
    """
    import optuna
    validate_space(space)
    rungs = [int(r) for r in rungs]
    if not rungs or rungs[0] < 1 or any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise ConfigError(f"rungs must be increasing step counts >= 1, got {rungs}")
    study = _open_study(workdir, seed, baseline, log)
    objective = _objective(
        space, make_config, train_images, validation_images, extractor, workdir=workdir,
        rungs=rungs, baseline=baseline, log=log, score_args=dict(
            num_characters=num_characters, k_shot=k_shot, num_samples=num_samples,
            seed=seed))
    deadline = time.time() + max_minutes * 60 if max_minutes else None
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while True:
        done = len(study.get_trials(deepcopy=False, states=finished))
        if done >= num_trials:
            break
        if deadline is not None and time.time() >= deadline:
            log(f"[search] time budget of {max_minutes} min used after {done} trials")
            break
        study.optimize(objective, n_trials=1, catch=())
        if on_trial_end is not None:
            on_trial_end(study)
        log(f"[search] {done + 1}/{num_trials} trials finished")
    return study


def trial_table(study):
    """Markdown table of every trial (best first) and the best params (or None)."""
    import optuna
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            continue
        score = t.value if t.value is not None else (
            list(t.intermediate_values.values())[-1] if t.intermediate_values else None)
        rows.append((t.state.name.lower(), score, t))
    rows.sort(key=lambda r: (r[0] != "complete", np.inf if r[1] is None else r[1]))
    names = sorted({k for _, _, t in rows for k in t.params})
    lines = ["| trial | state | validation FD | steps | minutes | " + " | ".join(names) + " |",
             "|" + "---|" * (5 + len(names))]
    for state, score, t in rows:
        values = [_fmt(t.params.get(n)) for n in names]
        lines.append(f"| {t.number} | {state} | {_fmt(score)} | "
                     f"{t.user_attrs.get('steps', '')} | "
                     f"{_fmt(t.user_attrs.get('minutes'))} | " + " | ".join(values) + " |")
    complete = [r for r in rows if r[0] == "complete"]
    return "\n".join(lines) + "\n", (complete[0][2].params if complete else None)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_results(study, base, space, workdir):
    """Writes <workdir>/results.md (every trial, best first) and, once a trial has
    completed, best.cfg: a trainers.meta_gan flagfile of `base` (GenerationConfig) with
    the best trial's parameters applied (machine-specific flags left out)."""
    table, best = trial_table(study)
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
            f.write(to_flagfile(with_flag_values(base, best), header))


def run(config, log=print):
    """The search of a `tfmeta.config.SearchConfig`: loads the meta-training and
    validation characters and the feature extractor, runs (or resumes) the study in
    `config.base.train.workdir`, and writes results.md / best.cfg after every trial.
    The trainer configures the TF runtime before calling this. Returns the study."""
    from tfmeta import meta_gan
    from tfmeta.eval import get_feature_extractor
    config.validate()
    base, space = config.base, config.search_space()
    workdir, data = base.train.workdir, base.data
    train_images = meta_gan.load_split(data, data.train_split, log)
    validation_images = meta_gan.load_split(data, "validation", log)
    extractor = get_feature_extractor(data.image_size, config.extractor_epochs,
                                      data_dir=data.data_dir, cache_dir=data.cache_dir,
                                      log_fn=log, num_classes=config.extractor_num_classes)
    log(f"[search] space: {json.dumps(space, sort_keys=True)}")
    study = run_search(
        space, lambda params: with_flag_values(base, params), train_images,
        validation_images, extractor, workdir=workdir, num_trials=config.num_trials,
        rungs=list(config.rungs), max_minutes=config.max_minutes, seed=base.train.seed,
        num_characters=config.search_characters, k_shot=config.search_k_shot,
        num_samples=config.search_samples, baseline=baseline_params(base, space), log=log,
        on_trial_end=lambda s: write_results(s, base, space, workdir))
    write_results(study, base, space, workdir)
    log(f"[done] {workdir}: results.md, best.cfg, tensorboard --logdir {workdir}/hparams")
    return study
