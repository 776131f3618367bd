"""Flat names of config fields (the trainers' flag names) and overrides by name.

A nested config (`FewShotConfig`, `GenerationConfig`) is addressed by flat names: each
name of `FIELDS` maps to one field of a section (`"inner_lr"` → `config.inner.lr`), and
every other top-level field of the config is its own name (`"preset"`). The trainers
define one absl flag per name (trainers.common); the search names its parameters this way
(tfmeta.search) and writes the best trial as a flagfile. Nothing here reads flags.
"""

import dataclasses

from tfmeta.errors import ConfigError

__all__ = ["FIELDS", "flag_names", "flag_values_of", "with_flag_values", "to_flagfile"]

# flag name → (config section, field name, help).
FIELDS = {
    # data
    "dataset": ("data", "dataset", "omniglot, mnist, folder (--data_dir=ROOT holding "
                "ROOT/<class>/<image files>) or tfds:<name> (a TFDS image-classification "
                "dataset prepared in --data_dir, e.g. tfds:emnist/balanced; never "
                "downloaded); see docs/DATASETS.md"),
    "data_dir": ("data", "data_dir", "omniglot/mnist: folder with the official archives "
                 "(default: $TFMETA_DATA_DIR, else TFDS download); folder: the ROOT of "
                 "class folders; tfds: the TFDS data folder (default: $TFMETA_DATA_DIR, "
                 "else TFDS's)"),
    "cache_dir": ("data", "cache_dir", "decoded-image cache (default: $TFMETA_CACHE_DIR)"),
    "image_size": ("data", "image_size", "image side in pixels: 28, 32 or 64"),
    "channels": ("data", "channels", "1 (gray; colour images become their luma) or 3 (RGB; "
                 "gray images repeated)"),
    "rotations": ("data", "rotations", "add 90/180/270-degree rotated classes for training"),
    "mirrors": ("data", "mirrors", "add left-right mirrored classes for training (with "
                "--rotations: the 8 symmetries of the square)"),
    "validation_classes": ("data", "validation_classes",
                           "background characters held out for validation (Omniglot "
                           "splits train/validation; alphabet_train/alphabet_validation: "
                           "at least this many, as whole alphabets)"),
    "split_dir": ("data", "split_dir",
                  "folder of class lists <split>.txt: Omniglot published lists, e.g. "
                  "splits/vinyals (relative: working directory, else the Omniglot data "
                  "folder; they name their rotations, so not with --rotations); folder/"
                  "tfds: one class name per line (default: the archives' background/"
                  "evaluation split; folder/tfds: --split_fraction)"),
    "train_split": ("data", "train_split", "meta-training split (Omniglot: background, "
                    "train, alphabet_train; with --split_dir: a list name, e.g. trainval)"),
    "val_split": ("data", "val_split", "split evaluated during few-shot training (with "
                  "--split_dir: a list name, e.g. val)"),
    "eval_split": ("data", "eval_split", "meta-test split (with --split_dir: a list name, "
                   "e.g. test)"),
    "ink_polarity": ("data", "ink_polarity", "folder/tfds: auto (detect per dataset from "
                     "the image borders), bright (light strokes on dark, kept) or dark "
                     "(dark ink on light paper, inverted); models see bright strokes"),
    "split_fraction": ("data", "split_fraction", "folder/tfds without --split_dir: "
                       "train,validation,evaluation fractions of the classes (seeded by "
                       "class name), e.g. 0.7,0.1,0.2 (empty: that)"),
    # task
    "n_way": ("task", "n_way", "classes per task"),
    "k_shot": ("task", "k_shot", "support images per class"),
    "k_query": ("task", "k_query", "query images per class"),
    "meta_batch_size": ("task", "meta_batch_size", "tasks per meta-step"),
    "train_n_way": ("task", "train_n_way", "classes per training task (0: --n_way)"),
    "train_k_query": ("task", "train_k_query",
                      "query images per class of training tasks (0: --k_query)"),
    "train_k_shot": ("task", "train_k_shot",
                     "support images per class of training tasks (0: --k_shot)"),
    # inner loop
    "inner_steps": ("inner", "num_steps", "adaptation steps during meta-training"),
    "eval_inner_steps": ("inner", "eval_num_steps", "adaptation steps at meta-test"),
    "inner_lr": ("inner", "lr", "inner learning rate"),
    "inner_optimizer": ("inner", "optimizer", "sgd or adam"),
    "first_order": ("inner", "first_order", "drop second-order terms"),
    "inner_batch": ("inner", "batch_size", "support images per meta-training inner step, "
                    "a random subset each step (0: all)"),
    # outer loop
    "algorithm": ("outer", "algorithm", "meta-learning algorithm"),
    "meta_lr": ("outer", "meta_lr", "meta-optimiser (Adam) learning rate"),
    "meta_step_size": ("outer", "meta_step_size", "Reptile/aggregation interpolation step"),
    "meta_step_anneal": ("outer", "meta_step_anneal", "anneal --meta_step_size linearly "
                         "to 0 at --num_steps (Reptile's schedule)"),
    "aggregation_weighting": ("outer", "aggregation_weighting", "uniform or loss"),
    # loop
    "workdir": ("train", "workdir", "run directory (checkpoints, TensorBoard, config.json)"),
    "num_steps": ("train", "num_steps", "meta-training steps"),
    "seed": ("train", "seed", "seed of all randomness"),
    "log_every": ("train", "log_every", "steps between progress lines/scalars"),
    "eval_every": ("train", "eval_every", "steps between evaluations"),
    "checkpoint_every": ("train", "checkpoint_every", "steps between checkpoints"),
    "average_checkpoints": ("train", "average_checkpoints",
                            "final weights: the mean of the last N checkpoints' network "
                            "weights, written to <workdir>/averaged/ (1: the last "
                            "checkpoint)"),
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


def flag_names(config):
    """Every flat name of `config` (a FewShotConfig/GenerationConfig): the sectioned
    names of `FIELDS`, then its own top-level fields, in definition order."""
    return list(FIELDS) + [f.name for f in dataclasses.fields(config)
                            if not dataclasses.is_dataclass(f.default)]


def flag_values_of(config):
    """{flag name: value} of a config (`flag_names` order): what `with_flag_values`
    (and trainers.common.build_config) rebuild it from."""
    values = {}
    for name in flag_names(config):
        if name in FIELDS:
            section, field, _ = FIELDS[name]
            values[name] = getattr(getattr(config, section), field)
        else:
            values[name] = getattr(config, name)
    return values


def with_flag_values(config, values):
    """A copy of `config` with {flag name: value} applied (validated), as if the flags
    had been given on the command line after the flagfile."""
    unknown = sorted(set(values) - set(flag_names(config)))
    if unknown:
        raise ConfigError(f"unknown flag(s) {unknown} for {type(config).__name__}")
    sections = {}
    top = {}
    for name, value in values.items():
        if name in FIELDS:
            section, field, _ = FIELDS[name]
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
