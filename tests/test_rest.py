"""REST API of the bundled model server (export/rest.py) against its gRPC port: the same
models give the same images, and every request the gRPC port refuses is refused with TF
Serving's HTTP code and an `{"error": ...}` body.
"""

import base64
import concurrent.futures
import http.client
import json
import math
import os
import signal
import sys
import threading
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, prediction_service_pb2_grpc)

from export.rest import HTTP_STATUS
from export.serve import ModelServer

sys.path.insert(0, os.path.dirname(__file__))
from fakes import serve_cli  # noqa: E402
from test_serving import MAX_SAMPLES, _request, _sample_inputs, _support  # noqa: E402

_SAMPLE = {"seed": 3, "num_samples": 4}  # _sample_inputs() as JSON
_PREDICT = "/v1/models/toy:predict"


class _Rows(tf.Module):
    """Signatures with a batch dimension (the row format's case; the toy's are scalar)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.string, name="tag")])
    def several(self, x, tag):
        return {"y": x * 0.5 + 2.0, "tag_bytes": tag,
                "length": tf.strings.length(tag, unit="BYTE")}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def half(self, x):
        return {"y": x * 0.5 + 2.0}


@pytest.fixture(scope="module")
def served(serving_toy_base, tmp_path_factory):
    rows_base = str(tmp_path_factory.mktemp("rows"))
    module = _Rows()
    tf.saved_model.save(module, os.path.join(rows_base, "1"), signatures={
        "serving_default": module.several.get_concrete_function(),
        "half": module.half.get_concrete_function()})
    server = ModelServer({"toy": os.path.join(serving_toy_base, "toy"), "rows": rows_base},
                         port=0, rest_api_port=0, max_num_samples=MAX_SAMPLES,
                         poll_seconds=0.2)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield types.SimpleNamespace(
        server=server, rest_port=server.rest_api_port,
        predict=prediction_service_pb2_grpc.PredictionServiceStub(channel),
        status=model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()
    server.stop(grace=1)


def _http(port, method, path, body=None, connection=None):
    """-> (HTTP status, parsed JSON response). `body`: JSON-able, or bytes as they are."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data)
        response = conn.getresponse()
        raw = response.read()
        assert response.getheader("Content-Type") == "application/json", raw[:200]
        return response.status, json.loads(raw)
    finally:
        if connection is None:
            conn.close()


