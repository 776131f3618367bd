"""Evaluation of few-shot generators: domain Fréchet distance, diversity, PSNR/SSIM,
the augmentation-accuracy protocol, and the baselines every generator is compared with.

Importing this package imports numpy/scipy only; TensorFlow is imported by the
functions that need it (feature extractor, classifier, affine jitter). Generator-backed
methods (meta-learned checkpoints, GAN from scratch, pretrained + fine-tuned) are in
`tfmeta.eval.generators`, which imports TensorFlow: import it explicitly.
"""

from tfmeta.eval.augmentation import (augmentation_accuracy, confidence_interval,
                                      select_characters, to_markdown)
from tfmeta.eval.baselines import (BASELINES, make_traditional_augmentation,
                                   no_augmentation, sample_metrics, save_sample_figure,
                                   traditional_augmentation, with_jitter)
from tfmeta.eval.diversity import intra_class_diversity, mean_pairwise_distance, pixel_diversity
from tfmeta.eval.features import (FeatureExtractor, FeatureExtractorConfig,
                                  InceptionFeatureExtractor, get_feature_extractor,
                                  images_to_uint8, train_feature_extractor)
from tfmeta.eval.frechet import frechet_distance, frechet_distance_from_features
from tfmeta.eval.image_quality import nearest_support_psnr_ssim, psnr, ssim

__all__ = [
    "augmentation_accuracy", "confidence_interval", "select_characters", "to_markdown",
    "BASELINES", "make_traditional_augmentation", "no_augmentation", "sample_metrics",
    "save_sample_figure", "traditional_augmentation", "with_jitter",
    "intra_class_diversity", "mean_pairwise_distance", "pixel_diversity",
    "FeatureExtractor", "FeatureExtractorConfig", "InceptionFeatureExtractor",
    "get_feature_extractor", "images_to_uint8", "train_feature_extractor",
    "frechet_distance", "frechet_distance_from_features",
    "nearest_support_psnr_ssim", "psnr", "ssim",
]
