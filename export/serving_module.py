"""Serving signatures for a generative module (WORKSPACE.md "Serving").

`build_serving_archive(module)` wraps any *generative module* (`image_shape`,
`latent_dim`, `variables`, `sample`, `adapt_and_sample`) in a trackable object that saves
as a SavedModel (tag `serve`) loadable by both `tf.saved_model.load` and the C++ loader
used by `saved_model_cli run` and TF Serving. Only the module's raw variables are tracked,
never its Keras models (a Keras 3 model tracked as a child object breaks the C++ loader,
TF_NOTES.md "SavedModel and serving").

Signatures (all batch dimensions are dynamic, shown as -1 by `saved_model_cli`):

* `serving_default`: `seed` int64 [], `num_samples` int32 [] -> `images` uint8 [N,H,W,C]
* `sample_png`: `seed` int64 [], `num_samples` int32 [] -> `png` string [N] (PNG bytes)
* `adapt_and_sample`: `support_images` uint8 [K,H,W,C], `num_samples` int32 [],
  `seed` int64 [], `steps` int32 [] -> `images` uint8 [N,H,W,C]

Conventions:
* Pixels on the wire are uint8 0..255, mapped linearly from the model's [-1, 1] in both
  directions by `tfmeta.data.unscale_images` / `scale_images` with `"gan"` (clip to
  [-1, 1], then `round((x + 1) * 127.5)`, half to even): `support_images` are uint8 so
  clients send what they read from image files (4x smaller than float32). Strokes are
  bright on a dark background, like the training data.
* `steps` is required: TF Serving signatures have no optional inputs, and a separate
  "default steps" signature would hide a number that changes results. `steps = 0` samples
  the unadapted generator (for modules that draw the same latents in both methods, as
  the test toy does, this equals `serving_default` for the same seed).
* Same `seed` and inputs -> same images (stateless RNG inside the module).
* In-graph guards (so the stock `tensorflow_model_server`, which has no request limits of
  its own, cannot be asked for unbounded work): `1 <= num_samples <= max_num_samples`,
  `0 <= steps <= max_steps`, `1 <= K <= max_support`, no blank support image (one grey
  level, e.g. all black or all white); a violation fails the call with INVALID_ARGUMENT.
"""

import tensorflow as tf

from tfmeta.data import scale_images, unscale_images
from tfmeta.errors import ConfigError

__all__ = [
    "ServingArchive",
    "build_serving_archive",
    "SIGNATURE_NAMES",
]

SIGNATURE_NAMES = ("serving_default", "sample_png", "adapt_and_sample")


