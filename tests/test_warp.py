"""The warp generator family: resampling, identity at init, the warp ELBO against a
hand-written reference, pair selection, seeded sampling and its errors."""

import dataclasses

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from tfmeta import config as cfg
from tfmeta import generation, losses
from tfmeta.errors import ConfigError, DataError
from tfmeta.models.warp import (WarpGenerator, bilinear_resample, identity_grid,
                                 match_intensities)


def _images(n, seed=0, size=28):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32)


def test_bilinear_resample_shifts_with_zero_fill():
    images = _images(2)
    rows, cols = identity_grid(28, 28)
    ones = tf.ones([2, 28, 28])
    same = bilinear_resample(images, rows[None] * ones, cols[None] * ones)
    np.testing.assert_allclose(same.numpy(), images, atol=1e-6)
    # Sampling one pixel to the right: column j reads j + 1; the last column is outside.
    shifted = bilinear_resample(images, rows[None] * ones, cols[None] + 1.0 * ones).numpy()
    np.testing.assert_allclose(shifted[:, :, :-1], images[:, :, 1:], atol=1e-6)
    assert np.all(shifted[:, :, -1] == 0)
    # Half a pixel: the mean of the two neighbours.
    half = bilinear_resample(images, rows[None] * ones, cols[None] + 0.5 * ones).numpy()
    np.testing.assert_allclose(half[:, :, :-1], (images[:, :, :-1] + images[:, :, 1:]) / 2,
                               atol=1e-6)


