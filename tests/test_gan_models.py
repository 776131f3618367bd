"""Tests for tfmeta.models.{gan, vae, encoders, presets}: shapes, conditioning, functional
calls (stateless_call), .keras round trips, presets and parameter counts."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmeta import losses  # noqa: E402
from tfmeta.errors import ConfigError  # noqa: E402
from tfmeta.models.encoders import SupportEncoder  # noqa: E402
from tfmeta.models.gan import Discriminator, Generator, SpectralDense  # noqa: E402
from tfmeta.models.presets import (PRESETS, build_gan, build_support_encoder,  # noqa: E402
                                   build_vae)
from tfmeta.models.vae import VAE  # noqa: E402

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _functional(model, x, noise=0.0, scale=1.0, **kwargs):
    """model.stateless_call with the parameters as tensors (optionally perturbed)."""
    params = [tf.convert_to_tensor(v) * scale + noise * _normal(*v.shape)
              for v in model.trainable_variables]
    ntv = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(params)
        out, _ = model.stateless_call(params, ntv, x, **kwargs)
        total = sum(tf.reduce_sum(tf.square(o)) for o in tf.nest.flatten(out))
    return out, tape.gradient(total, params)


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_all_sizes_and_channels(size, channels):
    shape = (size, size, channels)
    g = Generator(shape, latent_dim=8, context_dim=3, base_filters=4)
    d = Discriminator(shape, base_filters=4, context_dim=3, norm="layer")
    vae = VAE(shape, latent_dim=4, base_filters=4)
    z, c = _normal(5, 8), _normal(5, 3)
    images = g((z, c))
    assert images.shape == (5,) + shape
    assert d((images, c)).shape == (5, 1) and Discriminator(shape, 4)(images).shape == (5, 1)
    out = vae((images + 1) / 2, seed=tf.constant([1, 2]))
    assert out["recon_logits"].shape == (5,) + shape
    assert out["mean"].shape == out["logvar"].shape == (5, 4)


def test_generator_range_and_context_conditioning():
    g = Generator((28, 28, 1), latent_dim=8, context_dim=4, base_filters=4)
    z = _normal(6, 8) * 30.0  # huge z saturates tanh but must stay within [-1, 1]
    c1, c2 = _normal(6, 4), _normal(6, 4)
    out1 = g((z, c1)).numpy()
    assert out1.min() >= -1.0 and out1.max() <= 1.0 and out1.std() > 1e-3
    assert np.abs(out1 - g((z, c2)).numpy()).max() > 1e-4
    # A rank-1 context is broadcast over the batch.
    np.testing.assert_allclose(g((z, c1[0])).numpy(), g((z, np.repeat(c1[:1], 6, 0))),
                               atol=1e-6)
    # FiLM starts as identity (zero init) but is trained: its kernels get gradients.
    _, grads = _functional(g, (z[:, :] / 30.0, c1))
    names = [v.path for v in g.trainable_variables]
    film_grads = [gr for n, gr in zip(names, grads) if "film" in n and "kernel" in n]
    assert len(film_grads) == 3 and all(np.abs(gr.numpy()).max() > 0 for gr in film_grads)
    with pytest.raises(ConfigError):
        g(z)  # conditional generator without a context
    with pytest.raises(ConfigError):
        Generator(latent_dim=8, base_filters=4)((z, c1))


def test_invalid_configs_raise_config_error():
    with pytest.raises(ConfigError, match="image_shape"):
        Generator((30, 30, 1))
    with pytest.raises(ConfigError, match="batch"):
        Discriminator(norm="batch")
    with pytest.raises(ConfigError):
        Generator(norm="group")
    with pytest.raises(ConfigError):
        SupportEncoder(4, norm="batch")


def test_discriminator_treats_samples_independently():
    # The WGAN-GP penalty relies on logit_i depending on sample i only.
    d = Discriminator((28, 28, 1), base_filters=4, norm="layer", context_dim=2)
    x, c = _normal(4, 28, 28, 1), _normal(4, 2)
    before = d((x, c)).numpy()
    x2 = x.copy()
    x2[1:] = _normal(3, 28, 28, 1)
    after = d((x2, c)).numpy()
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5)
    assert np.abs(after[1:] - before[1:]).max() > 1e-4


def test_spectral_norm_normalises_without_assigning_the_kernel():
    layer = SpectralDense(6, power_iterations=1)
    x = _normal(3, 5)
    layer(x)
    kernel_before = layer.kernel.numpy().copy()
    for _ in range(30):
        layer(x, training=True)  # power iterations persist u only
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel_before)
    # The effective kernel kernel/sigma has largest singular value 1: recover it from
    # the layer's linear map (bias is zero at init).
    eye = np.eye(5, dtype=np.float32)
    effective = layer(eye).numpy()
    assert np.linalg.svd(effective, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    # Same function in inference mode (sampling sees what training saw).
    np.testing.assert_allclose(layer(eye, training=True).numpy(), effective, rtol=1e-5)


def test_stateless_call_generator_and_discriminator():
    g = Generator((28, 28, 1), latent_dim=8, context_dim=2, base_filters=4)
    d = Discriminator((28, 28, 1), base_filters=4, spectral_norm=True, context_dim=2)
    z, c = _normal(3, 8), _normal(3, 2)
    for model, x in ((g, (z, c)), (d, (_normal(3, 28, 28, 1), c))):
        out, grads = _functional(model, x)
        np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
        assert all(gr is not None for gr in grads)
        moved, _ = _functional(model, x, noise=0.05)
        assert np.abs(moved.numpy() - out.numpy()).max() > 1e-3
    # Spectral normalisation makes the critic invariant to scaling its kernels (the
    # biases are zero at initialisation), in functional calls too.
    scaled, _ = _functional(d, x, scale=3.0)
    np.testing.assert_allclose(scaled.numpy(), out.numpy(), rtol=1e-4, atol=1e-5)
    # Spectral norm in training mode returns the updated power-iteration vectors.
    params = [tf.convert_to_tensor(v) for v in d.trainable_variables]
    ntv = [tf.convert_to_tensor(v) for v in d.non_trainable_variables]
    _, new_ntv = d.stateless_call(params, ntv, (_normal(3, 28, 28, 1), c), training=True)
    assert len(new_ntv) == len(ntv) == 5
    assert any(np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in zip(new_ntv, ntv))


def test_gradient_penalty_through_functional_critic():
    d = Discriminator((28, 28, 1), base_filters=4)
    params = [tf.convert_to_tensor(v) for v in d.trainable_variables]
    real, fake = _normal(4, 28, 28, 1), _normal(4, 28, 28, 1)
    with tf.GradientTape() as tape:
        tape.watch(params)
        penalty = losses.gradient_penalty(
            lambda x: d.stateless_call(params, [], x)[0], real, fake, tf.constant([0, 1]))
    grads = tape.gradient(penalty, params)
    assert np.isfinite(float(penalty))
    kernels = [gr for gr, v in zip(grads, d.trainable_variables) if "kernel" in v.path]
    assert all(gr is not None and np.abs(gr.numpy()).max() > 0 for gr in kernels)


def test_gradient_penalty_second_order_through_discriminator_float64():
    # d penalty / d critic weights through a real conv critic (LeakyReLU, layer norm,
    # projection term) equals central finite differences in float64.
    d = Discriminator((28, 28, 1), base_filters=2, norm="layer", context_dim=2,
                      dtype="float64")
    real, fake = RNG.normal(size=(2, 28, 28, 1)), RNG.normal(size=(2, 28, 28, 1))
    c = RNG.normal(size=(2, 2))
    seed = tf.constant([5, 6])

    def penalty(ps):
        critic = lambda x: d.stateless_call(ps, [], (x, c))[0]  # noqa: E731
        return losses.gradient_penalty(critic, real, fake, seed)

    params = [tf.convert_to_tensor(v) for v in d.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = penalty(params)
    # The read-out bias does not enter the input gradient: its gradient is unconnected.
    grads = tape.gradient(value, params, unconnected_gradients="zero")
    h = 1e-6
    for i in range(len(params)):
        idx = tuple(RNG.integers(0, n) for n in params[i].shape)
        onehot = np.zeros(params[i].shape)
        onehot[idx] = h
        plus = [p + onehot if j == i else p for j, p in enumerate(params)]
        minus = [p - onehot if j == i else p for j, p in enumerate(params)]
        fd = (float(penalty(plus)) - float(penalty(minus))) / (2 * h)
        assert grads[i].numpy()[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), \
            d.trainable_variables[i].path


def test_vae_sampling_seeded_and_stateless_call():
    vae = VAE((28, 28, 1), latent_dim=4, context_dim=3, base_filters=4)
    x, c = RNG.uniform(size=(3, 28, 28, 1)).astype(np.float32), _normal(3, 3)
    s1, s2 = tf.constant([1, 2]), tf.constant([1, 3])
    a, b = vae((x, c), seed=s1), vae((x, c), seed=s1)
    np.testing.assert_array_equal(a["recon_logits"].numpy(), b["recon_logits"].numpy())
    assert np.abs(vae((x, c), seed=s2)["recon_logits"].numpy()
                  - a["recon_logits"].numpy()).max() > 1e-6
    # seed=None decodes the posterior mean.
    mean, _ = vae.encode(x, c)
    np.testing.assert_allclose(vae((x, c))["recon_logits"].numpy(),
                               vae.decode(mean, c).numpy(), rtol=1e-5, atol=1e-6)
    out, grads = _functional(vae, (x, c), seed=s1)
    np.testing.assert_allclose(out["recon_logits"].numpy(), a["recon_logits"].numpy(),
                               rtol=1e-4, atol=1e-5)
    assert all(gr is not None for gr in grads)
    # Reparameterisation: the ELBO depends on logvar through the sample.
    params = [tf.convert_to_tensor(v) for v in vae.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(params)
        out, _ = vae.stateless_call(params, [], (x, c), seed=s1)
        loss, parts = losses.vae_elbo_loss(out["recon_logits"], x, out["mean"],
                                           out["logvar"])
    assert np.isfinite(float(loss)) and float(parts["kl"]) >= 0
    enc_out_kernel = [gr for gr, v in zip(tape.gradient(loss, params),
                                          vae.trainable_variables) if "enc_out" in v.path]
    assert np.abs(enc_out_kernel[0].numpy()).max() > 0
    samples = vae.sample(5, s1, context=c[0])
    assert samples.shape == (5, 28, 28, 1) and 0 <= samples.numpy().min()
    assert samples.numpy().max() <= 1


def test_support_encoder_permutation_invariance_and_sizes():
    enc = SupportEncoder(context_dim=6, base_filters=4)
    support = _normal(20, 28, 28, 1)
    full = enc(support).numpy()
    assert full.shape == (6,)
    np.testing.assert_allclose(enc(support[RNG.permutation(20)]).numpy(), full,
                               rtol=1e-5, atol=1e-6)
    outs = [enc(support[:k]).numpy() for k in range(1, 21)]
    assert all(o.shape == (6,) for o in outs)
    assert np.abs(outs[0] - outs[4]).max() > 1e-5  # the set content matters
    # Batched sets [B, K, ...] equal the per-set results.
    batched = enc(np.stack([support[:5], support[5:10], support[10:15]])).numpy()
    assert batched.shape == (3, 6)
    for b in range(3):
        np.testing.assert_allclose(batched[b], enc(support[5 * b:5 * b + 5]).numpy(),
                                   rtol=1e-5, atol=1e-6)
    out, grads = _functional(enc, support[:5])
    np.testing.assert_allclose(out.numpy(), outs[4], rtol=1e-5, atol=1e-6)
    assert all(gr is not None for gr in grads)


def test_flatten_pooling_keeps_layout_and_set_invariance():
    enc = SupportEncoder(context_dim=6, base_filters=4, image_shape=(28, 28, 1),
                         pooling="flatten")
    support = _normal(5, 28, 28, 1)
    out = enc(support).numpy()
    np.testing.assert_allclose(enc(support[::-1]).numpy(), out, rtol=1e-5, atol=1e-6)
    # A spatially flipped set keeps mean-pooled statistics nearly equal but not the layout.
    flipped = enc(support[:, ::-1]).numpy()
    assert np.abs(flipped - out).max() > 1e-4
    assert SupportEncoder.from_config(enc.get_config()).pooling == "flatten"
    with pytest.raises(ConfigError, match="image_shape"):
        SupportEncoder(4, pooling="flatten")


def test_keras_round_trip(tmp_path):
    z, c = _normal(3, 8), _normal(3, 2)
    images = _normal(3, 32, 32, 3)
    lazy_encoder = SupportEncoder(2, base_filters=4)
    lazy_encoder(images)
    cases = [
        (Generator((32, 32, 3), 8, 2, 4, norm="instance"), (z, c), {}),
        (Discriminator((32, 32, 3), 4, context_dim=2, spectral_norm=True, norm="layer"),
         (images, c), {}),
        (VAE((32, 32, 3), 8, 2, 4), ((images + 1) / 2, c), {"seed": tf.constant([4, 2])}),
        (lazy_encoder, images, {}),
        (SupportEncoder(2, 4, image_shape=(32, 32, 3)), images, {}),
    ]
    for i, (model, x, kwargs) in enumerate(cases):
        path = str(tmp_path / f"model_{i}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
        want, got = model(x, **kwargs), loaded(x, **kwargs)
        for w, g in zip(tf.nest.flatten(want), tf.nest.flatten(got)):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=1e-6)


def test_float64_policy():
    g = Generator((28, 28, 1), 8, base_filters=4, dtype="float64")
    assert g(np.zeros((2, 8))).dtype == tf.float64
    assert all(v.dtype == "float64" for v in g.trainable_variables)


def test_presets_build_and_errors():
    g, d = build_gan("tiny", context_dim=3, conditional_discriminator=True)
    assert g.built and d.built and g.context_dim == 3 and d.context_dim == 3
    assert g.image_shape == (28, 28, 1) and g.latent_dim == PRESETS["tiny"]["latent_dim"]
    g, d = build_gan("tiny", image_shape=(32, 32, 3), generator_filters=2)
    assert g(np.zeros((1, 8), np.float32)).shape == (1, 32, 32, 3)
    vae = build_vae("tiny_vae")
    assert vae.built and vae.trainable_variables
    enc = build_support_encoder("tiny", context_dim=5)
    assert enc(_normal(3, 28, 28, 1)).shape == (5,)
    with pytest.raises(ConfigError, match="dcgan28"):  # lists the valid names
        build_gan("dcgan_28")
    with pytest.raises(ConfigError, match="vae28"):
        build_vae("tiny")  # a GAN preset
    with pytest.raises(ConfigError, match="generator_filterz"):
        build_gan("tiny", generator_filterz=3)
    with pytest.raises(ConfigError, match="context_dim"):
        build_support_encoder("tiny")


def test_dcgan28_parameter_counts():
    g, d = build_gan("dcgan28")
    g_params, d_params = g.count_params(), d.count_params()
    print(f"dcgan28_generator_params={g_params} dcgan28_critic_params={d_params}")
    # Reference pair of the speed benchmark: G ~0.55M (z = 64), critic ~0.43M.
    assert (g_params, d_params) == (565_985, 431_553)
    assert g.latent_dim == 64


def test_structure_options_depth_skip_activation():
    """Extra blocks add exactly their conv + norm weights; residual blocks keep the
    identity path (zero block kernels leave the output unchanged); configs round-trip."""
    z = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    base = Generator((28, 28, 1), 8, base_filters=4, name="g0")
    deep = Generator((28, 28, 1), 8, base_filters=4, blocks=2, residual=True,
                     activation="swish", name="g1")
    # 2 stages x 2 blocks: 3x3 conv (no bias) + MetaNorm(batch) scale/offset.
    extra = sum(9 * w * w + 2 * w for w in (8, 8, 4, 4))
    assert deep.count_params() - base.count_params() == extra
    assert deep(z).shape == (3, 28, 28, 1)
    same = Generator.from_config(deep.get_config())
    assert (same.blocks, same.residual, same.activation) == (2, True, "swish")
    # Residual block with zero kernel: h + act(norm(0)) = h + act(beta) = h + act(0).
    plain = Generator((28, 28, 1), 8, base_filters=4, blocks=1, residual=True, norm="none",
                      name="g2")
    flat = Generator((28, 28, 1), 8, base_filters=4, norm="none", name="g3")
    for v_flat, v in zip(flat.weights, [w for w in plain.weights if "block" not in w.path]):
        v.assign(v_flat)
    for conv in plain.block_convs:
        conv.kernel.assign(tf.zeros_like(conv.kernel))
    np.testing.assert_allclose(plain(z), flat(z), atol=1e-6)
    critic = Discriminator((28, 28, 1), 4, blocks=1, residual=True, norm="layer")
    assert critic(deep(z)).shape == (3, 1)
    vae = VAE((28, 28, 1), 4, base_filters=4, activation="elu", blocks=1)
    assert vae.decoder.blocks == 1 and vae(np.zeros((2, 28, 28, 1), "float32"))[
        "recon_logits"].shape == (2, 28, 28, 1)
    with pytest.raises(ConfigError, match="activation"):
        Generator((28, 28, 1), 8, activation="tanhh")


def test_presets_are_their_base_plus_the_listed_deltas():
    from tfmeta.models.presets import PRESETS
    base = {"gan": PRESETS["dcgan28"], "vae": PRESETS["vae28"], "warp": PRESETS["warp28"]}
    deltas = {
        "dcgan32": {"image_shape": (32, 32, 1)},
        "dcgan64": {"image_shape": (64, 64, 1), "discriminator_filters": 32},
        "tiny": {"latent_dim": 8, "generator_filters": 4, "discriminator_filters": 4,
                 "encoder_filters": 4},
        "vae28_spatial": {"encoder_pooling": "flatten"},
        "tiny_vae": {"latent_dim": 4, "base_filters": 4, "encoder_filters": 4},
        "tiny_warp": {"latent_dim": 4, "base_filters": 4, "integration_steps": 2,
                      "conditional_prior": True, "encoder_filters": 4},
    }
    assert set(PRESETS) == set(deltas) | {"dcgan28", "vae28", "warp28"}
    for name, delta in deltas.items():
        preset = PRESETS[name]
        differs = {k: v for k, v in preset.items() if base[preset["family"]].get(k) != v}
        assert differs == delta, name
    assert "encoder_pooling" not in PRESETS["tiny_warp"]   # the warp base's pooling only