class ServingArchive(tf.Module):
    """Trackable holding a generative module's variables and its three signatures.

    Attributes saved with the model: `tracked_variables` (the tf.Variables the signatures
    read, i.e. the module's variables) and the
    `tf.function`s `serving_default`, `sample_png`, `adapt_and_sample` (also callable
    eagerly, e.g. `archive.serving_default(seed=..., num_samples=...)["images"]`).
    The module itself is held outside the object graph so its Keras models are not saved.
    """

    def __init__(self, module, max_num_samples=1024, max_steps=1000, max_support=256):
        super().__init__()
        height, width, channels = (int(d) for d in module.image_shape)
        self.image_shape = (height, width, channels)
        # A lambda closure keeps the module out of the trackable object graph.
        self._get_module = lambda: module
        image_batch = [None, height, width, channels]

        def check_num_samples(num_samples):
            return [tf.debugging.assert_greater(num_samples, 0,
                                                message="num_samples must be >= 1"),
                    tf.debugging.assert_less_equal(
                        num_samples, max_num_samples,
                        message=f"num_samples must be <= {max_num_samples}")]

        def sample_uint8(seed, num_samples):
            with tf.control_dependencies(check_num_samples(num_samples)):
                images = self._get_module().sample(tf.identity(num_samples), seed)
            return tf.ensure_shape(unscale_images(images, "gan"), image_batch)

        scalar_specs = [tf.TensorSpec([], tf.int64, name="seed"),
                        tf.TensorSpec([], tf.int32, name="num_samples")]

        @tf.function(input_signature=scalar_specs, autograph=False)
        def serving_default(seed, num_samples):
            """seed int64 [], num_samples int32 [] -> {"images": uint8 [N, H, W, C]}."""
            return {"images": sample_uint8(seed, num_samples)}

        @tf.function(input_signature=scalar_specs, autograph=False)
        def sample_png(seed, num_samples):
            """seed int64 [], num_samples int32 [] -> {"png": string [N]} (PNG bytes)."""
            images = sample_uint8(seed, num_samples)
            png = tf.map_fn(tf.io.encode_png, images,
                            fn_output_signature=tf.TensorSpec([], tf.string))
            return {"png": tf.ensure_shape(png, [None])}

        @tf.function(input_signature=[
            tf.TensorSpec(image_batch, tf.uint8, name="support_images"),
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([], tf.int64, name="seed"),
            tf.TensorSpec([], tf.int32, name="steps"),
        ], autograph=False)
        def adapt_and_sample(support_images, num_samples, seed, steps):
            """support_images uint8 [K, H, W, C], num_samples int32 [], seed int64 [],
            steps int32 [] -> {"images": uint8 [N, H, W, C]}."""
            num_support = tf.shape(support_images)[0]
            checks = check_num_samples(num_samples) + [
                tf.debugging.assert_greater_equal(steps, 0, message="steps must be >= 0"),
                tf.debugging.assert_less_equal(steps, max_steps,
                                               message=f"steps must be <= {max_steps}"),
                tf.debugging.assert_greater(num_support, 0,
                                            message="support_images must hold >= 1 image"),
                tf.debugging.assert_less_equal(
                    num_support, max_support,
                    message=f"support_images must hold <= {max_support} images"),
                # A blank image (one grey level: all black, all white) holds no drawing.
                tf.debugging.assert_greater(
                    tf.reduce_min(tf.reduce_max(support_images, axis=[1, 2, 3])
                                  - tf.reduce_min(support_images, axis=[1, 2, 3])),
                    tf.constant(0, tf.uint8),
                    message="every support image must hold a drawing: one is blank "
                            "(a single grey level, e.g. all black or all white)"),
            ]
            with tf.control_dependencies(checks):
                support = scale_images(support_images, "gan")
                images = self._get_module().adapt_and_sample(
                    support, tf.identity(num_samples), seed, tf.identity(steps))
            return {"images": tf.ensure_shape(unscale_images(images, "gan"), image_batch)}

        self.serving_default = serving_default
        self.sample_png = sample_png
        self.adapt_and_sample = adapt_and_sample
        # Track the raw tf.Variables the traced signatures capture: the only state the
        # SavedModel needs. (Tracking Keras 3 variable wrappers instead makes the saver
        # write copies, which the C++ loader then cannot find under the captured names.)
        captured = {}
        for fn in self.signatures.values():
            for variable in fn.variables:
                captured.setdefault(id(variable), variable)
        self.tracked_variables = list(captured.values())

    @property
    def signatures(self):
        """{signature name: concrete function} for `tf.saved_model.save`."""
        return {name: getattr(self, name).get_concrete_function()
                for name in SIGNATURE_NAMES}

    def save(self, path):
        """Writes the SavedModel (tag `serve`, the three signatures) to `path`."""
        tf.saved_model.save(self, path, signatures=self.signatures)


def build_serving_archive(module, max_num_samples=1024, max_steps=1000, max_support=256):
    """Wraps a generative module as a `ServingArchive` (see module docstring).

    Args:
      module: object with `image_shape` (H, W, C), `latent_dim`, `variables` (list of
        variables), `sample(num_samples, seed)` and `adapt_and_sample(support_images,
        num_samples, seed, steps)` returning float images [N, H, W, C] in [-1, 1].
      max_num_samples, max_steps, max_support: in-graph limits on requests.

    Returns:
      `ServingArchive`; call `.save(path)` to write the SavedModel.
    """
    missing = [name for name in ("image_shape", "latent_dim", "variables", "sample",
                                 "adapt_and_sample") if not hasattr(module, name)]
    if missing:
        raise ConfigError(f"build_serving_archive: the module {type(module).__name__} lacks "
                          f"{', '.join(missing)}; see WORKSPACE.md 'Serving' for the contract")
    return ServingArchive(module, max_num_samples, max_steps, max_support)
