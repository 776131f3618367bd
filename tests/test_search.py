"""trainers.search / tfmeta.search: a search over a tiny space on tiny presets runs,
resumes an interrupted trial, and writes a flagfile trainers.meta_gan accepts."""

import json
import os

import optuna
import pytest
from absl import flags

from tfmeta import search
from tfmeta.config import GenerationConfig
from tfmeta.errors import ConfigError
from trainers import common
from trainers import search as search_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = {"width": [4, 6], "depth": [0, 1], "residual": [False, True],
         "activation": ["relu", "swish"], "inner_lr": {"log": [1e-4, 1e-3]},
         "algorithm": ["reptile", "aggregation"]}


def _flag_values(tiny_omniglot_dir, tmp_path, num_trials):
    values = flags.FlagValues()
    search_trainer.define_search_flags(values)
    values(["prog", f"--flagfile={os.path.join(ROOT, 'configs/tiny_gan.cfg')}",
            f"--data_dir={tiny_omniglot_dir}", f"--cache_dir={tmp_path / 'cache'}",
            f"--workdir={tmp_path / 'search'}", "--validation_classes=2",
            f"--space={json.dumps(SPACE)}", f"--num_trials={num_trials}", "--rungs=1,2",
            "--extractor_epochs=1", "--extractor_num_classes=6", "--search_characters=2",
            "--search_k_shot=3", "--search_samples=3", "--eval_tasks=1",
            "--num_eval_classes=1"])
    return values


def test_search_runs_resumes_an_interrupted_trial_and_writes_a_flagfile(
        tiny_omniglot_dir, tmp_path):
    messages = []
    study = search_trainer.run(_flag_values(tiny_omniglot_dir, tmp_path, 2),
                               log=messages.append)
    # The hand-written default (tiny_gan.cfg in the space's terms) is trial 0.
    assert study.trials[0].params == {"width": 4, "depth": 0, "residual": False,
                                      "activation": "relu", "inner_lr": 1e-3,
                                      "algorithm": "reptile"}
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE   # never pruned
    states = [t.state for t in study.trials]
    assert len(states) == 2 and all(s in (optuna.trial.TrialState.COMPLETE,
                                          optuna.trial.TrialState.PRUNED) for s in states)
    # A killed search leaves its current trial RUNNING in the study: fake one.
    workdir = tmp_path / "search"
    stale = optuna.load_study(study_name=search.STUDY_NAME,
                              storage=f"sqlite:///{workdir / 'study.db'}")
    trial = stale.ask()
    interrupted = search.suggest(trial, SPACE)
    # ... after its training had passed the first rung (checkpoint at step 2 > rung 1).
    values = _flag_values(tiny_omniglot_dir, tmp_path, 3)
    config = common.with_flag_values(common.build_config(GenerationConfig(), values),
                                     {**interrupted, "num_steps": 2,
                                      "workdir": search._trial_dir(str(workdir), interrupted)})
    from tfmeta import meta_gan
    images = meta_gan.load_split(config.data, "train", log=lambda m: None)
    meta_gan.fit(config, images, images, log=lambda m: None)
    study = search_trainer.run(_flag_values(tiny_omniglot_dir, tmp_path, 3),
                               log=messages.append)
    assert any(f"trial {trial.number} was interrupted" in m for m in messages)
    finished = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 3
    assert finished[-1].params == interrupted   # re-run with the same parameters
    assert any(f"trial {finished[-1].number}: resumed at step 2, rung 0" in m
               for m in messages)
    assert list(finished[-1].intermediate_values) in ([1], [])   # rung 0 not mislabelled
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL
    # Scores are finite validation Fréchet distances, reported per rung.
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(
        t.value > 0 and len(t.intermediate_values) == (1 if t.params == interrupted else 2)
        for t in complete)
    # The best flagfile is accepted by trainers.meta_gan's flags and holds the best params.
    best = study.best_trial
    config = common.parse_config(GenerationConfig(), [
        "prog", f"--flagfile={workdir / 'best.cfg'}", f"--workdir={tmp_path / 'best'}"])
    values = common.flag_values_of(config)
    for name, value in best.params.items():
        assert values[name] == value, name
    assert config.preset == "tiny" and config.task.k_shot == 5   # base flags kept
    table = (workdir / "results.md").read_text()
    assert table.count("\n| ") == 5   # header + 3 finished trials + the failed one
    assert any(name.startswith("events") for _, _, files in os.walk(workdir / "hparams")
               for name in files)


def test_space_and_config_errors_are_clear(tiny_omniglot_dir, tmp_path):
    with pytest.raises(ConfigError, match="low < high"):
        search.validate_space({"inner_lr": {"log": [1.0, 0.1]}})
    with pytest.raises(ConfigError, match="choice list"):
        search.validate_space({"width": []})
    values = _flag_values(tiny_omniglot_dir, tmp_path, 1)
    values["space"].value = json.dumps({"no_such_flag": [1, 2]})
    with pytest.raises(ConfigError, match="no_such_flag"):
        search_trainer.run(values)
    values["space"].value = "{not json"
    with pytest.raises(ConfigError, match="valid JSON"):
        search_trainer.run(values)


def test_flagfile_round_trip_of_every_config():
    for name in ("demo.cfg", "omniglot_figr.cfg", "tiny_gan.cfg"):
        config = common.parse_config(GenerationConfig(), [
            "prog", f"--flagfile={os.path.join(ROOT, 'configs', name)}", "--workdir=/x"])
        text = common.to_flagfile(config, header="round trip")
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"rt_{os.getpid()}.cfg")
        with open(path, "w") as f:
            f.write(text)
        again = common.parse_config(GenerationConfig(), ["prog", f"--flagfile={path}",
                                                         "--workdir=/x"])
        assert again == config, name


def test_committed_search_configs_parse_and_validate():
    import glob
    for path in glob.glob(os.path.join(ROOT, "configs", "search_*.cfg")):
        values = flags.FlagValues()
        search_trainer.define_search_flags(values)
        cwd = os.getcwd()
        os.chdir(ROOT)   # nested --flagfile paths are relative to the repository root
        try:
            values(["prog", f"--flagfile={path}", "--workdir=/tmp/x"])
        finally:
            os.chdir(cwd)
        config = common.build_config(GenerationConfig(), values)
        space = search_trainer.parse_space(values.space, config.model)
        assert set(space) <= set(common.flag_values_of(config)), path
        for params in ({k: (v[0] if isinstance(v, list) else next(iter(v.values()))[0])
                        for k, v in space.items()},):
            common.with_flag_values(config, params)   # every first choice validates


def test_default_space_of_each_family_holds_only_its_options():
    """The warp family has no extra blocks or normalisation: its default space leaves
    them out, and the searched headline config is a valid baseline trial."""
    from tfmeta.search import baseline_params, default_space
    for model, preset in (("gan", "dcgan28"), ("vae", "vae28"), ("warp", "warp28")):
        space = default_space(model)
        assert ("norm" in space) == (model != "warp"), model
        config = GenerationConfig(model=model, preset=preset).validate()
        params = baseline_params(config, space)
        assert params is None or set(params) == set(space), model
    from tfmeta.config import InnerConfig, OuterConfig
    warp = GenerationConfig(model="warp", preset="warp28",
                            inner=InnerConfig(num_steps=1, lr=0.05),
                            outer=OuterConfig(algorithm="fomaml", meta_lr=1e-3)).validate()
    params = baseline_params(warp, default_space("warp"))
    assert params is not None and params["width"] == 32 and params["activation"] == "relu"