def _grpc_predict(served, **request_kwargs):
    response = served.predict.Predict(_request(**request_kwargs), timeout=60)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def test_status_and_metadata_match_grpc(served):
    want = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    for path in ["/v1/models/toy", "/v1/models/toy/versions/1"]:
        assert _http(served.rest_port, "GET", path) == (200, want)

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    served.predict.GetModelMetadata(request, timeout=60).metadata["signature_def"].Unpack(
        signature_map)
    grpc_json = json_format.MessageToDict(signature_map, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
    for path in ["/v1/models/toy/metadata", "/v1/models/toy/versions/1/metadata"]:
        status, body = _http(served.rest_port, "GET", path)
        assert status == 200
        assert body["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
        assert body["metadata"]["signature_def"] == grpc_json
    support = grpc_json["signature_def"]["adapt_and_sample"]["inputs"]["support_images"]
    assert support["dtype"] == "DT_UINT8"
    assert [d["size"] for d in support["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]


def test_predict_returns_the_grpc_images(served):
    port = served.rest_port
    want = _grpc_predict(served, **_sample_inputs())["images"]
    for path, body in [(_PREDICT, {"inputs": _SAMPLE}),
                       ("/v1/models/toy/versions/1:predict",
                        {"signature_name": "serving_default", "inputs": _SAMPLE})]:
        status, response = _http(port, "POST", path, body)
        assert status == 200 and set(response) == {"outputs"}
        images = np.array(response["outputs"])
        assert images.shape == (4, 28, 28, 1)
        np.testing.assert_array_equal(images.astype(np.uint8), want)

    # DT_STRING PNG bytes come back as {"b64": ...}, one per sample.
    png = _grpc_predict(served, signature="sample_png", **_sample_inputs())["png"]
    status, response = _http(port, "POST", _PREDICT,
                             {"signature_name": "sample_png", "inputs": _SAMPLE})
    assert status == 200
    assert [base64.b64decode(v["b64"]) for v in response["outputs"]] == list(png)

    support = _support()
    want = _grpc_predict(served, signature="adapt_and_sample", support_images=support,
                         steps=np.int32(2), **_sample_inputs(num_samples=5))["images"]
    status, response = _http(port, "POST", _PREDICT, {
        "signature_name": "adapt_and_sample",
        "inputs": {"support_images": support.tolist(), "steps": 2, "seed": 3,
                   "num_samples": 5}})
    assert status == 200
    np.testing.assert_array_equal(np.array(response["outputs"], np.uint8), want)


def test_row_and_columnar_formats(served):
    port = served.rest_port
    # TF Serving's own example (half_plus_three's shape): one input, one output.
    assert _http(port, "POST", "/v1/models/rows:predict", {
        "signature_name": "half", "instances": [1.0, 2.0, 5.0]}) == (
            200, {"predictions": [2.5, 3.0, 4.5]})
    assert _http(port, "POST", "/v1/models/rows:predict", {
        "signature_name": "half", "inputs": [1.0, 2]}) == (200, {"outputs": [2.5, 3.0]})
    # Several outputs: one object per row; float32 written as its shortest decimal; a
    # `_bytes` output as base64; strings in as UTF-8 text or {"b64": ...}.
    binary = {"b64": base64.b64encode(b"\xff\0").decode()}
    status, body = _http(port, "POST", "/v1/models/rows:predict", {"instances": [
        {"x": 1.0, "tag": "ab"}, {"x": 0.2, "tag": binary}]})
    assert (status, body) == (200, {"predictions": [
        {"y": 2.5, "tag_bytes": {"b64": "YWI="}, "length": 2},
        {"y": 2.1, "tag_bytes": {"b64": "/wA="}, "length": 2}]})
    assert _http(port, "POST", "/v1/models/rows:predict", {
        "inputs": {"x": [1.0], "tag": ["ab"]}}) == (200, {"outputs": {
            "y": [2.5], "tag_bytes": [{"b64": "YWI="}], "length": [2]}})
    # NaN and Infinity tokens, both ways (as TF Serving's JSON).
    status, body = _http(port, "POST", "/v1/models/rows:predict", b'{"signature_name": '
                         b'"half", "inputs": [NaN, Infinity]}')
    assert status == 200 and math.isnan(body["outputs"][0]) and body["outputs"][1] == math.inf
    # The toy's scalar inputs cannot be fed as rows: refused with what to do instead.
    status, body = _http(port, "POST", _PREDICT, {"instances": [_SAMPLE]})
    assert status == 400 and '{"inputs"' in body["error"] and "scalar" in body["error"]


_BLANK = np.zeros((2, 28, 28, 1), np.uint8)


def _adapt(support, steps=1, value=None):
    """(gRPC kwargs, REST body) of one adapt_and_sample request; `value`: the JSON
    support_images when not `support` itself."""
    grpc_kwargs = dict(signature="adapt_and_sample", support_images=support,
                       steps=np.int32(steps), **_sample_inputs())
    return grpc_kwargs, {"signature_name": "adapt_and_sample", "inputs": dict(
        support_images=support.tolist() if value is None else value, steps=steps,
        **_SAMPLE)}


# (id, gRPC call, its request, expected code, REST method, path, body, same message)
_BAD = [
    ("unknown model", "predict", dict(model="nope", **_sample_inputs()),
     grpc.StatusCode.NOT_FOUND, "POST", "/v1/models/nope:predict", {"inputs": _SAMPLE}, True),
    ("unknown version", "predict", dict(version=7, **_sample_inputs()),
     grpc.StatusCode.NOT_FOUND, "POST", "/v1/models/toy/versions/7:predict",
     {"inputs": _SAMPLE}, True),
    ("unknown signature", "predict", dict(signature="nope", **_sample_inputs()),
     grpc.StatusCode.FAILED_PRECONDITION, "POST", _PREDICT,
     {"signature_name": "nope", "inputs": _SAMPLE}, True),
    ("wrong dtype", "predict", dict(seed=np.int32(3), num_samples=np.int32(4)),
     grpc.StatusCode.INVALID_ARGUMENT, "POST", _PREDICT,
     {"inputs": {"seed": 3.5, "num_samples": 4}}, False),
    ("wrong shape", "predict", dict(seed=np.int64([3, 4]), num_samples=np.int32(4)),
     grpc.StatusCode.INVALID_ARGUMENT, "POST", _PREDICT,
     {"inputs": {"seed": [3, 4], "num_samples": 4}}, True),
    ("missing input", "predict", dict(seed=np.int64(3)),
     grpc.StatusCode.INVALID_ARGUMENT, "POST", _PREDICT, {"inputs": {"seed": 3}}, True),
    ("extra input", "predict", dict(extra=np.int32(1), **_sample_inputs()),
     grpc.StatusCode.INVALID_ARGUMENT, "POST", _PREDICT,
     {"inputs": dict(extra=1, **_SAMPLE)}, True),
] + [
    (f"num_samples={n}", "predict", _sample_inputs(num_samples=n),
     grpc.StatusCode.INVALID_ARGUMENT, "POST", _PREDICT,
     {"inputs": {"seed": 3, "num_samples": n}}, True)
    for n in (MAX_SAMPLES + 1, 0, -3)
] + [
    (name, "predict", grpc_kwargs, grpc.StatusCode.INVALID_ARGUMENT, "POST", _PREDICT, body,
     same)
    for name, (grpc_kwargs, body), same in [
        ("support shape", _adapt(np.zeros((2, 27, 28, 1), np.uint8)), True),
        ("support dtype", _adapt(_support().astype(np.float32),
                                 value=(_support() / 255.0).tolist()), False),
        ("no support images", _adapt(_support(0)), False),
        ("steps=-1", _adapt(_support(), steps=-1), True),
        ("blank black support", _adapt(_BLANK), True),
        ("blank white support", _adapt(_BLANK + 255), True),
    ]
] + [
    ("status: unknown model", "status", dict(name="nope"), grpc.StatusCode.NOT_FOUND,
     "GET", "/v1/models/nope", None, True),
    ("status: unknown version", "status", dict(name="toy", version=7),
     grpc.StatusCode.NOT_FOUND, "GET", "/v1/models/toy/versions/7", None, True),
    ("metadata: unknown model", "metadata", dict(name="nope"), grpc.StatusCode.NOT_FOUND,
     "GET", "/v1/models/nope/metadata", None, True),
    ("metadata: unknown version", "metadata", dict(name="toy", version=7),
     grpc.StatusCode.NOT_FOUND, "GET", "/v1/models/toy/versions/7/metadata", None, True),
]


def _grpc_error(served, call, kwargs):
    """-> the RpcError of one gRPC call expected to fail."""
    if call == "predict":
        method, request = served.predict.Predict, _request(**kwargs)
    else:
        request = (get_model_status_pb2.GetModelStatusRequest() if call == "status" else
                   get_model_metadata_pb2.GetModelMetadataRequest(
                       metadata_field=["signature_def"]))
        request.model_spec.name = kwargs["name"]
        if "version" in kwargs:
            request.model_spec.version.value = kwargs["version"]
        method = (served.status.GetModelStatus if call == "status"
                  else served.predict.GetModelMetadata)
    with pytest.raises(grpc.RpcError) as e:
        method(request, timeout=60)
    return e.value


@pytest.mark.parametrize("call, kwargs, code, method, path, body, same_message",
                         [case[1:] for case in _BAD], ids=[case[0] for case in _BAD])
def test_bad_requests_refused_alike_on_both_ports(served, call, kwargs, code, method, path,
                                                  body, same_message):
    error = _grpc_error(served, call, kwargs)
    assert error.code() == code, error.details()
    status, response = _http(served.rest_port, method, path, body)
    assert status == HTTP_STATUS[code] and status in (400, 404), response
    assert set(response) == {"error"} and response["error"].strip()
    if same_message:
        assert response["error"] == error.details()
    # Still serving.
    assert _http(served.rest_port, "POST", _PREDICT, {"inputs": _SAMPLE})[0] == 200


_B64_TAG = {"inputs": {"x": [1.0], "tag": [{"b64": "not base64!"}]}}


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", _PREDICT, b"", 400, "The document is empty"),
    ("POST", _PREDICT, b"{not json", 400, "JSON Parse error"),
    ("POST", _PREDICT, [1, 2], 400, "must be a JSON object"),
    ("POST", _PREDICT, {"signature_name": 1, "inputs": _SAMPLE}, 400, "must be a string"),
    ("POST", _PREDICT, {"inputs": _SAMPLE, "instances": [_SAMPLE]}, 400, "not both"),
    ("POST", _PREDICT, {"signature_name": "serving_default"}, 400, "Missing 'inputs'"),
    ("POST", _PREDICT, {"inputs": 3}, 400, "plain value"),
    ("POST", _PREDICT, {"inputs": {"seed": True, "num_samples": 4}}, 400, "not of type int64"),
    ("POST", _PREDICT, _adapt(_support(), value=[[[[300]] * 28] * 28])[1], 400,
     "outside the range of uint8"),
    ("POST", _PREDICT, _adapt(_support(), value=[[[[0]] * 28] * 28, [[0]]])[1], 400,
     "not rectangular"),
    ("POST", "/v1/models/rows:predict", _B64_TAG, 400, "not valid base64"),
    ("POST", "/v1/models/rows:predict", {"inputs": {"x": [1.0], "tag": ["\ud800"]}}, 400,
     "not valid UTF-8"),
    ("POST", "/v1/models/rows:predict", {"signature_name": "half", "inputs": [1e300]}, 400,
     "loss of precision"),
    ("POST", "/v1/models/rows:predict", {"signature_name": "half", "instances": []}, 400,
     "non-empty list"),
    ("POST", "/v1/models/toy/labels/stable:predict", {"inputs": _SAMPLE}, 404, "label"),
    ("POST", "/v1/models/toy/versions/99999999999999999999:predict", {"inputs": _SAMPLE},
     400, "Failed to convert version"),
    ("GET", "/v1/models/toy/versions/" + "9" * 5000, None, 400, "Failed to convert version"),
    ("POST", "/v1/models/toy:classify", {"examples": []}, 501, "not implemented"),
    ("GET", "/v1/models", None, 400, "Missing model name"),
    ("GET", "/v1/foo", None, 400, "Malformed request"),
    ("GET", "/v1/models/toy:predict", None, 400, "Malformed request"),
    ("DELETE", "/v1/models/toy", None, 400, "Malformed request"),
    ("GET", "/models/toy", None, 404, "no such endpoint"),
])
def test_rest_only_bad_requests(served, method, path, body, status, fragment):
    got, response = _http(served.rest_port, method, path, body)
    assert (got, set(response)) == (status, {"error"}), response
    assert fragment in response["error"]


def test_body_over_the_message_limit(serving_toy_base):
    server = ModelServer({"toy": os.path.join(serving_toy_base, "toy")}, port=0,
                         rest_api_port=0, max_message_mb=0.01)
    port = server.start()
    try:
        grpc_kwargs, body = _adapt(_support(20))  # JSON ~33 KB, proto ~16 KB > 10 KB
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(_request(**grpc_kwargs), timeout=60)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status, response = _http(server.rest_api_port, "POST", _PREDICT, body)
        assert status == 413 and "exceeds" in response["error"]
        assert _http(server.rest_api_port, "POST", _PREDICT, {"inputs": _SAMPLE})[0] == 200
    finally:
        server.stop(grace=1)


def test_concurrent_keep_alive_clients(served):
    first = _http(served.rest_port, "POST", _PREDICT, {"inputs": _SAMPLE})
    start = threading.Barrier(32)

    def client(_):
        conn = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=60)
        start.wait()  # 32 connections at once (a short listen backlog resets some)
        try:  # one connection, several requests (HTTP/1.1 keep-alive)
            return [_http(None, "POST", _PREDICT, {"inputs": _SAMPLE}, conn)
                    for _ in range(3)]
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = [r for rows in pool.map(client, range(32)) for r in rows]
    assert len(results) == 96 and all(r == first for r in results)


def test_serve_cli_rest_api_port(serving_toy_base):
    with serve_cli(["--model_base_path", os.path.join(serving_toy_base, "toy"), "--port", "0",
                    "--rest_api_port", "-1"]) as (proc, announced):
        rest_port = announced.get("rest")
        assert rest_port, proc.stderr.read()[-3000:] if proc.poll() is not None else "no port"
        assert _http(rest_port, "GET", "/v1/models/toy")[0] == 200
        status, body = _http(rest_port, "POST", _PREDICT, {"inputs": _SAMPLE})
        assert status == 200 and np.array(body["outputs"]).shape == (4, 28, 28, 1)
        # The CLI's errors are the server's (4xx), not internal errors.
        assert _http(rest_port, "POST", "/v1/models/nope:predict", {"inputs": _SAMPLE})[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "shutting down" in proc.stdout.read()