def test_bilinear_resample_coordinate_gradient_matches_finite_differences():
    images = tf.constant(_images(1, seed=3, size=8).astype(np.float64))
    rng = np.random.default_rng(4)
    rows = tf.constant(rng.uniform(0.2, 6.8, (1, 8, 8)))
    cols = tf.constant(rng.uniform(0.2, 6.8, (1, 8, 8)))
    weights = tf.constant(rng.normal(size=(1, 8, 8, 1)))

    def f(r, c):
        return tf.reduce_sum(weights * bilinear_resample(images, r, c))

    with tf.GradientTape() as tape:
        tape.watch([rows, cols])
        value = f(rows, cols)
    grad_rows, grad_cols = tape.gradient(value, [rows, cols])
    eps = 1e-6
    for index in [(0, 1, 2), (0, 5, 6), (0, 7, 0)]:
        delta = np.zeros((1, 8, 8))
        delta[index] = eps
        numeric_r = (f(rows + delta, cols) - f(rows - delta, cols)) / (2 * eps)
        numeric_c = (f(rows, cols + delta) - f(rows, cols - delta)) / (2 * eps)
        assert float(grad_rows[index]) == pytest.approx(float(numeric_r), rel=1e-5, abs=1e-8)
        assert float(grad_cols[index]) == pytest.approx(float(numeric_c), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("fill", ["zeros", "border"])
def test_bilinear_resample_channel_planes_equal_the_joint_gather(fill):
    # A static channel count gathers each channel from its own plane; an unknown one
    # gathers rows of C values. Same values and gradients (images and coordinates),
    # and each channel of a 3-channel image equals that channel resampled alone.
    rng = np.random.default_rng(5)
    images = tf.constant(rng.normal(size=(2, 9, 9, 3)))
    rows = tf.constant(rng.uniform(-1.5, 9.5, (2, 7, 7)))
    cols = tf.constant(rng.uniform(-1.5, 9.5, (2, 7, 7)))
    weights = tf.constant(rng.normal(size=(2, 7, 7, 3)))
    joint = tf.function(lambda x, r, c: bilinear_resample(x, r, c, fill), input_signature=[
        tf.TensorSpec([None, None, None, None], tf.float64),
        tf.TensorSpec([None, None, None], tf.float64),
        tf.TensorSpec([None, None, None], tf.float64)])
    results = []
    for resample in (lambda x, r, c: bilinear_resample(x, r, c, fill), joint):
        with tf.GradientTape() as tape:
            tape.watch([images, rows, cols])
            out = resample(images, rows, cols)
            value = tf.reduce_sum(weights * out)
        results.append([out, *tape.gradient(value, [images, rows, cols])])
    for planes, gathered in zip(*results):
        np.testing.assert_allclose(planes.numpy(), gathered.numpy(), rtol=1e-12, atol=1e-12)
    for channel in range(3):
        alone = bilinear_resample(images[..., channel:channel + 1], rows, cols, fill)
        np.testing.assert_allclose(alone.numpy()[..., 0], results[0][0].numpy()[..., channel],
                                   rtol=1e-12, atol=1e-12)


def _stroke(length, width=2, size=28):
    """A horizontal pen stroke in [-1, 1]: `width` rows of full ink, soft edges."""
    image = np.full((size, size), -1.0, np.float32)
    top, left = size // 2 - width // 2, (size - length) // 2
    image[top:top + width, left:left + length] = 1.0
    image[top - 1, left:left + length] = image[top + width, left:left + length] = -0.2
    return image[None, :, :, None]


def _ink_pixels(image):
    return int(np.sum(image > 0))


def test_match_intensities_takes_the_reference_histogram_in_the_image_order():
    image, reference = _images(2, seed=1), _images(2, seed=2)
    out = match_intensities(image, reference).numpy()
    for i in range(2):
        np.testing.assert_array_equal(np.sort(out[i].ravel()), np.sort(reference[i].ravel()))
        order = np.argsort(image[i].ravel(), kind="stable")
        assert np.all(np.diff(out[i].ravel()[order]) >= 0)
    # A power whose factor is 1 (equal ink mass) gives the same histogram.
    same_mass = match_intensities(reference, reference, ink_area_power=0.5).numpy()
    np.testing.assert_allclose(same_mass, reference, atol=1e-6)


def test_ink_area_power_keeps_the_pen_width_of_a_shrunk_stroke():
    """A 20-px stroke shrunk to half its size by bilinear resampling (a quarter of the
    area): with power 0 it gets the source's ink-pixel count (a stroke as long as the
    shrunk one but twice as thick); with 0.5 about half the count (the source's width,
    half the length); with 1 a quarter (half the width), bounded below at a half. Ink
    values stay the source's."""
    source = _stroke(20)
    rows, cols = identity_grid(28, 28)
    # The output pixel y reads the source at 14 + 2 (y - 14): a shrink by 2 about the centre.
    # Ink in [0, 1] is resampled, as WarpGenerator.warp does.
    shrunk = bilinear_resample((source + 1.0) / 2.0, (14.0 + 2.0 * (rows - 14.0))[None],
                               (14.0 + 2.0 * (cols - 14.0))[None]).numpy() * 2.0 - 1.0
    assert abs((shrunk + 1).sum() - (source + 1).sum() / 4) < 2.0
    count = _ink_pixels(source)
    assert count == 40
    keep = match_intensities(shrunk, source).numpy()
    pen = match_intensities(shrunk, source, ink_area_power=0.5).numpy()
    width = match_intensities(shrunk, source, ink_area_power=1.0).numpy()
    assert _ink_pixels(keep) == count
    assert abs(_ink_pixels(pen) - count / 2) <= 2
    assert _ink_pixels(width) == count // 2      # factor 1/4, clipped to 1/2
    for out in (keep, pen, width):
        assert out.max() == source.max() and out.min() == source.min()
    # The ink of the 0.5 rendering is 2 rows thick, like the source's, and half as long.
    rows_with_ink = np.flatnonzero((pen[0, :, :, 0] > 0).any(1))
    cols_with_ink = np.flatnonzero((pen[0, :, :, 0] > 0).any(0))
    assert len(rows_with_ink) <= 3 and 9 <= len(cols_with_ink) <= 11
    # An all-dark image (no ink mass) gets the bound too, not NaN.
    empty = match_intensities(np.full_like(source, -1.0), source, ink_area_power=1.0).numpy()
    assert _ink_pixels(empty) == count // 2


def test_ink_area_power_is_a_sampling_setting_that_needs_match_ink():
    config = cfg.GenerationConfig(model="warp", preset="warp28", match_ink=True,
                                  ink_area_power=0.5).validate()
    assert generation.parse_sampling("ink_area_power=1") == {"ink_area_power": 1.0}
    with pytest.raises(ConfigError, match="--ink_area_power needs --match_ink"):
        cfg.GenerationConfig(model="warp", preset="warp28", ink_area_power=0.5).validate()
    with pytest.raises(ConfigError, match="must be in"):
        dataclasses.replace(config, ink_area_power=-1.0).validate()


@pytest.mark.parametrize("flow_stride", [4, 2])
def test_warp_generator_starts_at_identity_and_bounds_its_flow(flow_stride):
    model = WarpGenerator(latent_dim=4, context_dim=3, base_filters=4, max_displacement=2.5,
                          flow_stride=flow_stride)
    source = tf.constant(_images(3))
    z, context = tf.random.normal([3, 4]), tf.random.normal([3, 3])
    np.testing.assert_allclose(model((source, z, context)).numpy(), source.numpy(), atol=1e-6)
    for variable in model.trainable_variables:   # any weights: |flow| <= max_displacement
        variable.assign(tf.random.normal(variable.shape, stddev=3.0))
    flow = model.flow(source, z, context).numpy()
    assert flow.shape == (3, 28, 28, 2) and np.abs(flow).max() <= 2.5 + 1e-5
    assert np.abs(flow).max() > 0.5
    mean, logvar = model.encode(source, source, context)
    assert mean.shape == logvar.shape == (3, 4)
    clone = WarpGenerator.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    with pytest.raises(ConfigError, match="context"):
        model((source, z))


def test_flow_stride_sets_the_grid_of_the_displacement_field():
    """A plain displacement field on a g-px grid, bilinearly upsampled, is linear between
    grid nodes: its second difference along a row vanishes wherever three neighbouring
    pixels lie between the same two nodes. On the 4-px grid that is most pixels, on the
    2-px grid few."""
    source = tf.constant(_images(2, seed=40))
    z, context = tf.random.normal([2, 4], seed=1), tf.random.normal([2, 3], seed=2)
    bends = {}
    for stride in (4, 2):
        model = WarpGenerator(latent_dim=4, context_dim=3, base_filters=4,
                              max_displacement=50.0, flow_stride=stride)
        rng = np.random.default_rng(stride)
        for variable in model.trainable_variables:
            variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
        flow = model.flow(source, z, context).numpy()[:, 2:-2, 2:-2]
        second = np.abs(flow[:, :, 2:] - 2 * flow[:, :, 1:-1] + flow[:, :, :-2])
        bends[stride] = np.mean(second > 1e-4 * np.abs(flow).max())
    assert bends[4] < 0.4 and bends[2] > 1.8 * bends[4], bends
    with pytest.raises(ConfigError, match="flow_stride"):
        WarpGenerator(flow_stride=3)
    with pytest.raises(ConfigError, match="--flow_stride"):
        cfg.GenerationConfig(model="warp", preset="warp28", flow_stride=3).validate()


def test_warp_elbo_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    warped = rng.uniform(-1, 1, (2, 12, 12, 1))
    targets = rng.uniform(-1, 1, (2, 12, 12, 1))
    mean, logvar = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)) * 0.3
    loss, aux = losses.warp_elbo_loss(tf.constant(warped), tf.constant(targets),
                                      tf.constant(mean), tf.constant(logvar), beta=0.7)
    diff = (warped - targets) / 2.0
    reconstruction = 0.0
    for sigma in losses.WARP_BLUR_SIGMAS:
        blurred = np.stack([scipy.ndimage.gaussian_filter(d[..., 0], sigma, mode="constant",
                                                          truncate=3.0) if sigma else d[..., 0]
                            for d in diff])
        reconstruction += np.mean(np.sum(blurred ** 2, axis=(1, 2)))
    reconstruction /= 2 * losses.WARP_PIXEL_SIGMA ** 2
    kl = np.mean(0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1 - logvar, axis=1))
    assert float(aux["reconstruction"]) == pytest.approx(reconstruction, rel=1e-9)
    assert float(aux["kl"]) == pytest.approx(kl, rel=1e-9)
    assert float(loss) == pytest.approx(reconstruction + 0.7 * kl, rel=1e-9)


