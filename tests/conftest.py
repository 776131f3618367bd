"""Shared pytest fixtures. Keep this file small; fixtures of one test module live there."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The trainers' default (--onednn=true) in this test process too, whatever TF's own
# default is on this CPU (on for Intel AVX-512 machines, off on some AMD EPYC ones):
# in-process trainer calls (tests/test_evaluate.py) ask for it after TF has started.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import io  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    """$TFMETA_DATA_DIR (real Omniglot/MNIST archives), or skip the test."""
    path = os.environ.get("TFMETA_DATA_DIR")
    if not path:
        pytest.skip("TFMETA_DATA_DIR is not set (real-data test)")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """$TFMETA_CACHE_DIR when set (warm across sessions), else a fresh session folder."""
    return os.environ.get("TFMETA_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))


def write_omniglot_zip(path, alphabets=2, characters=3, drawings=20, seed=0,
                       alphabet_prefix="Alpha"):
    """Writes a small zip in the official Omniglot layout: 105x105 1-bit PNGs, True =
    white background, each drawing a distinct random block pattern of ink. Alphabets
    are named `<alphabet_prefix><a>`."""
    rng = np.random.default_rng(seed)
    stem = os.path.basename(path)[:-len(".zip")]
    with zipfile.ZipFile(path, "w") as archive:
        for a in range(alphabets):
            for c in range(characters):
                for d in range(drawings):
                    ink = np.kron(rng.random((7, 7)) < 0.3, np.ones((15, 15), bool))
                    buf = io.BytesIO()
                    Image.fromarray(~ink).save(buf, format="PNG")  # bool → mode "1"
                    name = (f"{stem}/{alphabet_prefix}{a}/character{c + 1:02d}/"
                            f"{c:04d}_{d + 1:02d}.png")
                    archive.writestr(name, buf.getvalue())


@pytest.fixture(scope="session")
def tiny_omniglot_dir(tmp_path_factory):
    """Folder with fake images_background.zip (2 alphabets x 3 characters x 20
    drawings) and images_evaluation.zip (1 x 2 x 20), official layout."""
    folder = tmp_path_factory.mktemp("tiny_omniglot")
    write_omniglot_zip(str(folder / "images_background.zip"), 2, 3, 20, seed=0)
    write_omniglot_zip(str(folder / "images_evaluation.zip"), 1, 2, 20, seed=1)
    return str(folder)


@pytest.fixture(scope="session")
def pooled_omniglot_dir(tmp_path_factory):
    """Fake archives whose alphabets differ, as the real ones do (published class
    lists pool both): background Bg0, Bg1 x character01..03, evaluation Ev0 x
    character01..02; 20 drawings each."""
    folder = tmp_path_factory.mktemp("pooled_omniglot")
    write_omniglot_zip(str(folder / "images_background.zip"), 2, 3, 20, seed=0,
                       alphabet_prefix="Bg")
    write_omniglot_zip(str(folder / "images_evaluation.zip"), 1, 2, 20, seed=1,
                       alphabet_prefix="Ev")
    return str(folder)


@pytest.fixture(scope="session")
def serving_toy_base(tmp_path_factory):
    """A model repository holding the serving test toy (tests/serving_toy.py, inner_lr
    2.0) exported as model `toy`, version 1, with its warm-up records -> the base path.
    Shared by the serving tests: do not add versions to it."""
    from export.export_saved_model import export_generative_module
    from serving_toy import ToyGenerativeModule

    base = str(tmp_path_factory.mktemp("serving_models"))
    export_generative_module(ToyGenerativeModule(inner_lr=2.0), base, "toy")
    return base
