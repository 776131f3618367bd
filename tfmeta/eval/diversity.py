"""Diversity of generated samples: mean pairwise distance among samples of one class.

A few-shot generator that copies its support set, or collapses to one drawing, scores
low; one that draws varied plausible characters scores high. Diversity alone is not
quality (noise is diverse): read it next to the Fréchet distance and class consistency.
This is the feature-space analogue of the LPIPS-based intra-class diversity used in
few-shot generation papers (e.g. Hong et al. 2020, "MatchingGAN", arXiv:2003.03497),
computed here without LPIPS (no pretrained perceptual network offline).
"""

import numpy as np

from tfmeta.data.preprocess import scale_images
from tfmeta.errors import DataError

__all__ = ["intra_class_diversity", "pixel_diversity", "mean_pairwise_distance"]


def mean_pairwise_distance(vectors):
    """Mean Euclidean distance over the N(N-1)/2 distinct pairs of float `[N, D]`.

    Returns a Python float; 0.0 for N < 2.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise DataError(f"vectors must be [N, D]; got shape {vectors.shape}")
    count = vectors.shape[0]
    if count < 2:
        return 0.0
    squared_norms = np.sum(vectors * vectors, axis=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * vectors @ vectors.T
    # Round-off can make the Gram-matrix form slightly negative; distances are >= 0.
    distances = np.sqrt(np.maximum(squared, 0.0))
    upper = np.triu_indices(count, k=1)
    return float(distances[upper].mean())


def intra_class_diversity(features, labels, per_class=False):
    """Mean over classes of the mean pairwise feature distance within each class.

    Args:
      features: float `[N, D]` (e.g. `FeatureExtractor.features` of generated samples).
      labels: int `[N]` class (or support set) each sample was generated for.
      per_class: also return `{label: diversity}`.

    Returns:
      Python float (classes with fewer than 2 samples are skipped), or
      `(float, dict)` when `per_class`.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise DataError(f"features must be [N, D] and labels [N]; got {features.shape} and "
                        f"{labels.shape}")
    values = {}
    for label in np.unique(labels):
        members = features[labels == label]
        if members.shape[0] >= 2:
            values[int(label)] = mean_pairwise_distance(members)
    if not values:
        raise DataError("intra_class_diversity needs some class with >= 2 samples")
    mean = float(np.mean(list(values.values())))
    return (mean, values) if per_class else mean


def pixel_diversity(images, labels, per_class=False):
    """`intra_class_diversity` in pixel space, per-pixel RMS units.

    images: uint8 `[N, H, W, C]` (scaled to [0, 1]) or float in [0, 1]. The Euclidean
    distance is divided by sqrt(H*W*C), so 1.0 means "every pixel flipped".
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"images must be [N, H, W, C]; got shape {images.shape}")
    if images.dtype == np.uint8:
        images = scale_images(images, "classifier", np.float64)
    flat = images.reshape(images.shape[0], -1).astype(np.float64)
    flat /= np.sqrt(flat.shape[1])
    return intra_class_diversity(flat, labels, per_class=per_class)