def _warp_model(context_dim=0):
    config = cfg.GenerationConfig(model="warp", preset="tiny_warp", context_dim=context_dim,
                                  adapt_scope="context" if context_dim else "all",
                                  outer=cfg.OuterConfig(algorithm="fomaml")).validate()
    return generation.GenerativeModel(config, seed=0)


def test_warp_loss_pairs_each_support_with_another_support():
    model = _warp_model()
    support = tf.constant(_images(2, seed=5))
    batch = generation.to_batch(support, support)
    loss, aux = model.warp_loss(model.read_params(), batch, tf.constant([1, 2], tf.int64))
    # At initialisation the warp is the identity, so support i is drawn as the *other*
    # support: the reconstruction is that of the swapped pair (never the trivial 0).
    _, reference = losses.warp_elbo_loss(support[::-1], support, tf.zeros([2, 4]),
                                         tf.zeros([2, 4]))
    assert float(aux["reconstruction"]) == pytest.approx(float(reference["reconstruction"]),
                                                         rel=1e-5)
    # K = 1 on the support itself: the only source is the target (identity pair).
    one = generation.to_batch(support[:1], support[:1])
    _, aux_one = model.warp_loss(model.read_params(), one, tf.constant([1, 2], tf.int64))
    assert float(aux_one["reconstruction"]) == pytest.approx(0.0, abs=1e-6)


