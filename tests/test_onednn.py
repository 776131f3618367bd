"""TF's oneDNN CPU kernels (our default, tfmeta.runtime) give the meta-gradients of TF's
Eigen kernels: float32 MAML (2nd and 1st order) on the stride-2 Conv-4 and the Reptile
WGAN-GP update of the dcgan28 pair agree to 2e-3 relative. Measured: ~3e-6 on the
Intel AVX-512 machines; on an AMD EPYC without AVX-512 (2026-11-30) 6.4e-4 (MAML 2nd
order), 4.0e-4 (1st order), 1.6e-4 (Reptile WGAN-GP) — oneDNN picks other convolution
algorithms there, and the second-order meta-gradient amplifies their rounding. A wrong
gradient differs at O(1). The fused
oneDNN graphs (and the one grappler reports as a failed remap) change no result beyond
float32 rounding. Each setting needs its own process (tests/onednn_worker.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "onednn_worker.py")


def _run(mode, out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    result = subprocess.run([sys.executable, WORKER, mode, out], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onednn")
    return {mode: _run(mode, str(folder / f"{mode}.npz")) for mode in ("on", "off")}


@pytest.mark.parametrize("name", ["maml2", "maml1", "reptile_gan"])
def test_onednn_kernels_give_the_eigen_meta_updates(both, name):
    on, off = both["on"], both["off"]
    keys = sorted(k for k in off if k.rsplit("_", 1)[0] == name)
    assert keys and sorted(k for k in on if k.rsplit("_", 1)[0] == name) == keys
    a = np.concatenate([on[k].ravel() for k in keys])
    b = np.concatenate([off[k].ravel() for k in keys])
    assert np.linalg.norm(b) > 0
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 2e-3


def test_onednn_cannot_change_after_tensorflow_started():
    import tensorflow as tf
    from tfmeta import runtime
    tf.constant(0)   # TF has started in this process
    on = runtime.onednn_enabled()
    runtime.configure(onednn=on)   # asking for what is running is fine
    with pytest.raises(RuntimeError, match="already started"):
        runtime.configure(onednn=not on)
