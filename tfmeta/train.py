"""The one meta-training loop: build → resume → step → summaries → eval → checkpoint.

Every trainer (few-shot classification, generators) drives its learner through `run`.
A learner offers `meta_step(support, query, step) -> dict of scalar tensors` (compiled,
traced once) and `trackables() -> dict` (variables, optimisers, learned rates) for
`tf.train.Checkpoint`. Tasks come from a sampler with `sample(meta_batch_size)` and
JSON-able `get_state()` / `set_state()`.

Exact resume: a checkpoint holds the step, every trackable of the learner and the
sampler's RNG state after the batches consumed so far. Step seeds are derived
statelessly from (config seed, step), so no other RNG state exists. A resumed run
therefore produces the same weights as an uninterrupted one (tests/test_train.py).
"""

import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from tfmeta import summaries
from tfmeta.errors import DataError, DivergenceError

__all__ = ["run", "make_checkpoint", "restore_latest", "checkpoint_mismatch",
           "final_checkpoint", "weight_variables", "average_checkpoints",
           "init_weights", "write_json",
           "is_chief", "format_metrics"]

# Learner trackables that are network weights (the rest: optimisers, learned update rules).
_WEIGHT_TRACKABLES = ("meta_variables", "encoder")

# <workdir>/averaged/ckpt-N: the mean of a run's last checkpoints (--average_checkpoints).
AVERAGED_DIR = "averaged"


def is_chief(strategy=None):
    """True unless this is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)   # public Strategy property
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def write_json(workdir, name, obj):
    """Writes `obj` to `<workdir>/<name>` atomically (config.json, results.json)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
    os.replace(tmp, path)
    return path


def make_checkpoint(learner, step_var=None, sampler_state_var=None):
    """A tf.train.Checkpoint over the learner's trackables, the step and sampler state."""
    step_var = step_var if step_var is not None else tf.Variable(0, dtype=tf.int64, trainable=False)
    sampler_state_var = (sampler_state_var if sampler_state_var is not None
                         else tf.Variable("", dtype=tf.string, trainable=False))
    ckpt = tf.train.Checkpoint(step=step_var, sampler_state=sampler_state_var,
                               **learner.trackables())
    return ckpt, step_var, sampler_state_var


def restore_latest(ckpt, directory, trackables=None):
    """Restores the latest checkpoint in `directory`; returns its path or None. A
    checkpoint whose saved state does not match (another learner, network or optimiser;
    e.g. written by an earlier tfmeta) is a DataError naming it, what does not match
    (`checkpoint_mismatch`; `trackables`: the learner's, for its variables' names) and
    the way to reuse its network weights (--init_from), not a traceback."""
    latest = tf.train.latest_checkpoint(directory)
    if latest:
        status = None
        try:
            status = ckpt.restore(latest)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            if status is not None:
                status.expect_partial()   # no warnings about the unrestored values at exit
            run_dir = os.path.dirname(os.path.normpath(directory))
            raise DataError(
                f"cannot resume from {latest!r}: its saved state does not match this "
                f"run's learner and optimiser "
                f"({checkpoint_mismatch(ckpt, latest, error, trackables)}). Use another "
                f"--workdir; --init_from={run_dir} starts it from that checkpoint's "
                "network weights") from None
    return latest


def checkpoint_mismatch(ckpt, prefix, error, trackables=None):
    """One line naming what the checkpoint at `prefix` lacks, or holds in another shape,
    of what `ckpt` expects (`error`: the failed restore's exception, quoted when the lists
    show no difference). With the learner's `trackables` (the dict `ckpt` was built
    over), its variables are named by their own names and come first; other objects by
    their checkpoint keys. Read from both sides' variable lists, so it is the same every
    time (TF's own message shows ten arbitrary objects)."""
    fallback = " ".join(str(error).split())[:300]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            expected = dict(tf.train.list_variables(ckpt.write(os.path.join(tmp, "x"))))
        found = dict(tf.train.list_variables(prefix))
    except (ValueError, tf.errors.OpError):
        return fallback

    def describe(key):   # (is not a learner variable, index, name)
        parts = key.split("/")
        group = (trackables or {}).get(parts[0])
        if (isinstance(group, (list, tuple)) and len(parts) > 1 and parts[1].isdigit()
                and int(parts[1]) < len(group)):
            var = group[int(parts[1])]
            return (0, int(parts[1]), getattr(var, "path", None) or var.name)
        return (1, 0, key.replace("/.ATTRIBUTES/VARIABLE_VALUE", ""))

    problems = sorted([(*describe(k), "") for k in expected if k not in found]
                      + [(*describe(k), f" (checkpoint {found[k]}, model {expected[k]})")
                         for k in expected if k in found and found[k] != expected[k]])
    if not problems:
        return fallback
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    return "unmatched: " + ", ".join(name + shapes for _, _, name, shapes in problems[:3]) + more


