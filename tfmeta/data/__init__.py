"""Class-indexed image sources (Omniglot, MNIST, a folder of class folders, any prepared
TFDS image-classification dataset: the table `tfmeta.data.sources.SOURCES`, see
docs/DATASETS.md), class splits (`tfmeta.data.splits`: published lists such as the
Vinyals split, plain class lists, fractions), the decoded-array cache, pixel
preprocessing (the one home of pixel-range conversion: `scale_images` uint8 → float,
`unscale_images` float → uint8, `VALUE_RANGES`) and seeded few-shot task samplers.

Importing this package does not import TensorFlow; `dataset()` methods, tensor input to
`scale_images` / `unscale_images` and the TFDS sources do.
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