def test_warp_samples_are_seeded_warps_of_the_support():
    model = _warp_model(context_dim=3)
    params = model.read_params()
    support = tf.constant(_images(3, seed=6))
    seed = tf.constant([4, 0], tf.int64)
    first = model.sample(params, 7, seed, support).numpy()
    np.testing.assert_array_equal(first, model.sample(params, 7, seed, support).numpy())
    # Identity warp at initialisation: every sample is one of the support drawings.
    distances = np.abs(first[:, None] - support.numpy()[None]).max(axis=(2, 3, 4))
    assert np.all(distances.min(1) < 1e-5)
    assert len(set(distances.argmin(1))) > 1   # sources are drawn from several supports
    with pytest.raises(ConfigError, match="support images"):
        model.sample(params, 2, seed)


def test_gaussian_kl_against_a_learned_prior_matches_numpy():
    rng = np.random.default_rng(1)
    mean, logvar, prior_mean, prior_logvar = (rng.normal(size=(3, 5)) for _ in range(4))
    kl = losses.gaussian_kl(tf.constant(mean), tf.constant(logvar), tf.constant(prior_mean),
                            tf.constant(prior_logvar)).numpy()
    var, prior_var = np.exp(logvar), np.exp(prior_logvar)
    reference = 0.5 * np.sum(np.log(prior_var / var) + (var + (mean - prior_mean) ** 2)
                             / prior_var - 1.0, axis=1)
    np.testing.assert_allclose(kl, reference, rtol=1e-10)
    standard = losses.gaussian_kl(tf.constant(mean), tf.constant(logvar)).numpy()
    zeros = tf.zeros_like(tf.constant(mean))
    np.testing.assert_allclose(
        standard, losses.gaussian_kl(tf.constant(mean), tf.constant(logvar), zeros,
                                     zeros).numpy(), rtol=1e-10)


def _min_jacobian_determinant(flow):
    """Smallest det of d(id + flow)/dx over the interior (central differences)."""
    d_rows = (flow[:, 2:, 1:-1] - flow[:, :-2, 1:-1]) / 2.0
    d_cols = (flow[:, 1:-1, 2:] - flow[:, 1:-1, :-2]) / 2.0
    return np.min((1.0 + d_rows[..., 0]) * (1.0 + d_cols[..., 1])
                  - d_cols[..., 0] * d_rows[..., 1])


