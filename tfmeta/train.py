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

import tensorflow as tf

from tfmeta import summaries
from tfmeta.errors import DivergenceError

__all__ = ["run", "make_checkpoint", "restore_latest", "write_json", "is_chief",
           "format_metrics"]


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


def restore_latest(ckpt, directory):
    """Restores the latest checkpoint in `directory`; returns its path or None."""
    latest = tf.train.latest_checkpoint(directory)
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
    return latest


def format_metrics(metrics):
    return " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))


def _finite(metrics):
    return all(math.isfinite(float(v)) for v in metrics.values())


def _to_tensors(structure):
    return tf.nest.map_structure(tf.convert_to_tensor, structure)


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
      dict with the last training metrics and the last evaluation metrics.
    Raises:
      DivergenceError: a non-finite metric; the last good checkpoint is left intact.
    """
    log = log or (lambda msg: print(msg, flush=True))
    chief = is_chief(strategy)
    workdir = train.workdir
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if chief and config_dict is not None:
        write_json(workdir, "config.json", config_dict)

    ckpt, step_var, sampler_state = make_checkpoint(learner)
    # The order is important: restore variables, optimiser slots and step first, then
    # the sampler state they were saved with, so the task stream continues exactly.
    latest = restore_latest(ckpt, ckpt_dir)
    if latest:
        sampler.set_state(json.loads(sampler_state.numpy().decode()))
        log(f"[train] resumed from {latest} at step {int(step_var.numpy())}")
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=3,
                                         step_counter=step_var)
    writer = (tf.summary.create_file_writer(os.path.join(workdir, "train")) if chief
              else tf.summary.create_noop_writer())
    eval_writer = (tf.summary.create_file_writer(os.path.join(workdir, "eval")) if chief
                   else tf.summary.create_noop_writer())

    def save():
        sampler_state.assign(json.dumps(sampler.get_state()))
        if chief:
            manager.save(checkpoint_number=int(step_var.numpy()))
        elif strategy is not None:
            # Multi-worker: every worker must take part in saving (reading synchronised
            # variables may be a collective op); a non-chief writes to a private
            # temporary folder that is deleted at once (the TF multi-worker recipe).
            tmp = tempfile.mkdtemp(prefix="tfmeta_worker_ckpt_")
            try:
                ckpt.write(os.path.join(tmp, "ckpt"))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    start = int(step_var.numpy())
    metrics, eval_metrics = {}, {}
    t_start, t_window, window_steps = time.time(), time.time(), 0
    for step in range(start, train.num_steps):
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
        step_var.assign(step + 1)
        window_steps += 1
        done = step + 1
        if done % train.log_every == 0 or done == train.num_steps:
            now = time.time()
            rate = window_steps / max(now - t_window, 1e-9)
            eta = (train.num_steps - done) / max(rate, 1e-9)
            summaries.write_scalars(writer, {**metrics, "steps_per_sec": rate}, done)
            log(f"[train] step {done}/{train.num_steps} {format_metrics(metrics)} "
                f"steps/s={rate:.3g} eta={eta / 60:.1f}min")
            t_window, window_steps = now, 0
        if evaluate is not None and (done % train.eval_every == 0 or done == train.num_steps):
            eval_metrics = evaluate(done, eval_writer)
            summaries.write_scalars(eval_writer, eval_metrics, done)
            log(f"[eval] step {done} {format_metrics(eval_metrics)}")
        if done % train.checkpoint_every == 0 or done == train.num_steps:
            save()
    if start >= train.num_steps:
        log(f"[train] nothing to do: checkpoint is at step {start} >= --num_steps")
        if not latest:   # --num_steps=0: keep the initialisation (an untrained baseline)
            save()
    writer.flush()
    eval_writer.flush()
    log(f"[train] finished {train.num_steps - start} steps in {time.time() - t_start:.1f}s")
    result = {"train": metrics, "eval": eval_metrics, "checkpoint": manager.latest_checkpoint}
    if chief:
        write_json(workdir, "results.json", result)
    return result

