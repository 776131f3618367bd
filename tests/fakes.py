"""Tiny synthetic data shared by tests (and the worker scripts tests launch), and the
model-server CLI started as a subprocess."""

import contextlib
import os
import subprocess
import sys

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


@contextlib.contextmanager
def serve_cli(args, stderr=subprocess.PIPE):
    """`python -m export.serve ARGS --grace_seconds 1` from the repository root, read
    until it serves: yields (proc, announced) where announced holds what it printed:
    "grpc" / "rest" (ports) and "page" (the drawing page URL), as far as printed (an
    exit before serving leaves it partial: check and read proc.stderr). The process is
    killed on exit if it is still running (tests stop it with SIGTERM themselves)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "export.serve", *args, "--grace_seconds", "1"], cwd=repo,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), stdout=subprocess.PIPE,
        stderr=stderr, text=True)
    try:
        announced = {}
        for line in proc.stdout:
            if line.startswith("drawing page at "):
                announced["page"] = line.split(" at ", 1)[1].strip()
            elif line.startswith("REST API listening on "):
                announced["rest"] = int(line.rsplit(":", 1)[1])
            elif line.startswith("listening on "):
                announced["grpc"] = int(line.rsplit(":", 1)[1])
                break
        yield proc, announced
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