def test_scaling_and_squaring_warp_does_not_fold():
    source = tf.constant(_images(4, seed=2))
    z = tf.random.stateless_normal([4, 4], [0, 1])
    folded = {}
    for steps in (0, 4):
        model = WarpGenerator(latent_dim=4, base_filters=4, max_displacement=6.0,
                              integration_steps=steps)
        for i, variable in enumerate(model.trainable_variables):   # the same rough field
            variable.assign(tf.random.stateless_normal(variable.shape, [i, 7], stddev=2.0))
        folded[steps] = _min_jacobian_determinant(model.flow(source, z).numpy())
    assert folded[0] < 0    # a plain 6-px displacement field folds here ...
    assert folded[4] > 0    # ... its exponential (same velocity) never does


def test_check_support_images_rejects_bad_sets():
    good = (np.arange(2 * 28 * 28) % 255).reshape(2, 28, 28, 1).astype(np.uint8)
    assert generation.check_support_images(good, (28, 28, 1)) is not None
    for bad, match in [(good[:0], "K >= 1"), (good[0], "K >= 1"),
                       (good[:, :27], "28, 28, 1"), (good.astype(np.int32), "uint8"),
                       (np.full_like(good, 255), "blank"), (np.zeros_like(good), "blank"),
                       (np.where(good > 0, np.nan, 0.0), "NaN")]:
        with pytest.raises(DataError, match=match):
            generation.check_support_images(bad, (28, 28, 1))


def test_warp_regularizer_prices_squeezes_not_translations():
    source = tf.constant(_images(2, seed=9))
    shift = tf.fill([2, 28, 28, 2], 3.0)          # a pure translation: no bending
    penalties, total = losses.warp_regularizer(shift, source, source, smoothness=2.0,
                                               ink=5.0)
    assert float(penalties["smoothness"]) == 0.0 and float(total) == 0.0
    # A linear stretch along the rows, flow_rows = 0.1 * row: every forward difference
    # along the rows is 0.1 → 27 * 28 differences of 0.01 per sample.
    rows = 0.1 * tf.range(28, dtype=tf.float32)[None, :, None, None]
    stretch = tf.concat([tf.broadcast_to(rows, [2, 28, 28, 1]), tf.zeros([2, 28, 28, 1])],
                        axis=-1)
    penalties, _ = losses.warp_regularizer(stretch, source, source)
    assert float(penalties["smoothness"]) == pytest.approx(27 * 28 * 0.01, rel=1e-5)
    erased = -tf.ones_like(source)                 # every stroke erased: relative change 1
    penalties, total = losses.warp_regularizer(shift, source, erased, ink=5.0)
    assert float(penalties["ink_change"]) == pytest.approx(1.0)
    assert float(total) == pytest.approx(5.0)


def _warping_model(context_dim=3):
    """A tiny warp model whose flow head is random, so samples are real deformations."""
    model = _warp_model(context_dim=context_dim)
    rng = np.random.default_rng(3)
    for v in model.warp.flow_out.trainable_variables:
        v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32))
    return model


