"""Generators that need no trained model, and the harness pieces that look at samples.

A *generate_fn* is the one interface every method (baselines here; the GAN / Reptile /
MAML / meta-VAE generators wired in by trainers) offers to the evaluation harness:

    generate_fn(support_images uint8 [K, H, W, C], num: int, seed: int)
        -> uint8 [G, H, W, C] with G <= num (0 = "adds nothing")

It must be a pure function of its arguments (seeded), so harness runs repeat exactly.
Pass several as a dict {method_name: generate_fn} to
`tfmeta.eval.augmentation.augmentation_accuracy`, `sample_metrics` and
`save_sample_figure`; `tfmeta.eval.augmentation.to_markdown` makes one table of all.

Baselines:
  * `no_augmentation`: returns no images (the augmentation protocol with G = 0).
  * `traditional_augmentation`: random affine jitter of randomly chosen support images
    (shift +-2 px, rotation +-10 degrees, isotropic scale 0.9-1.1, optional elastic
    distortion, Simard et al. 2003), the bar a generator must clear (DESIGN.md §5).
"""

import functools

import numpy as np
import scipy.ndimage

from tfmeta.data.preprocess import scale_images, unscale_images
from tfmeta.errors import ConfigError, DataError

__all__ = ["no_augmentation", "traditional_augmentation", "make_traditional_augmentation",
           "with_jitter", "BASELINES", "sample_metrics", "save_sample_figure",
           "nearest_support_distance"]


def _check_support(support_images):
    support_images = np.asarray(support_images)
    if support_images.dtype != np.uint8 or support_images.ndim != 4 or \
            support_images.shape[0] < 1:
        raise DataError(f"support_images must be uint8 [K >= 1, H, W, C]; got "
                        f"{support_images.dtype} {support_images.shape}")
    return support_images


def no_augmentation(support_images, num, seed):
    """Adds nothing: uint8 `[0, H, W, C]` whatever `num` and `seed`."""
    support_images = _check_support(support_images)
    return np.zeros((0,) + support_images.shape[1:], np.uint8)


def affine_transforms(rng, num, height, width, max_shift, max_rotation_deg, scale_range):
    """`[num, 8]` projective transforms mapping *output* pixels to *input* pixels
    (the convention of keras.ops.image.affine_transform) for a rotation by theta and a
    scale s about the image centre followed by a shift t."""
    theta = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, num))
    scale = rng.uniform(scale_range[0], scale_range[1], num)
    shift_x, shift_y = rng.uniform(-max_shift, max_shift, (2, num))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # Inverse of p_out = s R(theta) (p_in - c) + c + t:  p_in = R(-theta)/s (p_out - c - t) + c.
    a0, a1 = np.cos(theta) / scale, np.sin(theta) / scale
    b0, b1 = -np.sin(theta) / scale, np.cos(theta) / scale
    a2 = cx - a0 * (cx + shift_x) - a1 * (cy + shift_y)
    b2 = cy - b0 * (cx + shift_x) - b1 * (cy + shift_y)
    zeros = np.zeros(num)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype(np.float32)


def _elastic(images, rng, alpha, sigma):
    """Simard et al. 2003 elastic distortion of float `[N, H, W, C]`: a random field
    smoothed by a Gaussian (sigma px) and scaled to at most ~alpha px displacement."""
    num, height, width, channels = images.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    out = np.empty_like(images)
    for i in range(num):
        dy, dx = (scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, (height, width)), sigma)
                  for _ in range(2))
        norm = max(np.abs(dx).max(), np.abs(dy).max(), 1e-12)
        coords = [rows + alpha * dy / norm, cols + alpha * dx / norm]
        for c in range(channels):
            out[i, :, :, c] = scipy.ndimage.map_coordinates(images[i, :, :, c], coords,
                                                            order=1, mode="constant")
    return out


