"""Named model configurations and builders (GAN pair, VAE, support-set encoder).

A preset is a flat dict; builders take a preset name plus overrides of its keys, build
the models (variables created, one call on dummy input) and return them. Parameter counts
below are for the preset as written (unconditional, context_dim = 0).

  tiny      GAN, 28x28x1, z=8, f=4/4           G 8,925 / D 2,013 (for tests)
  tiny_vae  VAE, 28x28x1, z=4, f=4             9,521 (for tests)
  dcgan28   GAN, 28x28x1, z=64, G f=32, D f=64 G 565,985 / D 431,553: the reference
            "DCGAN-size" pair of the speed benchmark (G ~0.55M, critic ~0.43M)
  dcgan32   GAN, 32x32x1, z=64, G f=32, D f=64 G 688,865 / D 431,553
  dcgan64   GAN, 64x64x1, z=64, G f=32, D f=32 G 1,737,953 / D 463,841
  vae28     VAE, 28x28x1, z=32, f=32           599,425
  warp28    warp generator (tfmeta.models.warp), 28x28x1, z=16, f=32, 4 px: 195,906
  tiny_warp warp generator, z=4, f=4 (for tests)

Conditioning adds parameters: dcgan28 with context_dim=64 has G 996,513 (z and the
context share the first projection) and, with conditional_discriminator, D 447,937; its
support encoder (encoder_filters=32) has 117,888.
"""

import numpy as np

from tfmeta.errors import ConfigError
from tfmeta.models.encoders import SupportEncoder
from tfmeta.models.gan import Discriminator, Generator
from tfmeta.models.vae import VAE
from tfmeta.models.warp import WarpGenerator

__all__ = ["PRESETS", "resolve_preset", "build_gan", "build_vae", "build_warp",
           "build_support_encoder"]

# Each family has one base preset; variants list only what differs (as big_vision's
# base config + small deltas); equal to the earlier written-out dicts (checked when
# derived; tests/test_gan_models.py pins the deltas).
_DCGAN28 = {
    "family": "gan", "image_shape": (28, 28, 1), "latent_dim": 64, "context_dim": 0,
    "generator_filters": 32, "generator_norm": "batch", "discriminator_filters": 64,
    "discriminator_norm": "none", "spectral_norm": False,
    "conditional_discriminator": False, "encoder_filters": 32,
    "activation": "relu", "generator_blocks": 0, "discriminator_blocks": 0,
    "residual": False,
}
_VAE28 = {
    "family": "vae", "image_shape": (28, 28, 1), "latent_dim": 32, "context_dim": 0,
    "base_filters": 32, "norm": "none", "encoder_filters": 32,
    "activation": "relu", "blocks": 0, "residual": False,
}
# Support-conditioned deformation generator (samples are warped support drawings).
_WARP28 = {
    "family": "warp", "image_shape": (28, 28, 1), "latent_dim": 16, "context_dim": 0,
    "base_filters": 32, "max_displacement": 4.0, "integration_steps": 0,
    "conditional_prior": False, "encoder_filters": 32, "encoder_pooling": "flatten",
    "activation": "relu", "flow_stride": 4,
}
PRESETS = {
    "dcgan28": _DCGAN28,
    "dcgan32": {**_DCGAN28, "image_shape": (32, 32, 1)},
    "dcgan64": {**_DCGAN28, "image_shape": (64, 64, 1), "discriminator_filters": 32},
    "tiny": {**_DCGAN28, "latent_dim": 8, "generator_filters": 4,
             "discriminator_filters": 4, "encoder_filters": 4},
    "vae28": _VAE28,
    # vae28 with a layout-keeping support encoder (flattened 4x4 features).
    "vae28_spatial": {**_VAE28, "encoder_pooling": "flatten"},
    "tiny_vae": {**_VAE28, "latent_dim": 4, "base_filters": 4, "encoder_filters": 4},
    "warp28": _WARP28,
    "tiny_warp": {**{k: v for k, v in _WARP28.items() if k != "encoder_pooling"},
                  "latent_dim": 4, "base_filters": 4, "integration_steps": 2,
                  "conditional_prior": True, "encoder_filters": 4},
}