def test_registration_cost_averages_the_other_supports_pair_elbos():
    model = _warping_model()
    params = model.read_params()
    support = tf.constant(_images(3, seed=7))
    images = tf.constant(_images(4, seed=8))
    index = tf.constant([0, 2, 1, 2])
    with model._scope(params):
        cost = model.registration_cost(images, index, support).numpy()
        c = model._context(support, 1)
        expected = []
        for m in range(4):
            pairs = []
            for j in range(3):
                if j == int(index[m]):
                    continue
                s, x = support[j:j + 1], images[m:m + 1]
                mean, logvar = model.warp.encode(s, x, c)
                prior = model.warp.prior(s, c)
                warped = model.warp((s, mean, c))
                rec, kl = losses.warp_elbo_terms(warped, x, mean, logvar, prior_mean=prior[0],
                                                 prior_logvar=prior[1])
                pairs.append(float(rec[0] + model.config.kl_weight * kl[0]))
            expected.append(np.mean(pairs))
        # K = 1: the source itself is the only reference.
        one = model.registration_cost(images[:1], tf.constant([0]), support[:1]).numpy()
        c = model._context(support[:1], 1)   # the context of the one-drawing support set
        mean, logvar = model.warp.encode(support[:1], images[:1], c)
        prior = model.warp.prior(support[:1], c)
        rec, kl = losses.warp_elbo_terms(model.warp((support[:1], mean, c)), images[:1],
                                         mean, logvar, prior_mean=prior[0],
                                         prior_logvar=prior[1])
    np.testing.assert_allclose(cost, expected, rtol=2e-4)
    np.testing.assert_allclose(one, rec + model.config.kl_weight * kl, rtol=2e-4)


def test_rerank_keeps_the_candidates_closest_to_their_sources_cost():
    import dataclasses
    model = _warping_model()
    params = model.read_params()
    support = tf.constant(_images(3, seed=9))
    seed = tf.constant([5, 0], tf.int64)
    with model._scope(params):
        candidates, index = model._warp_candidates(12, seed, support)
        cost = model.registration_cost(tf.concat([candidates, support], 0),
                                       tf.concat([index, tf.range(3)], 0), support).numpy()
    excess = cost[:12] - cost[12:][index.numpy()]
    expected = candidates.numpy()[np.argsort(excess, kind="stable")[:4]]
    model.config = dataclasses.replace(model.config, rerank=3)
    chosen = model.sample(params, 4, seed, support).numpy()
    np.testing.assert_allclose(chosen, expected, atol=1e-6)
    np.testing.assert_array_equal(chosen, model.sample(params, 4, seed, support).numpy())
    with pytest.raises(ConfigError, match="rerank"):
        dataclasses.replace(model.config, rerank=0).validate()


def test_support_distances_match_the_judges_copy_distance():
    from tfmeta.eval.baselines import nearest_support_distance
    from tfmeta.models.warp import support_distances
    images, support = _images(6, seed=11), _images(3, seed=12)
    # A support drawing moved by (1, -2) px is at distance 0 from it.
    moved = np.zeros_like(support[:1]) - 1.0
    moved[:, 1:, :-2] = support[:1, :-1, 2:]
    images = np.concatenate([images, moved])
    got = support_distances(tf.constant(images), tf.constant(support)).numpy()
    as_uint8 = lambda x: np.round((x + 1.0) * 127.5).astype(np.uint8)
    np.testing.assert_allclose(got.min(1), nearest_support_distance(
        as_uint8(images), as_uint8(support)), rtol=1e-4, atol=0.02)
    assert got[-1, 0] < 0.02 and got[-1, 1:].min() > 1.0   # (float32 rounding)


def test_copy_guard_puts_copies_of_a_support_last():
    import dataclasses
    model = _warping_model()
    params = model.read_params()
    support = tf.constant(_images(3, seed=13))
    far = tf.constant(_images(5, seed=14))
    # Candidates in draw order: two copies of supports (exact, and moved by 1 px), then
    # drawings of other classes.
    moved = tf.concat([-tf.ones([1, 1, 28, 1]), support[2:3, :-1]], 1)
    candidates = tf.concat([support[:1], moved, far[:1], support[1:2], far[1:]], 0)
    model._warp_candidates = lambda m, seed, support: (candidates[:m], tf.zeros([m], tf.int32))
    model.config = dataclasses.replace(model.config, copy_guard=0.5)
    with model._scope(params):
        copies = model.guard_flags(candidates, support)[0].numpy()
        np.testing.assert_array_equal(copies, [1, 1, 0, 1, 0, 0, 0, 0])
        # 2 * 4 candidates drawn, the first four that are not copies kept.
        chosen = model._warp_sample(4, tf.constant([0, 0], tf.int64), support).numpy()
        np.testing.assert_array_equal(chosen, tf.gather(candidates, [2, 4, 5, 6]).numpy())
        # Too few pass among 2 * 2 candidates: the first copy fills in.
        chosen = model._warp_sample(2, tf.constant([0, 0], tf.int64), support).numpy()
        np.testing.assert_array_equal(chosen, tf.gather(candidates, [2, 0]).numpy())
        one = model.guard_flags(candidates, support[:1])[0].numpy()
        assert not one.any()   # one support drawing: no distance between supports, no guard
        twice = tf.concat([support, support[:1]], 0)
        assert not model.guard_flags(candidates, twice)[0].numpy().any()   # a repeated support
    with pytest.raises(ConfigError, match="copy_guard"):
        dataclasses.replace(model.config, copy_guard=-1.0).validate()


