"""Tiny synthetic data shared by tests (and the worker scripts tests launch)."""

import numpy as np

from tfmeta.data import ClassImages


def fake_classes(num_classes=6, per_class=20, seed=0):
    """ClassImages: each class a random 28x28 stroke pattern plus per-image noise."""
    rng = np.random.default_rng(seed)
    protos = rng.random((num_classes, 28, 28, 1)) > 0.85
    noise = rng.random((num_classes, per_class, 28, 28, 1)) > 0.97
    images = (np.logical_xor(protos[:, None], noise) * 255).astype(np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    return ClassImages(images.reshape(-1, 28, 28, 1), labels,
                       [f"fake/char{i:02d}" for i in range(num_classes)])


def write_split_lists(folder, **lists):
    """Writes `<name>.txt` split lists (one line per item) into `folder`; returns it."""
    import os
    os.makedirs(folder, exist_ok=True)
    for name, lines in lists.items():
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write("".join(line + "\n" for line in lines))
    return str(folder)
