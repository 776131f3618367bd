"""Flags shared by the trainers, and their translation into tfmeta.config dataclasses.

Each flag maps to one config field (table `_FIELDS`); a trainer defines the flags once
with `define_flags(defaults)` and builds its config with `build_config(cls, FLAGS)`.
Flag defaults come from the config dataclass the trainer passes, so there is one source
of defaults.
"""

import dataclasses
import sys

from absl import flags

from tfmeta.errors import ConfigError, TfmetaError

__all__ = ["define_flags", "build_config", "parse_config", "main_guard", "setup_runtime",
           "setup_training_runtime",
           "with_flag_values", "flag_values_of", "to_flagfile"]

# flag name → (config section, field name, help). Section None = top-level field.
_FIELDS = {
    # data
    "dataset": ("data", "dataset", "omniglot or mnist"),
    "data_dir": ("data", "data_dir", "folder with the official archives "
                 "(default: $TFMETA_DATA_DIR, else TFDS download)"),
    "cache_dir": ("data", "cache_dir", "decoded-image cache (default: $TFMETA_CACHE_DIR)"),
    "image_size": ("data", "image_size", "image side in pixels: 28, 32 or 64"),
    "channels": ("data", "channels", "1 or 3 image channels"),
    "rotations": ("data", "rotations", "add 90/180/270-degree rotated classes for training"),
    "validation_classes": ("data", "validation_classes",
                           "background characters held out for validation"),
    "split_dir": ("data", "split_dir",
                  "folder of published Omniglot class lists <split>.txt, e.g. "
                  "splits/vinyals (relative: working directory, else the Omniglot data "
                  "folder); the lists name their rotations, so not with --rotations "
                  "(default: the archives' background/evaluation split)"),
    "train_split": ("data", "train_split", "meta-training split (with --split_dir: a list "
                    "name, e.g. trainval)"),
    "val_split": ("data", "val_split", "split evaluated during few-shot training (with "
                  "--split_dir: a list name, e.g. val)"),
    "eval_split": ("data", "eval_split", "meta-test split (with --split_dir: a list name, "
                   "e.g. test)"),
    # task
    "n_way": ("task", "n_way", "classes per task"),
    "k_shot": ("task", "k_shot", "support images per class"),
    "k_query": ("task", "k_query", "query images per class"),
    "meta_batch_size": ("task", "meta_batch_size", "tasks per meta-step"),
    "train_n_way": ("task", "train_n_way", "classes per training task (0: --n_way)"),
    "train_k_query": ("task", "train_k_query",
                      "query images per class of training tasks (0: --k_query)"),
    # inner loop
    "inner_steps": ("inner", "num_steps", "adaptation steps during meta-training"),
    "eval_inner_steps": ("inner", "eval_num_steps", "adaptation steps at meta-test"),
    "inner_lr": ("inner", "lr", "inner learning rate"),
    "inner_optimizer": ("inner", "optimizer", "sgd or adam"),
    "first_order": ("inner", "first_order", "drop second-order terms"),
    # outer loop
    "algorithm": ("outer", "algorithm", "meta-learning algorithm"),
    "meta_lr": ("outer", "meta_lr", "meta-optimiser (Adam) learning rate"),
    "meta_step_size": ("outer", "meta_step_size", "Reptile/aggregation interpolation step"),
    "aggregation_weighting": ("outer", "aggregation_weighting", "uniform or loss"),
    # loop
    "workdir": ("train", "workdir", "run directory (checkpoints, TensorBoard, config.json)"),
    "num_steps": ("train", "num_steps", "meta-training steps"),
    "seed": ("train", "seed", "seed of all randomness"),
    "log_every": ("train", "log_every", "steps between progress lines/scalars"),
    "eval_every": ("train", "eval_every", "steps between evaluations"),
    "checkpoint_every": ("train", "checkpoint_every", "steps between checkpoints"),
    "eval_tasks": ("train", "eval_tasks", "tasks per evaluation"),
    "strategy": ("train", "strategy", "default, mirrored or multi_worker"),
    "num_cpu_replicas": ("train", "num_cpu_replicas",
                         "split the CPU into N logical devices (MirroredStrategy on CPU)"),
    "threads": ("train", "threads", "fixed TF thread budget, intra- and inter-op (0: the "
                "cores, split by --parallel_tasks; 1 lets two runs share 2 cores)"),
    "parallel_tasks": ("train", "parallel_tasks",
                       "tasks adapted at once in a meta-step (0: min(cores, meta-batch); "
                       "each op then gets cores/parallel threads)"),
    "onednn": ("train", "onednn", "TF's oneDNN CPU kernels (TF's default on x86; 1.1-2.4x "
               "faster here than the Eigen kernels, see benchmarks/README.md)"),
}