def test_outlier_guard_puts_drawings_far_from_every_support_last():
    import dataclasses
    model = _warping_model()
    params = model.read_params()
    support = tf.constant(_images(3, seed=13))
    near = tf.constant(_images(3, seed=14))   # as far from the supports as they are apart
    solid = tf.ones([1, 28, 28, 1])           # ~1.4x farther from every support
    candidates = tf.concat([solid, near[:1], support[:1], near[1:]], 0)
    model._warp_candidates = lambda m, seed, support: (candidates[:m], tf.zeros([m], tf.int32))
    model.config = dataclasses.replace(model.config, copy_guard=0.5, outlier_guard=1.2)
    with model._scope(params):
        copy, outlier = (f.numpy() for f in model.guard_flags(candidates, support))
        np.testing.assert_array_equal(copy, [0, 0, 1, 0, 0])
        np.testing.assert_array_equal(outlier, [1, 0, 0, 0, 0])
        chosen = model._warp_sample(2, tf.constant([0, 0], tf.int64), support).numpy()
        np.testing.assert_array_equal(chosen, tf.gather(candidates, [1, 3]).numpy())
        assert not model.guard_flags(candidates, support[:1])[1].numpy().any()   # K = 1
        model.config = dataclasses.replace(model.config, outlier_guard=0.0)
        assert not model.guard_flags(candidates, support)[1].numpy().any()   # off
    with pytest.raises(ConfigError, match="outlier_guard"):
        dataclasses.replace(model.config, outlier_guard=-1.0).validate()


def test_source_weighting_draws_the_typical_supports_most():
    import dataclasses
    model = _warp_model(context_dim=3)   # identity warp: every sample is its source
    params = model.read_params()
    base = _images(1, seed=20)
    # Three near-identical drawings and one unlike them (the unusual support).
    near = np.clip(base + np.random.default_rng(21).normal(0, 0.05, (3,) + base.shape[1:]),
                   -1, 1).astype(np.float32)
    support = tf.constant(np.concatenate([near, _images(1, seed=22)]))
    model.config = dataclasses.replace(model.config, source_weighting=2.0)
    with model._scope(params):
        cost = model.registration_cost(support, tf.range(4), support).numpy()
        logits = model.source_logits(support).numpy()
        np.testing.assert_allclose(logits, -2.0 * (cost - cost.mean()) / cost.std(),
                                   rtol=1e-4, atol=1e-5)
        assert logits.argmin() == 3   # the others register worst to the unusual one
        np.testing.assert_array_equal(model.source_logits(support[:1]).numpy(), [0.0])
    seed = tf.constant([5, 0], tf.int64)
    samples = model.sample(params, 2000, seed, support).numpy()
    np.testing.assert_array_equal(samples, model.sample(params, 2000, seed, support))
    source = np.abs(samples[:, None] - support.numpy()[None]).max(axis=(2, 3, 4)).argmin(1)
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(np.bincount(source, minlength=4) / 2000, expected, atol=0.03)
    with pytest.raises(ConfigError, match="source_weighting"):
        dataclasses.replace(model.config, source_weighting=-1.0).validate()
