"""Every committed trainer config parses, validates and runs one step on tiny presets.

Configs are parsed with the trainers' own flag definitions (trainers.common) into a fresh
FlagValues, then run in-process through the same library call the trainer makes.
"""

import dataclasses
import glob
import os

import pytest

from tfmeta import config as cfg
from trainers import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_CONFIGS = ["configs/tiny_gan.cfg", "configs/omniglot_vae_cavia.cfg", "configs/demo.cfg",
               "configs/omniglot_cgan.cfg", "configs/omniglot_figr.cfg",
               "configs/omniglot_maml_gan.cfg", "configs/omniglot_vae_searched.cfg",
               "configs/omniglot_warp.cfg", "configs/omniglot_vae_demo.cfg",
               "configs/tiny_warp.cfg", "configs/omniglot_warp_z8.cfg",
               "configs/omniglot_warp_z16.cfg", "configs/omniglot_warp_z4.cfg"]
FEWSHOT_CONFIGS = ["configs/tiny_fewshot.cfg", "configs/omniglot_protonet_5w1s.cfg",
                   "configs/omniglot_maml_5w1s.cfg", "configs/omniglot_protonet_20w1s.cfg",
                   "configs/omniglot_maml_20w1s.cfg", "configs/vinyals_protonet_1shot.cfg",
                   "configs/vinyals_protonet_5shot.cfg", "configs/vinyals_maml_5w1s.cfg",
                   "configs/vinyals_maml_20w1s.cfg", "configs/vinyals_reptile_5w1s.cfg"]
_ONE_STEP = ["--num_steps=1", "--log_every=1", "--eval_every=1", "--checkpoint_every=1",
             "--eval_tasks=2", "--validation_classes=20"]


def test_every_config_is_covered():
    found = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs/*.cfg"))}
    covered = set(GEN_CONFIGS + FEWSHOT_CONFIGS)
    # eval_* configs: tests/test_evaluate.py; search_* configs: tests/test_search.py.
    assert all(os.path.basename(p).startswith(("eval_", "search_"))
               for p in found - covered), found


def _argv(path, tmp_path, extra):
    return ["prog", f"--flagfile={os.path.join(ROOT, path)}", f"--workdir={tmp_path}",
            *_ONE_STEP, *extra]


@pytest.mark.parametrize("path", GEN_CONFIGS)
def test_generation_config_one_step(path, tmp_path, data_dir, monkeypatch):
    from tfmeta import meta_gan
    monkeypatch.chdir(ROOT)   # configs/demo.cfg nests configs/omniglot_warp.cfg
    full = common.parse_config(cfg.GenerationConfig(), _argv(path, tmp_path, []))
    tiny = {"gan": "tiny", "vae": "tiny_vae", "warp": "tiny_warp"}[full.model]
    config = common.parse_config(cfg.GenerationConfig(), _argv(path, tmp_path, [
        f"--preset={tiny}", "--meta_batch_size=2", "--num_eval_classes=2",
        "--num_samples=2", "--inner_steps=1", "--eval_inner_steps=1",
        "--prior_fit_steps=2"]))   # warp configs with --prior_components: fit briefly
    result = meta_gan.run(config, log=lambda m: None)
    assert result["checkpoint"].endswith("ckpt-1")
    assert os.path.exists(tmp_path / "config.json") and os.path.exists(tmp_path / "results.json")
    assert os.path.exists(tmp_path / "fitted_prior.json") == bool(config.prior_components)


def test_demo_is_the_headline_generator_trained_shorter(monkeypatch):
    monkeypatch.chdir(ROOT)   # the nested --flagfile is relative to the repository
    parse = lambda name: common.parse_config(   # noqa: E731
        cfg.GenerationConfig(), ["prog", f"--flagfile=configs/{name}.cfg"])
    headline, demo = parse("omniglot_warp"), parse("demo")
    # 1,600 steps: the main job's training fits its 6-minute bar (README, bar table)
    assert (demo.train.num_steps, demo.train.eval_every) == (1600, 1000)
    shorter = dataclasses.replace(headline.train, num_steps=1600, eval_every=1000)
    assert dataclasses.replace(headline, train=shorter) == demo
    assert (demo.warp_sampling, demo.prior_temperature, demo.prior_components,
            demo.copy_guard, demo.latent_dim, demo.ink_area_power) == ("prior", 1.8, 8, 1.0, 2,
                                                                       0.5)


@pytest.mark.parametrize("path", FEWSHOT_CONFIGS)
def test_fewshot_config_one_step(path, tmp_path, data_dir):
    from tfmeta import fewshot
    config = common.parse_config(cfg.FewShotConfig(), _argv(path, tmp_path, [
        "--meta_batch_size=2", "--train_n_way=0", "--k_query=2", "--eval_inner_steps=1"]))
    result = fewshot.run(config, log=lambda m: None)
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert result["test"]["num_tasks"] == 2
    # One entry per tested way and test-statistics mode ("<N>way", "<N>way_per_query").
    assert sorted(result["tests"]) == sorted(
        f"{n}way" + ("" if mode == "transductive" else f"_{mode}")
        for mode in config.test_modes for n in config.test_ways)


def test_bad_flag_value_names_the_flag(tmp_path):
    from tfmeta.errors import ConfigError
    with pytest.raises(ConfigError, match="--k_query"):
        common.parse_config(cfg.FewShotConfig(), _argv("configs/tiny_fewshot.cfg", tmp_path,
                                                       ["--k_shot=10", "--k_query=15"]))


def test_generation_refuses_the_few_shot_inner_minibatch(tmp_path):
    from tfmeta.errors import ConfigError
    with pytest.raises(ConfigError, match="--inner_batch is for few-shot classification"):
        common.parse_config(cfg.GenerationConfig(), _argv("configs/tiny_gan.cfg", tmp_path,
                                                          ["--inner_batch=4"]))


def test_data_progress_lines_are_printed_once(capsys, monkeypatch):
    import logging
    log = logging.getLogger("tfmeta.data")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "level", logging.NOTSET)
    monkeypatch.setattr(log, "propagate", True)
    common.show_data_progress()
    common.show_data_progress()    # idempotent: one handler
    logging.getLogger("tfmeta.data.omniglot").info("decoding 19280 Omniglot PNGs")
    assert capsys.readouterr().out == "[data] decoding 19280 Omniglot PNGs\n"