def traditional_augmentation(support_images, num, seed, **jitter):
    """Random affine jitter of randomly chosen support images (a generate_fn).

    Args:
      support_images: uint8 `[K, H, W, C]`.
      num: number of images to make; seed: int, the only source of randomness
        (`numpy.random.default_rng(seed)` picks sources and parameters).
      jitter: keywords (defaults in brackets):
      max_shift [2.0]: px, uniform in [-max_shift, max_shift] per axis.
      max_rotation_deg [10.0]: uniform rotation in degrees about the centre.
      scale_range [(0.9, 1.1)]: uniform isotropic scale about the centre.
      elastic_alpha [0.0]: max elastic displacement in px (0 = off); elastic_sigma
        [3.0]: smoothing.
      match_ink [False]: give each result its source drawing's ink values, rank for rank
        (`tfmeta.models.warp.match_intensities`), undoing the softening of bilinear
        resampling (the warp generator's rendering, applied to jitter).

    Returns: uint8 `[num, H, W, C]` (bilinear resampling, zero = background fill).
    """
    support_images = _check_support(support_images)
    if num < 0:
        raise ConfigError(f"num must be >= 0; got {num}")
    if num == 0:
        return np.zeros((0,) + support_images.shape[1:], np.uint8)
    rng = np.random.default_rng(seed)
    sources = support_images[rng.integers(0, support_images.shape[0], num)]
    return _jitter(sources, rng, **jitter)


def _jitter(sources, rng, *, max_shift=2.0, max_rotation_deg=10.0, scale_range=(0.9, 1.1),
            elastic_alpha=0.0, elastic_sigma=3.0, match_ink=False):
    """Each of uint8 `sources [N, H, W, C]` jittered once, in order (parameters from `rng`;
    see `traditional_augmentation`)."""
    import keras

    num, height, width, _ = sources.shape
    transforms = affine_transforms(rng, num, height, width, max_shift,
                                    max_rotation_deg, scale_range)
    images = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        sources.astype(np.float32), transforms, interpolation="bilinear",
        fill_mode="constant", fill_value=0.0, data_format="channels_last"))
    if elastic_alpha > 0.0:
        images = _elastic(images, rng, elastic_alpha, elastic_sigma)
    if match_ink:
        from tfmeta.models.warp import match_intensities
        images = match_intensities(images, sources.astype(np.float32)).numpy()
    return unscale_images(images, "pixels")


def make_traditional_augmentation(**params):
    """`traditional_augmentation` with other jitter parameters, as a generate_fn."""
    return functools.partial(traditional_augmentation, **params)


def _jitter_after(generate_fn, support_images, num, seed, **jitter):
    generated = np.asarray(generate_fn(support_images, num, seed))
    if generated.shape[0] == 0:
        return generated
    generated = _check_support(generated)   # uint8 [G, H, W, C], as the contract says
    # Every generated image jittered exactly once (not sources drawn with replacement,
    # which kept ~65% of ten distinct drawings).
    return _jitter(generated, np.random.default_rng(_sample_seed(seed, 1)), **jitter)


def with_jitter(generate_fn, **params):
    """generate_fn + traditional augmentation: each generated image is then affine-jittered
    (`traditional_augmentation` applied to the generator's samples, seeded by `seed`),
    so both kinds of variation are in every image and the image count is unchanged."""
    return functools.partial(_jitter_after, generate_fn, **params)


FIGURE_LABEL_WIDTH = 170  # px of row labels in save_sample_figure

BASELINES = {"no_augmentation": no_augmentation,
             "traditional_augmentation": traditional_augmentation}