def resolve_preset(preset_name, family=None, image_shape=None, context_dim=None,
                   **overrides):
    """Returns a copy of preset `preset_name` with overrides applied (JSON-able dict).

    Raises ConfigError for an unknown name (listing the valid ones), a preset of another
    `family` ("gan" / "vae"), or an override key the preset does not have.
    """
    if preset_name not in PRESETS:
        raise ConfigError(f"Unknown model preset {preset_name!r}; valid presets: "
                          f"{', '.join(sorted(PRESETS))}.")
    config = dict(PRESETS[preset_name])
    if family is not None and config["family"] != family:
        valid = sorted(k for k, v in PRESETS.items() if v["family"] == family)
        raise ConfigError(f"Preset {preset_name!r} is a {config['family']} preset; "
                          f"{family} presets: {', '.join(valid)}.")
    unknown = sorted(k for k in overrides if k not in config or k == "family")
    if unknown:
        raise ConfigError(f"Unknown override(s) {unknown} for preset {preset_name!r}; "
                          f"valid keys: {sorted(set(config) - {'family'})}.")
    config.update(overrides)
    if image_shape is not None:
        config["image_shape"] = tuple(int(d) for d in image_shape)
    if context_dim is not None:
        config["context_dim"] = int(context_dim)
    return config


def _dummy_inputs(batch, dim, context_dim):
    z = np.zeros((batch, dim), np.float32)
    return z if not context_dim else (z, np.zeros((batch, context_dim), np.float32))


def build_gan(preset_name, image_shape=None, context_dim=None, **overrides):
    """Builds (generator, discriminator) of a "gan" preset.

    `image_shape` / `context_dim` override the preset's; other keyword arguments override
    preset keys (e.g. `generator_filters=16`). The discriminator takes the context too
    only if `conditional_discriminator`. Both are called once on dummy input.
    """
    cfg = resolve_preset(preset_name, "gan", image_shape, context_dim, **overrides)
    generator = Generator(cfg["image_shape"], cfg["latent_dim"], cfg["context_dim"],
                          cfg["generator_filters"], norm=cfg["generator_norm"],
                          activation=cfg["activation"], blocks=cfg["generator_blocks"],
                          residual=cfg["residual"], name="generator")
    d_context = cfg["context_dim"] if cfg["conditional_discriminator"] else 0
    discriminator = Discriminator(cfg["image_shape"], cfg["discriminator_filters"],
                                  context_dim=d_context, spectral_norm=cfg["spectral_norm"],
                                  norm=cfg["discriminator_norm"],
                                  blocks=cfg["discriminator_blocks"], residual=cfg["residual"],
                                  name="discriminator")
    images = generator(_dummy_inputs(2, cfg["latent_dim"], cfg["context_dim"]))
    discriminator(images if not d_context
                  else (images, np.zeros((2, d_context), np.float32)))
    return generator, discriminator


def build_vae(preset_name, image_shape=None, context_dim=None, **overrides):
    """Builds the `VAE` of a "vae" preset (overrides as for `build_gan`)."""
    cfg = resolve_preset(preset_name, "vae", image_shape, context_dim, **overrides)
    vae = VAE(cfg["image_shape"], cfg["latent_dim"], cfg["context_dim"],
              cfg["base_filters"], norm=cfg["norm"], activation=cfg["activation"],
              blocks=cfg["blocks"], residual=cfg["residual"], name="vae")
    images = np.zeros((2,) + tuple(cfg["image_shape"]), np.float32)
    vae(images if not cfg["context_dim"]
        else (images, np.zeros((2, cfg["context_dim"]), np.float32)))
    return vae


def build_warp(preset_name, image_shape=None, context_dim=None, **overrides):
    """Builds the `WarpGenerator` of a "warp" preset (overrides as for `build_gan`)."""
    cfg = resolve_preset(preset_name, "warp", image_shape, context_dim, **overrides)
    return WarpGenerator(cfg["image_shape"], cfg["latent_dim"], cfg["context_dim"],
                         cfg["base_filters"], max_displacement=cfg["max_displacement"],
                         integration_steps=cfg["integration_steps"],
                         conditional_prior=cfg.get("conditional_prior", False),
                         activation=cfg["activation"],
                         flow_stride=cfg.get("flow_stride", 4), name="warp")


def build_support_encoder(preset_name, image_shape=None, context_dim=None, **overrides):
    """Builds the `SupportEncoder` matching a preset (`encoder_filters`, `context_dim`).

    Needs a context_dim > 0 (from the preset or the argument).
    """
    cfg = resolve_preset(preset_name, None, image_shape, context_dim, **overrides)
    if cfg["context_dim"] < 1:
        raise ConfigError(f"build_support_encoder needs context_dim > 0; preset "
                          f"{preset_name!r} has {cfg['context_dim']}: pass context_dim=.")
    encoder = SupportEncoder(cfg["context_dim"], cfg["encoder_filters"],
                             image_shape=cfg["image_shape"],
                             pooling=cfg.get("encoder_pooling", "mean"),
                             name="support_encoder")
    encoder(np.zeros((1,) + tuple(cfg["image_shape"]), np.float32))
    return encoder