def _define(name, default, help_text, flag_values):
    kinds = ((bool, flags.DEFINE_bool), (int, flags.DEFINE_integer),
             (float, flags.DEFINE_float))
    define = next((fn for kind, fn in kinds if isinstance(default, kind)), flags.DEFINE_string)
    define(name, default, help_text, flag_values=flag_values)


def define_flags(defaults, flag_values=flags.FLAGS):
    """Defines one flag per config field of `defaults` (a FewShotConfig/GenerationConfig).

    Top-level fields of the config become flags of the same name. `flag_values` lets
    tests parse a flagfile into a fresh `flags.FlagValues()`.
    """
    for name, (section, field, help_text) in _FIELDS.items():
        _define(name, getattr(getattr(defaults, section), field), help_text, flag_values)
    for f in dataclasses.fields(defaults):
        if not dataclasses.is_dataclass(f.default):
            _define(f.name, f.default, f"see tfmeta.config.{type(defaults).__name__}",
                    flag_values)


def parse_config(defaults, argv):
    """Config from command-line style `argv` (e.g. ['x', '--flagfile=configs/a.cfg']),
    parsed into a fresh FlagValues: the trainers' exact flag semantics, for tests."""
    flag_values = flags.FlagValues()
    define_flags(defaults, flag_values)
    flag_values(list(argv))
    return build_config(defaults, flag_values)


def build_config(defaults, values):
    """Builds and validates a config of type(defaults) from parsed flag `values`."""
    return with_flag_values(defaults, {name: getattr(values, name)
                                       for name in _flag_names(defaults)})


def _flag_names(config):
    return list(_FIELDS) + [f.name for f in dataclasses.fields(config)
                            if not dataclasses.is_dataclass(f.default)]


def flag_values_of(config):
    """{flag name: value} of a config: the inverse of `build_config`."""
    values = {}
    for name in _flag_names(config):
        if name in _FIELDS:
            section, field, _ = _FIELDS[name]
            values[name] = getattr(getattr(config, section), field)
        else:
            values[name] = getattr(config, name)
    return values


def with_flag_values(config, values):
    """A copy of `config` with {flag name: value} applied (validated), as if the flags
    had been given on the command line after the flagfile."""
    unknown = sorted(set(values) - set(_flag_names(config)))
    if unknown:
        raise ConfigError(f"unknown flag(s) {unknown} for {type(config).__name__}")
    sections = {}
    top = {}
    for name, value in values.items():
        if name in _FIELDS:
            section, field, _ = _FIELDS[name]
            sections.setdefault(section, {})[field] = value
        else:
            top[name] = value
    parts = {s: dataclasses.replace(getattr(config, s), **v) for s, v in sections.items()}
    out = dataclasses.replace(config, **parts, **top)
    out.validate()
    return out


def to_flagfile(config, header="", exclude=("workdir", "data_dir", "cache_dir")):
    """Flagfile text (one `--name=value` per line) that rebuilds `config`; flags in
    `exclude` (machine-specific) and unset (None) values are left out."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, value in flag_values_of(config).items():
        if name in exclude or value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def setup_runtime(num_cpu_replicas=1, threads=0, onednn=None, intra_op_threads=None):
    """Quiet TF, choose threads and oneDNN, split the CPU before TF initialises (returns
    tf). onednn: None keeps TF's default (or TF_ENABLE_ONEDNN_OPTS). intra_op_threads:
    overrides `threads` for intra-op parallelism (see `setup_training_runtime`)."""
    from absl import logging
    from tfmeta import runtime
    logging.set_verbosity(logging.WARNING)   # progress lines are printed by the library
    return runtime.configure(
        num_cpu_replicas=num_cpu_replicas,
        intra_op_threads=threads if intra_op_threads is None else intra_op_threads,
        inter_op_threads=threads, onednn=onednn)


def setup_training_runtime(config):
    """`setup_runtime` for a training config: threads from `runtime.task_threads` (tasks
    side by side, each op on cores/parallel threads), unless CPU replicas share the
    cores already."""
    from tfmeta import runtime
    train = config.train
    plan = runtime.task_threads_for(config)
    intra = plan.intra_op_threads if train.num_cpu_replicas == 1 else train.threads
    return setup_runtime(train.num_cpu_replicas, train.threads, train.onednn,
                         intra_op_threads=intra)


def main_guard(fn):
    """Wraps a trainer's main: user-facing errors print one line and exit 2."""
    def wrapped(argv):
        try:
            return fn(argv)
        except TfmetaError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; the last checkpoint is intact", file=sys.stderr, flush=True)
            sys.exit(130)
    return wrapped

