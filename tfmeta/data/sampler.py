"""Seeded few-shot task samplers: N-way K-shot classification tasks (Vinyals et al.
2016, Finn et al. 2017) and one-class generation tasks (FIGR, Clouâtre & Demers 2019).

Every draw is without replacement: the N classes of a task are distinct, and the
K + Q images of each class are distinct and split explicitly into K support and Q
query images, so support and query never share an image. A batch is drawn with a
fixed number of uniform variates (sort keys) and one fancy-index gather, no per-image
Python. That fixed count makes the stream seekable: `advance(n, B)` jumps the
generator exactly as if n batches had been drawn (PCG64 advance, O(log n)).

Resume recipe with `dataset()` (which prefetches, so the sampler cannot know what was
consumed): `dataset()` iterates a private copy starting at the sampler's state and
never moves the sampler. Save `get_state()` taken before building the dataset together
with the number of batches consumed `n`; on resume `set_state(saved); advance(n, B)`
and build the dataset again. With `sample()`, `get_state()` is exact at any time.
"""

import math
from typing import NamedTuple

import numpy as np

from tfmeta.data.preprocess import check_value_range, scale_images
from tfmeta.data.types import ClassImages
from tfmeta.errors import ConfigError, DataError

__all__ = ["Task", "GenerationTask", "TaskSampler", "GenerationTaskSampler"]

_STATE_VERSION = 1


class Task(NamedTuple):
    """A meta-batch of B N-way classification tasks; support/query class-major.

    support_images: float32 `[B, N*K, H, W, C]`; support_labels: int32 `[B, N*K]`
    (`repeat(arange(N), K)`); query_images: float32 `[B, N*Q, H, W, C]`;
    query_labels: int32 `[B, N*Q]` (`repeat(arange(N), Q)`). Label i is the task's
    i-th class; classes are in random order, so labels carry no class identity.
    """
    support_images: object
    support_labels: object
    query_images: object
    query_labels: object


class GenerationTask(NamedTuple):
    """A meta-batch of B one-class generation tasks.

    support_images: float32 `[B, K, H, W, C]`; query_images: float32 `[B, Q, H, W, C]`
    (other drawings of the same class); class_ids: int32 `[B]` (class in the source
    `ClassImages`).
    """
    support_images: object
    query_images: object
    class_ids: object


def _positive(value, flag):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{flag} must be a positive integer; got {value!r}")
    return int(value)


