"""Class-indexed image sources (Omniglot, MNIST, TFDS fallback), published class-split
lists (`tfmeta.data.splits`, e.g. the Vinyals split), the decoded-array cache, pixel
preprocessing (the one home of pixel-range conversion: `scale_images` uint8 → float,
`unscale_images` float → uint8, `VALUE_RANGES`) and seeded few-shot task samplers.

Importing this package does not import TensorFlow; `dataset()` methods, tensor input to
`scale_images` / `unscale_images` and the TFDS fallback do.
"""

from tfmeta.data.class_images import ClassImages, load_class_images
from tfmeta.data.preprocess import VALUE_RANGES, scale_images, unscale_images
from tfmeta.data.sampler import GenerationTask, GenerationTaskSampler, Task, TaskSampler

__all__ = [
    "ClassImages",
    "load_class_images",
    "VALUE_RANGES",
    "scale_images",
    "unscale_images",
    "Task",
    "GenerationTask",
    "TaskSampler",
    "GenerationTaskSampler",
]