def init_weights(learner, run_dir, skip=()):
    """Loads only the network weights of `learner` from another run's final checkpoint
    (`run_dir`: its workdir, see `final_checkpoint`, or its checkpoints/ folder); optimiser
    slots, step, sampler state and learned update rules (Meta-SGD rates) stay as built. Returns the
    checkpoint path. Raises DataError when there is no checkpoint or its weights do not
    fit this learner (another network or learner family), naming the path.

    skip: indices into the learner's meta-variables whose stored values are read into
    throw-away stand-ins of the stored shape instead (the variables keep their values):
    a zero head (`tfmeta.fewshot.zero_head`) loads a body trained at another n_way.
    """
    weights = {k: v for k, v in learner.trackables().items() if k in _WEIGHT_TRACKABLES}
    if not weights:
        raise DataError(f"--init_from: {type(learner).__name__} has no network weights to "
                        f"load (trackables {sorted(learner.trackables())})")
    latest = final_checkpoint(run_dir) or tf.train.latest_checkpoint(run_dir)
    if latest is None:
        raise DataError(f"--init_from: no checkpoint in {run_dir!r} or its checkpoints/ "
                        "folder")
    if skip:
        stored = tf.train.load_checkpoint(latest).get_variable_to_shape_map()
        stand_ins = list(weights["meta_variables"])
        for i in skip:
            shape = stored.get(f"meta_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
            if shape is not None:   # else the match check below names the mismatch
                stand_ins[i] = tf.Variable(tf.zeros(shape, stand_ins[i].dtype),
                                           trainable=False)
        weights["meta_variables"] = stand_ins
    try:
        status = tf.train.Checkpoint(**weights).restore(latest)
        status.assert_existing_objects_matched()
        status.expect_partial()   # the other run's optimiser etc. are meant to stay unread
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        first = str(error).strip().splitlines()[0][:300]
        raise DataError(f"--init_from: the weights in {latest!r} do not fit this network "
                        f"and learner ({', '.join(sorted(weights))}): {first}") from None
    return latest


def format_metrics(metrics):
    """{name: scalar} -> "name=value ..." (sorted names, 4 significant digits)."""
    return " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))


def _finite(metrics):
    return all(math.isfinite(float(v)) for v in metrics.values())


def _to_tensors(structure):
    return tf.nest.map_structure(tf.convert_to_tensor, structure)


def _averaged_prefix(workdir, prefix):
    """Where the average of the checkpoints ending at `prefix` (ckpt-N) is written."""
    return os.path.join(workdir, AVERAGED_DIR, os.path.basename(prefix))


def final_checkpoint(workdir):
    """The checkpoint with a run's final weights: `<workdir>/averaged/ckpt-N` when the
    run averaged its last checkpoints (--average_checkpoints) at its latest step N, else
    its latest checkpoint; None when `workdir/checkpoints` has none."""
    latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if latest:
        averaged = _averaged_prefix(workdir, latest)
        if tf.io.gfile.exists(averaged + ".index"):
            return averaged
    return latest


def weight_variables(learner):
    """The floating-point variables of a learner's network weights (its `meta_variables`
    or `encoder` trackables; not optimiser slots or learned update rules)."""
    return _weight_variables(learner.trackables())


def _weight_variables(trackables):
    out = []
    for key, obj in trackables.items():
        if key in _WEIGHT_TRACKABLES:
            variables = obj if isinstance(obj, (list, tuple)) else obj.variables
            out.extend(v for v in variables if v.dtype.is_floating)
    return out


def average_checkpoints(ckpt, variables, prefixes):
    """Assigns to `variables` the mean of their values over the checkpoints `prefixes`,
    each restored through `ckpt` (which must track them; the sums are float64). All else
    that `ckpt` tracks (step, optimiser slots, sampler state) keeps the values of the
    last prefix. Polyak-style tail averaging of one run's weights: the checkpoints lie in
    one basin, so the mean is a model of its own, usually less noisy than any one."""
    if not prefixes:
        raise ValueError("average_checkpoints: no checkpoint to average")
    sums = None
    for prefix in prefixes:
        ckpt.restore(prefix).assert_existing_objects_matched()
        values = [v.numpy().astype(np.float64) for v in variables]
        sums = values if sums is None else [a + b for a, b in zip(sums, values)]
    for v, total in zip(variables, sums):
        v.assign((total / len(prefixes)).astype(v.dtype.as_numpy_dtype))
    return variables


class _Checkpoints:
    """The run's checkpoint (learner trackables, step, sampler state): resume and save."""

    def __init__(self, learner, sampler, ckpt_dir, chief, strategy, keep=3):
        self.sampler, self.ckpt_dir = sampler, ckpt_dir
        self.chief, self.strategy, self.keep = chief, strategy, keep
        self.ckpt, self.step_var, self.sampler_state = make_checkpoint(learner)
        self.trackables = learner.trackables()
        self.manager = None

    def resume(self, log):
        """Restores the latest checkpoint, if any (returns its path or None), and opens
        the manager that saves the next ones."""
        # The order is important: restore variables, optimiser slots and step first, then
        # the sampler state they were saved with, so the task stream continues exactly.
        latest = restore_latest(self.ckpt, self.ckpt_dir, self.trackables)
        if latest:
            self.sampler.set_state(json.loads(self.sampler_state.numpy().decode()))
            log(f"[train] resumed from {latest} at step {int(self.step_var.numpy())}")
        self.manager = tf.train.CheckpointManager(self.ckpt, self.ckpt_dir,
                                                  max_to_keep=self.keep,
                                                  step_counter=self.step_var)
        return latest

    def average(self, count, log):
        """Leaves in the learner the mean network weights of the last `count` kept
        checkpoints and writes them to <workdir>/averaged/ckpt-N (chief); returns that
        prefix, or None when fewer than two checkpoints are kept (nothing to average)."""
        kept = self.manager.checkpoints[-count:]
        if len(kept) < 2:
            log(f"[train] --average_checkpoints={count}: only {len(kept)} checkpoint kept, "
                "nothing to average; the final weights are the last checkpoint's")
            return None
        average_checkpoints(self.ckpt, _weight_variables(self.trackables), kept)
        prefix = _averaged_prefix(os.path.dirname(self.ckpt_dir), kept[-1])
        if self.chief:
            self.ckpt.write(prefix)
        log(f"[train] final weights: the mean of {len(kept)} checkpoints "
            f"({', '.join(os.path.basename(p) for p in kept)}) -> {prefix}")
        return prefix

    def save(self):
        """Saves step, trackables and the sampler state (chief); other workers join."""
        self.sampler_state.assign(json.dumps(self.sampler.get_state()))
        if self.chief:
            self.manager.save(checkpoint_number=int(self.step_var.numpy()))
        elif self.strategy is not None:
            # Multi-worker: every worker must take part in saving (reading synchronised
            # variables may be a collective op); a non-chief writes to a private
            # temporary folder that is deleted at once (the TF multi-worker recipe).
            tmp = tempfile.mkdtemp(prefix="tfmeta_worker_ckpt_")
            try:
                self.ckpt.write(os.path.join(tmp, "ckpt"))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def _writer(workdir, name, chief):
    return (tf.summary.create_file_writer(os.path.join(workdir, name)) if chief
            else tf.summary.create_noop_writer())


def _due(done, every, num_steps):
    return done % every == 0 or done == num_steps


def _meta_step(learner, sampler, split_task, meta_batch_size, step, manager):
    """One meta-step on freshly sampled tasks: {name: float}; raises DivergenceError on a
    non-finite metric (naming the step and the last good checkpoint)."""
    support, query = split_task(sampler.sample(meta_batch_size))
    metrics = learner.meta_step(_to_tensors(support), _to_tensors(query),
                                tf.constant(step, tf.int64))
    metrics = {k: float(v) for k, v in metrics.items()}
    if not _finite(metrics):
        last = manager.latest_checkpoint or "none (no checkpoint was written yet)"
        raise DivergenceError(
            f"non-finite training metric at step {step}: {format_metrics(metrics)}. "
            f"Training stopped; the last good checkpoint is {last}. Lower the learning "
            "rates (--meta_lr, --inner_lr) or check the data.")
    return metrics


class _Progress:
    """Scalars and a progress line (steps/s over the window since the last one, ETA)
    every `log_every` steps and at the last step."""

    def __init__(self, train, writer, log):
        self.train, self.writer, self.log = train, writer, log
        self.t_window, self.window_steps = time.time(), 0

    def step_done(self, done, metrics):
        self.window_steps += 1
        train = self.train
        if not _due(done, train.log_every, train.num_steps):
            return
        now = time.time()
        rate = self.window_steps / max(now - self.t_window, 1e-9)
        eta = (train.num_steps - done) / max(rate, 1e-9)
        summaries.write_scalars(self.writer, {**metrics, "steps_per_sec": rate}, done)
        self.log(f"[train] step {done}/{train.num_steps} {format_metrics(metrics)} "
                 f"steps/s={rate:.3g} eta={eta / 60:.1f}min")
        self.t_window, self.window_steps = now, 0


def _evaluate(evaluate, done, eval_writer, log):
    eval_metrics = evaluate(done, eval_writer)
    summaries.write_scalars(eval_writer, eval_metrics, done)
    log(f"[eval] step {done} {format_metrics(eval_metrics)}")
    return eval_metrics


def run(learner, sampler, split_task, train, config_dict=None, meta_batch_size=1,
        evaluate=None, strategy=None, log=None):
    """Meta-trains `learner` for `train.num_steps` steps, resuming from `train.workdir`.

    Args:
      learner: object with `meta_step(support, query, step)` and `trackables()`.
      sampler: task sampler (`sample`, `get_state`, `set_state`).
      split_task: task → (support, query) nested structures with a leading task dim.
      train: `tfmeta.config.TrainConfig`.
      config_dict: resolved configuration written to `<workdir>/config.json`.
      meta_batch_size: tasks per meta-step.
      evaluate: optional callable(step, writer) → dict of scalars, run every
        `train.eval_every` steps and at the end (it may write image summaries).
      strategy: optional tf.distribute strategy; only its chief writes files.
      log: callable(str) for progress lines (default: print to stdout, flushed).
    Returns:
      dict with the last training metrics, the last evaluation metrics and `checkpoint`:
      the final weights' checkpoint (`<workdir>/averaged/ckpt-N` when
      `train.average_checkpoints` > 1 averaged the last ones; the learner then holds
      those mean weights).
    Raises:
      DivergenceError: a non-finite metric; the last good checkpoint is left intact.
    """
    log = log or (lambda msg: print(msg, flush=True))
    chief = is_chief(strategy)
    workdir = train.workdir
    if chief and config_dict is not None:
        write_json(workdir, "config.json", config_dict)
    checkpoints = _Checkpoints(learner, sampler, os.path.join(workdir, "checkpoints"),
                               chief, strategy, keep=max(3, train.average_checkpoints))
    latest = checkpoints.resume(log)
    writer, eval_writer = _writer(workdir, "train", chief), _writer(workdir, "eval", chief)

    start = int(checkpoints.step_var.numpy())
    metrics, eval_metrics = {}, {}
    t_start, progress = time.time(), _Progress(train, writer, log)
    for step in range(start, train.num_steps):
        metrics = _meta_step(learner, sampler, split_task, meta_batch_size, step,
                             checkpoints.manager)
        checkpoints.step_var.assign(step + 1)
        done = step + 1
        progress.step_done(done, metrics)
        if evaluate is not None and _due(done, train.eval_every, train.num_steps):
            eval_metrics = _evaluate(evaluate, done, eval_writer, log)
        if _due(done, train.checkpoint_every, train.num_steps):
            checkpoints.save()
    if start >= train.num_steps:
        log(f"[train] nothing to do: checkpoint is at step {start} >= --num_steps")
        if not latest:   # --num_steps=0: keep the initialisation (an untrained baseline)
            checkpoints.save()
    writer.flush()
    eval_writer.flush()
    log(f"[train] finished {train.num_steps - start} steps in {time.time() - t_start:.1f}s")
    final = checkpoints.manager.latest_checkpoint
    if train.average_checkpoints > 1:   # the loop's evaluations saw the raw weights
        final = checkpoints.average(train.average_checkpoints, log) or final
    result = {"train": metrics, "eval": eval_metrics, "checkpoint": final}
    if chief:
        write_json(workdir, "results.json", result)
    return result