def _sample_seed(seed, index):
    """The generate_fn seed of episode `index` (same for every method)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _episodes(class_images, num_characters, k_shot, selection_seed, seed):
    """Fixed (character, support, held-out real) triples shared by every method."""
    from tfmeta.eval.augmentation import select_characters

    characters = select_characters(class_images, num_characters, selection_seed, k_shot + 1)
    rng = np.random.default_rng([seed, k_shot])
    episodes = []
    for c in characters:
        images = class_images.images_of(c)
        order = rng.permutation(images.shape[0])
        episodes.append((int(c), images[order[:k_shot]], images[order[k_shot:]]))
    return episodes


COPY_MAX_SHIFT = 2   # px: a drawing moved by up to this much still counts as a copy


def _shifted(images, dy, dx):
    """images [N, H, W] moved by (dy, dx) integer pixels, zero fill."""
    out = np.zeros_like(images)
    height, width = images.shape[1:]
    out[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        images[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def nearest_support_distance(images, support, max_shift=COPY_MAX_SHIFT):
    """Pixel L2 distance (ink in [0, 1]) of each image to its nearest support, float64 [N],
    minimised over integer translations of the support by up to `max_shift` px (so a
    moved copy is still a copy). images uint8 `[N, H, W, C]`, support uint8 `[K, H, W, C]`."""
    x = scale_images(np.asarray(images), "classifier", np.float64).reshape(len(images), -1)
    channels = np.asarray(support).shape[-1]
    s = scale_images(np.asarray(support), "classifier", np.float64)
    best = np.full(len(x), np.inf)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            moved = np.stack([_shifted(s[..., c], dy, dx) for c in range(channels)], -1)
            moved = moved.reshape(len(s), -1)
            squared = ((x * x).sum(1)[:, None] + (moved * moved).sum(1)[None]
                       - 2.0 * x @ moved.T)
            best = np.minimum(best, np.sqrt(np.maximum(squared, 0.0)).min(1))
    return best


def _copy_thresholds(episodes):
    """Per character: the copy threshold (the smallest nearest-support distance among the
    *reference* half of its held-out real drawings, even positions) and, for the *probe*
    half (odd positions), whether each drawing is closer than it (real drawings' own
    copies)."""
    thresholds, probes = [], []
    for _, support, held in episodes:
        distances = nearest_support_distance(held, support)
        thresholds.append(distances[0::2].min())
        probes.append(distances[1::2] <= thresholds[-1])
    return np.asarray(thresholds), probes


def sample_metrics(class_images, generators, extractor, *, split, num_characters=50,
                   k_shot=5, num_samples=20, selection_seed=0, seed=0):
    """Sample-level metrics of each method on fixed unseen characters.

    For each of `num_characters` evaluation characters (chosen as in the augmentation
    protocol), K = k_shot real drawings are the support and the other real drawings are
    held out (the reference). Each method draws `num_samples` per character. Reported
    per method:
      frechet: Fréchet distance (domain features of `extractor`) between all samples
        and all held-out real drawings of these characters (lower is better);
      diversity: mean intra-character pairwise feature distance of the samples;
      diversity_ratio: the same statistic on the first m samples per character divided
        by its value on the first m held-out real drawings, m = min(num_samples,
        held-out count): 1 = as varied as real drawings of the character;
      class_consistency: share of samples whose nearest held-out-real centroid (in
        feature space, among these characters) is their own character;
      copy_rate: share of samples at least as close to a support (pixel L2, minimised
        over translations of the support by up to COPY_MAX_SHIFT px) as every drawing
        of a reference half of the character's held-out real drawings; the other half of
        the held-out drawings gives real drawings' own rate under the same rule
        (`real_heldout.copy_rate`, ~1/(reference size + 1)); read the two together;
      nearest_support_psnr / _ssim / fraction_copies: closeness to the support
        (fraction_copies counts exact copies; see image_quality.nearest_support_psnr_ssim).
    "real" gives the same numbers for the real support drawings, for scale (its Fréchet
    distance uses only num_characters * k_shot images, which biases it upwards);
    "real_heldout" the diversity (m per character) and copy rate of held-out drawings.
    Returns a JSON-able dict {"protocol", "methods": {name: {...} or None}, "real",
    "real_heldout"}.
    """
    from tfmeta.eval.augmentation import EVAL_SPLITS
    from tfmeta.eval.diversity import intra_class_diversity
    from tfmeta.eval.frechet import frechet_distance_from_features
    from tfmeta.eval.image_quality import nearest_support_psnr_ssim

    if split not in EVAL_SPLITS:
        raise ConfigError(f"sample_metrics evaluates unseen characters: split must be one "
                          f"of {EVAL_SPLITS}; got {split!r}")
    episodes = _episodes(class_images, num_characters, k_shot, selection_seed, seed)
    held_count = min(held.shape[0] for _, _, held in episodes)
    if held_count < 3:
        raise ConfigError(f"sample_metrics needs >= 3 held-out drawings per character "
                          f"(k_shot={k_shot} leaves {held_count})")
    per_character = min(num_samples, held_count)
    real = np.concatenate([held for _, _, held in episodes])
    real_labels = np.concatenate([np.full(h.shape[0], i) for i, (_, _, h) in
                                  enumerate(episodes)])
    real_features = extractor.features(real)
    centroids = np.stack([real_features[real_labels == i].mean(0)
                          for i in range(len(episodes))])
    first_m = np.concatenate([np.flatnonzero(real_labels == i)[:per_character]
                              for i in range(len(episodes))])
    real_diversity = intra_class_diversity(real_features[first_m], real_labels[first_m])
    thresholds, probes = _copy_thresholds(episodes)

    def consistency(features, labels):
        distances = ((features[:, None, :] - centroids[None]) ** 2).sum(-1)
        return float(np.mean(np.argmin(distances, 1) == labels))

    support = np.concatenate([s for _, s, _ in episodes])
    support_labels = np.repeat(np.arange(len(episodes)), k_shot)
    support_features = extractor.features(support)
    results = {}
    for name, generate_fn in generators.items():
        samples, labels, closeness, copies = [], [], [], []
        for i, (_, support_images, _) in enumerate(episodes):
            out = np.asarray(generate_fn(support_images, num_samples,
                                         _sample_seed(seed, i)))
            if out.shape[0]:
                samples.append(out)
                labels.append(np.full(out.shape[0], i))
                closeness.append(nearest_support_psnr_ssim(out, support_images))
                copies.append(nearest_support_distance(out, support_images) <= thresholds[i])
        if not samples:
            results[name] = None
            continue
        # The first m samples of each character (equal counts for the diversity ratio).
        first = np.concatenate([np.arange(len(x)) for x in samples]) < per_character
        samples, labels = np.concatenate(samples), np.concatenate(labels)
        features = extractor.features(samples)
        psnrs = [c["mean_psnr"] for c in closeness if np.isfinite(c["mean_psnr"])]
        diversity = intra_class_diversity(features, labels)
        results[name] = {
            "frechet": frechet_distance_from_features(features, real_features),
            "diversity": diversity,
            "diversity_ratio": (intra_class_diversity(features[first], labels[first])
                                / real_diversity),
            "class_consistency": consistency(features, labels),
            "copy_rate": float(np.mean(np.concatenate(copies))),
            "nearest_support_psnr": float(np.mean(psnrs)) if psnrs else None,
            "nearest_support_ssim": float(np.mean([c["mean_ssim"] for c in closeness])),
            "fraction_copies": float(np.mean([c["fraction_copies"] for c in closeness])),
        }
    return {"protocol": {"split": split, "num_characters": len(episodes), "k_shot": k_shot,
                         "num_samples": num_samples, "selection_seed": selection_seed,
                         "seed": seed, "diversity_images_per_character": per_character,
                         "extractor": extractor.config.key()},
            "methods": results,
            "real": {"frechet": frechet_distance_from_features(support_features, real_features),
                     # undefined for one support drawing per character
                     "diversity": (intra_class_diversity(support_features, support_labels)
                                   if k_shot > 1 else None),
                     "class_consistency": consistency(support_features, support_labels)},
            "real_heldout": {"diversity": real_diversity,
                             "copy_rate": float(np.mean(np.concatenate(probes)))}}


def save_sample_figure(path, class_images, generators, *, num_characters=4, k_shot=5,
                       num_samples=10, selection_seed=0, seed=0, zoom=2):
    """PNG grid: per character, a row of its support images, then one row per method.

    The characters and supports are the same for every method. Returns `path`.
    """
    from PIL import Image, ImageDraw

    episodes = _episodes(class_images, num_characters, k_shot, selection_seed, seed)
    height, width, channels = class_images.images.shape[1:]
    label_width, pad = FIGURE_LABEL_WIDTH, 2
    columns = max(k_shot, num_samples)
    rows = []
    for i, (c, support_images, _) in enumerate(episodes):
        rows.append((f"{class_images.class_names[c][-18:]} K={k_shot}", support_images))
        for name, generate_fn in generators.items():
            out = np.asarray(generate_fn(support_images, num_samples,
                                         _sample_seed(seed, i)))
            rows.append((name[:26], out))
    cell_h, cell_w = height * zoom + pad, width * zoom + pad
    canvas = Image.new("L", (label_width + columns * cell_w, len(rows) * cell_h), 128)
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * cell_h + cell_h // 3), label, fill=255)
        for j, image in enumerate(images[:columns]):
            gray = image.mean(-1) if channels > 1 else image[..., 0]
            tile = Image.fromarray(np.asarray(gray, np.uint8)).resize(
                (width * zoom, height * zoom), Image.NEAREST)
            canvas.paste(tile, (label_width + j * cell_w, r * cell_h))
    canvas.save(path)
    return path
