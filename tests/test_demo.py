"""The README's main command end to end with tiny settings (slow tier):
meta-train → support PNGs → export → serve (subprocess) → gRPC client → grid PNG."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("config, steps", [("configs/tiny_gan.cfg", "--steps=2"),
                                           # the config's own steps (0): the default path
                                           ("configs/tiny_warp.cfg", "--steps=-1")])
def test_demo_pipeline_end_to_end(tmp_path, data_dir, config, steps):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.demo", f"--out={out}", f"--config={config}",
         steps, "--num_samples=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TFMETA_DATA_DIR": data_dir})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in range(1, 6):
        assert f"=== [{stage}/5]" in proc.stdout
    assert "server stopped (exit code 0)" in proc.stdout
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.shape[0] > 3 * 28 and grid.shape[1] >= 5 * 28   # support row + samples
    assert len(list((out / "support").glob("*.png"))) == 5
    assert (out / "models" / "omniglot" / "1" / "saved_model.pb").exists()
    assert (out / "models" / "models.config").exists()
