"""Meta-train and meta-test a few-shot classifier (MAML family, Reptile, ProtoNets).

  python -m trainers.fewshot --flagfile=configs/omniglot_protonet_5w1s.cfg [--workdir=...]

Flags mirror tfmeta.config.FewShotConfig (see trainers/common.py). Writes config.json,
checkpoints/ (exact resume), TensorBoard events and results.json into --workdir.
"""

from absl import app, flags

from tfmeta.config import FewShotConfig
from trainers import common

common.define_flags(FewShotConfig())
FLAGS = flags.FLAGS


@common.main_guard
def main(argv):
    del argv
    config = common.build_config(FewShotConfig(), FLAGS)
    common.setup_training_runtime(config)
    from tfmeta import fewshot  # imports TF: after the runtime is configured
    result = fewshot.run(config)
    print(f"[done] results: {config.train.workdir}/results.json")
    print(f"[done] tensorboard --logdir {config.train.workdir}")
    return 0 if result else 1


if __name__ == "__main__":
    app.run(main)
