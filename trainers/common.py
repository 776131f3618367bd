"""Flags shared by the trainers, and their translation into tfmeta.config dataclasses.

Each flag maps to one config field (table `tfmeta.overrides.FIELDS`); a trainer defines
the flags once with `define_flags(defaults)` and builds its config with
`build_config(cls, FLAGS)`. Flag defaults come from the config dataclass the trainer
passes, so there is one source of defaults.
"""

import dataclasses
import logging
import sys

from absl import flags

from tfmeta import overrides
from tfmeta.errors import TfmetaError
# The flat-name mapping lives in the library (the search uses it); re-exported here.
from tfmeta.overrides import flag_values_of, to_flagfile, with_flag_values

__all__ = ["define_flags", "build_config", "parse_config", "main_guard", "setup_runtime",
           "setup_training_runtime", "show_data_progress",
           "with_flag_values", "flag_values_of", "to_flagfile"]


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
    for name, (section, field, help_text) in overrides.FIELDS.items():
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
                                       for name in overrides.flag_names(defaults)})


class _StdoutHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stdout is when a record is written (tests and
    tools replace sys.stdout)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        del value


def show_data_progress(stream=None):
    """Prints the data loaders' log lines (`tfmeta.data.*`: decoding progress, polarity,
    skipped classes, cache writes) to `stream` (default stdout) as "[data] ..." lines,
    once per process. absl's verbosity stays WARNING for everything else."""
    log = logging.getLogger("tfmeta.data")
    if any(getattr(h, "tfmeta_progress", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(stream) if stream else _StdoutHandler()
    handler.setFormatter(logging.Formatter("[data] %(message)s"))
    handler.tfmeta_progress = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False   # not again through absl's handler (stderr)


def setup_runtime(num_cpu_replicas=1, threads=0, onednn=None, intra_op_threads=None):
    """Quiet TF, choose threads and oneDNN, split the CPU before TF initialises (returns
    tf). onednn: None keeps TF's default (or TF_ENABLE_ONEDNN_OPTS). intra_op_threads:
    overrides `threads` for intra-op parallelism (see `setup_training_runtime`)."""
    from absl import logging as absl_logging
    from tfmeta import runtime
    absl_logging.set_verbosity(absl_logging.WARNING)   # progress lines are printed by the library
    show_data_progress()
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