class _Sampler:
    """Shared machinery: RNG ownership, state, image draws, tf.data wrapping."""

    def __init__(self, class_images, k_shot, k_query, value_range, seed):
        if not isinstance(class_images, ClassImages):
            raise DataError("samplers take a tfmeta.data.ClassImages (see "
                            f"load_class_images); got {type(class_images).__name__}")
        check_value_range(value_range)
        self.k_shot = _positive(k_shot, "--k_shot")
        self.k_query = _positive(k_query, "--k_query")
        self.class_images = class_images
        self.value_range = value_range
        self._images = class_images.images
        self._counts = class_images.counts
        self._offsets = class_images.offsets
        self._max_count = int(self._counts.max())
        smallest = int(np.argmin(self._counts))
        if self.k_shot + self.k_query > self._counts[smallest]:
            raise ConfigError(
                f"--k_shot + --k_query = {self.k_shot} + {self.k_query} exceeds the "
                f"{self._counts[smallest]} images of the smallest class "
                f"({class_images.class_names[smallest]!r}); support and query must be "
                "disjoint, so lower --k_shot or --k_query")
        self._rng = np.random.Generator(np.random.PCG64(seed))

    @property
    def image_shape(self):
        return self.class_images.image_shape

    @property
    def num_classes(self):
        return self.class_images.num_classes

    # --- state -------------------------------------------------------------------
    def get_state(self):
        """JSON-serialisable dict: the PCG64 bit-generator state (ints, str)."""
        return {"version": _STATE_VERSION, "sampler": type(self).__name__,
                "bit_generator": self._rng.bit_generator.state}

    def set_state(self, state):
        """Restores `get_state()` output; the stream continues exactly from there."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION or \
                state.get("sampler") != type(self).__name__:
            raise ConfigError(f"not a {type(self).__name__} state (version "
                              f"{_STATE_VERSION}): {str(state)[:200]}")
        self._rng.bit_generator.state = state["bit_generator"]

    def _draws_per_batch(self, meta_batch_size):
        raise NotImplementedError

    def advance(self, num_batches, meta_batch_size):
        """Moves the state exactly as if `num_batches` batches of `meta_batch_size`
        had been sampled (O(log n); used to resume a `dataset()` stream)."""
        if num_batches < 0:
            raise ConfigError(f"num_batches must be >= 0; got {num_batches}")
        meta_batch_size = _positive(meta_batch_size, "--meta_batch_size")
        self._rng.bit_generator.advance(
            int(num_batches) * self._draws_per_batch(meta_batch_size))

    # --- drawing ----------------------------------------------------------------
    def _draw_positions(self, rng, classes, num):
        """int64 `[R, num]` distinct image indices of each class in `classes` `[R]`,
        in random order. Uses exactly `R * max_count` uniform draws."""
        keys = rng.random((classes.shape[0], self._max_count))
        counts = self._counts[classes]
        if np.any(counts < self._max_count):  # ragged classes: mask absent images
            keys[np.arange(self._max_count)[None, :] >= counts[:, None]] = 2.0
        # The `num` smallest keys, ordered by key: a uniform random ordered subset.
        pos = np.argpartition(keys, num - 1, axis=1)[:, :num]
        pos = np.take_along_axis(
            pos, np.argsort(np.take_along_axis(keys, pos, axis=1), axis=1), axis=1)
        return self._offsets[classes][:, None] + pos

    def _scale(self, images):
        return scale_images(images, self.value_range)

    # --- tf.data ----------------------------------------------------------------
    def _uint8_batch(self, rng, meta_batch_size):
        raise NotImplementedError

    def _signature(self, meta_batch_size):
        raise NotImplementedError

    def dataset(self, meta_batch_size, prefetch=2):
        """Infinite `tf.data.Dataset` of batches (tensors, same structure and values as
        `sample()`): the stream `sample()` would produce from the current state.

        Iterates a private copy of the RNG: the sampler's own state does not move
        (see the module docstring for exact resume). Images travel as uint8 and are
        scaled inside the pipeline.
        """
        import tensorflow as tf

        meta_batch_size = _positive(meta_batch_size, "--meta_batch_size")
        start = self._rng.bit_generator.state
        signature = self._signature(meta_batch_size)

        def batches():
            rng = np.random.Generator(np.random.PCG64(0))
            rng.bit_generator.state = start
            while True:
                yield self._uint8_batch(rng, meta_batch_size)

        uint8_signature = type(signature)(*[
            tf.TensorSpec(s.shape, tf.uint8 if s.dtype == tf.float32 else s.dtype)
            for s in signature])
        ds = tf.data.Dataset.from_generator(batches, output_signature=uint8_signature)
        # tf.data hands a NamedTuple element to the map function as one argument.
        ds = ds.map(lambda batch: type(batch)(*[
            self._scale(f) if f.dtype == tf.uint8 else f for f in batch]))
        return ds.prefetch(prefetch) if prefetch else ds

    def sample(self, meta_batch_size):
        """A batch (`Task` / `GenerationTask`) of numpy arrays: float32 images scaled
        to `value_range`, int32 labels / class ids."""
        meta_batch_size = _positive(meta_batch_size, "--meta_batch_size")
        batch = self._uint8_batch(self._rng, meta_batch_size)
        return type(batch)(*[self._scale(f) if f.dtype == np.uint8 else f for f in batch])


class TaskSampler(_Sampler):
    """N-way K-shot classification tasks with Q query images per class.

    Args:
      class_images: `ClassImages` (any H, W; 1 or 3 channels).
      n_way, k_shot, k_query: positive ints; `n_way <= num_classes` and
        `k_shot + k_query <=` the smallest class size.
      value_range: "classifier" ([0, 1]) or "gan" ([-1, 1]).
      seed: seed of the sampler's own `np.random.Generator` (PCG64).
    """

    def __init__(self, class_images, n_way, k_shot, k_query, value_range="classifier",
                 seed=0):
        self.n_way = _positive(n_way, "--n_way")
        super().__init__(class_images, k_shot, k_query, value_range, seed)
        if self.n_way > self.num_classes:
            raise ConfigError(f"--n_way={self.n_way} exceeds the {self.num_classes} "
                              "classes of the split; lower --n_way")
        k, q, n = self.k_shot, self.k_query, self.n_way
        self._support_labels = np.repeat(np.arange(n, dtype=np.int32), k)
        self._query_labels = np.repeat(np.arange(n, dtype=np.int32), q)

    def _draws_per_batch(self, meta_batch_size):
        return meta_batch_size * (self.num_classes + self.n_way * self._max_count)

    def _indices(self, rng, meta_batch_size):
        b, n, k, q = meta_batch_size, self.n_way, self.k_shot, self.k_query
        keys = rng.random((b, self.num_classes))
        classes = np.argpartition(keys, n - 1, axis=1)[:, :n]
        classes = np.take_along_axis(
            classes, np.argsort(np.take_along_axis(keys, classes, axis=1), axis=1), axis=1)
        pos = self._draw_positions(rng, classes.reshape(-1), k + q).reshape(b, n, k + q)
        return (classes.astype(np.int32), pos[:, :, :k].reshape(b, n * k),
                pos[:, :, k:].reshape(b, n * q))

    def sample_indices(self, meta_batch_size):
        """`(class_ids [B, N] int32, support_index [B, N*K], query_index [B, N*Q])`:
        indices into `class_images.images`; consumes the stream like `sample()`."""
        return self._indices(self._rng, _positive(meta_batch_size, "--meta_batch_size"))

    def _uint8_batch(self, rng, meta_batch_size):
        _, support, query = self._indices(rng, meta_batch_size)
        b = meta_batch_size
        return Task(self._images[support], np.tile(self._support_labels, (b, 1)),
                    self._images[query], np.tile(self._query_labels, (b, 1)))

    def _signature(self, meta_batch_size):
        import tensorflow as tf

        b, n, shape = meta_batch_size, self.n_way, self.image_shape
        return Task(tf.TensorSpec((b, n * self.k_shot) + shape, tf.float32),
                    tf.TensorSpec((b, n * self.k_shot), tf.int32),
                    tf.TensorSpec((b, n * self.k_query) + shape, tf.float32),
                    tf.TensorSpec((b, n * self.k_query), tf.int32))


class GenerationTaskSampler(_Sampler):
    """One-class tasks: K support and Q query drawings of one class each.

    Within a meta-batch the classes are distinct while `B <= num_classes` (after that
    each further block of `num_classes` tasks is a fresh permutation).

    Args: as `TaskSampler` without `n_way`; `value_range` defaults to "gan".
    """

    def __init__(self, class_images, k_shot, k_query, value_range="gan", seed=0):
        super().__init__(class_images, k_shot, k_query, value_range, seed)

    def _draws_per_batch(self, meta_batch_size):
        rounds = math.ceil(meta_batch_size / self.num_classes)
        return rounds * self.num_classes + meta_batch_size * self._max_count

    def _indices(self, rng, meta_batch_size):
        b, k = meta_batch_size, self.k_shot
        rounds = math.ceil(b / self.num_classes)
        classes = np.argsort(rng.random((rounds, self.num_classes)), axis=1).reshape(-1)[:b]
        pos = self._draw_positions(rng, classes, k + self.k_query)
        return classes.astype(np.int32), pos[:, :k], pos[:, k:]

    def sample_indices(self, meta_batch_size):
        """`(class_ids [B] int32, support_index [B, K], query_index [B, Q])` into
        `class_images.images`; consumes the stream like `sample()`."""
        return self._indices(self._rng, _positive(meta_batch_size, "--meta_batch_size"))

    def _uint8_batch(self, rng, meta_batch_size):
        classes, support, query = self._indices(rng, meta_batch_size)
        return GenerationTask(self._images[support], self._images[query], classes)

    def _signature(self, meta_batch_size):
        import tensorflow as tf

        b, shape = meta_batch_size, self.image_shape
        return GenerationTask(tf.TensorSpec((b, self.k_shot) + shape, tf.float32),
                              tf.TensorSpec((b, self.k_query) + shape, tf.float32),
                              tf.TensorSpec((b,), tf.int32))
