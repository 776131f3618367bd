"""End to end: export -> TF Serving-compatible gRPC server -> official stubs and our client
(export/serve.py, export/client.py).
"""

import io
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from export import client as client_lib
from export.export_saved_model import export_generative_module
from export.serve import ModelServer
from export.serving_module import build_serving_archive

sys.path.insert(0, os.path.dirname(__file__))
from fakes import serve_cli  # noqa: E402
from serving_toy import ToyGenerativeModule  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SAMPLES = 32
_State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture(scope="module")
def toy():
    return ToyGenerativeModule(inner_lr=2.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory, toy):
    base = str(tmp_path_factory.mktemp("models"))
    export_generative_module(toy, base, "toy")
    server = ModelServer({"toy": os.path.join(base, "toy")}, port=0,
                         max_num_samples=MAX_SAMPLES, poll_seconds=0.2)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, port, channel, base
    channel.close()
    server.stop(grace=1)


def _request(signature="serving_default", model="toy", version=None, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if signature:
        request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _sample_inputs(seed=3, num_samples=4):
    return dict(seed=np.int64(seed), num_samples=np.int32(num_samples))


def test_predict_matches_in_process_archive(served, toy):
    _, _, channel, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    archive = build_serving_archive(toy)
    expected = archive.serving_default(seed=tf.constant(3, tf.int64),
                                       num_samples=tf.constant(4))["images"].numpy()

    response = stub.Predict(_request(signature="", **_sample_inputs()), timeout=30)
    images = tf.make_ndarray(response.outputs["images"])
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("toy", 1, "serving_default")

    png = tf.make_ndarray(stub.Predict(_request("sample_png", **_sample_inputs()),
                                       timeout=30).outputs["png"])
    assert png.shape == (4,)
    np.testing.assert_array_equal(
        np.stack([np.asarray(Image.open(io.BytesIO(b)))[..., None] for b in png]), expected)

    support = _support()   # a stroke: blank images are refused (INVALID_ARGUMENT)
    adapted = tf.make_ndarray(stub.Predict(_request(
        "adapt_and_sample", support_images=support, steps=np.int32(2),
        **_sample_inputs(num_samples=5)), timeout=30).outputs["images"])
    want = archive.adapt_and_sample(support_images=tf.constant(support),
                                    num_samples=tf.constant(5),
                                    seed=tf.constant(3, tf.int64),
                                    steps=tf.constant(2))["images"].numpy()
    np.testing.assert_array_equal(adapted, want)


def test_model_metadata_and_status(served):
    server, _, channel, _ = served
    # The export's warm-up records (one per signature) were replayed before serving.
    assert server.models["toy"].versions[1].warmup_count == 3
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    sigs = signatures.signature_def
    assert set(sigs) == {"serving_default", "sample_png", "adapt_and_sample"}
    shape = [d.size for d in sigs["adapt_and_sample"].inputs["support_images"].tensor_shape.dim]
    assert shape == [-1, 28, 28, 1]
    assert sigs["sample_png"].outputs["png"].dtype == tf.string.as_datatype_enum

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "toy"
    versions = status_stub.GetModelStatus(status, timeout=30).model_version_status
    assert [(v.version, v.state) for v in versions] == [(1, _State.AVAILABLE)]
    status.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        status_stub.GetModelStatus(status, timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def _support(k=2, ink=True):
    images = np.zeros((k, 28, 28, 1), np.uint8)
    images[:, 10:18, 13:15] = 255 if ink else 0   # a bright stroke on dark
    return images


@pytest.mark.parametrize("request_kwargs, code", [
    (dict(model="nope", **_sample_inputs()), grpc.StatusCode.NOT_FOUND),
    (dict(version=7, **_sample_inputs()), grpc.StatusCode.NOT_FOUND),
    (dict(signature="nope", **_sample_inputs()), grpc.StatusCode.FAILED_PRECONDITION),
    (dict(seed=np.int32(3), num_samples=np.int32(4)), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(seed=np.int64([3, 4]), num_samples=np.int32(4)), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(seed=np.int64(3)), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(extra=np.int32(1), **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
    (_sample_inputs(num_samples=MAX_SAMPLES + 1), grpc.StatusCode.INVALID_ARGUMENT),
    (_sample_inputs(num_samples=0), grpc.StatusCode.INVALID_ARGUMENT),
    (_sample_inputs(num_samples=-3), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(signature="adapt_and_sample", support_images=np.zeros((2, 27, 28, 1), np.uint8),
          steps=np.int32(1), **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(signature="adapt_and_sample", support_images=_support().astype(np.float32),
          steps=np.int32(1), **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(signature="adapt_and_sample", support_images=_support(0), steps=np.int32(1),
          **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(signature="adapt_and_sample", support_images=_support(), steps=np.int32(-1),
          **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
    # Blank drawings: all black, all white (one grey level holds no drawing).
    (dict(signature="adapt_and_sample", support_images=_support(ink=False),
          steps=np.int32(1), **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(signature="adapt_and_sample", support_images=_support(ink=False) + 255,
          steps=np.int32(1), **_sample_inputs()), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_requests_get_status_codes_and_server_keeps_serving(served, request_kwargs, code):
    _, _, channel, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(_request(**request_kwargs), timeout=30)
    assert e.value.code() == code, e.value.details()
    ok = stub.Predict(_request(**_sample_inputs(num_samples=1)), timeout=30)
    assert tf.make_ndarray(ok.outputs["images"]).shape == (1, 28, 28, 1)


def test_new_version_is_picked_up_by_polling(tmp_path, toy):
    base = str(tmp_path)
    export_generative_module(toy, base, "m", warmup=False)
    server = ModelServer({"m": os.path.join(base, "m")}, port=0, poll_seconds=0.1)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
            version = stub.Predict(_request(model="m", **_sample_inputs()),
                                   timeout=30).model_spec.version.value
            assert version == 1
            # A different toy (other weights) as version 2.
            export_generative_module(ToyGenerativeModule(init_seed=5), base, "m")
            for _ in range(300):   # the server polls every 0.1 s: give it ~300 polls
                if version == 2:
                    break
                time.sleep(0.1)
                response = stub.Predict(_request(model="m", **_sample_inputs()), timeout=30)
                version = response.model_spec.version.value
            assert version == 2
            expected = build_serving_archive(ToyGenerativeModule(init_seed=5)).serving_default(
                seed=tf.constant(3, tf.int64), num_samples=tf.constant(4))["images"].numpy()
            np.testing.assert_array_equal(tf.make_ndarray(response.outputs["images"]),
                                          expected)
            # Latest-version policy: version 1 was unloaded after 2 became available.
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(_request(model="m", version=1, **_sample_inputs()), timeout=30)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            status = get_model_status_pb2.GetModelStatusRequest()
            status.model_spec.name = "m"
            versions = status_stub.GetModelStatus(status, timeout=30).model_version_status
            assert [(v.version, v.state) for v in versions] == [
                (1, _State.END), (2, _State.AVAILABLE)]
    finally:
        server.stop(grace=1)


def test_message_size_limit(served):
    _, _, _, base = served
    server = ModelServer({"toy": os.path.join(base, "toy")}, port=0, max_message_mb=0.01)
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            big = _request("adapt_and_sample", support_images=_support(20),
                           steps=np.int32(1), **_sample_inputs())  # ~16 KB > 10 KB
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(big, timeout=30)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            small = stub.Predict(_request(**_sample_inputs(num_samples=2)), timeout=30)
            assert tf.make_ndarray(small.outputs["images"]).shape == (2, 28, 28, 1)
    finally:
        server.stop(grace=1)


def _ink_on_paper(path, row):
    # Dark strokes on a white 105x105 page, like the raw Omniglot PNGs.
    page = np.full((105, 105), 255, np.uint8)
    page[row:row + 20, 30:75] = 0
    Image.fromarray(page).save(path)


def test_client_writes_png_grid(served, tmp_path):
    _, port, _, _ = served
    target = f"127.0.0.1:{port}"
    out = str(tmp_path / "samples.png")
    grid = client_lib.run(target, "toy", num_samples=5, seed=3, out=out)
    written = np.asarray(Image.open(out))
    np.testing.assert_array_equal(written, grid[..., 0])
    with client_lib.GenerativeClient(target, "toy") as c:
        samples = c.sample(5, 3)
        assert c.image_shape() == (28, 28, 1)
    # Grid: 5 columns of 28 px + 2 px padding; first cell is the first sample.
    assert grid.shape == (2 + 30, 2 + 5 * 30, 1)
    np.testing.assert_array_equal(grid[2:30, 2:30], samples[0])

    (tmp_path / "support").mkdir()
    for i in range(3):
        _ink_on_paper(str(tmp_path / "support" / f"s{i}.png"), 20 + 10 * i)
    support = client_lib.load_support_images(sorted(str(p) for p in tmp_path.glob("support/*")),
                                             28, 28, 1)
    # Inverted: background becomes 0, strokes bright.
    assert support.shape == (3, 28, 28, 1) and support[:, 0].max() == 0
    assert support.max() == 255
    out = str(tmp_path / "adapted.png")
    grid = client_lib.run(target, "toy", num_samples=4, seed=3, out=out,
                          support=str(tmp_path / "support" / "*.png"), steps=2)
    # Support row + separator row + one row of 4 samples; 4 columns.
    assert grid.shape == (2 + 3 * 30, 2 + 4 * 30, 1)
    np.testing.assert_array_equal(grid[2:30, 2:30], support[0])


def test_client_errors_are_clear(served):
    _, port, _, _ = served
    with pytest.raises(client_lib.ClientError, match="not served"):
        client_lib.GenerativeClient(f"127.0.0.1:{port}", "nope").sample(1, 0)
    with pytest.raises(client_lib.ClientError, match="version 9"):
        client_lib.GenerativeClient(f"127.0.0.1:{port}", "toy", version=9).sample(1, 0)
    # A port nobody listens on (the served port, minus one, is almost surely free...
    # but a fresh bound-then-closed socket is certain).
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(client_lib.ClientError, match="cannot reach"):
        client_lib.GenerativeClient(f"127.0.0.1:{free}", "toy", timeout=2).sample(1, 0)


def test_client_protos_roundtrip_and_no_tensorflow_runtime():
    for value in [np.int64(-5), np.int32(7), np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1),
                  np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)]:
        proto = client_lib.tensor_proto(value)
        np.testing.assert_array_equal(tf.make_ndarray(proto), value)
        np.testing.assert_array_equal(client_lib.tensor_value(proto), value)
        np.testing.assert_array_equal(client_lib.tensor_value(tf.make_tensor_proto(value)),
                                      value)
    strings = tf.make_tensor_proto(np.array([b"a", b"bc"], dtype=object))
    assert list(client_lib.tensor_value(strings)) == [b"a", b"bc"]
    # In a fresh process the client loads without the TF runtime (nor tfmeta).
    code = ("import sys, export.client; "
            "bad = [m for m in sys.modules if m.startswith(('tensorflow.python', 'tfmeta'))]; "
            "assert not bad, bad[:5]; assert 'tensorflow' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_serve_cli_subprocess_sigterm(served):
    _, _, _, base = served
    with serve_cli(["--model_config_file", os.path.join(base, "models.config"),
                    "--port", "0"]) as (proc, announced):
        port = announced.get("grpc")
        assert port, proc.stderr.read()[-3000:] if proc.poll() is not None else "no port"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(_request(**_sample_inputs(num_samples=2)), timeout=30)
            assert tf.make_ndarray(response.outputs["images"]).shape == (2, 28, 28, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "shutting down" in proc.stdout.read()
